//! Telemetry over UDP, the receiving side: fire-and-forget frames for metrics and events
//! (sent with `agentwire_shm::telemetry::TelemetrySender`), each datagram numbered per
//! source so that loss is counted and reported, never silent.
//!
//! One glommio executor of its own (io_uring `recvmsg`), one in-process endpoint in the
//! router (`udp-telemetry`). Each datagram is checked whole (prefix and every frame header;
//! a bad one counts `datagrams_malformed` and is dropped, so its sequence shows as lost),
//! then accounted per (peer address, source id) by a bounded
//! [`SequenceTracker`](agentwire_shm::telemetry::SequenceTracker): duplicates and late
//! arrivals are dropped, gaps counted lost, late arrivals within the window counted
//! reordered and forwarded. Its frames then go into the router with `try_send`: `Publish`
//! frames re-addressed to the configured topic, frames with `FLAG_FEATURE` as they are
//! (feature routes), anything else refused. A full ring drops the frame and counts it
//! (`frames_dropped_full`): the socket is never held up by the router.
//!
//! What loss is visible: a gap shows when the source's next datagram arrives, so a loss at
//! the very end of a burst is counted with the source's next datagram. Frames lost with a
//! datagram are not known one by one (only the datagram count is).

use crate::running::Running;
use crate::TransportError;
use agentwire_router::endpoint::{Endpoint, EndpointKind, EndpointRegistrar};
use agentwire_shm::control::Registration;
use agentwire_shm::ring::ClaimError;
use agentwire_shm::telemetry::{
    Datagram, SequenceTracker, SourceCounts, DATAGRAM_BYTES_MAX, SOURCES_MAX_DEFAULT,
};
use agentwire_shm::wire::{FrameKind, FLAG_ACK_REQUESTED, FLAG_ANYCAST, FLAG_FEATURE};
use glommio::net::UdpSocket;
use glommio::{GlommioError, LocalExecutorBuilder, Placement, PoolPlacement};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The endpoint's name in the router.
pub const UDP_ENDPOINT_NAME: &str = "udp-telemetry";
/// Default topic `Publish` frames go to.
pub const UDP_TOPIC_DEFAULT: &str = "telemetry";
/// Default socket receive buffer asked for, bytes: room for bursts while the executor is
/// busy. The kernel caps it at `net.core.rmem_max` (often 208 KiB: raise that sysctl to get
/// more).
pub const RECV_BUFFER_BYTES_DEFAULT: usize = 4 << 20;
/// Sources in the per-source status list (those with the most loss).
pub const SOURCES_REPORTED_MAX: usize = 8;
/// How often a receive wakes up with nothing to look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How often the per-source list is refreshed.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Frames of the endpoint's rx ring (nacks) drained per datagram at most.
const RX_DRAIN_FRAMES_MAX: usize = 64;
/// Memory glommio registers for its io_uring buffers.
const IO_MEMORY_BYTES: usize = 512 * 1024;
/// Bytes of the receive buffer: the largest UDP payload, so nothing is truncated.
const RECEIVE_BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(RECEIVE_BUFFER_BYTES > DATAGRAM_BYTES_MAX);

/// A UDP telemetry receiver's configuration.
///
/// ```
/// let c = agentwire_transport::udp::UdpTelemetryConfig::new("127.0.0.1:0".parse().unwrap());
/// assert_eq!(c.topic, "telemetry");
/// ```
#[derive(Debug, Clone)]
pub struct UdpTelemetryConfig {
    /// Address and port to receive on.
    pub listen: SocketAddr,
    /// Topic the `Publish` frames are published to.
    pub topic: String,
    /// Sources tracked at once (least recently seen evicted beyond).
    pub sources_max: usize,
    /// Socket receive buffer asked for (SO_RCVBUF), bytes.
    pub recv_buffer_bytes: usize,
    /// Bytes of each ring of the endpoint in the router (0: the router's default).
    pub ring_capacity_bytes: u32,
    /// CPU to pin the executor to (`None`: not pinned).
    pub cpu: Option<usize>,
}

