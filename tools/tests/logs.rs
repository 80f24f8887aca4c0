//! The daemon's log as the three consumers read it: a log shipper (`--log-format json`, one
//! JSON object per line), journald (JOURNAL_STREAM naming stderr: `<N>` priority prefixes, no
//! escape codes) and a person at a terminal or a pipe (plain text); and what a peer can
//! make the daemon log again and again is rate-limited.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{scratch, serve_command, Served, AGENTWIRE};

const WATCHDOG: Duration = Duration::from_secs(20);

/// SIGHUP, then waits (watchdog) until the daemon counts the reload.
fn reload(served: &Served) {
    let pid = rustix::process::Pid::from_child(&served.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while !served
        .status()
        .info
        .iter()
        .any(|(k, v)| k == "reloads" && v == "1")
    {
        assert!(Instant::now() < deadline, "watchdog: reload never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a daemon on `config`, changes a key that needs a restart and reloads (so the log
/// has info and warning lines), stops it; returns its exit status's success.
fn run_daemon(mut cmd: Command, config: &Path, socket: &Path) -> bool {
    std::fs::write(config, "agents_max = 100\n").unwrap();
    let child = cmd.arg("--config").arg(config).spawn().unwrap();
    let served = Served::adopt(child, socket);
    std::fs::write(config, "agents_max = 200\n").unwrap();
    reload(&served);
    served.terminate().status.success()
}

/// `DEVICE:INODE` of an open file, as systemd puts it in JOURNAL_STREAM.
fn journal_stream(file: &std::fs::File) -> String {
    let st = rustix::fs::fstat(file).unwrap();
    format!("{}:{}", st.st_dev, st.st_ino)
}

#[test]
fn json_logs_parse_line_by_line() {
    let dir = scratch("log-json");
    let socket = dir.join("agentwire.sock");
    let log = dir.join("stderr.log");
    let mut cmd = serve_command(&socket);
    cmd.args(["--log-format", "json"])
        .stderr(std::fs::File::create(&log).unwrap());
    assert!(run_daemon(cmd, &dir.join("agentwire.toml"), &socket));
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    for event in &events {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "no {field} in {event}");
        }
    }
    let said = |level: &str, text: &str| {
        events
            .iter()
            .any(|e| e["level"] == level && e["message"].as_str().unwrap().contains(text))
    };
    assert!(said("INFO", "serving: pid"), "{text}");
    assert!(
        said(
            "WARN",
            "changed keys that need a restart were not applied: agents_max"
        ),
        "{text}"
    );
    assert!(said("INFO", "stopped"), "{text}");
}

#[test]
fn the_log_format_comes_from_the_environment_and_errors_follow_it() {
    let out = Command::new(AGENTWIRE)
        .args(["config", "check", "/nonexistent/agentwire.toml"])
        .env("AGENTWIRE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let event: serde_json::Value = serde_json::from_str(stderr.trim()).expect("one JSON line");
    assert_eq!(event["level"], "ERROR");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("agentwire.toml"),
        "{event}"
    );
    let bad = Command::new(AGENTWIRE)
        .args(["--log-format", "xml", "config", "default"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error");
}

#[test]
fn under_journald_lines_carry_priorities_and_no_escape_codes() {
    let dir = scratch("log-journal");
    let socket = dir.join("agentwire.sock");
    let log = dir.join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let stream = journal_stream(&file);
    let mut cmd = serve_command(&socket);
    // What systemd sets; TERM too, as a terminal would, which must not bring colour back.
    cmd.env("JOURNAL_STREAM", &stream)
        .env("TERM", "xterm-256color")
        .stderr(file);
    assert!(run_daemon(cmd, &dir.join("agentwire.toml"), &socket));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\x1b'),
        "escape codes for journald: {text:?}"
    );
    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(n, _)| n.parse::<u8>().ok());
        assert!(
            matches!(priority, Some(3 | 4 | 6 | 7)),
            "a line without a priority: {line:?}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("serving: pid")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("need a restart were not applied")),
        "{text}"
    );

    // A command's final error under journald is an error (<3>).
    let err_log = dir.join("error.log");
    let file = std::fs::File::create(&err_log).unwrap();
    let status = Command::new(AGENTWIRE)
        .args(["config", "check", "/nonexistent/agentwire.toml"])
        .env("JOURNAL_STREAM", journal_stream(&file))
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read_to_string(&err_log).unwrap();
    assert!(text.starts_with("<3>agentwire: error: "), "{text:?}");
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_plain_text() {
    // A shell started from a service inherits JOURNAL_STREAM with its stderr redirected:
    // its lines must not be prefixed.
    let dir = scratch("log-not-journal");
    let other = std::fs::File::create(dir.join("other")).unwrap();
    let out = Command::new(AGENTWIRE)
        .args(["config", "check", "/nonexistent/agentwire.toml"])
        .env("JOURNAL_STREAM", journal_stream(&other))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("agentwire: error: "), "{stderr:?}");
}

#[test]
fn garbage_from_peers_is_counted_every_time_and_logged_at_a_rate_limit() {
    const CONNECTIONS: u64 = 50;
    let dir = scratch("log-rate");
    let socket = dir.join("agentwire.sock");
    let served = Served::start(&socket, &[]);
    let counter = |name: &str| {
        served
            .status()
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    let started = Instant::now();
    let conns: Vec<agentwire_shm::control::ControlConn> = (0..CONNECTIONS)
        .map(|i| {
            let c = agentwire_shm::control::ControlConn::connect(&socket).unwrap();
            // The router test's garbage (control_plane.rs): 64 bytes that no message starts
            // with, so each is malformed at once rather than a message still arriving.
            let bytes: Vec<u8> = (0..64u8)
                .map(|b| b.wrapping_mul(31).wrapping_add((i % 16) as u8))
                .collect();
            rustix::net::send(&c, &bytes, rustix::net::SendFlags::empty()).unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + WATCHDOG;
    while counter("control_messages_malformed") < CONNECTIONS {
        assert!(
            Instant::now() < deadline,
            "watchdog: garbage counted {} times, not {CONNECTIONS}",
            counter("control_messages_malformed")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // One line per 10 s interval at most, however many peers sent garbage in it.
    let intervals = 1 + started.elapsed().as_secs() / 10;
    drop(conns);
    let out = served.terminate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.matches("malformed control message").count() as u64;
    assert!(
        (1..=intervals).contains(&lines),
        "{lines} lines for {CONNECTIONS} malformed messages in {intervals} interval(s): {stderr}"
    );
    assert!(stderr.contains("logged at most once every 10s"), "{stderr}");
}
