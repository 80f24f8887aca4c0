//! `agentwire twin state` against a real daemon: the router shards' mirror shows the frames
//! two agents exchanged, the `daemon` slot the agents and partitions, without a query; a
//! stopped daemon's last values are marked; no segment, and a corrupt one, are clear errors.

use agentwire_shm::client::Agent;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{scratch, Served, AGENTWIRE};

fn twin_state(socket: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(AGENTWIRE)
        .args(["twin", "state", "--socket"])
        .arg(socket)
        .args(extra)
        .output()
        .unwrap()
}

fn state_json(socket: &std::path::Path) -> serde_json::Value {
    let out = twin_state(socket, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_mirror_shows_routed_frames_agents_and_partitions_without_a_query() {
    let dir = scratch("twin-state");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let mut receiver = Agent::builder("receiver")
        .socket(&served.socket)
        .connect()
        .unwrap();
    let mut sender = Agent::builder("sender")
        .socket(&served.socket)
        .connect()
        .unwrap();
    const FRAMES: u64 = 5_000;
    let mut received = 0u64;
    for i in 0..FRAMES {
        while sender.send(receiver.id(), &i.to_le_bytes()).is_err() {
            received += receiver.recv_batch(256, |_, _| {}).unwrap() as u64;
        }
    }
    while received < FRAMES {
        let n = receiver.recv_batch(256, |_, _| {}).unwrap() as u64;
        if n == 0 {
            receiver
                .recv(Some(Duration::from_secs(20)))
                .unwrap()
                .expect("watchdog: stalled");
            received += 1;
        }
        received += n;
    }
    // The shards publish on their own schedule (every 64 duty cycles and before parking):
    // poll the segment, never the daemon, until it shows every frame.
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = state_json(&served.socket);
        let frames_in = state["router_totals"]["frames_in"].as_u64().unwrap();
        if frames_in >= FRAMES
            && state["slots"].as_array().unwrap().last().unwrap()["counters"]["agents"] == 2
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: the mirror never showed the frames: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(state["daemon_running"], true, "{state}");
    assert_eq!(state["daemon_pid"], served.child.id(), "{state}");
    assert!(
        state["router_totals"]["frames_delivered"].as_u64().unwrap() >= FRAMES,
        "{state}"
    );
    assert_eq!(state["router_totals"]["agents_served"], 2, "{state}");
    let slots = state["slots"].as_array().unwrap();
    assert!(
        slots.len() >= 2,
        "a slot per shard and the daemon's: {state}"
    );
    assert!(
        slots[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("router.shard"),
        "{state}"
    );
    let daemon = &slots.last().unwrap()["counters"];
    assert!(daemon["uptime_ms"].as_u64().unwrap() > 0, "{state}");
    assert!(
        daemon["dlq_bytes"].as_u64().unwrap() > 0,
        "the queue's header: {state}"
    );
    assert!(daemon.get("partition.streaming.cpus").is_some(), "{state}");
    // The status query agrees (it is read after the mirror, and counters only grow).
    let status = served.status();
    let counter = |name: &str| status.counters.iter().find(|(k, _)| k == name).unwrap().1;
    assert!(counter("frames_in") >= state["router_totals"]["frames_in"].as_u64().unwrap());
    // The text summary and every counter.
    let text = twin_state(&served.socket, &["--interval-ms", "50"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("router shard") && text.contains("rates: frames_in_per_s"),
        "{text}"
    );
    assert!(
        text.contains("partition") && text.contains("streaming"),
        "{text}"
    );
    let all = String::from_utf8(twin_state(&served.socket, &["--all"]).stdout).unwrap();
    assert!(
        all.contains("nacks_no_such_agent") && all.contains("tx_occupancy_max_permille"),
        "{all}"
    );
    // A stopped daemon leaves its last values, marked as such.
    drop((sender, receiver));
    let pid = served.child.id();
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = state_json(&dir.join("agentwire.sock"));
    assert_eq!(state["daemon_running"], false, "{state}");
    assert_eq!(state["daemon_pid"], pid, "{state}");
    assert!(
        state["router_totals"]["frames_in"].as_u64().unwrap() >= FRAMES,
        "{state}"
    );
}

#[test]
fn no_segment_and_a_corrupt_one_are_clear_errors() {
    let dir = scratch("twin-state-errors");
    let socket = dir.join("nobody.sock");
    let out = twin_state(&socket, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobody.sock.stats") && err.contains("is a daemon serving"),
        "{err}"
    );
    std::fs::write(dir.join("nobody.sock.stats"), vec![0xA5u8; 8192]).unwrap();
    std::fs::write(
        dir.join("nobody.sock.stats.names"),
        "agentwire-stats-names 1\npid 1\n",
    )
    .unwrap();
    let out = twin_state(&socket, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("magic"), "{err}");
    assert!(out.stdout.is_empty(), "no JSON for a failure");
}
