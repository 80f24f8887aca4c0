//! Telemetry over UDP: fire-and-forget frames for metrics and events, with a per-source
//! sequence number so that loss is counted and reported, never silent.
//!
//! A datagram is a fixed 24-byte [`DatagramPrefix`] (read in place with zerocopy, like
//! [`FrameHeader`]) followed by one or more frames of the wire format back to back
//! (docs/wire.md, "Telemetry over UDP"):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `AWT1` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | flags (0; readers ignore them) |
//! | 6 | 2 | frame count |
//! | 8 | 8 | source id (random per sender) |
//! | 16 | 8 | sequence (per source, 0 first, +1 per datagram) |
//! | 24 | n | frames |
//!
//! - [`TelemetrySender`]: packs frames into one reused buffer and sends a datagram when it
//!   is full or on [`TelemetrySender::flush`]; no daemon connection, no allocation per frame.
//! - [`Datagram`]: a received datagram, checked whole before any frame is trusted.
//! - [`SequenceTracker`]: loss, reordering, duplicates and late arrivals per source, in a
//!   bounded table.
//!
//! ```
//! use agentwire_shm::telemetry::{Datagram, TelemetrySender};
//! let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let mut sender = TelemetrySender::connect(receiver.local_addr().unwrap()).unwrap();
//! sender.publish(b"cpu=0.42").unwrap();
//! sender.flush().unwrap();
//! let mut buf = [0u8; 2048];
//! let n = receiver.recv(&mut buf).unwrap();
//! let datagram = Datagram::parse(&buf[..n]).unwrap();
//! assert_eq!(datagram.prefix().sequence(), 0);
//! let (_header, payload) = datagram.frames().next().unwrap();
//! assert_eq!(payload, b"cpu=0.42");
//! ```

mod sender;
mod sequence;

pub use sender::{SenderStats, TelemetryError, TelemetrySender, TelemetrySenderBuilder};
pub use sequence::{SequenceCounts, SequenceTracker, SourceCounts, Verdict, SOURCES_MAX_DEFAULT};

use crate::wire::{FrameError, FrameHeader, HEADER_BYTES};
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first four bytes of every telemetry datagram.
///
/// ```
/// assert_eq!(&agentwire_shm::telemetry::TELEMETRY_MAGIC, b"AWT1");
/// ```
pub const TELEMETRY_MAGIC: [u8; 4] = *b"AWT1";

/// The telemetry prefix version this code writes and reads; a reader refuses any other.
///
/// ```
/// assert_eq!(agentwire_shm::telemetry::TELEMETRY_VERSION, 1);
/// ```
pub const TELEMETRY_VERSION: u8 = 1;

/// Size of [`DatagramPrefix`] in bytes; the first frame starts at this offset.
///
/// ```
/// assert_eq!(agentwire_shm::telemetry::PREFIX_BYTES, 24);
/// ```
pub const PREFIX_BYTES: usize = 24;

/// Default bound on a datagram's UDP payload, in bytes: 1500 (Ethernet MTU) − 20 (IPv4
/// header) − 8 (UDP header), so a datagram never fragments on a 1500-byte path. Over IPv6
/// (40-byte header) use 1452.
///
/// ```
/// assert_eq!(agentwire_shm::telemetry::DATAGRAM_BYTES_DEFAULT, 1472);
/// ```
pub const DATAGRAM_BYTES_DEFAULT: usize = 1472;

/// The largest UDP payload over IPv4, in bytes (65535 − 20 − 8). Datagrams above the path's
/// MTU are fragmented by IP, and the loss of one fragment loses the whole datagram.
///
/// ```
/// assert_eq!(agentwire_shm::telemetry::DATAGRAM_BYTES_MAX, 65507);
/// ```
pub const DATAGRAM_BYTES_MAX: usize = 65507;

/// The fixed prefix of a telemetry datagram. All fields are little-endian and alignment 1,
/// so it is read in place from any buffer.
///
/// ```
/// use agentwire_shm::telemetry::{DatagramPrefix, PREFIX_BYTES};
/// let mut buf = [0u8; PREFIX_BYTES];
/// DatagramPrefix::new(7, 3, 0).write_to(&mut buf);
/// let p = DatagramPrefix::read(&buf).unwrap();
/// assert_eq!((p.source_id(), p.sequence(), p.frame_count()), (7, 3, 0));
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct DatagramPrefix {
    /// [`TELEMETRY_MAGIC`].
    pub magic: [u8; 4],
    /// [`TELEMETRY_VERSION`].
    pub version: u8,
    /// Reserved flags: 0 when written, ignored when read.
    pub flags: u8,
    /// Frames that follow the prefix.
    pub frame_count: U16,
    /// The sender's id, random, chosen when the sender is created.
    pub source_id: U64,
    /// The datagram's number for its source: 0 for the first, +1 for each next one.
    pub sequence: U64,
}

