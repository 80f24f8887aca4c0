//! A lock-free single-producer/single-consumer ring of variable-length, 8-byte aligned
//! records (Aeron/Chronicle style): no fixed slot size, a padding record at wrap.
//!
//! Layout of one ring in shared memory (a written contract, asserted below):
//!
//! ```text
//! offset 0    tail_position  u64   producer-written, 128-byte block of its own
//! offset 128  head_position  u64   consumer-written, 128-byte block of its own
//! offset 256  consumer_parked u32  consumer-written park flag, 128-byte block of its own
//! offset 260  producer_wake_protocol u32   written by a producer with a doorbell at attach
//! offset 384  data[capacity]       records: [length_bytes u32][record_type u32][body ...]
//! ```
//!
//! Positions are monotonic `u64` byte counts (never wrap in practice: 2^64 bytes); the index
//! in the data area is `position & (capacity - 1)`. A record's `length_bytes` counts its
//! 8-byte header plus body; it occupies `align8(length_bytes)` bytes. A record never crosses
//! the end of the data area: when the next one does not fit, the producer writes a padding
//! record up to the end and starts again at index 0.
//!
//! Visibility is carried by the tail alone: the producer writes records (header and body)
//! with plain stores, then publishes them with one release store of `tail_position`; the
//! consumer acquires the tail and never reads past it. So a frame is never visible before
//! commit, never torn, and a producer killed mid-frame leaves only unpublished bytes that the
//! next producer overwrites. Both sides cache the other's position and only reload it when
//! the cached value says the ring is full (producer) or empty (consumer).
//!
//! ```
//! use agentwire_shm::ring::ring_pair;
//! use std::ops::ControlFlow;
//! let (mut tx, mut rx) = ring_pair(4096, false).unwrap();
//! let mut claim = tx.claim(5).unwrap();
//! claim.bytes_mut().copy_from_slice(b"hello");
//! claim.commit();
//! let mut seen = Vec::new();
//! rx.read(32, |frame| { seen.push(frame.to_vec()); ControlFlow::Continue(()) }).unwrap();
//! assert_eq!(seen, vec![b"hello".to_vec()]);
//! ```

use crate::doorbell::Doorbell;
use core::mem::{offset_of, size_of};
use core::ops::ControlFlow;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of the ring control block that precedes the data area.
pub const RING_CONTROL_BYTES: usize = 384;
/// Bytes of each record's header (`length_bytes u32`, `record_type u32`).
pub const RECORD_HEADER_BYTES: usize = 8;
/// Record alignment in bytes.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Smallest allowed data capacity in bytes.
pub const RING_CAPACITY_MIN_BYTES: usize = 1024;
/// Largest allowed data capacity in bytes (1 GiB).
pub const RING_CAPACITY_MAX_BYTES: usize = 1 << 30;

/// Wake protocol: the producer publishes with a SeqCst swap and loads the park flag (a full
/// barrier on every publish).
pub const WAKE_FENCED: u32 = 1;
/// Wake protocol: the producer's process is registered for `membarrier` global expedited; it
/// publishes with a release store and loads the park flag, and a parking consumer issues the
/// global barrier instead.
pub const WAKE_ASYMMETRIC: u32 = 2;

const RECORD_DATA: u32 = 1;
const RECORD_PADDING: u32 = 2;

/// A value alone on two cache lines, against false sharing and the adjacent-line prefetcher.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

/// The ring's control block as it lies in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingControl {
    /// Position just past the last published record. SYNC POINT: tail.
    pub tail_position: CachePadded<AtomicU64>,
    /// Position just past the last released record. SYNC POINT: head.
    pub head_position: CachePadded<AtomicU64>,
    /// Park flag and wake protocol. SYNC POINT: park.
    pub park: CachePadded<ParkWords>,
}

/// The words of the park block.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ParkWords {
    /// 1 while the consumer is parked (or about to park) on its doorbell.
    pub consumer_parked: AtomicU32,
    /// [`WAKE_FENCED`] or [`WAKE_ASYMMETRIC`]; 0 until a producer with a doorbell attaches.
    pub producer_wake_protocol: AtomicU32,
}

const _: () = assert!(size_of::<RingControl>() == RING_CONTROL_BYTES);
const _: () = assert!(offset_of!(RingControl, tail_position) == 0);
const _: () = assert!(offset_of!(RingControl, head_position) == 128);
const _: () = assert!(offset_of!(RingControl, park) == 256);
const _: () = assert!(offset_of!(ParkWords, producer_wake_protocol) == 4);

/// Rounds `n` up to the record alignment.
///
/// ```
/// assert_eq!(agentwire_shm::ring::align8(9), 16);
/// ```
#[inline]
pub const fn align8(n: usize) -> usize {
    (n + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// Bytes a ring of `capacity_bytes` occupies in a segment (control block plus data).
///
/// ```
/// assert_eq!(agentwire_shm::ring::ring_bytes(4096), 384 + 4096);
/// ```
pub const fn ring_bytes(capacity_bytes: usize) -> usize {
    RING_CONTROL_BYTES + capacity_bytes
}

/// Errors about a ring's shape, given at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingConfigError {
    /// The capacity is not a power of two within bounds. It is part of the cross-process
    /// contract, so it is rejected, never rounded.
    #[error(
        "ring capacity {capacity_bytes} bytes must be a power of two between \
         {RING_CAPACITY_MIN_BYTES} and {RING_CAPACITY_MAX_BYTES}"
    )]
    BadCapacity {
        /// Capacity asked for.
        capacity_bytes: usize,
    },
    /// The memory is not 128-byte aligned.
    #[error("ring memory at {address:#x} is not 128-byte aligned")]
    Misaligned {
        /// Address given.
        address: usize,
    },
    /// Anonymous memory could not be mapped.
    #[error("mapping ring memory: {0}")]
    Map(String),
}

/// Checks that `capacity_bytes` is a valid ring capacity.
///
/// ```
/// use agentwire_shm::ring::check_capacity;
/// assert!(check_capacity(4096).is_ok());
/// assert!(check_capacity(5000).is_err());
/// ```
pub fn check_capacity(capacity_bytes: usize) -> Result<(), RingConfigError> {
    if capacity_bytes.is_power_of_two()
        && (RING_CAPACITY_MIN_BYTES..=RING_CAPACITY_MAX_BYTES).contains(&capacity_bytes)
    {
        Ok(())
    } else {
        Err(RingConfigError::BadCapacity { capacity_bytes })
    }
}

