//! One-way latency from ping-pong across two processes (fork, pinned to cores 0 and 1,
//! busy-polling): agentwire's frame ring pair against the bare 64-byte slot ring, in the same
//! run. One-way = round trip / 2, recorded per round trip in an HDR histogram; each side is
//! run several times and the table gives the median over runs of p50/p99/p99.9 with the
//! spread (min..max) of p50. The echo is checked, so a broken ring fails the bench.
//!
//! Run: `cargo bench -p agentwire-benches --bench ring_latency`
//! (`cargo test --benches` runs a short smoke version.)

use agentwire_benches::pingpong::{agentwire_pingpong, raw_pingpong, report_runs, Run};
use agentwire_benches::{cpus, pin_to_cpu};

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
    let raw_p50 = report_runs("raw 64-byte slots", 28, &raw);
    for (name, runs) in [
        ("agentwire, no doorbell", &aw),
        ("agentwire, asymmetric wake", &asym),
        ("agentwire, fenced wake", &fenced),
    ] {
        let p50 = report_runs(name, 28, runs);
        println!(
            "{:<28} ratio to raw p50: {:.2}",
            "",
            p50 as f64 / raw_p50.max(1) as f64
        );
    }
}
