//! The routing decision for one frame: validate, resolve the destination (agent, topic,
//! capability route, feature), place every copy or none (a publish drops the copies of
//! subscribers that cannot take them, under the slow-subscriber drop policy).

use crate::deferred::Deferrals;
use crate::links::LinkFlags;
use crate::outbox::{Outboxes, Placed};
use crate::reply::{ack, nack, NackDetail};
use crate::stats::{count, RouterStats};
use crate::table::RoutingTable;
use agentwire_shm::control::NackReason;
use agentwire_shm::segment::ControlBlock;
use agentwire_shm::wire::{Destination, FrameHeader, FrameKind, DAEMON_AGENT_ID, FLAG_ANY_NODE};
use std::collections::HashMap;
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
    /// One bit per copy of a frame: placed directly or deferred (see `Placement`).
    pub(crate) direct_bits: &'a mut Vec<u64>,
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

/// The kind, routing flags and destination of `frame` (8-aligned, at least a header long:
/// a validated frame from a ring), each read once with a word load the compiler may not
/// repeat: the sender can still write the frame, and these are what the router decides on
/// and writes over every copy.
#[inline]
fn pinned_fields(frame: &[u8]) -> (u8, u32, u32) {
    let word = |at: usize| -> u64 {
        debug_assert!(at + 8 <= frame.len());
        let ptr = frame[at..at + 8].as_ptr();
        if ptr as usize % 8 == 0 {
            // SAFETY: 8 readable bytes (the slice above), 8-aligned; a relaxed atomic load
            // is one plain load that is neither split nor repeated.
            let word = unsafe { &*(ptr as *const std::sync::atomic::AtomicU64) };
            u64::from_le(word.load(Ordering::Relaxed))
        } else {
            // Not from a ring (records are 8-aligned): read once through a volatile load.
            // SAFETY: 8 readable bytes; an unaligned read of plain bytes.
            u64::from_le_bytes(unsafe { core::ptr::read_volatile(ptr as *const [u8; 8]) })
        }
    };
    // Little-endian header: kind is byte 6, flags bytes 12..16, destination bytes 28..32.
    let (w0, w1, w3) = (word(0), word(8), word(24));
    ((w0 >> 48) as u8, (w1 >> 32) as u32, (w3 >> 32) as u32)
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
    source_control: &ControlBlock,
) -> ControlFlow<()> {
    let mut header = match FrameHeader::validate(frame) {
        Ok(h) => *h,
        Err(e) => {
            count(&ctx.stats.frames_malformed, 1);
            // Echo the correlation id if the bytes are there, even from a bad header.
            let correlation = FrameHeader::peek(frame).map_or(0, FrameHeader::correlation);
            let why = (NackReason::Malformed, NackDetail::Malformed(e));
            reject(source, correlation, why, ctx, source_control);
            return ControlFlow::Continue(());
        }
    };
    // The fields the router acts on and restamps on every copy (below), pinned: the sender
    // can still write the shared bytes, and the compiler, which takes `frame` for immutable,
    // could otherwise read them again after this point. Every decision from here on and
    // every copy use these values.
    let (kind, flags, destination) = pinned_fields(frame);
    header.kind = kind;
    header.routing_flags.set(flags);
    header.destination.set(destination);
    let (flags_raw, destination_raw) = (header.routing_flags, header.destination);
    if FrameKind::from_u8(kind).is_none() {
        // Rewritten between the check and the pinning: as malformed as it gets.
        count(&ctx.stats.frames_malformed, 1);
        let why = (
            NackReason::Malformed,
            NackDetail::Malformed(agentwire_shm::wire::FrameError::UnknownKind { found: kind }),
        );
        reject(source, header.correlation(), why, ctx, source_control);
        return ControlFlow::Continue(());
    }
    let destination = header.destination_kind();
    // SYNC POINT: registry generation (the Release store in `shared::bump`).
    if !matches!(destination, Destination::Agent(_))
        && ctx.generation.load(Ordering::Acquire) != ctx.table_generation
    {
        ctx.needs_refresh = true;
        return ControlFlow::Break(());
    }
    // A node link nacks, on a proxy's behalf, a frame the link lost (daemon code: its
    // gateway and proxies are in `link_gateways` / `behind_link`); nobody else may.
    let link_nack = header.kind() == FrameKind::Nack
        && !ctx.producers.link_gateways.is_empty()
        && (ctx.producers.link_gateways.contains(&source)
            || ctx.producers.behind_link.contains(&source));
    if matches!(header.kind(), FrameKind::Ack | FrameKind::Nack) && !link_nack {
        let why = (NackReason::NotPermitted, NackDetail::AckFromAgent);
        reject(source, header.correlation(), why, ctx, source_control);
        return ControlFlow::Continue(());
    }
    // What is copied is what was checked: the frame is copied in one go, then the pinned
    // kind, flags and destination are written over the copy's (the sender may have
    // rewritten them in between, e.g. the kind into an ack) and the ring owner is stamped
    // as source whatever the frame claims. Lengths, version and priority need no restamp:
    // a receiver checks them itself and nothing it does with them reaches another agent.
    let stamp = |out: &mut [u8]| {
        out.copy_from_slice(frame);
        let copy = FrameHeader::peek_mut(out).expect("a validated frame holds a header");
        copy.set_source(source);
        copy.kind = kind;
        copy.routing_flags = flags_raw;
        copy.destination = destination_raw;
    };
    let len = frame.len();
    // A sender the `[[authorize]]` policy restricts (none without rules): its destination is
    // checked, and routes pick only among agents it may reach.
    let restricted = ctx
        .table
        .send_rights
        .as_ref()
        .and_then(|rights| rights.slot_of(source));
    // Fast path, one map lookup: a unicast to an agent of this shard with room in its ring
    // and nothing deferred anywhere (so nothing waits for it either).
    if let (None, Destination::Agent(id)) = (restricted, destination) {
        if ctx.deferrals.waiting.is_empty() && ctx.producers.deliver_local(id, len, stamp) {
            count(&ctx.stats.frames_delivered, 1);
            count(&ctx.stats.bytes_delivered, len as u64);
            if header.ack_requested() {
                ack(source, header.correlation(), ctx.producers, ctx.stats);
            }
            return ControlFlow::Continue(());
        }
    }
    // Anycast and feature routes take this node's agents first unless the sender said any
    // node will do.
    let local_first = header.routing_flags.get() & FLAG_ANY_NODE == 0;
    let resolved = if let Some(slot) = restricted {
        let (table, producers, deferrals) = (&mut *ctx.table, &mut *ctx.producers, &*ctx.deferrals);
        to_permitted(slot, destination, table, producers, deferrals, local_first)
    } else {
        let anyone = |_: u32| true;
        match destination {
            Destination::Agent(id) => to_agent(id, ctx.producers),
            Destination::Topic(topic) => to_topic(topic, &ctx.table.subscribers),
            Destination::Capability(route) => {
                let t = &mut *ctx.table;
                let (routes, cursors) = (&t.capability_routes, &mut t.round_robin);
                let (producers, deferrals) = (&mut *ctx.producers, &*ctx.deferrals);
                to_capability(
                    route,
                    routes,
                    cursors,
                    producers,
                    deferrals,
                    anyone,
                    local_first,
                )
            }
            Destination::Feature(feature) => {
                let features = &mut ctx.table.features;
                let (producers, deferrals) = (&mut *ctx.producers, &*ctx.deferrals);
                to_feature(feature, features, producers, deferrals, anyone, local_first)
            }
        }
    };
    match resolved {
        Ok(targets) => {
            let mut placement = Placement {
                producers: ctx.producers,
                deferrals: ctx.deferrals,
                stats: ctx.stats,
                deadline: &mut ctx.deadline,
                direct_bits: ctx.direct_bits,
            };
            placement.place(source, &header, len, targets, stamp, source_control)
        }
        // A destination unknown in tables that may be older than the frame waits for one
        // pass that re-reads them, and is refused only if it is still unknown then.
        Err(_) if !ctx.fresh => {
            ctx.needs_refresh = true;
            ControlFlow::Break(())
        }
        Err(why) => {
            if let (NackDetail::NotPermitted(_), Some(rights)) =
                (&why.1, ctx.table.send_rights.as_mut())
            {
                count(&ctx.stats.frames_not_permitted, 1);
                rights.note_refusal(source, &why.1);
            }
            reject(source, header.correlation(), why, ctx, source_control);
            ControlFlow::Continue(())
        }
    }
}

