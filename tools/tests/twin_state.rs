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

/// Two agents on `socket`: a receiver, then a sender.
fn receiver_and_sender(socket: &std::path::Path) -> (Agent, Agent) {
    let connect = |name: &str| Agent::builder(name).socket(socket).connect().unwrap();
    (connect("receiver"), connect("sender"))
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

/// The `daemon` slot of a `twin state --json` answer.
fn daemon_slot(state: &serde_json::Value) -> &serde_json::Value {
    state["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "daemon")
        .expect("a daemon slot")
}

/// The counter `counter` of the agent called `name` in a `twin state --json` answer (0 if
/// it has no slot).
fn agent_counter(state: &serde_json::Value, name: &str, counter: &str) -> u64 {
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .and_then(|a| a["counters"][counter].as_u64())
        .unwrap_or(0)
}

#[test]
fn the_mirror_shows_routed_frames_agents_and_partitions_without_a_query() {
    let dir = scratch("twin-state");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let (mut receiver, mut sender) = receiver_and_sender(&served.socket);
    const FRAMES: u64 = 5_000;
    // One frame to nobody: the router nacks it to the sender, and the sender's slot says so.
    const NOBODY: u32 = 999_999;
    sender.send(NOBODY, &0u64.to_le_bytes()).unwrap();
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
            && daemon_slot(&state)["counters"]["agents"] == 2
            && agent_counter(&state, "receiver", "frames_out") >= FRAMES
            && agent_counter(&state, "sender", "nacks_no_such_agent") >= 1
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
    let daemon = &daemon_slot(&state)["counters"];
    assert!(daemon["uptime_ms"].as_u64().unwrap() > 0, "{state}");
    assert!(
        daemon["dlq_bytes"].as_u64().unwrap() > 0,
        "the queue's header: {state}"
    );
    assert!(daemon.get("partition.streaming.cpus").is_some(), "{state}");
    // The status query agrees (it is read after the mirror, and counters only grow).
    assert!(
        served.counter("frames_in").unwrap()
            >= state["router_totals"]["frames_in"].as_u64().unwrap()
    );
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
    // Each agent's own slot: what it sent, what it was sent, the nack it got.
    let frame_bytes = (agentwire_shm::wire::HEADER_BYTES + 8) as u64;
    let agent = |name, counter| agent_counter(&state, name, counter);
    assert_eq!(agent("sender", "frames_in"), FRAMES + 1, "{state}");
    assert_eq!(
        agent("sender", "bytes_in"),
        (FRAMES + 1) * frame_bytes,
        "{state}"
    );
    assert_eq!(agent("sender", "frames_out"), 1, "the nack: {state}");
    assert_eq!(agent("sender", "nacks_no_such_agent"), 1, "{state}");
    assert_eq!(agent("receiver", "frames_in"), 0, "{state}");
    assert_eq!(agent("receiver", "frames_out"), FRAMES, "{state}");
    assert_eq!(
        agent("receiver", "bytes_out"),
        FRAMES * frame_bytes,
        "{state}"
    );
    let ids: Vec<u64> = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.contains(&u64::from(receiver.id())) && ids.contains(&u64::from(sender.id())),
        "{state}"
    );
    assert!(
        text.contains("receiver") && text.contains("frames_out"),
        "the agents' table: {text}"
    );
    let all = String::from_utf8(twin_state(&served.socket, &["--all"]).stdout).unwrap();
    assert!(
        all.contains("nacks_no_such_agent") && all.contains("tx_occupancy_max_permille"),
        "{all}"
    );
    // A departed agent's slot is cleared and taken back.
    drop((sender, receiver));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = state_json(&served.socket);
        if state["agents"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: departed agents kept their slots: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A stopped daemon leaves its last values, marked as such.
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
    // `twin risks --live` against no daemon: exit 1, the socket named.
    let out = Command::new(AGENTWIRE)
        .args(["twin", "risks", "--live", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody.sock"));
}

#[test]
fn the_twin_in_the_daemon_keeps_the_mirror_in_its_history_across_a_restart() {
    use agentwire_twin::history::{History, HistoryConfig};
    let dir = scratch("twin-history");
    let history = dir.join("twin-history");
    let config = dir.join("agentwire.toml");
    std::fs::write(
        &config,
        format!(
            "[twin]\nenabled = true\nsample_interval_ms = 20\nstate_dir = \"{}\"\n",
            history.display()
        ),
    )
    .unwrap();
    let socket = dir.join("agentwire.sock");
    let served = Served::start(&socket, &["--config", config.to_str().unwrap()]);
    let (mut receiver, mut sender) = receiver_and_sender(&served.socket);
    // Rates need two samples: send once the twin has a first one to count from.
    served.wait_for_counter("twin.samples", 2, "the twin took no samples");
    for i in 0..1_000u64 {
        sender.send(receiver.id(), &i.to_le_bytes()).unwrap();
        while receiver.recv_batch(256, |_, _| {}).unwrap() > 0 {}
    }
    // Samples of a mirror that shows both agents, the frames counted in the rates.
    let samples = served.counter("twin.samples").unwrap_or(0);
    served.wait_for_counter("twin.samples", samples + 10, "the twin took no samples");
    assert_eq!(served.counter("twin.read_errors"), Some(0));
    assert_eq!(served.counter("twin.history_errors"), Some(0));
    assert!(served.counter("twin.series").unwrap() >= 8);
    drop((sender, receiver));
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The history on disk (written at the stop): agents seen, frames routed.
    let read = |series: &str| {
        let h = History::open(&history, HistoryConfig::default()).unwrap();
        let newest = h.newest_ms().expect("the history has samples");
        h.query(series, 0, newest - 3_600_000, newest + 1).unwrap()
    };
    let agents = read("daemon.agents");
    // The two agents and the twin's own endpoint (it publishes alerts from it).
    assert!(agents.iter().any(|b| b.max == 3.0), "{agents:?}");
    let frames_in: f64 = read("router.frames_in_per_s")
        .iter()
        .map(|b| b.sum / b.count as f64)
        .sum();
    assert!(frames_in > 0.0, "the rates saw the frames");
    // The twin's jobs never wait: its partition is busy only with its real work (a job that
    // slept until the next sample was due read as ~1000 here).
    let twin_busy = read("partition.twin.busy_permille");
    let (sum, count) = twin_busy
        .iter()
        .fold((0.0, 0), |(s, c), b| (s + b.sum, c + b.count));
    assert!(count > 0 && sum / (count as f64) < 900.0, "{twin_busy:?}");
    // A second run appends to the same history.
    let before: u32 = read("daemon.agents").iter().map(|b| b.count).sum();
    let served = Served::start(&socket, &["--config", config.to_str().unwrap()]);
    served.wait_for_counter("twin.samples", 5, "the restarted twin took no samples");
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: u32 = read("daemon.agents").iter().map(|b| b.count).sum();
    assert!(after >= before + 5, "{before} samples, then {after}");
}

#[test]
fn a_bad_twin_section_is_refused_with_its_key() {
    let dir = scratch("twin-bad-config");
    let config = dir.join("agentwire.toml");
    std::fs::write(&config, "[twin]\nenabled = true\nsample_interval_ms = 5\n").unwrap();
    let out = Command::new(AGENTWIRE)
        .args(["config", "check", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("twin.sample_interval_ms") && text.contains(":3"),
        "{text}"
    );
}

#[test]
fn the_twin_publishes_an_alert_for_a_watched_signal_past_its_threshold() {
    let dir = scratch("twin-alerts");
    let config = dir.join("agentwire.toml");
    // One agent is enough to be past `daemon.agents >= 1`: the crossing is certain. Risks
    // are assessed on the 1 s buckets, which need 4 of them first.
    std::fs::write(
        &config,
        format!(
            "[twin]\nenabled = true\nsample_interval_ms = 20\nstate_dir = \"{}\"\n\
             risk_interval_ms = 200\nrisk_step_ms = 1000\nrisk_horizon_steps = 10\n\
             alerts_topic = \"ops.twin\"\n\
             [[twin.watch]]\nsignal = \"daemon.agents\"\nthreshold = 1\n\
             [[twin.watch]]\nsignal = \"router.deferred_now\"\nthreshold = 1000000\n",
            dir.join("history").display()
        ),
    )
    .unwrap();
    let served = Served::start(
        &dir.join("agentwire.sock"),
        &["--config", config.to_str().unwrap()],
    );
    let mut watcher = Agent::builder("watcher")
        .socket(&served.socket)
        .topic("ops.twin")
        .connect()
        .unwrap();
    let msg = watcher
        .recv(Some(Duration::from_secs(30)))
        .unwrap()
        .expect("watchdog: no alert within 30 s");
    let alert: serde_json::Value = serde_json::from_slice(msg.payload()).unwrap();
    drop(msg);
    assert_eq!(alert["signal"], "daemon.agents", "{alert}");
    assert_eq!(alert["alert"], true, "{alert}");
    assert_eq!(alert["probability"], 1.0, "{alert}");
    assert_eq!(alert["step_ms"], 1000, "{alert}");
    let status = served.status();
    assert!(served.counter("twin.alerts_published").unwrap() >= 1);
    assert_eq!(served.counter("twin.risk_errors"), Some(0));
    let risks = &status
        .info
        .iter()
        .find(|(k, _)| k == "twin_risks")
        .unwrap()
        .1;
    let risks: serde_json::Value = serde_json::from_str(risks).unwrap();
    let quiet = risks
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["signal"] == "router.deferred_now")
        .expect("the quiet watch was assessed too");
    assert_eq!(quiet["alert"], false, "{risks}");
    // `agentwire twin risks --live` shows the same assessments.
    let live = Command::new(AGENTWIRE)
        .args(["twin", "risks", "--live", "--socket"])
        .arg(&served.socket)
        .output()
        .unwrap();
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let text = String::from_utf8(live.stdout).unwrap();
    assert!(
        text.contains("daemon.agents") && text.contains("ALERT"),
        "{text}"
    );
    assert!(text.contains("router.deferred_now"), "{text}");
    drop(watcher);
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
