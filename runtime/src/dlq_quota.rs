//! What each sending agent holds in the dead-letter queue, so that no one sender can fill it
//! for everyone (security issue 15, finding 6): a sender may hold at most
//! [`DlqConfig::records_per_sender_max`](crate::dlq::DlqConfig::records_per_sender_max)
//! records and
//! [`DlqConfig::bytes_per_sender_max`](crate::dlq::DlqConfig::bytes_per_sender_max) bytes
//! (a tenth of the queue's limits by default). The sender is the source agent id in the
//! frame's header, which the router stamps with the ring the frame came from, so an agent
//! cannot charge its frames to another.
//!
//! The counts are kept beside the queue's own: built while the file is read at open (and
//! whenever another process replaced it: a replay or purge), added to on append, and built
//! again from what a drain or purge keeps. A record whose frame has no readable header
//! (never one the router wrote) counts against no sender.
//!
//! ```
//! use agentwire_runtime::dlq_quota::{SenderUsage, SenderUsages};
//! use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
//! let mut frame = [0u8; HEADER_BYTES];
//! FrameHeader::new(FrameKind::Send, 9, 2, 0).write_to(&mut frame);
//! let mut usages = SenderUsages::default();
//! assert_eq!(usages.check(&frame, 100, 1, 1 << 20), Ok(()));
//! usages.add(&frame, 100);
//! assert_eq!(usages.of(9), SenderUsage { records: 1, bytes: 100 });
//! assert!(usages.check(&frame, 100, 1, 1 << 20).is_err()); // 1 record per sender
//! ```

use agentwire_shm::wire::FrameHeader;
use rustc_hash::FxHashMap;

/// What one sender holds in the queue.
///
/// ```
/// let u = agentwire_runtime::dlq_quota::SenderUsage::default();
/// assert_eq!((u.records, u.bytes), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderUsage {
    /// Records whose frame this sender sent.
    pub records: u64,
    /// Bytes of those records in the file (record headers included).
    pub bytes: u64,
}

/// Why a frame was refused for its sender's quota: who, what it holds, and the limits.
///
/// ```
/// use agentwire_runtime::dlq_quota::{OverQuota, SenderUsage};
/// let e = OverQuota { source: 7, held: SenderUsage { records: 3, bytes: 90 }, records_max: 3, bytes_max: 4096 };
/// assert_eq!(e.source, 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// The sending agent.
    pub source: u32,
    /// What it holds.
    pub held: SenderUsage,
    /// Records one sender may hold.
    pub records_max: u64,
    /// Bytes one sender may hold.
    pub bytes_max: u64,
}

/// Every sender's [`SenderUsage`]. Bounded: at most one entry per record held, and an entry
/// is removed when its sender holds nothing.
///
/// ```
/// let u = agentwire_runtime::dlq_quota::SenderUsages::default();
/// assert_eq!(u.of(1).records, 0);
/// ```
#[derive(Debug, Default, Clone)]
pub struct SenderUsages {
    by_source: FxHashMap<u32, SenderUsage>,
}

/// The sender of a stored frame: its header's source, if it has a header.
fn source_of(frame: &[u8]) -> Option<u32> {
    FrameHeader::peek(frame).map(FrameHeader::source)
}

impl SenderUsages {
    /// What `source` holds.
    ///
    /// ```
    /// assert_eq!(agentwire_runtime::dlq_quota::SenderUsages::default().of(3).bytes, 0);
    /// ```
    pub fn of(&self, source: u32) -> SenderUsage {
        self.by_source.get(&source).copied().unwrap_or_default()
    }

    /// Senders holding at least one record.
    ///
    /// ```
    /// assert_eq!(agentwire_runtime::dlq_quota::SenderUsages::default().senders(), 0);
    /// ```
    pub fn senders(&self) -> usize {
        self.by_source.len()
    }

    /// Whether a record of `record_bytes` holding `frame` fits its sender's quota.
    ///
    /// ```
    /// let u = agentwire_runtime::dlq_quota::SenderUsages::default();
    /// assert!(u.check(b"too short for a header", 100, 0, 4096).is_ok());
    /// ```
    pub fn check(
        &self,
        frame: &[u8],
        record_bytes: u64,
        records_max: u64,
        bytes_max: u64,
    ) -> Result<(), OverQuota> {
        let Some(source) = source_of(frame) else {
            return Ok(());
        };
        let held = self.of(source);
        if held.records >= records_max || held.bytes + record_bytes > bytes_max {
            return Err(OverQuota {
                source,
                held,
                records_max,
                bytes_max,
            });
        }
        Ok(())
    }

    /// Counts a record of `record_bytes` holding `frame` against its sender.
    ///
    /// ```
    /// let mut u = agentwire_runtime::dlq_quota::SenderUsages::default();
    /// u.add(b"no header", 41);
    /// assert_eq!(u.senders(), 0);
    /// ```
    pub fn add(&mut self, frame: &[u8], record_bytes: u64) {
        if let Some(source) = source_of(frame) {
            let usage = self.by_source.entry(source).or_default();
            usage.records += 1;
            usage.bytes += record_bytes;
        }
    }

    /// Forgets every sender (the queue was emptied or is being recounted).
    ///
    /// ```
    /// let mut u = agentwire_runtime::dlq_quota::SenderUsages::default();
    /// u.clear();
    /// assert_eq!(u.senders(), 0);
    /// ```
    pub fn clear(&mut self) {
        self.by_source.clear();
    }
}