// The layout is a cross-process contract (docs/wire.md): keep it asserted.
const _: () = assert!(size_of::<DatagramPrefix>() == PREFIX_BYTES);
const _: () = assert!(PREFIX_BYTES % 8 == 0, "frames start 8-byte aligned");
const _: () = assert!(offset_of!(DatagramPrefix, magic) == 0);
const _: () = assert!(offset_of!(DatagramPrefix, version) == 4);
const _: () = assert!(offset_of!(DatagramPrefix, flags) == 5);
const _: () = assert!(offset_of!(DatagramPrefix, frame_count) == 6);
const _: () = assert!(offset_of!(DatagramPrefix, source_id) == 8);
const _: () = assert!(offset_of!(DatagramPrefix, sequence) == 16);
const _: () = assert!(PREFIX_BYTES + HEADER_BYTES <= DATAGRAM_BYTES_DEFAULT);

/// Why bytes received are not a telemetry datagram. The whole datagram is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the prefix.
    #[error("datagram of {found_bytes} bytes is shorter than the {PREFIX_BYTES}-byte prefix")]
    TooShort {
        /// Bytes received.
        found_bytes: usize,
    },
    /// The first four bytes are not [`TELEMETRY_MAGIC`].
    #[error("not a telemetry datagram (magic {found:02x?})")]
    BadMagic {
        /// What was there.
        found: [u8; 4],
    },
    /// A prefix version this reader does not speak.
    #[error("telemetry version {found} is not supported (this reader speaks {TELEMETRY_VERSION})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
    },
    /// A frame runs past the end of the datagram, or its header is not valid.
    #[error("frame at offset {offset_bytes}: {error}")]
    Frame {
        /// Where the frame starts in the datagram.
        offset_bytes: usize,
        /// What is wrong with it.
        error: FrameError,
    },
    /// The frames found disagree with the prefix's frame count.
    #[error("the prefix announces {claimed} frames, the datagram holds {found}")]
    FrameCount {
        /// The prefix's count.
        claimed: u16,
        /// Frames found.
        found: usize,
    },
}

impl DatagramPrefix {
    /// A prefix of the current version.
    ///
    /// ```
    /// use agentwire_shm::telemetry::{DatagramPrefix, TELEMETRY_MAGIC};
    /// assert_eq!(DatagramPrefix::new(1, 2, 3).magic, TELEMETRY_MAGIC);
    /// ```
    pub fn new(source_id: u64, sequence: u64, frame_count: u16) -> Self {
        Self {
            magic: TELEMETRY_MAGIC,
            version: TELEMETRY_VERSION,
            flags: 0,
            frame_count: U16::new(frame_count),
            source_id: U64::new(source_id),
            sequence: U64::new(sequence),
        }
    }

    /// Writes the prefix into the first [`PREFIX_BYTES`] of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`PREFIX_BYTES`] (a caller bug, not bad input).
    ///
    /// ```
    /// # use agentwire_shm::telemetry::{DatagramPrefix, PREFIX_BYTES};
    /// let mut out = [0u8; PREFIX_BYTES];
    /// DatagramPrefix::new(1, 2, 3).write_to(&mut out);
    /// assert_eq!(&out[..4], b"AWT1");
    /// ```
    pub fn write_to(&self, out: &mut [u8]) {
        out[..PREFIX_BYTES].copy_from_slice(self.as_bytes());
    }

    /// The prefix at the front of `datagram`, its length, magic and version checked.
    ///
    /// ```
    /// use agentwire_shm::telemetry::{DatagramError, DatagramPrefix};
    /// assert!(matches!(DatagramPrefix::read(b"hello"), Err(DatagramError::TooShort { .. })));
    /// assert!(matches!(DatagramPrefix::read(&[0u8; 32]), Err(DatagramError::BadMagic { .. })));
    /// ```
    pub fn read(datagram: &[u8]) -> Result<&DatagramPrefix, DatagramError> {
        let (prefix, _) =
            DatagramPrefix::ref_from_prefix(datagram).map_err(|_| DatagramError::TooShort {
                found_bytes: datagram.len(),
            })?;
        if prefix.magic != TELEMETRY_MAGIC {
            return Err(DatagramError::BadMagic {
                found: prefix.magic,
            });
        }
        if prefix.version != TELEMETRY_VERSION {
            return Err(DatagramError::UnsupportedVersion {
                found: prefix.version,
            });
        }
        Ok(prefix)
    }