/// A handle on one ring's memory, keeping the mapping that holds it alive.
#[derive(Clone)]
pub struct RingMemory {
    control: NonNull<RingControl>,
    data: NonNull<u8>,
    capacity_bytes: usize,
    _keepalive: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the memory is shared between processes by design; all cross-thread access goes
// through the atomics in `RingControl` and the producer/consumer protocol described above.
unsafe impl Send for RingMemory {}

impl std::fmt::Debug for RingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMemory")
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

impl RingMemory {
    /// Wraps ring memory at `base` (control block, then `capacity_bytes` of data).
    ///
    /// # Safety
    /// `base` must point to at least [`ring_bytes`]`(capacity_bytes)` bytes of readable and
    /// writable memory that stays mapped while `keepalive` lives, and at most one producer
    /// and one consumer may be built over it at a time.
    ///
    /// ```
    /// use agentwire_shm::ring::{ring_bytes, RingMemory};
    /// let map = std::sync::Arc::new(memmap2::MmapMut::map_anon(ring_bytes(4096)).unwrap());
    /// let base = map.as_ptr() as *mut u8;
    /// // SAFETY: the anonymous map is large enough and lives in the Arc.
    /// let mem = unsafe { RingMemory::from_raw(base, 4096, map) }.unwrap();
    /// assert_eq!(mem.capacity_bytes(), 4096);
    /// ```
    pub unsafe fn from_raw(
        base: *mut u8,
        capacity_bytes: usize,
        keepalive: Arc<dyn Any + Send + Sync>,
    ) -> Result<Self, RingConfigError> {
        check_capacity(capacity_bytes)?;
        if base as usize % 128 != 0 {
            return Err(RingConfigError::Misaligned {
                address: base as usize,
            });
        }
        let control = NonNull::new(base.cast::<RingControl>())
            .ok_or(RingConfigError::Misaligned { address: 0 })?;
        // SAFETY: the caller guarantees `ring_bytes(capacity)` bytes at `base`.
        let data = unsafe { NonNull::new_unchecked(base.add(RING_CONTROL_BYTES)) };
        Ok(Self {
            control,
            data,
            capacity_bytes,
            _keepalive: keepalive,
        })
    }

    /// Data capacity in bytes.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(2048, false).unwrap();
    /// assert_eq!(tx.capacity_bytes(), 2048);
    /// ```
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes published and not yet released, read from shared memory by any observer (a
    /// snapshot for gauges such as `agentwire status`; neither end is disturbed).
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(&[0; 8]).unwrap();
    /// assert_eq!(tx.memory().occupied_bytes(), 16);
    /// ```
    pub fn occupied_bytes(&self) -> usize {
        let c = self.control();
        // SYNC POINT: head, then tail (a tail read last is never behind the head read).
        let head = c.head_position.0.load(Ordering::Acquire);
        let tail = c.tail_position.0.load(Ordering::Acquire);
        (tail.saturating_sub(head) as usize).min(self.capacity_bytes)
    }

    /// `(head, tail)` positions in bytes since the ring was created, read by an observer
    /// (the daemon's liveness check sees an agent's rings move).
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(&[0; 8]).unwrap();
    /// assert_eq!(tx.memory().positions(), (0, 16));
    /// ```
    pub fn positions(&self) -> (u64, u64) {
        let c = self.control();
        (
            c.head_position.0.load(Ordering::Acquire),
            c.tail_position.0.load(Ordering::Acquire),
        )
    }

    /// Resets positions and flags. Only the creator of a fresh ring calls this.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(2048, false).unwrap();
    /// tx.memory().reset();
    /// ```
    pub fn reset(&self) {
        let c = self.control();
        c.tail_position.0.store(0, Ordering::Relaxed);
        c.head_position.0.store(0, Ordering::Relaxed);
        c.park.0.consumer_parked.store(0, Ordering::Relaxed);
        c.park.0.producer_wake_protocol.store(0, Ordering::Relaxed);
    }

    fn control(&self) -> &RingControl {
        // SAFETY: `from_raw`'s contract: the control block is mapped while we live, and it
        // is only accessed through atomics.
        unsafe { self.control.as_ref() }
    }

    /// Writes a record header at `index` (plain stores; published later by the tail).
    fn write_record_header(&self, index: usize, length_bytes: u32, record_type: u32) {
        debug_assert!(index + RECORD_HEADER_BYTES <= self.capacity_bytes);
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[..4].copy_from_slice(&length_bytes.to_le_bytes());
        header[4..].copy_from_slice(&record_type.to_le_bytes());
        // SAFETY: index is 8-aligned and at least 8 bytes from the end (records are 8-aligned
        // and capacity is a multiple of 8); the producer owns [tail, head + capacity).
        unsafe {
            core::ptr::copy_nonoverlapping(header.as_ptr(), self.data.as_ptr().add(index), 8)
        };
    }

    /// Reads a record header at `index`.
    fn read_record_header(&self, index: usize) -> (u32, u32) {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        // SAFETY: index + 8 <= capacity (8-aligned index in a multiple-of-8 area); the
        // consumer only reads published records below the acquired tail.
        unsafe {
            core::ptr::copy_nonoverlapping(self.data.as_ptr().add(index), header.as_mut_ptr(), 8)
        };
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let kind = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        (length, kind)
    }
}

/// Allocates an in-process ring in anonymous memory and returns both ends.
///
/// With `doorbell`, the consumer can park on an eventfd and the producer wakes it.
///
/// ```
/// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
/// tx.try_push(b"x").unwrap();
/// assert_eq!(rx.read(1, |_| std::ops::ControlFlow::Continue(())).unwrap(), 1);
/// ```
pub fn ring_pair(
    capacity_bytes: usize,
    doorbell: bool,
) -> Result<(Producer, Consumer), RingConfigError> {
    check_capacity(capacity_bytes)?;
    let map = memmap2::MmapMut::map_anon(ring_bytes(capacity_bytes))
        .map_err(|e| RingConfigError::Map(e.to_string()))?;
    let base = map.as_ptr() as *mut u8;
    // SAFETY: the anonymous map has ring_bytes(capacity) bytes, page-aligned, and the Arc
    // keeps it mapped for both ends.
    let memory = unsafe { RingMemory::from_raw(base, capacity_bytes, Arc::new(map)) }?;
    memory.reset();
    let bell = if doorbell {
        Some(Doorbell::new().map_err(|e| RingConfigError::Map(e.to_string()))?)
    } else {
        None
    };
    let consumer_bell = match &bell {
        Some(b) => Some(
            b.try_clone()
                .map_err(|e| RingConfigError::Map(e.to_string()))?,
        ),
        None => None,
    };
    Ok((
        Producer::new(memory.clone(), bell),
        Consumer::new(memory, consumer_bell),
    ))
}

/// Why a claim failed. The producer keeps everything it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Not enough free space now; retry after the consumer releases.
    #[error("ring full: {needed_bytes} bytes needed, {free_bytes} free")]
    Full {
        /// Bytes the record needs (with padding at wrap).
        needed_bytes: usize,
        /// Bytes free now.
        free_bytes: usize,
    },
    /// The frame can never fit: larger than a quarter of the capacity.
    #[error("frame of {len_bytes} bytes exceeds the ring's {max_bytes}-byte frame limit")]
    TooLarge {
        /// Length asked for.
        len_bytes: usize,
        /// Largest frame this ring takes.
        max_bytes: usize,
    },
}

/// The writing end of a ring. `Send` so it can be handed to the thread that owns it.
#[derive(Debug)]
pub struct Producer {
    memory: RingMemory,
    /// Position after the last committed record (published or not).
    tail_position: u64,
    /// Position last stored to `tail_position` in shared memory.
    published_position: u64,
    /// Last head seen; only reloaded when the ring looks full.
    cached_head_position: u64,
    mask: u64,
    frame_bytes_max: usize,
    doorbell: Option<Doorbell>,
    wake_protocol: u32,
    wakeups: u64,
    /// Wall-clock ns spent ringing the doorbell (the syscall that wakes the consumer).
    wake_ns: u64,
    /// The consumer's head was once out of range (`head > published tail` or more than a
    /// capacity behind): the ring reads as full from then on ([`Producer::is_corrupt`]).
    corrupt: bool,
}

impl Producer {
    /// Attaches a producer to ring memory. It resumes from the published tail, so a producer
    /// that replaces a killed one continues where the last commit left off.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// let again = agentwire_shm::ring::Producer::new(tx.memory().clone(), None);
    /// assert_eq!(again.frame_bytes_max(), 1024 - 8);
    /// ```
    ///
    /// With a doorbell it publishes with the asymmetric wake protocol where this process can
    /// register for it (see [`WAKE_ASYMMETRIC`]), else the fenced one. Use it where the
    /// consumer rarely parks (the daemon draining an agent's tx ring): each time a consumer
    /// of an asymmetric ring goes to sleep it interrupts every CPU running a registered
    /// process. Where the consumer parks often (an agent's rx ring), use [`Producer::new_fenced`].
    pub fn new(memory: RingMemory, doorbell: Option<Doorbell>) -> Self {
        Self::attach(memory, doorbell, true)
    }

