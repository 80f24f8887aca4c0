//! Frames on a byte stream (TCP, TLS): the shared-memory wire format, back to back.
//!
//! A network connection carries exactly the frames the rings carry: each one its 48-byte
//! header followed by its payload, `frame_len_bytes` long, no padding between them. The
//! header's first field is the frame's length, so the stream needs no framing of its own.
//! The control protocol rides on the same stream as [`FrameKind::Control`] frames (source
//! and destination 0) whose payload is an rkyv [`crate::control::ClientMsg`] (to the daemon)
//! or [`crate::control::ServerMsg`] (to the agent), in the order the control socket uses:
//! `Hello` → `Welcome`, `Register` → `Registered` (no descriptors: a remote agent's rings
//! live in its own process), then data frames both ways with control requests interleaved,
//! each answered by one control frame in order. docs/wire.md ("On a byte stream") is the
//! reference.
//!
//! [`FrameAssembler`] cuts frames out of what a socket delivered, in one fixed buffer,
//! validating each header before anything trusts its length:
//!
//! ```
//! use agentwire_shm::stream_frames::FrameAssembler;
//! use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
//! let mut frame = vec![0u8; HEADER_BYTES + 3];
//! FrameHeader::new(FrameKind::Send, 1, 2, 3).write_to(&mut frame);
//! frame[HEADER_BYTES..].copy_from_slice(b"abc");
//! let mut assembler = FrameAssembler::new(4096);
//! // The socket delivers the frame in two pieces.
//! assembler.spare()[..10].copy_from_slice(&frame[..10]);
//! assembler.filled(10);
//! assert!(assembler.next_frame().unwrap().is_none());
//! let rest = frame.len() - 10;
//! assembler.spare()[..rest].copy_from_slice(&frame[10..]);
//! assembler.filled(rest);
//! let got = assembler.next_frame().unwrap().unwrap();
//! assert_eq!(&got[HEADER_BYTES..], b"abc");
//! ```

use crate::control::ControlError;
use crate::wire::{FrameError, FrameHeader, FrameKind, DAEMON_AGENT_ID, HEADER_BYTES};
use rkyv::{Archive, Deserialize, Serialize};

/// The default bound on one frame received from a stream (1 MiB): a peer that announces a
/// larger one is refused before a byte of it is buffered.
pub const STREAM_FRAME_BYTES_MAX_DEFAULT: usize = 1 << 20;

/// Why a stream's bytes are not a frame. The connection is beyond repair after any of
/// these (the next frame's start is unknown), so the reader closes it.
#[derive(Debug, thiserror::Error)]
pub enum StreamFrameError {
    /// The header announced a frame longer than this stream accepts.
    #[error("frame of {frame_bytes} bytes exceeds this stream's {limit_bytes}-byte limit")]
    TooLarge {
        /// What the header claimed.
        frame_bytes: usize,
        /// The stream's bound.
        limit_bytes: usize,
    },
    /// The header failed validation.
    #[error("malformed frame on the stream: {0}")]
    Malformed(#[from] FrameError),
}

/// Cuts whole frames out of a byte stream, in one buffer of fixed capacity (no allocation
/// after [`FrameAssembler::new`]).
#[derive(Debug)]
pub struct FrameAssembler {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    start: usize,
    /// End of the bytes received.
    end: usize,
    frame_bytes_max: usize,
}

impl FrameAssembler {
    /// An assembler accepting frames up to `frame_bytes_max` bytes (at least a header); its
    /// buffer holds twice that, so a socket read is never smaller than one frame.
    ///
    /// ```
    /// let a = agentwire_shm::stream_frames::FrameAssembler::new(1 << 16);
    /// assert_eq!(a.frame_bytes_max(), 1 << 16);
    /// ```
    pub fn new(frame_bytes_max: usize) -> Self {
        let frame_bytes_max = frame_bytes_max.max(HEADER_BYTES);
        Self {
            buf: vec![0u8; frame_bytes_max * 2],
            start: 0,
            end: 0,
            frame_bytes_max,
        }
    }

