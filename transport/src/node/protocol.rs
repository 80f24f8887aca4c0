//! What two nodes say to each other on a link besides data frames: control frames
//! (`FrameKind::Control`, as on a remote agent's stream) whose payload is an rkyv
//! [`LinkMsg`]. Data frames are the shared-memory wire format, with source and destination
//! translated to the receiving node's ids (see the module `node`).
//!
//! ```
//! use agentwire_transport::node::protocol::{decode, encode, LinkMsg};
//! let mut out = Vec::new();
//! encode(&LinkMsg::Ping { sent_ns: 7 }, &mut out).unwrap();
//! let header = agentwire_shm::wire::FrameHeader::validate(&out).unwrap();
//! let msg = decode(header, &out[agentwire_shm::wire::HEADER_BYTES..]).unwrap();
//! assert_eq!(msg, LinkMsg::Ping { sent_ns: 7 });
//! ```

// rkyv's derive generates resolver types whose fields carry no docs; every source type here
// is documented, so the lint is relaxed for this module only.
#![allow(missing_docs)]

use agentwire_shm::control::{ControlError, Registration};
use agentwire_shm::stream_frames::{append_control, decode_control};
use agentwire_shm::wire::FrameHeader;
use rkyv::{Archive, Deserialize, Serialize};

/// The link protocol's version; a peer that speaks another is refused with both named.
pub const LINK_PROTOCOL_VERSION: u16 = 1;

/// A link's control messages.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub enum LinkMsg {
    /// The first message each way: who the node is and what it speaks (the dialer first).
    Hello {
        /// The node's name (`[node] name`).
        node: String,
        /// [`LINK_PROTOCOL_VERSION`] of the sender.
        version: u16,
    },
    /// The accepting node refuses the link (then closes it).
    Refused {
        /// Why, for the dialer's log and `agentwire links`.
        detail: String,
    },
    /// One of the sender's agents, new or changed (its whole identity again).
    AgentUp {
        /// Its id on the sender's node.
        agent_id: u32,
        /// Name, capabilities with versions, topics subscribed now, features.
        registration: Registration,
    },
    /// One of the sender's agents left (or went stale).
    AgentDown {
        /// Its id on the sender's node.
        agent_id: u32,
    },
    /// The first registry snapshot is complete (increments follow).
    Synced,
    /// The sender's id for a topic; sent before the first publish with that id.
    TopicMap {
        /// The topic's id on the sender's node.
        topic_id: u32,
        /// Its name.
        name: String,
    },
    /// The sender has taken this many data frames off the link since it came up (sent into
    /// its router, or dropped and counted): the other side forgets them. Frames not
    /// confirmed when the link drops are nacked to their senders.
    Received {
        /// Data frames taken since the link came up.
        frames: u64,
    },
    /// A round-trip probe (and proof of life on a quiet link).
    Ping {
        /// The sender's clock when sent (ns, its own epoch).
        sent_ns: u64,
    },
    /// The answer to a [`LinkMsg::Ping`], echoing its clock.
    Pong {
        /// The `sent_ns` of the ping.
        sent_ns: u64,
    },
}

/// Appends `msg` as one control frame to `out`.
///
/// ```
/// let mut out = Vec::new();
/// agentwire_transport::node::protocol::encode(
///     &agentwire_transport::node::protocol::LinkMsg::Synced, &mut out).unwrap();
/// assert!(!out.is_empty());
/// ```
pub fn encode(msg: &LinkMsg, out: &mut Vec<u8>) -> Result<(), ControlError> {
    append_control(msg, out)
}

/// The message in a control frame (`header` already validated).
///
/// ```
/// use agentwire_shm::wire::{FrameHeader, FrameKind};
/// let h = FrameHeader::new(FrameKind::Send, 0, 0, 0);
/// assert!(agentwire_transport::node::protocol::decode(&h, &[]).is_err());
/// ```
pub fn decode(header: &FrameHeader, payload: &[u8]) -> Result<LinkMsg, ControlError> {
    decode_control(header, payload)
}

/// A message's name, for errors and logs.
///
/// ```
/// use agentwire_transport::node::protocol::{name, LinkMsg};
/// assert_eq!(name(&LinkMsg::Synced), "Synced");
/// ```
pub fn name(msg: &LinkMsg) -> &'static str {
    match msg {
        LinkMsg::Hello { .. } => "Hello",
        LinkMsg::Refused { .. } => "Refused",
        LinkMsg::AgentUp { .. } => "AgentUp",
        LinkMsg::AgentDown { .. } => "AgentDown",
        LinkMsg::Synced => "Synced",
        LinkMsg::TopicMap { .. } => "TopicMap",
        LinkMsg::Received { .. } => "Received",
        LinkMsg::Ping { .. } => "Ping",
        LinkMsg::Pong { .. } => "Pong",
    }
}
