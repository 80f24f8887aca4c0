//! Idle strategies for ring consumers, and the eventfd doorbell a parked consumer sleeps on.
//!
//! One duty-cycle contract (Aeron's agent idle strategies): a loop calls
//! [`Idler::idle`] with the work it just did; zero work advances the idle state (spin, then
//! park), any work resets it. On the 2-core VMs we develop on a cross-core wakeup of a parked
//! thread costs ~46 µs while a busy-polled hand-off costs ~230 ns, so latency-critical loops
//! and every benchmark use [`IdleStrategy::Spin`].
//!
//! ```
//! use agentwire_shm::idle::{IdleStrategy, Idler};
//! let (_tx, mut rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
//! let mut idler = Idler::new(IdleStrategy::SpinThenPark { spins_max: 100, park_timeout_ns: 1_000_000 });
//! let work = rx.read(32, |_| std::ops::ControlFlow::Continue(())).unwrap();
//! idler.idle(work, &mut rx);
//! ```

use crate::ring::Consumer;
use std::time::Duration;

/// How a consumer waits when its ring is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Busy-poll: lowest latency, burns the core. What benchmarks use.
    Spin,
    /// Busy-poll `spins_max` empty polls, then park on the doorbell for at most
    /// `park_timeout_ns` at a time.
    SpinThenPark {
        /// Empty polls before parking.
        spins_max: u32,
        /// Longest single park in ns (bounds the cost of any missed wakeup).
        park_timeout_ns: u64,
    },
    /// Park at once on every empty poll.
    Park {
        /// Longest single park in ns.
        park_timeout_ns: u64,
    },
}

impl Default for IdleStrategy {
    /// Spin 10,000 empty polls (a few µs), then park for at most 1 ms at a time.
    fn default() -> Self {
        Self::SpinThenPark {
            spins_max: 10_000,
            park_timeout_ns: 1_000_000,
        }
    }
}

impl std::str::FromStr for IdleStrategy {
    type Err = String;

    /// Parses `spin`, `park` or `spin-then-park` (default bounds).
    ///
    /// ```
    /// use agentwire_shm::idle::IdleStrategy;
    /// assert_eq!("spin".parse::<IdleStrategy>().unwrap(), IdleStrategy::Spin);
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spin" => Ok(Self::Spin),
            "park" => Ok(Self::Park {
                park_timeout_ns: 1_000_000,
            }),
            "spin-then-park" => Ok(Self::default()),
            other => Err(format!(
                "unknown idle strategy {other:?}: use spin, spin-then-park or park"
            )),
        }
    }
}

/// The state of one consumer loop's idle strategy.
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    empty_polls: u32,
    parks: u64,
}

impl Idler {
    /// A fresh idler.
    ///
    /// ```
    /// let idler = agentwire_shm::idle::Idler::new(agentwire_shm::idle::IdleStrategy::Spin);
    /// assert_eq!(idler.parks(), 0);
    /// ```
    pub fn new(strategy: IdleStrategy) -> Self {
        Self {
            strategy,
            empty_polls: 0,
            parks: 0,
        }
    }

    /// The strategy in force.
    ///
    /// ```
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// assert_eq!(Idler::new(IdleStrategy::Spin).strategy(), IdleStrategy::Spin);
    /// ```
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// How many times this idler parked.
    ///
    /// ```
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// assert_eq!(Idler::new(IdleStrategy::Spin).parks(), 0);
    /// ```
    pub fn parks(&self) -> u64 {
        self.parks
    }

    /// Called after each poll with the frames it handled; idles when there were none.
    ///
    /// ```
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// let (_tx, mut rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// Idler::new(IdleStrategy::Park { park_timeout_ns: 1000 }).idle(0, &mut rx);
    /// ```
    #[inline]
    pub fn idle(&mut self, work_count: usize, consumer: &mut Consumer) {
        self.idle_all(work_count, std::slice::from_mut(consumer));
    }

    /// Like [`Idler::idle`] over several rings that share one doorbell (an agent's tx
    /// lanes): parking waits for any of them.
    ///
    /// ```
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// let (_a, a) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// let (_b, b) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// Idler::new(IdleStrategy::Park { park_timeout_ns: 1000 }).idle_all(0, &mut [a, b]);
    /// ```
    #[inline]
    pub fn idle_all(&mut self, work_count: usize, consumers: &mut [Consumer]) {
        if work_count > 0 {
            self.empty_polls = 0;
            return;
        }
        if let Some(timeout) = self.park_due() {
            Consumer::park_all(consumers, timeout);
        }
    }

    /// One empty poll's worth of idling short of parking: spins (and returns `None`) while
    /// the strategy says spin; otherwise counts a park and returns how long it may last,
    /// for a caller that parks on something of its own (a router on all its agents).
    ///
    /// ```
    /// use agentwire_shm::idle::{IdleStrategy, Idler};
    /// let mut idler = Idler::new(IdleStrategy::Park { park_timeout_ns: 1000 });
    /// assert_eq!(idler.park_due(), Some(std::time::Duration::from_nanos(1000)));
    /// assert_eq!(Idler::new(IdleStrategy::Spin).park_due(), None);
    /// ```
    #[inline]
    pub fn park_due(&mut self) -> Option<Duration> {
        let park_timeout_ns = match self.strategy {
            IdleStrategy::Spin => None,
            IdleStrategy::SpinThenPark {
                spins_max,
                park_timeout_ns,
            } => (self.empty_polls >= spins_max).then_some(park_timeout_ns),
            IdleStrategy::Park { park_timeout_ns } => Some(park_timeout_ns),
        };
        match park_timeout_ns {
            Some(ns) => {
                self.parks += 1;
                Some(Duration::from_nanos(ns))
            }
            None => {
                self.empty_polls = self.empty_polls.saturating_add(1);
                core::hint::spin_loop();
                None
            }
        }
    }

    /// Forgets accumulated idleness (after work arrived some other way).
    ///
    /// ```
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// Idler::new(IdleStrategy::Spin).reset();
    /// ```
    pub fn reset(&mut self) {
        self.empty_polls = 0;
    }
}