impl UdpTelemetryConfig {
    /// Defaults: topic [`UDP_TOPIC_DEFAULT`], [`SOURCES_MAX_DEFAULT`] sources,
    /// [`RECV_BUFFER_BYTES_DEFAULT`], the router's ring size, not pinned.
    ///
    /// ```
    /// let c = agentwire_transport::udp::UdpTelemetryConfig::new("0.0.0.0:7451".parse().unwrap());
    /// assert_eq!(c.sources_max, 4096);
    /// ```
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            topic: UDP_TOPIC_DEFAULT.to_string(),
            sources_max: SOURCES_MAX_DEFAULT,
            recv_buffer_bytes: RECV_BUFFER_BYTES_DEFAULT,
            ring_capacity_bytes: 0,
            cpu: None,
        }
    }
}

/// The receiver's counters: relaxed atomics written by its executor.
///
/// ```
/// let s = agentwire_transport::udp::UdpStats::default();
/// assert_eq!(s.snapshot().datagrams_received, 0);
/// ```
#[derive(Debug, Default)]
pub struct UdpStats {
    datagrams_received: AtomicU64,
    datagrams_malformed: AtomicU64,
    datagrams_lost: AtomicU64,
    datagrams_reordered: AtomicU64,
    datagrams_duplicate: AtomicU64,
    datagrams_late: AtomicU64,
    sources_active: AtomicU64,
    sources_evicted: AtomicU64,
    frames_forwarded: AtomicU64,
    frames_refused: AtomicU64,
    frames_dropped_full: AtomicU64,
    frames_nacked: AtomicU64,
    bytes_received: AtomicU64,
    receive_errors: AtomicU64,
    /// The sources with the most loss, refreshed every [`REPORT_INTERVAL`].
    sources_worst: Mutex<Vec<SourceReport>>,
}

/// A copy of [`UdpStats`] at one moment.
///
/// ```
/// let s = agentwire_transport::udp::UdpStats::default().snapshot();
/// assert_eq!(s.datagrams_lost, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpStatsSnapshot {
    /// Datagrams accepted (not malformed, not duplicate, not late).
    pub datagrams_received: u64,
    /// Datagrams dropped: not a telemetry datagram, or a frame in it not valid.
    pub datagrams_malformed: u64,
    /// Sequence numbers that never arrived (per source, between the lowest and highest).
    pub datagrams_lost: u64,
    /// Arrived after a later one, within the 64-sequence window (accepted).
    pub datagrams_reordered: u64,
    /// Repeats dropped.
    pub datagrams_duplicate: u64,
    /// Older than the window, dropped (they stay counted lost).
    pub datagrams_late: u64,
    /// Sources tracked now.
    pub sources_active: u64,
    /// Sources dropped from the table to make room.
    pub sources_evicted: u64,
    /// Frames handed to the router.
    pub frames_forwarded: u64,
    /// Frames not forwarded: neither `Publish` nor `FLAG_FEATURE`, or larger than the ring.
    pub frames_refused: u64,
    /// Frames dropped because the endpoint's ring to the router was full.
    pub frames_dropped_full: u64,
    /// Nacks the router returned for forwarded frames (no subscriber, no feature route).
    pub frames_nacked: u64,
    /// Bytes of all datagrams received, malformed ones included.
    pub bytes_received: u64,
    /// Socket receive errors (other than the poll timeout).
    pub receive_errors: u64,
}

/// One source's loss, for status.
///
/// ```
/// # use agentwire_transport::udp::SourceReport;
/// let r = SourceReport { peer: "127.0.0.1:9".parse().unwrap(), source_id: 1, received: 9, lost: 1 };
/// assert_eq!(r.lost, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SourceReport {
    /// The sender's address.
    pub peer: SocketAddr,
    /// The sender's source id.
    pub source_id: u64,
    /// Datagrams accepted from it.
    pub received: u64,
    /// Its datagrams lost.
    pub lost: u64,
}

