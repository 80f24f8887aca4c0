//! The wake primitives below the ring and the idle strategies: the eventfd [`Doorbell`] a
//! parked consumer sleeps on and its producer rings, [`wait_any`] over several bells, and
//! the asymmetric barrier (`membarrier`) that lets producers publish with a plain release
//! store while a parking consumer pays the full fence.
//!
//! ```
//! use agentwire_shm::doorbell::{wait_any, Doorbell};
//! let bell = Doorbell::new().unwrap();
//! bell.ring();
//! assert!(wait_any(&[&bell], std::time::Duration::from_secs(1)));
//! ```

use rustix::event::{eventfd, EventfdFlags, PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Registers this process for asymmetric barriers (`membarrier` global expedited), once.
/// Returns whether producers in this process may use the cheap wake protocol: a release
/// store of the tail plus one flag load, with the full barrier paid by the consumer when it
/// parks. Where the kernel or a seccomp policy refuses, producers fall back to the fenced
/// protocol (a SeqCst swap per publish), with one log line.
///
/// ```
/// let _cheap = agentwire_shm::doorbell::asymmetric_producer_registered();
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
pub fn asymmetric_barrier() -> bool {
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
/// let _ = agentwire_shm::doorbell::asymmetric_barriers_issued();
/// ```
pub fn asymmetric_barriers_issued() -> u64 {
    ASYMMETRIC_BARRIERS.load(Ordering::Relaxed)
}

/// An eventfd a parked consumer sleeps on and its producer rings. It can be passed to
/// another process (SCM_RIGHTS) and polled by a reactor.
///
/// Clones share one descriptor: a ring of 10,000 agents costs one eventfd per bell, not one
/// per lane that holds it.
#[derive(Debug)]
pub struct Doorbell {
    fd: Arc<OwnedFd>,
}

impl Doorbell {
    /// A new non-blocking, close-on-exec eventfd.
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// bell.ring();
    /// bell.wait(std::time::Duration::from_millis(10));
    /// ```
    pub fn new() -> std::io::Result<Self> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Wraps an eventfd received from another process.
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// let same = agentwire_shm::doorbell::Doorbell::from_fd(bell.try_clone().unwrap().into_fd().unwrap());
    /// same.ring();
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd: Arc::new(fd) }
    }

    /// Another handle on the same eventfd, sharing this one's descriptor (no `dup`). Never
    /// fails today; the `Result` keeps callers ready for a handle that needs a descriptor.
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// let _other = bell.try_clone().unwrap();
    /// ```
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: Arc::clone(&self.fd),
        })
    }

    /// Gives up the descriptor (a duplicate when other handles still share it).
    ///
    /// ```
    /// let fd = agentwire_shm::doorbell::Doorbell::new().unwrap().into_fd().unwrap();
    /// drop(fd);
    /// ```
    pub fn into_fd(self) -> std::io::Result<OwnedFd> {
        match Arc::try_unwrap(self.fd) {
            Ok(fd) => Ok(fd),
            Err(shared) => shared.try_clone(),
        }
    }

    /// Wakes the consumer. Errors are impossible for a valid eventfd short of counter
    /// overflow (2^64 - 2 rings without a wait), which would still leave it readable.
    ///
    /// ```
    /// agentwire_shm::doorbell::Doorbell::new().unwrap().ring();
    /// ```
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Waits until rung or `timeout` passes, then drains the counter. Returns true when rung
    /// (possibly by an earlier ring not yet drained), false on timeout.
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
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
/// use agentwire_shm::doorbell::{wait_any, Doorbell};
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
