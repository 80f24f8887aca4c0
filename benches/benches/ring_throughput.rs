//! Ring throughput: agentwire's variable-frame SPSC ring against a bare fixed 64-byte slot
//! ring (the physical-limit baseline), measured in the same run, in one process (two pinned
//! threads) and across two processes (fork, pinned), with batches of 1 and 32 on both sides.
//! Every frame carries a sequence number the consumer checks, so a broken ring fails the
//! bench instead of reporting a fast wrong number. Busy-polling on both sides.
//!
//! Run: `cargo bench -p agentwire-benches --bench ring_throughput`
//! (`cargo test --benches` runs each case once, as a smoke test.)

use agentwire_benches::{cpus, fork_child, pin_to_cpu, wait_child, RawRing, Signals};
use agentwire_shm::ring::{ClaimError, Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const RING_BYTES: usize = 1 << 20;
const RAW_SLOTS: u64 = 1 << 14; // 1 MiB of 64-byte slots, the same memory as the frame ring

#[derive(Clone, Copy, Debug)]
enum Placement {
    Threads,
    Processes,
}

/// Signals: 0 = consumer ready, 1 = frames consumed so far, 2 = sequence errors.
fn consume_agentwire(mut rx: Consumer, frames: u64, batch: usize, signals: &Signals) {
    signals.get(0).store(1, Ordering::Release);
    let mut expected = 0u64;
    let mut errors = 0u64;
    while expected < frames {
        let n = rx
            .read(batch, |f| {
                let seq = u64::from_le_bytes(f[..8].try_into().expect("8 bytes"));
                errors += u64::from(seq != expected);
                expected += 1;
                ControlFlow::Continue(())
            })
            .expect("ring stays healthy");
        if n > 0 {
            signals.get(1).store(expected, Ordering::Release);
        } else {
            std::hint::spin_loop();
        }
    }
    signals.get(2).store(errors, Ordering::Release);
}

fn produce_agentwire(tx: &mut Producer, frames: u64, size: usize, batch: usize, payload: &[u8]) {
    let mut seq = 0u64;
    while seq < frames {
        let end = (seq + batch as u64).min(frames);
        while seq < end {
            match tx.claim(size) {
                Ok(mut claim) => {
                    let buf = claim.bytes_mut();
                    buf.copy_from_slice(&payload[..size]);
                    buf[..8].copy_from_slice(&seq.to_le_bytes());
                    if batch == 1 {
                        claim.commit();
                    } else {
                        claim.commit_deferred();
                    }
                    seq += 1;
                }
                Err(ClaimError::Full { .. }) => {
                    tx.publish();
                    std::hint::spin_loop();
                }
                Err(e) => panic!("{e}"),
            }
        }
        tx.publish();
    }
}

fn wait_consumed(signals: &Signals, frames: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while signals.get(1).load(Ordering::Acquire) < frames {
        assert!(Instant::now() < deadline, "watchdog: consumer stalled");
        std::hint::spin_loop();
    }
}

/// How the producer publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wake {
    /// No doorbell: a release store (for a consumer that only spins).
    None,
    /// Doorbell, best protocol available (asymmetric: release store + one flag load; the
    /// consumer pays a membarrier when it parks).
    Asymmetric,
    /// Doorbell, fenced protocol (SeqCst swap + flag load per publish).
    Fenced,
}

/// The consumer spins and never parks in every case, so `wake` measures what a producer
/// pays to be able to wake a consumer that might sleep.
fn run_agentwire(
    placement: Placement,
    size: usize,
    batch: usize,
    frames: u64,
    wake: Wake,
) -> Duration {
    let segment = Segment::create(
        &SegmentConfig::new(1)
            .with_capacity(RING_BYTES, 4096)
            .huge_pages(HugePages::Auto),
    )
    .expect("segment");
    let signals = Signals::new();
    let payload = vec![0x5au8; size];
    let bell = (wake != Wake::None).then(|| agentwire_shm::idle::Doorbell::new().expect("eventfd"));
    let mut tx = Producer::new(segment.tx_memory(), bell);
    if wake == Wake::Fenced {
        tx = tx.with_fenced_wake();
    }
    let consumer_side = || {
        consume_agentwire(
            Consumer::new(segment.tx_memory(), None),
            frames,
            batch,
            &signals,
        )
    };
    let produce = || produce_agentwire(&mut tx, frames, size, batch, &payload);
    let elapsed = timed_transfer(placement, &signals, frames, consumer_side, produce);
    assert_eq!(
        signals.get(2).load(Ordering::Acquire),
        0,
        "frames lost or reordered"
    );
    elapsed
}

