//! The stats segment: the daemon's live counters in shared memory, one seqlocked slot per
//! writer (a router shard, an engine core), read by any process (the twin, the CLI, the
//! Prometheus endpoint) without stopping or slowing a writer.
//!
//! Layout (`docs/wire.md` §7; every offset asserted here and re-checked by every opener):
//!
//! ```text
//! 0        StatsHeader   magic (written last), layout version, slot count and size, ...
//! 128      slot 0        sequence u64, counters [u64; counters_per_slot], padding to 128 B
//! 128+s    slot 1        (s = slot_bytes, a multiple of 128: no two writers share a line,
//! ...                     nor the adjacent-line prefetcher's pair)
//! ```
//!
//! The seqlock (one writer per slot, wait-free; readers retry, bounded):
//!
//! - writer: `seq += 1` (odd) with a relaxed store, a release fence, the counter stores
//!   (relaxed), then `seq += 1` (even) with a release store;
//! - reader: load `seq` (relaxed) and an acquire fence; if odd, retry; copy the counters
//!   (relaxed loads), an acquire fence, load `seq` again; equal to the first load means the
//!   copy is one writer's complete update, else retry. After `retries_max` tries the reader
//!   returns [`SnapshotError::Busy`]: a writer that died mid-update leaves the sequence odd
//!   forever and must not hang a reader.
//!
//! Counters are `AtomicU64` accessed with relaxed loads and stores, never plain memory: a
//! reader's copy races with the writer by design, and relaxed atomics make that race defined
//! (Boehm, "Can seqlocks get along with programming language memory models?", 2012). On
//! x86-64 both fences and every relaxed access compile to plain `mov`s: the write path is
//! three stores for [`SlotWriter::add`], no locked instruction, no allocation, no syscall.
//!
//! Readers map the segment read-only and use only relaxed loads plus fences, which the
//! standard library allows on read-only memory (an acquire *load* is not guaranteed to be).
//!
//! ```
//! use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
//! let seg = StatsSegment::create_memfd("doc", StatsLayout::new(2, 4)).unwrap();
//! let mut shard = seg.writer(1).unwrap();
//! shard.add(0, 5);
//! shard.update(|c| c[3] = 42);
//! let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
//! let mut counters = [0u64; 4];
//! let sequence = reader.snapshot(1, &mut counters).unwrap();
//! assert_eq!(counters, [5, 0, 0, 42]);
//! assert_eq!(sequence, 4); // two updates, each odd then even
//! ```

use core::mem::{offset_of, size_of};
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use std::path::Path;
use std::sync::Arc;

/// `b"AWSTATS\0"` little-endian; written last by the creator (SYNC POINT: magic).
///
/// ```
/// assert_eq!(&agentwire_shm::stats_segment::STATS_MAGIC.to_le_bytes(), b"AWSTATS\0");
/// ```
pub const STATS_MAGIC: u64 = u64::from_le_bytes(*b"AWSTATS\0");
/// Layout version of the header and slots. Any change to either bumps it.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::STATS_LAYOUT_VERSION, 1);
/// ```
pub const STATS_LAYOUT_VERSION: u32 = 1;
/// Offset of slot 0: the header padded to two cache lines.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::STATS_SLOTS_OFFSET, 128);
/// ```
pub const STATS_SLOTS_OFFSET: usize = 128;
/// Every slot starts at, and spans, a multiple of this: two cache lines, so no two writers
/// share a line or an adjacent-line prefetch pair.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::STATS_SLOT_ALIGN_BYTES, 128);
/// ```
pub const STATS_SLOT_ALIGN_BYTES: usize = 128;
/// Most slots a segment may have (one per writer core; far above any machine's cores).
///
/// ```
/// assert!(agentwire_shm::stats_segment::STATS_SLOT_COUNT_MAX >= 256);
/// ```
pub const STATS_SLOT_COUNT_MAX: u32 = 1024;
/// Most counters a slot may have (a snapshot copies them all, so keep it small).
///
/// ```
/// assert!(agentwire_shm::stats_segment::STATS_COUNTERS_PER_SLOT_MAX >= 32);
/// ```
pub const STATS_COUNTERS_PER_SLOT_MAX: u32 = 512;
/// Default bound on a snapshot's tries before it reports [`SnapshotError::Busy`]. A copy of
/// 32 counters takes well under a microsecond, so this is about a millisecond of trying: a
/// live writer is never mid-update that long unless it is descheduled, and a dead one is
/// reported after it.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::SNAPSHOT_RETRIES_MAX_DEFAULT, 4096);
/// ```
pub const SNAPSHOT_RETRIES_MAX_DEFAULT: u32 = 4096;

const PAGE_BYTES: usize = 4096;

/// The header at offset 0. Every field is an atomic so that a reader in the creator's own
/// process never makes a plain read of shared memory; all but `magic` are written before the
/// magic is published and never again.
///
/// ```
/// assert_eq!(core::mem::size_of::<agentwire_shm::stats_segment::StatsHeader>(), 64);
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct StatsHeader {
    /// [`STATS_MAGIC`] once the segment is fully initialised. SYNC POINT: magic.
    pub magic: AtomicU64,
    /// [`STATS_LAYOUT_VERSION`].
    pub layout_version: AtomicU32,
    /// `size_of::<StatsHeader>()` (64) as the creator knew it.
    pub header_bytes: AtomicU32,
    /// Total segment size in bytes (the file's size).
    pub segment_bytes: AtomicU64,
    /// Number of slots.
    pub slot_count: AtomicU32,
    /// Counters in each slot.
    pub counters_per_slot: AtomicU32,
    /// Bytes from one slot to the next (a multiple of [`STATS_SLOT_ALIGN_BYTES`]).
    pub slot_bytes: AtomicU32,
    /// Offset of slot 0 ([`STATS_SLOTS_OFFSET`]).
    pub slots_offset: AtomicU32,
    /// Pid of the creating process, so a reader can tell a live segment from a dead daemon's.
    pub creator_pid: AtomicU32,
    /// Zero.
    pub reserved0: AtomicU32,
    /// FNV-1a 64 of bytes 8..48 (every field above but the magic): a corrupted field that
    /// still looks consistent (a slot count that fits the same pages) is refused too.
    pub header_checksum: AtomicU64,
    /// Zero.
    pub reserved: AtomicU64,
}

