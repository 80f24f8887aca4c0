//! How other threads wake a parked routing core: one eventfd doorbell and one park flag per
//! shard, rung by what has no ring doorbell of its own — the links from other shards (a
//! forwarded frame, an ack or nack relayed back), the core's command queue (a new agent, a
//! departure) and shutdown.
//!
//! The protocol is Dekker's, with a full fence on each side. The core that is about to park
//! stores its flag, fences, then polls the links and the command count once more; a thread
//! that posts stores its record or command, fences, then loads the flag and rings only when
//! it is set. Either the poll sees the post or the poster sees the flag, so no post sleeps a
//! whole park timeout. Posters pay one fence and one load per publish, not per frame (links
//! publish once per duty cycle); the eventfd write happens only while the core sleeps.
//!
//! ```
//! use agentwire_router::wake::ShardWake;
//! let wake = ShardWake::new().unwrap();
//! wake.notify(); // nobody parked: no syscall
//! assert!(!wake.is_parked());
//! ```

use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::ring::CachePadded;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// A routing core's wake flag and doorbell (see the module docs).
#[derive(Debug)]
pub struct ShardWake {
    /// 1 from just before the core's last poll until it wakes. SYNC POINT: shard park.
    parked: CachePadded<AtomicU32>,
    bell: Doorbell,
}

impl ShardWake {
    /// A new wake with its own eventfd.
    ///
    /// ```
    /// let _wake = agentwire_router::wake::ShardWake::new().unwrap();
    /// ```
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            parked: CachePadded(AtomicU32::new(0)),
            bell: Doorbell::new()?,
        })
    }

    /// The poster's half: call after the post (link publish, queued command) is stored.
    /// Rings the doorbell only when the core is parked or about to park.
    ///
    /// ```
    /// let wake = agentwire_router::wake::ShardWake::new().unwrap();
    /// wake.arm();
    /// wake.notify();
    /// assert!(wake.bell().wait(std::time::Duration::from_secs(1)));
    /// ```
    pub fn notify(&self) {
        // SYNC POINT: shard park. Orders the post before the flag load (store-load: only a
        // full fence does it); pairs with the fence in `arm`.
        fence(Ordering::SeqCst);
        if self.parked.0.load(Ordering::Relaxed) != 0 {
            self.bell.ring();
        }
    }

    /// The core's half, before its last poll: marks it parked and fences, so a post made
    /// after this is either seen by that poll or rings the bell.
    ///
    /// ```
    /// let wake = agentwire_router::wake::ShardWake::new().unwrap();
    /// wake.arm();
    /// assert!(wake.is_parked());
    /// wake.disarm();
    /// assert!(!wake.is_parked());
    /// ```
    pub fn arm(&self) {
        self.parked.0.store(1, Ordering::Relaxed);
        // SYNC POINT: shard park. Orders the flag store before the core's last poll; pairs
        // with the fence in `notify`.
        fence(Ordering::SeqCst);
    }

    /// Clears the flag once the core is awake again (posters stop ringing).
    ///
    /// ```
    /// agentwire_router::wake::ShardWake::new().unwrap().disarm();
    /// ```
    pub fn disarm(&self) {
        self.parked.0.store(0, Ordering::Relaxed);
    }

    /// Whether the core is parked (or about to park).
    ///
    /// ```
    /// assert!(!agentwire_router::wake::ShardWake::new().unwrap().is_parked());
    /// ```
    pub fn is_parked(&self) -> bool {
        self.parked.0.load(Ordering::Relaxed) != 0
    }

    /// The doorbell the core sleeps on (with its agents' doorbells).
    ///
    /// ```
    /// let wake = agentwire_router::wake::ShardWake::new().unwrap();
    /// assert!(!wake.bell().wait(std::time::Duration::from_micros(10)));
    /// ```
    pub fn bell(&self) -> &Doorbell {
        &self.bell
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    /// Lost-wakeup check: a poster and a parker race many times; every post is seen by the
    /// parker's last poll or rings the bell, so the parker never sleeps out its (long)
    /// timeout. A lost wakeup shows as a round that needed the 10 s watchdog.
    #[test]
    fn a_post_racing_a_park_is_never_lost() {
        let rounds: u64 = if cfg!(miri) { 20 } else { 5_000 };
        let wake = Arc::new(ShardWake::new().unwrap());
        let posted = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let poster = {
            let (wake, posted, taken) = (wake.clone(), posted.clone(), taken.clone());
            std::thread::spawn(move || {
                for round in 1..=rounds {
                    // One post at a time: wait until the parker took the previous one.
                    // SYNC POINT: test round (the parker's Release store of `taken`).
                    while taken.load(Ordering::Acquire) != round - 1 {
                        std::hint::spin_loop();
                    }
                    // SYNC POINT: test round. Pairs with the parker's Acquire loads of `posted`.
                    posted.store(round, Ordering::Release);
                    wake.notify();
                }
            })
        };
        let mut slept_out = 0u64;
        let mut seen = 0u64;
        while seen < rounds {
            wake.arm();
            // SYNC POINT: test round (the poster's Release store).
            if posted.load(Ordering::Acquire) == seen {
                let start = std::time::Instant::now();
                wake.bell().wait(Duration::from_secs(10));
                if start.elapsed() >= Duration::from_secs(10) {
                    slept_out += 1;
                }
            }
            wake.disarm();
            // SYNC POINT: test round (the poster's Release store).
            let now = posted.load(Ordering::Acquire);
            if now > seen {
                seen = now;
                // SYNC POINT: test round. Pairs with the poster's Acquire load.
                taken.store(seen, Ordering::Release);
            }
        }
        poster.join().unwrap();
        assert_eq!(slept_out, 0, "a post slept through a park");
    }
}
