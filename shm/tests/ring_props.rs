//! Property and stress tests for the SPSC frame ring: nothing lost, duplicated, reordered or
//! torn, across random frame sizes, wrap-around, aborted claims, deferred publishes and
//! thread interleavings.

use agentwire_shm::ring::{ring_pair, ClaimError};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::ops::ControlFlow;

#[derive(Debug, Clone)]
enum Op {
    /// Claim a frame of this size; commit now, commit deferred, or abort.
    Write { len: usize, mode: u8 },
    /// Publish deferred commits.
    Publish,
    /// Read up to this many frames; optionally stop (Break) at the k-th.
    Read { max: usize, break_at: Option<usize> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..300, 0u8..3).prop_map(|(len, mode)| Op::Write { len, mode }),
        1 => Just(Op::Publish),
        3 => (1usize..40, proptest::option::of(0usize..5)).prop_map(|(max, break_at)| Op::Read { max, break_at }),
    ]
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 256 }, ..ProptestConfig::default() })]

    /// The ring against a VecDeque model: published frames come out in order, byte for byte;
    /// deferred frames stay invisible until publish; aborted claims never appear.
    #[test]
    fn ring_matches_queue_model(ops in proptest::collection::vec(op(), 1..400), cap_pow in 10u32..13) {
        let (mut tx, mut rx) = ring_pair(1 << cap_pow, false).unwrap();
        let mut published: VecDeque<Vec<u8>> = VecDeque::new();
        let mut deferred: Vec<Vec<u8>> = Vec::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Write { len, mode } => {
                    let data = payload(seq, len);
                    match tx.claim(len) {
                        Ok(mut claim) => {
                            claim.bytes_mut().copy_from_slice(&data);
                            match mode {
                                0 => { claim.commit(); published.extend(deferred.drain(..)); published.push_back(data); }
                                1 => { claim.commit_deferred(); deferred.push(data); }
                                _ => claim.abort(),
                            }
                            seq += 1;
                        }
                        Err(ClaimError::Full { .. }) => {}
                        Err(ClaimError::TooLarge { len_bytes, max_bytes }) => prop_assert!(len_bytes > max_bytes),
                    }
                }
                Op::Publish => { tx.publish(); published.extend(deferred.drain(..)); }
                Op::Read { max, break_at } => {
                    let mut k = 0;
                    let mut seen = Vec::new();
                    let n = rx.read(max, |f| {
                        if Some(k) == break_at { return ControlFlow::Break(()); }
                        k += 1;
                        seen.push(f.to_vec());
                        ControlFlow::Continue(())
                    }).unwrap();
                    prop_assert_eq!(n, seen.len());
                    for frame in seen {
                        prop_assert_eq!(Some(frame), published.pop_front());
                    }
                }
            }
        }
        tx.publish();
        published.extend(deferred.drain(..));
        let mut rest = Vec::new();
        while rx.read(64, |f| { rest.push(f.to_vec()); ControlFlow::Continue(()) }).unwrap() > 0 {}
        prop_assert_eq!(rest, Vec::from(published));
    }
}

/// Two threads, random sizes, a small ring so it wraps constantly: every sequence number
/// sent is seen exactly once, in order, with its bytes intact (a conservation law).
#[test]
fn threaded_stress_conserves_every_frame() {
    let frames: u64 = if cfg!(miri) { 500 } else { 300_000 };
    let (mut tx, mut rx) = ring_pair(4096, true).unwrap();
    let producer = std::thread::spawn(move || {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut seq = 0u64;
        let mut batch = 0;
        while seq < frames {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = 8 + (rng % 600) as usize;
            match tx.claim(len) {
                Ok(mut claim) => {
                    let buf = claim.bytes_mut();
                    buf[..8].copy_from_slice(&seq.to_le_bytes());
                    for (i, b) in buf[8..].iter_mut().enumerate() {
                        *b = (seq as usize ^ i) as u8;
                    }
                    if rng % 4 == 0 {
                        claim.commit()
                    } else {
                        claim.commit_deferred()
                    }
                    seq += 1;
                    batch += 1;
                    if batch == 8 {
                        tx.publish();
                        batch = 0;
                    }
                }
                Err(ClaimError::Full { .. }) => {
                    tx.publish();
                    std::hint::spin_loop()
                }
                Err(e) => panic!("{e}"),
            }
        }
        tx.publish();
    });
    let mut expected = 0u64;
    while expected < frames {
        let n = rx
            .read(32, |f| {
                let seq = u64::from_le_bytes(f[..8].try_into().unwrap());
                assert_eq!(seq, expected, "lost, duplicated or reordered");
                for (i, &b) in f[8..].iter().enumerate() {
                    assert_eq!(b, (seq as usize ^ i) as u8, "torn frame {seq}");
                }
                expected += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        if n == 0 {
            rx.park(std::time::Duration::from_micros(100));
        }
    }
    producer.join().unwrap();
    assert_eq!(
        rx.read(1, |_| ControlFlow::Continue(())).unwrap(),
        0,
        "nothing beyond the last frame"
    );
}

/// A parked consumer is woken by the producer's publish (and the wake is counted).
#[test]
fn parked_consumer_is_woken_by_publish() {
    let (mut tx, mut rx) = ring_pair(4096, true).unwrap();
    let handle = std::thread::spawn(move || {
        // Park with a long timeout; the producer must wake us well before it.
        let start = std::time::Instant::now();
        loop {
            if rx.read(1, |_| ControlFlow::Continue(())).unwrap() == 1 {
                return start.elapsed();
            }
            rx.park(std::time::Duration::from_secs(30));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    tx.try_push(b"wake").unwrap();
    let waited = handle.join().unwrap();
    assert!(
        waited < std::time::Duration::from_secs(30),
        "woken by the doorbell, not the timeout"
    );
    assert!(tx.wakeups() <= 1);
}

/// A consumer that parks with a long timeout against a producer publishing at random gaps,
/// so publishes land in every phase of the consumer's park sequence. A missed wakeup would
/// show as a park that ran into its 5 s timeout with a frame pending; there must be none.
/// Runs both wake protocols.
fn no_wakeup_is_lost(fenced: bool) {
    let rounds: u64 = if cfg!(miri) { 20 } else { 3000 };
    let (tx, mut rx) = ring_pair(4096, true).unwrap();
    let mut tx = if fenced { tx.with_fenced_wake() } else { tx };
    let consumer = std::thread::spawn(move || {
        let (mut got, mut timeouts) = (0u64, 0u64);
        while got < rounds {
            let n = rx.read(32, |_| ControlFlow::Continue(())).unwrap() as u64;
            got += n;
            if n == 0 && !rx.park(std::time::Duration::from_secs(5)) {
                timeouts += 1;
            }
        }
        timeouts
    });
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..rounds {
        tx.try_push(&i.to_le_bytes()).unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..rng % 50_000 {
            std::hint::spin_loop();
        }
    }
    assert_eq!(
        consumer.join().unwrap(),
        0,
        "a parked consumer missed a wakeup"
    );
}

#[test]
fn no_wakeup_is_lost_with_asymmetric_or_best_available_protocol() {
    no_wakeup_is_lost(false);
}

#[test]
fn no_wakeup_is_lost_with_fenced_protocol() {
    no_wakeup_is_lost(true);
}
