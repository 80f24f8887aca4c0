//! Acks and nacks the router writes back to senders. A nack's body (reason and detail) is
//! encoded into buffers made once per shard ([`NackEncoder`]): no reject path allocates.

use crate::links::LinkFlags;
use crate::outbox::{Outboxes, Placed};
use crate::sink::SinkRefusal;
use crate::stats::{count, RouterStats};
use agentwire_shm::control::{NackBody, NackReason};
use agentwire_shm::wire::{
    Destination, FrameError, FrameHeader, FrameKind, DAEMON_AGENT_ID, HEADER_BYTES,
};
use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;

/// Most bytes of a nack's detail text; longer text is cut at a character boundary.
pub const NACK_DETAIL_BYTES_MAX: usize = 200;
/// Bytes of the buffer a nack body is encoded into: the detail, the archived string's
/// header, the reason and alignment padding, with room to spare.
const NACK_PAYLOAD_BYTES_MAX: usize = 512;
/// Bytes a reply (ack or nack) takes at most.
pub(crate) const REPLY_BYTES_MAX: usize = HEADER_BYTES + NACK_PAYLOAD_BYTES_MAX;

/// Why a frame was refused, formatted into the nack's detail only when the nack is written
/// (no text is built per frame beforehand).
#[derive(Debug, Clone, Copy)]
pub(crate) enum NackDetail {
    /// A unicast to an id no agent has.
    NoAgent(u32),
    /// A publish to a topic nobody subscribes to.
    NoSubscriber(u32),
    /// An anycast to a capability route with no live agent.
    NoCapabilityAgent(u32),
    /// A feature route no live agent serves.
    NoFeatureAgent(u32),
    /// The frame failed validation.
    Malformed(FrameError),
    /// An agent sent an ack or a nack.
    AckFromAgent,
    /// The sender's `[[authorize]]` rule does not let it reach this destination.
    NotPermitted(Destination),
    /// A publish whose copies for this many subscribers were dropped (they were behind:
    /// ring and deferral full).
    SubscribersBehind(u32),
    /// A deferred frame given up on: its destination, why, and where the frame went.
    GaveUp {
        /// The destination that could not take it.
        destination: u32,
        /// Why it was given up on.
        why: &'static str,
        /// Where it went.
        outcome: GaveUpOutcome,
    },
}

/// Where a frame given up on went.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GaveUpOutcome {
    /// Into the dead-letter queue as this record.
    DeadLettered(u64),
    /// Dropped: the dead-letter queue refused it (nack `DeadLetterRefused`).
    Refused(SinkRefusal),
    /// Dropped: the router has no dead-letter queue.
    NoQueue,
}

impl fmt::Display for NackDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAgent(id) => write!(f, "no agent {id}"),
            Self::NoSubscriber(topic) => write!(f, "no subscriber to topic {topic}"),
            Self::NoCapabilityAgent(route) => {
                write!(f, "no live agent for capability route {route}")
            }
            Self::NoFeatureAgent(feature) => write!(f, "no live agent serves feature {feature}"),
            Self::Malformed(e) => write!(f, "{e}"),
            Self::AckFromAgent => f.write_str("agents may not send acks or nacks"),
            Self::NotPermitted(to) => {
                f.write_str("not permitted: the sender's [[authorize]] rule does not allow ")?;
                match to {
                    Destination::Agent(id) => write!(f, "sending to agent {id} (`send`)"),
                    Destination::Topic(id) => write!(f, "publishing to topic {id} (`publish`)"),
                    Destination::Capability(route) => {
                        write!(f, "any agent on capability route {route} (`send`)")
                    }
                    Destination::Feature(id) => {
                        write!(f, "any agent serving feature {id} (`send`)")
                    }
                }
            }
            Self::SubscribersBehind(n) => {
                write!(f, "copies for {n} subscribers dropped: they are behind")
            }
            Self::GaveUp {
                destination,
                why,
                outcome,
            } => {
                write!(f, "agent {destination} {why}; ")?;
                match outcome {
                    GaveUpOutcome::DeadLettered(sequence) => {
                        write!(f, "dead-lettered as record {sequence}")
                    }
                    GaveUpOutcome::Refused(e) => {
                        write!(f, "dropped: the dead-letter queue refused it ({e})")
                    }
                    GaveUpOutcome::NoQueue => f.write_str("dropped (no dead-letter queue)"),
                }
            }
        }
    }
}

/// Appends to a string up to a byte limit, cutting at a character boundary, so formatting
/// into a string made with that capacity never reallocates.
struct Bounded<'a> {
    text: &'a mut String,
    bytes_max: usize,
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes_max.saturating_sub(self.text.len());
        let mut cut = s.len().min(room);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        Ok(())
    }
}

/// Encodes nack bodies into buffers made once: the body's detail string (capacity
/// [`NACK_DETAIL_BYTES_MAX`]), the serializer's arena, and the output bytes.
pub(crate) struct NackEncoder {
    body: NackBody,
    arena: rkyv::ser::allocator::Arena,
    payload: Box<[u8; NACK_PAYLOAD_BYTES_MAX]>,
}

impl Default for NackEncoder {
    fn default() -> Self {
        Self {
            body: NackBody {
                reason: 0,
                detail: String::with_capacity(NACK_DETAIL_BYTES_MAX),
            },
            arena: rkyv::ser::allocator::Arena::new(),
            payload: Box::new([0; NACK_PAYLOAD_BYTES_MAX]),
        }
    }
}

impl NackEncoder {
    /// The archived [`NackBody`] for `reason` and `detail`, in this encoder's buffer.
    pub(crate) fn encode(&mut self, reason: NackReason, detail: &NackDetail) -> &[u8] {
        self.body.reason = reason as u32;
        self.body.detail.clear();
        // Bounded never fails; a Display impl that did would only shorten the detail.
        let _ = write!(
            Bounded {
                text: &mut self.body.detail,
                bytes_max: NACK_DETAIL_BYTES_MAX,
            },
            "{detail}"
        );
        let written = {
            let writer = rkyv::ser::writer::Buffer::from(&mut self.payload[..]);
            rkyv::api::high::to_bytes_in_with_alloc::<_, _, rkyv::rancor::Error>(
                &self.body,
                writer,
                self.arena.acquire(),
            )
            .expect("a nack body of at most NACK_DETAIL_BYTES_MAX fits its buffer")
            .len()
        };
        &self.payload[..written]
    }
}

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
    detail: NackDetail,
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
        NackReason::DeadLetterRefused => count(&stats.nacks_dead_letter_refused, 1),
    }
    if let Some(control) = source_control {
        // The agent reads these; only the router writes them.
        count(&control.frames_rejected, 1);
        control
            .last_reject_reason
            .store(reason as u32, Ordering::Relaxed);
    }
    producers.note_nack(source, reason as u32);
    // The encoder lives beside the outboxes it writes through: taken out for the write and
    // put back (made once, on a shard's first nack).
    let mut encoder = producers.nack_encoder.take().unwrap_or_default();
    let payload = encoder.encode(reason, &detail);
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
        payload,
        LinkFlags::nack(reason as u32),
        producers,
        stats,
    );
    producers.nack_encoder = Some(encoder);
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