/// Resolves `destination` for a source the policy restricts (its rights: `slot` in the
/// shard's send rights): a unicast or a publish only to what its rule allows, a route only
/// among the agents it may reach; `NotPermitted` otherwise.
fn to_permitted<'t>(
    slot: usize,
    destination: Destination,
    table: &'t mut RoutingTable,
    producers: &mut Outboxes,
    deferrals: &Deferrals,
    local_first: bool,
) -> Result<Targets<'t>, Unresolved> {
    let RoutingTable {
        send_rights,
        subscribers,
        capability_routes,
        round_robin,
        features,
        ..
    } = table;
    let allowed = send_rights
        .as_ref()
        .expect("called for a restricted source only")
        .allowed(slot);
    let may_reach = |id: u32| allowed.agent(id);
    let resolved = match destination {
        Destination::Agent(id) if may_reach(id) => to_agent(id, producers),
        Destination::Topic(topic) if allowed.topic(topic) => to_topic(topic, subscribers),
        Destination::Agent(_) | Destination::Topic(_) => Err((
            NackReason::NotPermitted,
            NackDetail::NotPermitted(destination),
        )),
        Destination::Capability(route) => to_capability(
            route,
            capability_routes,
            round_robin,
            producers,
            deferrals,
            may_reach,
            local_first,
        ),
        Destination::Feature(feature) => to_feature(
            feature,
            features,
            producers,
            deferrals,
            may_reach,
            local_first,
        ),
    };
    // Every refusal names the destination the rule does not let it reach.
    resolved.map_err(|e| match e.0 {
        NackReason::NotPermitted => (e.0, NackDetail::NotPermitted(destination)),
        _ => e,
    })
}