    /// The sender's id.
    ///
    /// ```
    /// # use agentwire_shm::telemetry::DatagramPrefix;
    /// assert_eq!(DatagramPrefix::new(9, 0, 0).source_id(), 9);
    /// ```
    pub fn source_id(&self) -> u64 {
        self.source_id.get()
    }

    /// The datagram's sequence number for its source.
    ///
    /// ```
    /// # use agentwire_shm::telemetry::DatagramPrefix;
    /// assert_eq!(DatagramPrefix::new(9, 4, 0).sequence(), 4);
    /// ```
    pub fn sequence(&self) -> u64 {
        self.sequence.get()
    }

    /// Frames announced.
    ///
    /// ```
    /// # use agentwire_shm::telemetry::DatagramPrefix;
    /// assert_eq!(DatagramPrefix::new(9, 4, 2).frame_count(), 2);
    /// ```
    pub fn frame_count(&self) -> u16 {
        self.frame_count.get()
    }
}

/// A received datagram whose prefix and every frame header were checked
/// ([`FrameHeader::validate`]), so its frames can be walked without further checks.
///
/// ```
/// use agentwire_shm::telemetry::{Datagram, DatagramPrefix, PREFIX_BYTES};
/// use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
/// let mut d = vec![0u8; PREFIX_BYTES + HEADER_BYTES + 2];
/// DatagramPrefix::new(1, 0, 1).write_to(&mut d);
/// FrameHeader::new(FrameKind::Publish, 0, 0, 2).write_to(&mut d[PREFIX_BYTES..]);
/// let datagram = Datagram::parse(&d).unwrap();
/// assert_eq!(datagram.frames().count(), 1);
/// d.pop(); // a truncated frame spoils the datagram
/// assert!(Datagram::parse(&d).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    prefix: &'a DatagramPrefix,
    frames: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Checks `bytes` whole: the prefix, then each frame's header and length, and that the
    /// frames fill the datagram exactly and match the prefix's count. A datagram with no
    /// frame is valid (it only advances its source's sequence).
    ///
    /// ```
    /// use agentwire_shm::telemetry::{Datagram, DatagramPrefix, PREFIX_BYTES};
    /// let mut d = [0u8; PREFIX_BYTES];
    /// DatagramPrefix::new(1, 5, 0).write_to(&mut d);
    /// assert_eq!(Datagram::parse(&d).unwrap().frames().count(), 0);
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DatagramError> {
        let prefix = DatagramPrefix::read(bytes)?;
        let frames = &bytes[PREFIX_BYTES..];
        let mut offset = 0;
        let mut found = 0usize;
        while offset < frames.len() {
            let rest = &frames[offset..];
            let error = |error| DatagramError::Frame {
                offset_bytes: PREFIX_BYTES + offset,
                error,
            };
            let header = FrameHeader::peek(rest).ok_or_else(|| {
                error(FrameError::TooShort {
                    found_bytes: rest.len(),
                })
            })?;
            let frame_bytes = header.frame_len_bytes.get() as usize;
            if frame_bytes < HEADER_BYTES || frame_bytes > rest.len() {
                return Err(error(FrameError::LengthMismatch {
                    claimed_bytes: header.frame_len_bytes.get(),
                    record_bytes: rest.len(),
                }));
            }
            FrameHeader::validate(&rest[..frame_bytes]).map_err(error)?;
            offset += frame_bytes;
            found += 1;
        }
        if found != usize::from(prefix.frame_count()) {
            return Err(DatagramError::FrameCount {
                claimed: prefix.frame_count(),
                found,
            });
        }
        Ok(Self { prefix, frames })
    }

    /// The prefix.
    ///
    /// ```
    /// # use agentwire_shm::telemetry::{Datagram, DatagramPrefix, PREFIX_BYTES};
    /// # let mut d = [0u8; PREFIX_BYTES];
    /// # DatagramPrefix::new(1, 5, 0).write_to(&mut d);
    /// assert_eq!(Datagram::parse(&d).unwrap().prefix().sequence(), 5);
    /// ```
    pub fn prefix(&self) -> &'a DatagramPrefix {
        self.prefix
    }

    /// The frames in order: each validated header and its payload.
    ///
    /// ```
    /// # use agentwire_shm::telemetry::{Datagram, DatagramPrefix, PREFIX_BYTES};
    /// # let mut d = [0u8; PREFIX_BYTES];
    /// # DatagramPrefix::new(1, 5, 0).write_to(&mut d);
    /// for (header, payload) in Datagram::parse(&d).unwrap().frames() {
    ///     println!("{:?}: {} bytes", header.kind(), payload.len());
    /// }
    /// ```
    pub fn frames(&self) -> Frames<'a> {
        Frames { rest: self.frames }
    }
}

