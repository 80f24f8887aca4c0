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
use rustix::event::{eventfd, EventfdFlags, PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Registers this process for asymmetric barriers (`membarrier` global expedited), once.
/// Returns whether producers in this process may use the cheap wake protocol: a release
/// store of the tail plus one flag load, with the full barrier paid by the consumer when it
/// parks. Where the kernel or a seccomp policy refuses, producers fall back to the fenced
/// protocol (a SeqCst swap per publish), with one log line.
///
/// ```
/// let _cheap = agentwire_shm::idle::asymmetric_producer_registered();
/// ```
pub fn asymmetric_producer_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let query = membarrier_query();
        let supported = query.contains_command(MembarrierCommand::GlobalExpedited)
            && query.contains_command(MembarrierCommand::RegisterGlobalExpedited);
        let registered =
            supported && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
        if !registered {
            tracing::info!(
                "membarrier(GLOBAL_EXPEDITED) unavailable: ring producers with a doorbell use a \
                 fenced publish (slower at batch 1)"
            );
        }
        registered
    })
}

static ASYMMETRIC_BARRIERS: AtomicU64 = AtomicU64::new(0);

/// Issues a full memory barrier on every CPU running a registered producer (the consumer's
/// half of the asymmetric wake protocol). Returns false where the kernel refuses.
pub(crate) fn asymmetric_barrier() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    let supported = *SUPPORTED
        .get_or_init(|| membarrier_query().contains_command(MembarrierCommand::GlobalExpedited));
    let issued = supported && membarrier(MembarrierCommand::GlobalExpedited).is_ok();
    ASYMMETRIC_BARRIERS.fetch_add(u64::from(issued), Ordering::Relaxed);
    issued
}

/// How many cross-process barriers this process's parking consumers have issued. Each one
/// interrupts every CPU running a registered producer, so operators watch this rate.
///
/// ```
/// let _ = agentwire_shm::idle::asymmetric_barriers_issued();
/// ```
pub fn asymmetric_barriers_issued() -> u64 {
    ASYMMETRIC_BARRIERS.load(Ordering::Relaxed)
}

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

/// An eventfd a parked consumer sleeps on and its producer rings. It can be passed to
/// another process (SCM_RIGHTS) and polled by a reactor.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new non-blocking, close-on-exec eventfd.
    ///
    /// ```
    /// let bell = agentwire_shm::idle::Doorbell::new().unwrap();
    /// bell.ring();
    /// bell.wait(std::time::Duration::from_millis(10));
    /// ```
    pub fn new() -> std::io::Result<Self> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Self { fd })
    }

    /// Wraps an eventfd received from another process.
    ///
    /// ```
    /// let bell = agentwire_shm::idle::Doorbell::new().unwrap();
    /// let same = agentwire_shm::idle::Doorbell::from_fd(bell.try_clone().unwrap().into_fd());
    /// same.ring();
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Duplicates the descriptor (both refer to the same eventfd).
    ///
    /// ```
    /// let bell = agentwire_shm::idle::Doorbell::new().unwrap();
    /// let _other = bell.try_clone().unwrap();
    /// ```
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
        })
    }

    /// Gives up the descriptor.
    ///
    /// ```
    /// let fd = agentwire_shm::idle::Doorbell::new().unwrap().into_fd();
    /// drop(fd);
    /// ```
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Wakes the consumer. Errors are impossible for a valid eventfd short of counter
    /// overflow (2^64 - 2 rings without a wait), which would still leave it readable.
    ///
    /// ```
    /// agentwire_shm::idle::Doorbell::new().unwrap().ring();
    /// ```
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Waits until rung or `timeout` passes, then drains the counter. Returns true when rung
    /// (possibly by an earlier ring not yet drained), false on timeout.
    ///
    /// ```
    /// let bell = agentwire_shm::idle::Doorbell::new().unwrap();
    /// assert!(!bell.wait(std::time::Duration::from_micros(10))); // times out
    /// bell.ring();
    /// assert!(bell.wait(std::time::Duration::from_secs(1)));
    /// ```
    pub fn wait(&self, timeout: Duration) -> bool {
        wait_any(&[self], timeout)
    }
}

/// Waits until any of `bells` is rung or `timeout` passes, then drains the counters of
/// those rung. Returns true when one was rung.
///
/// ```
/// use agentwire_shm::idle::{wait_any, Doorbell};
/// let (a, b) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
/// assert!(!wait_any(&[&a, &b], std::time::Duration::from_micros(10)));
/// b.ring();
/// assert!(wait_any(&[&a, &b], std::time::Duration::from_secs(1)));
/// ```
pub fn wait_any(bells: &[&Doorbell], timeout: Duration) -> bool {
    let mut fds: Vec<PollFd<'_>> = bells
        .iter()
        .map(|b| PollFd::new(&b.fd, PollFlags::IN))
        .collect();
    let timespec = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let polled = rustix::event::poll(&mut fds, Some(&timespec)).is_ok();
    let mut rung = false;
    for (bell, fd) in bells.iter().zip(&fds) {
        // Read only the bells poll saw rung, so a timed-out park costs one syscall, not one
        // per bell; every bell when poll failed (EINTR), as one may have been rung meanwhile.
        if polled && fd.revents().is_empty() {
            continue;
        }
        let mut counter = [0u8; 8];
        rung |= matches!(rustix::io::read(&bell.fd, &mut counter), Ok(8));
    }
    rung
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
