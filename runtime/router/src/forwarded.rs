//! Taking what other shards forwarded over links.

use crate::duty_cycle::RoutingCore;
use crate::give_up::{GiveUp, GivenUp};
use crate::reply::{ack, nack, NackDetail};
use crate::route::Deadline;
use crate::stats::count;
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::FrameHeader;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

impl RoutingCore {
    /// Delivers what other shards forwarded to this shard's agents: into the agent's ring,
    /// or behind what waits in its deferral (links may use the room the deferral keeps for
    /// them), acking when the sender asked; relays acks and nacks for this shard's agents
    /// (counting nacks in their control blocks). A record for an agent this shard does not
    /// know waits for one table refresh, then its sender is nacked. When `shutting_down`, a
    /// frame that fits neither its destination's ring nor its deferral is given up on
    /// (dead-lettered or dropped, and nacked) instead of waiting in the link. Returns
    /// records taken.
    pub(crate) fn drain_links(&mut self, fresh: bool, shutting_down: bool) -> usize {
        let Self {
            links_in,
            producers,
            deferrals,
            agents,
            shared,
            shard,
            needs_refresh,
            defer_deadline_ns,
            dead_letters,
            lane_budget,
            shutdown_forced,
            ..
        } = self;
        let stats = &shared.stats[*shard];
        let mut deadline = Deadline::new(defer_deadline_ns.filter(|_| dead_letters.is_some()));
        let mut taken = 0;
        for link in links_in.iter_mut() {
            taken += link.read(lane_budget[0], |record| {
                let target = record.target;
                let frame = record.frame;
                let len = frame.len();
                let copy = |out: &mut [u8]| out.copy_from_slice(frame);
                if record.flags.is_reply() {
                    let reason = record.flags.reject_reason();
                    if reason != 0 {
                        producers.note_nack(target, reason);
                        if let Some(a) = agents.iter().find(|a| a.agent_id == target) {
                            let control = a.segment.control();
                            count(&control.frames_rejected, 1);
                            control.last_reject_reason.store(reason, Ordering::Relaxed);
                        }
                    }
                    if !(producers.is_local(target) && producers.write(target, len, copy)) {
                        count(&stats.replies_dropped, 1);
                    }
                    return ControlFlow::Continue(());
                }
                // Validated and stamped by the shard that forwarded it.
                let header = FrameHeader::peek(frame).expect("forwarded frames are whole");
                let (source, correlation) = (header.source(), header.correlation());
                if !producers.is_local(target) {
                    if !fresh {
                        // Maybe registered here a moment ago: re-read commands first.
                        *needs_refresh = true;
                        return ControlFlow::Break(());
                    }
                    nack(
                        source,
                        correlation,
                        NackReason::NoSuchAgent,
                        NackDetail::NoAgent(target),
                        producers,
                        stats,
                        None,
                    );
                    return ControlFlow::Continue(());
                }
                let waiting = deferrals.is_waiting(target);
                if !waiting && producers.write(target, len, copy) {
                    count(&stats.frames_delivered, 1);
                    count(&stats.bytes_delivered, len as u64);
                    if record.flags.ack_owed() {
                        ack(source, correlation, producers, stats);
                    }
                } else if deferrals.can_take(target, len, true) {
                    let pushed =
                        deferrals.push(target, len, deadline.get(), record.flags.ack_owed(), copy);
                    debug_assert!(pushed, "room checked");
                    count(&stats.frames_deferred, 1);
                    producers.note_deferred(target);
                } else if shutting_down {
                    let mut give_up = GiveUp {
                        producers,
                        dead_letters,
                        stats,
                        shutting_down,
                        forced: *shutdown_forced,
                    };
                    let given = GivenUp {
                        dest: target,
                        gone: false,
                        frame,
                        source,
                        correlation,
                        source_control: None,
                    };
                    return give_up.frame(&given);
                } else {
                    // Only a frame too large to defer, for a full ring: it waits here.
                    return ControlFlow::Break(());
                }
                count(&stats.frames_from_links, 1);
                ControlFlow::Continue(())
            });
        }
        producers.publish();
        taken
    }
}
