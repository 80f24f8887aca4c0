//! What a load message carries, and how receivers account for it: every payload starts with
//! a 24-byte stamp (producer index, flags, sequence number within the producer's flow, send
//! time), so losses, late arrivals and duplicates are counted by sequence numbers and
//! latency is measured from the stamped time (in open loop: the *intended* send time).

/// Bytes of the stamp at the front of every load payload.
pub const STAMP_BYTES: usize = 24;
/// Flag: sent during warm-up (tracked for losses, not timed or counted in the results).
pub const FLAG_WARMUP: u32 = 1;
/// Bits 8-9 of the flags: the priority class. Order holds within a class (lanes are served
/// by priority), so a flow is a (producer, class) pair with its own sequence numbers.
pub const CLASS_SHIFT: u32 = 8;

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on the machine.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The stamp of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The producer (flow) index.
    pub producer: u32,
    /// [`FLAG_WARMUP`] or 0.
    pub flags: u32,
    /// Sequence number within the producer's flow, from 0.
    pub seq: u64,
    /// Send time (intended time in open loop), [`now_ns`] clock.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the front of `payload` (at least [`STAMP_BYTES`] long).
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(&self.producer.to_le_bytes());
        payload[4..8].copy_from_slice(&self.flags.to_le_bytes());
        payload[8..16].copy_from_slice(&self.seq.to_le_bytes());
        payload[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a stamp (`None`: too short to be a load message).
    pub fn read(payload: &[u8]) -> Option<Self> {
        if payload.len() < STAMP_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8"));
        Some(Self {
            producer: u32_at(0),
            flags: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// Most ranges of missing sequence numbers one [`SeqTracker`] remembers (over all its
/// flows), so that a late arrival can be told from a duplicate. Each is a `BTreeMap` entry;
/// beyond this the oldest range of the flow is forgotten, and a message from it that turns up
/// later counts as a duplicate.
pub const MISSING_RANGES_MAX: usize = 65_536;

/// What [`SeqTracker::record`] made of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected, or past it: `skipped` sequence numbers between are missing.
    New {
        /// Sequence numbers skipped over (missing until they arrive late).
        skipped: u64,
    },
    /// Below the highest seen, and never seen before (it was missing): counted once.
    Late,
    /// Seen before.
    Duplicate,
    /// Not a load message this tracker can place.
    Malformed,
}

impl Seen {
    /// Whether the message is seen for the first time (new or late).
    pub fn is_first(self) -> bool {
        matches!(self, Seen::New { .. } | Seen::Late)
    }
}

/// One flow (producer and priority class) at one receiver.
#[derive(Debug, Default, Clone)]
struct Flow {
    /// Next expected sequence number: one past the highest seen.
    expected: u64,
    /// Sequence numbers skipped over and not seen since: start -> end (exclusive).
    missing: std::collections::BTreeMap<u64, u64>,
}

/// Per-flow sequence accounting at one receiver. A flow is delivered in order, so a sequence
/// number past the expected one leaves the ones between missing (lost, unless they arrive
/// later); one below it is *late* if it was missing (e.g. a frame replayed from the
/// dead-letter queue) and a *duplicate* if it was seen before.
///
/// In-order messages cost one comparison and allocate nothing; only gaps are remembered.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    flows: Vec<Flow>,
    /// Ranges held in all flows' `missing`, bounded by [`MISSING_RANGES_MAX`].
    missing_ranges: usize,
    /// Messages seen for the first time (late ones included).
    pub unique: u64,
    /// Messages seen again.
    pub duplicated: u64,
    /// Messages that arrived after a higher sequence number of their flow, seen once.
    pub late: u64,
    /// Sequence numbers still missing (lost, as far as this receiver can tell).
    pub gaps: u64,
    /// Payloads that were not load messages.
    pub malformed: u64,
}

impl SeqTracker {
    /// Accounts for one message.
    pub fn record(&mut self, stamp: &Stamp) -> Seen {
        let p = stamp.producer as usize * 4 + ((stamp.flags >> CLASS_SHIFT) & 3) as usize;
        if p >= self.flows.len() {
            if p > 1 << 22 {
                self.malformed += 1;
                return Seen::Malformed;
            }
            self.flows.resize_with(p + 1, Flow::default);
        }
        let flow = &mut self.flows[p];
        let seq = stamp.seq;
        if seq >= flow.expected {
            let skipped = seq - flow.expected;
            if skipped > 0 {
                if self.missing_ranges == MISSING_RANGES_MAX {
                    self.missing_ranges -= usize::from(flow.missing.pop_first().is_some());
                }
                if self.missing_ranges < MISSING_RANGES_MAX {
                    flow.missing.insert(flow.expected, seq);
                    self.missing_ranges += 1;
                }
            }
            self.gaps += skipped;
            flow.expected = seq + 1;
            self.unique += 1;
            return Seen::New { skipped };
        }
        let range = flow
            .missing
            .range(..=seq)
            .next_back()
            .map(|(&start, &end)| (start, end))
            .filter(|&(_, end)| seq < end);
        let Some((start, end)) = range else {
            self.duplicated += 1;
            return Seen::Duplicate;
        };
        // Split the missing range around `seq`: at most one more range.
        flow.missing.remove(&start);
        self.missing_ranges -= 1;
        for (s, e) in [(start, seq), (seq + 1, end)] {
            if s < e && self.missing_ranges < MISSING_RANGES_MAX {
                flow.missing.insert(s, e);
                self.missing_ranges += 1;
            }
        }
        self.gaps -= 1;
        self.late += 1;
        self.unique += 1;
        Seen::Late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_payloads_are_refused() {
        let s = Stamp {
            producer: 3,
            flags: FLAG_WARMUP,
            seq: 1 << 40,
            sent_ns: 12345,
        };
        let mut buf = [0u8; 64];
        s.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(Stamp::read(&buf[..23]), None);
    }

    #[test]
    fn gaps_and_duplicates_are_counted_per_flow() {
        let mut t = SeqTracker::default();
        let at = |producer, seq| Stamp {
            producer,
            flags: 0,
            seq,
            sent_ns: 0,
        };
        for seq in [0, 1, 2, 4, 5, 5, 6] {
            t.record(&at(0, seq));
        }
        for seq in [0, 1] {
            t.record(&at(1, seq));
        }
        assert_eq!((t.unique, t.gaps, t.duplicated, t.late), (8, 1, 1, 0));
    }

    fn stamp_of_producer_0(seq: u64) -> Stamp {
        Stamp {
            producer: 0,
            flags: 0,
            seq,
            sent_ns: 0,
        }
    }

    #[test]
    fn a_missing_message_that_arrives_later_is_late_not_a_duplicate() {
        let mut t = SeqTracker::default();
        let at = stamp_of_producer_0;
        // 2..=4 and 7 skipped; 3 and 7 arrive late (as after a dead-letter replay), then 3
        // again, and 0 again: duplicates.
        let seen: Vec<Seen> = [0, 1, 5, 6, 8, 3, 7, 3, 0]
            .into_iter()
            .map(|seq| t.record(&at(seq)))
            .collect();
        assert_eq!(
            seen,
            [
                Seen::New { skipped: 0 },
                Seen::New { skipped: 0 },
                Seen::New { skipped: 3 },
                Seen::New { skipped: 0 },
                Seen::New { skipped: 1 },
                Seen::Late,
                Seen::Late,
                Seen::Duplicate,
                Seen::Duplicate,
            ]
        );
        // 2 and 4 never came.
        assert_eq!(
            (t.unique, t.late, t.duplicated, t.gaps),
            (7, 2, 2, 2),
            "{t:?}"
        );
        // The rest of the hole, in any order: each late once, then duplicates.
        assert_eq!(t.record(&at(4)), Seen::Late);
        assert_eq!(t.record(&at(2)), Seen::Late);
        assert_eq!(t.record(&at(2)), Seen::Duplicate);
        assert_eq!((t.late, t.gaps, t.missing_ranges), (4, 0, 0));
    }

    #[test]
    fn flows_are_apart_and_classes_are_flows() {
        let mut t = SeqTracker::default();
        let at = |producer, class: u32, seq| Stamp {
            producer,
            flags: class << CLASS_SHIFT,
            seq,
            sent_ns: 0,
        };
        t.record(&at(0, 0, 0));
        t.record(&at(0, 0, 2));
        // Seq 1 of another producer, and of another class, is new there, not late here.
        assert_eq!(t.record(&at(1, 0, 1)), Seen::New { skipped: 1 });
        assert_eq!(t.record(&at(0, 3, 1)), Seen::New { skipped: 1 });
        assert_eq!(t.record(&at(0, 0, 1)), Seen::Late);
        assert_eq!(t.record(&at(1, 0, 0)), Seen::Late);
        assert_eq!((t.late, t.duplicated, t.gaps), (2, 0, 1));
    }

    #[test]
    fn remembered_gaps_are_bounded() {
        let mut t = SeqTracker::default();
        let at = stamp_of_producer_0;
        // Every other message missing: one range per gap, past the bound.
        let gaps = MISSING_RANGES_MAX as u64 + 10;
        for i in 0..=gaps {
            t.record(&at(2 * i));
        }
        assert_eq!(t.gaps, gaps);
        assert_eq!(t.missing_ranges, MISSING_RANGES_MAX);
        // The oldest ten are forgotten: their late arrivals count as duplicates.
        assert_eq!(t.record(&at(1)), Seen::Duplicate);
        assert_eq!(t.record(&at(2 * gaps - 1)), Seen::Late);
    }
}
