//! Shared helpers for agentwire's benches: core pinning, running a side in a forked process,
//! and a bare fixed-slot SPSC ring used as the physical-limit baseline measured in the same
//! run as agentwire's variable-frame ring.
//!
//! ```
//! let ring = agentwire_benches::RawRing::new(1024);
//! let (mut tx, mut rx) = (ring.producer(), ring.consumer());
//! assert!(tx.push_batch(1, |slot, _| slot[0] = 42));
//! let mut got = 0;
//! rx.pop_batch(32, |slot| got = slot[0]);
//! assert_eq!(got, 42);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod flows;
pub mod pingpong;
pub mod routed;
pub mod rows;

use agentwire_shm::ring::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of one raw-ring slot.
pub const RAW_SLOT_BYTES: usize = 64;

/// Pins the calling thread to `cpu`; returns false (and the bench notes it) if it cannot.
///
/// ```
/// let _ = agentwire_benches::pin_to_cpu(0);
/// ```
pub fn pin_to_cpu(cpu: usize) -> bool {
    let set = cpu_set_of(cpu);
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a valid cpu_set_t.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Lets the calling thread run on `cpus` again (a mask saved with
/// `agentwire_runtime::planning::affinity_mask` before pinning); returns false if it cannot.
///
/// ```
/// let mask = agentwire_runtime::planning::affinity_mask().unwrap();
/// assert!(agentwire_benches::set_affinity(&mask));
/// ```
pub use agentwire_runtime::planning::set_affinity;

fn cpu_set_of(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside the set for any cpu below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set) };
    set
}

/// Number of CPUs this process may run on.
///
/// ```
/// assert!(agentwire_benches::cpus() >= 1);
/// ```
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Anonymous memory shared with forked children (MAP_SHARED), page-aligned.
pub struct SharedAnon {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the memory is only accessed through atomics and the ring protocols.
unsafe impl Send for SharedAnon {}
// SAFETY: as above.
unsafe impl Sync for SharedAnon {}

impl SharedAnon {
    /// Maps `len` zeroed bytes shared with future forked children.
    ///
    /// ```
    /// let m = agentwire_benches::SharedAnon::new(4096);
    /// assert!(!m.as_ptr().is_null());
    /// ```
    pub fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous shared mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "mmap failed: {}",
            std::io::Error::last_os_error()
        );
        Self {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Base address.
    ///
    /// ```
    /// let m = agentwire_benches::SharedAnon::new(4096);
    /// assert_eq!(m.as_ptr() as usize % 4096, 0);
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for SharedAnon {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A shared counter/flag block for coordinating a forked child.
///
/// ```
/// let s = agentwire_benches::Signals::new();
/// s.get(0).store(1, std::sync::atomic::Ordering::Release);
/// ```
pub struct Signals {
    mem: SharedAnon,
}

impl Signals {
    /// Eight padded counters in shared memory.
    ///
    /// ```
    /// let _ = agentwire_benches::Signals::new();
    /// ```
    pub fn new() -> Self {
        Self {
            mem: SharedAnon::new(4096),
        }
    }

    /// Counter `i` (0..8).
    ///
    /// ```
    /// let s = agentwire_benches::Signals::new();
    /// assert_eq!(s.get(7).load(std::sync::atomic::Ordering::Relaxed), 0);
    /// ```
    pub fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i < 8);
        // SAFETY: 8 counters 128 bytes apart fit in the 4096-byte page, zero-initialised.
        unsafe { &*(self.mem.as_ptr().add(i * 128) as *const AtomicU64) }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `child` in a forked process (pinned to `cpu`) and returns its pid. The child exits
/// with `_exit(0)` after `child` returns, or 101 if it panics.
///
/// Fork happens while the bench is single-threaded apart from criterion's own state; the
/// child touches only shared memory and never allocates across the fork boundary's locks.
pub fn fork_child(cpu: usize, child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: fork in a process whose other threads (if any) hold no locks the child needs:
    // the child only pins itself, runs `child` over shared memory, and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        pin_to_cpu(cpu);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: leaving the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 101 }) };
    }
    pid
}

/// Waits for a forked child and asserts it succeeded.
pub fn wait_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting on our own child pid.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "bench child failed: status {status}"
    );
}

#[repr(C)]
struct RawControl {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
}

