//! The frame wire format: a fixed 48-byte header read in place with `zerocopy`, followed by
//! an rkyv payload that the router never decodes.
//!
//! The layout is documented byte by byte in `docs/wire.md`; the `const` asserts at the end
//! of this file keep the two in step.
//!
//! ```
//! use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
//! let mut buf = [0u64; 8]; // 64 bytes, 8-aligned
//! let bytes = zerocopy::IntoBytes::as_mut_bytes(&mut buf[..]);
//! let header = FrameHeader::new(FrameKind::Send, 7, 9, 16);
//! header.write_to(&mut bytes[..HEADER_BYTES]);
//! let read = FrameHeader::validate(&bytes[..HEADER_BYTES + 16]).unwrap();
//! assert_eq!(read.destination(), 9);
//! ```

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of [`FrameHeader`] in bytes; the payload starts at this offset (8-byte aligned).
pub const HEADER_BYTES: usize = 48;

/// The wire format's major version. A reader rejects frames of any other major version.
pub const VERSION_MAJOR: u8 = 1;
/// The wire format's minor version. A reader accepts frames of a newer minor version and
/// ignores what it does not know (unknown routing flags, reserved bytes).
pub const VERSION_MINOR: u8 = 2;

/// Number of priority classes. Class 0 is the most urgent, class 3 the least.
pub const PRIORITY_CLASSES: u8 = 4;

/// Largest frame (header plus payload) the wire format allows, in bytes. A ring may impose a
/// smaller limit (a quarter of its capacity).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Routing flag: the sender wants an ack once the frame is in the destination ring.
pub const FLAG_ACK_REQUESTED: u32 = 1 << 0;
/// Routing flag: `destination` is a capability route id (anycast), not an agent id.
pub const FLAG_ANYCAST: u32 = 1 << 1;
/// Routing flag (since 1.1): route by `feature_id` to an agent (or engine) registered for
/// that feature; `destination` is ignored.
pub const FLAG_FEATURE: u32 = 1 << 2;
/// Routing flag (since 1.2): an anycast or feature frame may go to another node's agent (a
/// proxy behind a node link) as readily as to one of this node; without it, an agent of
/// this node is chosen first.
pub const FLAG_ANY_NODE: u32 = 1 << 3;
/// Routing flags this version understands; others are ignored (minor-version rule).
pub const FLAGS_KNOWN: u32 = FLAG_ACK_REQUESTED | FLAG_ANYCAST | FLAG_FEATURE | FLAG_ANY_NODE;

/// Agent id 0 is the daemon itself (source of acks, nacks and control frames).
pub const DAEMON_AGENT_ID: u32 = 0;

/// What a frame is. The kind decides how `destination` is read.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Unicast to an agent id (or a capability route with [`FLAG_ANYCAST`]).
    Send = 1,
    /// Fan-out to every subscriber of a topic id.
    Publish = 2,
    /// A request expecting a [`FrameKind::Response`] with the same correlation id.
    Request = 3,
    /// The answer to a request; `destination` is the requester's agent id.
    Response = 4,
    /// The daemon confirms a frame reached its destination ring.
    Ack = 5,
    /// The daemon refuses a frame; the payload is an archived [`crate::control::NackBody`].
    Nack = 6,
    /// Control traffic between the daemon and an agent.
    Control = 7,
}

impl FrameKind {
    /// Decodes a kind byte; `None` for a kind this version does not know.
    ///
    /// ```
    /// use agentwire_shm::wire::FrameKind;
    /// assert_eq!(FrameKind::from_u8(2), Some(FrameKind::Publish));
    /// assert_eq!(FrameKind::from_u8(99), None);
    /// ```
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Send,
            2 => Self::Publish,
            3 => Self::Request,
            4 => Self::Response,
            5 => Self::Ack,
            6 => Self::Nack,
            7 => Self::Control,
            _ => return None,
        })
    }
}

/// What `destination` names, derived from the kind and the routing flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// An agent id.
    Agent(u32),
    /// A topic id (publish).
    Topic(u32),
    /// A capability route id (anycast).
    Capability(u32),
    /// A feature id (feature route, [`FLAG_FEATURE`]).
    Feature(u32),
}

