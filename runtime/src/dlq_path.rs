//! Where the dead-letter queue lives when nothing names a file (`dlq_path`, `--dlq`,
//! `AGENTWIRE_DLQ`): the state directory, `/var/lib/agentwire` for root and
//! `$XDG_STATE_HOME/agentwire` or `~/.local/state/agentwire` otherwise; and when that
//! directory cannot be created or written (a user such as `nobody`, whose home is
//! `/nonexistent`), the runtime directory beside the default control socket
//! (`$XDG_RUNTIME_DIR/agentwire/dlq.log`), which a reboot empties. The daemon and the
//! `agentwire dlq` commands make the same choice, so both find the same file.
//!
//! ```
//! let chosen = agentwire_runtime::dlq_path::resolve_default(false);
//! assert!(chosen.path.ends_with("dlq.log"));
//! ```

use std::path::{Path, PathBuf};

/// The default queue path: `AGENTWIRE_DLQ` if set; `/var/lib/agentwire/dlq.log` for root;
/// else `$XDG_STATE_HOME/agentwire/dlq.log` or `~/.local/state/agentwire/dlq.log`. Whether
/// it can be used is [`resolve_default`]'s question.
///
/// ```
/// assert!(agentwire_runtime::dlq::default_path().ends_with("dlq.log"));
/// ```
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTWIRE_DLQ") {
        return PathBuf::from(p);
    }
    if is_root() {
        return PathBuf::from("/var/lib/agentwire/dlq.log");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("agentwire/dlq.log")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The queue in the runtime directory: `dlq.log` beside the default control socket
/// (`$XDG_RUNTIME_DIR/agentwire/`, `/run/agentwire/` for root).
///
/// ```
/// let p = agentwire_runtime::dlq_path::runtime_path();
/// assert_eq!(p.parent(), agentwire_shm::client::default_socket_path().parent());
/// ```
pub fn runtime_path() -> PathBuf {
    let socket = agentwire_shm::client::default_socket_path();
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/tmp"))
        .join("dlq.log")
}

/// The default path chosen, and the one passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultDlqPath {
    /// The queue file to use.
    pub path: PathBuf,
    /// Set when the state directory could not be used: that path, and why.
    pub fell_back_from: Option<(PathBuf, String)>,
}

/// The default queue for this process: [`default_path`] when its directory exists and is
/// writable (with `create`: once created, as the daemon does; without, as the `dlq` commands
/// do, which create nothing: when its nearest existing ancestor is a writable directory),
/// else [`runtime_path`]. A path from `AGENTWIRE_DLQ` is taken as given.
///
/// ```
/// let chosen = agentwire_runtime::dlq_path::resolve_default(false);
/// if let Some((passed_over, why)) = &chosen.fell_back_from {
///     eprintln!("{} cannot be used ({why}); using {}", passed_over.display(), chosen.path.display());
/// }
/// ```
pub fn resolve_default(create: bool) -> DefaultDlqPath {
    if std::env::var_os("AGENTWIRE_DLQ").is_some() {
        return DefaultDlqPath {
            path: default_path(),
            fell_back_from: None,
        };
    }
    choose(default_path(), runtime_path(), create)
}

/// `preferred` when its directory can hold the queue, else `fallback`.
fn choose(preferred: PathBuf, fallback: PathBuf, create: bool) -> DefaultDlqPath {
    let dir = preferred.parent().unwrap_or_else(|| Path::new("/"));
    match dir_usable(dir, create) {
        Ok(()) => DefaultDlqPath {
            path: preferred,
            fell_back_from: None,
        },
        Err(why) => DefaultDlqPath {
            path: fallback,
            fell_back_from: Some((preferred, why)),
        },
    }
}

/// Whether files can be created in `dir`: it exists (with `create`: after creating it) or
/// its nearest existing ancestor is a directory, and that directory is writable.
fn dir_usable(dir: &Path, create: bool) -> Result<(), String> {
    if create {
        // 0750 for each directory created (`agentwire_router::dirs`).
        agentwire_router::dirs::prepare_dir(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                probe = probe
                    .parent()
                    .ok_or_else(|| format!("no directory above {}", dir.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", probe.display())),
        }
    }
    use rustix::fs::Access;
    rustix::fs::access(probe, Access::WRITE_OK | Access::EXEC_OK)
        .map_err(|e| format!("{} is not writable: {e}", probe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aw-dlq-path-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_usable_state_directory_is_kept() {
        let dir = scratch("usable");
        let preferred = dir.join("state/agentwire/dlq.log");
        let chosen = choose(preferred.clone(), dir.join("run/dlq.log"), false);
        assert_eq!(
            (chosen.path, chosen.fell_back_from),
            (preferred.clone(), None)
        );
        assert!(
            !dir.join("state").exists(),
            "without create nothing is created"
        );
        let chosen = choose(preferred.clone(), dir.join("run/dlq.log"), true);
        assert_eq!(chosen.path, preferred);
        assert!(dir.join("state/agentwire").is_dir());
    }

    #[test]
    fn a_state_directory_under_a_file_falls_back_and_says_why() {
        // Root passes permission checks, so the unusable directory is one under a file.
        let dir = scratch("under-file");
        std::fs::write(dir.join("home"), b"").unwrap();
        let preferred = dir.join("home/.local/state/agentwire/dlq.log");
        let fallback = dir.join("run/agentwire/dlq.log");
        for create in [false, true] {
            let chosen = choose(preferred.clone(), fallback.clone(), create);
            assert_eq!(chosen.path, fallback, "create {create}");
            let (passed_over, why) = chosen.fell_back_from.unwrap();
            assert_eq!(passed_over, preferred);
            assert!(why.contains("home"), "{why}");
        }
    }
}
