//! Mirror lag through a router shard: the time from an agent's send to the twin's snapshot of
//! the shard's stats slot showing it (`frames_in` up by one), with the shard publishing on its
//! own schedule (every `MIRROR_PUBLISH_PASSES` duty cycles, and before it parks). Baseline in
//! the same run: the same send to the receiving agent seeing the frame (the hop the counter
//! change rides on). The routing core spins on cpu 1; the sender, the receiver and the reader
//! are this thread on cpu 0. One message in flight at a time; every frame is received and
//! every count seen, in order, or the bench fails.
//!
//! Run: `cargo bench -p agentwire-benches --bench mirror_router`
//! (`cargo test --benches` runs a short smoke version.)

use agentwire_benches::pingpong::{report_runs, summarize, Run};
use agentwire_benches::{cpus, pin_to_cpu};
use agentwire_router::mirror::{shard_counter_names, SHARD_MIRROR_COUNTERS};
use agentwire_router::{RouterConfig, RouterControl};
use agentwire_shm::client::Agent;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the timed poll waits for.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The receiver gets the frame.
    Delivery,
    /// The shard's slot shows `frames_in` up by one.
    Mirror,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// `messages` timed sends (after `warmup` untimed ones) through a fresh router.
fn run(mode: Mode, idle: IdleStrategy, messages: u64, warmup: u64) -> Run {
    let dir = std::env::temp_dir().join(format!("aw-bench-mirror-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let socket = dir.join("mirror.sock");
    let mut config = RouterConfig::new(socket.clone());
    config.idle = idle;
    let (control, mut core) = RouterControl::start(config).expect("router");
    let layout = StatsLayout::new(1, SHARD_MIRROR_COUNTERS as u32);
    let seg = StatsSegment::create_memfd("mirror-router", layout).expect("segment");
    core.set_stats_slot(seg.writer(0).expect("slot"))
        .expect("slot size");
    let reader = StatsReader::open_fd(seg.try_clone_fd().expect("dup")).expect("open");
    let frames_in = shard_counter_names()
        .iter()
        .position(|n| *n == "frames_in")
        .expect("frames_in is mirrored");
    let stop = AtomicBool::new(false);
    let mut h = histogram();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(1);
            let mut idler = agentwire_shm::idle::Idler::new(idle);
            while !stop.load(Ordering::Relaxed) {
                core.step(&mut idler);
            }
        });
        let connect = |name| {
            Agent::builder(name)
                .socket(&socket)
                .connect()
                .expect("agent")
        };
        let (mut sender, mut receiver) = (connect("mirror-sender"), connect("mirror-receiver"));
        let to = receiver.id();
        let mut slot = vec![0u64; SHARD_MIRROR_COUNTERS];
        let read_frames_in = |slot: &mut Vec<u64>| loop {
            if reader.snapshot(0, slot).is_ok() {
                return slot[frames_in];
            }
        };
        let mut seen = read_frames_in(&mut slot);
        let watchdog = Duration::from_secs(20);
        for k in 0..messages + warmup {
            let start = Instant::now();
            sender.send(to, &k.to_le_bytes()).expect("send");
            let mut got = 0;
            if mode == Mode::Delivery {
                while got == 0 {
                    got = receiver.recv_batch(1, |_, _| {}).expect("recv");
                    assert!(
                        start.elapsed() < watchdog,
                        "watchdog: frame {k} not delivered"
                    );
                }
            } else {
                while read_frames_in(&mut slot) == seen {
                    assert!(
                        start.elapsed() < watchdog,
                        "watchdog: frame {k} never mirrored"
                    );
                }
            }
            let lag_ns = start.elapsed().as_nanos() as u64;
            if k >= warmup {
                h.saturating_record(lag_ns.max(1));
            }
            // Untimed: the other side of the step, so the next send starts clean.
            if mode == Mode::Delivery {
                while read_frames_in(&mut slot) == seen {}
            } else {
                while got == 0 {
                    got = receiver.recv_batch(1, |_, _| {}).expect("recv");
                }
            }
            let now = read_frames_in(&mut slot);
            assert_eq!(now, seen + 1, "frame {k}: frames_in skipped or torn");
            seen = now;
        }
        stop.store(true, Ordering::Relaxed);
        control.shutdown();
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(h.len(), messages, "every message measured once");
    summarize(&h)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, warmup, runs) = if full {
        (50_000, 5_000, 5)
    } else {
        (300, 30, 1)
    };
    let cpu_count = cpus();
    if !pin_to_cpu(0) || cpu_count < 2 {
        println!("note: cannot pin to 2 cpus; the router and the agents share a core");
    }
    println!(
        "mirror_router: ns from an agent's send to (a) the receiver having the frame, (b) the \
         shard's stats slot showing it; router core on cpu 1, agents and reader on cpu 0; {cpu_count} cpus"
    );
    println!("{runs} runs x {messages} sends (+{warmup} warm-up); median over runs; spread is min..max of p50");
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>10}   p50 spread",
        "seen by", "p50", "p99", "p99.9", "max"
    );
    for (name, mode, idle) in [
        (
            "receiver, router spinning (baseline)",
            Mode::Delivery,
            IdleStrategy::Spin,
        ),
        ("mirror, router spinning", Mode::Mirror, IdleStrategy::Spin),
        (
            "receiver, router default idle",
            Mode::Delivery,
            IdleStrategy::default(),
        ),
        (
            "mirror, router default idle",
            Mode::Mirror,
            IdleStrategy::default(),
        ),
    ] {
        let results: Vec<Run> = (0..runs)
            .map(|_| run(mode, idle, messages, warmup))
            .collect();
        report_runs(name, 40, &results);
    }
}
