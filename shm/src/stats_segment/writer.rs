//! The single writer of one slot ([`SlotWriter`]): the seqlock's write side.

use super::*;

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
    pub(super) base: *const AtomicU64,
    /// The sequence as this writer last stored it: the writer owns the word, so it never
    /// reads it back from shared memory.
    pub(super) sequence: u64,
    /// The counters as this writer last published them (the authoritative copy).
    pub(super) shadow: Box<[u64]>,
    pub(super) slot: usize,
    pub(super) claimed: Arc<[AtomicBool]>,
    pub(super) _mapping: Arc<WriteMapping>,
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
    pub(super) fn seq_word(&self) -> &AtomicU64 {
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
