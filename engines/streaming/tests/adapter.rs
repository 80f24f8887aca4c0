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
use agentwire_streaming::adapter::durable::StateConfig;
use agentwire_streaming::adapter::shard::ShardRunner;
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

/// One pass over the engine and every shard runner it made; the work done.
fn drive(engine: &mut StreamEngine, runners: &mut Vec<ShardRunner>) -> usize {
    let mut work = engine.do_work();
    runners.extend(engine.take_runners());
    for r in runners.iter_mut() {
        work += r.do_work();
    }
    runners.retain(|r| !r.is_stopped());
    work
}

/// Drives until nothing moves (every output counted has been sent), then the stats: the
/// engine's acks go out before its shards process the events, so a stop right after an
/// ack would leave outputs unsent that the stats count. Without a checkpoint, dropping the
/// engine then is still a crash to its state directory.
fn quiesce(engine: &mut StreamEngine, runners: &mut Vec<ShardRunner>) -> EngineStats {
    while drive(engine, runners) > 0 {}
    engine.stats()
}

/// The engine with `config` and its shards, driven on a thread until stopped.
fn start_with(router: &TestRouter, config: StreamEngineConfig) -> (Running, u32) {
    let mut engine = StreamEngine::register(router.control(), config).unwrap();
    let id = engine.agent_id();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut runners = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            if drive(&mut engine, &mut runners) == 0 {
                engine.park(Duration::from_millis(1));
            }
        }
        quiesce(&mut engine, &mut runners)
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
fn an_alert_no_one_subscribed_to_starts_no_storm_of_answers() {
    // The router nacks a publish with no subscriber back to the engine. The engine once
    // took that nack for a malformed batch and acked it; the router nacked the ack (the
    // daemon is no agent), and so on, a frame per pass for as long as it ran.
    let sock = std::env::temp_dir().join(format!(
        "aw-stream-adapter-storm-{}.sock",
        std::process::id()
    ));
    let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    let (engine, engine_id) = start(&router);
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    // Calm values, then a spike far past them in a later window: an alert, which no one
    // receives (nobody subscribed to the alerts topic).
    let calm: Vec<WireEvent> = (0..200)
        .map(|i| event(1, i * SECOND_NS / 100, 1.0 + (i % 3) as f64 * 0.01))
        .collect();
    let spike = vec![event(1, 5 * SECOND_NS, 1e9), event(1, 9 * SECOND_NS, 1.0)];
    for events in [calm, spike] {
        let ack = sender
            .stream_batch_acked(engine_id, &EventBatch { events }, Duration::from_secs(10))
            .unwrap();
        assert_eq!(ack.malformed, 0);
    }
    // The router nacks the alert (a 10 s watchdog, not a timing assertion); one more
    // request, routed by the same router thread after that nack, reaches the engine's ring
    // behind it, so once it is acked the engine has read the nack.
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.stats().nacks_no_subscriber.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "watchdog: the alert was never nacked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    sender
        .stream_batch_acked(engine_id, &EventBatch::default(), Duration::from_secs(10))
        .unwrap();
    let stats = engine.stop();
    assert!(stats.alerts >= 1, "{stats:?}");
    // Every answer that came back was counted and left unanswered: only the three requests
    // were acked, and no event was refused.
    assert_eq!((stats.acks, stats.events_malformed), (3, 0), "{stats:?}");
    assert!(
        stats.answers_in >= 1,
        "the router's nack of the alert: {stats:?}"
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
        state: Some(StateConfig::new(dir.path())),
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

/// An engine driven on a thread that also checkpoints, or changes its shard count, when
/// asked (so the test picks the place in the input) and, when stopped, drops the engine
/// without the checkpoint a clean shutdown writes: to the state directory, that is a crash.
struct Checkpointed {
    running: Running,
    asked: Arc<std::sync::atomic::AtomicU64>,
    done: Arc<std::sync::atomic::AtomicU64>,
    /// A shard count to move to (0: none), taken with the next request.
    shards: Arc<std::sync::atomic::AtomicU64>,
}

impl Checkpointed {
    fn start(router: &TestRouter, config: StreamEngineConfig) -> (Self, u32) {
        let mut engine = StreamEngine::register(router.control(), config).unwrap();
        let id = engine.agent_id();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let shards = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, ask, did, to) = (stop.clone(), asked.clone(), done.clone(), shards.clone());
        let thread = std::thread::spawn(move || {
            let mut runners = Vec::new();
            let mut under_way = false;
            while !flag.load(Ordering::Relaxed) {
                if !under_way && ask.load(Ordering::Acquire) > did.load(Ordering::Relaxed) {
                    match to.swap(0, Ordering::AcqRel) {
                        0 => assert!(engine.request_checkpoint(), "nothing to checkpoint"),
                        n => engine.set_shards(n as usize),
                    }
                    under_way = true;
                }
                let work = drive(&mut engine, &mut runners);
                if under_way && !engine.checkpoint_pending() {
                    under_way = false;
                    did.fetch_add(1, Ordering::Release);
                }
                if work == 0 {
                    engine.park(Duration::from_millis(1));
                }
            }
            quiesce(&mut engine, &mut runners)
        });
        let running = Running {
            stop,
            thread: Some(thread),
        };
        (
            Self {
                running,
                asked,
                done,
                shards,
            },
            id,
        )
    }

    /// Moves the engine to `shards` shards (a barrier, a checkpoint with a state
    /// directory, the keys' state moved) and waits (10 s at most) until it is done.
    fn rescale(&self, shards: u64) {
        self.shards.store(shards, Ordering::Release);
        self.checkpoint();
    }

    /// Asks for a checkpoint and waits (10 s at most) until it is committed.
    fn checkpoint(&self) {
        let want = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.done.load(Ordering::Acquire) < want {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            std::thread::yield_now();
        }
    }
}

/// Sends `batches` (50 events each, three keys, a spike now and then) acked, in order.
fn send_acked(sender: &mut Agent, engine_id: u32, batches: std::ops::Range<i64>) {
    for b in batches {
        let events = (0..50)
            .map(|i| {
                let n = b * 50 + i;
                let spike = if n % 211 == 0 { 40.0 } else { 0.0 };
                event((n % 3) as u64, n * SECOND_NS / 50, (n % 9) as f64 + spike)
            })
            .collect();
        let ack = sender
            .stream_batch_acked(engine_id, &EventBatch { events }, Duration::from_secs(30))
            .unwrap();
        assert_eq!((ack.accepted, ack.malformed), (50, 0));
    }
}

/// `count` outputs from `agent` (alerts and window results), each as its JSON.
fn outputs(agent: &mut Agent, count: u64) -> Vec<serde_json::Value> {
    (0..count)
        .map(|_| serde_json::from_slice(&next_payload(agent, FrameKind::Publish)).unwrap())
        .collect()
}

/// An output without its id, as text, for comparing runs whose epochs differ.
fn without_id(output: &serde_json::Value) -> String {
    let mut o = output.clone();
    let map = o.as_object_mut().unwrap();
    map.remove("shard").unwrap();
    map.remove("epoch").unwrap();
    map.remove("seq").unwrap();
    o.to_string()
}

fn subscriber(router: &TestRouter, name: &str) -> Agent {
    let mut agent = Agent::builder(name)
        .socket(router.socket_path())
        .connect()
        .unwrap();
    agent.subscribe("stream.alerts").unwrap();
    agent.subscribe("stream.windows").unwrap();
    agent
}

/// The engine's config for the crash tests: cad-ose, alerts at 0.5, state in `dir`,
/// checkpoints only when asked.
fn crash_config(dir: &std::path::Path, shards: usize) -> StreamEngineConfig {
    StreamEngineConfig {
        window: WindowSpec::new(WindowKind::Tumbling { size_ns: SECOND_NS }),
        detector: "cad-ose".into(),
        alert_threshold: 0.5,
        future_tolerance_ns: None,
        shards,
        state: Some(StateConfig {
            checkpoint_interval_ms: 0,
            ..StateConfig::new(dir)
        }),
        ..Default::default()
    }
}

/// 30 batches once without failure on one shard; then on `before` shards with a rescale to
/// `mid` after batch 5 (if given), a checkpoint after batch 10 and a crash after batch 20;
/// then an engine on `after` shards restores, replays batches 10..20 and takes 20..30.
/// De-duplicated by (shard, epoch, seq), the outputs are the clean run's, and a repeat is
/// identical to the first. Returns the state directory.
fn crash_and_compare(
    tag: &str,
    before: usize,
    mid: Option<u64>,
    after: usize,
) -> tempfile::TempDir {
    let sock = |run: &str| {
        std::env::temp_dir().join(format!(
            "aw-stream-ck-{tag}-{run}-{}.sock",
            std::process::id()
        ))
    };
    let clean_dir = tempfile::tempdir().unwrap();
    let router = TestRouter::start(TestRouterConfig::new(sock("clean"))).unwrap();
    let mut watcher = subscriber(&router, "watcher");
    let (engine, id) = Checkpointed::start(&router, crash_config(clean_dir.path(), 1));
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    send_acked(&mut sender, id, 0..30);
    let stats = engine.running.stop();
    let clean = outputs(&mut watcher, stats.alerts + stats.results);
    assert!(stats.alerts > 0 && stats.results > 0, "{stats:?}");
    drop((sender, watcher, router));

    let dir = tempfile::tempdir().unwrap();
    let router = TestRouter::start(TestRouterConfig::new(sock("crash"))).unwrap();
    let mut watcher = subscriber(&router, "watcher");
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let (engine, id) = Checkpointed::start(&router, crash_config(dir.path(), before));
    send_acked(&mut sender, id, 0..5);
    if let Some(shards) = mid {
        engine.rescale(shards);
    }
    send_acked(&mut sender, id, 5..10);
    engine.checkpoint();
    send_acked(&mut sender, id, 10..20);
    let crashed = engine.running.stop();
    let mut seen = outputs(&mut watcher, crashed.alerts + crashed.results);
    let expected_shards = mid.unwrap_or(before as u64);
    assert_eq!(
        (crashed.checkpoints, crashed.shards, crashed.rescales),
        (
            1 + u64::from(mid.is_some()),
            expected_shards,
            u64::from(mid.is_some())
        )
    );

    let (engine, id) = Checkpointed::start(&router, crash_config(dir.path(), after));
    send_acked(&mut sender, id, 20..30);
    let resumed = engine.running.stop();
    assert_eq!(
        (
            resumed.restored_epoch,
            resumed.events_replayed,
            resumed.events_accepted
        ),
        (crashed.checkpoints, 500, 500)
    );
    assert_eq!(resumed.shards, after as u64);
    seen.extend(outputs(&mut watcher, resumed.alerts + resumed.results));

    let mut by_id = std::collections::BTreeMap::new();
    let mut repeats = 0;
    for o in &seen {
        let id = (
            o["shard"].as_u64().unwrap(),
            o["epoch"].as_u64().unwrap(),
            o["seq"].as_u64().unwrap(),
        );
        if let Some(first) = by_id.insert(id, o.clone()) {
            assert_eq!(&first, o, "a replayed output differs from the first");
            repeats += 1;
        }
    }
    assert!(repeats > 0, "the replay repeated no output");
    let mut got: Vec<String> = by_id.values().map(without_id).collect();
    let mut want: Vec<String> = clean.iter().map(without_id).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the outputs differ from the clean run's");
    dir
}

#[test]
fn a_crashed_engine_restores_its_checkpoint_and_replays_the_log_to_the_same_outputs() {
    let dir = crash_and_compare("one", 1, None, 1);
    // A restart with another detector is refused, naming both.
    let router = TestRouter::start(TestRouterConfig::new(
        std::env::temp_dir().join(format!("aw-stream-ck-other-{}.sock", std::process::id())),
    ))
    .unwrap();
    let other = StreamEngineConfig {
        detector: "windowed-gaussian".into(),
        ..crash_config(dir.path(), 1)
    };
    let e = StreamEngine::register(router.control(), other)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"cad-ose\"") && e.contains("\"windowed-gaussian\""),
        "{e}"
    );
}