    /// Attaches a producer that publishes with the fenced wake protocol (a SeqCst swap per
    /// publish; cheap when publishing in batches). Its consumer parks without any
    /// cross-process barrier, so agents that sleep often never disturb other cores.
    ///
    /// ```
    /// use agentwire_shm::ring::{ring_pair, Producer, WAKE_FENCED};
    /// let (tx, _rx) = ring_pair(4096, true).unwrap();
    /// # let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
    /// let fenced = Producer::new_fenced(tx.memory().clone(), Some(bell));
    /// assert_eq!(fenced.wake_protocol(), WAKE_FENCED);
    /// ```
    pub fn new_fenced(memory: RingMemory, doorbell: Option<Doorbell>) -> Self {
        Self::attach(memory, doorbell, false)
    }

    // Out of line on purpose: when this attach-time constructor was inlined into a caller
    // that also runs the per-frame loop, that loop ran ~3x slower (64 B batch 1: 117 -> 35 M
    // frames/s; 1 KiB: 23 -> 14; ring_throughput bench, 2026-11-21). Attach is cold; the
    // caller's hot loop keeps stable code generation.
    #[inline(never)]
    fn attach(memory: RingMemory, doorbell: Option<Doorbell>, prefer_asymmetric: bool) -> Self {
        let c = memory.control();
        // SYNC POINT: tail (a predecessor's last publish).
        let tail = c.tail_position.0.load(Ordering::Acquire);
        // SYNC POINT: head
        let head = c.head_position.0.load(Ordering::Acquire);
        let capacity = memory.capacity_bytes;
        let wake_protocol = match doorbell {
            None => 0,
            Some(_) if prefer_asymmetric && crate::doorbell::asymmetric_producer_registered() => {
                WAKE_ASYMMETRIC
            }
            Some(_) => WAKE_FENCED,
        };
        if wake_protocol != 0 {
            c.park
                .0
                .producer_wake_protocol
                .store(wake_protocol, Ordering::SeqCst);
        }
        Self {
            wake_protocol,
            tail_position: tail,
            published_position: tail,
            cached_head_position: head,
            mask: capacity as u64 - 1,
            frame_bytes_max: capacity / 4 - RECORD_HEADER_BYTES,
            memory,
            doorbell,
            wakeups: 0,
            wake_ns: 0,
            corrupt: false,
        }
    }

    /// The ring memory this producer writes.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(tx.memory().capacity_bytes(), 4096);
    /// ```
    pub fn memory(&self) -> &RingMemory {
        &self.memory
    }

    /// Data capacity in bytes.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(tx.capacity_bytes(), 4096);
    /// ```
    pub fn capacity_bytes(&self) -> usize {
        self.memory.capacity_bytes
    }

