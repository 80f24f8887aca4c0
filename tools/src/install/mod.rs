//! `agentwire install` and `agentwire uninstall`: put the daemon on a systemd machine (the
//! binary, its units, the default config, the system user and group, the state directory)
//! and take it off again.
//!
//! `--prefix DIR` installs under a root directory, as `DESTDIR` does (files go to
//! `DIR/etc/...`, but the units still name `/usr/local/bin/agentwire`), for staging and for
//! tests; the default is `/`. `--dry-run` prints every step and changes nothing.
//!
//! Never destroys a file it did not create: a file already there with other contents (an
//! edited config, a unit an operator changed) is kept and the new version written beside
//! it as `<file>.agentwire-new`; `uninstall` removes only the files the install manifest
//! lists with the contents it wrote, and keeps the config and the state directory unless
//! `--purge`.

mod assets;
mod manifest;

use assets::{Asset, ASSETS, BIN_PATH, CONFIG_PATH, MANIFEST_PATH, SERVICE_USER, STATE_DIR};
use manifest::Manifest;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

type BoxError = Box<dyn std::error::Error>;

/// What a step did (or, under `--dry-run`, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done.
    Done,
    /// Would be done (`--dry-run`).
    WouldDo,
    /// Already as wanted.
    Unchanged,
    /// Left as it is (edited, or data kept without `--purge`).
    Kept,
    /// Not applicable here (the reason says why).
    Skipped,
    /// Failed; later steps did not run.
    Failed,
}

/// One step of an install or uninstall.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What the step does (`write`, `remove`, `run`, ...).
    pub action: &'static str,
    /// The file or command.
    pub target: String,
    /// What came of it.
    pub outcome: Outcome,
    /// Why, or what it is.
    pub detail: String,
}

/// The options both commands share.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root directory installed under (`/` for the system).
    pub prefix: PathBuf,
    /// Print the steps, change nothing.
    pub dry_run: bool,
    /// One JSON object on stdout instead of lines.
    pub json: bool,
}

/// Runs the steps of one command and reports them as they happen.
struct Run<'a> {
    options: &'a Options,
    steps: Vec<Step>,
}

impl<'a> Run<'a> {
    fn new(options: &'a Options) -> Self {
        Self {
            options,
            steps: Vec::new(),
        }
    }

    /// `path` (a target-system path) under the prefix.
    fn under(&self, path: &str) -> PathBuf {
        self.options.prefix.join(path.trim_start_matches('/'))
    }

    fn system(&self) -> bool {
        self.options.prefix == Path::new("/")
    }

