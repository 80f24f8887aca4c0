//! Dead letters against a hostile sender (security issue 15, finding 6): agents flood a
//! destination that never reads, so frames pile up in its deferral, expire and go to the
//! dead-letter sink. A real router (`TestRouter`) and real agents; the sink is a test sink
//! that counts every `accept` call and answers as each test needs (keep, `Busy`, `Full`).
//!
//! - a full queue: expired frames are nacked `DeadLetterRefused` and counted dropped, each
//!   offered to the sink once, and the deferral frees (before: they stayed deferred for ever
//!   and the router offered them again every duty cycle);
//! - a busy queue (a replay holds its lock): frames stay deferred and are offered again with
//!   a bounded backoff, then all kept once it is free (before: one offer per duty cycle);
//! - shutdown: frames the queue kept and frames it refused are counted and logged apart
//!   (before: the log line called every frame given up on "dead-lettered").
//!
//! No timing assertions: counters, and watchdogs against hangs. The one bound that involves
//! time is a ceiling (offers at most once per `DEAD_LETTER_RETRY_MIN`): a slow machine makes
//! fewer offers, never more.

use agentwire_router::sink::{DeadLetterSink, SinkRefusal};
use agentwire_router::status::RouterObserver;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_router::DEAD_LETTER_RETRY_MIN;
use agentwire_shm::client::{decode_nack, Agent, ClientError};
use agentwire_shm::control::NackReason;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(30);
/// Rings of the senders: room for every nack they get.
const SENDER_RING_BYTES: u32 = 256 * 1024;
const PAYLOAD: [u8; 200] = [7; 200];

/// What the test sinks of one router saw and how they answer (shared by every shard's sink).
#[derive(Default)]
struct Seen {
    /// Calls to `accept`.
    offers: AtomicU64,
    /// Frames kept.
    kept: AtomicU64,
    /// Answer `Busy` (a replay holds the queue's lock) while set.
    busy: AtomicBool,
    /// Keep at most this many frames, then answer `Full`.
    keep_max: AtomicU64,
}

struct TestSink(Arc<Seen>);

