//! The read side ([`StatsReader`]): opens a segment read-only, checks its header once, and
//! takes bounded seqlock snapshots.

use super::*;

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
