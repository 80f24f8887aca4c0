//! Giving up on frames the router cannot deliver (past their deadline, for a destination
//! that left, or at shutdown): each is offered to the dead-letter sink ([`DeadLetters`]) and
//! is either kept there or dropped; either way its sender is nacked, and a dropped frame is
//! counted in `frames_dropped`, never reported as stored.
//!
//! What the sink's answer means:
//! - kept: counted in `frames_dead_lettered`, nack `DestinationFull` / `NoSuchAgent` naming
//!   the record;
//! - `Busy` (a replay or purge holds the queue's lock): the frame stays where it is and the
//!   shard does not ask the sink again before a backoff passes ([`DEAD_LETTER_RETRY_MIN`]
//!   doubling to [`DEAD_LETTER_RETRY_MAX`]); at shutdown it is retried until the shutdown's
//!   time bound, then dropped;
//! - any other refusal (the sender's quota, full, too large, a write failure): retrying
//!   would not help, so the frame is dropped at once and nacked `DeadLetterRefused`. This is
//!   what frees a deferral that hostile senders filled once the queue stopped taking their
//!   frames, and what keeps the router from offering the same frames again every cycle.
//!
//! Nothing here allocates per frame: the nack is encoded into the shard's buffers.

use crate::config::{DEAD_LETTER_RETRY_MAX, DEAD_LETTER_RETRY_MIN};
use crate::outbox::Outboxes;
use crate::reply::{nack, GaveUpOutcome, NackDetail, REPLY_BYTES_MAX};
use crate::route::monotonic_ns;
use crate::shared::Shared;
use crate::sink::{DeadLetterSink, SinkRefusal};
use crate::stats::{count, RouterStats};
use agentwire_shm::control::NackReason;
use agentwire_shm::segment::ControlBlock;
use rustc_hash::FxHashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

/// A shard's dead-letter sink, whether it holds appends not yet synced, and the backoff
/// after it answered `Busy`.
#[derive(Default)]
pub(crate) struct DeadLetters {
    sink: Option<Box<dyn DeadLetterSink>>,
    /// Where the senders' uids are looked up (the registry), and the answers so far
    /// (at most [`OWNERS_CACHED_MAX`]; a frame is dead-lettered rarely, so a miss may take
    /// the registry's lock).
    owners: Option<Arc<Shared>>,
    owners_cached: FxHashMap<u32, Option<u32>>,
    /// Something was kept since the last flush.
    unflushed: bool,
    /// Monotonic ns before which the sink is not asked again (0: no backoff).
    retry_at_ns: u64,
    /// The current backoff (0 after anything but `Busy`).
    backoff_ns: u64,
    /// The last refusal, logged once when it starts (not once per frame).
    last_refusal: Option<SinkRefusal>,
}

/// What became of one offer to [`DeadLetters`].
enum Offer {
    /// Kept as this record.
    Kept(u64),
    /// Busy (now, or still within the backoff): try again later.
    Busy,
    /// Refused for good.
    Refused(SinkRefusal),
    /// There is no sink.
    NoSink,
}

/// Senders whose uids a shard's [`DeadLetters`] remembers before it starts over.
const OWNERS_CACHED_MAX: usize = 4096;

impl DeadLetters {
    /// Sets the sink, and where the senders' uids are looked up.
    pub(crate) fn set(&mut self, sink: Box<dyn DeadLetterSink>, owners: Arc<Shared>) {
        self.sink = Some(sink);
        self.owners = Some(owners);
        // Reserved once: remembering a sender never allocates on the give-up path.
        self.owners_cached =
            FxHashMap::with_capacity_and_hasher(OWNERS_CACHED_MAX, Default::default());
    }

    pub(crate) fn is_some(&self) -> bool {
        self.sink.is_some()
    }

    /// Syncs what was kept since the last sync, if anything.
    pub(crate) fn flush_unflushed(&mut self) {
        if std::mem::take(&mut self.unflushed) {
            self.flush();
        }
    }

    /// Syncs the sink.
    pub(crate) fn flush(&mut self) {
        self.unflushed = false;
        if let Some(sink) = self.sink.as_mut() {
            sink.flush();
        }
    }

