//! Links between router shards: one in-process SPSC ring per ordered pair of shards, so a
//! frame for an agent another shard serves crosses cores without a lock or an MPMC queue.
//!
//! A record is an 8-byte prefix (target agent id, flags) followed by the frame as it will
//! be delivered (source already stamped). Flags: the sender asked for an ack that the
//! receiving shard sends once the frame is placed; or the record is a reply (ack or nack)
//! for an agent the receiving shard serves, with the nack's reason so that shard counts it
//! in the agent's control block (only the owning shard writes it).
//!
//! Bytes in flight per link are held under a budget ([`LinkSender::budget_bytes`]), whatever
//! the ring's capacity (which must hold the largest frame): the receiving shard keeps that
//! much room in every destination's deferral for arrivals, so a frame that crossed a link
//! always has a place to wait and a slow destination never stalls a link (docs/wire.md §6).
//!
//! ```
//! use agentwire_router::links::{link, LinkFlags};
//! let (mut tx, mut rx) = link(4096, 1024).unwrap();
//! assert!(tx.write(7, LinkFlags::ACK_OWED, 5, |out| out.copy_from_slice(b"frame")));
//! tx.publish();
//! let mut got = Vec::new();
//! rx.read(8, |r| { got.push((r.target, r.flags, r.frame.to_vec())); std::ops::ControlFlow::Continue(()) });
//! assert_eq!(got, vec![(7, LinkFlags::ACK_OWED, b"frame".to_vec())]);
//! ```

use crate::wake::ShardWake;
use agentwire_shm::ring::{ring_pair, Consumer, Producer, RingConfigError, RECORD_HEADER_BYTES};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Bytes before the frame in a link record.
pub const LINK_PREFIX_BYTES: usize = 8;

/// What a link record asks of the receiving shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFlags(u32);

impl LinkFlags {
    /// Deliver; nothing more.
    pub const NONE: Self = Self(0);
    /// Deliver, then ack the frame's source once it is in the destination ring.
    pub const ACK_OWED: Self = Self(1);
    /// An ack or nack for the target (an agent the receiving shard serves).
    pub const REPLY: Self = Self(2);

    /// A reply that is a nack with `reason` (a `NackReason` code), to count in the target's
    /// control block.
    ///
    /// ```
    /// let f = agentwire_router::links::LinkFlags::nack(3);
    /// assert_eq!(f.reject_reason(), 3);
    /// assert!(f.is_reply());
    /// ```
    pub fn nack(reason: u32) -> Self {
        Self(Self::REPLY.0 | (reason & 0xff) << 8)
    }

    /// Whether an ack is owed once the frame lands.
    ///
    /// ```
    /// assert!(agentwire_router::links::LinkFlags::ACK_OWED.ack_owed());
    /// ```
    pub fn ack_owed(self) -> bool {
        self.0 & Self::ACK_OWED.0 != 0
    }

    /// Whether the record is an ack or nack for the target.
    ///
    /// ```
    /// assert!(agentwire_router::links::LinkFlags::REPLY.is_reply());
    /// ```
    pub fn is_reply(self) -> bool {
        self.0 & Self::REPLY.0 != 0
    }

    /// The nack reason carried by a reply (0: an ack, or not a reply).
    ///
    /// ```
    /// assert_eq!(agentwire_router::links::LinkFlags::NONE.reject_reason(), 0);
    /// ```
    pub fn reject_reason(self) -> u32 {
        (self.0 >> 8) & 0xff
    }
}

/// One record handed to [`LinkReceiver::read`].
#[derive(Debug)]
pub struct LinkRecord<'a> {
    /// The agent to deliver to (served by the receiving shard).
    pub target: u32,
    /// What else to do.
    pub flags: LinkFlags,
    /// The frame, ready to copy into the target's ring.
    pub frame: &'a [u8],
}

