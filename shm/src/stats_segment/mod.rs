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

mod header;
mod names;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use header::{checked_layout, header_checksum, HeaderFields};
pub use names::{
    NamesError, SlotNames, StatsNames, NAMES_FILE_BYTES_MAX, NAMES_FILE_HEADER, NAME_BYTES_MAX,
};
pub use reader::StatsReader;
pub use writer::SlotWriter;