/// The baseline: a bare SPSC ring of fixed 64-byte slots, each side caching the other's
/// index, batch publish and release. No frame header, no validation, no wrap padding: the
/// physical-limit proxy the variable-frame ring is compared against.
pub struct RawRing {
    mem: SharedAnon,
    slots: u64,
}

impl RawRing {
    /// A ring of `slots` (a power of two) in shared anonymous memory.
    ///
    /// ```
    /// let r = agentwire_benches::RawRing::new(64);
    /// ```
    pub fn new(slots: u64) -> Self {
        assert!(slots.is_power_of_two());
        Self {
            mem: SharedAnon::new(256 + slots as usize * RAW_SLOT_BYTES),
            slots,
        }
    }

    fn control(&self) -> &RawControl {
        // SAFETY: the control block is the first 256 bytes of the page-aligned mapping.
        unsafe { &*(self.mem.as_ptr() as *const RawControl) }
    }

    /// The producing end (one at a time).
    ///
    /// ```
    /// let r = agentwire_benches::RawRing::new(64);
    /// let _p = r.producer();
    /// ```
    pub fn producer(&self) -> RawProducer<'_> {
        RawProducer {
            ring: self,
            tail: self.control().tail.0.load(Ordering::Acquire),
            cached_head: 0,
        }
    }

    /// The consuming end (one at a time).
    ///
    /// ```
    /// let r = agentwire_benches::RawRing::new(64);
    /// let _c = r.consumer();
    /// ```
    pub fn consumer(&self) -> RawConsumer<'_> {
        RawConsumer {
            ring: self,
            head: self.control().head.0.load(Ordering::Acquire),
            cached_tail: 0,
        }
    }

    fn slot(&self, position: u64) -> *mut u8 {
        // SAFETY: the masked index addresses a slot inside the mapping.
        unsafe {
            self.mem
                .as_ptr()
                .add(256 + (position & (self.slots - 1)) as usize * RAW_SLOT_BYTES)
        }
    }
}

/// Producing end of a [`RawRing`].
pub struct RawProducer<'a> {
    ring: &'a RawRing,
    tail: u64,
    cached_head: u64,
}

impl RawProducer<'_> {
    /// Writes `n` slots with `fill(slot, i)` and publishes them with one release store;
    /// false if there is no room for all `n`.
    ///
    /// ```
    /// let r = agentwire_benches::RawRing::new(64);
    /// assert!(r.producer().push_batch(4, |s, i| s[0] = i as u8));
    /// ```
    #[inline]
    pub fn push_batch(&mut self, n: u64, mut fill: impl FnMut(&mut [u8], u64)) -> bool {
        if self.tail + n - self.cached_head > self.ring.slots {
            self.cached_head = self.ring.control().head.0.load(Ordering::Acquire);
            if self.tail + n - self.cached_head > self.ring.slots {
                return false;
            }
        }
        for i in 0..n {
            // SAFETY: the slot is free (between tail and head + slots) and only we write it.
            let slot = unsafe {
                std::slice::from_raw_parts_mut(self.ring.slot(self.tail + i), RAW_SLOT_BYTES)
            };
            fill(slot, i);
        }
        self.tail += n;
        self.ring
            .control()
            .tail
            .0
            .store(self.tail, Ordering::Release);
        true
    }
}

/// Consuming end of a [`RawRing`].
pub struct RawConsumer<'a> {
    ring: &'a RawRing,
    head: u64,
    cached_tail: u64,
}

impl RawConsumer<'_> {
    /// Reads up to `max` slots with `read(slot)`, releases them with one store; returns the
    /// number read.
    ///
    /// ```
    /// let r = agentwire_benches::RawRing::new(64);
    /// assert_eq!(r.consumer().pop_batch(8, |_| {}), 0);
    /// ```
    #[inline]
    pub fn pop_batch(&mut self, max: u64, mut read: impl FnMut(&[u8])) -> u64 {
        if self.head == self.cached_tail {
            self.cached_tail = self.ring.control().tail.0.load(Ordering::Acquire);
        }
        let n = (self.cached_tail - self.head).min(max);
        for i in 0..n {
            // SAFETY: the slot is below the acquired tail, fully written, not yet released.
            let slot = unsafe {
                std::slice::from_raw_parts(self.ring.slot(self.head + i), RAW_SLOT_BYTES)
            };
            read(slot);
        }
        if n > 0 {
            self.head += n;
            self.ring
                .control()
                .head
                .0
                .store(self.head, Ordering::Release);
        }
        n
    }
}