/// The fixed frame header. All fields are little-endian and unaligned-safe, so a header
/// can be read in place from any 8-byte aligned frame without parsing.
///
/// ```
/// use agentwire_shm::wire::{FrameHeader, FrameKind};
/// let h = FrameHeader::new(FrameKind::Publish, 1, 42, 0).with_priority(2);
/// assert_eq!(h.priority(), 2);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct FrameHeader {
    /// Header plus payload, in bytes (before ring padding).
    pub frame_len_bytes: U32,
    /// Wire format major version.
    pub version_major: u8,
    /// Wire format minor version.
    pub version_minor: u8,
    /// A [`FrameKind`] byte.
    pub kind: u8,
    /// Priority class, 0 (most urgent) to 3.
    pub priority: u8,
    /// Feature id for feature routes (0: none).
    pub feature_id: U32,
    /// Routing flags (`FLAG_*`).
    pub routing_flags: U32,
    /// Correlation id pairing requests, responses, acks and nacks.
    pub correlation_id: U64,
    /// Sending agent id (0: the daemon). The router overwrites it with the ring owner's id.
    pub source_agent: U32,
    /// Agent id, topic id or capability route id, by kind and flags.
    pub destination: U32,
    /// Payload length in bytes.
    pub payload_len_bytes: U32,
    /// Reserved, zero in version 1.0; readers ignore it.
    pub reserved: U32,
    /// Sender's CLOCK_MONOTONIC send time in ns (0: not stamped); used for latency.
    pub send_time_ns: U64,
}

/// Why a frame header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than a header.
    #[error("frame of {found_bytes} bytes is shorter than the {HEADER_BYTES}-byte header")]
    TooShort {
        /// Bytes present.
        found_bytes: usize,
    },
    /// `frame_len_bytes` disagrees with the record that carried it.
    #[error("frame length field says {claimed_bytes} bytes but the record holds {record_bytes}")]
    LengthMismatch {
        /// What the header claims.
        claimed_bytes: u32,
        /// What the ring record holds.
        record_bytes: usize,
    },
    /// `payload_len_bytes` disagrees with `frame_len_bytes`.
    #[error(
        "payload length {payload_bytes} + header {HEADER_BYTES} != frame length {frame_bytes}"
    )]
    PayloadMismatch {
        /// Payload length field.
        payload_bytes: u32,
        /// Frame length field.
        frame_bytes: u32,
    },
    /// Frame larger than [`FRAME_BYTES_MAX`].
    #[error("frame of {frame_bytes} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    TooLarge {
        /// Frame length field.
        frame_bytes: u32,
    },
    /// A major version this reader does not speak.
    #[error(
        "wire version {found_major}.x is not supported (this reader speaks {VERSION_MAJOR}.x)"
    )]
    UnsupportedVersion {
        /// Major version found.
        found_major: u8,
    },
    /// An unknown kind byte.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// Kind byte found.
        found: u8,
    },
    /// Priority class out of range.
    #[error("priority class {found} out of range 0..{PRIORITY_CLASSES}")]
    BadPriority {
        /// Priority byte found.
        found: u8,
    },
}

impl FrameHeader {
    /// A header of the current version for a payload of `payload_len_bytes`.
    ///
    /// ```
    /// use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    /// let h = FrameHeader::new(FrameKind::Send, 1, 2, 10);
    /// assert_eq!(h.frame_len_bytes.get() as usize, HEADER_BYTES + 10);
    /// ```
    pub fn new(
        kind: FrameKind,
        source_agent: u32,
        destination: u32,
        payload_len_bytes: u32,
    ) -> Self {
        Self {
            frame_len_bytes: U32::new(HEADER_BYTES as u32 + payload_len_bytes),
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            kind: kind as u8,
            priority: 2,
            feature_id: U32::ZERO,
            routing_flags: U32::ZERO,
            correlation_id: U64::ZERO,
            source_agent: U32::new(source_agent),
            destination: U32::new(destination),
            payload_len_bytes: U32::new(payload_len_bytes),
            reserved: U32::ZERO,
            send_time_ns: U64::ZERO,
        }
    }

