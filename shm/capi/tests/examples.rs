//! The C examples (examples/c/) built the way a user builds them, with the flags the
//! rendered pkg-config file gives, and run against a real daemon: a publisher and a
//! subscriber exchange messages, a requester gets every reply from a responder.

mod common;

use common::{crate_dir, lib_dir, repo_dir, scratch, Daemon, Program, PROGRAM_WATCHDOG};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MESSAGES: usize = 20;

/// Installs the built library, the header and the rendered agentwire.pc into `prefix`.
fn install(prefix: &Path) -> PathBuf {
    let lib = prefix.join("lib");
    let include = prefix.join("include");
    let pkgconfig = lib.join("pkgconfig");
    for dir in [&lib, &include, &pkgconfig] {
        std::fs::create_dir_all(dir).unwrap();
    }
    for name in ["libagentwire.so", "libagentwire.a"] {
        std::fs::copy(lib_dir().join(name), lib.join(name)).unwrap();
    }
    std::fs::copy(
        crate_dir().join("include/agentwire.h"),
        include.join("agentwire.h"),
    )
    .unwrap();
    let template = std::fs::read_to_string(crate_dir().join("agentwire.pc.in")).unwrap();
    let rendered = template
        .replace("@PREFIX@", prefix.to_str().unwrap())
        .replace("@LIBDIR@", lib.to_str().unwrap())
        .replace("@INCLUDEDIR@", include.to_str().unwrap())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(pkgconfig.join("agentwire.pc"), rendered).unwrap();
    pkgconfig
}

/// `pkg-config` output for agentwire from `pkgconfig_dir`.
fn pkg_config(pkgconfig_dir: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("agentwire")
        .env("PKG_CONFIG_PATH", pkgconfig_dir)
        .output()
        .expect("pkg-config runs (apt-get install pkg-config)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Compiles an example with `-Wall -Wextra -Werror -std=c11` and pkg-config's flags.
fn build_example(dir: &Path, pkgconfig_dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let libdir = pkg_config(pkgconfig_dir, &["--variable=libdir"]).join("");
    let result = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-std=c11", "-o"])
        .arg(&out)
        .args(pkg_config(pkgconfig_dir, &["--cflags"]))
        .arg(repo_dir().join(format!("examples/c/{name}.c")))
        .args(pkg_config(pkgconfig_dir, &["--libs"]))
        .arg(format!("-Wl,-rpath,{libdir}"))
        .output()
        .expect("cc runs (apt-get install build-essential)");
    assert!(
        result.status.success(),
        "{name}.c does not build: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// Waits (watchdog) until a program printed `line` to its stdout file.
fn wait_for_line(dir: &Path, program: &str, line: &str) {
    let path = dir.join(format!("{program}.{}.out", std::process::id()));
    let deadline = Instant::now() + PROGRAM_WATCHDOG;
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .any(|l| l == line)
    {
        assert!(
            Instant::now() < deadline,
            "watchdog: {program} never printed {line:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn the_publisher_and_subscriber_examples_exchange_every_message() {
    let dir = scratch("pubsub");
    let pkgconfig = install(&dir.join("prefix"));
    let publisher = build_example(&dir, &pkgconfig, "publisher");
    let subscriber = build_example(&dir, &pkgconfig, "subscriber");
    let daemon = Daemon::start(&dir);
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let count = MESSAGES.to_string();
    let sub = Program::spawn(&subscriber, &[&socket, "news", &count], &dir);
    // Subscribed at registration: once it says ready, every publish reaches it.
    wait_for_line(&dir, "subscriber", "ready");
    let published = Program::spawn(&publisher, &[&socket, "news", &count], &dir).finish();
    assert_eq!(published.trim(), format!("published {MESSAGES}"));
    let got = sub.finish();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("got message {i}")).collect();
    let lines: Vec<&str> = got.lines().skip(1).collect();
    assert_eq!(lines, expected, "every message, in order, once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_request_example_gets_every_reply_from_the_respond_example() {
    let dir = scratch("reqresp");
    let pkgconfig = install(&dir.join("prefix"));
    let request = build_example(&dir, &pkgconfig, "request");
    let respond = build_example(&dir, &pkgconfig, "respond");
    let daemon = Daemon::start(&dir);
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let count = MESSAGES.to_string();
    let responder = Program::spawn(&respond, &[&socket, &count], &dir);
    wait_for_line(&dir, "respond", "ready");
    let replies = Program::spawn(&request, &[&socket, &count], &dir).finish();
    let expected: Vec<String> = (0..MESSAGES)
        .map(|i| format!("reply echo: hello {i}"))
        .collect();
    assert_eq!(replies.lines().collect::<Vec<_>>(), expected);
    assert!(responder.finish().contains(&format!("answered {MESSAGES}")));
    let _ = std::fs::remove_dir_all(&dir);
}