/// The sending end of a link (owned by one shard).
#[derive(Debug)]
pub struct LinkSender {
    tx: Producer,
    budget_bytes: usize,
    /// Budget known free without reading the receiver's head again.
    room_bytes: usize,
    /// The receiving shard's wake, notified on publish ([`LinkSender::waking`]).
    wake: Option<Arc<ShardWake>>,
}

/// The receiving end of a link (owned by another shard).
#[derive(Debug)]
pub struct LinkReceiver {
    rx: Consumer,
}

/// A link whose ring holds `capacity_bytes` (a power of two; it must hold the largest frame
/// plus the prefix in a quarter of it) with at most `budget_bytes` of records in flight.
///
/// ```
/// assert!(agentwire_router::links::link(1000, 100).is_err());
/// ```
pub fn link(
    capacity_bytes: usize,
    budget_bytes: usize,
) -> Result<(LinkSender, LinkReceiver), RingConfigError> {
    let (tx, rx) = ring_pair(capacity_bytes, false)?;
    Ok((
        LinkSender {
            tx,
            budget_bytes,
            room_bytes: 0,
            wake: None,
        },
        LinkReceiver { rx },
    ))
}

/// Bytes a frame of `frame_bytes` takes in a link ring (record header, prefix, padding).
fn record_bytes(frame_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + LINK_PREFIX_BYTES + frame_bytes).next_multiple_of(8)
}

impl LinkSender {
    /// This sender, notifying `wake` (the receiving shard's) whenever it publishes records,
    /// so a parked receiving shard takes them now rather than a park timeout later.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use agentwire_router::{links::{link, LinkFlags}, wake::ShardWake};
    /// let wake = Arc::new(ShardWake::new().unwrap());
    /// let (tx, _rx) = link(4096, 1024).unwrap();
    /// let mut tx = tx.waking(wake.clone());
    /// wake.arm(); // the receiving shard is about to park
    /// tx.write(1, LinkFlags::NONE, 3, |out| out.copy_from_slice(b"abc"));
    /// tx.publish();
    /// assert!(wake.bell().wait(std::time::Duration::from_secs(1)));
    /// ```
    pub fn waking(self, wake: Arc<ShardWake>) -> Self {
        Self {
            wake: Some(wake),
            ..self
        }
    }

