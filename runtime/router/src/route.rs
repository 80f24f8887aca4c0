//! The routing decision for one frame: validate, resolve the destination (agent, topic,
//! capability route, feature), place every copy or none.

use crate::config::ROUTER_AGENTS_MAX;
use crate::deferred::Deferrals;
use crate::links::LinkFlags;
use crate::outbox::{Outboxes, Placed};
use crate::reply::{ack, nack};
use crate::stats::{count, RouterStats};
use crate::table::RoutingTable;
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::{Destination, FrameHeader, FrameKind, DAEMON_AGENT_ID};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct RouteContext<'a> {
    pub(crate) producers: &'a mut Outboxes,
    pub(crate) deferrals: &'a mut Deferrals,
    pub(crate) table: &'a mut RoutingTable,
    pub(crate) stats: &'a RouterStats,
    /// Commands and tables were re-read since these frames were first seen.
    pub(crate) fresh: bool,
    /// Set when a frame waits for a fresh pass.
    pub(crate) needs_refresh: bool,
    /// The registry generation and the one the table was built from. A frame is visible
    /// only after everything its sender saw (e.g. an unsubscribe's reply), so loading the
    /// generation after seeing the frame tells whether the table is too old for it.
    pub(crate) generation: &'a AtomicU64,
    pub(crate) table_generation: u64,
    /// Deadline for frames deferred in this batch (clock read at most once per batch).
    pub(crate) deadline: Deadline,
    /// Bytes taken from the source ring in this batch.
    pub(crate) bytes_in: u64,
    /// The last frame seen was left in the source ring.
    pub(crate) stopped: bool,
}

/// The deadline given to frames deferred in one batch: the clock is read only when the
/// first frame of the batch is deferred.
pub(crate) struct Deadline {
    pub(crate) after_ns: Option<u64>,
    pub(crate) at_ns: Option<u64>,
}

impl Deadline {
    pub(crate) fn new(after_ns: Option<u64>) -> Self {
        Self {
            after_ns,
            at_ns: None,
        }
    }

