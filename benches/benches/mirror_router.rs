//! Mirror lag through a router shard: the time from an agent's send to the twin's snapshot of
//! the shard's stats slot showing it (`frames_in` up by one), with the shard publishing on its
//! own schedule (every `MIRROR_PUBLISH_PASSES` duty cycles, and before it parks). Baseline in
//! the same run: the same send to the receiving agent seeing the frame (the hop the counter
//! change rides on). The routing core spins on cpu 1; the sender, the receiver and the reader
//! are this thread on cpu 0. One message in flight at a time; every frame is received and
//! every count seen, in order, or the bench fails. The agent-slot rows watch the sender's own
//! slot ([`agentwire_router::agent_mirror`]) with 62 more (idle) agents registered, next to
//! the shard's slot with the same 64 agents.
//!
//! Run: `cargo bench -p agentwire-benches --bench mirror_router`
//! (`cargo test --benches` runs a short smoke version.)

use agentwire_benches::pingpong::{report_runs, summarize, Run};
use agentwire_benches::{cpus, pin_to_cpu};
use agentwire_router::agent_mirror::AGENT_COUNTERS;
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
    /// The sender's own agent slot shows `frames_in` up by one.
    AgentMirror,
}

/// Agents registered besides the sender and the receiver in the rows that say 64 agents
/// (the shard polls them all every pass, which lengthens its passes).
const IDLE_AGENTS: usize = 62;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// `messages` timed sends (after `warmup` untimed ones) through a fresh router.
fn run(mode: Mode, idle: IdleStrategy, idle_agents: usize, messages: u64, warmup: u64) -> Run {
    let dir = std::env::temp_dir().join(format!("aw-bench-mirror-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let socket = dir.join("mirror.sock");
    let mut config = RouterConfig::new(socket.clone());
    config.idle = idle;
    let (control, mut core) = RouterControl::start(config).expect("router");
    let agent_slots = IDLE_AGENTS + 2;
    let layout = StatsLayout::new(1 + agent_slots as u32, SHARD_MIRROR_COUNTERS as u32);
    let seg = StatsSegment::create_memfd("mirror-router", layout).expect("segment");
    core.set_stats_slot(seg.writer(0).expect("slot"))
        .expect("slot size");
    let writers = (1..=agent_slots).map(|s| seg.writer(s).expect("agent slot"));
    core.set_agent_stats_slots(writers.collect())
        .expect("agent slot size");
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
        let idle_agents: Vec<Agent> = (0..idle_agents).map(|_| connect("mirror-idle")).collect();
        let to = receiver.id();
        let mut slot = vec![0u64; SHARD_MIRROR_COUNTERS];
        let snapshot = |index: usize, slot: &mut Vec<u64>| {
            while reader.snapshot(index, slot).is_err() {}
        };
        // The word watched: the shard's `frames_in`, or the sender's own slot's.
        let (watch_slot, watch_word) = if mode == Mode::AgentMirror {
            let id_word = AGENT_COUNTERS
                .iter()
                .position(|n| *n == "agent_id")
                .unwrap();
            let word = AGENT_COUNTERS
                .iter()
                .position(|n| *n == "frames_in")
                .unwrap();
            let start = Instant::now();
            let index = loop {
                let found = (1..=agent_slots).find(|&i| {
                    snapshot(i, &mut slot);
                    slot[id_word] == u64::from(sender.id())
                });
                if let Some(i) = found {
                    break i;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "watchdog: no slot"
                );
            };
            (index, word)
        } else {
            (0, frames_in)
        };
        let read_frames_in = |slot: &mut Vec<u64>| {
            snapshot(watch_slot, slot);
            slot[watch_word]
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
        drop(idle_agents);
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
    let (spin, default) = (IdleStrategy::Spin, IdleStrategy::default());
    for (name, mode, idle, extra) in [
        ("receiver, spinning (baseline)", Mode::Delivery, spin, 0),
        ("shard slot, spinning", Mode::Mirror, spin, 0),
        (
            "shard slot, spinning, 64 agents",
            Mode::Mirror,
            spin,
            IDLE_AGENTS,
        ),
        (
            "agent slot, spinning, 64 agents",
            Mode::AgentMirror,
            spin,
            IDLE_AGENTS,
        ),
        (
            "receiver, default idle (baseline)",
            Mode::Delivery,
            default,
            0,
        ),
        ("shard slot, default idle", Mode::Mirror, default, 0),
        (
            "shard slot, default idle, 64 agents",
            Mode::Mirror,
            default,
            IDLE_AGENTS,
        ),
        (
            "agent slot, default idle, 64 agents",
            Mode::AgentMirror,
            default,
            IDLE_AGENTS,
        ),
    ] {
        let results: Vec<Run> = (0..runs)
            .map(|_| run(mode, idle, extra, messages, warmup))
            .collect();
        report_runs(name, 40, &results);
    }
}