impl DeadLetterSink for TestSink {
    fn accept(&mut self, _reason: NackReason, _frame: &[u8]) -> Result<u64, SinkRefusal> {
        let seen = &self.0;
        seen.offers.fetch_add(1, Ordering::Relaxed);
        if seen.busy.load(Ordering::Relaxed) {
            return Err(SinkRefusal::Busy);
        }
        if seen.kept.load(Ordering::Relaxed) >= seen.keep_max.load(Ordering::Relaxed) {
            return Err(SinkRefusal::Full);
        }
        Ok(seen.kept.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

fn router(name: &str, deadline: Option<Duration>, seen: &Arc<Seen>) -> TestRouter {
    let socket = std::env::temp_dir()
        .join(format!("aw-dead-letters-{}-{name}", std::process::id()))
        .join("agentwire.sock");
    let seen = seen.clone();
    TestRouter::start_with_dead_letters(
        TestRouterConfig {
            ring_capacity_bytes: 4096,
            defer_capacity_bytes: 4096,
            defer_deadline: deadline,
            idle: IdleStrategy::Spin,
            ..TestRouterConfig::new(socket)
        },
        move |_| Box::new(TestSink(seen.clone())),
    )
    .unwrap()
}

fn connect(router: &TestRouter, name: &str, ring_bytes: Option<u32>) -> Agent {
    let mut builder = Agent::builder(name)
        .socket(router.socket_path())
        .idle(IdleStrategy::Spin)
        .send_timeout(Duration::from_secs(5));
    if let Some(bytes) = ring_bytes {
        builder = builder.ring_capacity(bytes);
    }
    builder.connect().unwrap()
}

fn counter(observer: &RouterObserver, name: &str) -> u64 {
    observer
        .counter(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Waits (watchdog) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Nacks an agent received, by reason code, with their details.
#[derive(Default, Debug)]
struct Nacks {
    dead_lettered: u64,
    refused: Vec<String>,
    other: Vec<(u32, String)>,
}

impl Nacks {
    fn take(&mut self, agent: &mut Agent) {
        loop {
            let body = match agent.try_recv() {
                Ok(Some(msg)) if msg.header().kind() == FrameKind::Nack => {
                    decode_nack(msg.payload()).expect("a nack body")
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(ClientError::Disconnected) => return,
                Err(e) => panic!("{e}"),
            };
            if body.reason == NackReason::DestinationFull as u32
                && body.detail.contains("dead-lettered as record")
            {
                self.dead_lettered += 1;
            } else if body.reason == NackReason::DeadLetterRefused as u32 {
                self.refused.push(body.detail);
            } else {
                self.other.push((body.reason, body.detail));
            }
        }
    }

    fn total(&self) -> u64 {
        self.dead_lettered + self.refused.len() as u64 + self.other.len() as u64
    }
}

/// Takes nacks until the router closed the segment and the ring is empty.
fn take_until_closed(agent: &mut Agent, nacks: &mut Nacks) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let closed = agent.segment().control().state.0.load(Ordering::Acquire)
            == agentwire_shm::segment::state::CLOSED;
        nacks.take(agent);
        if closed {
            nacks.take(agent);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: the router never closed the segment"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_full_queue_drops_expired_frames_nacks_their_senders_and_frees_the_deferral() {
    let seen = Arc::new(Seen::default()); // keep_max 0: the queue is full
    let r = router("full", Some(Duration::from_millis(10)), &seen);
    let observer = r.control().observer();
    let deaf = connect(&r, "deaf", None);
    let mut attackers: Vec<Agent> = (0..4)
        .map(|i| connect(&r, &format!("attacker-{i}"), Some(SENDER_RING_BYTES)))
        .collect();
    const FRAMES_EACH: u64 = 150;
    let mut nacks: Vec<Nacks> = attackers.iter().map(|_| Nacks::default()).collect();
    for _ in 0..FRAMES_EACH {
        for (attacker, nacks) in attackers.iter_mut().zip(&mut nacks) {
            match attacker.send(deaf.id(), &PAYLOAD) {
                Ok(()) => {}
                Err(ClientError::Backpressure(_)) => panic!(
                    "backpressure: frames refused by a full dead-letter queue stay deferred and \
                     nothing frees the deferral (deferred now: {})",
                    counter(&observer, "deferred_now")
                ),
                Err(e) => panic!("{e}"),
            }
            nacks.take(attacker);
        }
    }
    let sent = FRAMES_EACH * attackers.len() as u64;
    wait_until("every frame delivered or given up on", || {
        counter(&observer, "deferred_now") == 0
            && counter(&observer, "frames_delivered") + counter(&observer, "frames_dropped") == sent
    });
    let delivered = counter(&observer, "frames_delivered");
    let dropped = counter(&observer, "frames_dropped");
    wait_until("every nack arrived", || {
        for (attacker, nacks) in attackers.iter_mut().zip(&mut nacks) {
            nacks.take(attacker);
        }
        nacks.iter().map(Nacks::total).sum::<u64>() >= dropped
    });
    for n in &nacks {
        assert!(n.other.is_empty(), "unexpected nacks: {:?}", n.other);
        assert_eq!(n.dead_lettered, 0);
        assert!(!n.refused.is_empty(), "every attacker had frames dropped");
        assert!(
            n.refused
                .iter()
                .all(|d| d.contains("dropped") && d.contains("full")),
            "{:?}",
            n.refused.first()
        );
    }
    let refused: u64 = nacks.iter().map(|n| n.refused.len() as u64).sum();
    assert_eq!(refused, dropped, "every dropped frame was nacked");
    assert_eq!(counter(&observer, "nacks_dead_letter_refused"), dropped);
    assert_eq!(counter(&observer, "frames_dead_lettered"), 0);
    assert!(delivered > 0, "the deaf agent's ring holds some");
    // Each frame was offered to the queue once, and nothing is offered after the flood.
    assert_eq!(seen.offers.load(Ordering::Relaxed), dropped);
    let cycles = counter(&observer, "duty_cycles");
    wait_until("the router ran on", || {
        counter(&observer, "duty_cycles") > cycles + 10_000
    });
    assert_eq!(seen.offers.load(Ordering::Relaxed), dropped);
    drop(deaf);
}

#[test]
fn a_busy_queue_is_retried_with_backoff_and_then_keeps_every_frame() {
    let seen = Arc::new(Seen {
        busy: AtomicBool::new(true),
        keep_max: AtomicU64::new(u64::MAX),
        ..Seen::default()
    });
    let r = router("busy", Some(Duration::from_millis(10)), &seen);
    let observer = r.control().observer();
    let deaf = connect(&r, "deaf", None);
    let mut sender = connect(&r, "sender", Some(SENDER_RING_BYTES));
    const FRAMES: u64 = 100;
    for _ in 0..FRAMES {
        sender.send(deaf.id(), &PAYLOAD).unwrap();
    }
    wait_until("a frame expired and was offered to the busy queue", || {
        seen.offers.load(Ordering::Relaxed) > 0
    });
    // The sender has left the scene; frames wait. Watch the router run many duty cycles.
    let (offers, cycles, start) = (
        seen.offers.load(Ordering::Relaxed),
        counter(&observer, "duty_cycles"),
        Instant::now(),
    );
    wait_until("the router ran 200,000 duty cycles", || {
        counter(&observer, "duty_cycles") > cycles + 200_000
    });
    let (offered, elapsed) = (
        seen.offers.load(Ordering::Relaxed) - offers,
        start.elapsed(),
    );
    // A ceiling: at most one offer per shortest backoff, plus a few.
    let ceiling = (elapsed.as_nanos() / DEAD_LETTER_RETRY_MIN.as_nanos()) as u64 + 16;
    assert!(
        offered <= ceiling,
        "{offered} offers to a busy queue in {elapsed:?} over 200,000 duty cycles (ceiling \
         {ceiling}): the router retries without backoff"
    );
    assert_eq!(counter(&observer, "frames_dropped"), 0, "busy is not full");
    // The replay is done: every frame is kept, none dropped.
    seen.busy.store(false, Ordering::Relaxed);
    wait_until("every frame delivered or dead-lettered", || {
        counter(&observer, "deferred_now") == 0
            && counter(&observer, "frames_delivered") + counter(&observer, "frames_dead_lettered")
                == FRAMES
    });
    let dead_lettered = counter(&observer, "frames_dead_lettered");
    assert_eq!(seen.kept.load(Ordering::Relaxed), dead_lettered);
    let mut nacks = Nacks::default();
    wait_until("every nack arrived", || {
        nacks.take(&mut sender);
        nacks.total() >= dead_lettered
    });
    assert_eq!(nacks.dead_lettered, dead_lettered, "{nacks:?}");
    assert_eq!(counter(&observer, "frames_dropped"), 0);
    drop(deaf);
}

/// Every log line of this test binary (a global subscriber: the router logs from its own
/// threads).
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        log
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn shutdown_counts_and_logs_dead_letters_and_drops_apart() {
    let log = captured_log();
    const KEPT: u64 = 7;
    let seen = Arc::new(Seen {
        keep_max: AtomicU64::new(KEPT),
        ..Seen::default()
    });
    // No deadline: frames wait until the shutdown gives up on them.
    let r = router("shutdown", None, &seen);
    let observer = r.control().observer();
    let deaf = connect(&r, "deaf", None);
    let mut sender = connect(&r, "sender", Some(SENDER_RING_BYTES));
    const FRAMES: u64 = 60;
    for _ in 0..FRAMES {
        sender.send(deaf.id(), &PAYLOAD).unwrap();
    }
    wait_until("the router took what fits", || {
        counter(&observer, "deferred_now") > 0
    });
    r.stop();
    let delivered = counter(&observer, "frames_delivered");
    let dead_lettered = counter(&observer, "frames_dead_lettered");
    let dropped = counter(&observer, "frames_dropped");
    assert_eq!(dead_lettered, KEPT);
    assert_eq!(delivered + dead_lettered + dropped, FRAMES);
    assert!(dropped > 0);
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let summary = format!("dead_lettered={KEPT} dropped={dropped}");
    assert!(
        text.lines().any(|l| l.contains(&summary)),
        "no shutdown summary with `{summary}` in the log:\n{text}"
    );
    let mut nacks = Nacks::default();
    take_until_closed(&mut sender, &mut nacks);
    assert!(nacks.other.is_empty(), "{:?}", nacks.other);
    assert_eq!(nacks.dead_lettered, KEPT);
    assert_eq!(nacks.refused.len() as u64, dropped);
    assert_eq!(counter(&observer, "nacks_dead_letter_refused"), dropped);
    drop(deaf);
}