/// Why a destination resolved to nobody.
type Unresolved = (NackReason, NackDetail);

/// Nacks a frame from `source` for `reason`.
fn reject(
    source: u32,
    correlation: u64,
    (reason, detail): Unresolved,
    ctx: &mut RouteContext<'_>,
    source_control: &ControlBlock,
) {
    let (producers, stats) = (&mut *ctx.producers, ctx.stats);
    nack(
        source,
        correlation,
        reason,
        detail,
        producers,
        stats,
        Some(source_control),
    );
}

/// A unicast: the agent, on this shard or another.
fn to_agent(id: u32, producers: &Outboxes) -> Result<Targets<'static>, Unresolved> {
    if !producers.contains(id) || id == DAEMON_AGENT_ID {
        return Err((NackReason::NoSuchAgent, NackDetail::NoAgent(id)));
    }
    Ok(Targets::One(id))
}

/// A publish: every subscriber of the topic.
fn to_topic(topic: u32, subscribers: &HashMap<u32, Vec<u32>>) -> Result<Targets<'_>, Unresolved> {
    match subscribers.get(&topic) {
        Some(subs) if !subs.is_empty() => Ok(Targets::Many(subs)),
        _ => Err((NackReason::NoSubscriber, NackDetail::NoSubscriber(topic))),
    }
}

/// An anycast: the least-loaded live agent on the capability route that `may_reach`
/// allows (`NotPermitted` when it allows none of them); this node's agents first when
/// `local_first`.
fn to_capability(
    route: u32,
    routes: &[Vec<u32>],
    cursors: &mut [usize],
    producers: &mut Outboxes,
    deferrals: &Deferrals,
    may_reach: impl Fn(u32) -> bool,
    local_first: bool,
) -> Result<Targets<'static>, Unresolved> {
    let index = route as usize;
    match routes.get(index) {
        Some(ids) if !ids.is_empty() => {
            let start = cursors[index];
            cursors[index] = start.wrapping_add(1);
            match least_loaded(ids, start, producers, deferrals, may_reach, local_first) {
                Some(id) => Ok(Targets::One(id)),
                None => Err((
                    NackReason::NotPermitted,
                    NackDetail::NoCapabilityAgent(route),
                )),
            }
        }
        _ => Err((
            NackReason::NoSuchAgent,
            NackDetail::NoCapabilityAgent(route),
        )),
    }
}

