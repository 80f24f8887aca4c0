//! No allocation on any per-frame path: a counting global allocator counts every allocation
//! made on the router's shard threads (and inside the sender's send calls) while 100,000
//! frames of every kind go through a two-shard router: unicast within and across shards
//! (with acks), publish to subscribers on both shards, anycast, feature routes, and the
//! rejected ones: unknown agent, topic without subscriber, capability and feature without
//! an agent, malformed frames, acks sent by an agent, and frames for a destination that
//! never reads, deferred and dead-lettered past their deadline with a nack to the sender.
//! The shards publish to a stats segment as in the daemon (their own slots and their agents'
//! slots). Everything registers and warms up first (tables, route caches, deferrals, the
//! nack encoder); then the count must stay 0.

use agentwire_router::sink::{DeadLetterSink, SinkRefusal};
use agentwire_router::{RouterConfig, RouterControl};
use agentwire_shm::client::{Agent, ClientError, SendOptions};
use agentwire_shm::control::NackReason;
use agentwire_shm::idle::{IdleStrategy, Idler};
use agentwire_shm::ring::ClaimError;
use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts allocations made by threads that opted in.
struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// How many counted allocations to print a backtrace for (`AW_ALLOC_TRACE=N`; read once
/// at the start of the test, since reading the environment allocates).
static TRACE_LIMIT: AtomicU64 = AtomicU64::new(0);

