//! The Debian package: `cargo deb` (from scripts/setup.sh) builds it from the metadata in
//! tools/Cargo.toml around the binary this test run built, and `dpkg-deb` lists the binary,
//! the units, the sysusers/tmpfiles entries, the config as a conffile and the maintainer
//! scripts.

use std::path::Path;
use std::process::Command;

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_deb_holds_the_binary_the_units_and_the_config_as_a_conffile() {
    let out_dir = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The binary this test run built (target/debug), packaged without another build.
    let built = Command::new(&cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
            "-q",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("-o")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo deb failed (scripts/setup.sh installs cargo-deb): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("agentwire_"));

    let contents = dpkg_deb(&["--contents"], &deb);
    for path in [
        "./usr/bin/agentwire",
        "./lib/systemd/system/agentwire.service",
        "./lib/systemd/system/agentwire-hugepages.service",
        "./lib/systemd/system/agentwire.slice",
        "./usr/lib/sysusers.d/agentwire.conf",
        "./usr/lib/tmpfiles.d/agentwire.conf",
        "./etc/agentwire/agentwire.toml",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{contents}"
        );
    }
    let conffiles = dpkg_deb(&["--info"], &deb);
    assert!(conffiles.contains("conffiles"), "{conffiles}");
    let control = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(control.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/agentwire/agentwire.toml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("systemd-sysusers agentwire.conf"),
        "{postinst}"
    );
    let control_file = std::fs::read_to_string(control.path().join("control")).unwrap();
    assert!(
        control_file.contains("Package: agentwire"),
        "{control_file}"
    );
    assert!(control_file.contains("systemd"), "{control_file}");
}
