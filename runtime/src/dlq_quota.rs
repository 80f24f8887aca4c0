//! What each sender holds in the dead-letter queue, so that no one sender can fill it for
//! everyone (security issue 15, finding 6). Two quotas, both checked on every append:
//! - per sending agent: at most
//!   [`DlqConfig::records_per_sender_max`](crate::dlq::DlqConfig::records_per_sender_max)
//!   records and [`DlqConfig::bytes_per_sender_max`](crate::dlq::DlqConfig::bytes_per_sender_max)
//!   bytes (a tenth of the queue's limits by default). The sender is the source agent id in
//!   the frame's header, which the router stamps with the ring the frame came from, so an
//!   agent cannot charge its frames to another;
//! - per uid (the sender's kernel identity, which the router records with the frame, see
//!   [`DeadLetterQueue::try_append_from`](crate::dlq::DeadLetterQueue::try_append_from)):
//!   at most [`DlqConfig::records_per_uid_max`](crate::dlq::DlqConfig::records_per_uid_max)
//!   records and [`DlqConfig::bytes_per_uid_max`](crate::dlq::DlqConfig::bytes_per_uid_max)
//!   bytes, so a user cannot get around its agents' quota by connecting again and again as
//!   new agents (ids are never reused). By default this is the whole queue (one user's
//!   agents share it on a single-user machine); a machine shared by several users sets it.
//!
//! The counts are kept beside the queue's own: built while the file is read at open (and
//! whenever another process replaced it: a replay or purge), added to on append, and built
//! again from what a drain or purge keeps. A record whose frame has no readable header
//! (never one the router wrote) counts against no agent; one without an owner (an
//! in-process endpoint's, or one written before format 2) against no uid.
//!
//! ```
//! use agentwire_runtime::dlq::DlqConfig;
//! use agentwire_runtime::dlq_quota::{Holder, SenderUsage, SenderUsages};
//! use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
//! let limits = DlqConfig { records_per_sender_max: 1, records_per_uid_max: 2, ..DlqConfig::new("/tmp/q") };
//! let (mut a, mut b) = ([0u8; HEADER_BYTES], [0u8; HEADER_BYTES]);
//! FrameHeader::new(FrameKind::Send, 9, 2, 0).write_to(&mut a);
//! FrameHeader::new(FrameKind::Send, 10, 2, 0).write_to(&mut b);
//! let mut usages = SenderUsages::default();
//! assert_eq!(usages.check(&a, Some(1000), 100, &limits), Ok(()));
//! usages.add(&a, Some(1000), 100);
//! assert_eq!(usages.of(9), SenderUsage { records: 1, bytes: 100 });
//! // Agent 9 holds its quota of 1 record; agent 10, of the same uid, may add one more.
//! assert_eq!(usages.check(&a, Some(1000), 100, &limits).unwrap_err().holder, Holder::Agent(9));
//! usages.add(&b, Some(1000), 100);
//! let mut c = [0u8; HEADER_BYTES];
//! FrameHeader::new(FrameKind::Send, 11, 2, 0).write_to(&mut c);
//! // A third agent of uid 1000 finds the uid's quota (2 records) taken.
//! assert_eq!(usages.check(&c, Some(1000), 100, &limits).unwrap_err().holder, Holder::Uid(1000));
//! ```

use crate::dlq::DlqConfig;
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

/// Whose quota a refused frame hit.
///
/// ```
/// use agentwire_runtime::dlq_quota::Holder;
/// assert_eq!(Holder::Agent(7).to_string(), "agent 7");
/// assert_eq!(Holder::Uid(1000).to_string(), "uid 1000");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The sending agent's (the frame's source).
    Agent(u32),
    /// The sending agent's uid's (all its agents together).
    Uid(u32),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Agent(id) => write!(f, "agent {id}"),
            Holder::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// Why a frame was refused for a quota: whose, what it holds, and the limits.
///
/// ```
/// use agentwire_runtime::dlq_quota::{Holder, OverQuota, SenderUsage};
/// let e = OverQuota { holder: Holder::Agent(7), held: SenderUsage { records: 3, bytes: 90 }, records_max: 3, bytes_max: 4096 };
/// assert_eq!(e.holder, Holder::Agent(7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// Whose quota.
    pub holder: Holder,
    /// What it holds.
    pub held: SenderUsage,
    /// Records it may hold.
    pub records_max: u64,
    /// Bytes it may hold.
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
    by_uid: FxHashMap<u32, SenderUsage>,
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

    /// What the agents of `uid` hold together.
    ///
    /// ```
    /// assert_eq!(agentwire_runtime::dlq_quota::SenderUsages::default().of_uid(1000).records, 0);
    /// ```
    pub fn of_uid(&self, uid: u32) -> SenderUsage {
        self.by_uid.get(&uid).copied().unwrap_or_default()
    }

    /// Whether a record of `record_bytes` holding `frame`, sent by an agent of `owner_uid`,
    /// fits its agent's quota and its uid's (`limits`' per-sender and per-uid bounds).
    ///
    /// ```
    /// let u = agentwire_runtime::dlq_quota::SenderUsages::default();
    /// let limits = agentwire_runtime::dlq::DlqConfig::new("/tmp/q");
    /// assert!(u.check(b"too short for a header", None, 100, &limits).is_ok());
    /// ```
    pub fn check(
        &self,
        frame: &[u8],
        owner_uid: Option<u32>,
        record_bytes: u64,
        limits: &DlqConfig,
    ) -> Result<(), OverQuota> {
        let over = |holder, held: SenderUsage, records_max, bytes_max| {
            (held.records >= records_max || held.bytes + record_bytes > bytes_max).then_some(
                OverQuota {
                    holder,
                    held,
                    records_max,
                    bytes_max,
                },
            )
        };
        if let Some(source) = source_of(frame) {
            let (records_max, bytes_max) =
                (limits.records_per_sender_max, limits.bytes_per_sender_max);
            if let Some(e) = over(
                Holder::Agent(source),
                self.of(source),
                records_max,
                bytes_max,
            ) {
                return Err(e);
            }
        }
        if let Some(uid) = owner_uid {
            let (records_max, bytes_max) = (limits.records_per_uid_max, limits.bytes_per_uid_max);
            if let Some(e) = over(Holder::Uid(uid), self.of_uid(uid), records_max, bytes_max) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Counts a record of `record_bytes` holding `frame` against its sender and its uid.
    ///
    /// ```
    /// let mut u = agentwire_runtime::dlq_quota::SenderUsages::default();
    /// u.add(b"no header", Some(5), 41);
    /// assert_eq!((u.senders(), u.of_uid(5).records), (0, 1));
    /// ```
    pub fn add(&mut self, frame: &[u8], owner_uid: Option<u32>, record_bytes: u64) {
        let charge = |usage: &mut SenderUsage| {
            usage.records += 1;
            usage.bytes += record_bytes;
        };
        if let Some(source) = source_of(frame) {
            charge(self.by_source.entry(source).or_default());
        }
        if let Some(uid) = owner_uid {
            charge(self.by_uid.entry(uid).or_default());
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
        self.by_uid.clear();
    }
}
