//! The in-daemon adapter against a real router: shared-memory agents in this process send
//! event batches to the engine's feature id and get alerts and window results on topics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_shm::stream_events::{
    decode_ack, EventBatch, WireEvent, WireKey, STREAM_CAPABILITY, STREAM_FEATURE_ID,
};
use agentwire_shm::wire::FrameKind;
use agentwire_streaming::adapter::{EngineStats, StreamEngine, StreamEngineConfig};
use agentwire_streaming::window::{WindowKind, WindowSpec};

const SECOND_NS: i64 = 1_000_000_000;

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<EngineStats>>,
}

impl Running {
    fn stop(mut self) -> EngineStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn start(router: &TestRouter) -> (Running, u32) {
    let config = StreamEngineConfig {
        window: WindowSpec::new(WindowKind::Tumbling { size_ns: SECOND_NS }),
        detector: "windowed-gaussian".into(),
        alert_threshold: 0.999,
        ..Default::default()
    };
    start_with(router, config)
}

/// The engine with `config`, driven on a thread until stopped.
fn start_with(router: &TestRouter, config: StreamEngineConfig) -> (Running, u32) {
    let mut engine = StreamEngine::register(router.control(), config).unwrap();
    let id = engine.agent_id();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if engine.do_work() == 0 {
                engine.park(Duration::from_millis(1));
            }
        }
        engine.stats()
    });
    (
        Running {
            stop,
            thread: Some(thread),
        },
        id,
    )
}

fn event(key: u64, t: i64, value: f64) -> WireEvent {
    WireEvent {
        key: WireKey::Id(key),
        event_time_ns: t,
        value,
        attributes: vec![],
    }
}

/// The next message of `kind` within 10 s.
fn next_payload(agent: &mut Agent, kind: FrameKind) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind:?} within 10 s");
        if let Some(m) = agent.recv(Some(left)).unwrap() {
            if m.header().kind() == kind {
                return m.payload().to_vec();
            }
        }
    }
}

#[test]
fn an_agent_streams_events_and_another_gets_the_alert_and_the_windows() {
    let sock = std::env::temp_dir().join(format!("aw-stream-adapter-{}.sock", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    let (engine, _) = start(&router);
    let mut watcher = Agent::builder("watcher")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    watcher.subscribe("stream.alerts").unwrap();
    let mut windows = Agent::builder("windows")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    windows.subscribe("stream.windows").unwrap();
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    // 2,000 calm readings over 20 s of event time, in batches of 100, then one spike.
    for chunk in 0..20 {
        let events = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                event(1, n * SECOND_NS / 100, 10.0 + (n % 7) as f64 * 0.1)
            })
            .collect();
        sender
            .stream_batch(STREAM_FEATURE_ID, &EventBatch { events })
            .unwrap();
    }
    let spike = EventBatch {
        events: vec![event(1, 20 * SECOND_NS + 1, 1e6)],
    };
    sender.stream_batch(STREAM_FEATURE_ID, &spike).unwrap();

    // The detector may also flag calm readings while it learns; the spike must be flagged.
    let alert = loop {
        let alert: serde_json::Value =
            serde_json::from_slice(&next_payload(&mut watcher, FrameKind::Publish)).unwrap();
        assert!(alert["score"].as_f64().unwrap() >= 0.999);
        if alert["value"] == 1e6 {
            break alert;
        }
    };
    assert_eq!(
        (alert["key"].as_u64(), alert["detector"].as_str()),
        (Some(1), Some("windowed-gaussian"))
    );
    let first: serde_json::Value =
        serde_json::from_slice(&next_payload(&mut windows, FrameKind::Publish)).unwrap();
    assert_eq!(
        (first["start_ns"].as_i64(), first["count"].as_u64()),
        (Some(0), Some(100))
    );
    let stats = engine.stop();
    assert_eq!(stats.events_accepted, 2_001);
    assert_eq!(stats.events_malformed, 0);
    assert!(stats.alerts >= 1);
    assert!(stats.results >= 19, "{stats:?}");
}

#[test]
fn bad_events_are_counted_and_reported_to_their_sender() {
    let sock =
        std::env::temp_dir().join(format!("aw-stream-adapter-bad-{}.sock", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    let (engine, engine_id) = start(&router);
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let found = sender.discover(STREAM_CAPABILITY, "^1").unwrap();
    assert_eq!(
        found.iter().map(|a| a.agent_id).collect::<Vec<_>>(),
        vec![engine_id]
    );
    // A request gets an ack every time: one good event, one NaN, one name too long.
    let batch = EventBatch {
        events: vec![
            event(1, 0, 1.0),
            event(1, 1, f64::NAN),
            WireEvent {
                key: WireKey::Name("n".repeat(40)),
                event_time_ns: 2,
                value: 1.0,
                attributes: vec![],
            },
        ],
    };
    let ack = sender
        .stream_batch_acked(engine_id, &batch, Duration::from_secs(10))
        .unwrap();
    assert_eq!((ack.accepted, ack.malformed), (1, 2));
    assert_eq!(ack.first_problem, "event 1: value NaN is not finite");
    // Garbage to the feature id: answered although not a request, and nothing crashes.
    sender
        .send_feature(STREAM_FEATURE_ID, b"certainly not an rkyv archive")
        .unwrap();
    let ack = decode_ack(&next_payload(&mut sender, FrameKind::Response)).unwrap();
    assert_eq!((ack.accepted, ack.malformed), (0, 1));
    assert!(
        ack.first_problem
            .starts_with("the frame is not an event batch"),
        "{}",
        ack.first_problem
    );
    // The engine still works after it.
    let ok = sender
        .stream_batch_acked(
            engine_id,
            &EventBatch {
                events: vec![event(2, 5, 2.0)],
            },
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!((ok.accepted, ok.malformed), (1, 0));
    let stats = engine.stop();
    assert_eq!(
        (stats.events_accepted, stats.events_malformed, stats.acks),
        (2, 3, 3)
    );
}

#[test]
fn accepted_events_are_in_the_log_before_their_ack() {
    let sock =
        std::env::temp_dir().join(format!("aw-stream-adapter-log-{}.sock", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = StreamEngineConfig {
        detector: "windowed-gaussian".into(),
        log: Some(agentwire_streaming::log::LogConfig::new(
            dir.path().join("log"),
        )),
        ..Default::default()
    };
    let (engine, engine_id) = start_with(&router, config);
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    for chunk in 0..3 {
        let events = (0..50)
            .map(|i| event(chunk, i, i as f64))
            .chain([event(9, 1, f64::NAN)])
            .collect();
        let ack = sender
            .stream_batch_acked(engine_id, &EventBatch { events }, Duration::from_secs(10))
            .unwrap();
        assert_eq!((ack.accepted, ack.malformed), (50, 1));
        // Acked, so already in the log (EveryBatch: synced before the ack).
        let (mut log, _) = agentwire_streaming::log::Log::open(
            agentwire_streaming::log::LogConfig::new(dir.path().join("log")),
        )
        .unwrap();
        assert_eq!(log.end_offset(0).unwrap(), 50 * (chunk + 1));
        let mut keys = Vec::new();
        log.read(0, 50 * chunk, 100, &mut |_, _, payload| {
            keys.push(agentwire_streaming::codec::decode(payload).unwrap().key)
        })
        .unwrap();
        assert_eq!(keys, vec![agentwire_streaming::event::Key::Id(chunk); 50]);
    }
    let stats = engine.stop();
    assert_eq!((stats.events_logged, stats.log_errors), (150, 0));
}
