//! The sending side: frames packed into one reused datagram buffer.

use super::{DatagramPrefix, DATAGRAM_BYTES_DEFAULT, DATAGRAM_BYTES_MAX, PREFIX_BYTES};
use crate::wire::{FrameHeader, FrameKind, FLAG_ACK_REQUESTED, FLAG_FEATURE, HEADER_BYTES};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// How long one datagram send may wait for room in the socket's send buffer. UDP sends
/// rarely wait at all (a full receiver drops, it does not push back); this bounds the rare
/// case so a sender never stalls its caller for long.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(10);

/// Why a telemetry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The frame cannot fit in one datagram of this sender's size, even alone.
    #[error(
        "a frame of {frame_bytes} bytes does not fit in a {datagram_bytes_max}-byte datagram \
         (with its {PREFIX_BYTES}-byte prefix)"
    )]
    TooLarge {
        /// Header plus payload.
        frame_bytes: usize,
        /// The sender's datagram bound.
        datagram_bytes_max: usize,
    },
    /// The datagram size asked for is out of range.
    #[error(
        "datagram_bytes_max {found} is not in {}..={DATAGRAM_BYTES_MAX}",
        PREFIX_BYTES + HEADER_BYTES
    )]
    BadDatagramSize {
        /// What was asked for.
        found: usize,
    },
    /// The socket failed (bind, connect, or a send: the datagram is dropped and counted,
    /// its sequence number is spent so the receiver counts it lost).
    #[error("telemetry socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A sender's counters.
///
/// ```
/// let s = agentwire_shm::telemetry::SenderStats::default();
/// assert_eq!(s.datagrams_sent, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Datagrams the socket accepted.
    pub datagrams_sent: u64,
    /// Frames in those datagrams.
    pub frames_sent: u64,
    /// Datagrams the socket refused (their frames are lost; the receiver counts the gap).
    pub datagrams_failed: u64,
}

/// Options of a [`TelemetrySender`].
///
/// ```
/// use agentwire_shm::telemetry::TelemetrySender;
/// let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let sender = TelemetrySender::builder(rx.local_addr().unwrap())
///     .datagram_bytes_max(8192)
///     .source_id(42)
///     .build()
///     .unwrap();
/// assert_eq!(sender.source_id(), 42);
/// ```
#[derive(Debug, Clone)]
pub struct TelemetrySenderBuilder {
    addr: SocketAddr,
    datagram_bytes_max: usize,
    source_id: Option<u64>,
}

impl TelemetrySenderBuilder {
    /// Bound on each datagram's UDP payload, bytes (default
    /// [`DATAGRAM_BYTES_DEFAULT`], at most [`DATAGRAM_BYTES_MAX`]).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let b = agentwire_shm::telemetry::TelemetrySender::builder(rx.local_addr().unwrap());
    /// assert!(b.datagram_bytes_max(10).build().is_err());
    /// ```
    pub fn datagram_bytes_max(mut self, bytes: usize) -> Self {
        self.datagram_bytes_max = bytes;
        self
    }

    /// A fixed source id instead of a random one (tests; two senders must never share one).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let s = agentwire_shm::telemetry::TelemetrySender::builder(rx.local_addr().unwrap())
    ///     .source_id(7).build().unwrap();
    /// assert_eq!(s.source_id(), 7);
    /// ```
    pub fn source_id(mut self, id: u64) -> Self {
        self.source_id = Some(id);
        self
    }

    /// Binds an ephemeral local port and connects it to the address (no packet is sent).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let s = agentwire_shm::telemetry::TelemetrySender::builder(rx.local_addr().unwrap()).build().unwrap();
    /// assert_eq!(s.stats().datagrams_sent, 0);
    /// ```
    pub fn build(self) -> Result<TelemetrySender, TelemetryError> {
        let bytes = self.datagram_bytes_max;
        if !(PREFIX_BYTES + HEADER_BYTES..=DATAGRAM_BYTES_MAX).contains(&bytes) {
            return Err(TelemetryError::BadDatagramSize { found: bytes });
        }
        let local: SocketAddr = if self.addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(self.addr)?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(TelemetrySender {
            socket,
            source_id: self.source_id.unwrap_or_else(random_source_id),
            sequence_next: 0,
            buffer: vec![0u8; bytes].into_boxed_slice(),
            filled_bytes: PREFIX_BYTES,
            frames_buffered: 0,
            stats: SenderStats::default(),
        })
    }
}