const _: () = assert!(size_of::<StatsHeader>() == 64);
const _: () = assert!(offset_of!(StatsHeader, magic) == 0);
const _: () = assert!(offset_of!(StatsHeader, layout_version) == 8);
const _: () = assert!(offset_of!(StatsHeader, header_bytes) == 12);
const _: () = assert!(offset_of!(StatsHeader, segment_bytes) == 16);
const _: () = assert!(offset_of!(StatsHeader, slot_count) == 24);
const _: () = assert!(offset_of!(StatsHeader, counters_per_slot) == 28);
const _: () = assert!(offset_of!(StatsHeader, slot_bytes) == 32);
const _: () = assert!(offset_of!(StatsHeader, slots_offset) == 36);
const _: () = assert!(offset_of!(StatsHeader, creator_pid) == 40);
const _: () = assert!(offset_of!(StatsHeader, header_checksum) == 48);
const _: () = assert!(size_of::<StatsHeader>() <= STATS_SLOTS_OFFSET);
const _: () = assert!(STATS_SLOTS_OFFSET % STATS_SLOT_ALIGN_BYTES == 0);

/// The shape of a stats segment: how many writer slots, how many counters in each. Part of
/// the cross-process contract: validated at creation and open, never rounded.
///
/// ```
/// use agentwire_shm::stats_segment::StatsLayout;
/// let layout = StatsLayout::new(4, 32);
/// assert_eq!(layout.slot_bytes(), 384); // 8 + 32 * 8 = 264, rounded up to 128
/// assert_eq!(layout.segment_bytes(), 4096);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsLayout {
    /// Writer slots (1 ..= [`STATS_SLOT_COUNT_MAX`]).
    pub slot_count: u32,
    /// Counters per slot (1 ..= [`STATS_COUNTERS_PER_SLOT_MAX`]).
    pub counters_per_slot: u32,
}

impl StatsLayout {
    /// A layout of `slot_count` slots of `counters_per_slot` counters (checked on use).
    ///
    /// ```
    /// let l = agentwire_shm::stats_segment::StatsLayout::new(2, 32);
    /// assert_eq!((l.slot_count, l.counters_per_slot), (2, 32));
    /// ```
    pub fn new(slot_count: u32, counters_per_slot: u32) -> Self {
        Self {
            slot_count,
            counters_per_slot,
        }
    }

    /// Checks both counts against their limits.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::StatsLayout;
    /// assert!(StatsLayout::new(1, 1).validate().is_ok());
    /// assert!(StatsLayout::new(0, 32).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), StatsSegmentError> {
        let in_range = |field, found: u32, max: u32| {
            if (1..=max).contains(&found) {
                Ok(())
            } else {
                Err(StatsSegmentError::OutOfRange { field, found, max })
            }
        };
        in_range("slot_count", self.slot_count, STATS_SLOT_COUNT_MAX)?;
        in_range(
            "counters_per_slot",
            self.counters_per_slot,
            STATS_COUNTERS_PER_SLOT_MAX,
        )
    }

    /// Bytes from one slot to the next: the sequence word and the counters, rounded up to
    /// [`STATS_SLOT_ALIGN_BYTES`].
    ///
    /// ```
    /// assert_eq!(agentwire_shm::stats_segment::StatsLayout::new(1, 15).slot_bytes(), 128);
    /// ```
    pub fn slot_bytes(&self) -> usize {
        let used = size_of::<u64>() * (1 + self.counters_per_slot as usize);
        used.div_ceil(STATS_SLOT_ALIGN_BYTES) * STATS_SLOT_ALIGN_BYTES
    }

    /// The whole segment's size: header and slots, rounded up to a page.
    ///
    /// ```
    /// assert_eq!(agentwire_shm::stats_segment::StatsLayout::new(64, 32).segment_bytes(), 28672);
    /// ```
    pub fn segment_bytes(&self) -> usize {
        let used = STATS_SLOTS_OFFSET + self.slot_count as usize * self.slot_bytes();
        used.div_ceil(PAGE_BYTES) * PAGE_BYTES
    }

    fn slot_offset(&self, slot: usize) -> usize {
        STATS_SLOTS_OFFSET + slot * self.slot_bytes()
    }
}