    /// Sets the priority class (0 most urgent). Out-of-range values are clamped to the least urgent.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).with_priority(9).priority(), 3);
    /// ```
    pub fn with_priority(mut self, class: u8) -> Self {
        self.priority = class.min(PRIORITY_CLASSES - 1);
        self
    }

    /// Sets the correlation id.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Request, 1, 2, 0).with_correlation(5).correlation(), 5);
    /// ```
    pub fn with_correlation(mut self, correlation_id: u64) -> Self {
        self.correlation_id = U64::new(correlation_id);
        self
    }

    /// Sets routing flags (`FLAG_*`).
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind, FLAG_ACK_REQUESTED};
    /// let h = FrameHeader::new(FrameKind::Send, 1, 2, 0).with_flags(FLAG_ACK_REQUESTED);
    /// assert!(h.ack_requested());
    /// ```
    pub fn with_flags(mut self, flags: u32) -> Self {
        self.routing_flags = U32::new(flags);
        self
    }

    /// Sets the feature id.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).with_feature(3).feature_id.get(), 3);
    /// ```
    pub fn with_feature(mut self, feature_id: u32) -> Self {
        self.feature_id = U32::new(feature_id);
        self
    }

    /// Writes the header into the first [`HEADER_BYTES`] of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`HEADER_BYTES`] (a caller bug, not bad input).
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    /// let mut out = [0u8; HEADER_BYTES];
    /// FrameHeader::new(FrameKind::Send, 1, 2, 0).write_to(&mut out);
    /// assert_eq!(out[6], FrameKind::Send as u8);
    /// ```
    pub fn write_to(&self, out: &mut [u8]) {
        out[..HEADER_BYTES].copy_from_slice(self.as_bytes());
    }

    /// The header at the front of `frame`, read in place with no check but its length
    /// (`None` when `frame` is shorter than a header). For the fields a router echoes back
    /// even from a frame that failed [`FrameHeader::validate`] (its correlation id), or
    /// reads again from a frame it validated before (a deferred or forwarded copy).
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    /// let mut frame = [0u8; HEADER_BYTES];
    /// FrameHeader::new(FrameKind::Send, 1, 2, 0).with_correlation(9).write_to(&mut frame);
    /// assert_eq!(FrameHeader::peek(&frame).map(FrameHeader::correlation), Some(9));
    /// assert!(FrameHeader::peek(&frame[..8]).is_none());
    /// ```
    #[inline]
    pub fn peek(frame: &[u8]) -> Option<&FrameHeader> {
        FrameHeader::ref_from_prefix(frame).ok().map(|(h, _)| h)
    }

    /// [`FrameHeader::peek`] for writing: the header at the front of `frame`, in place.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    /// let mut frame = [0u8; HEADER_BYTES];
    /// FrameHeader::new(FrameKind::Send, 1, 2, 0).write_to(&mut frame);
    /// FrameHeader::peek_mut(&mut frame).unwrap().set_source(7);
    /// assert_eq!(FrameHeader::peek(&frame).unwrap().source(), 7);
    /// ```
    #[inline]
    pub fn peek_mut(frame: &mut [u8]) -> Option<&mut FrameHeader> {
        FrameHeader::mut_from_prefix(frame).ok().map(|(h, _)| h)
    }

    /// Sets the source agent id: the router stamps every frame with the id of the ring it
    /// came from, whatever the sender wrote there.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// let mut h = FrameHeader::new(FrameKind::Send, 1, 2, 0);
    /// h.set_source(5);
    /// assert_eq!(h.source(), 5);
    /// ```
    #[inline]
    pub fn set_source(&mut self, source: u32) {
        self.source_agent.set(source);
    }

    /// Addresses the frame to one agent: destination `agent_id`, the anycast and feature
    /// flags cleared (the feature id stays, for the record). The router does this to a copy
    /// it hands to a gateway endpoint for one of its remote agents, so the gateway knows
    /// which one the route chose.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind, FLAG_ANYCAST, FLAG_ACK_REQUESTED, Destination};
    /// let mut h = FrameHeader::new(FrameKind::Send, 1, 3, 0).with_flags(FLAG_ANYCAST | FLAG_ACK_REQUESTED);
    /// h.address_to(9);
    /// assert_eq!(h.destination_kind(), Destination::Agent(9));
    /// assert!(h.ack_requested());
    /// ```
    #[inline]
    pub fn address_to(&mut self, agent_id: u32) {
        self.destination.set(agent_id);
        let flags = self.routing_flags.get() & !(FLAG_ANYCAST | FLAG_FEATURE | FLAG_ANY_NODE);
        self.routing_flags.set(flags);
    }

    /// Reads the header of `frame` in place and checks everything that can be checked
    /// without a registry: lengths, version, kind, priority. Destination range is the
    /// router's check.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameError};
    /// assert!(matches!(FrameHeader::validate(&[0u8; 8]), Err(FrameError::TooShort { .. })));
    /// ```
    pub fn validate(frame: &[u8]) -> Result<&FrameHeader, FrameError> {
        let (header, _) =
            FrameHeader::ref_from_prefix(frame).map_err(|_| FrameError::TooShort {
                found_bytes: frame.len(),
            })?;
        let frame_bytes = header.frame_len_bytes.get();
        if frame_bytes as usize > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge { frame_bytes });
        }
        if frame_bytes as usize != frame.len() {
            return Err(FrameError::LengthMismatch {
                claimed_bytes: frame_bytes,
                record_bytes: frame.len(),
            });
        }
        let payload_bytes = header.payload_len_bytes.get();
        if payload_bytes as u64 + HEADER_BYTES as u64 != frame_bytes as u64 {
            return Err(FrameError::PayloadMismatch {
                payload_bytes,
                frame_bytes,
            });
        }
        if header.version_major != VERSION_MAJOR {
            return Err(FrameError::UnsupportedVersion {
                found_major: header.version_major,
            });
        }
        if FrameKind::from_u8(header.kind).is_none() {
            return Err(FrameError::UnknownKind { found: header.kind });
        }
        if header.priority >= PRIORITY_CLASSES {
            return Err(FrameError::BadPriority {
                found: header.priority,
            });
        }
        Ok(header)
    }

    /// The frame kind. Only meaningful on a validated header (else `Control`).
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Ack, 0, 1, 0).kind(), FrameKind::Ack);
    /// ```
    pub fn kind(&self) -> FrameKind {
        FrameKind::from_u8(self.kind).unwrap_or(FrameKind::Control)
    }

    /// Priority class.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).priority(), 2);
    /// ```
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Correlation id.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).correlation(), 0);
    /// ```
    pub fn correlation(&self) -> u64 {
        self.correlation_id.get()
    }

    /// Source agent id.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).source(), 1);
    /// ```
    pub fn source(&self) -> u32 {
        self.source_agent.get()
    }

    /// Raw destination id.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Send, 1, 2, 0).destination(), 2);
    /// ```
    pub fn destination(&self) -> u32 {
        self.destination.get()
    }

    /// Whether the sender asked for an ack.
    ///
    /// ```
    /// # use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// assert!(!FrameHeader::new(FrameKind::Send, 1, 2, 0).ack_requested());
    /// ```
    pub fn ack_requested(&self) -> bool {
        self.routing_flags.get() & FLAG_ACK_REQUESTED != 0
    }

    /// What `destination` names, by kind and flags.
    ///
    /// ```
    /// # use agentwire_shm::wire::{Destination, FrameHeader, FrameKind, FLAG_ANYCAST, FLAG_FEATURE};
    /// let h = FrameHeader::new(FrameKind::Send, 1, 4, 0).with_flags(FLAG_ANYCAST);
    /// assert_eq!(h.destination_kind(), Destination::Capability(4));
    /// let f = FrameHeader::new(FrameKind::Send, 1, 0, 0).with_feature(7).with_flags(FLAG_FEATURE);
    /// assert_eq!(f.destination_kind(), Destination::Feature(7));
    /// ```
    pub fn destination_kind(&self) -> Destination {
        let id = self.destination.get();
        match self.kind() {
            FrameKind::Publish => Destination::Topic(id),
            _ if self.routing_flags.get() & FLAG_FEATURE != 0 => {
                Destination::Feature(self.feature_id.get())
            }
            _ if self.routing_flags.get() & FLAG_ANYCAST != 0 => Destination::Capability(id),
            _ => Destination::Agent(id),
        }
    }
}