    /// Largest frame body this ring accepts (a quarter of capacity, less the record header).
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(tx.frame_bytes_max(), 1016);
    /// ```
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// How many times this producer rang the consumer's doorbell.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// assert_eq!(tx.wakeups(), 0);
    /// ```
    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    /// Wall-clock nanoseconds this producer spent ringing the consumer's doorbell, all told
    /// (two clock reads around each ring, which is a syscall; nothing on a publish that
    /// finds the consumer awake).
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// assert_eq!(tx.wake_ns(), 0);
    /// ```
    pub fn wake_ns(&self) -> u64 {
        self.wake_ns
    }

    /// Claims room for a frame of `len_bytes`. The returned guard gives a writable slice in
    /// the ring; it commits with [`Claim::commit`] or aborts when dropped.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// let mut c = tx.claim(3).unwrap();
    /// c.bytes_mut().copy_from_slice(b"abc");
    /// c.commit();
    /// ```
    #[inline]
    pub fn claim(&mut self, len_bytes: usize) -> Result<Claim<'_>, ClaimError> {
        if len_bytes > self.frame_bytes_max {
            return Err(ClaimError::TooLarge {
                len_bytes,
                max_bytes: self.frame_bytes_max,
            });
        }
        let record_bytes = align8(RECORD_HEADER_BYTES + len_bytes) as u64;
        let capacity = self.memory.capacity_bytes as u64;
        let index = self.tail_position & self.mask;
        let to_end = capacity - index;
        let needed = if record_bytes <= to_end {
            record_bytes
        } else {
            to_end + record_bytes
        };
        if self.tail_position + needed - self.cached_head_position > capacity {
            self.reload_head();
            if self.tail_position + needed - self.cached_head_position > capacity {
                return Err(ClaimError::Full {
                    needed_bytes: needed as usize,
                    free_bytes: (capacity - (self.tail_position - self.cached_head_position))
                        as usize,
                });
            }
        }
        let mut index = index as usize;
        if record_bytes > to_end {
            // The record would cross the end: pad to the end and start at index 0.
            self.memory
                .write_record_header(index, to_end as u32, RECORD_PADDING);
            self.tail_position += to_end;
            index = 0;
        }
        Ok(Claim {
            producer: self,
            index,
            len_bytes,
        })
    }

    /// Whether a frame of `len_bytes` could be claimed now (reloads the head if needed).
    /// Used to deliver a fan-out to all destinations or to none.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert!(tx.can_claim(100));
    /// assert!(!tx.can_claim(5000));
    /// ```
    pub fn can_claim(&mut self, len_bytes: usize) -> bool {
        if len_bytes > self.frame_bytes_max {
            return false;
        }
        let record_bytes = align8(RECORD_HEADER_BYTES + len_bytes) as u64;
        let capacity = self.memory.capacity_bytes as u64;
        let to_end = capacity - (self.tail_position & self.mask);
        let needed = if record_bytes <= to_end {
            record_bytes
        } else {
            to_end + record_bytes
        };
        if self.tail_position + needed - self.cached_head_position <= capacity {
            return true;
        }
        self.reload_head();
        self.tail_position + needed - self.cached_head_position <= capacity
    }

    /// Reloads the consumer's head, which the consumer (another process, untrusted) writes.
    /// A head past the published tail or more than a capacity behind it is never used: the
    /// cached head stays where it was (so the ring reads as full) and the producer is marked
    /// corrupt for its owner to drop the consumer.
    #[cold]
    #[inline(never)]
    fn reload_head(&mut self) {
        // SYNC POINT: head (pairs with the consumer's release; the bytes below the new head
        // are no longer read, so we may overwrite them).
        let head = self
            .memory
            .control()
            .head_position
            .0
            .load(Ordering::Acquire);
        let capacity = self.memory.capacity_bytes as u64;
        if head > self.published_position || self.tail_position - head > capacity {
            self.corrupt = true;
            return;
        }
        self.cached_head_position = head;
    }

    /// Whether the consumer ever published a head out of range (see the ring's checks):
    /// the ring refuses every claim that needs a fresh head, and the owner should drop the
    /// consumer.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert!(!tx.is_corrupt());
    /// ```
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    /// Bytes committed and not yet released by the consumer (reloads the consumer's head:
    /// one read of a line the consumer writes). The router compares destinations by this to
    /// pick the least-loaded one.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(&[0; 8]).unwrap();
    /// assert_eq!(tx.occupied_bytes(), 16);
    /// ```
    pub fn occupied_bytes(&mut self) -> usize {
        self.reload_head();
        (self.tail_position - self.cached_head_position) as usize
    }

    /// Copies `frame` into the ring and publishes it.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"frame").unwrap();
    /// ```
    #[inline]
    pub fn try_push(&mut self, frame: &[u8]) -> Result<(), ClaimError> {
        let mut claim = self.claim(frame.len())?;
        claim.bytes_mut().copy_from_slice(frame);
        claim.commit();
        Ok(())
    }

    /// Whether records were committed since the last [`Producer::publish`] (the next one
    /// will make them visible).
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.claim(8).unwrap().commit_deferred();
    /// assert!(tx.has_unpublished());
    /// tx.publish();
    /// assert!(!tx.has_unpublished());
    /// ```
    #[inline]
    pub fn has_unpublished(&self) -> bool {
        self.published_position != self.tail_position
    }

    /// Publishes every record committed with [`Claim::commit_deferred`] in one release store,
    /// then rings the doorbell if the consumer is parked.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// for _ in 0..3 { tx.claim(8).unwrap().commit_deferred(); }
    /// assert_eq!(rx.read(8, |_| std::ops::ControlFlow::Continue(())).unwrap(), 0);
    /// tx.publish();
    /// assert_eq!(rx.read(8, |_| std::ops::ControlFlow::Continue(())).unwrap(), 3);
    /// ```
    #[inline]
    pub fn publish(&mut self) {
        if self.published_position == self.tail_position {
            return;
        }
        self.published_position = self.tail_position;
        let control = self.memory.control();
        if self.doorbell.is_none() {
            // SYNC POINT: tail. Release is enough: the consumer acquires the tail before it
            // reads any record below it, and no consumer parks on a ring without a doorbell.
            control
                .tail_position
                .0
                .store(self.tail_position, Ordering::Release);
            return;
        }
        self.publish_and_wake();
    }

