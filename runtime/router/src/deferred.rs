//! Per-destination deferrals on one shard and their service: frames waiting for room in
//! a full ring, delivered as room appears or dead-lettered past their deadline.

use crate::deferral::{Deferral, DeferredFrame};
use crate::duty_cycle::RoutingCore;
use crate::give_up::{GiveUp, GivenUp};
use crate::links::LinkFlags;
use crate::outbox::{Outboxes, Placed};
use crate::reply::ack;
use crate::route::monotonic_ns;
use crate::stats::{count, RouterStats};
use agentwire_shm::wire::FrameHeader;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every destination's deferral (see [`crate::deferral`]) and which ones hold frames.
/// This shard's own agents get theirs at registration; an agent of another shard gets one
/// here the first time frames must wait for it (it was congested), once per agent.
#[derive(Default)]
pub(crate) struct Deferrals {
    pub(crate) by_destination: rustc_hash::FxHashMap<u32, Deferral>,
    /// Destinations with frames waiting.
    pub(crate) waiting: Vec<u32>,
    /// Frames waiting in all deferrals.
    pub(crate) frames_now: usize,
    /// Bytes of each deferral (0: deferral off).
    pub(crate) capacity_bytes: usize,
    /// Bytes of this shard's agents' deferrals that frames from this shard's own senders
    /// leave free for frames arriving over links (which cannot be refused).
    pub(crate) reserve_bytes: usize,
    /// This shard's agents' congestion flags: set while their deferral holds frames.
    pub(crate) congested: rustc_hash::FxHashMap<u32, Arc<AtomicBool>>,
    /// Subscribers whose copies of a publish fit neither their ring nor their deferral.
    pub(crate) slow: SlowSubscribers,
}

/// What a publish does for subscribers that cannot take their copy
/// ([`crate::config::SlowSubscriber`]), and who is behind.
pub(crate) struct SlowSubscribers {
    /// Drop a slow subscriber's copy (else the whole frame waits: backpressure).
    pub(crate) drop: bool,
    /// Copies missed in a row that remove a subscriber (0: never).
    pub(crate) evict_copies: u64,
    /// One bit per copy of the frame being placed that is dropped (sized with the
    /// placement's `direct_bits`).
    pub(crate) dropped_bits: Vec<u64>,
    /// Subscribers that missed copies, with how many in a row (empty while everyone keeps
    /// up, so the fast path never looks here). Bounded by the agents routed to.
    pub(crate) behind: rustc_hash::FxHashMap<u32, u64>,
    /// Subscribers to remove (missed `evict_copies` in a row), for the duty cycle to ask the
    /// control loop; each once.
    pub(crate) evict: Vec<u32>,
    /// Evictions' log, rate-limited (`subscribers_evicted` counts all): a peer can
    /// subscribe, stop reading and register again as often as it likes.
    pub(crate) evict_log: crate::gate::RefusalLog,
}

impl Default for SlowSubscribers {
    fn default() -> Self {
        Self {
            drop: true,
            evict_copies: 0,
            dropped_bits: vec![0; 1],
            behind: rustc_hash::FxHashMap::default(),
            evict: Vec::new(),
            evict_log: Default::default(),
        }
    }
}

impl SlowSubscribers {
    /// Notes a copy dropped for `id`; marks it for removal once it missed `evict_copies`
    /// in a row.
    #[cold]
    pub(crate) fn missed(&mut self, id: u32, stats: &RouterStats) {
        count(&stats.subscriber_copies_dropped, 1);
        let missed = self.behind.entry(id).or_insert(0);
        *missed += 1;
        if self.evict_copies > 0 && *missed == self.evict_copies {
            count(&stats.subscribers_evicted, 1);
            if let Some(unlogged) = self.evict_log.due(std::time::Instant::now()) {
                tracing::warn!(
                    agent_id = id,
                    copies = *missed,
                    unlogged_since_last = unlogged,
                    "removing a subscriber that missed every copy of its topics (logged at \
                     most once every {:?})",
                    crate::gate::REFUSAL_LOG_INTERVAL
                );
            }
            self.evict.push(id);
        }
    }
}

impl Deferrals {
    /// Adds `id`'s deferral, with room in `waiting` for every destination that has one, so
    /// a frame deferred later never grows it.
    pub(crate) fn insert(&mut self, id: u32, deferral: Deferral) {
        self.by_destination.insert(id, deferral);
        let needed = self.by_destination.len();
        if self.waiting.capacity() < needed {
            self.waiting.reserve(needed - self.waiting.len());
        }
    }

    /// Whether frames wait for `id` (a new frame for it must queue behind them).
    #[inline]
    pub(crate) fn is_waiting(&self, id: u32) -> bool {
        !self.waiting.is_empty() && self.by_destination.get(&id).is_some_and(|d| !d.is_empty())
    }