impl UdpStats {
    /// The counters now.
    ///
    /// ```
    /// let s = agentwire_transport::udp::UdpStats::default();
    /// assert_eq!(s.snapshot(), Default::default());
    /// ```
    pub fn snapshot(&self) -> UdpStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UdpStatsSnapshot {
            datagrams_received: get(&self.datagrams_received),
            datagrams_malformed: get(&self.datagrams_malformed),
            datagrams_lost: get(&self.datagrams_lost),
            datagrams_reordered: get(&self.datagrams_reordered),
            datagrams_duplicate: get(&self.datagrams_duplicate),
            datagrams_late: get(&self.datagrams_late),
            sources_active: get(&self.sources_active),
            sources_evicted: get(&self.sources_evicted),
            frames_forwarded: get(&self.frames_forwarded),
            frames_refused: get(&self.frames_refused),
            frames_dropped_full: get(&self.frames_dropped_full),
            frames_nacked: get(&self.frames_nacked),
            bytes_received: get(&self.bytes_received),
            receive_errors: get(&self.receive_errors),
        }
    }

    /// The sources with the most loss (at most [`SOURCES_REPORTED_MAX`], most first), as
    /// of the last refresh (every second while datagrams arrive).
    ///
    /// ```
    /// let s = agentwire_transport::udp::UdpStats::default();
    /// assert!(s.sources_worst().is_empty());
    /// ```
    pub fn sources_worst(&self) -> Vec<SourceReport> {
        self.sources_worst
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A running UDP telemetry receiver. Dropping it stops the executor (its endpoint leaves
/// the router).
///
/// ```
/// use agentwire_router::testing::{TestRouter, TestRouterConfig};
/// use agentwire_transport::udp::{UdpTelemetry, UdpTelemetryConfig};
/// let sock = std::env::temp_dir().join(format!("aw-doc-udp-{}.sock", std::process::id()));
/// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
/// let config = UdpTelemetryConfig::new("127.0.0.1:0".parse().unwrap());
/// let udp = UdpTelemetry::start(config, router.control().endpoint_registrar()).unwrap();
/// assert_ne!(udp.local_addr().port(), 0);
/// assert_eq!(udp.stats().datagrams_received, 0);
/// ```
pub struct UdpTelemetry {
    local_addr: SocketAddr,
    stats: Arc<UdpStats>,
    /// Stopped and joined on drop (the endpoint leaves the router).
    _running: Running,
}

impl std::fmt::Debug for UdpTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTelemetry")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl UdpTelemetry {
    /// Binds `config.listen`, registers the endpoint, resolves the topic and starts
    /// receiving on an executor of its own. Fails (before anything runs) on an address that
    /// cannot be bound, an endpoint the router refuses, or a bad configuration.
    ///
    /// ```
    /// use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// use agentwire_transport::udp::{UdpTelemetry, UdpTelemetryConfig};
    /// let sock = std::env::temp_dir().join(format!("aw-doc-udp-bad-{}.sock", std::process::id()));
    /// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let mut config = UdpTelemetryConfig::new("127.0.0.1:0".parse().unwrap());
    /// config.sources_max = 0;
    /// assert!(UdpTelemetry::start(config, router.control().endpoint_registrar()).is_err());
    /// ```
    pub fn start(
        config: UdpTelemetryConfig,
        registrar: EndpointRegistrar,
    ) -> Result<Self, TransportError> {
        if !(1..=1 << 20).contains(&config.sources_max) {
            return Err(TransportError::Bind(format!(
                "udp sources_max {} is not in 1..={}",
                config.sources_max,
                1 << 20
            )));
        }
        let socket = bind(&config)?;
        let identity = Registration {
            name: UDP_ENDPOINT_NAME.into(),
            ring_capacity_bytes: config.ring_capacity_bytes,
            ..Registration::default()
        };
        let mut endpoint = registrar
            .register(identity, EndpointKind::InProcess)
            .map_err(|e| TransportError::Bind(format!("udp telemetry endpoint: {e}")))?;
        let topic_id = endpoint
            .topic_id(&config.topic)
            .map_err(|e| TransportError::Bind(format!("udp topic {:?}: {e}", config.topic)))?;
        let local_addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| TransportError::Bind("udp: no local address".into()))?;
        let stats = Arc::new(UdpStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let placement = match config.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let (started, started_rx) = sync_channel(1);
        let receiver = Receiver {
            endpoint,
            topic_id,
            tracker: SequenceTracker::new(config.sources_max),
            stats: stats.clone(),
            stop: stop.clone(),
            worst: Vec::with_capacity(SOURCES_REPORTED_MAX),
        };
        let executor = LocalExecutorBuilder::new(placement)
            .name("aw-udp")
            .io_memory(IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(move || async move {
                let socket = UdpSocket::from(socket);
                if let Err(e) = socket.set_read_timeout(Some(STOP_POLL)) {
                    let _ = started.send(Err(e.to_string()));
                    return;
                }
                let _ = started.send(Ok(()));
                receiver.run(socket).await;
            })
            .map_err(|e| TransportError::Executor(e.to_string()))?;
        let (running, ()) = Running::confirm(stop, executor, &started_rx)?;
        Ok(Self {
            local_addr,
            stats,
            _running: running,
        })
    }

    /// The address bound (the real port when the configuration asked for port 0).
    ///
    /// ```no_run
    /// # fn f(u: &agentwire_transport::udp::UdpTelemetry) {
    /// println!("send telemetry to {}", u.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    ///
    /// ```no_run
    /// # fn f(u: &agentwire_transport::udp::UdpTelemetry) {
    /// println!("{} datagrams lost", u.stats().datagrams_lost);
    /// # }
    /// ```
    pub fn stats(&self) -> UdpStatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters themselves, to read after this handle moved (a status hook).
    ///
    /// ```no_run
    /// # fn f(u: &agentwire_transport::udp::UdpTelemetry) {
    /// let stats = u.stats_handle();
    /// std::thread::spawn(move || println!("{:?}", stats.snapshot()));
    /// # }
    /// ```
    pub fn stats_handle(&self) -> Arc<UdpStats> {
        self.stats.clone()
    }
}

/// The socket, bound with the receive buffer asked for (socket2: std and glommio cannot set
/// SO_RCVBUF; glommio takes a `socket2::Socket`).
fn bind(config: &UdpTelemetryConfig) -> Result<socket2::Socket, TransportError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: std::io::Error| TransportError::Bind(format!("udp {}: {e}", config.listen));
    let socket = Socket::new(
        Domain::for_address(config.listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(fail)?;
    if let Err(e) = socket.set_recv_buffer_size(config.recv_buffer_bytes) {
        tracing::warn!("udp telemetry: SO_RCVBUF {}: {e}", config.recv_buffer_bytes);
    }
    socket.bind(&config.listen.into()).map_err(fail)?;
    Ok(socket)
}

/// The executor's state: everything the receive loop touches, owned by it.
struct Receiver {
    endpoint: Endpoint,
    topic_id: u32,
    tracker: SequenceTracker<(SocketAddr, u64)>,
    stats: Arc<UdpStats>,
    stop: Arc<AtomicBool>,
    worst: Vec<((SocketAddr, u64), SourceCounts)>,
}

impl Receiver {
    async fn run(mut self, socket: UdpSocket) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        let mut reported_at = Instant::now();
        let mut error_logged_at: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            match socket.recv_from(&mut buffer).await {
                Ok((n, peer)) => self.datagram(&buffer[..n], peer),
                Err(GlommioError::TimedOut(_)) => {}
                Err(e) => {
                    add(&self.stats.receive_errors, 1);
                    if error_logged_at.is_none_or(|at| at.elapsed() >= REPORT_INTERVAL) {
                        error_logged_at = Some(Instant::now());
                        tracing::warn!("udp telemetry receive failed: {e} (logged once a second)");
                    }
                    glommio::timer::sleep(STOP_POLL).await;
                }
            }
            self.drain_nacks();
            if reported_at.elapsed() >= REPORT_INTERVAL {
                reported_at = Instant::now();
                self.report_sources();
            }
        }
        self.report_sources();
    }

    /// One datagram: checked, accounted, its frames forwarded.
    fn datagram(&mut self, bytes: &[u8], peer: SocketAddr) {
        add(&self.stats.bytes_received, bytes.len() as u64);
        let Ok(datagram) = Datagram::parse(bytes) else {
            add(&self.stats.datagrams_malformed, 1);
            return;
        };
        let prefix = datagram.prefix();
        let verdict = self
            .tracker
            .observe((peer, prefix.source_id()), prefix.sequence());
        if verdict.forward() {
            self.forward(datagram);
        }
        // The datagram counters last: once they count a datagram, its frames are counted.
        let counts = self.tracker.counts();
        let stats = &*self.stats;
        let set = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        set(&stats.datagrams_received, counts.received);
        set(&stats.datagrams_lost, counts.lost);
        set(&stats.datagrams_reordered, counts.reordered);
        set(&stats.datagrams_duplicate, counts.duplicate);
        set(&stats.datagrams_late, counts.late);
        set(&stats.sources_active, counts.sources_active);
        set(&stats.sources_evicted, counts.sources_evicted);
    }

    /// The frames of an accepted datagram into the router.
    fn forward(&mut self, datagram: Datagram<'_>) {
        let stats = &*self.stats;
        let (mut forwarded, mut refused, mut full) = (0u64, 0u64, 0u64);
        for (header, payload) in datagram.frames() {
            let mut header = *header;
            let flags = header.routing_flags.get();
            match header.kind() {
                FrameKind::Publish => {
                    header.destination.set(self.topic_id);
                    header
                        .routing_flags
                        .set(flags & !(FLAG_ACK_REQUESTED | FLAG_ANYCAST | FLAG_FEATURE));
                }
                FrameKind::Send if flags & FLAG_FEATURE != 0 => {
                    // Nothing answers a UDP sender: no acks.
                    header.routing_flags.set(flags & !FLAG_ACK_REQUESTED);
                }
                _ => {
                    refused += 1;
                    continue;
                }
            }
            header.set_source(0); // the router stamps this endpoint's id
            match self.endpoint.try_send(header, payload) {
                Ok(()) => forwarded += 1,
                Err(ClaimError::Full { .. }) => full += 1,
                Err(ClaimError::TooLarge { .. }) => refused += 1,
            }
        }
        add(&stats.frames_forwarded, forwarded);
        add(&stats.frames_refused, refused);
        add(&stats.frames_dropped_full, full);
    }

    /// Reads what the router sent back (nacks for forwarded frames nobody took), so the
    /// endpoint's rx ring never fills.
    fn drain_nacks(&mut self) {
        let mut nacks = 0u64;
        let _ = self.endpoint.read(RX_DRAIN_FRAMES_MAX, |header, _| {
            if header.kind() == FrameKind::Nack {
                nacks += 1;
            }
        });
        add(&self.stats.frames_nacked, nacks);
    }

    fn report_sources(&mut self) {
        self.tracker
            .most_lost(SOURCES_REPORTED_MAX, &mut self.worst);
        if let Ok(mut list) = self.stats.sources_worst.lock() {
            list.clear();
            list.extend(
                self.worst
                    .iter()
                    .map(|&((peer, source_id), counts)| SourceReport {
                        peer,
                        source_id,
                        received: counts.received,
                        lost: counts.lost,
                    }),
            );
        }
    }
}
