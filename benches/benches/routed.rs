//! Routed throughput and request/response latency through the daemon's router (issue 3's
//! benchmark until `agentwire load` exists): the daemon runs in this process with its router
//! pinned to cpu 1 and busy-polling; one load-generator thread pinned to cpu 0 drives both
//! ends of the flow (a sender agent and a receiver agent), as a 2-core machine requires. The
//! bare 64-byte-slot ring, cross-thread, is measured in the same run as the physical-limit
//! proxy. 64-byte payloads; every frame's sequence number is checked.
//!
//! Run: `cargo bench -p agentwire-benches --bench routed` (`cargo test --benches` runs a
//! short smoke version).

use agentwire_benches::routed::{
    connect, receive_in_order, routed_round_trips, routed_throughput, routed_throughput_split,
    start_daemon, BATCH_FRAMES, PAYLOAD_BYTES, WINDOW_FRAMES,
};
use agentwire_benches::{pin_to_cpu, RawRing};
use agentwire_shm::idle::IdleStrategy;
use std::sync::atomic::Ordering;
use std::time::Instant;

fn raw_ring_throughput(messages: u64) -> f64 {
    let ring = RawRing::new(1 << 14);
    let consumer = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            pin_to_cpu(1);
            let mut rx = ring.consumer();
            let mut expected = 0u64;
            while expected < messages {
                rx.pop_batch(32, |slot| {
                    assert_eq!(
                        u64::from_le_bytes(slot[..8].try_into().expect("8")),
                        expected
                    );
                    expected += 1;
                });
            }
        });
        let start = Instant::now();
        let mut tx = ring.producer();
        let mut seq = 0u64;
        while seq < messages {
            let n = 32.min(messages - seq);
            let base = seq;
            if tx.push_batch(n, |slot, i| {
                slot[..8].copy_from_slice(&(base + i).to_le_bytes())
            }) {
                seq += n;
            }
        }
        handle.join().expect("consumer");
        start.elapsed()
    });
    messages as f64 / consumer.as_secs_f64()
}