/// Sends telemetry frames to a daemon's UDP listener (`[remote] udp_listen`), fire and
/// forget: frames are packed into the current datagram until the next one does not fit,
/// then the datagram goes out; [`TelemetrySender::flush`] sends a partial one, and dropping
/// the sender flushes. Each datagram carries this sender's random source id and the next
/// sequence number (0 first), so the receiver counts every datagram lost on the way.
/// One buffer, allocated at creation; nothing is allocated per frame.
///
/// ```
/// use agentwire_shm::telemetry::TelemetrySender;
/// let daemon = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let mut sender = TelemetrySender::connect(daemon.local_addr().unwrap()).unwrap();
/// for i in 0..100u32 {
///     sender.publish(&i.to_le_bytes()).unwrap();
/// }
/// sender.flush().unwrap();
/// assert_eq!(sender.stats().frames_sent, 100);
/// ```
#[derive(Debug)]
pub struct TelemetrySender {
    socket: UdpSocket,
    source_id: u64,
    sequence_next: u64,
    /// The datagram being filled: the prefix (written at send), then frames.
    buffer: Box<[u8]>,
    filled_bytes: usize,
    frames_buffered: u16,
    stats: SenderStats,
}

impl TelemetrySender {
    /// A sender to `addr` with the default datagram size ([`DATAGRAM_BYTES_DEFAULT`]) and a
    /// random source id.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// println!("source {:#x}", s.source_id());
    /// ```
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self, TelemetryError> {
        let addr = first_addr(addr)?;
        Self::builder(addr).build()
    }

    /// A builder for a sender to `addr`.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let s = agentwire_shm::telemetry::TelemetrySender::builder(rx.local_addr().unwrap())
    ///     .datagram_bytes_max(1452).build().unwrap();
    /// # drop(s);
    /// ```
    pub fn builder(addr: SocketAddr) -> TelemetrySenderBuilder {
        TelemetrySenderBuilder {
            addr,
            datagram_bytes_max: DATAGRAM_BYTES_DEFAULT,
            source_id: None,
        }
    }

    /// Queues a `Publish` frame; the daemon publishes its payload to the listener's
    /// configured topic (`udp_topic`).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let mut s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// s.publish(b"queue_depth=17").unwrap();
    /// ```
    pub fn publish(&mut self, payload: &[u8]) -> Result<(), TelemetryError> {
        let header = FrameHeader::new(FrameKind::Publish, 0, 0, payload_len(payload));
        self.push(header, payload)
    }

    /// Queues a `Send` frame routed by `feature_id` (the router's feature routes, e.g. into
    /// the streaming engine).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let mut s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// s.send_feature(0x5354, b"event").unwrap();
    /// ```
    pub fn send_feature(&mut self, feature_id: u32, payload: &[u8]) -> Result<(), TelemetryError> {
        let header = FrameHeader::new(FrameKind::Send, 0, 0, payload_len(payload))
            .with_feature(feature_id)
            .with_flags(FLAG_FEATURE);
        self.push(header, payload)
    }

    /// Queues any frame (its payload length is set from `payload`; an ack request is
    /// cleared: nothing answers a UDP sender). The receiver forwards only `Publish` frames
    /// and frames with [`FLAG_FEATURE`]; it counts the others refused.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let mut s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// use agentwire_shm::wire::{FrameHeader, FrameKind};
    /// s.push(FrameHeader::new(FrameKind::Publish, 0, 0, 0).with_priority(0), b"urgent").unwrap();
    /// ```
    pub fn push(&mut self, mut header: FrameHeader, payload: &[u8]) -> Result<(), TelemetryError> {
        let frame_bytes = HEADER_BYTES + payload.len();
        if PREFIX_BYTES + frame_bytes > self.buffer.len() {
            return Err(TelemetryError::TooLarge {
                frame_bytes,
                datagram_bytes_max: self.buffer.len(),
            });
        }
        if self.filled_bytes + frame_bytes > self.buffer.len() || self.frames_buffered == u16::MAX {
            self.flush()?;
        }
        header.frame_len_bytes.set(frame_bytes as u32);
        header.payload_len_bytes.set(payload.len() as u32);
        header
            .routing_flags
            .set(header.routing_flags.get() & !FLAG_ACK_REQUESTED);
        let start = self.filled_bytes;
        header.write_to(&mut self.buffer[start..]);
        self.buffer[start + HEADER_BYTES..start + frame_bytes].copy_from_slice(payload);
        self.filled_bytes += frame_bytes;
        self.frames_buffered += 1;
        Ok(())
    }

