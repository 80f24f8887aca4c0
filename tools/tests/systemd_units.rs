//! The files in `systemd/` as systemd reads them: `systemd-analyze verify` passes on every unit
//! (with the kernel-bypass drop-in too) without a warning, the security score in
//! systemd/README.md is the one `systemd-analyze security` prints, sysusers.d creates the
//! user and tmpfiles.d its directory, and the hugepages unit's commands do what they say.
//! Each test says so and passes when systemd's tools are absent (scripts/setup.sh installs
//! the `systemd` package, which has them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// A fresh directory under the temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-units-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `tool` runs; if not, says the test is skipped and why.
fn have(tool: &str) -> bool {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            println!(
                "skipped: {tool} not found (the Debian package `systemd` has it; \
                 scripts/setup.sh installs it)"
            );
            false
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A root directory with what `systemd-analyze verify --root` needs: the distribution's
/// units (targets our units are ordered against), our units in /etc/systemd/system, and the
/// executables they name (`agentwire` is the binary under test).
fn unit_root(name: &str) -> PathBuf {
    let root = scratch(name);
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .expect("systemd-analyze is installed but no /usr/lib/systemd/system");
    copy_dir(system_units, &root.join("usr/lib/systemd/system"));
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_agentwire"), bin.join("agentwire")).unwrap();
    for tool in ["sh", "kill"] {
        std::fs::copy(Path::new("/usr/bin").join(tool), bin.join(tool)).unwrap();
    }
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for unit in UNITS {
        std::fs::copy(systemd_dir().join(unit), units.join(unit)).unwrap();
    }
    root
}

const UNITS: [&str; 3] = [
    "agentwire.service",
    "agentwire-hugepages.service",
    "agentwire.slice",
];

/// Verifies `unit` under `root`: exit 0 and nothing on stderr (systemd only warns, with exit
/// 0, about unknown keys and values it ignores).
fn verify(root: &Path, unit: &str) {
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "verify {unit}: {stderr}");
}

#[test]
fn every_unit_verifies_without_a_warning() {
    if !have("systemd-analyze") {
        return;
    }
    let root = unit_root("verify");
    for unit in UNITS {
        verify(&root, unit);
    }
    // With the kernel-bypass drop-in in place.
    let dropins = root.join("etc/systemd/system/agentwire.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::copy(
        systemd_dir().join("agentwire.service.d/kernel-bypass.conf"),
        dropins.join("kernel-bypass.conf"),
    )
    .unwrap();
    verify(&root, "agentwire.service");
    // A mistake is caught: a misspelt key in a drop-in.
    std::fs::write(dropins.join("typo.conf"), "[Service]\nLimitMEMLCK=1G\n").unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("agentwire.service")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// `Overall exposure level for agentwire.service: 2.4 OK` -> "2.4".
fn exposure(unit_dir: &Path) -> String {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit_dir.join("agentwire.service")));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for agentwire.service:"))
        .unwrap_or_else(|| panic!("no overall exposure line in {text}"));
    line.rsplit(':')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_readme_states_the_security_score_systemd_analyze_prints() {
    if !have("systemd-analyze") {
        return;
    }
    let alone = scratch("security");
    std::fs::copy(
        systemd_dir().join("agentwire.service"),
        alone.join("agentwire.service"),
    )
    .unwrap();
    let unit_score = exposure(&alone);
    copy_dir(
        &systemd_dir().join("agentwire.service.d"),
        &alone.join("agentwire.service.d"),
    );
    let bypass_score = exposure(&alone);
    let readme = std::fs::read_to_string(systemd_dir().join("README.md")).unwrap();
    let top = std::fs::read_to_string(systemd_dir().join("../README.md")).unwrap();
    assert!(
        top.contains(&format!("exposure level {unit_score} ")),
        "README.md (Running under systemd) must state the unit's score as {unit_score}"
    );
    for (what, score) in [
        ("the unit", &unit_score),
        ("with kernel-bypass.conf", &bypass_score),
    ] {
        let stated = format!("exposure level {score} ");
        assert!(
            readme.contains(&stated),
            "systemd/README.md must state {what}'s score as {stated:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&alone);
}

#[test]
fn sysusers_creates_the_user_and_tmpfiles_its_directory() {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        return;
    }
    let root = scratch("sysusers");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(systemd_dir().join("sysusers.d/agentwire.conf")));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("agentwire:"))
        .unwrap_or_else(|| panic!("no agentwire user in {passwd}"))
        .split(':')
        .collect();
    assert!(
        group.lines().any(|l| l.starts_with("agentwire:")),
        "{group}"
    );
    assert_eq!(user[5..], ["/var/lib/agentwire", "/usr/sbin/nologin"]);
    if !rustix::process::geteuid().is_root() {
        println!("tmpfiles.d part skipped: chown to the service user needs root");
        return;
    }
    run(Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.display()))
        .arg(systemd_dir().join("tmpfiles.d/agentwire.conf")));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = std::fs::metadata(root.join("var/lib/agentwire")).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    assert_eq!(state.uid().to_string(), user[2]);
    assert_eq!(state.gid().to_string(), user[3]);
    let _ = std::fs::remove_dir_all(&root);
}