/// Why a stats segment could not be created or opened, or a slot not claimed. Each variant
/// names what was expected and what was found.
///
/// ```
/// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment, StatsSegmentError};
/// let err = StatsSegment::create_memfd("doc", StatsLayout::new(0, 8)).unwrap_err();
/// assert!(matches!(err, StatsSegmentError::OutOfRange { field: "slot_count", .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StatsSegmentError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is shorter than its header, or than the layout its header describes.
    #[error("stats segment is {found_bytes} bytes, expected at least {expected_bytes}")]
    TooShort {
        /// Size required.
        expected_bytes: u64,
        /// Size of the file.
        found_bytes: u64,
    },
    /// The magic word is wrong: not a stats segment, or not initialised.
    #[error("bad stats segment magic {found:#018x}, expected {STATS_MAGIC:#018x}")]
    BadMagic {
        /// Magic found.
        found: u64,
    },
    /// The layout version differs.
    #[error("stats segment layout version {found}, this build speaks {STATS_LAYOUT_VERSION}")]
    VersionMismatch {
        /// Version found.
        found: u32,
    },
    /// A count is zero or above its limit.
    #[error("stats segment {field} is {found}, must be 1..={max}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Value found.
        found: u32,
        /// Its limit.
        max: u32,
    },
    /// A layout field is inconsistent with the others or with the file.
    #[error("stats segment field {field} is {found}, expected {expected}")]
    LayoutMismatch {
        /// Field name.
        field: &'static str,
        /// Expected value.
        expected: u64,
        /// Found value.
        found: u64,
    },
    /// No such slot.
    #[error("slot {slot} out of range: the segment has {slot_count} slots")]
    SlotOutOfRange {
        /// Slot asked for.
        slot: usize,
        /// Slots in the segment.
        slot_count: u32,
    },
    /// The slot already has a writer in this process.
    #[error("slot {slot} already has a writer")]
    SlotClaimed {
        /// The slot.
        slot: usize,
    },
}

/// Why a snapshot failed.
///
/// ```
/// use agentwire_shm::stats_segment::{SnapshotError, StatsLayout, StatsReader, StatsSegment};
/// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 4)).unwrap();
/// let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
/// let err = reader.snapshot(0, &mut [0u64; 3]).unwrap_err();
/// assert_eq!(err, SnapshotError::BufferLength { expected: 4, found: 3 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The slot's writer was mid-update (odd sequence) or changed the slot on every try, for
    /// `retries` tries in a row: a writer that died mid-update, or one descheduled mid-update.
    #[error("slot {slot} busy: no consistent copy in {retries} tries (last sequence {sequence})")]
    Busy {
        /// The slot.
        slot: usize,
        /// Tries made.
        retries: u32,
        /// The last sequence seen (odd: a writer mid-update).
        sequence: u64,
    },
    /// No such slot.
    #[error("slot {slot} out of range: the segment has {slot_count} slots")]
    SlotOutOfRange {
        /// Slot asked for.
        slot: usize,
        /// Slots in the segment.
        slot_count: u32,
    },
    /// The output buffer's length is not the number of counters it must hold.
    #[error("output buffer holds {found} counters, expected {expected}")]
    BufferLength {
        /// Length required.
        expected: usize,
        /// Length given.
        found: usize,
    },
}

fn io_error(what: &'static str) -> impl FnOnce(std::io::Error) -> StatsSegmentError {
    move |source| StatsSegmentError::Io { what, source }
}

/// The writable mapping; writers hold clones of it so it outlives the segment handle.
struct WriteMapping {
    map: memmap2::MmapMut,
}

/// A created stats segment (the daemon's side): hands out one [`SlotWriter`] per slot.
///
/// ```
/// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
/// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(2, 32)).unwrap();
/// assert_eq!(seg.layout(), StatsLayout::new(2, 32));
/// ```
pub struct StatsSegment {
    mapping: Arc<WriteMapping>,
    fd: OwnedFd,
    layout: StatsLayout,
    /// One claim flag per slot, in this process's memory. SYNC POINT: claim.
    claimed: Arc<[AtomicBool]>,
}

impl std::fmt::Debug for StatsSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsSegment")
            .field("layout", &self.layout)
            .field("bytes", &self.mapping.map.len())
            .finish()
    }
}