    /// Publish for a ring whose consumer may park. Kept out of line so that the spin-only
    /// publish above stays small enough to inline into per-frame loops: with this body
    /// inlined, 64-byte batch-1 throughput fell from ~117 to ~35 M/s (benches, 2026-11-21).
    #[inline(never)]
    fn publish_and_wake(&mut self) {
        let control = self.memory.control();
        // SYNC POINT: tail + park. A parking consumer stores its flag then loads the tail; we
        // store the tail then load the flag (Dekker). Some full barrier must separate store
        // and load on both sides, or each could miss the other and the consumer would sleep
        // on a published frame.
        let parked = if self.wake_protocol == WAKE_ASYMMETRIC {
            // The consumer pays: it issues membarrier(GLOBAL_EXPEDITED) between its flag store
            // and its tail load, which runs a full barrier on this CPU if we are running (and a
            // context switch is one if we are not). So the fast path is a release store, a
            // compiler fence to keep the load after the store, and one flag load.
            control
                .tail_position
                .0
                .store(self.tail_position, Ordering::Release);
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            control.park.0.consumer_parked.load(Ordering::Relaxed)
        } else {
            // No asymmetric barrier available: a SeqCst swap is the barrier (one locked
            // instruction on x86; ~4x slower than a release store at batch 1).
            control
                .tail_position
                .0
                .swap(self.tail_position, Ordering::SeqCst);
            control.park.0.consumer_parked.load(Ordering::SeqCst)
        };
        if parked != 0 {
            self.wakeups += 1;
            if let Some(bell) = &self.doorbell {
                let started = std::time::Instant::now();
                bell.ring();
                let ns = started.elapsed().as_nanos();
                self.wake_ns = self
                    .wake_ns
                    .saturating_add(u64::try_from(ns).unwrap_or(u64::MAX));
            }
        }
    }

    /// Switches an attached producer to the fenced wake protocol, keeping its doorbell: for
    /// tests and benchmarks that compare the protocols on one ring pair. Production code
    /// picks at attach time with [`Producer::new`] or [`Producer::new_fenced`].
    ///
    /// ```
    /// use agentwire_shm::ring::{ring_pair, WAKE_FENCED};
    /// let (tx, _rx) = ring_pair(4096, true).unwrap();
    /// assert_eq!(tx.with_fenced_wake().wake_protocol(), WAKE_FENCED);
    /// ```
    pub fn with_fenced_wake(mut self) -> Self {
        if self.doorbell.is_some() {
            self.wake_protocol = WAKE_FENCED;
            let park = &self.memory.control().park.0;
            park.producer_wake_protocol
                .store(WAKE_FENCED, Ordering::SeqCst);
        }
        self
    }

    /// The wake protocol this producer publishes with: 0 (no doorbell), [`WAKE_FENCED`] or
    /// [`WAKE_ASYMMETRIC`].
    ///
    /// ```
    /// let (tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(tx.wake_protocol(), 0);
    /// ```
    pub fn wake_protocol(&self) -> u32 {
        self.wake_protocol
    }

    /// Bytes of committed but not yet published records.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.claim(8).unwrap().commit_deferred();
    /// assert_eq!(tx.unpublished_bytes(), 16);
    /// ```
    pub fn unpublished_bytes(&self) -> usize {
        (self.tail_position - self.published_position) as usize
    }
}

/// A claimed region of the ring. Commit it, or drop it to abort: the region is never left
/// dangling and nothing of it becomes visible without a commit.
#[derive(Debug)]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    index: usize,
    len_bytes: usize,
}

impl<'a> Claim<'a> {
    /// The writable frame body, `len_bytes` long, 8-byte aligned.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// let mut c = tx.claim(16).unwrap();
    /// assert_eq!(c.bytes_mut().len(), 16);
    /// assert_eq!(c.bytes_mut().as_ptr() as usize % 8, 0);
    /// ```
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let start = self.index + RECORD_HEADER_BYTES;
        // SAFETY: `claim` checked that [index, index + align8(8 + len)) lies inside the data
        // area and is free (between the tail and the released head), so only this guard,
        // which borrows the producer mutably, may touch it.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.producer.memory.data.as_ptr().add(start),
                self.len_bytes,
            )
        }
    }

    /// Commits and publishes the frame now.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.claim(1).unwrap().commit();
    /// assert_eq!(rx.read(1, |_| std::ops::ControlFlow::Continue(())).unwrap(), 1);
    /// ```
    #[inline]
    pub fn commit(self) {
        let len_bytes = self.len_bytes;
        let producer = self.commit_inner(len_bytes);
        producer.publish();
    }

    /// Commits the frame; it becomes visible at the next [`Producer::publish`], so a batch
    /// costs one release store.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.claim(1).unwrap().commit_deferred();
    /// tx.publish();
    /// ```
    #[inline]
    pub fn commit_deferred(self) {
        let len_bytes = self.len_bytes;
        self.commit_inner(len_bytes);
    }

    /// Commits only the first `len_bytes` of the claim (for writers that claim a maximum and
    /// learn the real size while writing) and publishes.
    ///
    /// # Panics
    /// If `len_bytes` exceeds the claimed length (a caller bug).
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// let mut c = tx.claim(100).unwrap();
    /// c.bytes_mut()[..2].copy_from_slice(b"ok");
    /// c.commit_len(2);
    /// rx.read(1, |f| { assert_eq!(f, b"ok"); std::ops::ControlFlow::Continue(()) }).unwrap();
    /// ```
    pub fn commit_len(self, len_bytes: usize) {
        assert!(len_bytes <= self.len_bytes, "commit_len beyond the claim");
        let producer = self.commit_inner(len_bytes);
        producer.publish();
    }

    /// Aborts the claim explicitly (the same as dropping it).
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.claim(8).unwrap().abort();
    /// tx.publish();
    /// assert_eq!(rx.read(1, |_| std::ops::ControlFlow::Continue(())).unwrap(), 0);
    /// ```
    pub fn abort(self) {}

    /// Writes the record header and advances the local tail; returns the producer.
    #[inline]
    fn commit_inner(self, len_bytes: usize) -> &'a mut Producer {
        // `Claim` has no `Drop` (dropping aborts by doing nothing), so it can be taken apart.
        let Claim {
            producer, index, ..
        } = self;
        let length = (RECORD_HEADER_BYTES + len_bytes) as u32;
        producer
            .memory
            .write_record_header(index, length, RECORD_DATA);
        producer.tail_position += align8(length as usize) as u64;
        producer
    }
}

