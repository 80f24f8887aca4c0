//! `agentwire install` and `uninstall` into a temporary root directory, for real and with
//! `--dry-run`: the files, the system user and group (systemd-sysusers --root), the state
//! directory (systemd-tmpfiles --root), an edited config kept, a foreign file never touched.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const AGENTWIRE: &str = env!("CARGO_BIN_EXE_agentwire");

fn agentwire(args: &[&str], prefix: &Path) -> Output {
    Command::new(AGENTWIRE)
        .args(args)
        .arg("--prefix")
        .arg(prefix)
        .output()
        .unwrap()
}

/// Runs `args --json` and returns the report; the command must succeed.
fn report(args: &[&str], prefix: &Path) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = agentwire(&all, prefix);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The outcome of the step on `target` in `report`.
fn outcome<'a>(report: &'a serde_json::Value, target: &str) -> &'a str {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target"] == target)
        .unwrap_or_else(|| panic!("no step on {target}: {report}"))["outcome"]
        .as_str()
        .unwrap()
}

fn passwd_entry(prefix: &Path, file: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(prefix.join("etc").join(file))
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

#[test]
fn a_dry_run_lists_every_step_and_changes_nothing() {
    let prefix = tempfile::tempdir().unwrap();
    let r = report(&["install", "--dry-run"], prefix.path());
    assert_eq!(
        (r["command"].as_str(), r["ok"].as_bool()),
        (Some("install"), Some(true))
    );
    for target in [
        "/usr/local/bin/agentwire",
        "/etc/systemd/system/agentwire.service",
        "/etc/agentwire/agentwire.toml",
        "/etc/sysusers.d/agentwire.conf",
        "/etc/tmpfiles.d/agentwire.conf",
    ] {
        assert_eq!(outcome(&r, target), "would-do", "{target}");
    }
    assert_eq!(outcome(&r, "systemctl daemon-reload"), "skipped");
    assert_eq!(std::fs::read_dir(prefix.path()).unwrap().count(), 0);
    // Nothing installed, so nothing to uninstall: a clear error and exit 1.
    let out = agentwire(&["uninstall", "--dry-run"], prefix.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agentwire install under"));
}

#[test]
fn install_then_uninstall_keeps_what_was_edited_or_is_not_ours_until_purge() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path();
    let at = |p: &str| prefix.join(p.trim_start_matches('/'));
    report(&["install"], prefix);

    // The binary, the units naming it, the default config, the user, the state directory.
    let bin = at("/usr/local/bin/agentwire");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(AGENTWIRE).unwrap()
    );
    assert_eq!(bin.metadata().unwrap().permissions().mode() & 0o777, 0o755);
    let unit = std::fs::read_to_string(at("/etc/systemd/system/agentwire.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/agentwire serve"),
        "{unit}"
    );
    let config = at("/etc/agentwire/agentwire.toml");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        agentwire_runtime::config::DEFAULT_CONFIG_TOML
    );
    let user = passwd_entry(prefix, "passwd", "agentwire").expect("the agentwire user");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(passwd_entry(prefix, "group", "agentwire").is_some());
    let state = at("/var/lib/agentwire");
    assert_eq!(state.metadata().unwrap().uid(), uid);

    // Again: every file unchanged; an edited config is kept, the new one put beside it.
    std::fs::write(&config, "# edited by the operator\n").unwrap();
    let r = report(&["install"], prefix);
    assert_eq!(
        outcome(&r, "/etc/systemd/system/agentwire.service"),
        "unchanged"
    );
    assert_eq!(outcome(&r, "/etc/agentwire/agentwire.toml"), "kept");
    assert_eq!(
        outcome(&r, "/etc/agentwire/agentwire.toml.agentwire-new"),
        "done"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# edited by the operator\n"
    );

    // Uninstall removes what it wrote, keeps the config, the state and a foreign file.
    let foreign = at("/etc/systemd/system/other.service");
    std::fs::write(&foreign, "[Unit]\n").unwrap();
    std::fs::write(state.join("dlq.log"), b"data").unwrap();
    let r = report(&["uninstall"], prefix);
    assert_eq!(outcome(&r, "/etc/agentwire/agentwire.toml"), "kept");
    assert_eq!(outcome(&r, "/var/lib/agentwire"), "kept");
    assert!(!bin.exists() && !at("/etc/systemd/system/agentwire.service").exists());
    assert!(config.exists() && state.join("dlq.log").exists() && foreign.exists());
    assert!(passwd_entry(prefix, "passwd", "agentwire").is_some());

    // --purge: the config, the state, the user and the group go; the foreign file stays.
    let r = report(&["uninstall", "--purge"], prefix);
    assert_eq!(outcome(&r, "/etc/agentwire/agentwire.toml"), "done");
    assert!(!config.exists() && !state.exists());
    assert!(passwd_entry(prefix, "passwd", "agentwire").is_none());
    assert!(passwd_entry(prefix, "group", "agentwire").is_none());
    assert!(foreign.exists());
    assert!(!at("/usr/local/share/agentwire/install-manifest.json").exists());
}

#[test]
fn a_relative_prefix_is_refused() {
    let out = agentwire(&["install", "--dry-run"], Path::new("stage"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an absolute path"));
}