    /// Whether a frame for `id` can wait in its deferral: one from this shard's senders
    /// leaves the link reserve free in the deferral of an agent served here; one that
    /// arrived over a link (`arrival`) may use it.
    pub(crate) fn can_take(&mut self, id: u32, frame_bytes: usize, arrival: bool) -> bool {
        let local = self.congested.contains_key(&id);
        if !local && !self.by_destination.contains_key(&id) && self.capacity_bytes > 0 {
            // First wait for an agent of another shard: allocated once, off the fast path.
            match Deferral::new(self.capacity_bytes) {
                Ok(d) => {
                    self.insert(id, d);
                }
                Err(e) => {
                    tracing::warn!(agent_id = id, "no deferral for a remote agent: {e}");
                    return false;
                }
            }
        }
        let reserve = if local && !arrival {
            self.reserve_bytes
        } else {
            0
        };
        self.by_destination.get_mut(&id).is_some_and(|d| {
            d.can_take(frame_bytes)
                && (reserve == 0
                    || d.room_bytes()
                        >= frame_bytes + crate::deferral::DEFERRAL_PREFIX_BYTES + 16 + reserve)
        })
    }

    pub(crate) fn push(
        &mut self,
        id: u32,
        frame_bytes: usize,
        deadline_ns: u64,
        ack_owed: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(deferral) = self.by_destination.get_mut(&id) else {
            return false;
        };
        let was_empty = deferral.is_empty();
        if !deferral.push_with(frame_bytes, deadline_ns, ack_owed, fill) {
            return false;
        }
        if was_empty {
            self.waiting.push(id);
            if let Some(flag) = self.congested.get(&id) {
                // Other shards stop forwarding to it and defer on their side.
                // SYNC POINT: congested. Pairs with the Acquire loads in `Outboxes` on other shards.
                flag.store(true, Ordering::Release);
            }
        }
        self.frames_now += 1;
        true
    }
}

impl RoutingCore {
    /// Moves deferred frames into their destination rings as room appears (acking those
    /// whose sender asked), and gives up on frames past their deadline, for a destination
    /// that left, or every one when `shutting_down` (see [`crate::give_up`]): each goes to
    /// the dead-letter sink or is dropped and counted, and its sender gets a nack. A busy
    /// sink keeps them waiting (with a backoff); without a sink, frames wait (or, for a
    /// destination that left or at shutdown, are dropped and counted). Returns the frames
    /// moved or given up on.
    pub(crate) fn service_deferrals(&mut self, shutting_down: bool) -> usize {
        if self.deferrals.waiting.is_empty() {
            return 0;
        }
        let now_ns = monotonic_ns();
        let Self {
            deferrals,
            producers,
            agents,
            shared,
            shard,
            dead_letters,
            batch_frames,
            shutdown_forced,
            ..
        } = self;
        let stats = &shared.stats[*shard];
        let mut work = 0;
        let mut i = 0;
        while i < deferrals.waiting.len() {
            let dest = deferrals.waiting[i];
            let gone = !producers.contains(dest);
            let Some(deferral) = deferrals.by_destination.get_mut(&dest) else {
                deferrals.waiting.swap_remove(i);
                continue;
            };
            let batch = if gone || shutting_down {
                usize::MAX
            } else {
                *batch_frames
            };
            let taken = deferral.service(batch, |d| {
                // Validated and stamped before it was deferred.
                let header = FrameHeader::peek(d.frame).expect("deferred frames are whole");
                let (source, correlation) = (header.source(), header.correlation());
                if !gone && !shutting_down {
                    if redeliver(dest, &d, source, correlation, producers, stats) {
                        return ControlFlow::Continue(());
                    }
                    if d.deadline_ns > now_ns {
                        return ControlFlow::Break(());
                    }
                }
                let source_control = agents
                    .iter()
                    .find(|a| a.agent_id == source)
                    .map(|a| a.segment.control());
                let mut give_up = GiveUp {
                    producers,
                    dead_letters,
                    stats,
                    shutting_down,
                    forced: shutting_down && *shutdown_forced,
                };
                let frame = GivenUp {
                    dest,
                    gone,
                    frame: d.frame,
                    source,
                    correlation,
                    source_control,
                };
                give_up.frame(&frame)
            });
            deferrals.frames_now -= taken;
            work += taken;
            if deferral.is_empty() {
                deferrals.waiting.swap_remove(i);
                if gone {
                    deferrals.by_destination.remove(&dest);
                }
                if let Some(flag) = deferrals.congested.get(&dest) {
                    // SYNC POINT: congested (cleared once the deferral is empty).
                    flag.store(false, Ordering::Release);
                }
            } else {
                i += 1;
            }
        }
        producers.publish();
        work
    }
}

/// Tries to move a deferred frame into its destination: its ring, or its shard's link while
/// it is not congested. True when placed (acked if its sender asked, for a local ring).
fn redeliver(
    dest: u32,
    d: &DeferredFrame<'_>,
    source: u32,
    correlation: u64,
    producers: &mut Outboxes,
    stats: &RouterStats,
) -> bool {
    let link_flags = if d.ack_owed {
        LinkFlags::ACK_OWED
    } else {
        LinkFlags::NONE
    };
    // Another shard's agent: only while it is not congested.
    let placed = if producers.is_local(dest) || producers.can_claim(dest, d.frame.len()) {
        producers.write_flagged(dest, d.frame.len(), link_flags, |out| {
            out.copy_from_slice(d.frame);
        })
    } else {
        Placed::Refused
    };
    match placed {
        Placed::Delivered => {
            count(&stats.frames_delivered, 1);
            count(&stats.bytes_delivered, d.frame.len() as u64);
            if d.ack_owed {
                ack(source, correlation, producers, stats);
            }
            true
        }
        Placed::Forwarded => {
            count(&stats.frames_forwarded, 1);
            true
        }
        Placed::Refused => false,
    }
}
