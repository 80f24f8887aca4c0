//! Acks and nacks the router writes back to senders.

use crate::links::LinkFlags;
use crate::outbox::{Outboxes, Placed};
use crate::stats::{count, RouterStats};
use agentwire_shm::control::{NackBody, NackReason};
use agentwire_shm::wire::{FrameHeader, FrameKind, DAEMON_AGENT_ID, HEADER_BYTES};
use std::sync::atomic::Ordering;

pub(crate) fn ack(source: u32, correlation: u64, producers: &mut Outboxes, stats: &RouterStats) {
    reply(
        source,
        FrameHeader::new(FrameKind::Ack, DAEMON_AGENT_ID, source, 0).with_correlation(correlation),
        &[],
        LinkFlags::REPLY,
        producers,
        stats,
    );
    count(&stats.acks_sent, 1);
}

pub(crate) fn nack(
    source: u32,
    correlation: u64,
    reason: NackReason,
    detail: &str,
    producers: &mut Outboxes,
    stats: &RouterStats,
    source_control: Option<&agentwire_shm::segment::ControlBlock>,
) {
    count(&stats.frames_rejected, 1);
    match reason {
        NackReason::NoSuchAgent => count(&stats.nacks_no_such_agent, 1),
        NackReason::NoSubscriber => count(&stats.nacks_no_subscriber, 1),
        NackReason::DestinationFull => count(&stats.nacks_destination_full, 1),
        NackReason::Malformed => {} // counted as frames_malformed where it is detected
        NackReason::NotPermitted => count(&stats.nacks_not_permitted, 1),
    }
    if let Some(control) = source_control {
        // The agent reads these; only the router writes them.
        count(&control.frames_rejected, 1);
        control
            .last_reject_reason
            .store(reason as u32, Ordering::Relaxed);
    }
    let body = NackBody {
        reason: reason as u32,
        detail: detail.chars().take(200).collect(),
    };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&body).expect("nack body serializes");
    let header = FrameHeader::new(
        FrameKind::Nack,
        DAEMON_AGENT_ID,
        source,
        payload.len() as u32,
    )
    .with_correlation(correlation)
    .with_priority(0);
    reply(
        source,
        header,
        &payload,
        LinkFlags::nack(reason as u32),
        producers,
        stats,
    );
}

/// Writes an ack or nack for `source`; for an agent of another shard, over the link with
/// `flags` saying what it is (that shard counts a nack in the agent's control block).
pub(crate) fn reply(
    source: u32,
    header: FrameHeader,
    payload: &[u8],
    flags: LinkFlags,
    producers: &mut Outboxes,
    stats: &RouterStats,
) {
    let placed = producers.write_flagged(source, HEADER_BYTES + payload.len(), flags, |out| {
        header.write_to(out);
        out[HEADER_BYTES..].copy_from_slice(payload);
    });
    if placed == Placed::Refused {
        count(&stats.replies_dropped, 1);
    }
}
