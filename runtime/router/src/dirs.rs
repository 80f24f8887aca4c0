//! The daemon's directories and private files, with modes set explicitly rather than left to
//! the umask: a directory the daemon creates is [`DIR_MODE`] (its group may reach the socket,
//! nobody else may look in), a file only the daemon reads (the dead-letter queue, its lock,
//! the agent id mark) is [`PRIVATE_FILE_MODE`]. A directory that already existed is left as
//! it is: it belongs to whoever made it (systemd's `RuntimeDirectory=`, an administrator).
//! The one exception is checked, not changed: the non-root fallback runtime directory
//! (`/tmp/agentwire-$UID`, [`agentwire_shm::client::runtime_dir_fallback`]) lives where
//! anyone may create it first, so it is refused unless this user owns it and nobody else may
//! write to it.
//!
//! ```
//! use std::os::unix::fs::PermissionsExt;
//! let dir = std::env::temp_dir().join(format!("aw-doc-dirs-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! agentwire_router::dirs::prepare_dir(&dir.join("run/agentwire")).unwrap();
//! let mode = std::fs::metadata(dir.join("run")).unwrap().permissions().mode() & 0o777;
//! assert_eq!(mode, agentwire_router::dirs::DIR_MODE);
//! ```

use rustix::fs::Mode;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every directory the daemon creates: owner all, group may enter and list (to reach
/// the socket), others nothing.
pub const DIR_MODE: u32 = 0o750;
/// Mode of the daemon's private files: the dead-letter queue (undelivered payloads), its
/// lock, and the agent id mark.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Directories created at most by one [`prepare_dir`] (a bound on the walk up the path).
const DIR_DEPTH_MAX: usize = 64;

/// Makes sure `dir` exists: each missing directory is created and given [`DIR_MODE`]
/// explicitly (mkdir's mode passes through the umask, so it is set again after); one that
/// existed is not touched. When `dir` is or lies under the non-root fallback runtime
/// directory, that directory is then checked with [`check_private_dir`].
///
/// ```
/// let dir = std::env::temp_dir().join(format!("aw-doc-prep-{}", std::process::id()));
/// agentwire_router::dirs::prepare_dir(&dir).unwrap();
/// assert!(dir.is_dir());
/// ```
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    prepare_dir_beside(dir, &agentwire_shm::client::runtime_dir_fallback())
}

/// [`prepare_dir`] with the fallback directory to check named (tests name a scratch one).
fn prepare_dir_beside(dir: &Path, fallback: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut probe = dir;
    loop {
        match std::fs::symlink_metadata(probe) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if missing.len() == DIR_DEPTH_MAX {
                    return Err(io::Error::other(format!(
                        "{}: more than {DIR_DEPTH_MAX} directories to create",
                        dir.display()
                    )));
                }
                missing.push(probe);
                match probe.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for created in missing.into_iter().rev() {
        match std::fs::create_dir(created) {
            // Only a directory this call made is given its mode.
            Ok(()) => rustix::fs::chmod(created, Mode::from_raw_mode(DIR_MODE))?,
            // Made by someone else meanwhile: theirs, left alone.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", created.display()),
                ))
            }
        }
    }
    if dir.starts_with(fallback) {
        check_private_dir(fallback)?;
    }
    Ok(())
}

/// Refuses a directory another user could control: it must be a directory (not a link to
/// one), owned by this process's effective uid, and writable by nobody else (no group or
/// world write bit). The error names the directory, its owner and mode, and what to do.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("aw-doc-priv-{}", std::process::id()));
/// agentwire_router::dirs::prepare_dir(&dir).unwrap();
/// assert!(agentwire_router::dirs::check_private_dir(&dir).is_ok());
/// assert!(agentwire_router::dirs::check_private_dir("/tmp".as_ref()).is_err()); // world-writable
/// ```
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    let problem = if !meta.is_dir() {
        Some("it is not a directory (a symbolic link or a file)".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "it is owned by uid {}, not this user (uid {me})",
            meta.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!("its mode {mode:04o} lets others write to it"))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing the runtime directory {}: {why}; another user could control what \
                 is in it (remove it so the daemon creates its own, or set XDG_RUNTIME_DIR, \
                 or give --socket and --dlq paths elsewhere)",
                dir.display()
            ),
        )),
    }
}

/// Opens (creating if missing) a private file for reading and writing with
/// [`PRIVATE_FILE_MODE`]: created with it, and narrowed to it when it exists with a wider
/// mode and this process owns it (a file an older build left world-readable).
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// let p = std::env::temp_dir().join(format!("aw-doc-private-{}", std::process::id()));
/// let f = agentwire_router::dirs::open_private(&p, false).unwrap();
/// assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
/// ```
pub fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    make_private(&file)?;
    Ok(file)
}

/// Gives an open file [`PRIVATE_FILE_MODE`] when its mode differs and this process owns it
/// (the mode given at creation passes through the umask; a file of another owner is theirs).
///
/// ```
/// let p = std::env::temp_dir().join(format!("aw-doc-mkpriv-{}", std::process::id()));
/// let f = std::fs::File::create(&p).unwrap();
/// agentwire_router::dirs::make_private(&f).unwrap();
/// ```
pub fn make_private(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    let owned = meta.uid() == rustix::process::geteuid().as_raw();
    if owned && meta.mode() & 0o7777 != PRIVATE_FILE_MODE {
        rustix::fs::fchmod(file, Mode::from_raw_mode(PRIVATE_FILE_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aw-dirs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused_with_its_mode() {
        let dir = scratch("writable");
        for mode in [0o777, 0o770, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_private_dir(&dir).unwrap_err().to_string();
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
            assert!(err.contains("lets others write"), "{err}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        check_private_dir(&dir).unwrap();
    }

    #[test]
    fn the_fallback_directory_is_checked_whether_made_now_or_found() {
        let dir = scratch("fallback");
        let fallback = dir.join("agentwire-1000");
        // Made now: this user's, 0750.
        prepare_dir_beside(&fallback.join("sub"), &fallback).unwrap();
        // Found world-writable (someone else made it first, or loosened it): refused.
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir_beside(&fallback, &fallback).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string().contains("refusing the runtime directory"),
            "{err}"
        );
        // Other directories are made and left as they are found.
        prepare_dir_beside(&dir.join("elsewhere"), &fallback).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_or_a_link_is_refused() {
        let dir = scratch("owner");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = check_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let theirs = dir.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        // Root can give the directory away; anyone else takes one root owns.
        let (theirs, owner) = if me == 0 {
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::fs::chown(&theirs, Some(nobody), None).unwrap();
            (theirs, 65534)
        } else {
            (std::path::PathBuf::from("/"), 0)
        };
        let err = check_private_dir(&theirs).unwrap_err().to_string();
        assert!(
            err.contains(&format!("owned by uid {owner}, not this user (uid {me})")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