    pub(crate) fn get(&mut self) -> u64 {
        match self.after_ns {
            None => u64::MAX,
            Some(after) => *self
                .at_ns
                .get_or_insert_with(|| monotonic_ns().saturating_add(after)),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call).
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// Routes one frame from `source`. `Break` leaves it in the source ring (destination full,
/// or destination unknown and tables not yet re-read).
pub(crate) fn route_frame(
    source: u32,
    frame: &[u8],
    ctx: &mut RouteContext<'_>,
    source_control: &agentwire_shm::segment::ControlBlock,
) -> ControlFlow<()> {
    let RouteContext {
        producers,
        deferrals,
        table,
        stats,
        fresh,
        needs_refresh,
        generation,
        table_generation,
        deadline,
        bytes_in: _,
        stopped: _,
    } = ctx;
    let (generation, table_generation) = (*generation, *table_generation);
    let (producers, deferrals, table, stats) =
        (&mut **producers, &mut **deferrals, &mut **table, *stats);
    let header = match FrameHeader::validate(frame) {
        Ok(h) => *h,
        Err(e) => {
            count(&stats.frames_malformed, 1);
            // Echo the correlation id if the bytes are there, even from a bad header.
            let correlation = FrameHeader::peek(frame).map_or(0, FrameHeader::correlation);
            nack(
                source,
                correlation,
                NackReason::Malformed,
                &e.to_string(),
                producers,
                stats,
                Some(source_control),
            );
            return ControlFlow::Continue(());
        }
    };
    if matches!(
        header.destination_kind(),
        Destination::Topic(_) | Destination::Capability(_) | Destination::Feature(_)
    ) && generation.load(Ordering::Acquire) != table_generation
    {
        *needs_refresh = true;
        return ControlFlow::Break(());
    }
    let mut unknown =
        |what: String, reason: NackReason, correlation: u64, producers: &mut Outboxes| {
            if *fresh {
                nack(
                    source,
                    correlation,
                    reason,
                    &what,
                    producers,
                    stats,
                    Some(source_control),
                );
                ControlFlow::Continue(())
            } else {
                *needs_refresh = true;
                ControlFlow::Break(())
            }
        };
    if matches!(header.kind(), FrameKind::Ack | FrameKind::Nack) {
        nack(
            source,
            header.correlation(),
            NackReason::NotPermitted,
            "agents may not send acks or nacks",
            producers,
            stats,
            Some(source_control),
        );
        return ControlFlow::Continue(());
    }
    // The ring owner is the source, whatever the frame claims.
    let stamp = |out: &mut [u8]| {
        out.copy_from_slice(frame);
        FrameHeader::peek_mut(out)
            .expect("a validated frame holds a header")
            .set_source(source);
    };
    let len = frame.len();
    // Fast path, one map lookup: a unicast to an agent of this shard with room in its ring
    // and nothing deferred anywhere (so nothing waits for it either).
    if let Destination::Agent(id) = header.destination_kind() {
        if deferrals.waiting.is_empty() && producers.deliver_local(id, len, stamp) {
            count(&stats.frames_delivered, 1);
            count(&stats.bytes_delivered, len as u64);
            if header.ack_requested() {
                ack(source, header.correlation(), producers, stats);
            }
            return ControlFlow::Continue(());
        }
    }
    let targets: Targets<'_> = match header.destination_kind() {
        Destination::Agent(id) => {
            if !producers.contains(id) || id == DAEMON_AGENT_ID {
                return unknown(
                    format!("no agent {id}"),
                    NackReason::NoSuchAgent,
                    header.correlation(),
                    producers,
                );
            }
            Targets::One(id)
        }
        Destination::Topic(topic) => match table.subscribers.get(&topic) {
            Some(subs) if !subs.is_empty() => Targets::Many(subs),
            _ => {
                return unknown(
                    format!("no subscriber to topic {topic}"),
                    NackReason::NoSubscriber,
                    header.correlation(),
                    producers,
                )
            }
        },
        Destination::Capability(route) => {
            let route = route as usize;
            match table.capability_routes.get(route) {
                Some(ids) if !ids.is_empty() => {
                    let start = table.round_robin[route];
                    table.round_robin[route] = start.wrapping_add(1);
                    Targets::One(least_loaded(ids, start, producers, deferrals))
                }
                _ => {
                    return unknown(
                        format!("no live agent for capability route {route}"),
                        NackReason::NoSuchAgent,
                        header.correlation(),
                        producers,
                    )
                }
            }
        }
        Destination::Feature(feature) => match table.features.get_mut(&feature) {
            Some((ids, cursor)) => {
                let start = *cursor;
                *cursor = start.wrapping_add(1);
                Targets::One(least_loaded(ids, start, producers, deferrals))
            }
            None => {
                return unknown(
                    format!("no live agent serves feature {feature}"),
                    NackReason::NoSuchAgent,
                    header.correlation(),
                    producers,
                )
            }
        },
    };
    // Every copy is placed or none is: straight into the destination ring when nothing
    // waits for that destination and it has room, else behind what waits in its deferral.
    // If a copy fits neither, the frame stays in the sender's ring: backpressure on this
    // sender only, and only once a destination's deferral is full.
    // A copy for another shard's agent goes over that shard's link unless the agent is
    // congested (then it waits in this shard's deferral for it). Each copy's choice is made
    // once, here, and kept below: a congestion flag that flips in between is seen next time.
    let any_waiting = !deferrals.waiting.is_empty();
    let all = targets.as_slice();
    let mut direct_bits = [0u64; ROUTER_AGENTS_MAX / 64];
    for (k, &id) in all.iter().enumerate() {
        let copies = if all.len() > 1 {
            producers.copies_via_same_link(id, all)
        } else {
            1
        };
        let direct = !(any_waiting && deferrals.is_waiting(id))
            && producers.can_claim_copies(id, len, copies);
        if direct {
            direct_bits[k / 64] |= 1 << (k % 64);
        } else if !deferrals.can_take(id, len, false) {
            return ControlFlow::Break(());
        }
    }
    // A unicast or anycast ack is sent once the frame is in the destination ring; a topic's
    // once every copy is in a ring or a deferral (a copy that later expires is nacked).
    // A unicast to another shard's agent is acked by that shard once it lands.
    let owe_ack = header.ack_requested() && matches!(targets, Targets::One(_));
    let mut ack_deferred = false;
    let link_flags = if owe_ack {
        LinkFlags::ACK_OWED
    } else {
        LinkFlags::NONE
    };
    for (k, &id) in all.iter().enumerate() {
        let direct = direct_bits[k / 64] & (1 << (k % 64)) != 0;
        let placed = if direct {
            producers.write_flagged(id, len, link_flags, stamp)
        } else {
            Placed::Refused
        };
        if placed == Placed::Delivered {
            count(&stats.frames_delivered, 1);
            count(&stats.bytes_delivered, len as u64);
        } else if placed == Placed::Forwarded {
            count(&stats.frames_forwarded, 1);
            ack_deferred |= owe_ack;
        } else {
            let pushed = deferrals.push(id, len, deadline.get(), owe_ack, stamp);
            debug_assert!(pushed, "room checked above");
            count(&stats.frames_deferred, 1);
            ack_deferred |= owe_ack;
        }
    }
    if header.ack_requested() && !ack_deferred {
        ack(source, header.correlation(), producers, stats);
    }
    ControlFlow::Continue(())
}

/// The candidate whose rx ring holds the fewest bytes (a destination with deferred frames
/// counts as full; so does a congested agent of another shard), scanning from the
/// round-robin cursor so ties spread the load.
pub(crate) fn least_loaded(
    ids: &[u32],
    start: usize,
    producers: &mut Outboxes,
    deferrals: &Deferrals,
) -> u32 {
    if ids.len() == 1 {
        return ids[0];
    }
    let mut best = (usize::MAX, ids[start % ids.len()]);
    for k in 0..ids.len() {
        let id = ids[(start + k) % ids.len()];
        let load = if deferrals.is_waiting(id) {
            usize::MAX - 1
        } else {
            producers.occupied_bytes(id)
        };
        if load < best.0 {
            best = (load, id);
            if load == 0 {
                break;
            }
        }
    }
    best.1
}

/// Delivery targets without allocating: one agent, or a topic's subscriber list
/// borrowed from the routing table.
pub(crate) enum Targets<'t> {
    One(u32),
    Many(&'t [u32]),
}

impl Targets<'_> {
    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Targets::One(id) => std::slice::from_ref(id),
            Targets::Many(v) => v,
        }
    }
}