/// A ring's contents broke the record protocol: the producer is buggy or hostile. The
/// consumer stops at the bad record; its owner should drop the ring's producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A record or the tail broke the layout contract.
    #[error("ring corrupt at position {position}: {reason}")]
    Corrupt {
        /// Position of the bad record (or head, for a bad tail).
        position: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// How far past the head a consumer prefetches published records: 8 cache lines, about
/// what one core's line-fill buffers keep in flight, covering four routed 64-byte frames.
///
/// ```
/// assert_eq!(agentwire_shm::ring::PREFETCH_AHEAD_BYTES % 64, 0);
/// ```
pub const PREFETCH_AHEAD_BYTES: u64 = 512;

const CACHE_LINE_BYTES: u64 = 64;

/// Hints the CPU to bring the line holding `address` into L1 (a no-op on targets without a
/// prefetch instruction here).
#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and has no architectural effect; SSE is baseline on
    // x86_64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer {
    memory: RingMemory,
    head_position: u64,
    cached_tail_position: u64,
    mask: u64,
    doorbell: Option<Doorbell>,
    poisoned: Option<RingError>,
    /// Our park flag is set in shared memory. It stays set across timed-out parks and is
    /// cleared when frames are taken, so a consumer pays at most one barrier per busy-to-idle
    /// transition, not one per park timeout.
    park_flag_set: bool,
    /// Published bytes below this position have had their cache lines prefetched.
    prefetched_position: u64,
}

impl Consumer {
    /// Attaches a consumer to ring memory, resuming from the released head.
    ///
    /// ```
    /// let (_tx, rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// let again = agentwire_shm::ring::Consumer::new(rx.memory().clone(), None);
    /// assert_eq!(again.capacity_bytes(), 4096);
    /// ```
    // Out of line for the same reason as `Producer::new`.
    #[inline(never)]
    pub fn new(memory: RingMemory, doorbell: Option<Doorbell>) -> Self {
        // SYNC POINT: head
        let head = memory.control().head_position.0.load(Ordering::Acquire);
        Self {
            head_position: head,
            cached_tail_position: head,
            mask: memory.capacity_bytes as u64 - 1,
            memory,
            doorbell,
            poisoned: None,
            park_flag_set: false,
            prefetched_position: head,
        }
    }

    /// The ring memory this consumer reads.
    ///
    /// ```
    /// let (_tx, rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(rx.memory().capacity_bytes(), 4096);
    /// ```
    pub fn memory(&self) -> &RingMemory {
        &self.memory
    }

    /// Data capacity in bytes.
    ///
    /// ```
    /// let (_tx, rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert_eq!(rx.capacity_bytes(), 4096);
    /// ```
    pub fn capacity_bytes(&self) -> usize {
        self.memory.capacity_bytes
    }

    /// Bytes published and not yet released (a snapshot).
    ///
    /// ```
    /// let (mut tx, rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(&[0; 8]).unwrap();
    /// assert_eq!(rx.occupied_bytes(), 16);
    /// ```
    pub fn occupied_bytes(&self) -> usize {
        // SYNC POINT: tail
        let tail = self
            .memory
            .control()
            .tail_position
            .0
            .load(Ordering::Acquire);
        tail.saturating_sub(self.head_position) as usize
    }

    /// Reloads the tail when the cached one is exhausted; validates it (the producer is in
    /// another process and may be hostile).
    #[inline]
    fn refresh_tail(&mut self) -> Result<bool, RingError> {
        if self.head_position != self.cached_tail_position {
            return Ok(true);
        }
        // SYNC POINT: tail (pairs with the producer's publish: all records below it are
        // fully written).
        let tail = self
            .memory
            .control()
            .tail_position
            .0
            .load(Ordering::Acquire);
        if tail < self.head_position
            || tail - self.head_position > self.memory.capacity_bytes as u64
        {
            return Err(self.poison(self.head_position, "tail out of range"));
        }
        self.cached_tail_position = tail;
        Ok(tail != self.head_position)
    }

    /// Asks for the cache lines of published records up to [`PREFETCH_AHEAD_BYTES`] past the
    /// head, so the misses on lines the producer's core just wrote overlap instead of
    /// stalling one record at a time.
    #[inline]
    fn prefetch_ahead(&mut self) {
        let until = self
            .cached_tail_position
            .min(self.head_position + PREFETCH_AHEAD_BYTES);
        let mut position = self
            .prefetched_position
            .max(self.head_position & !(CACHE_LINE_BYTES - 1));
        while position < until {
            let index = (position & self.mask) as usize;
            // SAFETY: `index` is inside the data area (masked by capacity - 1); a prefetch is
            // a hint that never faults and reads nothing into the program.
            prefetch_line(unsafe { self.memory.data.as_ptr().add(index) });
            position += CACHE_LINE_BYTES;
        }
        self.prefetched_position = position;
    }

    fn poison(&mut self, position: u64, reason: &'static str) -> RingError {
        let error = RingError::Corrupt { position, reason };
        self.poisoned = Some(error.clone());
        error
    }

    /// Checks the record at the head; returns (record_type, length_bytes, index).
    #[inline]
    fn next_record(&mut self) -> Result<(u32, usize, usize), RingError> {
        let index = (self.head_position & self.mask) as usize;
        let available = (self.cached_tail_position - self.head_position) as usize;
        let capacity = self.memory.capacity_bytes;
        if available < RECORD_HEADER_BYTES {
            return Err(self.poison(self.head_position, "partial record header below tail"));
        }
        let (length, kind) = self.memory.read_record_header(index);
        let length = length as usize;
        match kind {
            RECORD_PADDING if length == capacity - index && length <= available => {
                Ok((kind, length, index))
            }
            RECORD_DATA
                if length >= RECORD_HEADER_BYTES
                    && align8(length) <= available
                    && index + align8(length) <= capacity =>
            {
                Ok((kind, length, index))
            }
            RECORD_PADDING => Err(self.poison(self.head_position, "padding record of bad length")),
            RECORD_DATA => Err(self.poison(self.head_position, "data record length out of range")),
            _ => Err(self.poison(self.head_position, "unknown record type")),
        }
    }