/// Router capacity without the load generator in the loop: with the routing core held, the
/// generator fills the sender's tx ring with `frames` frames; then the core (pinned to cpu
/// 1, driven here by hand) routes them all into the receiver's rx ring, and only that drain
/// is timed (frames / drain time). The receiver then checks every sequence number.
fn router_drain(socket: &std::path::Path, frames: u64, runs: usize) -> Vec<f64> {
    use agentwire_router::{RouterConfig, RouterControl};
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    const RING_BYTES: usize = 1 << 20;
    let mut config = RouterConfig::new(socket.to_path_buf());
    config.ring_capacity_bytes = RING_BYTES;
    config.idle = IdleStrategy::Spin;
    // `-- drain --batch N`: the router's frames per lane read (router_batch_frames).
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args
        .iter()
        .position(|a| a == "--batch")
        .and_then(|i| args.get(i + 1)?.parse().ok())
    {
        config.batch_frames = n;
    }
    println!("router batch: {} frames per read", config.batch_frames);
    let (control, mut core) = RouterControl::start(config).expect("router");
    // `-- drain --mirror`: the core publishes to a stats slot and its agents' slots as the
    // daemon's shards do (the mirror's cost on the hot path, against a run without).
    let _segment = args.iter().any(|a| a == "--mirror").then(|| {
        use agentwire_router::mirror::SHARD_MIRROR_COUNTERS;
        use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
        // The shard's slot and a block of agent slots (one per agent here), as in the daemon.
        const AGENT_SLOTS: usize = 8;
        let layout = StatsLayout::new(1 + AGENT_SLOTS as u32, SHARD_MIRROR_COUNTERS as u32);
        let segment = StatsSegment::create_memfd("drain", layout).expect("stats segment");
        core.set_stats_slot(segment.writer(0).expect("slot"))
            .expect("slot size");
        let agents = (1..=AGENT_SLOTS).map(|s| segment.writer(s).expect("agent slot"));
        core.set_agent_stats_slots(agents.collect())
            .expect("agent slot size");
        println!(
            "router core publishes to a stats slot and its agents' slots (the daemon's mirror)"
        );
        segment
    });
    // 0: route freely (registrations); 1: hold; 2 + n: drain run n; usize::MAX: stop.
    let phase = AtomicUsize::new(0);
    let held = AtomicUsize::new(0);
    let drain_ns = AtomicU64::new(0);
    let stats = control.stats();
    let delivered = || stats.frames_delivered.load(Ordering::Acquire);
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(1);
            loop {
                match phase.load(Ordering::Acquire) {
                    usize::MAX => break,
                    0 => {
                        core.do_work();
                    }
                    1 => held.store(1, Ordering::Release),
                    _ => {
                        let target = delivered() + frames;
                        let start = Instant::now();
                        while delivered() < target {
                            core.do_work();
                        }
                        held.store(0, Ordering::Release);
                        phase.store(1, Ordering::Release);
                        let ns = start.elapsed().as_nanos() as u64;
                        drain_ns.store(ns.max(1), Ordering::Release);
                    }
                }
            }
        });
        let (mut sender, mut receiver) = (
            connect(socket, "drain-sender"),
            connect(socket, "drain-receiver"),
        );
        let to = receiver.id();
        let mut rates = Vec::new();
        for _ in 0..runs {
            phase.store(1, Ordering::Release);
            while held.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            let mut payload = [0u8; PAYLOAD_BYTES];
            for seq in 0..frames {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                sender.send(to, &payload).expect("send");
            }
            drain_ns.store(0, Ordering::Release);
            phase.store(2, Ordering::Release);
            while drain_ns.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            let mut received = 0u64;
            while received < frames {
                receive_in_order(&mut receiver, &mut received);
            }
            rates.push(frames as f64 / (drain_ns.load(Ordering::Acquire) as f64 / 1e9));
        }
        phase.store(usize::MAX, Ordering::Release);
        rates
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Read before any pinning narrows this thread's mask.
    let allowed = agentwire_runtime::planning::allowed_cpus();
    let (messages, round_trips, runs) = if full {
        (10_000_000, 200_000, 5)
    } else {
        (20_000, 1_000, 1)
    };
    let drain_socket = std::env::temp_dir()
        .join(format!("aw-bench-drain-{}", std::process::id()))
        .join("drain.sock");
    // `cargo bench --bench routed -- drain [--batch N] [--mirror]`: only the router-alone
    // drain (for profiling the routing core with perf), optionally with N frames per lane
    // read, optionally publishing to a stats slot.
    if std::env::args().any(|a| a == "drain") {
        pin_to_cpu(0);
        let mut drain = router_drain(&drain_socket, 4096, 20_000);
        print_drain(&mut drain, 4096);
        return;
    }
    let (daemon, socket) = start_daemon("routed", 1);
    pin_to_cpu(0);
    let (mut sender, mut receiver) = (
        connect(&socket, "bench-sender"),
        connect(&socket, "bench-receiver"),
    );
    println!("routed: 64-byte payloads, daemon router pinned to cpu 1 (spin), load generator on cpu 0 driving both ends");
    println!("{runs} runs; throughput {messages} messages per run (window {WINDOW_FRAMES}, batch {BATCH_FRAMES}); {round_trips} round trips per run");
    let mut routed = Vec::new();
    let mut raw = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut p999 = Vec::new();
    let mut idle = Vec::new();
    let mut frames_per_cycle = Vec::new();
    // `-- throughput`: only the end-to-end throughput runs (for profiling the load thread).
    if std::env::args().any(|a| a == "throughput") {
        for _ in 0..runs {
            let rate = routed_throughput(&mut sender, &mut receiver, messages);
            println!("routed through one router core: {:.2} M/s", rate / 1e6);
        }
        return;
    }
    // `-- rtt`: only round trips (for profiling the request/response path).
    if std::env::args().any(|a| a == "rtt") {
        let h = routed_round_trips(&mut sender, &mut receiver, round_trips * 10);
        println!(
            "round trip p50 {} ns, p99 {} ns, p99.9 {} ns",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
        return;
    }
    for _ in 0..runs {
        raw.push(raw_ring_throughput(messages));
        let stats = daemon.stats();
        let cycles = |s: &agentwire_router::RouterStats| {
            (
                s.duty_cycles.load(Ordering::Relaxed),
                s.duty_cycles_idle.load(Ordering::Relaxed),
            )
        };
        let (c0, i0) = cycles(stats);
        routed.push(routed_throughput(&mut sender, &mut receiver, messages));
        let (c1, i1) = cycles(stats);
        idle.push((i1 - i0) as f64 / (c1 - c0).max(1) as f64);
        frames_per_cycle.push(messages as f64 / (c1 - c0 - (i1 - i0)).max(1) as f64);
        let h = routed_round_trips(&mut sender, &mut receiver, round_trips);
        p50.push(h.value_at_quantile(0.5));
        p99.push(h.value_at_quantile(0.99));
        p999.push(h.value_at_quantile(0.999));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medu = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (routed_med, raw_med) = (med(&mut routed), med(&mut raw));
    println!("{:<44} {:>12}   spread", "measure", "median");
    println!(
        "{:<44} {:>10.2} M/s   {:.2}..{:.2}",
        "bare 64 B-slot ring, cross-thread (baseline)",
        raw_med / 1e6,
        raw[0] / 1e6,
        raw[raw.len() - 1] / 1e6
    );
    println!(
        "{:<44} {:>10.2} M/s   {:.2}..{:.2}",
        "routed through one router core",
        routed_med / 1e6,
        routed[0] / 1e6,
        routed[routed.len() - 1] / 1e6
    );
    println!("{:<44} {:>12.3}", "routed / bare", routed_med / raw_med);
    println!(
        "{:<44} {:>12.3}   frames per busy pass {:.1}",
        "router idle passes during throughput",
        med(&mut idle),
        med(&mut frames_per_cycle)
    );
    let (rtt_p50, rtt_p999) = (medu(&mut p50), medu(&mut p999));
    println!(
        "{:<44} {:>9} ns   p99 {} ns, p99.9 {} ns",
        "request/response round trip p50",
        rtt_p50,
        medu(&mut p99),
        rtt_p999
    );
    let idle_med = med(&mut idle);
    // A load thread per end (sender on cpu 0, receiver on cpu 2) where a third core exists:
    // the end-to-end figure without the one load thread as the bound. With fewer cores it
    // runs only in test mode (both ends time-sliced on cpu 0), so the path does not rot.
    let third_cpu = allowed.contains(&2);
    let split_med = if third_cpu || !full {
        let receiver_cpu = if third_cpu { 2 } else { 0 };
        let mut split: Vec<f64> = (0..runs)
            .map(|_| routed_throughput_split(&mut sender, &mut receiver, messages, 0, receiver_cpu))
            .collect();
        let split_med = med(&mut split);
        println!(
            "{:<44} {:>10.2} M/s   {:.2}..{:.2}  (sender cpu 0, receiver cpu {receiver_cpu})",
            "routed, a load thread per end",
            split_med / 1e6,
            split[0] / 1e6,
            split[split.len() - 1] / 1e6
        );
        third_cpu.then_some(split_med)
    } else {
        None
    };
    drop((sender, receiver));
    daemon.join();
    // 1 MiB rings hold ~8.7k 120-byte records: 4,096 frames (480 KiB each way) leave room
    // and stay within the caches, as a router's working set does in steady state.
    let drain_frames = 4096;
    let mut drain = router_drain(&drain_socket, drain_frames, runs * 200);
    let alone_med = print_drain(&mut drain, drain_frames);
    let verdict = |met: bool| if met { "met" } else { "not met" };
    println!("issue 3 targets, this run (medians):");
    println!(
        "  {:<56} {:<8} {:.2} M/s",
        "router core alone >= 40 M msg/s",
        verdict(alone_med >= 40e6),
        alone_med / 1e6
    );
    println!(
        "  {:<56} {:<8} {:.2} M/s (router idle in {:.0} % of its passes: {})",
        "end to end, one load thread for both ends >= 40 M msg/s",
        verdict(routed_med >= 40e6),
        routed_med / 1e6,
        idle_med * 100.0,
        if idle_med > 0.1 {
            "the load thread is the bound"
        } else {
            "the router is busy"
        }
    );
    match split_med {
        Some(rate) => println!(
            "  {:<56} {:<8} {:.2} M/s",
            "end to end, a load thread per end >= 40 M msg/s",
            verdict(rate >= 40e6),
            rate / 1e6
        ),
        None => println!(
            "  {:<56} {:<8} needs a third cpu (this process may use {} cpus)",
            "end to end, a load thread per end >= 40 M msg/s",
            "not run",
            allowed.len()
        ),
    }
    println!(
        "  {:<56} {:<8} {} ns",
        "round trip p50 <= 1 us",
        verdict(rtt_p50 <= 1_000),
        rtt_p50
    );
    println!(
        "  {:<56} {:<8} {} ns",
        "round trip p99.9 <= 10 us",
        verdict(rtt_p999 <= 10_000),
        rtt_p999
    );
}

/// Prints the drain rates' percentiles; returns the median in msg/s.
fn print_drain(drain: &mut [f64], frames: u64) -> f64 {
    drain.sort_by(f64::total_cmp);
    let at = |q: f64| drain[((drain.len() - 1) as f64 * q) as usize] / 1e6;
    println!(
        "{:<44} {:>10.2} M/s   p25..p75 {:.2}..{:.2}, p90 {:.2}  ({} frames from a held backlog, {} runs)",
        "router core alone (drains a backlog)",
        at(0.5),
        at(0.25),
        at(0.75),
        at(0.9),
        frames,
        drain.len()
    );
    drain[(drain.len() - 1) / 2]
}
