//! The wake primitives below the ring and the idle strategies: the [`Doorbell`] (an eventfd
//! between threads, a pipe between processes) a parked consumer sleeps on and its producer
//! rings, [`wait_any`] over several bells, and
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

/// What a parked consumer sleeps on and its producer rings.
///
/// Two kinds, by whom the two ends are shared with:
/// - [`Doorbell::new`]: one eventfd, both ends in one handle. For bells whose users all
///   trust each other (threads of one process).
/// - [`Doorbell::pipe`]: a pipe, whose two ends are separate open file descriptions. For a
///   bell one end of which goes to another, untrusted process (an agent): `O_NONBLOCK` is a
///   property of the open file description, so a peer holding the *same* eventfd could clear
///   it and fill the counter, and the daemon's next ring would block in the kernel. A peer
///   holding one end of a pipe can change only its own end; the daemon's end stays
///   non-blocking, so a ring on a full pipe returns at once (the bell is rung already) and a
///   drain on an empty one too.
///
/// Clones share one descriptor: a router of 10,000 agents holds one descriptor per bell,
/// not one per lane that holds it. A ring writes the 8-byte value 1 and a drain reads what
/// is there, so either end of either kind can be used by a peer that expects an eventfd.
#[derive(Debug)]
pub struct Doorbell {
    /// Written to ring (`None`: this handle only waits).
    ring_fd: Option<Arc<OwnedFd>>,
    /// Polled and drained to wait (`None`: this handle only rings).
    wait_fd: Option<Arc<OwnedFd>>,
}

/// Bytes a pipe doorbell buffers: one page (the smallest pipe), 512 rings before a ring
/// finds it full, and one page of the user's pipe quota per bell however many agents.
pub const PIPE_BELL_BYTES: usize = 4096;

/// Bytes one drain read takes from a pipe bell (at most [`PIPE_DRAIN_READS_MAX`] reads).
const PIPE_DRAIN_BYTES: usize = 512;
/// Reads one drain makes at most: a pipe of [`PIPE_BELL_BYTES`] empties in this many.
const PIPE_DRAIN_READS_MAX: usize = PIPE_BELL_BYTES / PIPE_DRAIN_BYTES;

impl Doorbell {
    /// A new non-blocking, close-on-exec eventfd, both ends in this handle (for threads that
    /// trust each other; see [`Doorbell::pipe`] for a bell shared with another process).
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// bell.ring();
    /// bell.wait(std::time::Duration::from_millis(10));
    /// ```
    pub fn new() -> std::io::Result<Self> {
        let fd = Arc::new(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?);
        Ok(Self {
            ring_fd: Some(fd.clone()),
            wait_fd: Some(fd),
        })
    }

