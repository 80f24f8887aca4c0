//! `agentwire dlq list|replay|purge` as a user runs them: the real binary, a real queue
//! file, and (for replay) a real router with a receiving agent.

mod common;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
use agentwire_shm::client::Agent;
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use common::{scratch_with_prefix, Scratch};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn scratch(name: &str) -> Scratch {
    scratch_with_prefix("aw-dlq-cli", name)
}

fn frame_to(destination: u32, payload: &[u8], correlation: u64) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_BYTES + payload.len()];
    FrameHeader::new(FrameKind::Send, 42, destination, payload.len() as u32)
        .with_correlation(correlation)
        .write_to(&mut f);
    f[HEADER_BYTES..].copy_from_slice(payload);
    f
}

fn agentwire(args: &[&str], dlq: &Path) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .arg("--dlq")
        .arg(dlq)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object expected ({e}): {stdout:?}"));
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn list_shows_every_record_as_json() {
    let dir = scratch("list");
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    dlq.append(
        NackReason::DestinationFull as u32,
        &frame_to(7, b"hello", 99),
    )
    .unwrap();
    dlq.append(NackReason::NoSuchAgent as u32, b"not a frame")
        .unwrap();
    dlq.sync().unwrap();
    let (ok, json, _) = agentwire(&["dlq", "list"], &path);
    assert!(ok);
    let records = json["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["sequence"], 1);
    assert_eq!(records[0]["reason_name"], "DestinationFull");
    assert_eq!(records[0]["kind"], "Send");
    assert_eq!(records[0]["destination"], 7);
    assert_eq!(records[0]["correlation_id"], 99);
    assert_eq!(records[1]["valid_frame"], false);
}

#[test]
fn replay_delivers_in_order_and_empties_the_queue() {
    let dir = scratch("replay");
    let router = TestRouter::start(TestRouterConfig::new(dir.join("agentwire.sock"))).unwrap();
    let mut receiver = Agent::builder("receiver")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    for i in 0u8..5 {
        dlq.append(
            NackReason::DestinationFull as u32,
            &frame_to(receiver.id(), &[i; 16], u64::from(i)),
        )
        .unwrap();
    }
    drop(dlq);
    let (ok, json, stderr) = agentwire(
        &[
            "dlq",
            "replay",
            "--socket",
            router.socket_path().to_str().unwrap(),
        ],
        &path,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        (json["replayed"].as_u64(), json["remaining"].as_u64()),
        (Some(5), Some(0))
    );
    for i in 0u8..5 {
        let m = receiver
            .recv(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("replayed frame");
        assert_eq!(m.payload(), [i; 16]);
        assert_eq!(
            m.header().correlation(),
            u64::from(i),
            "correlation ids survive replay"
        );
    }
    assert!(DeadLetterQueue::open(DlqConfig::new(&path))
        .unwrap()
        .is_empty());
}

#[test]
fn replay_stops_at_a_refusal_and_keeps_the_rest() {
    let dir = scratch("refusal");
    let router = TestRouter::start(TestRouterConfig::new(dir.join("agentwire.sock"))).unwrap();
    let mut receiver = Agent::builder("receiver")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    dlq.append(3, &frame_to(receiver.id(), b"first", 1))
        .unwrap();
    dlq.append(3, &frame_to(9999, b"nobody home", 2)).unwrap();
    dlq.append(3, &frame_to(receiver.id(), b"third", 3))
        .unwrap();
    drop(dlq);
    let (ok, json, stderr) = agentwire(
        &[
            "dlq",
            "replay",
            "--socket",
            router.socket_path().to_str().unwrap(),
        ],
        &path,
    );
    assert!(!ok, "a refused replay exits non-zero");
    assert!(
        stderr.contains("record 2 refused again") && stderr.contains("NoSuchAgent"),
        "{stderr}"
    );
    assert_eq!(
        (json["replayed"].as_u64(), json["remaining"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        receiver
            .recv(Some(Duration::from_secs(10)))
            .unwrap()
            .unwrap()
            .payload(),
        b"first"
    );
    let kept: Vec<u64> = DeadLetterQueue::open(DlqConfig::new(&path))
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|l| l.sequence)
        .collect();
    assert_eq!(kept, [2, 3]);
}

#[test]
fn replay_without_a_daemon_fails_clearly_and_keeps_everything() {
    let dir = scratch("nodaemon");
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    dlq.append(3, &frame_to(1, b"x", 1)).unwrap();
    drop(dlq);
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["dlq", "replay", "--socket"])
        .arg(dir.join("absent.sock"))
        .arg("--dlq")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agentwire: error:") && stderr.contains("control socket"),
        "{stderr}"
    );
    assert_eq!(
        DeadLetterQueue::open(DlqConfig::new(&path)).unwrap().len(),
        1
    );
}

#[test]
fn records_of_an_earlier_run_need_a_target_and_then_reach_it() {
    let dir = scratch("earlier-run");
    // This run's ids start at 1000; the records were sent by agent 42 of an earlier run.
    let router = TestRouter::start(TestRouterConfig {
        first_agent_id: 1000,
        ..TestRouterConfig::new(dir.join("agentwire.sock"))
    })
    .unwrap();
    let mut receiver = Agent::builder("receiver")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    assert!(receiver.id() >= 1000);
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    // Unicast to agent 7 of the earlier run: no agent of this run may get it by accident.
    dlq.append(NackReason::DestinationFull as u32, &frame_to(7, b"old", 1))
        .unwrap();
    dlq.sync().unwrap();
    drop(dlq);
    let socket = router.socket_path().to_str().unwrap().to_string();
    let (ok, json, stderr) = agentwire(&["dlq", "replay", "--socket", &socket], &path);
    assert!(!ok, "replayed a record of an earlier run without a target");
    assert_eq!(json["replayed"], 0);
    assert_eq!(json["remaining"], 1);
    assert!(
        stderr.contains("earlier run") && stderr.contains("--to"),
        "{stderr}"
    );
    assert!(receiver
        .recv(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
    // Named, it reaches the agent of this run.
    let (ok, json, stderr) = agentwire(
        &[
            "dlq",
            "replay",
            "--socket",
            &socket,
            "--to-name",
            "receiver",
        ],
        &path,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        (json["replayed"].as_u64(), json["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    let msg = receiver
        .recv(Some(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload(), b"old");
    // An unknown target is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["dlq", "replay", "--socket", &socket, "--to", "5", "--dlq"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no agent 5"),
        "{stderr}"
    );
}

#[test]
fn purge_removes_everything() {
    let dir = scratch("purge");
    let path = dir.join("dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    dlq.append(3, b"a").unwrap();
    dlq.append(3, b"b").unwrap();
    drop(dlq);
    let (ok, json, _) = agentwire(&["dlq", "purge"], &path);
    assert!(ok);
    assert_eq!(json["purged"], 2);
    assert!(DeadLetterQueue::open(DlqConfig::new(&path))
        .unwrap()
        .is_empty());
}

#[test]
fn inspecting_a_missing_queue_creates_nothing() {
    let dir = scratch("missing");
    let path = dir.join("sub").join("dlq.log");
    let (ok, json, _) = agentwire(&["dlq", "list"], &path);
    assert!(ok);
    assert_eq!(json["exists"], false);
    assert_eq!(json["records"].as_array().unwrap().len(), 0);
    assert!(
        !path.exists() && !path.parent().unwrap().exists(),
        "list must not create files"
    );
}