    fn frame_slice(&self, index: usize, length: usize) -> &[u8] {
        // SAFETY: `next_record` checked the record lies inside the data area and below the
        // acquired tail, so the producer has finished writing it and will not reuse it until
        // we release the head past it.
        unsafe {
            core::slice::from_raw_parts(
                self.memory.data.as_ptr().add(index + RECORD_HEADER_BYTES),
                length - RECORD_HEADER_BYTES,
            )
        }
    }

    /// Reads up to `frames_max` frames in place, calling `on_frame` for each. Returning
    /// `Break` stops before consuming that frame (it is seen again next time). All consumed
    /// frames are released with one release store at the end. Returns the frames consumed.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"a").unwrap();
    /// tx.try_push(b"b").unwrap();
    /// assert_eq!(rx.read(8, |_| ControlFlow::Break(())).unwrap(), 0);
    /// assert_eq!(rx.read(8, |_| ControlFlow::Continue(())).unwrap(), 2);
    /// ```
    #[inline]
    pub fn read<F>(&mut self, frames_max: usize, mut on_frame: F) -> Result<usize, RingError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let start = self.head_position;
        let mut frames = 0;
        let mut result = Ok(());
        while frames < frames_max {
            match self.refresh_tail() {
                Ok(true) => self.prefetch_ahead(),
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let (kind, length, index) = match self.next_record() {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if kind == RECORD_PADDING {
                self.head_position += length as u64;
                continue;
            }
            if on_frame(self.frame_slice(index, length)).is_break() {
                break;
            }
            self.head_position += align8(length) as u64;
            frames += 1;
        }
        if self.head_position != start {
            // SYNC POINT: head (the producer may now overwrite everything below it).
            self.memory
                .control()
                .head_position
                .0
                .store(self.head_position, Ordering::Release);
        }
        if frames > 0 {
            self.clear_park_flag();
        }
        result.map(|()| frames)
    }

    /// Leaves the parked state after taking frames (see `park_flag_set`).
    #[inline]
    fn clear_park_flag(&mut self) {
        if self.park_flag_set {
            self.park_flag_set = false;
            // SYNC POINT: park. Relaxed is enough: a producer that still sees 1 rings once
            // more than needed, which costs it a write and us a spurious wake, nothing else.
            self.memory
                .control()
                .park
                .0
                .consumer_parked
                .store(0, Ordering::Relaxed);
        }
    }

    /// Peeks at the next frame without releasing it; the returned guard releases it on drop.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"hi").unwrap();
    /// let f = rx.peek().unwrap().unwrap();
    /// assert_eq!(f.bytes(), b"hi");
    /// drop(f);
    /// assert!(rx.peek().unwrap().is_none());
    /// ```
    pub fn peek(&mut self) -> Result<Option<FrameRef<'_>>, RingError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        loop {
            if !self.refresh_tail()? {
                return Ok(None);
            }
            self.prefetch_ahead();
            let (kind, length, index) = self.next_record()?;
            if kind == RECORD_PADDING {
                self.head_position += length as u64;
                continue;
            }
            self.clear_park_flag();
            return Ok(Some(FrameRef {
                consumer: self,
                index,
                length,
            }));
        }
    }

    /// True when nothing is published past the head.
    ///
    /// ```
    /// let (_tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&mut self) -> bool {
        !matches!(self.refresh_tail(), Ok(true))
    }

    /// Parks until the producer publishes or `timeout` passes; returns false if it timed out.
    /// Without a doorbell it sleeps for at most 50 µs (a ring without a doorbell is meant to be
    /// spun on) and returns false.
    ///
    /// The sleeper sets the flag, issues a full barrier, re-polls, then parks; the producer
    /// pays one flag load (see [`Producer::publish`]). The flag stays set until frames are
    /// taken, so repeated parks of an idle consumer cost no barrier after the first.
    ///
    /// ```
    /// let (_tx, mut rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// rx.park(std::time::Duration::from_millis(1));
    /// ```
    pub fn park(&mut self, timeout: Duration) -> bool {
        Self::park_all(std::slice::from_mut(self), timeout)
    }

    /// Parks until any of `consumers` has frames or `timeout` passes (false if it timed
    /// out). For rings whose producers share one doorbell (an agent's tx lanes): the parked
    /// flag is set on every ring, then one barrier covers them all, then every tail is
    /// checked, then the shared doorbell is waited on. Without a doorbell it sleeps for at
    /// most 50 µs and returns false.
    ///
    /// ```
    /// use agentwire_shm::ring::{ring_pair, Consumer};
    /// let (_a, a) = ring_pair(4096, true).unwrap();
    /// let (_b, b) = ring_pair(4096, true).unwrap();
    /// let mut lanes = [a, b];
    /// assert!(!Consumer::park_all(&mut lanes, std::time::Duration::from_millis(1)));
    /// ```
    pub fn park_all(consumers: &mut [Consumer], timeout: Duration) -> bool {
        if consumers.first().is_none_or(|c| c.doorbell.is_none()) {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
            return false;
        }
        if Self::arm_park(consumers) {
            crate::doorbell::asymmetric_barrier();
        }
        if Self::any_pending(consumers) {
            return true;
        }
        let bell = consumers[0].doorbell.as_ref().expect("checked above");
        bell.wait(timeout)
    }

    /// The first half of parking: tells each producer that its consumer is about to sleep
    /// (the flags stay set until `read`/`peek` take frames). Returns whether a producer may
    /// be on the asymmetric protocol, in which case the caller must issue
    /// [`crate::doorbell::asymmetric_barrier`] before looking at the tails with
    /// [`Consumer::any_pending`]. [`Consumer::park_all`] does all of this for one group; a
    /// router parking on many agents at once arms every group first.
    ///
    /// ```
    /// use agentwire_shm::ring::{ring_pair, Consumer};
    /// let (_tx, rx) = ring_pair(4096, true).unwrap();
    /// let mut lanes = [rx];
    /// let _barrier_needed = Consumer::arm_park(&mut lanes);
    /// assert!(!Consumer::any_pending(&lanes));
    /// ```
    pub fn arm_park(consumers: &mut [Consumer]) -> bool {
        let mut barrier_needed = false;
        for c in consumers.iter_mut() {
            if c.park_flag_set {
                continue;
            }
            let control = c.memory.control();
            // SYNC POINT: park (see Producer::publish for the pairing).
            control.park.0.consumer_parked.store(1, Ordering::SeqCst);
            // A producer on the asymmetric protocol needs the barrier to make its tail store
            // visible (or our flag visible to it) before we look at the tail. Once it has
            // run, the flags stay visible to every later publish for as long as they stay
            // set, so timed-out re-parks need no new barrier. A failure (seccomp) leaves the
            // park timeout as the bound on a missed wakeup.
            barrier_needed |=
                control.park.0.producer_wake_protocol.load(Ordering::SeqCst) != WAKE_FENCED;
            c.park_flag_set = true;
        }
        barrier_needed
    }

    /// Whether any of these rings holds frames not yet read (the second half of parking,
    /// after [`Consumer::arm_park`] and its barrier).
    ///
    /// ```
    /// let (mut tx, rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// tx.try_push(b"x").unwrap();
    /// assert!(agentwire_shm::ring::Consumer::any_pending(&[rx]));
    /// ```
    pub fn any_pending(consumers: &[Consumer]) -> bool {
        consumers
            .iter()
            .any(|c| c.memory.control().tail_position.0.load(Ordering::SeqCst) != c.head_position)
    }

    /// The doorbell this consumer parks on, if it has one.
    ///
    /// ```
    /// let (_tx, rx) = agentwire_shm::ring::ring_pair(4096, true).unwrap();
    /// assert!(rx.doorbell().is_some());
    /// ```
    pub fn doorbell(&self) -> Option<&Doorbell> {
        self.doorbell.as_ref()
    }

    /// Whether this consumer can park on a doorbell.
    ///
    /// ```
    /// let (_tx, rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// assert!(!rx.has_doorbell());
    /// ```
    pub fn has_doorbell(&self) -> bool {
        self.doorbell.is_some()
    }
}