fn note() {
    if COUNTED.with(Cell::get) {
        let n = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if n < TRACE_LIMIT.load(Ordering::Relaxed) {
            COUNTED.with(|c| c.set(false));
            eprintln!(
                "allocation {n}:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            COUNTED.with(|c| c.set(true));
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// a const-initialised thread-local and an atomic, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A dead-letter sink that keeps nothing and allocates nothing.
struct Discard(Arc<AtomicU64>);

impl DeadLetterSink for Discard {
    fn accept(&mut self, _reason: NackReason, _frame: &[u8]) -> Result<u64, SinkRefusal> {
        Ok(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

const FRAMES: u64 = 100_000;
const WARMUP_FRAMES: u64 = 20_000;
const WATCHDOG: Duration = Duration::from_secs(120);

fn connect(socket: &std::path::Path, name: &str) -> Agent {
    Agent::builder(name)
        .socket(socket)
        .idle(IdleStrategy::Spin)
        .send_timeout(Duration::from_secs(30))
        .connect()
        .unwrap()
}

/// An agent that reads everything it gets until told to stop.
fn reader(mut agent: Agent, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = agent.recv(Some(Duration::from_millis(5)));
        }
    })
}

/// The frame kinds the sender cycles through, one per step.
const KINDS: usize = 12;

/// Sends frame `i` of the mix; counts the allocations of the send call itself.
fn send_one(tx: &mut Agent, i: u64, ids: &Ids, raw: &mut [u8; HEADER_BYTES + 8], counted: bool) {
    let payload = &i.to_le_bytes()[..];
    let ack = SendOptions {
        ack: true,
        ..SendOptions::default()
    };
    COUNTED.with(|c| c.set(counted));
    match (i as usize) % KINDS {
        0 => tx.send(ids.near, payload).unwrap(),
        1 => tx
            .send_with(FrameKind::Send, ids.far, payload, ack)
            .unwrap(),
        2 => tx.publish("both", payload).unwrap(),
        3 => tx.anycast("svc", "^1", payload).unwrap(),
        4 => tx.send_feature_with(7, payload, ack).unwrap(),
        5 => tx.send(9_999, payload).unwrap(),
        6 => tx.publish("nobody", payload).unwrap(),
        7 => tx.anycast("absent", "^1", payload).unwrap(),
        8 => tx.send_feature(99, payload).unwrap(),
        9 => {
            // Malformed: the header claims a payload the frame does not carry.
            FrameHeader::new(FrameKind::Send, 0, ids.near, 64).write_to(&mut raw[..]);
            send_raw(tx, &raw[..]);
        }
        10 => {
            FrameHeader::new(FrameKind::Ack, 0, ids.near, 8).write_to(&mut raw[..]);
            send_raw(tx, &raw[..]);
        }
        _ => tx
            .send(
                if i % 24 == 11 {
                    ids.deaf_near
                } else {
                    ids.deaf_far
                },
                payload,
            )
            .unwrap(),
    }
    COUNTED.with(|c| c.set(false));
}

/// Writes a raw frame, waiting for room (`send_raw` does not wait).
fn send_raw(tx: &mut Agent, frame: &[u8]) {
    loop {
        match tx.send_raw(frame) {
            Ok(()) => return,
            Err(ClientError::Claim(ClaimError::Full { .. })) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

struct Ids {
    near: u32,
    far: u32,
    deaf_near: u32,
    deaf_far: u32,
}

/// Frames the router took in, over all shards.
fn frames_in(control: &RouterControl) -> u64 {
    let observer = control.observer();
    let counters = observer.counters();
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map_or(0, |c| c.1);
    get("frames_in")
}

fn deferred_now(control: &RouterControl) -> u64 {
    let counters = control.observer().counters();
    counters
        .iter()
        .find(|(n, _)| n == "deferred_now")
        .map_or(0, |c| c.1)
}

/// Sends `count` frames of the mix starting at `from`, draining the sender's acks and
/// nacks as it goes, then waits until the router took them all in and nothing is deferred.
fn run_mix(
    tx: &mut Agent,
    control: &RouterControl,
    from: u64,
    count: u64,
    ids: &Ids,
    counted: bool,
) {
    let mut raw = [0u8; HEADER_BYTES + 8];
    let target = frames_in(control) + count;
    for i in from..from + count {
        send_one(tx, i, ids, &mut raw, counted);
        while tx.try_recv().unwrap().is_some() {}
    }
    let deadline = Instant::now() + WATCHDOG;
    while frames_in(control) < target || deferred_now(control) > 0 {
        while tx.try_recv().unwrap().is_some() {}
        assert!(
            Instant::now() < deadline,
            "router stalled: {} of {target} frames in",
            frames_in(control)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn routing_every_kind_of_frame_allocates_nothing() {
    let trace = std::env::var("AW_ALLOC_TRACE")
        .ok()
        .and_then(|v| v.parse().ok());
    TRACE_LIMIT.store(trace.unwrap_or(0), Ordering::Relaxed);
    let socket = std::env::temp_dir()
        .join(format!("aw-no-alloc-{}", std::process::id()))
        .join("agentwire.sock");
    let (control, cores) = RouterControl::start_sharded(RouterConfig {
        shards: 2,
        ring_capacity_bytes: 64 * 1024,
        defer_capacity_bytes: 16 * 1024,
        defer_deadline: Some(Duration::from_millis(1)),
        idle: IdleStrategy::Spin,
        // Off: the agent that never reads never heartbeats either, and on a loaded machine
        // this test outlasts the 5 s default; its going stale changes the tables, and a
        // rebuild allocates (by design, off the per-frame path). 28 allocations from such
        // rebuilds failed this test in runs of 6.6-8.3 s.
        liveness_timeout: None,
        ..RouterConfig::new(socket.clone())
    })
    .unwrap();
    let measuring = Arc::new(AtomicBool::new(false));
    // Shard threads that have seen `measuring` set (they count from then on).
    let armed = Arc::new(AtomicUsize::new(0));
    let dead_letters = Arc::new(AtomicU64::new(0));
    // The mirror is on, as in the daemon: each shard publishes its slot and lends its few
    // agent slots (fewer than its agents, so some are served unmirrored) on its own schedule.
    const AGENT_SLOTS: usize = 3;
    let words = agentwire_router::mirror::SHARD_MIRROR_COUNTERS as u32;
    let stats = StatsSegment::create_memfd(
        "no-alloc",
        StatsLayout::new((2 + 2 * AGENT_SLOTS) as u32, words),
    )
    .unwrap();
    let shards: Vec<_> = cores
        .into_iter()
        .enumerate()
        .map(|(shard, mut core)| {
            core.set_stats_slot(stats.writer(shard).unwrap()).unwrap();
            let first = 2 + shard * AGENT_SLOTS;
            let slots = (first..first + AGENT_SLOTS).map(|s| stats.writer(s).unwrap());
            core.set_agent_stats_slots(slots.collect()).unwrap();
            core.set_dead_letters(Box::new(Discard(dead_letters.clone())));
            let (measuring, armed) = (measuring.clone(), armed.clone());
            std::thread::spawn(move || {
                let mut idler = Idler::new(IdleStrategy::Spin);
                let mut counted = false;
                while !core.should_stop() {
                    if measuring.load(Ordering::Acquire) != counted {
                        counted = !counted;
                        COUNTED.with(|c| c.set(counted));
                        armed.fetch_add(usize::from(counted), Ordering::Release);
                    }
                    core.step(&mut idler);
                }
                COUNTED.with(|c| c.set(false));
                core.finish();
            })
        })
        .collect();
    // Shards take agents alternately (least loaded): even ids' agents on one, odd on the
    // other.
    let mut tx = connect(&socket, "tx");
    let stop = Arc::new(AtomicBool::new(false));
    let far = connect(&socket, "far");
    let near = connect(&socket, "near");
    let deaf_far = connect(&socket, "deaf-far");
    let deaf_near = connect(&socket, "deaf-near");
    let ids = Ids {
        near: near.id(),
        far: far.id(),
        deaf_near: deaf_near.id(),
        deaf_far: deaf_far.id(),
    };
    let mut readers = vec![reader(near, stop.clone()), reader(far, stop.clone())];
    for name in ["sub-a", "sub-b"] {
        let agent = Agent::builder(name)
            .socket(&socket)
            .topic("both")
            .idle(IdleStrategy::Spin)
            .connect()
            .unwrap();
        readers.push(reader(agent, stop.clone()));
    }
    for name in ["svc-a", "svc-b"] {
        let agent = Agent::builder(name)
            .socket(&socket)
            .capability("svc", "1.2.0")
            .feature(7)
            .idle(IdleStrategy::Spin)
            .connect()
            .unwrap();
        readers.push(reader(agent, stop.clone()));
    }

    run_mix(&mut tx, &control, 0, WARMUP_FRAMES, &ids, false);
    assert!(
        dead_letters.load(Ordering::Relaxed) > 0,
        "the warm-up dead-lettered frames"
    );
    let before = dead_letters.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Release);
    // Every shard thread counts before the first measured frame.
    let deadline = Instant::now() + WATCHDOG;
    while armed.load(Ordering::Acquire) < 2 {
        assert!(
            Instant::now() < deadline,
            "shard threads never saw the flag"
        );
        std::thread::yield_now();
    }
    run_mix(&mut tx, &control, WARMUP_FRAMES, FRAMES, &ids, true);
    measuring.store(false, Ordering::Release);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);

    let counters = control.observer().counters();
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map_or(0, |c| c.1);
    assert!(get("frames_forwarded") > 0, "frames crossed shards");
    assert!(get("frames_malformed") > 0 && get("nacks_not_permitted") > 0);
    assert!(get("nacks_no_such_agent") > 0 && get("nacks_no_subscriber") > 0);
    assert!(get("acks_sent") > 0 && get("frames_deferred") > 0);
    assert!(
        dead_letters.load(Ordering::Relaxed) > before,
        "frames expired while measured"
    );
    assert_eq!(allocations, 0, "allocations on per-frame paths");
    // The mirror was written while measured: both shards' slots and lent agent slots.
    let reader = StatsReader::open_fd(stats.try_clone_fd().unwrap()).unwrap();
    let mut words = vec![0u64; agentwire_router::mirror::SHARD_MIRROR_COUNTERS];
    let publishes = agentwire_router::mirror::shard_counter_names()
        .iter()
        .position(|n| *n == "mirror_publishes")
        .unwrap();
    for shard in 0..2 {
        reader.snapshot(shard, &mut words).unwrap();
        assert!(words[publishes] > 1, "shard {shard} published");
    }
    let agent_publishes = agentwire_router::agent_mirror::AGENT_COUNTERS
        .iter()
        .position(|n| *n == "publishes")
        .unwrap();
    let lent = (2..2 + 2 * AGENT_SLOTS)
        .filter(|&slot| {
            reader.snapshot(slot, &mut words).unwrap();
            words[0] != 0 && words[agent_publishes] > 1
        })
        .count();
    assert_eq!(lent, 2 * AGENT_SLOTS, "every agent slot lent and published");

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    drop(deaf_near);
    drop(deaf_far);
    drop(tx);
    control.shutdown();
    for s in shards {
        s.join().unwrap();
    }
}