    fn note(&mut self, action: &'static str, target: &str, outcome: Outcome, detail: String) {
        let step = Step {
            action,
            target: target.to_string(),
            outcome,
            detail,
        };
        if !self.options.json {
            let past = match action {
                "write" => "wrote",
                "run" => "ran",
                "remove" => "removed",
                other => other,
            };
            let line = match outcome {
                Outcome::Done => format!("{past} {target}"),
                Outcome::WouldDo => format!("would {action} {target}"),
                Outcome::Unchanged => format!("unchanged: {target}"),
                Outcome::Kept => format!("kept: {target}"),
                Outcome::Skipped => format!("skipped: {action} {target}"),
                Outcome::Failed => format!("FAILED: {action} {target}"),
            };
            let detail = if step.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", step.detail)
            };
            // Progress goes to stderr so stdout stays for --json.
            eprintln!("{line}{detail}");
        }
        self.steps.push(step);
    }

    /// Writes `contents` to `path` (target-system path) unless it holds them already or
    /// holds something the last install did not write (then the new version goes beside it).
    fn write(
        &mut self,
        path: &str,
        contents: &[u8],
        mode: u32,
        what: &str,
        old: Option<&Manifest>,
        new: &mut Manifest,
    ) -> Result<(), BoxError> {
        let file = self.under(path);
        let existing = match std::fs::read(&file) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("read {}: {e}", file.display()).into()),
        };
        match existing {
            Some(bytes) if bytes == contents => {
                new.record(Path::new(path), contents);
                self.note("write", path, Outcome::Unchanged, what.into());
                return Ok(());
            }
            Some(bytes) => {
                let entry = old.and_then(|m| m.get(Path::new(path)));
                if !entry.is_some_and(|f| f.matches(&bytes)) {
                    // Installed by us and edited since: still ours to purge (uninstall keeps
                    // it as edited).
                    if let Some(entry) = entry {
                        new.keep(entry.clone());
                    }
                    // Not written by us, or edited since: keep it, put ours beside it.
                    let beside = format!("{path}.agentwire-new");
                    self.note(
                        "write",
                        path,
                        Outcome::Kept,
                        format!("it differs from what agentwire installs; the new version goes to {beside}"),
                    );
                    return self.write(&beside, contents, mode, what, None, new);
                }
            }
            None => {}
        }
        if self.options.dry_run {
            self.note("write", path, Outcome::WouldDo, what.into());
            return Ok(());
        }
        write_atomically(&file, contents, mode)?;
        new.record(Path::new(path), contents);
        self.note("write", path, Outcome::Done, what.into());
        Ok(())
    }

    /// Runs `argv` (unless `--dry-run`); a failure ends the command with its stderr.
    fn run(&mut self, argv: &[String], what: &str) -> Result<(), BoxError> {
        let shown = argv.join(" ");
        if self.options.dry_run {
            self.note("run", &shown, Outcome::WouldDo, what.into());
            return Ok(());
        }
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|e| format!("{}: {e}", argv[0]));
        match out {
            Ok(out) if out.status.success() => {
                self.note("run", &shown, Outcome::Done, what.into());
                Ok(())
            }
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                self.note("run", &shown, Outcome::Failed, why.clone());
                Err(format!("{shown} failed ({}): {why}", out.status).into())
            }
            Err(e) => {
                self.note("run", &shown, Outcome::Failed, e.clone());
                Err(e.into())
            }
        }
    }

    /// `[tool, --root=PREFIX]` for tools that take an alternative root.
    fn rooted(&self, tool: &str, root_flag: &str) -> Vec<String> {
        let mut argv = vec![tool.to_string()];
        if !self.system() {
            if root_flag.ends_with('=') {
                argv.push(format!("{root_flag}{}", self.options.prefix.display()));
            } else {
                argv.push(root_flag.to_string());
                argv.push(self.options.prefix.display().to_string());
            }
        }
        argv
    }

    /// `systemctl daemon-reload`, where systemd runs this system.
    fn reload_systemd(&mut self) -> Result<(), BoxError> {
        let skipped = if !self.system() {
            Some("installing under a prefix, not into this system")
        } else if !Path::new("/run/systemd/system").exists() {
            Some("systemd is not running on this machine")
        } else {
            None
        };
        if let Some(why) = skipped {
            self.note(
                "run",
                "systemctl daemon-reload",
                Outcome::Skipped,
                why.into(),
            );
            return Ok(());
        }
        self.run(
            &["systemctl".into(), "daemon-reload".into()],
            "systemd reads the new units",
        )
    }

    /// Prints the JSON report (with `--json`) and says whether every step succeeded.
    fn finish(self, command: &str, result: Result<(), BoxError>) -> Result<(), BoxError> {
        if self.options.json {
            let report = serde_json::json!({
                "command": command,
                "prefix": self.options.prefix,
                "dry_run": self.options.dry_run,
                "ok": result.is_ok(),
                "steps": self.steps,
            });
            outln!("{report}")?;
        }
        result
    }
}

