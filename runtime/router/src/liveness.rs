//! Agent liveness, seen from the daemon's control side.
//!
//! An agent is *gone* when its control socket closes or, where the kernel has pidfds, when
//! its process exits (a child that inherited the socket cannot keep a dead agent
//! registered). An agent is *stale* when nothing it owns has moved for the liveness
//! timeout: not its heartbeat (the client bumps it while it idles in `recv`), not the tails
//! of its tx lanes (it sends), not the head of its rx ring (it reads). A stale agent stays
//! registered (unicasts to it still wait for it) but anycast, feature routes and discovery
//! skip it until it moves again. A stopped (SIGSTOP) or wedged process is the usual cause.
//!
//! ```
//! use agentwire_router::liveness::Progress;
//! use std::time::{Duration, Instant};
//! let t0 = Instant::now();
//! let mut p = Progress::new(7, t0);
//! assert!(!p.observe(7, t0 + Duration::from_secs(1), Duration::from_secs(5)));
//! assert!(p.observe(7, t0 + Duration::from_secs(6), Duration::from_secs(5))); // stale
//! assert!(!p.observe(8, t0 + Duration::from_secs(7), Duration::from_secs(5))); // moved
//! ```

use crate::shared::{bump, Shared};
use agentwire_shm::segment::{Segment, TX_LANES};
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the control side looks at every agent's progress.
pub const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// One number that changes whenever the agent shows life: its heartbeat plus the positions
/// it writes (tx tails) and the position it consumes (rx head). Wrapping sum: any change
/// of any part changes it (positions only grow).
///
/// ```
/// # use agentwire_shm::segment::{Segment, SegmentConfig};
/// let seg = Segment::create(&SegmentConfig::new(1).with_capacity(4096, 4096)).unwrap();
/// let before = agentwire_router::liveness::signature(&seg);
/// seg.control().agent_heartbeat.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
/// assert_ne!(agentwire_router::liveness::signature(&seg), before);
/// ```
pub fn signature(segment: &Segment) -> u64 {
    let heartbeat = segment.control().agent_heartbeat.0.load(Ordering::Relaxed);
    let tails = (0..TX_LANES)
        .map(|lane| segment.tx_lane_memory(lane).positions().1)
        .fold(0u64, u64::wrapping_add);
    let rx_head = segment.rx_memory().positions().0;
    heartbeat.wrapping_add(tails).wrapping_add(rx_head)
}

/// The last signature seen for one agent and when it last changed.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    signature: u64,
    changed_at: Instant,
}

impl Progress {
    /// Starts tracking at `signature`, seen at `now`.
    ///
    /// ```
    /// let p = agentwire_router::liveness::Progress::new(0, std::time::Instant::now());
    /// # let _ = p;
    /// ```
    pub fn new(signature: u64, now: Instant) -> Self {
        Self {
            signature,
            changed_at: now,
        }
    }

    /// Records a new observation; returns whether the agent is stale (no change for longer
    /// than `timeout`).
    ///
    /// ```
    /// # use agentwire_router::liveness::Progress;
    /// # use std::time::{Duration, Instant};
    /// let t0 = Instant::now();
    /// let mut p = Progress::new(1, t0);
    /// assert!(!p.observe(2, t0 + Duration::from_secs(9), Duration::from_secs(5)));
    /// ```
    pub fn observe(&mut self, signature: u64, now: Instant, timeout: Duration) -> bool {
        if signature != self.signature {
            self.signature = signature;
            self.changed_at = now;
        }
        now.saturating_duration_since(self.changed_at) > timeout
    }
}

/// A pidfd for the process at the other end of `conn`, taken before the agent is admitted
/// so that its exit is always seen: SO_PEERPIDFD where the kernel has it (Linux 6.5+: the
/// pidfd of the very process that connected), else `pidfd_open` on the SO_PEERCRED pid
/// followed by a check that the process is still there. An error (the process is gone, or
/// the kernel has no pidfds) means the agent must be refused.
///
/// ```
/// let (a, _b) = agentwire_shm::control::ControlConn::pair().unwrap();
/// let pidfd = agentwire_router::liveness::peer_pidfd(&a, std::process::id()).unwrap();
/// assert!(!agentwire_router::liveness::exited(&pidfd));
/// ```
pub fn peer_pidfd(conn: &impl AsFd, pid: u32) -> std::io::Result<OwnedFd> {
    let pidfd = match so_peerpidfd(conn)? {
        Some(pidfd) => pidfd,
        None => {
            let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
            let pid = rustix::process::Pid::from_raw(raw)
                .ok_or_else(|| std::io::Error::other("pid 0 has no process"))?;
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?
        }
    };
    // A pidfd of a process that already exited (the kernel hands those out for a peer that
    // is gone) would never report the exit it is kept for; and a pid opened by number may
    // belong to another process by now.
    if exited(&pidfd) {
        return Err(std::io::Error::other("the process has already exited"));
    }
    Ok(pidfd)
}

/// SO_PEERPIDFD, or `None` where the kernel does not know the option.
fn so_peerpidfd(conn: &impl AsFd) -> std::io::Result<Option<OwnedFd>> {
    use rustix::fd::{AsRawFd, FromRawFd};
    /// `SO_PEERPIDFD` from linux/asm-generic/socket.h (libc has no constant for it yet).
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given; the socket is borrowed
    // for the call.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::EINVAL) => Ok(None),
            _ => Err(error),
        };
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Whether the process behind `pidfd` has exited (a pidfd polls readable then). Never
/// blocks.
///
/// ```
/// let (a, _b) = agentwire_shm::control::ControlConn::pair().unwrap();
/// let fd = agentwire_router::liveness::peer_pidfd(&a, std::process::id()).unwrap();
/// assert!(!agentwire_router::liveness::exited(&fd));
/// ```
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Marks agents stale (or live again) from their progress; see [`liveness`]. The changes
/// are logged through `log` (rate-limited: agents can stall and move again as often as they
/// like; `agents_stale` and `agentwire agents` show every one).
pub(crate) fn check_liveness(
    shared: &Shared,
    progress: &mut HashMap<u32, Progress>,
    log: &mut crate::gate::RefusalLog,
    timeout: Duration,
) {
    let now = Instant::now();
    let mut changed = false;
    let mut stale_now = 0u64;
    {
        let mut reg = shared.registry.lock().expect("registry lock");
        progress.retain(|id, _| reg.agents.contains_key(id));
        for (&agent_id, rec) in reg.agents.iter_mut() {
            let signature = signature(&rec.segment);
            let stale = progress
                .entry(agent_id)
                .or_insert_with(|| Progress::new(signature, now))
                .observe(signature, now, timeout);
            if stale != rec.stale {
                rec.stale = stale;
                changed = true;
                match log.due(now) {
                    None => {}
                    Some(unlogged) if stale => {
                        tracing::warn!(agent_id, name = %rec.name, unlogged_since_last = unlogged, "agent stale: nothing it owns moved for {timeout:?}; anycast, feature routes and discovery skip it");
                    }
                    Some(unlogged) => {
                        tracing::info!(agent_id, name = %rec.name, unlogged_since_last = unlogged, "agent live again");
                    }
                }
            }
            stale_now += u64::from(stale);
        }
        if changed {
            reg.invalidate();
        }
    }
    // Sole writer: the accept thread.
    shared.stats[0]
        .agents_stale
        .store(stale_now, Ordering::Relaxed);
    if changed {
        bump(shared);
    }
}
