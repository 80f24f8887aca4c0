//! Loss accounting: per source, the highest sequence seen and a 64-datagram window of what
//! arrived below it, in a table of bounded size (least recently seen source evicted).
//!
//! Definitions (per source; the first datagram seen sets the baseline, so loss before it is
//! not counted: a receiver that starts late, or a source evicted and seen again, begins
//! afresh):
//!
//! - **received**: datagrams accepted (forwarded), each sequence at most once;
//! - **lost**: sequences between the lowest and the highest received that have not arrived;
//!   a jump from highest `h` to `s > h + 1` adds `s - h - 1`;
//! - **reordered**: a sequence counted lost that arrived within the window (64 below the
//!   highest): it moves from lost to received, and is forwarded;
//! - **duplicate**: a sequence within the window that was already received: dropped;
//! - **late**: a sequence older than the window: dropped, since whether it is a duplicate
//!   cannot be told any more; it stays counted lost (if it was).
//!
//! So, per source and in total, `received + lost == highest - lowest + 1` over the
//! sequences received, and no sequence is forwarded twice.

use std::collections::HashMap;
use std::hash::Hash;

/// Sequences below the highest whose arrival is remembered (one bit each).
const WINDOW: u64 = 64;

/// Sources tracked at once by default.
///
/// ```
/// assert_eq!(agentwire_shm::telemetry::SOURCES_MAX_DEFAULT, 4096);
/// ```
pub const SOURCES_MAX_DEFAULT: usize = 4096;

/// "No slot" in the recency list.
const NIL: u32 = u32::MAX;

/// What to do with a datagram, by its sequence number.
///
/// ```
/// use agentwire_shm::telemetry::Verdict;
/// assert!(Verdict::Reordered.forward());
/// assert!(!Verdict::Duplicate.forward());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and the highest so far (the first of its source, the next one, or after a gap of
    /// `lost` sequences, now counted lost).
    InOrder {
        /// Sequences skipped (0: none).
        lost: u64,
    },
    /// Arrived after a higher sequence, within the window: counted lost before, received now.
    Reordered,
    /// Already received: drop it.
    Duplicate,
    /// Older than the window: drop it (it stays counted lost).
    Late,
}

impl Verdict {
    /// Whether the datagram is forwarded.
    ///
    /// ```
    /// use agentwire_shm::telemetry::Verdict;
    /// assert!(Verdict::InOrder { lost: 3 }.forward());
    /// assert!(!Verdict::Late.forward());
    /// ```
    pub fn forward(self) -> bool {
        matches!(self, Self::InOrder { .. } | Self::Reordered)
    }
}

/// One source's counts.
///
/// ```
/// let c = agentwire_shm::telemetry::SourceCounts::default();
/// assert_eq!(c.received + c.lost, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SourceCounts {
    /// Datagrams accepted.
    pub received: u64,
    /// Sequences missing between the lowest and the highest received.
    pub lost: u64,
    /// Arrived late but within the window (and accepted).
    pub reordered: u64,
    /// Repeats dropped.
    pub duplicate: u64,
    /// Older than the window, dropped.
    pub late: u64,
    /// Highest sequence received.
    pub sequence_highest: u64,
    /// Lowest sequence received.
    pub sequence_lowest: u64,
}

/// Totals over every source ever tracked (an evicted source's counts stay in them).
///
/// ```
/// let t = agentwire_shm::telemetry::SequenceCounts::default();
/// assert_eq!(t.sources_evicted, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceCounts {
    /// Datagrams accepted.
    pub received: u64,
    /// Sequences missing.
    pub lost: u64,
    /// Reordered (accepted late, within the window).
    pub reordered: u64,
    /// Repeats dropped.
    pub duplicate: u64,
    /// Older than the window, dropped.
    pub late: u64,
    /// Sources tracked now.
    pub sources_active: u64,
    /// Sources dropped from the table to make room (least recently seen first).
    pub sources_evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    counts: SourceCounts,
    /// Bit `i`: sequence `highest - i` was received.
    window: u64,
}

impl SourceState {
    fn first(sequence: u64) -> Self {
        Self {
            counts: SourceCounts {
                received: 1,
                sequence_highest: sequence,
                sequence_lowest: sequence,
                ..SourceCounts::default()
            },
            window: 1,
        }
    }