    /// A new bell over a pipe of [`PIPE_BELL_BYTES`]: `(ringing end, waiting end)`, both
    /// non-blocking and close-on-exec, each its own open file description. Keep one end and
    /// pass the other to the peer: nothing the peer does to its end can make a ring or a
    /// wait on this one block.
    ///
    /// ```
    /// let (ringer, waiter) = agentwire_shm::doorbell::Doorbell::pipe().unwrap();
    /// ringer.ring();
    /// assert!(waiter.wait(std::time::Duration::from_secs(1)));
    /// assert!(!waiter.wait(std::time::Duration::from_micros(10))); // drained
    /// ```
    pub fn pipe() -> std::io::Result<(Self, Self)> {
        use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags};
        let (read_end, write_end) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Best effort: a pipe keeps its default size where the kernel refuses.
        let _ = fcntl_setpipe_size(&write_end, PIPE_BELL_BYTES);
        Ok((Self::from_ring_fd(write_end), Self::from_wait_fd(read_end)))
    }

    /// A new bell over a Unix stream socket pair: `(ringing end, waiting end)`, both
    /// non-blocking and close-on-exec, rung and drained exactly like [`Doorbell::pipe`]. An
    /// async runtime that can await a socket but not a pipe (glommio) waits on the waiting
    /// end as a stream.
    ///
    /// ```
    /// let (ringer, waiter) = agentwire_shm::doorbell::Doorbell::socket_pair().unwrap();
    /// ringer.ring();
    /// assert!(waiter.wait(std::time::Duration::from_secs(1)));
    /// assert!(!waiter.wait(std::time::Duration::from_micros(10))); // drained
    /// ```
    pub fn socket_pair() -> std::io::Result<(Self, Self)> {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (ring_end, wait_end) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Self::from_ring_fd(ring_end), Self::from_wait_fd(wait_end)))
    }

    /// Wraps an eventfd received from another process (both ends).
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// let same = agentwire_shm::doorbell::Doorbell::from_fd(bell.try_clone().unwrap().into_fd().unwrap());
    /// same.ring();
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        let fd = Arc::new(fd);
        Self {
            ring_fd: Some(fd.clone()),
            wait_fd: Some(fd),
        }
    }

    /// Wraps a descriptor this side only rings: the write end of a pipe bell (or an
    /// eventfd).
    ///
    /// ```
    /// let (ringer, waiter) = agentwire_shm::doorbell::Doorbell::pipe().unwrap();
    /// let again = agentwire_shm::doorbell::Doorbell::from_ring_fd(ringer.into_fd().unwrap());
    /// again.ring();
    /// assert!(waiter.wait(std::time::Duration::from_secs(1)));
    /// ```
    pub fn from_ring_fd(fd: OwnedFd) -> Self {
        Self {
            ring_fd: Some(Arc::new(fd)),
            wait_fd: None,
        }
    }

    /// Wraps a descriptor this side only waits on: the read end of a pipe bell (or an
    /// eventfd).
    ///
    /// ```
    /// let (ringer, waiter) = agentwire_shm::doorbell::Doorbell::pipe().unwrap();
    /// let again = agentwire_shm::doorbell::Doorbell::from_wait_fd(waiter.into_fd().unwrap());
    /// ringer.ring();
    /// assert!(again.wait(std::time::Duration::from_secs(1)));
    /// ```
    pub fn from_wait_fd(fd: OwnedFd) -> Self {
        Self {
            ring_fd: None,
            wait_fd: Some(Arc::new(fd)),
        }
    }

    /// Another handle on the same bell, sharing this one's descriptors (no `dup`). Never
    /// fails today; the `Result` keeps callers ready for a handle that needs a descriptor.
    ///
    /// ```
    /// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// let _other = bell.try_clone().unwrap();
    /// ```
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            ring_fd: self.ring_fd.clone(),
            wait_fd: self.wait_fd.clone(),
        })
    }

    /// Gives up the descriptor (a duplicate when other handles still share it): the eventfd,
    /// or the one pipe end this handle holds.
    ///
    /// ```
    /// let fd = agentwire_shm::doorbell::Doorbell::new().unwrap().into_fd().unwrap();
    /// drop(fd);
    /// ```
    pub fn into_fd(self) -> std::io::Result<OwnedFd> {
        let Self { ring_fd, wait_fd } = self;
        // `or` drops the other handle of an eventfd first, so the last one unwraps.
        let Some(fd) = ring_fd.or(wait_fd) else {
            unreachable!("a doorbell holds at least one end")
        };
        match Arc::try_unwrap(fd) {
            Ok(fd) => Ok(fd),
            Err(shared) => shared.try_clone(),
        }
    }

    /// Wakes the consumer. Never blocks: the descriptor written is non-blocking and its
    /// flags are this process's own (an eventfd from [`Doorbell::new`], or the write end of
    /// a [`Doorbell::pipe`]); a full bell is already rung. Does nothing on a wait-only
    /// handle.
    ///
    /// ```
    /// agentwire_shm::doorbell::Doorbell::new().unwrap().ring();
    /// ```
    pub fn ring(&self) {
        if let Some(fd) = &self.ring_fd {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Waits until rung or `timeout` passes, then drains the bell. Returns true when rung
    /// (possibly by an earlier ring not yet drained), false on timeout or for a ring-only
    /// handle (which has nothing to wait on).
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

    /// Empties the bell without blocking; true when it held at least one ring. Bounded: a
    /// pipe is read at most [`PIPE_BELL_BYTES`] worth, however fast its peer writes.
    fn drain(fd: &OwnedFd) -> bool {
        let mut buffer = [0u8; PIPE_DRAIN_BYTES];
        let mut rung = false;
        for _ in 0..PIPE_DRAIN_READS_MAX {
            match rustix::io::read(fd, &mut buffer) {
                // An eventfd reads as one 8-byte counter; a short pipe read emptied it.
                Ok(n) if n > 0 => {
                    rung = true;
                    if n < buffer.len() {
                        break;
                    }
                }
                _ => break,
            }
        }
        rung
    }
}

/// Waits until any of `bells` is rung or `timeout` passes, then drains those rung. Returns
/// true when one was rung. Ring-only handles are skipped.
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
        .filter_map(|b| b.wait_fd.as_deref())
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timespec = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let polled = rustix::event::poll(&mut fds, Some(&timespec)).is_ok();
    let mut rung = false;
    let waiting = bells.iter().filter_map(|b| b.wait_fd.as_deref());
    for (fd, polled_fd) in waiting.zip(&fds) {
        // Read only the bells poll saw rung, so a timed-out park costs one syscall, not one
        // per bell; every bell when poll failed (EINTR), as one may have been rung meanwhile.
        if polled && polled_fd.revents().is_empty() {
            continue;
        }
        rung |= Doorbell::drain(fd);
    }
    rung
}

