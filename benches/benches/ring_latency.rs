//! One-way latency from ping-pong across two processes (fork, pinned to cores 0 and 1,
//! busy-polling): agentwire's frame ring pair against the bare 64-byte slot ring, in the same
//! run. One-way = round trip / 2, recorded per round trip in an HDR histogram; each side is
//! run several times and the table gives the median over runs of p50/p99/p99.9 with the
//! spread (min..max) of p50. The echo is checked, so a broken ring fails the bench.
//!
//! Run: `cargo bench -p agentwire-benches --bench ring_latency`
//! (`cargo test --benches` runs a short smoke version.)

use agentwire_benches::{cpus, fork_child, pin_to_cpu, wait_child, RawRing, Signals};
use agentwire_shm::ring::{Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use hdrhistogram::Histogram;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

const PAYLOAD_BYTES: usize = 64;

struct Run {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

fn summarize(h: &Histogram<u64>) -> Run {
    Run {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// With `doorbell`, both producers publish with the park-capable protocol (consumers still
/// spin), which is what agents and the daemon use; `fenced` forces the fenced protocol.
fn agentwire_pingpong(round_trips: u64, warmup: u64, doorbell: bool, fenced: bool) -> Run {
    let producer = |memory| {
        let bell = doorbell.then(|| agentwire_shm::idle::Doorbell::new().expect("eventfd"));
        let p = Producer::new(memory, bell);
        if fenced {
            p.with_fenced_wake()
        } else {
            p
        }
    };
    let ping = Segment::create(
        &SegmentConfig::new(1)
            .with_capacity(64 * 1024, 64 * 1024)
            .huge_pages(HugePages::Auto),
    )
    .expect("segment");
    let signals = Signals::new();
    let total = round_trips + warmup;
    let pid = fork_child(1, || {
        // Echo side: consume from the tx ring, answer on the rx ring.
        let mut rx = Consumer::new(ping.tx_memory(), None);
        let mut tx = producer(ping.rx_memory());
        signals.get(0).store(1, Ordering::Release);
        let mut echoed = 0u64;
        let mut frame = [0u8; PAYLOAD_BYTES];
        while echoed < total {
            let n = rx
                .read(1, |f| {
                    frame.copy_from_slice(f);
                    ControlFlow::Continue(())
                })
                .expect("healthy ring");
            if n == 1 {
                tx.try_push(&frame).expect("room for the echo");
                echoed += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut tx = producer(ping.tx_memory());
    let mut rx = Consumer::new(ping.rx_memory(), None);
    let run = time_round_trips(&signals, total, warmup, |seq| {
        let mut frame = [0x5au8; PAYLOAD_BYTES];
        frame[..8].copy_from_slice(&seq.to_le_bytes());
        tx.try_push(&frame).expect("room for the ping");
        let mut got = None;
        while got.is_none() {
            rx.read(1, |f| {
                got = Some(u64::from_le_bytes(f[..8].try_into().expect("8 bytes")));
                ControlFlow::Continue(())
            })
            .expect("healthy ring");
        }
        got.expect("echo")
    });
    wait_child(pid);
    run
}

fn raw_pingpong(round_trips: u64, warmup: u64) -> Run {
    let ping = RawRing::new(1024);
    let pong = RawRing::new(1024);
    let signals = Signals::new();
    let total = round_trips + warmup;
    let pid = fork_child(1, || {
        let mut rx = ping.consumer();
        let mut tx = pong.producer();
        signals.get(0).store(1, Ordering::Release);
        let mut echoed = 0u64;
        let mut frame = [0u8; 64];
        while echoed < total {
            if rx.pop_batch(1, |s| frame.copy_from_slice(s)) == 1 {
                while !tx.push_batch(1, |s, _| s.copy_from_slice(&frame)) {}
                echoed += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut tx = ping.producer();
    let mut rx = pong.consumer();
    let run = time_round_trips(&signals, total, warmup, |seq| {
        let mut frame = [0x5au8; 64];
        frame[..8].copy_from_slice(&seq.to_le_bytes());
        assert!(tx.push_batch(1, |s, _| s.copy_from_slice(&frame)));
        let mut got = None;
        while got.is_none() {
            rx.pop_batch(1, |s| {
                got = Some(u64::from_le_bytes(s[..8].try_into().expect("8 bytes")))
            });
        }
        got.expect("echo")
    });
    wait_child(pid);
    run
}

/// Waits for the echo side, then times `total` round trips of `round_trip(seq) -> echoed
/// seq`, checking each echo, recording one-way (round trip / 2) after `warmup`.
fn time_round_trips(
    signals: &Signals,
    total: u64,
    warmup: u64,
    mut round_trip: impl FnMut(u64) -> u64,
) -> Run {
    while signals.get(0).load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    for seq in 0..total {
        let start = Instant::now();
        let echoed = round_trip(seq);
        let rtt_ns = start.elapsed().as_nanos() as u64;
        assert_eq!(echoed, seq, "echo mismatch");
        if seq >= warmup {
            hist.record((rtt_ns / 2).max(1)).expect("in range");
        }
    }
    summarize(&hist)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn report(name: &str, runs: &[Run]) -> u64 {
    let p50s: Vec<u64> = runs.iter().map(|r| r.p50).collect();
    let (lo, hi) = (
        *p50s.iter().min().expect("runs"),
        *p50s.iter().max().expect("runs"),
    );
    let p50 = median(p50s);
    println!(
        "{name:<28} {p50:>8} {:>8} {:>8} {:>10}   {lo}..{hi}",
        median(runs.iter().map(|r| r.p99).collect()),
        median(runs.iter().map(|r| r.p999).collect()),
        runs.iter().map(|r| r.max).max().expect("runs"),
    );
    p50
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then run a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let (round_trips, warmup, runs) = if full {
        (200_000, 20_000, 5)
    } else {
        (2_000, 200, 1)
    };
    let cpu_count = cpus();
    pin_to_cpu(0);
    if cpu_count < 2 {
        println!(
            "note: fewer than 2 CPUs; ping and pong share a core and latency is scheduler-bound"
        );
    }
    println!("ring_latency: one-way ns (round trip / 2), 64-byte frames, 2 processes pinned to cpus 0 and 1, busy-poll");
    println!("{runs} runs x {round_trips} round trips (+{warmup} warm-up); median over runs; spread is min..max of p50");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>10}   p50 spread",
        "ring", "p50", "p99", "p99.9", "max"
    );
    let raw: Vec<Run> = (0..runs)
        .map(|_| raw_pingpong(round_trips, warmup))
        .collect();
    let run = |doorbell, fenced| -> Vec<Run> {
        (0..runs)
            .map(|_| agentwire_pingpong(round_trips, warmup, doorbell, fenced))
            .collect()
    };
    let (aw, asym, fenced) = (run(false, false), run(true, false), run(true, true));
    let raw_p50 = report("raw 64-byte slots", &raw);
    for (name, runs) in [
        ("agentwire, no doorbell", &aw),
        ("agentwire, asymmetric wake", &asym),
        ("agentwire, fenced wake", &fenced),
    ] {
        let p50 = report(name, runs);
        println!(
            "{:<28} ratio to raw p50: {:.2}",
            "",
            p50 as f64 / raw_p50.max(1) as f64
        );
    }
}
