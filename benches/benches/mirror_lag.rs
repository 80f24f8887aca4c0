//! Mirror lag: the time from a counter's change on one core (a writer's seqlocked update of
//! its stats slot) to a reader on another core seeing it, with the reader busy-polling. The
//! writer stamps each change with CLOCK_MONOTONIC (a shared `Instant` epoch) in the update
//! itself; the reader computes `now - stamp` when its snapshot first shows the change, then
//! acknowledges, and the writer makes the next change only after the acknowledgement, so
//! every change is measured once. Threads are pinned to cpus 0 (reader) and 1 (writer).
//!
//! Rows, in the same run: the bare baseline (one `AtomicU64` stored by one core and loaded by
//! the other: the cache-line transfer every mirror pays), a `snapshot` of the writer's slot
//! (32 counters), and a `snapshot_all` of 16 slots x 32 counters (what the twin reads per
//! poll). Table: median over runs of p50/p99/p99.9 and the largest, ns; spread is min..max of
//! p50. Every change is checked to be seen, in order, exactly once, so a broken seqlock
//! fails the bench.
//!
//! Run: `cargo bench -p agentwire-benches --bench mirror_lag`
//! (`cargo test --benches` runs a short smoke version.)

use agentwire_benches::pingpong::{report_runs, summarize, Run};
use agentwire_benches::{cpus, pin_to_cpu};
use agentwire_shm::ring::CachePadded;
use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const SLOTS: u32 = 16;
const COUNTERS: u32 = 32;
const WRITER_SLOT: usize = 1;
/// Counter 0 of the slot carries the change number, counter 1 its stamp.
const CHANGE: usize = 0;
const STAMP: usize = 1;

/// How the reader looks at the writer's change.
#[derive(Clone, Copy)]
enum Mode {
    BareWord,
    Snapshot,
    SnapshotAll,
}

fn ns_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// One run of `changes` (after `warmup` unrecorded ones): the reader is this thread.
fn run(mode: Mode, changes: u64, warmup: u64) -> Run {
    let epoch = Instant::now();
    let total = changes + warmup;
    let ack = CachePadded(AtomicU64::new(0));
    let bare = CachePadded([AtomicU64::new(0), AtomicU64::new(0)]);
    let seg = StatsSegment::create_memfd("mirror-lag", StatsLayout::new(SLOTS, COUNTERS))
        .expect("stats segment");
    // Read-only, through its own descriptor and mapping, as another process would.
    let reader = StatsReader::open_fd(seg.try_clone_fd().expect("dup")).expect("open");
    let mut writer = seg.writer(WRITER_SLOT).expect("slot");
    let mut h = histogram();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(1);
            for k in 1..=total {
                // Acquire: the reader is done with change k - 1 (no overlap between changes).
                while ack.0.load(Ordering::Acquire) != k - 1 {
                    std::hint::spin_loop();
                }
                let stamp = ns_since(epoch);
                match mode {
                    Mode::BareWord => {
                        bare.0[STAMP].store(stamp, Ordering::Relaxed);
                        // Release: the stamp is visible with the change number.
                        bare.0[CHANGE].store(k, Ordering::Release);
                    }
                    Mode::Snapshot | Mode::SnapshotAll => writer.update(|c| {
                        c[CHANGE] = k;
                        c[STAMP] = stamp;
                    }),
                }
            }
        });
        let per = COUNTERS as usize;
        let mut slot = vec![0u64; per];
        let mut all = vec![0u64; SLOTS as usize * per];
        let mut sequences = vec![None; SLOTS as usize];
        for k in 1..=total {
            let stamp = loop {
                let (change, stamp) = match mode {
                    Mode::BareWord => {
                        let change = bare.0[CHANGE].load(Ordering::Acquire);
                        (change, bare.0[STAMP].load(Ordering::Relaxed))
                    }
                    Mode::Snapshot => match reader.snapshot(WRITER_SLOT, &mut slot) {
                        Ok(_) => (slot[CHANGE], slot[STAMP]),
                        Err(_) => continue, // busy: the writer is mid-update; poll again
                    },
                    Mode::SnapshotAll => {
                        reader
                            .snapshot_all(&mut all, &mut sequences)
                            .expect("buffers sized to the layout");
                        if sequences[WRITER_SLOT].is_none() {
                            continue; // busy: the writer is mid-update; poll again
                        }
                        let at = WRITER_SLOT * per;
                        (all[at + CHANGE], all[at + STAMP])
                    }
                };
                if change == k {
                    break stamp;
                }
                assert_eq!(change, k - 1, "change {k} skipped or torn");
                std::hint::spin_loop();
            };
            let lag_ns = ns_since(epoch).saturating_sub(stamp);
            if k > warmup {
                h.saturating_record(lag_ns.max(1));
            }
            ack.0.store(k, Ordering::Release);
        }
    });
    assert_eq!(h.len(), changes, "every change measured once");
    summarize(&h)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then run a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let (changes, warmup, runs) = if full {
        (200_000, 20_000, 5)
    } else {
        (2_000, 200, 1)
    };
    // Count before pinning: the count is of the cpus this thread may run on.
    let cpu_count = cpus();
    if !pin_to_cpu(0) || cpu_count < 2 {
        println!(
            "note: cannot pin to 2 cpus; reader and writer share a core and lag is scheduler-bound"
        );
    }
    println!(
        "mirror_lag: ns from a writer's change (cpu 1) to a busy-polling reader seeing it (cpu 0); {} cpus",
        cpu_count
    );
    println!("{runs} runs x {changes} changes (+{warmup} warm-up); median over runs; spread is min..max of p50");
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>10}   p50 spread",
        "read", "p50", "p99", "p99.9", "max"
    );
    for (name, mode) in [
        ("bare AtomicU64 (baseline)", Mode::BareWord),
        ("snapshot, 1 slot x 32 counters", Mode::Snapshot),
        ("snapshot_all, 16 slots x 32", Mode::SnapshotAll),
    ] {
        let results: Vec<Run> = (0..runs).map(|_| run(mode, changes, warmup)).collect();
        report_runs(name, 34, &results);
    }
}