impl AsFd for Doorbell {
    /// The descriptor to pass or register: the eventfd, or the one pipe end this handle
    /// holds (the ring end when it holds both).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match (&self.ring_fd, &self.wait_fd) {
            (Some(fd), _) | (None, Some(fd)) => fd.as_fd(),
            (None, None) => unreachable!("a doorbell holds at least one end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_bell_never_blocks_whatever_the_peer_does_to_its_end() {
        let (ringer, waiter) = Doorbell::pipe().unwrap();
        // The peer holds the read end: it clears O_NONBLOCK there and never reads. With a
        // shared eventfd this would reach our end too, and a ring on a full counter blocks.
        let peer = waiter.into_fd().unwrap();
        rustix::fs::fcntl_setfl(&peer, rustix::fs::OFlags::empty()).unwrap();
        for _ in 0..(4 * PIPE_BELL_BYTES) {
            ringer.ring(); // fills the pipe, then returns at once on every ring
        }
        // The other way round: the peer holds the write end, blocking, and writes nothing.
        let (ringer, waiter) = Doorbell::pipe().unwrap();
        let peer = ringer.into_fd().unwrap();
        rustix::fs::fcntl_setfl(&peer, rustix::fs::OFlags::empty()).unwrap();
        assert!(!waiter.wait(Duration::ZERO));
        // A peer that fills its pipe is drained in a bounded number of reads.
        while rustix::io::write(&peer, &[0u8; 512]).is_ok_and(|n| n == 512) {
            if rustix::event::poll(
                &mut [PollFd::new(&peer, PollFlags::OUT)],
                Some(&rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            )
            .unwrap()
                == 0
            {
                break;
            }
        }
        assert!(waiter.wait(Duration::ZERO));
    }

    #[test]
    fn eventfd_and_pipe_ends_interoperate_with_an_eventfd_peer() {
        // An older peer that treats its end as an eventfd: 8-byte writes and reads.
        let (ringer, waiter) = Doorbell::pipe().unwrap();
        let peer_waiter = Doorbell::from_fd(waiter.into_fd().unwrap());
        ringer.ring();
        assert!(peer_waiter.wait(Duration::from_secs(1)));
        let (ringer, waiter) = Doorbell::pipe().unwrap();
        Doorbell::from_fd(ringer.into_fd().unwrap()).ring();
        assert!(waiter.wait(Duration::from_secs(1)));
    }
}