/// A feature route: the least-loaded live agent serving the feature that `may_reach` allows
/// (`NotPermitted` when it allows none of them); this node's agents first when
/// `local_first`.
fn to_feature(
    feature: u32,
    features: &mut rustc_hash::FxHashMap<u32, (Vec<u32>, usize)>,
    producers: &mut Outboxes,
    deferrals: &Deferrals,
    may_reach: impl Fn(u32) -> bool,
    local_first: bool,
) -> Result<Targets<'static>, Unresolved> {
    match features.get_mut(&feature) {
        Some((ids, cursor)) => {
            let start = *cursor;
            *cursor = start.wrapping_add(1);
            match least_loaded(ids, start, producers, deferrals, may_reach, local_first) {
                Some(id) => Ok(Targets::One(id)),
                None => Err((
                    NackReason::NotPermitted,
                    NackDetail::NoFeatureAgent(feature),
                )),
            }
        }
        None => Err((NackReason::NoSuchAgent, NackDetail::NoFeatureAgent(feature))),
    }
}

/// Where the copies of one frame go: the outboxes, the deferrals, and a bit per copy saying
/// whether it goes straight into a ring or link (a scratch sized at table rebuild).
struct Placement<'c, 'a> {
    producers: &'c mut Outboxes,
    deferrals: &'c mut Deferrals,
    stats: &'a RouterStats,
    deadline: &'c mut Deadline,
    direct_bits: &'c mut Vec<u64>,
}

impl Placement<'_, '_> {
    /// Places every copy or none: straight into the destination ring when nothing waits for
    /// that destination and it has room, else behind what waits in its deferral. If a copy
    /// fits neither, the frame stays in the sender's ring (`Break`): backpressure on this
    /// sender only, and only once a destination's deferral is full. A publish (`Many`)
    /// under the drop policy instead drops the copies that fit neither.
    fn place(
        &mut self,
        source: u32,
        header: &FrameHeader,
        len: usize,
        targets: Targets<'_>,
        stamp: impl Fn(&mut [u8]),
        source_control: &ControlBlock,
    ) -> ControlFlow<()> {
        let may_drop = self.deferrals.slow.drop && matches!(targets, Targets::Many(_));
        let Some(dropped) = self.plan(targets.as_slice(), len, may_drop) else {
            return ControlFlow::Break(());
        };
        // A unicast or anycast ack is sent once the frame is in the destination ring; a
        // topic's once every copy is in a ring or a deferral (a copy that later expires is
        // nacked). A unicast to another shard's agent is acked by that shard once it lands.
        let owe_ack = header.ack_requested() && matches!(targets, Targets::One(_));
        let is_publish = header.kind() == FrameKind::Publish;
        let copies = targets.as_slice();
        let ack_deferred = self.write_copies(copies, len, owe_ack, is_publish, dropped, stamp);
        if dropped > 0 {
            if header.ack_requested() {
                let detail = NackDetail::SubscribersBehind(dropped as u32);
                let why = NackReason::DestinationFull;
                let (producers, stats) = (&mut *self.producers, self.stats);
                let corr = header.correlation();
                nack(
                    source,
                    corr,
                    why,
                    detail,
                    producers,
                    stats,
                    Some(source_control),
                );
            }
        } else if header.ack_requested() && !ack_deferred {
            ack(source, header.correlation(), self.producers, self.stats);
        }
        ControlFlow::Continue(())
    }

    /// Decides each copy's place: direct (ring or link, bit set) or deferred; with
    /// `may_drop`, a copy that fits neither is dropped (its bit set in `dropped_bits`). A
    /// copy for another shard's agent goes over that shard's link unless the agent is
    /// congested (then it waits in this shard's deferral for it). Each choice is made once,
    /// here, and kept: a congestion flag that flips in between is seen next time. `None`
    /// when some copy fits neither and may not be dropped; else how many were dropped.
    fn plan(&mut self, all: &[u32], len: usize, may_drop: bool) -> Option<usize> {
        let words = all.len().div_ceil(64);
        if self.direct_bits.len() < words {
            // Sized for the largest subscriber list at table rebuild; only a list that grew
            // since (not yet rebuilt) reaches here.
            self.direct_bits.resize(words, 0);
            self.deferrals.slow.dropped_bits.resize(words, 0);
        }
        self.direct_bits[..words].fill(0);
        let mut dropped = 0;
        let any_waiting = !self.deferrals.waiting.is_empty();
        for (k, &id) in all.iter().enumerate() {
            let copies = if all.len() > 1 {
                self.producers.copies_via_same_link(id, all)
            } else {
                1
            };
            let direct = !(any_waiting && self.deferrals.is_waiting(id))
                && self.producers.can_claim_copies(id, len, copies);
            if direct {
                self.direct_bits[k / 64] |= 1 << (k % 64);
            } else if !self.deferrals.can_take(id, len, false) {
                if !may_drop {
                    return None;
                }
                if dropped == 0 {
                    self.deferrals.slow.dropped_bits[..words].fill(0);
                }
                self.deferrals.slow.dropped_bits[k / 64] |= 1 << (k % 64);
                dropped += 1;
            }
        }
        Some(dropped)
    }