/// The hugepages unit's ExecStart= and ExecStartPost= as the shell gets them from systemd:
/// `${NAME}` replaced from `env`, `$$` turned into `$`.
fn expand(command: &str, env: &[(&str, &str)]) -> String {
    let mut out = command.replace("$$", "\u{0}");
    for (name, value) in env {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !out.contains("${"),
        "a variable the unit does not set: {out}"
    );
    out.replace('\u{0}', "$")
}

/// The single-quoted script of `/bin/sh -c '...'`.
fn script(unit: &str, key: &str) -> String {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the hugepages unit"));
    let quoted = line
        .strip_prefix("/bin/sh -c '")
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{key}= is not /bin/sh -c '...': {line}"));
    quoted.to_string()
}

#[test]
fn the_hugepages_unit_writes_the_count_and_reports_what_it_got() {
    let unit = std::fs::read_to_string(systemd_dir().join("agentwire-hugepages.service")).unwrap();
    assert!(unit.contains(
        "Environment=AGENTWIRE_HUGEPAGES_FILE=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    ));
    assert!(unit.contains("EnvironmentFile=-/etc/agentwire/hugepages.env"));
    assert!(unit.contains("Environment=AGENTWIRE_HUGEPAGES=512\n"));
    let dir = scratch("hugepages");
    // A stand-in for nr_hugepages.
    let file = dir.join("nr_hugepages");
    std::fs::write(&file, "0\n").unwrap();
    let env = [
        ("AGENTWIRE_HUGEPAGES", "64"),
        ("AGENTWIRE_HUGEPAGES_FILE", file.to_str().unwrap()),
    ];
    run(Command::new("/bin/sh")
        .arg("-c")
        .arg(expand(&script(&unit, "ExecStart"), &env)));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "64\n");
    let out = run(Command::new("/bin/sh")
        .arg("-c")
        .arg(expand(&script(&unit, "ExecStartPost"), &env)));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("2 MiB huge pages reserved: 64 (asked for 64;"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cpuset_dropins_plan_prints_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let xml = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scheduler/tests/data/hwloc/24em64t-2n6c2t-pci.xml");
    let out = run(Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["plan", "--cpuset", "--json", "--topology"])
        .arg(&xml));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = unit_root("cpuset");
    let dropins = plan["dropins"].as_array().unwrap();
    assert_eq!(dropins.len(), 4);
    for d in dropins {
        let path = root.join(d["path"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, d["contents"].as_str().unwrap()).unwrap();
    }
    for unit in [
        "system.slice",
        "user.slice",
        "agentwire.slice",
        "agentwire.service",
    ] {
        verify(&root, unit);
    }
    let _ = std::fs::remove_dir_all(&root);
}
