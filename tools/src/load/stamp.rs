//! What a load message carries, and how receivers account for it: every payload starts with
//! a 24-byte stamp (producer index, flags, sequence number within the producer's flow, send
//! time), so losses and duplicates are counted by sequence numbers and latency is measured
//! from the stamped time (in open loop: the *intended* send time).

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

/// Per-flow sequence accounting at one receiver. Flows are delivered in order, so a
/// sequence number past the expected one means the ones between were lost, and one below it
/// is a duplicate.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Next expected sequence number per flow (producer and priority class).
    expected: Vec<u64>,
    /// Messages seen for the first time.
    pub unique: u64,
    /// Messages seen again (or out of order).
    pub duplicated: u64,
    /// Sequence numbers skipped over (lost, as far as this receiver can tell).
    pub gaps: u64,
    /// Payloads that were not load messages.
    pub malformed: u64,
}

impl SeqTracker {
    /// Accounts for one message; returns whether it was new.
    pub fn record(&mut self, stamp: &Stamp) -> bool {
        let p = stamp.producer as usize * 4 + ((stamp.flags >> CLASS_SHIFT) & 3) as usize;
        if p >= self.expected.len() {
            if p > 1 << 22 {
                self.malformed += 1;
                return false;
            }
            self.expected.resize(p + 1, 0);
        }
        let expected = &mut self.expected[p];
        if stamp.seq < *expected {
            self.duplicated += 1;
            return false;
        }
        self.gaps += stamp.seq - *expected;
        *expected = stamp.seq + 1;
        self.unique += 1;
        true
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
        for seq in [0, 1, 2, 4, 5, 5, 3, 6] {
            t.record(&at(0, seq));
        }
        for seq in [0, 1] {
            t.record(&at(1, seq));
        }
        assert_eq!((t.unique, t.gaps, t.duplicated), (8, 1, 2));
    }
}