    /// Writes every copy where [`Placement::plan`] put it (none of the `dropped` ones).
    /// Returns whether an owed ack was left to another shard or to the deferral.
    fn write_copies(
        &mut self,
        all: &[u32],
        len: usize,
        owe_ack: bool,
        is_publish: bool,
        dropped: usize,
        stamp: impl Fn(&mut [u8]),
    ) -> bool {
        let stats = self.stats;
        let link_flags = if owe_ack {
            LinkFlags::ACK_OWED
        } else {
            LinkFlags::NONE
        };
        let mut ack_deferred = false;
        for (k, &id) in all.iter().enumerate() {
            if dropped > 0 && self.deferrals.slow.dropped_bits[k / 64] & (1 << (k % 64)) != 0 {
                self.deferrals.slow.missed(id, stats);
                continue;
            }
            if !self.deferrals.slow.behind.is_empty() {
                // It takes copies again: no longer behind.
                self.deferrals.slow.behind.remove(&id);
            }
            let direct = self.direct_bits[k / 64] & (1 << (k % 64)) != 0;
            // A remote agent behind a gateway chosen by anycast or feature: its copy names it.
            // A publish keeps its topic (the gateway's subscriber is known by the topic).
            let readdress = !self.producers.behind_gateway.is_empty()
                && !is_publish
                && self.producers.behind_gateway.contains(&id);
            let fill = |out: &mut [u8]| {
                stamp(out);
                if readdress {
                    let header =
                        FrameHeader::peek_mut(out).expect("a validated frame holds a header");
                    header.address_to(id);
                }
            };
            let placed = if direct {
                self.producers.write_flagged(id, len, link_flags, fill)
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
                let deadline_ns = self.deadline.get();
                let pushed = self.deferrals.push(id, len, deadline_ns, owe_ack, fill);
                debug_assert!(pushed, "room checked by plan");
                count(&stats.frames_deferred, 1);
                self.producers.note_deferred(id);
                ack_deferred |= owe_ack;
            }
        }
        ack_deferred
    }
}

/// The candidate `may_reach` allows whose rx ring holds the fewest bytes (a destination
/// with deferred frames counts as full; so does a congested agent of another shard),
/// scanning from the round-robin cursor so ties spread the load; `None` when it allows none.
/// With `local_first`, an agent of this node comes first: one behind a node link (another
/// node's) is taken only when every local candidate is full or none is allowed.
pub(crate) fn least_loaded(
    ids: &[u32],
    start: usize,
    producers: &mut Outboxes,
    deferrals: &Deferrals,
    may_reach: impl Fn(u32) -> bool,
    local_first: bool,
) -> Option<u32> {
    if ids.len() == 1 {
        return Some(ids[0]).filter(|&id| may_reach(id));
    }
    let links = local_first && !producers.behind_link.is_empty();
    // The best of this node's agents, and of the other nodes' (only when links exist).
    let mut best = (usize::MAX, None);
    let mut best_remote = (usize::MAX, None);
    for k in 0..ids.len() {
        let id = ids[(start + k) % ids.len()];
        if !may_reach(id) {
            continue;
        }
        let load = if deferrals.is_waiting(id) {
            usize::MAX - 1
        } else {
            producers.occupied_bytes(id)
        };
        if links && producers.behind_link.contains(&id) {
            if load < best_remote.0 {
                best_remote = (load, Some(id));
            }
            continue;
        }
        if load < best.0 {
            best = (load, Some(id));
            if load == 0 {
                break;
            }
        }
    }
    // A full local agent (its deferral in use) loses to a remote one with room.
    match (best, best_remote) {
        ((local_load, Some(local)), (remote_load, Some(remote))) => Some(
            if local_load >= usize::MAX - 1 && remote_load < local_load {
                remote
            } else {
                local
            },
        ),
        ((_, local), (_, remote)) => local.or(remote),
    }
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