/// Creates the parents of `file`, writes `contents` to a temporary name beside it with
/// `mode`, and renames it into place (a reader never sees half a file).
fn write_atomically(file: &Path, contents: &[u8], mode: u32) -> Result<(), BoxError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let parent = file.parent().ok_or("a file path needs a directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let name = file.file_name().ok_or("a file path needs a name")?;
    let tmp = parent.join(format!(".{}.agentwire-tmp", name.to_string_lossy()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("create {}: {e}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    // The mode given to open() is reduced by the umask; set it exactly.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("rename to {}: {e}", file.display()).into())
}

/// Refuses a real run into `/` by a user other than root, naming the way out.
fn check_root(options: &Options, command: &str) -> Result<(), BoxError> {
    if options.prefix == Path::new("/") && !options.dry_run && !rustix::process::geteuid().is_root()
    {
        return Err(format!(
            "agentwire {command} changes /usr/local, /etc and the system's users: run it as root, \
             or give --prefix DIR to stage it under DIR, or --dry-run to see the steps"
        )
        .into());
    }
    if !options.prefix.is_absolute() {
        return Err(format!(
            "--prefix {} must be an absolute path",
            options.prefix.display()
        )
        .into());
    }
    Ok(())
}

/// `agentwire install`.
pub fn install(options: &Options) -> Result<(), BoxError> {
    check_root(options, "install")?;
    let mut run = Run::new(options);
    let result = install_steps(&mut run);
    run.finish("install", result)
}

fn install_steps(run: &mut Run<'_>) -> Result<(), BoxError> {
    let old = Manifest::load(&run.under(MANIFEST_PATH))?;
    let mut new = Manifest::default();
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let binary = std::fs::read(&exe).map_err(|e| format!("read {}: {e}", exe.display()))?;
    run.write(
        BIN_PATH,
        &binary,
        0o755,
        "the agentwire binary",
        old.as_ref(),
        &mut new,
    )?;
    for Asset {
        path,
        contents,
        what,
    } in ASSETS
    {
        let contents = assets::with_bin_path(contents);
        run.write(
            path,
            contents.as_bytes(),
            0o644,
            what,
            old.as_ref(),
            &mut new,
        )?;
    }
    run.write(
        CONFIG_PATH,
        agentwire_runtime::config::DEFAULT_CONFIG_TOML.as_bytes(),
        0o644,
        "the daemon's config (the embedded default)",
        old.as_ref(),
        &mut new,
    )?;
    let sysusers = run.under(assets::SYSUSERS_PATH).display().to_string();
    let mut argv = run.rooted("systemd-sysusers", "--root=");
    argv.push(sysusers);
    run.run(&argv, "creates the agentwire system user and group")?;
    let tmpfiles = run.under(assets::TMPFILES_PATH).display().to_string();
    let mut argv = run.rooted("systemd-tmpfiles", "--root=");
    argv.extend(["--create".to_string(), tmpfiles]);
    run.run(&argv, "creates the state directory")?;
    run.reload_systemd()?;
    if run.options.dry_run {
        run.note(
            "write",
            MANIFEST_PATH,
            Outcome::WouldDo,
            "what uninstall removes".into(),
        );
        return Ok(());
    }
    write_atomically(&run.under(MANIFEST_PATH), new.to_json().as_bytes(), 0o644)?;
    run.note(
        "write",
        MANIFEST_PATH,
        Outcome::Done,
        "what uninstall removes".into(),
    );
    if !run.options.json {
        eprintln!(
            "installed; start it with `systemctl enable --now agentwire`. It admits root and user \
             {SERVICE_USER}; to admit other users' agents, name them in allow_uids or the \
             group in allow_gids of {CONFIG_PATH} (systemd/README.md: who may connect)"
        );
    }
    Ok(())
}

/// `agentwire uninstall`.
pub fn uninstall(options: &Options, purge: bool) -> Result<(), BoxError> {
    check_root(options, "uninstall")?;
    let mut run = Run::new(options);
    let result = uninstall_steps(&mut run, purge);
    run.finish("uninstall", result)
}

fn uninstall_steps(run: &mut Run<'_>, purge: bool) -> Result<(), BoxError> {
    let manifest_file = run.under(MANIFEST_PATH);
    let Some(manifest) = Manifest::load(&manifest_file)? else {
        return Err(format!(
            "no agentwire install under {} (no {})",
            run.options.prefix.display(),
            manifest_file.display()
        )
        .into());
    };
    if run.system() && Path::new("/run/systemd/system").exists() {
        run.run(
            &[
                "systemctl".into(),
                "disable".into(),
                "--now".into(),
                "agentwire.service".into(),
                "agentwire-hugepages.service".into(),
            ],
            "stops the daemon",
        )?;
    }
    // What stays: a later `uninstall --purge` or install still knows these files as ours.
    let mut kept = Manifest::default();
    for f in &manifest.files {
        let path = f.path.display().to_string();
        let file = run.under(&path);
        if f.path == Path::new(CONFIG_PATH) && !purge {
            run.note(
                "remove",
                &path,
                Outcome::Kept,
                "configuration is kept; --purge removes it".into(),
            );
            kept.keep(f.clone());
            continue;
        }
        let contents = match std::fs::read(&file) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                run.note("remove", &path, Outcome::Skipped, "already gone".into());
                continue;
            }
            Err(e) => return Err(format!("read {}: {e}", file.display()).into()),
        };
        let purged_config = purge && f.path == Path::new(CONFIG_PATH);
        if !f.matches(&contents) && !purged_config {
            run.note(
                "remove",
                &path,
                Outcome::Kept,
                "edited since it was installed".into(),
            );
            kept.keep(f.clone());
            continue;
        }
        remove_file(run, &path, &file)?;
    }
    if purge {
        let state = run.under(STATE_DIR);
        if state.exists() {
            if run.options.dry_run {
                run.note(
                    "remove",
                    STATE_DIR,
                    Outcome::WouldDo,
                    "the daemon's state (--purge)".into(),
                );
            } else {
                std::fs::remove_dir_all(&state)
                    .map_err(|e| format!("remove {}: {e}", state.display()))?;
                run.note(
                    "remove",
                    STATE_DIR,
                    Outcome::Done,
                    "the daemon's state (--purge)".into(),
                );
            }
        }
        if has_user(&run.under("/etc/passwd"), SERVICE_USER) {
            let mut argv = run.rooted("userdel", "--root");
            argv.push(SERVICE_USER.into());
            run.run(&argv, "removes the agentwire user (--purge)")?;
        }
        if has_user(&run.under("/etc/group"), SERVICE_USER) {
            let mut argv = run.rooted("groupdel", "--root");
            argv.push(SERVICE_USER.into());
            run.run(&argv, "removes the agentwire group (--purge)")?;
        }
    } else if run.under(STATE_DIR).exists() {
        run.note(
            "remove",
            STATE_DIR,
            Outcome::Kept,
            "the daemon's state; --purge removes it".into(),
        );
    }
    if kept.files.is_empty() {
        remove_file(run, MANIFEST_PATH, &manifest_file)?;
    } else if run.options.dry_run {
        run.note(
            "write",
            MANIFEST_PATH,
            Outcome::WouldDo,
            "lists the files kept".into(),
        );
    } else {
        write_atomically(&manifest_file, kept.to_json().as_bytes(), 0o644)?;
        run.note(
            "write",
            MANIFEST_PATH,
            Outcome::Done,
            "lists the files kept".into(),
        );
    }
    for dir in [
        "/usr/local/share/agentwire",
        "/usr/local/share/doc/agentwire",
        "/etc/agentwire",
    ] {
        // Only directories the install made and that are now empty.
        if !run.options.dry_run {
            let _ = std::fs::remove_dir(run.under(dir));
        }
    }
    run.reload_systemd()
}

fn remove_file(run: &mut Run<'_>, path: &str, file: &Path) -> Result<(), BoxError> {
    if run.options.dry_run {
        run.note("remove", path, Outcome::WouldDo, String::new());
        return Ok(());
    }
    std::fs::remove_file(file).map_err(|e| format!("remove {}: {e}", file.display()))?;
    run.note("remove", path, Outcome::Done, String::new());
    Ok(())
}

/// Whether the passwd/group file `file` has an entry named `name`.
fn has_user(file: &Path, name: &str) -> bool {
    std::fs::read_to_string(file)
        .map(|t| t.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}