    /// The in-flight budget.
    ///
    /// ```
    /// let (tx, _rx) = agentwire_router::links::link(4096, 1024).unwrap();
    /// assert_eq!(tx.budget_bytes(), 1024);
    /// ```
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Whether `copies` records of a `frame_bytes` frame (a fan-out's copies to agents of
    /// one shard) fit now, within the budget. A frame larger than the whole budget may go
    /// alone, on an empty link. Reads the receiver's head (an acquire) only when the budget
    /// known free is not enough: whatever the receiving shard published before that head
    /// (its congestion flags) is visible after.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_router::links::link(4096, 256).unwrap();
    /// assert!(tx.can_take_copies(50, 3) && !tx.can_take_copies(50, 4));
    /// ```
    pub fn can_take_copies(&mut self, frame_bytes: usize, copies: usize) -> bool {
        let needed = record_bytes(frame_bytes) * copies;
        if needed <= self.room_bytes {
            return true;
        }
        let occupied = self.tx.occupied_bytes();
        self.room_bytes = self.budget_bytes.saturating_sub(occupied);
        if needed <= self.room_bytes {
            return true;
        }
        // An oversized frame alone on an empty link (bounded: one at a time).
        copies == 1 && occupied == 0 && self.tx.can_claim(LINK_PREFIX_BYTES + frame_bytes)
    }

    /// Writes a record for `target` with a frame of `frame_bytes` filled by `fill`, to be
    /// published by [`LinkSender::publish`]; false when it does not fit.
    ///
    /// ```
    /// # use agentwire_router::links::{link, LinkFlags};
    /// let (mut tx, _rx) = link(4096, 1024).unwrap();
    /// assert!(tx.write(1, LinkFlags::NONE, 3, |out| out.copy_from_slice(b"abc")));
    /// ```
    pub fn write(
        &mut self,
        target: u32,
        flags: LinkFlags,
        frame_bytes: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        if !self.can_take_copies(frame_bytes, 1) {
            return false;
        }
        let Ok(mut claim) = self.tx.claim(LINK_PREFIX_BYTES + frame_bytes) else {
            return false;
        };
        let out = claim.bytes_mut();
        out[..4].copy_from_slice(&target.to_le_bytes());
        out[4..8].copy_from_slice(&flags.0.to_le_bytes());
        fill(&mut out[LINK_PREFIX_BYTES..]);
        claim.commit_deferred();
        self.room_bytes = self.room_bytes.saturating_sub(record_bytes(frame_bytes));
        true
    }

    /// Publishes the records written since the last call (one release store), then
    /// notifies the receiving shard's wake (one fence and a flag load; an eventfd write
    /// only when that shard is parked). Nothing at all when nothing was written.
    ///
    /// ```
    /// let (mut tx, _rx) = agentwire_router::links::link(4096, 1024).unwrap();
    /// tx.publish();
    /// ```
    pub fn publish(&mut self) {
        if !self.tx.has_unpublished() {
            return;
        }
        self.tx.publish();
        if let Some(wake) = &self.wake {
            wake.notify();
        }
    }
}

impl LinkReceiver {
    /// Hands up to `records_max` records to `f` in order; `Break` keeps that record (and
    /// everything after it) for later. Returns the records taken.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// # use agentwire_router::links::{link, LinkFlags};
    /// let (mut tx, mut rx) = link(4096, 1024).unwrap();
    /// tx.write(1, LinkFlags::NONE, 1, |o| o[0] = 9);
    /// tx.publish();
    /// assert_eq!(rx.read(8, |_| ControlFlow::Break(())), 0);
    /// assert_eq!(rx.read(8, |r| { assert_eq!(r.frame, [9]); ControlFlow::Continue(()) }), 1);
    /// ```
    pub fn read(
        &mut self,
        records_max: usize,
        mut f: impl FnMut(LinkRecord<'_>) -> ControlFlow<()>,
    ) -> usize {
        // Written only by the sending shard of this process: a read error is a bug here,
        // not hostile input.
        self.rx
            .read(records_max, |record| {
                let target = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
                let flags = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
                f(LinkRecord {
                    target,
                    flags: LinkFlags(flags),
                    frame: &record[LINK_PREFIX_BYTES..],
                })
            })
            .expect("a link ring is written only by this process")
    }

    /// True when no record waits.
    ///
    /// ```
    /// let (_tx, mut rx) = agentwire_router::links::link(4096, 1024).unwrap();
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&mut self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_bytes_in_flight_and_frees_as_the_receiver_reads() {
        let (mut tx, mut rx) = link(1 << 16, 1024).unwrap();
        let mut written = 0u32;
        while tx.write(written, LinkFlags::NONE, 56, |o| o.fill(written as u8)) {
            written += 1;
        }
        // 56-byte frames take 72 bytes each: 14 fit in a 1 KiB budget, whatever the ring.
        assert_eq!(written, 14);
        tx.publish();
        let mut next = 0u32;
        let taken = rx.read(4, |r| {
            assert_eq!((r.target, r.frame[0]), (next, next as u8));
            next += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(taken, 4);
        assert!(tx.can_take_copies(56, 4) && !tx.can_take_copies(56, 5));
        // An oversized frame goes alone on an empty link.
        rx.read(usize::MAX, |_| ControlFlow::Continue(()));
        assert!(tx.can_take_copies(4000, 1));
        assert!(tx.write(1, LinkFlags::nack(2), 4000, |o| o.fill(1)));
        assert!(
            !tx.can_take_copies(8, 1),
            "nothing rides with an oversized frame"
        );
        tx.publish();
        rx.read(1, |r| {
            assert_eq!((r.flags.reject_reason(), r.frame.len()), (2, 4000));
            ControlFlow::Continue(())
        });
        assert!(rx.is_empty());
    }
}