impl StatsSegment {
    /// Creates a segment in a sealed memfd (no size change possible, so a reader can never
    /// be faulted by a truncation); pass it with [`StatsSegment::try_clone_fd`].
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("shards", StatsLayout::new(4, 32)).unwrap();
    /// assert_eq!(seg.len_bytes(), 4096);
    /// ```
    pub fn create_memfd(name: &str, layout: StatsLayout) -> Result<Self, StatsSegmentError> {
        layout.validate()?;
        let fd = rustix::fs::memfd_create(
            format!("agentwire-stats-{name}"),
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| io_error("memfd_create")(e.into()))?;
        rustix::fs::ftruncate(&fd, layout.segment_bytes() as u64)
            .map_err(|e| io_error("sizing the stats segment")(e.into()))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| io_error("sealing the stats segment")(e.into()))?;
        Self::init(fd, layout)
    }

    /// Creates a segment as the file `path` (e.g. in the daemon's runtime directory, on
    /// tmpfs), readable by its group. The file is built under a temporary name and renamed
    /// into place once initialised, so a reader never opens a half-made segment; a stale file
    /// at `path` is replaced, and readers still mapping it keep the old (frozen) one. The
    /// creator must never truncate the file: a reader's access past the end would fault.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
    /// let path = std::env::temp_dir().join(format!("aw-stats-doc-{}", std::process::id()));
    /// let seg = StatsSegment::create_file(&path, StatsLayout::new(2, 8)).unwrap();
    /// assert_eq!(StatsReader::open_path(&path).unwrap().layout(), seg.layout());
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn create_file(path: &Path, layout: StatsLayout) -> Result<Self, StatsSegmentError> {
        use std::os::unix::fs::OpenOptionsExt;
        layout.validate()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(io_error("creating the stats segment file"))?;
        let made = file
            .set_len(layout.segment_bytes() as u64)
            .map_err(io_error("sizing the stats segment file"))
            .and_then(|()| Self::init(OwnedFd::from(file), layout))
            .and_then(|seg| {
                std::fs::rename(&tmp, path)
                    .map_err(io_error("renaming the stats segment into place"))?;
                Ok(seg)
            });
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made
    }

    /// Maps a freshly sized, zeroed file and initialises the header, magic last.
    fn init(fd: OwnedFd, layout: StatsLayout) -> Result<Self, StatsSegmentError> {
        let bytes = layout.segment_bytes();
        let file = std::fs::File::from(fd.try_clone().map_err(io_error("dup"))?);
        // SAFETY: the file is ours, just sized to `bytes` and never truncated (a memfd is
        // sealed; the file-backed creator never truncates); all access to its contents is
        // through atomics.
        let map = unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(&file) }
            .map_err(io_error("mapping the stats segment"))?;
        let slot_count = layout.slot_count as usize;
        let segment = Self {
            mapping: Arc::new(WriteMapping { map }),
            fd,
            layout,
            claimed: (0..slot_count).map(|_| AtomicBool::new(false)).collect(),
        };
        let h = segment.header();
        // Relaxed: no reader trusts these before it acquires the magic published below.
        h.layout_version
            .store(STATS_LAYOUT_VERSION, Ordering::Relaxed);
        h.header_bytes
            .store(size_of::<StatsHeader>() as u32, Ordering::Relaxed);
        h.segment_bytes.store(bytes as u64, Ordering::Relaxed);
        h.slot_count.store(layout.slot_count, Ordering::Relaxed);
        h.counters_per_slot
            .store(layout.counters_per_slot, Ordering::Relaxed);
        h.slot_bytes
            .store(layout.slot_bytes() as u32, Ordering::Relaxed);
        h.slots_offset
            .store(STATS_SLOTS_OFFSET as u32, Ordering::Relaxed);
        h.creator_pid.store(std::process::id(), Ordering::Relaxed);
        h.header_checksum
            .store(header_checksum(&HeaderFields::load(h)), Ordering::Relaxed);
        // SYNC POINT: magic (publishes every field above; the slots are zero from the file).
        h.magic.store(STATS_MAGIC, Ordering::Release);
        Ok(segment)
    }

    fn header(&self) -> &StatsHeader {
        // SAFETY: the mapping is page-aligned and at least a page long; the header is only
        // accessed through atomics.
        unsafe { &*(self.mapping.map.as_ptr() as *const StatsHeader) }
    }

    /// Claims `slot` for one writer (a shard or core); it is released when the writer drops.
    /// The writer starts from the counters the slot holds.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(2, 8)).unwrap();
    /// let w = seg.writer(0).unwrap();
    /// assert!(seg.writer(0).is_err(), "one writer per slot");
    /// drop(w);
    /// assert!(seg.writer(0).is_ok());
    /// assert!(seg.writer(2).is_err());
    /// ```
    pub fn writer(&self, slot: usize) -> Result<SlotWriter, StatsSegmentError> {
        let claim = self
            .claimed
            .get(slot)
            .ok_or(StatsSegmentError::SlotOutOfRange {
                slot,
                slot_count: self.layout.slot_count,
            })?;
        // SYNC POINT: claim (acquires the previous writer's last stores to this slot).
        if claim
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(StatsSegmentError::SlotClaimed { slot });
        }
        // SAFETY: the slot lies inside the mapping (slot < slot_count, the mapping holds
        // segment_bytes); the offset is a multiple of 128 from a page-aligned base.
        let base = unsafe { self.mapping.map.as_ptr().add(self.layout.slot_offset(slot)) }
            as *const AtomicU64;
        // SAFETY: the slot's 1 + counters_per_slot words lie inside the mapping (slot_bytes
        // covers them), 8-aligned, accessed only atomically.
        let (sequence_word, counter_words) = unsafe {
            (
                &*base,
                core::slice::from_raw_parts(base.add(1), self.layout.counters_per_slot as usize),
            )
        };
        // Relaxed: the claim's acquire ordered these loads after the previous writer's stores.
        let sequence = sequence_word.load(Ordering::Relaxed);
        let shadow = counter_words
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let mut writer = SlotWriter {
            base,
            sequence,
            shadow,
            slot,
            claimed: self.claimed.clone(),
            _mapping: self.mapping.clone(),
        };
        if writer.sequence & 1 == 1 {
            // A writer died mid-update (only possible if this file outlived a process): its
            // counters stand as they are, and the slot becomes readable again.
            writer.sequence += 1;
            // SYNC POINT: seq-even
            writer.seq_word().store(writer.sequence, Ordering::Release);
        }
        Ok(writer)
    }

    /// The layout this segment was created with.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(3, 8)).unwrap();
    /// assert_eq!(seg.layout().slot_count, 3);
    /// ```
    pub fn layout(&self) -> StatsLayout {
        self.layout
    }

    /// Mapped bytes.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(3, 8)).unwrap();
    /// assert_eq!(seg.len_bytes(), 4096);
    /// ```
    pub fn len_bytes(&self) -> usize {
        self.mapping.map.len()
    }

    /// A duplicate of the segment's descriptor, to pass to a reader process.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 8)).unwrap();
    /// let _fd = seg.try_clone_fd().unwrap();
    /// ```
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.as_fd().try_clone_to_owned()
    }
}

/// The single writer of one slot: wait-free, no allocation, no syscall. `Send` so it can be
/// made at start-up and moved to its core; not `Sync` (every write takes `&mut self`).
///
/// ```
/// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
/// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 4)).unwrap();
/// let mut w = seg.writer(0).unwrap();
/// std::thread::spawn(move || w.add(2, 7)).join().unwrap();
/// ```
pub struct SlotWriter {
    /// The slot's sequence word; the counters follow it.
    base: *const AtomicU64,
    /// The sequence as this writer last stored it: the writer owns the word, so it never
    /// reads it back from shared memory.
    sequence: u64,
    /// The counters as this writer last published them (the authoritative copy).
    shadow: Box<[u64]>,
    slot: usize,
    claimed: Arc<[AtomicBool]>,
    _mapping: Arc<WriteMapping>,
}

