//! One-way latency from ping-pong across two processes (fork, pinned to cores 0 and 1,
//! busy-polling): one-way = round trip / 2, in an HDR histogram, every echo checked. Used by
//! `ring_latency` and `peers`.
//!
//! ```no_run
//! let run = agentwire_benches::pingpong::agentwire_pingpong(10_000, 1_000, true, false);
//! println!("p50 {} ns one way", run.p50);
//! ```

use crate::{fork_child, wait_child, RawRing, Signals};
use agentwire_shm::ring::{Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use hdrhistogram::Histogram;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Payload bytes of every ping.
pub const PAYLOAD_BYTES: usize = 64;

/// One-way latency percentiles of one ping-pong run, ns.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// The percentiles of `h`.
pub fn summarize(h: &Histogram<u64>) -> Run {
    Run {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// The median of `values` (the upper one of an even count).
///
/// ```
/// assert_eq!(agentwire_benches::pingpong::median(vec![5, 1, 3]), 3);
/// ```
pub fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// Prints one table row for several runs: `name` left-aligned in `width` columns, then the
/// median over runs of p50, p99 and p99.9, the largest value of any run, and the spread
/// (min..max) of p50. Returns the median p50.
///
/// ```
/// use agentwire_benches::pingpong::{report_runs, Run};
/// let run = Run { p50: 100, p99: 200, p999: 300, max: 400 };
/// assert_eq!(report_runs("row", 10, &[run, run]), 100);
/// ```
pub fn report_runs(name: &str, width: usize, runs: &[Run]) -> u64 {
    let p50s: Vec<u64> = runs.iter().map(|r| r.p50).collect();
    let lo = *p50s.iter().min().expect("runs");
    let hi = *p50s.iter().max().expect("runs");
    let p50 = median(p50s);
    println!(
        "{name:<width$} {p50:>8} {:>8} {:>8} {:>10}   {lo}..{hi}",
        median(runs.iter().map(|r| r.p99).collect()),
        median(runs.iter().map(|r| r.p999).collect()),
        runs.iter().map(|r| r.max).max().expect("runs"),
    );
    p50
}

/// With `doorbell`, both producers publish with the park-capable protocol (consumers still
/// spin), which is what agents and the daemon use; `fenced` forces the fenced protocol.
pub fn agentwire_pingpong(round_trips: u64, warmup: u64, doorbell: bool, fenced: bool) -> Run {
    let producer = |memory| {
        let bell = doorbell.then(|| agentwire_shm::doorbell::Doorbell::new().expect("eventfd"));
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

/// Ping-pong over two bare 64-byte-slot rings, the echo side in a forked process.
pub fn raw_pingpong(round_trips: u64, warmup: u64) -> Run {
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
pub fn time_round_trips(
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