    /// The largest frame accepted.
    ///
    /// ```
    /// let a = agentwire_shm::stream_frames::FrameAssembler::new(1);
    /// assert_eq!(a.frame_bytes_max(), agentwire_shm::wire::HEADER_BYTES);
    /// ```
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Room to read into (never empty while a whole frame is not yet buffered): the bytes
    /// already received are moved to the front first when that makes room.
    ///
    /// ```
    /// let mut a = agentwire_shm::stream_frames::FrameAssembler::new(64);
    /// assert_eq!(a.spare().len(), 128);
    /// ```
    pub fn spare(&mut self) -> &mut [u8] {
        // Compact once less than a whole frame's room is left past the frame being read.
        if self.start > 0
            && (self.start == self.end || self.buf.len() - self.start < self.frame_bytes_max)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `len_bytes` of [`FrameAssembler::spare`] as received.
    ///
    /// ```
    /// let mut a = agentwire_shm::stream_frames::FrameAssembler::new(64);
    /// a.filled(0);
    /// assert_eq!(a.buffered_bytes(), 0);
    /// ```
    pub fn filled(&mut self, len_bytes: usize) {
        self.end = (self.end + len_bytes).min(self.buf.len());
    }

    /// Bytes received and not yet taken as frames.
    ///
    /// ```
    /// let a = agentwire_shm::stream_frames::FrameAssembler::new(64);
    /// assert_eq!(a.buffered_bytes(), 0);
    /// ```
    pub fn buffered_bytes(&self) -> usize {
        self.end - self.start
    }

    /// The next whole frame (header validated), or `None` until more bytes arrive. The
    /// frame is consumed: the next call returns the one after it. An error means the
    /// stream is broken (close it).
    ///
    /// ```
    /// let mut a = agentwire_shm::stream_frames::FrameAssembler::new(64);
    /// a.spare()[..48].fill(0xff);
    /// a.filled(48);
    /// assert!(a.next_frame().is_err()); // a length far over 64 bytes
    /// ```
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, StreamFrameError> {
        let available = self.end - self.start;
        if available < HEADER_BYTES {
            return Ok(None);
        }
        let head = &self.buf[self.start..self.start + HEADER_BYTES];
        let frame_bytes = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if frame_bytes > self.frame_bytes_max {
            return Err(StreamFrameError::TooLarge {
                frame_bytes,
                limit_bytes: self.frame_bytes_max,
            });
        }
        if frame_bytes < HEADER_BYTES {
            return Err(FrameError::LengthMismatch {
                claimed_bytes: frame_bytes as u32,
                record_bytes: HEADER_BYTES,
            }
            .into());
        }
        if available < frame_bytes {
            return Ok(None);
        }
        let begin = self.start;
        let frame = &self.buf[begin..begin + frame_bytes];
        FrameHeader::validate(frame)?;
        // The buffer is compacted by the next `spare`, never under a frame handed out.
        self.start += frame_bytes;
        Ok(Some(&self.buf[begin..begin + frame_bytes]))
    }
}

/// Appends `msg` as one control frame (kind `Control`, source and destination 0, the rkyv
/// archive as payload) to `out`.
///
/// ```
/// use agentwire_shm::control::ClientMsg;
/// use agentwire_shm::stream_frames::{append_control, decode_control};
/// use agentwire_shm::wire::{FrameHeader, HEADER_BYTES};
/// let mut out = Vec::new();
/// append_control(&ClientMsg::Goodbye, &mut out).unwrap();
/// let header = FrameHeader::validate(&out).unwrap();
/// assert_eq!(decode_control::<ClientMsg>(header, &out[HEADER_BYTES..]).unwrap(), ClientMsg::Goodbye);
/// ```
pub fn append_control<M>(msg: &M, out: &mut Vec<u8>) -> Result<(), ControlError>
where
    M: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let bytes = crate::control::archive(msg)?;
    let header = FrameHeader::new(
        FrameKind::Control,
        DAEMON_AGENT_ID,
        DAEMON_AGENT_ID,
        bytes.len() as u32,
    );
    let at = out.len();
    out.resize(at + HEADER_BYTES, 0);
    header.write_to(&mut out[at..]);
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The control message a control frame carries (validated with bytecheck); an error for a
/// frame of another kind or a payload that is not a valid `M`.
///
/// ```
/// use agentwire_shm::control::ServerMsg;
/// use agentwire_shm::stream_frames::decode_control;
/// use agentwire_shm::wire::{FrameHeader, FrameKind};
/// let header = FrameHeader::new(FrameKind::Send, 1, 2, 3);
/// assert!(decode_control::<ServerMsg>(&header, b"abc").is_err());
/// ```
pub fn decode_control<M>(header: &FrameHeader, payload: &[u8]) -> Result<M, ControlError>
where
    M: Archive,
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    if header.kind() != FrameKind::Control {
        return Err(ControlError::Malformed(format!(
            "expected a control frame, got {:?}",
            header.kind()
        )));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<M, rkyv::rancor::Error>(&aligned)
        .map_err(|e| ControlError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_BYTES + payload.len()];
        FrameHeader::new(FrameKind::Send, 1, 2, payload.len() as u32).write_to(&mut f);
        f[HEADER_BYTES..].copy_from_slice(payload);
        f
    }

    proptest! {
        /// Frames cut at arbitrary points come out whole, in order, each once.
        #[test]
        fn frames_survive_any_split(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..40),
            chunk in 1usize..300,
        ) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
            let mut assembler = FrameAssembler::new(256);
            let mut got = Vec::new();
            let mut offset = 0;
            while offset < stream.len() {
                let spare = assembler.spare();
                let n = chunk.min(spare.len()).min(stream.len() - offset);
                spare[..n].copy_from_slice(&stream[offset..offset + n]);
                assembler.filled(n);
                offset += n;
                while let Some(f) = assembler.next_frame().unwrap() {
                    got.push(f[HEADER_BYTES..].to_vec());
                }
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(assembler.buffered_bytes(), 0);
        }

        /// Garbage never panics and never yields a frame whose header fails validation.
        #[test]
        fn garbage_is_refused_or_waits(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut assembler = FrameAssembler::new(256);
            let n = bytes.len().min(assembler.spare().len());
            assembler.spare()[..n].copy_from_slice(&bytes[..n]);
            assembler.filled(n);
            while let Ok(Some(f)) = assembler.next_frame() {
                prop_assert!(FrameHeader::validate(f).is_ok());
            }
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_buffered() {
        let mut assembler = FrameAssembler::new(64);
        let big = frame(&[7u8; 100]);
        assembler.spare()[..HEADER_BYTES].copy_from_slice(&big[..HEADER_BYTES]);
        assembler.filled(HEADER_BYTES);
        assert!(matches!(
            assembler.next_frame(),
            Err(StreamFrameError::TooLarge {
                frame_bytes: 148,
                limit_bytes: 64
            })
        ));
    }
}