// SAFETY: `base` points into the mapping that `_mapping` keeps alive, and the slot is this
// writer's alone (claimed); moving the writer to another thread moves that ownership.
unsafe impl Send for SlotWriter {}

impl std::fmt::Debug for SlotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotWriter")
            .field("slot", &self.slot)
            .field("sequence", &self.sequence)
            .finish()
    }
}

impl SlotWriter {
    fn seq_word(&self) -> &AtomicU64 {
        // SAFETY: `base` is the slot's first word, inside the live mapping, 128-aligned.
        unsafe { &*self.base }
    }

    fn counter_words(&self) -> &[AtomicU64] {
        // SAFETY: the counters follow the sequence word inside the slot (slot_bytes covers
        // 1 + counters words), in the live mapping, 8-aligned, accessed only atomically.
        unsafe { core::slice::from_raw_parts(self.base.add(1), self.shadow.len()) }
    }

    /// Makes the sequence odd: readers from here on retry.
    #[inline]
    fn begin(&mut self) {
        self.sequence = self.sequence.wrapping_add(1);
        self.seq_word().store(self.sequence, Ordering::Relaxed);
        // SYNC POINT: seq-odd. Orders the odd store before every counter store below: a
        // reader whose copy sees any of them sees (after its acquire fence) this odd value or
        // later on its second sequence load, and discards the copy. A release fence, not a
        // release store, because the stores it must order come after it.
        fence(Ordering::Release);
    }

    /// Makes the sequence even: the update is published.
    #[inline]
    fn end(&mut self) {
        self.sequence = self.sequence.wrapping_add(1);
        // SYNC POINT: seq-even. Publishes the counter stores above to a reader that loads this
        // value and then fences with acquire.
        self.seq_word().store(self.sequence, Ordering::Release);
    }

    /// Applies `f` to the slot's counters and publishes the result as one update: a reader
    /// sees all of it or none of it. `f` runs on the writer's own copy before the slot is
    /// touched, so a panic in `f` leaves the slot as it was.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 3)).unwrap();
    /// let mut w = seg.writer(0).unwrap();
    /// w.update(|c| { c[0] += 1; c[1] += 64; c[2] = 9 });
    /// assert_eq!(w.counters(), &[1, 64, 9]);
    /// ```
    #[inline]
    pub fn update(&mut self, f: impl FnOnce(&mut [u64])) {
        f(&mut self.shadow);
        self.begin();
        for (word, value) in self.counter_words().iter().zip(self.shadow.iter()) {
            word.store(*value, Ordering::Relaxed);
        }
        self.end();
    }

    /// Adds `n` (wrapping) to counter `index` and publishes it: three stores.
    ///
    /// # Panics
    /// If `index` is not below the slot's counter count (a programming error).
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 3)).unwrap();
    /// let mut w = seg.writer(0).unwrap();
    /// w.add(1, 10);
    /// w.add(1, 5);
    /// assert_eq!(w.counters()[1], 15);
    /// ```
    #[inline]
    pub fn add(&mut self, index: usize, n: u64) {
        let value = self.shadow[index].wrapping_add(n);
        self.shadow[index] = value;
        self.begin();
        self.counter_words()[index].store(value, Ordering::Relaxed);
        self.end();
    }

    /// The counters as last published by this writer.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
    /// assert_eq!(seg.writer(0).unwrap().counters(), &[0, 0]);
    /// ```
    pub fn counters(&self) -> &[u64] {
        &self.shadow
    }

    /// The slot this writer owns.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(2, 2)).unwrap();
    /// assert_eq!(seg.writer(1).unwrap().slot(), 1);
    /// ```
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The slot's sequence: even, twice the number of updates published.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
    /// let mut w = seg.writer(0).unwrap();
    /// w.add(0, 1);
    /// assert_eq!(w.sequence(), 2);
    /// ```
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl Drop for SlotWriter {
    fn drop(&mut self) {
        // SYNC POINT: claim (hands this writer's last stores to the slot's next writer).
        self.claimed[self.slot].store(false, Ordering::Release);
    }
}

/// A read-only view of a stats segment, in any process: snapshots never block or slow a
/// writer. `Sync`: threads may share one reader.
///
/// ```
/// use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
/// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
/// let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
/// assert_eq!(reader.layout(), StatsLayout::new(1, 2));
/// ```
pub struct StatsReader {
    map: memmap2::Mmap,
    /// Checked once at open and kept here: never re-read from the shared header.
    layout: StatsLayout,
    creator_pid: u32,
    retries_max: u32,
}

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsReader")
            .field("layout", &self.layout)
            .field("creator_pid", &self.creator_pid)
            .field("retries_max", &self.retries_max)
            .finish()
    }
}

impl StatsReader {
    /// Opens the segment file at `path` read-only and checks its header.
    ///
    /// ```
    /// let err = agentwire_shm::stats_segment::StatsReader::open_path(
    ///     std::path::Path::new("/nonexistent/stats")).unwrap_err();
    /// assert!(err.to_string().contains("opening"));
    /// ```
    pub fn open_path(path: &Path) -> Result<Self, StatsSegmentError> {
        let file = std::fs::File::open(path).map_err(io_error("opening the stats segment"))?;
        Self::open_fd(OwnedFd::from(file))
    }

