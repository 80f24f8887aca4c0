//! An idle consumer on an asymmetric ring pays one cross-process barrier when it goes idle,
//! not one per park timeout: each barrier interrupts every CPU running a registered
//! producer (the daemon's busy-polling cores among them). One test in its own binary, so no
//! parallel test moves the process-wide counter.

use agentwire_shm::doorbell::{asymmetric_barriers_issued, asymmetric_producer_registered};
use agentwire_shm::ring::{ring_pair, WAKE_ASYMMETRIC, WAKE_FENCED};
use std::ops::ControlFlow;
use std::time::Duration;

#[test]
fn idle_consumer_pays_one_barrier_per_idle_period_and_fenced_rings_none() {
    let (mut tx, mut rx) = ring_pair(4096, true).unwrap();
    if !asymmetric_producer_registered() {
        assert_eq!(tx.wake_protocol(), WAKE_FENCED);
        eprintln!("membarrier unavailable here: only the fenced path is exercised");
    } else {
        assert_eq!(tx.wake_protocol(), WAKE_ASYMMETRIC);
        let before = asymmetric_barriers_issued();
        for _ in 0..20 {
            assert!(
                !rx.park(Duration::from_micros(200)),
                "nothing published: every park times out"
            );
        }
        assert_eq!(
            asymmetric_barriers_issued() - before,
            1,
            "one barrier for the whole idle period"
        );
        // Work arrives: the parked flag makes the producer ring, the consumer takes the frame
        // and leaves the parked state; the next idle period costs one more barrier.
        tx.try_push(b"work").unwrap();
        assert!(rx.park(Duration::from_secs(5)), "woken by the frame");
        assert_eq!(tx.wakeups(), 1);
        assert!(tx.wake_ns() > 0, "the ring was timed");
        assert_eq!(rx.read(8, |_| ControlFlow::Continue(())).unwrap(), 1);
        for _ in 0..5 {
            rx.park(Duration::from_micros(200));
        }
        assert_eq!(asymmetric_barriers_issued() - before, 2);
    }
    // A fenced producer's consumer parks without any cross-process barrier.
    let (tx, mut rx) = ring_pair(4096, true).unwrap();
    let _tx = tx.with_fenced_wake();
    let before = asymmetric_barriers_issued();
    for _ in 0..5 {
        rx.park(Duration::from_micros(200));
    }
    assert_eq!(asymmetric_barriers_issued(), before);
}