#[test]
fn keys_and_their_state_move_when_the_shard_count_changes_and_nothing_is_lost() {
    // Two shards, three after batch 5 (a barrier moves every key's windows and detector),
    // a crash after batch 20, and a restart on one shard: it restores the three shards,
    // replays on them (so the replayed outputs keep their ids), then moves to one.
    crash_and_compare("rescale", 2, Some(3), 1);
}

/// Every output (window results and late events, ids left out) of one run over `batches`.
fn run_outputs(tag: &str, shards: usize, batches: &[Vec<WireEvent>]) -> Vec<String> {
    let sock = std::env::temp_dir().join(format!("aw-stream-sh-{tag}-{}.sock", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    let mut watcher = subscriber(&router, "watcher");
    let spec = WindowSpec {
        out_of_orderness_ns: SECOND_NS / 2,
        allowed_lateness_ns: SECOND_NS / 2,
        late_side_output: true,
        ..WindowSpec::new(WindowKind::Tumbling { size_ns: SECOND_NS })
    };
    let config = StreamEngineConfig {
        window: spec,
        detector: "null".into(),
        future_tolerance_ns: None,
        shards,
        ..Default::default()
    };
    let (engine, id) = start_with(&router, config);
    let mut sender = Agent::builder("sensor")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    for events in batches {
        let ack = sender
            .stream_batch_acked(
                id,
                &EventBatch {
                    events: events.clone(),
                },
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(ack.malformed, 0);
    }
    let stats = engine.stop();
    assert_eq!(stats.shards, shards as u64);
    let mut all: Vec<String> = outputs(&mut watcher, stats.results)
        .iter()
        .map(without_id)
        .collect();
    all.sort();
    all
}

#[test]
fn sharded_windows_fire_late_and_drop_exactly_as_one_operator() {
    // Eight keys, times running back by up to 1.5 s: some events are in order, some late
    // within the allowed lateness (the window fires again), some later still (side output).
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let batches: Vec<Vec<WireEvent>> = (0..40)
        .map(|b| {
            (0..25)
                .map(|i| {
                    let n = b * 25 + i;
                    let back = (next() % 1_500) as i64 * 1_000_000;
                    event(
                        next() % 8,
                        (n * SECOND_NS / 20 - back).max(0),
                        (n % 11) as f64,
                    )
                })
                .collect()
        })
        .collect();
    let one = run_outputs("one", 1, &batches);
    assert!(
        one.iter().any(|o| o.contains("late_event")),
        "no late event in the input"
    );
    assert_eq!(run_outputs("three", 3, &batches), one);
}