    fn observe(&mut self, sequence: u64) -> Verdict {
        let c = &mut self.counts;
        if sequence > c.sequence_highest {
            let advance = sequence - c.sequence_highest;
            c.lost += advance - 1;
            self.window = if advance >= WINDOW {
                1
            } else {
                (self.window << advance) | 1
            };
            c.sequence_highest = sequence;
            c.received += 1;
            return Verdict::InOrder { lost: advance - 1 };
        }
        let age = c.sequence_highest - sequence;
        if age >= WINDOW {
            c.late += 1;
            return Verdict::Late;
        }
        let bit = 1u64 << age;
        if self.window & bit != 0 {
            c.duplicate += 1;
            return Verdict::Duplicate;
        }
        self.window |= bit;
        if sequence < c.sequence_lowest {
            // Below the first one seen: the span grows down to it, and what lies between
            // is now missing.
            c.lost += c.sequence_lowest - sequence - 1;
            c.sequence_lowest = sequence;
        } else {
            c.lost -= 1;
        }
        c.reordered += 1;
        c.received += 1;
        Verdict::Reordered
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot<K> {
    key: K,
    state: SourceState,
    /// More recently seen neighbour (NIL: this is the most recent).
    newer: u32,
    /// Less recently seen neighbour (NIL: this is the least recent).
    older: u32,
}

/// Per-source sequence accounting over a bounded table of sources keyed by `K` (the
/// receiver uses the sender's address and source id). All memory is allocated at
/// creation; [`SequenceTracker::observe`] allocates nothing and costs one hash lookup.
///
/// ```
/// use agentwire_shm::telemetry::{SequenceTracker, Verdict};
/// let mut t = SequenceTracker::new(16);
/// for s in [1, 2, 4, 3, 3, 7] {
///     t.observe("a", s);
/// }
/// let c = t.counts();
/// assert_eq!((c.received, c.lost, c.reordered, c.duplicate), (5, 2, 1, 1));
/// ```
#[derive(Debug)]
pub struct SequenceTracker<K> {
    /// Key → slot. std's SipHash with a random key: the keys come from the network.
    index: HashMap<K, u32>,
    slots: Vec<Slot<K>>,
    sources_max: usize,
    /// Most and least recently seen slots.
    newest: u32,
    oldest: u32,
    totals: SequenceCounts,
}

impl<K: Hash + Eq + Copy> SequenceTracker<K> {
    /// Sequences below the highest that are remembered; older ones are late.
    ///
    /// ```
    /// assert_eq!(agentwire_shm::telemetry::SequenceTracker::<u64>::WINDOW, 64);
    /// ```
    pub const WINDOW: u64 = WINDOW;

    /// A tracker for at most `sources_max` sources (at least 1).
    ///
    /// # Panics
    /// If `sources_max` is 0 or above `u32::MAX - 1` (a configuration bug, checked at load).
    ///
    /// ```
    /// let t = agentwire_shm::telemetry::SequenceTracker::<u64>::new(4096);
    /// assert_eq!(t.counts().sources_active, 0);
    /// ```
    pub fn new(sources_max: usize) -> Self {
        assert!(
            (1..NIL as usize).contains(&sources_max),
            "sources_max {sources_max} out of range"
        );
        Self {
            index: HashMap::with_capacity(sources_max),
            slots: Vec::with_capacity(sources_max),
            sources_max,
            newest: NIL,
            oldest: NIL,
            totals: SequenceCounts::default(),
        }
    }

    /// Accounts for `sequence` from `source` and says whether to forward the datagram.
    ///
    /// ```
    /// use agentwire_shm::telemetry::{SequenceTracker, Verdict};
    /// let mut t = SequenceTracker::new(4);
    /// assert_eq!(t.observe(1u8, 0), Verdict::InOrder { lost: 0 });
    /// assert_eq!(t.observe(1u8, 3), Verdict::InOrder { lost: 2 });
    /// assert_eq!(t.observe(1u8, 2), Verdict::Reordered);
    /// assert_eq!(t.observe(1u8, 2), Verdict::Duplicate);
    /// ```
    pub fn observe(&mut self, source: K, sequence: u64) -> Verdict {
        let (slot, verdict) = match self.index.get(&source) {
            Some(&slot) => {
                self.unlink(slot);
                let state = &mut self.slots[slot as usize].state;
                let before = state.counts;
                let verdict = state.observe(sequence);
                let after = state.counts;
                let t = &mut self.totals;
                t.received = t.received.wrapping_add(after.received - before.received);
                // `lost` falls by one on a reordered arrival: add the signed difference.
                t.lost = t.lost.wrapping_add(after.lost.wrapping_sub(before.lost));
                t.reordered = t.reordered.wrapping_add(after.reordered - before.reordered);
                t.duplicate = t.duplicate.wrapping_add(after.duplicate - before.duplicate);
                t.late = t.late.wrapping_add(after.late - before.late);
                (slot, verdict)
            }
            None => {
                let state = SourceState::first(sequence);
                let slot = if self.slots.len() < self.sources_max {
                    self.slots.push(Slot {
                        key: source,
                        state,
                        newer: NIL,
                        older: NIL,
                    });
                    self.totals.sources_active += 1;
                    (self.slots.len() - 1) as u32
                } else {
                    let slot = self.oldest;
                    self.unlink(slot);
                    let evicted = self.slots[slot as usize].key;
                    self.index.remove(&evicted);
                    self.totals.sources_evicted += 1;
                    self.slots[slot as usize].key = source;
                    self.slots[slot as usize].state = state;
                    slot
                };
                self.index.insert(source, slot);
                self.totals.received = self.totals.received.wrapping_add(1);
                (slot, Verdict::InOrder { lost: 0 })
            }
        };
        self.link_newest(slot);
        verdict
    }

    /// Totals over every source.
    ///
    /// ```
    /// let mut t = agentwire_shm::telemetry::SequenceTracker::new(4);
    /// t.observe(0u8, 10);
    /// assert_eq!(t.counts().received, 1);
    /// ```
    pub fn counts(&self) -> SequenceCounts {
        self.totals
    }

    /// One source's counts (`None`: not tracked, or evicted).
    ///
    /// ```
    /// let mut t = agentwire_shm::telemetry::SequenceTracker::new(4);
    /// t.observe(0u8, 10);
    /// t.observe(0u8, 12);
    /// assert_eq!(t.source(&0).unwrap().lost, 1);
    /// assert!(t.source(&1).is_none());
    /// ```
    pub fn source(&self, source: &K) -> Option<SourceCounts> {
        self.index
            .get(source)
            .map(|&slot| self.slots[slot as usize].state.counts)
    }

    /// The `n` sources with the most loss, most first, into `out` (cleared first). Costs a
    /// pass over the table: for status, not for every datagram.
    ///
    /// ```
    /// let mut t = agentwire_shm::telemetry::SequenceTracker::new(4);
    /// t.observe('a', 0); t.observe('a', 5);
    /// t.observe('b', 0); t.observe('b', 1);
    /// let mut worst = Vec::new();
    /// t.most_lost(1, &mut worst);
    /// assert_eq!(worst[0].0, 'a');
    /// ```
    pub fn most_lost(&self, n: usize, out: &mut Vec<(K, SourceCounts)>) {
        out.clear();
        for slot in &self.slots {
            let lost = slot.state.counts.lost;
            let at = out.partition_point(|(_, c)| c.lost >= lost);
            if at < n {
                if out.len() == n {
                    out.pop();
                }
                out.insert(at, (slot.key, slot.state.counts));
            }
        }
    }

    fn unlink(&mut self, slot: u32) {
        let Slot { newer, older, .. } = self.slots[slot as usize];
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let previous = self.newest;
        self.slots[slot as usize].newer = NIL;
        self.slots[slot as usize].older = previous;
        match previous {
            NIL => self.oldest = slot,
            p => self.slots[p as usize].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn counts_loss_reordering_and_duplicates_as_defined() {
        let mut t = SequenceTracker::new(8);
        let verdicts: Vec<_> = [1, 2, 4, 3, 3, 7]
            .iter()
            .map(|&s| t.observe(0u8, s))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::InOrder { lost: 0 },
                Verdict::InOrder { lost: 0 },
                Verdict::InOrder { lost: 1 },
                Verdict::Reordered,
                Verdict::Duplicate,
                Verdict::InOrder { lost: 2 },
            ]
        );
        let c = t.counts();
        assert_eq!(
            (c.received, c.lost, c.reordered, c.duplicate, c.late),
            (5, 2, 1, 1, 0)
        );
    }

    #[test]
    fn a_sequence_older_than_the_window_is_late_and_dropped() {
        let mut t = SequenceTracker::new(8);
        t.observe(0u8, 0);
        t.observe(0u8, 100);
        assert_eq!(t.observe(0u8, 36), Verdict::Late);
        assert_eq!(t.observe(0u8, 37), Verdict::Reordered);
        let c = t.counts();
        assert_eq!((c.received, c.lost, c.late), (3, 98, 1));
    }

    #[test]
    fn a_sequence_below_the_first_seen_extends_the_span() {
        let mut t = SequenceTracker::new(8);
        t.observe(0u8, 10);
        assert_eq!(t.observe(0u8, 7), Verdict::Reordered);
        let c = t.source(&0).unwrap();
        assert_eq!((c.received, c.lost, c.sequence_lowest), (2, 2, 7));
        assert_eq!(t.observe(0u8, 8), Verdict::Reordered);
        assert_eq!(t.source(&0).unwrap().lost, 1);
    }

    #[test]
    fn evicts_the_least_recently_seen_source_when_full() {
        let mut t = SequenceTracker::new(2);
        t.observe('a', 0);
        t.observe('b', 0);
        t.observe('a', 1); // b is now the least recent
        t.observe('c', 0);
        assert!(t.source(&'b').is_none());
        assert!(t.source(&'a').is_some() && t.source(&'c').is_some());
        let c = t.counts();
        assert_eq!((c.sources_active, c.sources_evicted, c.received), (2, 1, 4));
        // b comes back: a new baseline, no loss invented.
        assert_eq!(t.observe('b', 50), Verdict::InOrder { lost: 0 });
        assert!(t.source(&'a').is_none(), "a was the least recent");
    }

    /// Sequences 0..n, some dropped, some repeated, shuffled by `swaps` random transpositions
    /// (near or far).
    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        (1u64..400)
            .prop_flat_map(|n| {
                (
                    Just(n),
                    proptest::collection::vec(0u8..10, n as usize),
                    proptest::collection::vec((0usize..800, 0usize..800), 0..200),
                )
            })
            .prop_map(|(n, fate, swaps)| {
                let mut v = Vec::new();
                for s in 0..n {
                    match fate[s as usize] {
                        0 => {}                   // dropped
                        1 => v.extend([s, s]),    // duplicated
                        2 => v.extend([s, s, s]), // triplicated
                        _ => v.push(s),
                    }
                }
                if !v.is_empty() {
                    for (a, b) in swaps {
                        let len = v.len();
                        v.swap(a % len, b % len);
                    }
                }
                v
            })
    }

    proptest! {
        #[test]
        fn received_plus_lost_is_the_span_and_nothing_is_forwarded_twice(
            seqs in arrivals(),
            sources in 1usize..4,
        ) {
            let mut t = SequenceTracker::new(8);
            let mut forwarded: Vec<HashSet<u64>> = vec![HashSet::new(); sources];
            for (i, &s) in seqs.iter().enumerate() {
                // Several sources interleaved, each with the same pattern shifted.
                let source = i % sources;
                let verdict = t.observe(source, s);
                if verdict.forward() {
                    prop_assert!(forwarded[source].insert(s), "{s} forwarded twice");
                }
            }
            let mut received = 0u64;
            let mut lost = 0u64;
            for (source, set) in forwarded.iter().enumerate() {
                let Some(c) = t.source(&source) else { continue };
                let (lo, hi) = (*set.iter().min().unwrap(), *set.iter().max().unwrap());
                prop_assert_eq!(c.received, set.len() as u64);
                prop_assert_eq!(c.received + c.lost, hi - lo + 1);
                prop_assert_eq!((c.sequence_lowest, c.sequence_highest), (lo, hi));
                received += c.received;
                lost += c.lost;
            }
            let total = t.counts();
            prop_assert_eq!(total.received, received);
            prop_assert_eq!(total.lost, lost);
            prop_assert_eq!(
                total.received + total.duplicate + total.late,
                seqs.len() as u64
            );
        }

        #[test]
        fn within_the_window_every_distinct_sequence_is_forwarded_once(
            n in 1u64..500,
            drop_every in 2u64..20,
            dups in proptest::collection::vec(0u64..500, 0..50),
            rotations in proptest::collection::vec(0usize..8, 64),
        ) {
            // Arrivals are reordered inside blocks of 8 only, so a sequence arrives at most
            // 2 blocks × 8 arrivals × 2 (sequence spacing with drops) = 32 below the
            // highest: never late.
            let mut v: Vec<u64> = (0..n).filter(|s| s % drop_every != 1).collect();
            for &d in &dups {
                if d < n && d % drop_every != 1 {
                    let at = v.iter().position(|&x| x == d).unwrap();
                    v.insert(at + 1, d);
                }
            }
            for (block, r) in v.chunks_mut(8).zip(rotations.iter().cycle()) {
                if r % 2 == 0 {
                    block.reverse();
                } else {
                    let len = block.len();
                    block.rotate_left(r % len);
                }
            }
            let mut t = SequenceTracker::new(1);
            let mut forwarded = HashSet::new();
            for &s in &v {
                if t.observe((), s).forward() {
                    prop_assert!(forwarded.insert(s));
                }
            }
            let distinct: HashSet<u64> = v.iter().copied().collect();
            prop_assert_eq!(&forwarded, &distinct);
            let c = t.counts();
            prop_assert_eq!(c.late, 0);
            let (lo, hi) = (*distinct.iter().min().unwrap(), *distinct.iter().max().unwrap());
            let missing = (lo..=hi).filter(|s| !distinct.contains(s)).count() as u64;
            prop_assert_eq!(c.lost, missing);
        }
    }
}