    /// Maps a segment's descriptor read-only and checks every header field against the
    /// file's size and this build's layout rules, reading each shared byte once.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsReader, StatsSegmentError};
    /// let fd = rustix::fs::memfd_create("empty", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    /// assert!(matches!(StatsReader::open_fd(fd), Err(StatsSegmentError::TooShort { .. })));
    /// ```
    pub fn open_fd(fd: OwnedFd) -> Result<Self, StatsSegmentError> {
        let file = std::fs::File::from(fd);
        let file_bytes = file
            .metadata()
            .map_err(io_error("fstat on the stats segment"))?
            .len();
        if file_bytes < STATS_SLOTS_OFFSET as u64 {
            return Err(StatsSegmentError::TooShort {
                expected_bytes: STATS_SLOTS_OFFSET as u64,
                found_bytes: file_bytes,
            });
        }
        let len = usize::try_from(file_bytes).map_err(|_| StatsSegmentError::TooShort {
            expected_bytes: file_bytes,
            found_bytes: usize::MAX as u64,
        })?;
        // SAFETY: a shared read-only mapping of `len` bytes, the file's size now; the
        // creator never shrinks it (a memfd is sealed), and it is only read through atomics.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file) }
            .map_err(io_error("mapping the stats segment"))?;
        // SAFETY: the mapping is page-aligned and holds at least STATS_SLOTS_OFFSET bytes,
        // more than the header; it is read only through atomic loads.
        let header = unsafe { &*(map.as_ptr() as *const StatsHeader) };
        let (layout, creator_pid) = checked_layout(header, file_bytes)?;
        Ok(Self {
            map,
            layout,
            creator_pid,
            retries_max: SNAPSHOT_RETRIES_MAX_DEFAULT,
        })
    }

    /// Sets the bound on a snapshot's tries (at least 1) before it reports busy.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap().with_retries_max(16);
    /// assert_eq!(r.retries_max(), 16);
    /// ```
    pub fn with_retries_max(mut self, retries_max: u32) -> Self {
        self.retries_max = retries_max.max(1);
        self
    }

    /// The bound on a snapshot's tries.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::*;
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    /// assert_eq!(r.retries_max(), SNAPSHOT_RETRIES_MAX_DEFAULT);
    /// ```
    pub fn retries_max(&self) -> u32 {
        self.retries_max
    }