    /// Sends the datagram being filled (nothing when it holds no frame). A failed send
    /// drops the datagram, counts it ([`SenderStats::datagrams_failed`]) and spends its
    /// sequence number, so the receiver sees the gap.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let mut s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// s.flush().unwrap(); // nothing queued: nothing sent
    /// assert_eq!(s.stats().datagrams_sent, 0);
    /// ```
    pub fn flush(&mut self) -> Result<(), TelemetryError> {
        if self.frames_buffered == 0 {
            return Ok(());
        }
        let frames = self.frames_buffered;
        DatagramPrefix::new(self.source_id, self.sequence_next, frames).write_to(&mut self.buffer);
        self.sequence_next += 1;
        let sent = self.socket.send(&self.buffer[..self.filled_bytes]);
        self.filled_bytes = PREFIX_BYTES;
        self.frames_buffered = 0;
        match sent {
            Ok(_) => {
                self.stats.datagrams_sent += 1;
                self.stats.frames_sent += u64::from(frames);
                Ok(())
            }
            Err(e) => {
                self.stats.datagrams_failed += 1;
                Err(e.into())
            }
        }
    }

    /// This sender's source id (random unless the builder set one).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let a = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// let b = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// assert_ne!(a.source_id(), b.source_id());
    /// ```
    pub fn source_id(&self) -> u64 {
        self.source_id
    }

    /// The sequence number the next datagram will carry (= datagrams sent or failed).
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// assert_eq!(s.sequence_next(), 0);
    /// ```
    pub fn sequence_next(&self) -> u64 {
        self.sequence_next
    }

    /// The counters now.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// assert_eq!(s.stats().frames_sent, 0);
    /// ```
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// The local address the datagrams come from.
    ///
    /// ```
    /// # let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// # let s = agentwire_shm::telemetry::TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
    /// assert_ne!(s.local_addr().unwrap().port(), 0);
    /// ```
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Drop for TelemetrySender {
    fn drop(&mut self) {
        // Fire and forget: a failure is counted, and nobody is left to read the count.
        let _ = self.flush();
    }
}

fn first_addr(addr: impl ToSocketAddrs) -> Result<SocketAddr, TelemetryError> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        TelemetryError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ))
    })
}

/// A payload length as the header's field; a payload this long never fits a datagram, and
/// [`TelemetrySender::push`] refuses it on the real length.
fn payload_len(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).unwrap_or(u32::MAX)
}

/// 64 random bits: std's `RandomState` is seeded from the OS's random source once per
/// thread and then stepped for each new state, so hashing the time and the process id with
/// a fresh one gives distinct ids for senders of one process and of many.
fn random_source_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Datagram;

    fn receiver() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn packs_frames_until_the_datagram_is_full_then_numbers_datagrams() {
        let rx = receiver();
        let mut s = TelemetrySender::builder(rx.local_addr().unwrap())
            .datagram_bytes_max(PREFIX_BYTES + 3 * (HEADER_BYTES + 8))
            .source_id(5)
            .build()
            .unwrap();
        for i in 0..7u64 {
            s.publish(&i.to_le_bytes()).unwrap();
        }
        drop(s); // flushes the last, partial datagram
        let mut buf = [0u8; 2048];
        let mut seen = Vec::new();
        for expected_sequence in 0..3u64 {
            let n = rx.recv(&mut buf).unwrap();
            let d = Datagram::parse(&buf[..n]).unwrap();
            assert_eq!(d.prefix().source_id(), 5);
            assert_eq!(d.prefix().sequence(), expected_sequence);
            for (h, p) in d.frames() {
                assert_eq!(h.kind(), FrameKind::Publish);
                seen.push(u64::from_le_bytes(p.try_into().unwrap()));
            }
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_a_frame_larger_than_a_datagram() {
        let rx = receiver();
        let mut s = TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
        let big = vec![0u8; DATAGRAM_BYTES_DEFAULT];
        assert!(matches!(
            s.publish(&big),
            Err(TelemetryError::TooLarge { .. })
        ));
        assert_eq!(s.stats(), SenderStats::default());
    }

    #[test]
    fn feature_frames_carry_the_feature_flag_and_no_ack_request() {
        let rx = receiver();
        let mut s = TelemetrySender::connect(rx.local_addr().unwrap()).unwrap();
        s.send_feature(9, b"x").unwrap();
        let h = FrameHeader::new(FrameKind::Publish, 0, 0, 0).with_flags(FLAG_ACK_REQUESTED);
        s.push(h, b"y").unwrap();
        s.flush().unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let d = Datagram::parse(&buf[..n]).unwrap();
        let headers: Vec<_> = d.frames().map(|(h, _)| *h).collect();
        assert_eq!(headers[0].feature_id.get(), 9);
        assert_ne!(headers[0].routing_flags.get() & FLAG_FEATURE, 0);
        assert!(!headers[1].ack_requested());
    }
}
