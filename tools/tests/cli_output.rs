//! What the CLI writes when its output goes somewhere other than a terminal: a reader that
//! leaves early (`agentwire status | head`) ends the output quietly, and logs written to a
//! pipe carry no terminal colour codes.

use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{scratch, serve_command, Served, AGENTWIRE};

/// How long a command may take to exit once its reader is gone.
const EXIT_WATCHDOG: Duration = Duration::from_secs(20);

/// A pipe whose read end is already closed: the child's first write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

/// Waits for `child` to exit (watchdog: fails the test if it is still running after
/// [`EXIT_WATCHDOG`]); returns its status and what it wrote to stderr.
fn exit_of(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + EXIT_WATCHDOG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchdog: the command did not exit within {EXIT_WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    (status, stderr)
}

fn assert_quiet_end(what: &str, status: ExitStatus, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && status.code() != Some(101),
        "{what}: a closed stdout must not panic ({status}): {stderr}"
    );
    assert!(
        status.success(),
        "{what}: a reader that leaves is not an error ({status}): {stderr}"
    );
}

#[test]
fn status_agents_and_routes_end_quietly_when_the_reader_has_gone() {
    let dir = scratch("epipe-status");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["agents"],
        &["routes"],
    ] {
        let child = Command::new(AGENTWIRE)
            .args(args)
            .arg("--socket")
            .arg(&served.socket)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, stderr) = exit_of(child);
        assert_quiet_end(&format!("{args:?}"), status, &stderr);
    }
}

#[test]
fn dlq_list_ends_quietly_when_the_reader_leaves_after_one_line() {
    let dir = scratch("epipe-dlq");
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    // ~5,000 table lines: several times a pipe's 64 KiB, so the listing is still being
    // written when the reader closes its end.
    let mut frame = vec![0u8; HEADER_BYTES + 16];
    for i in 0..5_000u64 {
        FrameHeader::new(FrameKind::Send, 42, 7, 16)
            .with_correlation(i)
            .write_to(&mut frame);
        dlq.append(NackReason::DestinationFull as u32, &frame)
            .unwrap();
    }
    dlq.sync().unwrap();
    drop(dlq);
    let mut child = Command::new(AGENTWIRE)
        .args(["dlq", "list", "--dlq"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("5000 record(s)"), "{first}");
    drop(reader);
    let (status, stderr) = exit_of(child);
    assert_quiet_end("dlq list", status, &stderr);
    // The same with the JSON object, whose one line is longer than the pipe.
    let child = Command::new(AGENTWIRE)
        .args(["dlq", "list", "--json", "--dlq"])
        .arg(&path)
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = exit_of(child);
    assert_quiet_end("dlq list --json", status, &stderr);
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = scratch("no-ansi");
    let socket = dir.join("agentwire.sock");
    // The daemon logs its machine, plan and checks through the log subscriber at start.
    let served = Served::adopt(
        serve_command(&socket)
            .env_remove("NO_COLOR")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        &socket,
    );
    let out = served.terminate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "the daemon logged: {stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "escape codes in a log written to a pipe: {stderr:?}"
    );
}
