//! Numbers C code names: frame kinds, routing flags, nack reasons and idle strategies.
//! Plain integer constants (`#define`s in the header), not enums: C may pass any integer,
//! and a Rust enum holding an undeclared value is undefined behaviour.
//!
//! ```
//! assert_eq!(agentwire::AW_KIND_SEND, agentwire_shm::wire::FrameKind::Send as u8);
//! ```

use agentwire_shm::control::NackReason;
use agentwire_shm::wire::{self, FrameKind};

/// Frame kind: unicast to an agent id.
pub const AW_KIND_SEND: u8 = 1;
/// Frame kind: fan-out to every subscriber of a topic id.
pub const AW_KIND_PUBLISH: u8 = 2;
/// Frame kind: a request expecting a response with the same correlation id.
pub const AW_KIND_REQUEST: u8 = 3;
/// Frame kind: the answer to a request.
pub const AW_KIND_RESPONSE: u8 = 4;
/// Frame kind: the daemon confirms a frame reached its destination ring.
pub const AW_KIND_ACK: u8 = 5;
/// Frame kind: the daemon refuses a frame (its payload is an archived nack body).
pub const AW_KIND_NACK: u8 = 6;
/// Frame kind: control traffic between the daemon and an agent.
pub const AW_KIND_CONTROL: u8 = 7;

/// Routing flag (`aw_message.flags`): the sender asked for an ack.
pub const AW_FLAG_ACK_REQUESTED: u32 = 1;
/// Routing flag: the destination is a capability route (anycast).
pub const AW_FLAG_ANYCAST: u32 = 2;
/// Routing flag: the destination is a feature route.
pub const AW_FLAG_FEATURE: u32 = 4;
/// Routing flag: an anycast any node of a cluster may take on equal terms (not local
/// first; see `aw_anycast_any_node`).
pub const AW_FLAG_ANY_NODE: u32 = 8;

/// Nack reason: no live agent with that id (or none for that capability route).
pub const AW_NACK_NO_SUCH_AGENT: u32 = 1;
/// Nack reason: nobody subscribes to that topic.
pub const AW_NACK_NO_SUBSCRIBER: u32 = 2;
/// Nack reason: the destination stayed full past the deadline.
pub const AW_NACK_DESTINATION_FULL: u32 = 3;
/// Nack reason: the frame failed validation.
pub const AW_NACK_MALFORMED: u32 = 4;
/// Nack reason: the sender may not send this kind of frame.
pub const AW_NACK_NOT_PERMITTED: u32 = 5;
/// Nack reason: the router gave up on the frame and the dead-letter queue would not keep it.
pub const AW_NACK_DEAD_LETTER_REFUSED: u32 = 6;

/// Idle strategy: busy-poll (lowest latency, burns the core).
pub const AW_IDLE_SPIN: u32 = 0;
/// Idle strategy: busy-poll `spins_max` empty polls, then park on the doorbell.
pub const AW_IDLE_SPIN_THEN_PARK: u32 = 1;
/// Idle strategy: park at once on every empty poll.
pub const AW_IDLE_PARK: u32 = 2;

/// Bytes of `aw_agent_info.name`, NUL included.
pub const AW_AGENT_NAME_BYTES: usize = 128;
/// Bytes of `aw_agent_info.version`, NUL included.
pub const AW_VERSION_BYTES: usize = 64;

/// `timeout_ms` value for "wait until a message arrives or the daemon goes away".
pub const AW_WAIT_FOREVER: i64 = -1;

// Literals above (cbindgen copies them into the header); tied here to the library's values.
const _: () = {
    assert!(AW_KIND_SEND == FrameKind::Send as u8);
    assert!(AW_KIND_PUBLISH == FrameKind::Publish as u8);
    assert!(AW_KIND_REQUEST == FrameKind::Request as u8);
    assert!(AW_KIND_RESPONSE == FrameKind::Response as u8);
    assert!(AW_KIND_ACK == FrameKind::Ack as u8);
    assert!(AW_KIND_NACK == FrameKind::Nack as u8);
    assert!(AW_KIND_CONTROL == FrameKind::Control as u8);
    assert!(AW_FLAG_ACK_REQUESTED == wire::FLAG_ACK_REQUESTED);
    assert!(AW_FLAG_ANYCAST == wire::FLAG_ANYCAST);
    assert!(AW_FLAG_FEATURE == wire::FLAG_FEATURE);
    assert!(AW_NACK_NO_SUCH_AGENT == NackReason::NoSuchAgent as u32);
    assert!(AW_NACK_NO_SUBSCRIBER == NackReason::NoSubscriber as u32);
    assert!(AW_NACK_DESTINATION_FULL == NackReason::DestinationFull as u32);
    assert!(AW_NACK_MALFORMED == NackReason::Malformed as u32);
    assert!(AW_NACK_NOT_PERMITTED == NackReason::NotPermitted as u32);
    assert!(AW_NACK_DEAD_LETTER_REFUSED == NackReason::DeadLetterRefused as u32);
};