/// The frames of a [`Datagram`] (see [`Datagram::frames`]).
///
/// ```
/// # use agentwire_shm::telemetry::{Datagram, DatagramPrefix, PREFIX_BYTES};
/// # let mut d = [0u8; PREFIX_BYTES];
/// # DatagramPrefix::new(1, 5, 0).write_to(&mut d);
/// let frames: agentwire_shm::telemetry::Frames<'_> = Datagram::parse(&d).unwrap().frames();
/// assert_eq!(frames.count(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = (&'a FrameHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Every length was checked by `Datagram::parse`; the `get`s only keep a bug from
        // becoming a panic.
        let header = FrameHeader::peek(self.rest)?;
        let frame_bytes = header.frame_len_bytes.get() as usize;
        let payload = self.rest.get(HEADER_BYTES..frame_bytes)?;
        self.rest = self.rest.get(frame_bytes..)?;
        Some((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameKind, FLAG_FEATURE};

    fn datagram(frames: &[(FrameHeader, &[u8])], count: u16) -> Vec<u8> {
        let mut d = vec![0u8; PREFIX_BYTES];
        DatagramPrefix::new(11, 22, count).write_to(&mut d);
        for (header, payload) in frames {
            let start = d.len();
            d.resize(start + HEADER_BYTES + payload.len(), 0);
            header.write_to(&mut d[start..]);
            d[start + HEADER_BYTES..].copy_from_slice(payload);
        }
        d
    }

    #[test]
    fn parses_frames_back_to_back() {
        let a = FrameHeader::new(FrameKind::Publish, 0, 0, 3);
        let b = FrameHeader::new(FrameKind::Send, 0, 0, 1)
            .with_feature(5)
            .with_flags(FLAG_FEATURE);
        let d = datagram(&[(a, b"abc"), (b, b"z")], 2);
        let parsed = Datagram::parse(&d).unwrap();
        assert_eq!(parsed.prefix().source_id(), 11);
        let got: Vec<_> = parsed
            .frames()
            .map(|(h, p)| (h.kind(), p.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (FrameKind::Publish, b"abc".to_vec()),
                (FrameKind::Send, b"z".to_vec())
            ]
        );
    }

    #[test]
    fn rejects_bad_version_wrong_count_and_trailing_bytes() {
        let a = FrameHeader::new(FrameKind::Publish, 0, 0, 3);
        let mut d = datagram(&[(a, b"abc")], 1);
        d[4] = 2;
        assert_eq!(
            Datagram::parse(&d).unwrap_err(),
            DatagramError::UnsupportedVersion { found: 2 }
        );
        let d = datagram(&[(a, b"abc")], 2);
        assert!(matches!(
            Datagram::parse(&d),
            Err(DatagramError::FrameCount {
                claimed: 2,
                found: 1
            })
        ));
        let mut d = datagram(&[(a, b"abc")], 1);
        d.extend_from_slice(&[0u8; 7]);
        assert!(matches!(
            Datagram::parse(&d),
            Err(DatagramError::Frame {
                offset_bytes: 75,
                ..
            })
        ));
    }

    #[test]
    fn rejects_a_frame_claiming_more_than_the_datagram_holds() {
        let mut a = FrameHeader::new(FrameKind::Publish, 0, 0, 3);
        a.frame_len_bytes = zerocopy::little_endian::U32::new(4000);
        let d = datagram(&[(a, b"abc")], 1);
        assert!(matches!(
            Datagram::parse(&d),
            Err(DatagramError::Frame { .. })
        ));
    }
}
