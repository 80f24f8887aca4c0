//! The streaming engine inside a real `agentwire serve`: an agent process streams events to
//! it, another subscribes to its alerts, and `agentwire stream status` reports it.

mod common;

use agentwire_shm::client::Agent;
use agentwire_shm::stream_events::{EventBatch, WireEvent, WireKey, STREAM_CAPABILITY};
use agentwire_shm::wire::FrameKind;
use common::{cli_json, http_get, scratch, Scratch, Served, AGENTWIRE};
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[streaming]
enabled = true
detector = "windowed-gaussian"
alert_threshold = 0.999
results_topic = ""
[streaming.window]
kind = "tumbling"
size_ms = 1000
"#;

/// A daemon with the engine of [`CONFIG`], in a scratch directory of its own (kept while the
/// returned `Scratch` lives).
fn serve_with_engine(name: &str) -> (Served, std::path::PathBuf, Scratch) {
    let dir = scratch(name);
    let config = dir.join("agentwire.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let socket = dir.join("aw.sock");
    let served = Served::start(&socket, &["--config", config.to_str().unwrap()]);
    (served, socket, dir)
}

/// The engine's agent id, once it is up: the control socket answers while the daemon is
/// still starting its engines, and frames sent to the feature id before the engine
/// registers are refused.
fn wait_for_engine(agent: &mut Agent) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = agent.discover(STREAM_CAPABILITY, "^1").unwrap().first() {
            return found.agent_id;
        }
        assert!(Instant::now() < deadline, "the engine never registered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn event(t: i64, value: f64) -> WireEvent {
    WireEvent {
        key: WireKey::Name("disk-1".into()),
        event_time_ns: t,
        value,
        attributes: vec![],
    }
}

#[test]
fn the_daemon_runs_the_engine_and_an_agent_gets_its_alert() {
    let (served, socket, _dir) = serve_with_engine("stream-daemon");
    let mut watcher = Agent::builder("watcher").socket(&socket).connect().unwrap();
    watcher.subscribe("stream.alerts").unwrap();
    let mut sensor = Agent::builder("sensor").socket(&socket).connect().unwrap();
    let engine = wait_for_engine(&mut sensor);
    let calm: Vec<WireEvent> = (0..1_000)
        .map(|i| event(i * 1_000_000, 50.0 + (i % 5) as f64))
        .collect();
    let ack = sensor
        .stream_batch_acked(
            engine,
            &EventBatch { events: calm },
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!((ack.accepted, ack.malformed), (1_000, 0));
    let spike = EventBatch {
        events: vec![
            event(1_000_000_001, 5e5),
            event(1_000_000_002, f64::INFINITY),
        ],
    };
    let ack = sensor
        .stream_batch_acked(engine, &spike, Duration::from_secs(10))
        .unwrap();
    assert_eq!((ack.accepted, ack.malformed), (1, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no alert for the spike within 10 s");
        let Some(m) = watcher.recv(Some(left)).unwrap() else {
            continue;
        };
        if m.header().kind() != FrameKind::Publish {
            continue;
        }
        let alert: serde_json::Value = serde_json::from_slice(m.payload()).unwrap();
        if alert["value"] == 5e5 {
            break alert;
        }
    };
    assert_eq!(alert["key"], "disk-1");
    // The engine's counters, as a script reads them.
    let status = cli_json(&["stream", "status"], &socket);
    let stream = &status["streaming"];
    assert_eq!(stream["agent_id"], engine);
    assert_eq!(
        (
            stream["events_accepted"].as_u64(),
            stream["events_malformed"].as_u64()
        ),
        (Some(1_001), Some(1))
    );
    assert!(stream["alerts"].as_u64().unwrap() >= 1);
    // And as Prometheus scrapes them.
    let url = served
        .status()
        .info
        .iter()
        .find(|(k, _)| k == "metrics")
        .unwrap()
        .1
        .clone();
    let (code, body) = http_get(&url);
    assert_eq!(code, 200);
    assert!(
        body.contains("agentwire_stream_events_accepted_total 1001"),
        "{body}"
    );
    assert!(
        body.contains("agentwire_stream_events_malformed_total 1"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE agentwire_stream_running gauge"),
        "{body}"
    );
    assert!(body.contains("agentwire_stream_running 1"), "{body}");
    drop(served.terminate());
}

#[test]
fn stream_status_without_the_engine_says_how_to_turn_it_on() {
    let dir = scratch("stream-off");
    let socket = dir.join("aw.sock");
    let served = Served::start(&socket, &[]);
    let out = Command::new(AGENTWIRE)
        .args(["stream", "status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set [streaming] enabled = true"));
    drop(served.terminate());
}

#[test]
fn a_bad_streaming_section_is_refused_with_its_line() {
    let dir = scratch("stream-bad");
    let config = dir.join("agentwire.toml");
    std::fs::write(
        &config,
        "[streaming]\nenabled = true\ndetector = \"psychic\"\n",
    )
    .unwrap();
    let out = common::serve_command(&dir.join("aw.sock"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("streaming.detector"), "{stderr}");
    assert!(stderr.contains("unknown detector \"psychic\""), "{stderr}");
}

#[test]
fn tcp_and_udp_lines_reach_the_engine_through_stream_listen() {
    use std::io::{BufRead, BufReader, Write};
    let (served, socket, _dir) = serve_with_engine("stream-listen");
    wait_for_engine(&mut Agent::builder("probe").socket(&socket).connect().unwrap());
    let mut listen = Command::new(AGENTWIRE)
        .args([
            "stream",
            "listen",
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--socket",
        ])
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(listen.stderr.take().unwrap());
    let mut addr = |proto: &str| {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let prefix = format!("agentwire stream listen: {proto} ");
        line.trim()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{line}"))
            .to_string()
    };
    let (tcp, udp) = (addr("tcp"), addr("udp"));
    let mut conn = std::net::TcpStream::connect(&tcp).unwrap();
    for i in 0..100 {
        writeln!(conn, "disk-{} {} {}", i % 3, 40 + i % 5, 1_000_000 * i).unwrap();
    }
    writeln!(conn, "disk-1 lots").unwrap();
    let mut reply = String::new();
    BufReader::new(conn.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert_eq!(reply.trim(), "error 101: value \"lots\" is not a number");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram: String = (0..10)
        .map(|i| format!("7,{i}.5,{}\n", 200_000_000 + i))
        .collect();
    sender.send_to(datagram.as_bytes(), &udp).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // From the report itself: the daemon installs the engine's counters a moment after
        // the engine registers.
        let accepted = served
            .status()
            .counters
            .iter()
            .find(|(k, _)| k == "stream.events_accepted")
            .map_or(0, |(_, v)| *v);
        if accepted == 110 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine took {accepted} events, not 110"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&listen);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // The summary comes after the signal; close our end so the listener's reads end too.
    drop(conn);
    let status = listen.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut summary).unwrap();
    assert!(
        summary.contains("111 lines, 110 forwarded, 1 malformed"),
        "{summary}"
    );
    drop(served.terminate());
}

/// `agentwire stream status --json`'s engine object, once `ready` holds for it (10 s at
/// most: the daemon answers before its engine is up, and the engine's counters are
/// refreshed after each of its slices).
fn stream_status_when(
    socket: &std::path::Path,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(AGENTWIRE)
            .args(["stream", "status", "--json", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        let stream = match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(status) if out.status.success() => status["streaming"].clone(),
            _ => serde_json::Value::Null,
        };
        if ready(&stream) {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "stream status never got there: {stream}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends 100 events from `first`, acked.
fn send_hundred(socket: &std::path::Path, first: i64) {
    let mut sensor = Agent::builder("sensor").socket(socket).connect().unwrap();
    let engine = wait_for_engine(&mut sensor);
    let events = (first..first + 100)
        .map(|i| event(i * 1_000_000, (i % 7) as f64))
        .collect();
    let ack = sensor
        .stream_batch_acked(engine, &EventBatch { events }, Duration::from_secs(10))
        .unwrap();
    assert_eq!((ack.accepted, ack.malformed), (100, 0));
}

#[test]
fn the_engine_replays_its_log_after_sigkill_and_a_clean_stop_leaves_nothing_to_replay() {
    let (served, socket, _dir) = serve_with_engine("stream-durable");
    send_hundred(&socket, 0);
    send_hundred(&socket, 100);
    // By default the state lives beside the dead-letter queue.
    let state = socket.with_file_name("stream");
    assert!(state.join("log").is_dir(), "{}", state.display());
    drop(served); // SIGKILL: no checkpoint was due (every 10 s by default)

    let config = socket.with_file_name("agentwire.toml");
    let args = ["--config", config.to_str().unwrap()];
    let served = Served::start(&socket, &args);
    let stream = stream_status_when(&socket, |s| s["events_replayed"] == 200);
    assert_eq!(stream["restored_epoch"], 0);
    send_hundred(&socket, 200);
    let out = served.terminate(); // SIGTERM: the engine checkpoints as it stops
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let served = Served::start(&socket, &args);
    let stream = stream_status_when(&socket, |s| s["restored_epoch"] == 1);
    assert_eq!(stream["events_replayed"], 0);
    // One processing shard per core the streaming partition runs on.
    let status = cli_json(&["status"], &socket);
    let cores = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "streaming")
        .expect("a streaming partition")["cpus"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(stream["shards"], cores.max(1));
    // Its windows go on from where they were: the next event is not late.
    send_hundred(&socket, 300);
    let stream = stream_status_when(&socket, |s| s["events_accepted"] == 100);
    assert_eq!(stream["events_malformed"], 0);
    drop(served.terminate());
}