    /// The layout checked at open.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::*;
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(3, 5)).unwrap();
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    /// assert_eq!(r.layout().counters_per_slot, 5);
    /// ```
    pub fn layout(&self) -> StatsLayout {
        self.layout
    }

    /// The pid of the process that created the segment (as its header said at open).
    ///
    /// ```
    /// use agentwire_shm::stats_segment::*;
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 1)).unwrap();
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    /// assert_eq!(r.creator_pid(), std::process::id());
    /// ```
    pub fn creator_pid(&self) -> u32 {
        self.creator_pid
    }

    fn slot_words(&self, slot: usize) -> Result<(&AtomicU64, &[AtomicU64]), SnapshotError> {
        if slot >= self.layout.slot_count as usize {
            return Err(SnapshotError::SlotOutOfRange {
                slot,
                slot_count: self.layout.slot_count,
            });
        }
        // SAFETY: slot < slot_count and the mapping holds segment_bytes (checked at open), so
        // the slot's 1 + counters_per_slot words lie inside it, 8-aligned; they are only
        // loaded with relaxed ordering, which is allowed on read-only memory.
        unsafe {
            let base = self.map.as_ptr().add(self.layout.slot_offset(slot)) as *const AtomicU64;
            Ok((
                &*base,
                core::slice::from_raw_parts(base.add(1), self.layout.counters_per_slot as usize),
            ))
        }
    }

    /// Copies one slot's counters into `out` (exactly `counters_per_slot` long) as one
    /// writer update left them, and returns that update's sequence (even; twice the updates
    /// the slot has seen). Retries while the writer is mid-update, at most `retries_max`
    /// times, then returns [`SnapshotError::Busy`].
    ///
    /// ```
    /// use agentwire_shm::stats_segment::*;
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 2)).unwrap();
    /// seg.writer(0).unwrap().update(|c| c.copy_from_slice(&[3, 4]));
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    /// let mut out = [0; 2];
    /// assert_eq!(r.snapshot(0, &mut out), Ok(2));
    /// assert_eq!(out, [3, 4]);
    /// ```
    pub fn snapshot(&self, slot: usize, out: &mut [u64]) -> Result<u64, SnapshotError> {
        let (sequence, counters) = self.slot_words(slot)?;
        if out.len() != counters.len() {
            return Err(SnapshotError::BufferLength {
                expected: counters.len(),
                found: out.len(),
            });
        }
        let mut last = 0;
        for _ in 0..self.retries_max {
            let begin = sequence.load(Ordering::Relaxed);
            // SYNC POINT: seq-even (with the writer's release store of an even sequence:
            // every counter store of that update is visible to the copy below).
            fence(Ordering::Acquire);
            if begin & 1 == 0 {
                for (o, c) in out.iter_mut().zip(counters) {
                    *o = c.load(Ordering::Relaxed);
                }
                // SYNC POINT: seq-odd (with the writer's release fence after its odd store: if
                // the copy saw any store of a later update, the load below sees its odd
                // sequence or later).
                fence(Ordering::Acquire);
                let end = sequence.load(Ordering::Relaxed);
                if end == begin {
                    return Ok(begin);
                }
                last = end;
            } else {
                last = begin;
            }
            core::hint::spin_loop();
        }
        Err(SnapshotError::Busy {
            slot,
            retries: self.retries_max,
            sequence: last,
        })
    }

    /// Snapshots every slot into `out` (slot `s` at `s * counters_per_slot`) and each slot's
    /// sequence into `sequences`: `None` for a busy slot, whose counters are zeroed rather
    /// than left torn. Returns the number of busy slots. Slots are each consistent, not
    /// consistent with one another (each has its own writer).
    ///
    /// ```
    /// use agentwire_shm::stats_segment::*;
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(2, 2)).unwrap();
    /// seg.writer(1).unwrap().add(1, 8);
    /// let r = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    /// let (mut out, mut seqs) = ([0; 4], [None; 2]);
    /// assert_eq!(r.snapshot_all(&mut out, &mut seqs), Ok(0));
    /// assert_eq!((out, seqs), ([0, 0, 0, 8], [Some(0), Some(2)]));
    /// ```
    pub fn snapshot_all(
        &self,
        out: &mut [u64],
        sequences: &mut [Option<u64>],
    ) -> Result<usize, SnapshotError> {
        let slots = self.layout.slot_count as usize;
        let per_slot = self.layout.counters_per_slot as usize;
        if out.len() != slots * per_slot {
            return Err(SnapshotError::BufferLength {
                expected: slots * per_slot,
                found: out.len(),
            });
        }
        if sequences.len() != slots {
            return Err(SnapshotError::BufferLength {
                expected: slots,
                found: sequences.len(),
            });
        }
        let mut busy = 0;
        for (slot, (chunk, seq)) in out.chunks_exact_mut(per_slot).zip(sequences).enumerate() {
            match self.snapshot(slot, chunk) {
                Ok(s) => *seq = Some(s),
                Err(SnapshotError::Busy { .. }) => {
                    chunk.fill(0);
                    *seq = None;
                    busy += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(busy)
    }
}

/// The header's fields after the magic, each loaded once from shared memory.
struct HeaderFields {
    layout_version: u32,
    header_bytes: u32,
    segment_bytes: u64,
    slot_count: u32,
    counters_per_slot: u32,
    slot_bytes: u32,
    slots_offset: u32,
    creator_pid: u32,
    reserved0: u32,
    header_checksum: u64,
}

impl HeaderFields {
    fn load(h: &StatsHeader) -> Self {
        let r = Ordering::Relaxed;
        Self {
            layout_version: h.layout_version.load(r),
            header_bytes: h.header_bytes.load(r),
            segment_bytes: h.segment_bytes.load(r),
            slot_count: h.slot_count.load(r),
            counters_per_slot: h.counters_per_slot.load(r),
            slot_bytes: h.slot_bytes.load(r),
            slots_offset: h.slots_offset.load(r),
            creator_pid: h.creator_pid.load(r),
            reserved0: h.reserved0.load(r),
            header_checksum: h.header_checksum.load(r),
        }
    }
}

/// FNV-1a 64 over header bytes 8..48 in layout order. Every step is a bijection of the
/// running hash, so any change confined to one byte changes the result.
fn header_checksum(f: &HeaderFields) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&f.layout_version.to_le_bytes());
    eat(&f.header_bytes.to_le_bytes());
    eat(&f.segment_bytes.to_le_bytes());
    eat(&f.slot_count.to_le_bytes());
    eat(&f.counters_per_slot.to_le_bytes());
    eat(&f.slot_bytes.to_le_bytes());
    eat(&f.slots_offset.to_le_bytes());
    eat(&f.creator_pid.to_le_bytes());
    eat(&f.reserved0.to_le_bytes());
    hash
}