fn run_raw(placement: Placement, batch: u64, frames: u64) -> Duration {
    let ring = RawRing::new(RAW_SLOTS);
    let signals = Signals::new();
    let consumer_side = || {
        let mut rx = ring.consumer();
        signals.get(0).store(1, Ordering::Release);
        let (mut expected, mut errors) = (0u64, 0u64);
        while expected < frames {
            let n = rx.pop_batch(batch, |slot| {
                let seq = u64::from_le_bytes(slot[..8].try_into().expect("8 bytes"));
                errors += u64::from(seq != expected);
                expected += 1;
            });
            if n > 0 {
                signals.get(1).store(expected, Ordering::Release);
            } else {
                std::hint::spin_loop();
            }
        }
        signals.get(2).store(errors, Ordering::Release);
    };
    let payload = [0x5au8; 64];
    let produce = || {
        let mut tx = ring.producer();
        let mut seq = 0u64;
        while seq < frames {
            let n = batch.min(frames - seq);
            let base = seq;
            if tx.push_batch(n, |slot, i| {
                slot.copy_from_slice(&payload);
                slot[..8].copy_from_slice(&(base + i).to_le_bytes());
            }) {
                seq += n;
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let elapsed = timed_transfer(placement, &signals, frames, consumer_side, produce);
    assert_eq!(
        signals.get(2).load(Ordering::Acquire),
        0,
        "raw ring lost or reordered frames"
    );
    elapsed
}

/// Runs `consume` pinned to cpu 1 (a thread, or a forked process) and `produce` here on cpu
/// 0; times from the consumer's ready signal until it reports `frames` consumed.
fn timed_transfer(
    placement: Placement,
    signals: &Signals,
    frames: u64,
    consume: impl FnOnce() + Send,
    produce: impl FnOnce(),
) -> Duration {
    let run = |produce: &mut dyn FnMut()| {
        while signals.get(0).load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        produce();
        wait_consumed(signals, frames);
        start.elapsed()
    };
    let mut produce = Some(produce);
    let mut produce_once = || (produce.take().expect("runs once"))();
    match placement {
        Placement::Threads => std::thread::scope(|s| {
            s.spawn(|| {
                pin_to_cpu(1);
                consume()
            });
            run(&mut produce_once)
        }),
        Placement::Processes => {
            let pid = fork_child(1, consume);
            let elapsed = run(&mut produce_once);
            wait_child(pid);
            elapsed
        }
    }
}

fn ring_throughput(c: &mut Criterion) {
    let cpu_count = cpus();
    pin_to_cpu(0);
    if cpu_count < 2 {
        eprintln!("ring_throughput: fewer than 2 CPUs; producer and consumer share a core");
    }
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for placement in [Placement::Threads, Placement::Processes] {
        for batch in [1usize, 32] {
            let p = format!("{placement:?}").to_lowercase();
            group.bench_function(
                BenchmarkId::new(format!("raw_64B_slots/{p}"), format!("batch{batch}")),
                |b| b.iter_custom(|iters| run_raw(placement, batch as u64, iters.max(1))),
            );
            for size in [64usize, 1024] {
                group.bench_function(
                    BenchmarkId::new(format!("agentwire_{size}B/{p}"), format!("batch{batch}")),
                    |b| {
                        b.iter_custom(|iters| {
                            run_agentwire(placement, size, batch, iters.max(1), Wake::None)
                        })
                    },
                );
            }
            if matches!(placement, Placement::Processes) {
                for wake in [Wake::Asymmetric, Wake::Fenced] {
                    let name = format!("agentwire_64B_doorbell_{wake:?}/{p}").to_lowercase();
                    group.bench_function(BenchmarkId::new(name, format!("batch{batch}")), |b| {
                        b.iter_custom(|iters| {
                            run_agentwire(placement, 64, batch, iters.max(1), wake)
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, ring_throughput);
criterion_main!(benches);