    /// Offers a frame. While a `Busy` backoff runs the sink is not called, unless
    /// `ignore_backoff` (the shutdown's last pass).
    fn offer(
        &mut self,
        reason: NackReason,
        frame: &[u8],
        source: u32,
        ignore_backoff: bool,
        stats: &RouterStats,
    ) -> Offer {
        let Some(sink) = self.sink.as_mut() else {
            return Offer::NoSink;
        };
        if self.retry_at_ns != 0 && !ignore_backoff && monotonic_ns() < self.retry_at_ns {
            return Offer::Busy;
        }
        let owner = owner_of(self.owners.as_deref(), &mut self.owners_cached, source);
        match sink.accept_from(reason, frame, owner) {
            Ok(sequence) => {
                self.unflushed = true;
                self.backoff_ns = 0;
                self.retry_at_ns = 0;
                if let Some(was) = self.last_refusal.take() {
                    tracing::info!("dead-letter queue takes frames again (it was: {was})");
                }
                Offer::Kept(sequence)
            }
            Err(refusal) => {
                count(&stats.dead_letter_refusals, 1);
                if self.last_refusal != Some(refusal) {
                    tracing::warn!(
                        "dead-letter queue refused a frame: {refusal}; {}",
                        if refusal == SinkRefusal::Busy {
                            "frames wait and are offered again with a backoff"
                        } else {
                            "such frames are dropped and their senders nacked \
                             (counted in frames_dropped)"
                        }
                    );
                    self.last_refusal = Some(refusal);
                }
                if refusal == SinkRefusal::Busy {
                    let min_ns = DEAD_LETTER_RETRY_MIN.as_nanos() as u64;
                    let max_ns = DEAD_LETTER_RETRY_MAX.as_nanos() as u64;
                    self.backoff_ns = (self.backoff_ns * 2).clamp(min_ns, max_ns);
                    self.retry_at_ns = monotonic_ns() + self.backoff_ns;
                    Offer::Busy
                } else {
                    // The sink answered (it took the lock): no reason to hold back.
                    self.backoff_ns = 0;
                    self.retry_at_ns = 0;
                    Offer::Refused(refusal)
                }
            }
        }
    }
}

/// The uid the agent `source` connected as, if the registry of `owners` knows it: from
/// `cached` when asked before, else from the registry (its lock, on the give-up path only),
/// remembered in `cached` (its capacity reserved: it starts over when full).
fn owner_of(
    owners: Option<&Shared>,
    cached: &mut FxHashMap<u32, Option<u32>>,
    source: u32,
) -> Option<u32> {
    if let Some(&owner) = cached.get(&source) {
        return owner;
    }
    let owner = owners?
        .registry
        .lock()
        .expect("registry lock")
        .owner_of(source);
    if cached.len() >= OWNERS_CACHED_MAX {
        cached.clear();
    }
    cached.insert(source, owner);
    owner
}

/// Gives up on frames: each goes to the dead-letter sink or is dropped and counted, and its
/// sender is nacked.
pub(crate) struct GiveUp<'c> {
    pub(crate) producers: &'c mut Outboxes,
    pub(crate) dead_letters: &'c mut DeadLetters,
    pub(crate) stats: &'c RouterStats,
    pub(crate) shutting_down: bool,
    /// Past the shutdown's time bound: nothing waits any more (not for room for a nack, not
    /// for a busy sink).
    pub(crate) forced: bool,
}

/// One frame given up on: for `dest` (`gone`: the destination left), from `source`.
pub(crate) struct GivenUp<'f> {
    pub(crate) dest: u32,
    pub(crate) gone: bool,
    pub(crate) frame: &'f [u8],
    pub(crate) source: u32,
    pub(crate) correlation: u64,
    /// The sender's control block, where its rejections are counted.
    pub(crate) source_control: Option<&'f ControlBlock>,
}

impl GiveUp<'_> {
    /// Gives up on a frame. `Break` keeps it: the sink is busy (until the shutdown's time
    /// bound), there is no sink and the destination may still take it, or, at shutdown, its
    /// sender's nack would not be placed yet. `Continue`: it was kept or dropped, and nacked.
    pub(crate) fn frame(&mut self, given: &GivenUp<'_>) -> ControlFlow<()> {
        let GivenUp {
            dest,
            gone,
            frame,
            source,
            correlation,
            source_control,
        } = *given;
        // At shutdown a nack for another shard's agent waits for room on the link rather
        // than being lost.
        if self.shutting_down && !self.forced && !self.producers.can_reply(source, REPLY_BYTES_MAX)
        {
            return ControlFlow::Break(());
        }
        let stats = self.stats;
        let (mut reason, why) = if gone {
            (NackReason::NoSuchAgent, "left with frames waiting for it")
        } else if self.shutting_down {
            (NackReason::DestinationFull, "still full at daemon shutdown")
        } else {
            (NackReason::DestinationFull, "stayed full past the deadline")
        };
        let outcome = match self
            .dead_letters
            .offer(reason, frame, source, self.forced, stats)
        {
            Offer::Kept(sequence) => {
                count(&stats.frames_dead_lettered, 1);
                GaveUpOutcome::DeadLettered(sequence)
            }
            Offer::Busy if !self.forced => return ControlFlow::Break(()),
            Offer::Busy => {
                count(&stats.frames_dropped, 1);
                reason = NackReason::DeadLetterRefused;
                GaveUpOutcome::Refused(SinkRefusal::Busy)
            }
            Offer::Refused(refusal) => {
                count(&stats.frames_dropped, 1);
                if refusal == SinkRefusal::OverQuota {
                    count(&stats.dead_letters_over_quota, 1);
                }
                reason = NackReason::DeadLetterRefused;
                GaveUpOutcome::Refused(refusal)
            }
            Offer::NoSink if !gone && !self.shutting_down => return ControlFlow::Break(()),
            Offer::NoSink => {
                count(&stats.frames_dropped, 1);
                GaveUpOutcome::NoQueue
            }
        };
        let detail = NackDetail::GaveUp {
            destination: dest,
            why,
            outcome,
        };
        nack(
            source,
            correlation,
            reason,
            detail,
            self.producers,
            stats,
            source_control,
        );
        ControlFlow::Continue(())
    }
}