/// Checks a received header against the file's size and this build's rules; each shared
/// field is loaded once into a local and only the locals are used. Fields are checked one by
/// one first (so an error names the field), the checksum last.
fn checked_layout(
    h: &StatsHeader,
    file_bytes: u64,
) -> Result<(StatsLayout, u32), StatsSegmentError> {
    let magic = h.magic.load(Ordering::Relaxed);
    // SYNC POINT: magic (a relaxed load and an acquire fence, not an acquire load: the
    // mapping is read-only, where only relaxed atomic loads are guaranteed to work).
    fence(Ordering::Acquire);
    if magic != STATS_MAGIC {
        return Err(StatsSegmentError::BadMagic { found: magic });
    }
    let f = HeaderFields::load(h);
    if f.layout_version != STATS_LAYOUT_VERSION {
        return Err(StatsSegmentError::VersionMismatch {
            found: f.layout_version,
        });
    }
    let check = |field, expected: u64, found: u64| {
        if expected == found {
            Ok(())
        } else {
            Err(StatsSegmentError::LayoutMismatch {
                field,
                expected,
                found,
            })
        }
    };
    check(
        "header_bytes",
        size_of::<StatsHeader>() as u64,
        f.header_bytes.into(),
    )?;
    let layout = StatsLayout::new(f.slot_count, f.counters_per_slot);
    layout.validate()?;
    check(
        "slot_bytes",
        layout.slot_bytes() as u64,
        f.slot_bytes.into(),
    )?;
    check(
        "slots_offset",
        STATS_SLOTS_OFFSET as u64,
        f.slots_offset.into(),
    )?;
    let expected_bytes = layout.segment_bytes() as u64;
    check("segment_bytes", expected_bytes, f.segment_bytes)?;
    if file_bytes < expected_bytes {
        return Err(StatsSegmentError::TooShort {
            expected_bytes,
            found_bytes: file_bytes,
        });
    }
    check("file size", expected_bytes, file_bytes)?;
    check("header_checksum", header_checksum(&f), f.header_checksum)?;
    Ok((layout, f.creator_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(layout: StatsLayout) -> (StatsSegment, StatsReader) {
        let seg = StatsSegment::create_memfd("test", layout).unwrap();
        let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
        (seg, reader)
    }

    fn slot_word(seg: &StatsSegment, slot: usize, word: usize) -> &AtomicU64 {
        let offset = seg.layout.slot_offset(slot) + 8 * word;
        assert!(offset + 8 <= seg.len_bytes());
        // SAFETY: inside the mapping (asserted), 8-aligned; test-only hand-crafted states.
        unsafe { &*(seg.mapping.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    #[test]
    fn layout_offsets_match_the_documented_contract() {
        let l = StatsLayout::new(3, 32);
        assert_eq!(l.slot_bytes(), 384);
        assert_eq!(l.slot_offset(0), 128);
        assert_eq!(l.slot_offset(2), 128 + 2 * 384);
        for n in 1..=STATS_COUNTERS_PER_SLOT_MAX {
            let l = StatsLayout::new(1, n);
            assert_eq!(l.slot_bytes() % STATS_SLOT_ALIGN_BYTES, 0);
            assert!(l.slot_bytes() >= 8 * (n as usize + 1));
        }
    }

    #[test]
    fn a_writer_left_mid_update_makes_the_reader_busy_not_hung() {
        let (seg, reader) = pair(StatsLayout::new(2, 4));
        let reader = reader.with_retries_max(100);
        let mut w = seg.writer(0).unwrap();
        w.add(0, 1);
        // What a writer killed between begin and end leaves: an odd sequence.
        slot_word(&seg, 0, 0).store(3, Ordering::Relaxed);
        let mut out = [0; 4];
        assert_eq!(
            reader.snapshot(0, &mut out),
            Err(SnapshotError::Busy {
                slot: 0,
                retries: 100,
                sequence: 3
            })
        );
        // The other slot is unaffected; snapshot_all reports one busy slot, zeroed.
        let (mut all, mut seqs) = ([7; 8], [None; 2]);
        assert_eq!(reader.snapshot_all(&mut all, &mut seqs), Ok(1));
        assert_eq!(seqs, [None, Some(0)]);
        assert_eq!(all, [0; 8]);
    }

    #[test]
    fn a_new_writer_recovers_a_slot_left_odd() {
        let (seg, reader) = pair(StatsLayout::new(1, 2));
        let mut w = seg.writer(0).unwrap();
        w.update(|c| c.copy_from_slice(&[5, 6]));
        drop(w);
        slot_word(&seg, 0, 0).store(3, Ordering::Relaxed);
        let mut w = seg.writer(0).unwrap();
        assert_eq!(w.sequence(), 4);
        assert_eq!(w.counters(), &[5, 6]);
        let mut out = [0; 2];
        assert_eq!(reader.snapshot(0, &mut out), Ok(4));
        w.add(1, 1);
        assert_eq!(reader.snapshot(0, &mut out), Ok(6));
        assert_eq!(out, [5, 7]);
    }

    #[test]
    fn a_panicking_update_leaves_the_slot_readable() {
        let (seg, reader) = pair(StatsLayout::new(1, 2));
        let mut w = seg.writer(0).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.update(|c| {
                c[0] = 1;
                panic!("mid-update");
            })
        }));
        assert!(r.is_err());
        let mut out = [9; 2];
        assert_eq!(reader.snapshot(0, &mut out), Ok(0));
        assert_eq!(out, [0, 0]);
    }

    #[test]
    fn snapshot_rejects_bad_slot_and_buffer() {
        let (_seg, reader) = pair(StatsLayout::new(2, 4));
        assert_eq!(
            reader.snapshot(2, &mut [0; 4]),
            Err(SnapshotError::SlotOutOfRange {
                slot: 2,
                slot_count: 2
            })
        );
        assert!(matches!(
            reader.snapshot_all(&mut [0; 8], &mut [None; 1]),
            Err(SnapshotError::BufferLength {
                expected: 2,
                found: 1
            })
        ));
    }

    #[test]
    fn open_names_each_bad_header_field() {
        let corrupt = |f: &dyn Fn(&StatsHeader)| {
            let (seg, _) = pair(StatsLayout::new(2, 8));
            f(seg.header());
            StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap_err()
        };
        let e = corrupt(&|h| h.magic.store(0, Ordering::Relaxed));
        assert!(matches!(e, StatsSegmentError::BadMagic { found: 0 }), "{e}");
        let e = corrupt(&|h| h.layout_version.store(7, Ordering::Relaxed));
        assert!(
            matches!(e, StatsSegmentError::VersionMismatch { found: 7 }),
            "{e}"
        );
        let e = corrupt(&|h| h.slot_count.store(0, Ordering::Relaxed));
        assert!(e.to_string().contains("slot_count is 0"), "{e}");
        let e = corrupt(&|h| h.counters_per_slot.store(u32::MAX, Ordering::Relaxed));
        assert!(e.to_string().contains("counters_per_slot"), "{e}");
        let e = corrupt(&|h| h.slot_count.store(100, Ordering::Relaxed));
        assert!(e.to_string().contains("segment_bytes"), "{e}");
        let e = corrupt(&|h| h.slot_bytes.store(64, Ordering::Relaxed));
        assert!(
            e.to_string().contains("slot_bytes is 64, expected 128"),
            "{e}"
        );
        let e = corrupt(&|h| h.slots_offset.store(0, Ordering::Relaxed));
        assert!(e.to_string().contains("slots_offset"), "{e}");
        let e = corrupt(&|h| h.header_bytes.store(80, Ordering::Relaxed));
        assert!(e.to_string().contains("header_bytes"), "{e}");
    }
}
