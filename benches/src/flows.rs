//! Timed one-way transfers for the ring benches: a consumer pinned to cpu 1 (thread or
//! forked process), a producer on cpu 0, sequence numbers checked on every frame. Used by
//! `ring_throughput` (criterion) and `peers` (the peer comparison table).
//!
//! ```no_run
//! use agentwire_benches::flows::{run_agentwire, Placement, Wake};
//! let elapsed = run_agentwire(Placement::Processes, 64, 32, 100_000, Wake::Asymmetric);
//! println!("{:.1} M msg/s", 100_000.0 / elapsed.as_secs_f64() / 1e6);
//! ```

use crate::{fork_child, pin_to_cpu, wait_child, RawRing, Signals};
use agentwire_shm::ring::{ClaimError, Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bytes of the agentwire ring each transfer uses.
pub const RING_BYTES: usize = 1 << 20;
/// Slots of the raw ring: 1 MiB of 64-byte slots, the same memory as the frame ring.
pub const RAW_SLOTS: u64 = 1 << 14;

/// Where the consumer side runs.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// A second thread of this process, pinned to cpu 1.
    Threads,
    /// A forked process, pinned to cpu 1.
    Processes,
}

/// Reads `frames` frames in reads of up to `batch`, checking sequence numbers.
/// Signals: 0 = consumer ready, 1 = frames consumed so far, 2 = sequence errors.
pub fn consume_agentwire(mut rx: Consumer, frames: u64, batch: usize, signals: &Signals) {
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

/// Writes `frames` frames of `size` bytes (sequence number first), publishing every
/// `batch` frames.
pub fn produce_agentwire(
    tx: &mut Producer,
    frames: u64,
    size: usize,
    batch: usize,
    payload: &[u8],
) {
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

/// Spins until signal 1 reaches `frames` (watchdog: 120 s).
pub fn wait_consumed(signals: &Signals, frames: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while signals.get(1).load(Ordering::Acquire) < frames {
        assert!(Instant::now() < deadline, "watchdog: consumer stalled");
        std::hint::spin_loop();
    }
}

/// How the producer publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wake {
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
pub fn run_agentwire(
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
    let bell =
        (wake != Wake::None).then(|| agentwire_shm::doorbell::Doorbell::new().expect("eventfd"));
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

/// The bare 64-byte-slot ring moving `frames` frames in batches of `batch`.
pub fn run_raw(placement: Placement, batch: u64, frames: u64) -> Duration {
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
pub fn timed_transfer(
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