/// One frame read in place; released (the head advanced past it) when dropped.
#[derive(Debug)]
pub struct FrameRef<'a> {
    consumer: &'a mut Consumer,
    index: usize,
    length: usize,
}

impl FrameRef<'_> {
    /// The frame body in the ring.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"x").unwrap();
    /// assert_eq!(rx.peek().unwrap().unwrap().bytes(), b"x");
    /// ```
    pub fn bytes(&self) -> &[u8] {
        self.consumer.frame_slice(self.index, self.length)
    }
}

impl FrameRef<'_> {
    /// Keeps the frame in the ring past this guard: it stays unreleased (the producer cannot
    /// reuse its bytes) until [`Consumer::release_held`] is given the returned record. For
    /// bindings that hand a frame out across calls (C, Python), where a borrow cannot live.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"kept").unwrap();
    /// let held = rx.peek().unwrap().unwrap().hold();
    /// assert_eq!(rx.held_bytes(&held), b"kept");
    /// rx.release_held(held);
    /// assert!(rx.peek().unwrap().is_none());
    /// ```
    pub fn hold(self) -> HeldRecord {
        let held = HeldRecord {
            position: self.consumer.head_position,
            index: self.index,
            length: self.length,
        };
        core::mem::forget(self);
        held
    }
}

/// A frame kept in the ring by [`FrameRef::hold`]; give it back to
/// [`Consumer::release_held`]. Not `Clone`: one record, one release.
#[derive(Debug, PartialEq, Eq)]
pub struct HeldRecord {
    position: u64,
    index: usize,
    length: usize,
}

impl Consumer {
    /// The bytes of a frame kept with [`FrameRef::hold`] (still in the ring, unreleased).
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"x").unwrap();
    /// let held = rx.peek().unwrap().unwrap().hold();
    /// assert_eq!(rx.held_bytes(&held), b"x");
    /// # rx.release_held(held);
    /// ```
    pub fn held_bytes(&self, held: &HeldRecord) -> &[u8] {
        assert_eq!(
            held.position, self.head_position,
            "a held record belongs to the head of its own consumer"
        );
        self.frame_slice(held.index, held.length)
    }

    /// Releases a frame kept with [`FrameRef::hold`], as dropping its guard would have.
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"x").unwrap();
    /// let held = rx.peek().unwrap().unwrap().hold();
    /// rx.release_held(held);
    /// assert!(rx.is_empty());
    /// ```
    pub fn release_held(&mut self, held: HeldRecord) {
        // Only the head can be held: peek and read both start there, and the binding
        // releases before it reads again.
        assert_eq!(
            held.position, self.head_position,
            "a held record belongs to the head of its own consumer"
        );
        self.release_head(held.length);
    }

    /// Whether frames are published behind a held one (the held frame itself is not news).
    ///
    /// ```
    /// let (mut tx, mut rx) = agentwire_shm::ring::ring_pair(4096, false).unwrap();
    /// tx.try_push(b"a").unwrap();
    /// let held = rx.peek().unwrap().unwrap().hold();
    /// assert!(!rx.pending_past_held(&held));
    /// tx.try_push(b"b").unwrap();
    /// assert!(rx.pending_past_held(&held));
    /// # rx.release_held(held);
    /// ```
    pub fn pending_past_held(&self, held: &HeldRecord) -> bool {
        // SYNC POINT: tail (the producer's Release store in publish).
        let tail = self.memory.control().tail_position.0.load(Ordering::SeqCst);
        tail > held.position + align8(held.length) as u64
    }

    fn release_head(&mut self, length: usize) {
        self.head_position += align8(length) as u64;
        // SYNC POINT: head (pairs with the producer's Acquire load of the head before it
        // reuses the room).
        self.memory
            .control()
            .head_position
            .0
            .store(self.head_position, Ordering::Release);
    }
}

impl Drop for FrameRef<'_> {
    fn drop(&mut self) {
        self.consumer.release_head(self.length);
    }
}