// The layout is a cross-process contract (docs/wire.md): keep it asserted.
const _: () = assert!(size_of::<FrameHeader>() == HEADER_BYTES);
const _: () = assert!(HEADER_BYTES % 16 == 0, "payload must stay 16-byte aligned");
const _: () = assert!(offset_of!(FrameHeader, frame_len_bytes) == 0);
const _: () = assert!(offset_of!(FrameHeader, version_major) == 4);
const _: () = assert!(offset_of!(FrameHeader, version_minor) == 5);
const _: () = assert!(offset_of!(FrameHeader, kind) == 6);
const _: () = assert!(offset_of!(FrameHeader, priority) == 7);
const _: () = assert!(offset_of!(FrameHeader, feature_id) == 8);
const _: () = assert!(offset_of!(FrameHeader, routing_flags) == 12);
const _: () = assert!(offset_of!(FrameHeader, correlation_id) == 16);
const _: () = assert!(offset_of!(FrameHeader, source_agent) == 24);
const _: () = assert!(offset_of!(FrameHeader, destination) == 28);
const _: () = assert!(offset_of!(FrameHeader, payload_len_bytes) == 32);
const _: () = assert!(offset_of!(FrameHeader, reserved) == 36);
const _: () = assert!(offset_of!(FrameHeader, send_time_ns) == 40);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: FrameHeader, payload: usize) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_BYTES + payload];
        h.write_to(&mut v);
        v
    }

    #[test]
    fn accepts_well_formed_frame() {
        let f = frame(
            FrameHeader::new(FrameKind::Request, 3, 4, 8).with_correlation(77),
            8,
        );
        let h = FrameHeader::validate(&f).unwrap();
        assert_eq!(h.kind(), FrameKind::Request);
        assert_eq!(h.correlation(), 77);
    }

    #[test]
    fn rejects_frame_with_bad_length() {
        let mut f = frame(FrameHeader::new(FrameKind::Send, 3, 4, 8), 8);
        f.pop();
        assert!(matches!(
            FrameHeader::validate(&f),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut h = FrameHeader::new(FrameKind::Send, 3, 4, 8);
        h.payload_len_bytes = U32::new(9);
        let f = frame(h, 8);
        assert!(matches!(
            FrameHeader::validate(&f),
            Err(FrameError::PayloadMismatch { .. })
        ));
    }

    #[test]
    fn rejects_unknown_kind_major_version_and_priority() {
        let mut h = FrameHeader::new(FrameKind::Send, 3, 4, 0);
        h.kind = 42;
        assert_eq!(
            FrameHeader::validate(&frame(h, 0)),
            Err(FrameError::UnknownKind { found: 42 })
        );
        let mut h = FrameHeader::new(FrameKind::Send, 3, 4, 0);
        h.version_major = 2;
        assert_eq!(
            FrameHeader::validate(&frame(h, 0)),
            Err(FrameError::UnsupportedVersion { found_major: 2 })
        );
        let mut h = FrameHeader::new(FrameKind::Send, 3, 4, 0);
        h.priority = 4;
        assert_eq!(
            FrameHeader::validate(&frame(h, 0)),
            Err(FrameError::BadPriority { found: 4 })
        );
    }

    #[test]
    fn accepts_newer_minor_version_and_unknown_flags() {
        let mut h = FrameHeader::new(FrameKind::Send, 3, 4, 0).with_flags(1 << 31);
        h.version_minor = VERSION_MINOR + 5;
        h.reserved = U32::new(0xdead);
        let f = frame(h, 0);
        let read = FrameHeader::validate(&f).unwrap();
        assert_eq!(read.destination_kind(), Destination::Agent(4));
    }
}
