//! Remote agents: an [`Agent`](super::Agent) served by a daemon on another machine, over TCP
//! (TLS 1.3 by rustls, or plaintext where asked for explicitly).
//!
//! The agent's code does not change: [`connect`] opens the stream, completes the TLS
//! handshake, and hands the agent one end of a local control connection whose other end an
//! in-process **bridge** thread (`aw-remote-<name>`) serves as the daemon would. The bridge
//! relays control messages as control frames on the stream; when the server registers the
//! agent it creates the agent's segment and doorbells here, exactly as the daemon's
//! admission does, and then pumps the agent's tx lanes to the socket and the socket's data
//! frames into the agent's rx ring. docs/wire.md ("On a byte stream") is the protocol.
//!
//! ```no_run
//! use agentwire_shm::client::Agent;
//! use std::sync::Arc;
//! # fn config() -> rustls::ClientConfig { unimplemented!() }
//! let tls: Arc<rustls::ClientConfig> = Arc::new(config()); // roots and client certificate
//! let mut agent = Agent::builder("ocr-7")
//!     .remote("gateway.example.net:7447")
//!     .tls(tls)
//!     .connect()?;
//! agent.publish("scans", b"page 1")?;
//! # Ok::<(), agentwire_shm::client::ClientError>(())
//! ```
//!
//! Flow control: the bridge stops draining the agent's tx lanes while more than
//! [`OUT_PENDING_BYTES_MAX`] bytes wait for the socket (the agent's tx ring fills and its
//! sends see backpressure), and stops reading the socket while the agent's rx ring has no
//! room for the next frame (TCP pushes back on the server). Nothing is dropped but a frame
//! the agent's rx ring could never hold (logged).
//!
//! Control replies share the stream with data frames, so a reply can arrive behind data
//! frames waiting for room in a full rx ring (a local daemon's replies use their own
//! socket). While a remote agent waits for a reply it therefore moves what arrives in its
//! rx ring to its stash (`request_stash_frames_max`, 4,096 frames by default; the next
//! receives read them first, in order), so the bridge can deliver up to the reply. More
//! than the stash holds in front of a reply still waits, and the request times out after
//! [`super::CONTROL_REPLY_TIMEOUT`].

mod transport;

use super::{AgentBuilder, ClientError};
use crate::control::{ClientMsg, ControlConn, ControlError, ServerMsg};
use crate::doorbell::Doorbell;
use crate::ring::{ClaimError, Consumer, Producer};
use crate::segment::{state, HugePages, Segment, SegmentConfig, TX_LANES};
use crate::stream_frames::{
    append_control, decode_control, FrameAssembler, STREAM_FRAME_BYTES_MAX_DEFAULT,
};
use crate::wire::{FrameHeader, FrameKind};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use transport::{connect_tcp, handshake, OutBuf, Received, Transport};

/// How long the TCP connect and, separately, the TLS handshake may take.
///
/// ```
/// assert_eq!(agentwire_shm::client::remote::CONNECT_TIMEOUT.as_secs(), 5);
/// ```
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes the bridge keeps waiting for the socket (its own buffer, and rustls's buffer
/// of encrypted bytes, each): past it, the agent's tx lanes are left to fill.
///
/// ```
/// assert_eq!(agentwire_shm::client::remote::OUT_PENDING_BYTES_MAX, 256 * 1024);
/// ```
pub const OUT_PENDING_BYTES_MAX: usize = 256 * 1024;

/// Ring capacity of a remote agent that asks for none (`ring_capacity_bytes = 0`): the
/// daemon's default `ring_capacity_bytes` (256 KiB).
///
/// ```
/// use agentwire_shm::client::remote::REMOTE_RING_CAPACITY_DEFAULT_BYTES;
/// assert!(REMOTE_RING_CAPACITY_DEFAULT_BYTES.is_power_of_two());
/// ```
pub const REMOTE_RING_CAPACITY_DEFAULT_BYTES: usize = 256 * 1024;

/// Frames taken from one tx lane, or put into the rx ring, per round of the pump.
const FRAMES_PER_ROUND_MAX: usize = 256;
/// Control messages taken from the agent per round.
const CONTROL_PER_ROUND_MAX: usize = 16;
/// Idle rounds spun (with `spin_loop`) after activity before the pump parks in `poll`. Each
/// round makes syscalls (the socket, the control connection), so a long spin steals a core
/// from the agent and the daemon on a small machine: 512 rounds cost the round trip ~600 µs
/// on 2 vCPUs (BENCHMARKS.md, "Remote agents over TCP and TLS"); 16 keep a burst hot.
const SPIN_ROUNDS_MAX: u32 = 16;
/// How long one park in `poll` lasts: also the bound on noticing room in a full rx ring
/// (the agent rings no bell when it consumes) and on a missed tx wakeup.
const PARK_TIMEOUT: Duration = Duration::from_millis(1);
/// How long the bridge tries to flush what it has (a `Goodbye`) when the agent leaves.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// What [`AgentBuilder::remote`] and its companions set.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteConfig {
    addr: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
    plaintext: bool,
}

impl RemoteConfig {
    /// Whether the agent connects to a remote daemon.
    pub(crate) fn is_remote(&self) -> bool {
        self.addr.is_some()
    }
}

impl AgentBuilder {
    /// Connects to a remote daemon's network listener at `addr` (`host:port`) instead of
    /// the local socket. Needs [`AgentBuilder::tls`] (or, knowingly, [`AgentBuilder::plaintext`]);
    /// everything else about the agent is the same.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").remote("10.0.0.5:7447").plaintext();
    /// ```
    pub fn remote(mut self, addr: impl Into<String>) -> Self {
        self.remote.addr = Some(addr.into());
        self
    }

    /// Speaks TLS 1.3 to the remote daemon with this rustls configuration: its roots
    /// verify the daemon's certificate, and its client certificate (if any) identifies
    /// the agent to the daemon.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()
    ///     .unwrap()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let b = agentwire_shm::client::Agent::builder("a")
    ///     .remote("gateway.example.net:7447")
    ///     .tls(Arc::new(config));
    /// ```
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.remote.tls = Some(config);
        self
    }

    /// The name the daemon's certificate must carry (default: the host part of the
    /// [`AgentBuilder::remote`] address, a DNS name or an IP address).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a")
    ///     .remote("10.0.0.5:7447")
    ///     .tls_server_name("gateway.internal");
    /// ```
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.remote.server_name = Some(name.into());
        self
    }

    /// Allows a remote connection without TLS: frames cross the network readable and
    /// unauthenticated. Only for a network that is itself trusted (a test, a private link).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").remote("127.0.0.1:7447").plaintext();
    /// ```
    pub fn plaintext(mut self) -> Self {
        self.remote.plaintext = true;
        self
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

fn remote_error(addr: &str, cause: impl Into<String>) -> ClientError {
    ClientError::Remote {
        addr: addr.to_string(),
        cause: cause.into(),
    }
}

/// A running bridge, as the connecting code sees it: why it ended, once it has.
#[derive(Debug)]
pub(crate) struct Bridge {
    addr: String,
    ended: Arc<OnceLock<String>>,
}

impl Bridge {
    /// Replaces a "the daemon went away" error seen during the handshake with the reason
    /// the bridge ended (the server refused the client certificate, sent garbage, closed):
    /// the bridge records it before it closes its end, so it is there when the agent sees
    /// the close.
    pub(crate) fn explain(&self, e: ClientError) -> ClientError {
        let gone = matches!(
            e,
            ClientError::Disconnected
                | ClientError::Control(ControlError::Closed | ControlError::Io(_))
        );
        match self.ended.get() {
            Some(reason) if gone => remote_error(&self.addr, reason.clone()),
            _ => e,
        }
    }
}

/// Opens the stream to the remote daemon (TCP, then the TLS handshake), starts the bridge
/// thread, and returns the agent's end of the local control connection.
pub(crate) fn connect(b: &AgentBuilder) -> Result<(ControlConn, Bridge), ClientError> {
    let remote = &b.remote;
    let Some(addr) = remote.addr.as_deref() else {
        return Err(ClientError::Protocol("no remote address".into()));
    };
    if remote.tls.is_none() && !remote.plaintext {
        return Err(remote_error(
            addr,
            "no TLS configuration: call AgentBuilder::tls(config), or \
             AgentBuilder::plaintext() to send frames unencrypted on purpose",
        ));
    }
    let socket = connect_tcp(addr)?;
    let transport = match &remote.tls {
        Some(config) => {
            let name = remote
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(addr).to_string());
            handshake(addr, socket, config.clone(), name)?
        }
        None => Transport::Plain(socket),
    };
    transport
        .socket()
        .set_nonblocking(true)
        .map_err(|e| remote_error(addr, format!("cannot make the socket nonblocking: {e}")))?;
    let (agent_end, bridge_end) = ControlConn::pair()?;
    let ended = Arc::new(OnceLock::new());
    let pump = Pump::new(addr.to_string(), transport, bridge_end, ended.clone());
    let thread_name = format!("aw-remote-{}", b.registration.name);
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || pump.run())
        .map_err(|e| remote_error(addr, format!("cannot start the bridge thread: {e}")))?;
    Ok((
        agent_end,
        Bridge {
            addr: addr.to_string(),
            ended,
        },
    ))
}

/// The agent's rings as the daemon's side holds them, created at `Registered`.
struct Rings {
    segment: Segment,
    /// One consumer per tx lane; lane 0 holds the doorbell the agent rings for every lane.
    lanes: Vec<Consumer>,
    rx: Producer,
}

/// Why a frame from the server could not go into the rx ring now.
enum Delivery {
    Done,
    /// The rx ring is full: the frame waits in `stalled`.
    Stalled,
}

/// The bridge thread's state: one connection, one agent.
struct Pump {
    addr: String,
    transport: Transport,
    conn: ControlConn,
    ended: Arc<OnceLock<String>>,
    assembler: FrameAssembler,
    out: OutBuf,
    /// The capacity the agent asked for in its `Register` (0: the default).
    ring_capacity_bytes: u32,
    rings: Option<Rings>,
    /// A frame the full rx ring could not take yet (its length in `stalled_bytes`).
    stalled: Vec<u8>,
    stalled_bytes: usize,
    /// The agent closed its control connection (the normal end).
    agent_left: bool,
}

impl Pump {
    fn new(
        addr: String,
        transport: Transport,
        conn: ControlConn,
        ended: Arc<OnceLock<String>>,
    ) -> Self {
        Self {
            addr,
            transport,
            conn,
            ended,
            assembler: FrameAssembler::new(STREAM_FRAME_BYTES_MAX_DEFAULT),
            out: OutBuf::new(),
            ring_capacity_bytes: 0,
            rings: None,
            stalled: Vec::new(),
            stalled_bytes: 0,
            agent_left: false,
        }
    }

    /// Pumps until the connection or the agent ends, then tears everything down: the
    /// segment is marked closed and every descriptor dropped, so the agent sees its daemon
    /// gone.
    fn run(mut self) {
        let mut idle_rounds = 0u32;
        let reason = loop {
            match self.round() {
                Ok(0) => {}
                Ok(_) => {
                    idle_rounds = 0;
                    continue;
                }
                Err(reason) => break reason,
            }
            idle_rounds += 1;
            if idle_rounds < SPIN_ROUNDS_MAX {
                std::hint::spin_loop();
                continue;
            }
            if let Err(reason) = self.park() {
                break reason;
            }
        };
        if self.agent_left {
            tracing::info!(addr = %self.addr, %reason, "remote bridge ended");
        } else {
            tracing::warn!(addr = %self.addr, %reason, "remote bridge ended");
        }
        if let Some(rings) = &self.rings {
            // SYNC POINT: segment state (the agent's Acquire loads). Whatever is left in
            // the tx lanes was never sent: CLOSED with the head short of it tells the agent.
            rings
                .segment
                .control()
                .state
                .0
                .store(state::CLOSED, Ordering::Release);
        }
        // Before the control connection closes (when `self` drops), so the agent finds it.
        let _ = self.ended.set(reason);
    }

    /// One pass over every source; returns the work done, or why the bridge ends.
    fn round(&mut self) -> Result<usize, String> {
        let mut work = self.relay_agent_control()?;
        work += self.drain_tx()?;
        work += self
            .transport
            .flush(&mut self.out)
            .map_err(|e| format!("writing to the server failed: {e}"))?;
        work += self.take_from_server()?;
        Ok(work)
    }

    /// Relays the agent's control messages as control frames.
    fn relay_agent_control(&mut self) -> Result<usize, String> {
        let mut relayed = 0;
        while relayed < CONTROL_PER_ROUND_MAX && self.out.has_room() {
            let msg = match self.conn.recv::<ClientMsg>(Some(Duration::ZERO)) {
                Ok((msg, _fds)) => msg,
                Err(ControlError::Timeout(_)) => break,
                Err(ControlError::Closed) => {
                    self.agent_left = true;
                    self.final_flush();
                    return Err("the agent closed its connection".into());
                }
                Err(e) => return Err(format!("the agent's control connection failed: {e}")),
            };
            if let ClientMsg::Register(registration) = &msg {
                self.ring_capacity_bytes = registration.ring_capacity_bytes;
            }
            append_control(&msg, &mut self.out.buf)
                .map_err(|e| format!("cannot encode {msg:?}: {e}"))?;
            relayed += 1;
        }
        Ok(relayed)
    }

    /// Copies frames from the agent's tx lanes (lane 0, the most urgent, first) into the
    /// out buffer while it has room.
    fn drain_tx(&mut self) -> Result<usize, String> {
        let Some(rings) = &mut self.rings else {
            return Ok(0);
        };
        let out = &mut self.out;
        let control = rings.segment.control();
        let mut moved = 0;
        for lane in rings.lanes.iter_mut() {
            if !out.has_room() {
                break;
            }
            let read = lane.read(FRAMES_PER_ROUND_MAX, |frame| {
                if !out.has_room() {
                    return ControlFlow::Break(());
                }
                // A frame the server would refuse would close the stream: drop it here,
                // counted where the agent reads the daemon's rejections.
                if FrameHeader::validate(frame).is_ok() {
                    out.buf.extend_from_slice(frame);
                } else {
                    control.frames_rejected.fetch_add(1, Ordering::Relaxed);
                }
                ControlFlow::Continue(())
            });
            match read {
                Ok(n) => moved += n,
                // A broken lane is the agent's bug (or its memory's): the router
                // disconnects such an agent, and so does the bridge.
                Err(e) => return Err(format!("the agent's tx lane is corrupt: {e}")),
            }
        }
        Ok(moved)
    }

    /// Takes frames from the socket: control frames to the agent's control connection,
    /// data frames into its rx ring, until the ring is full or the socket has nothing.
    fn take_from_server(&mut self) -> Result<usize, String> {
        let mut work = 0;
        if self.stalled_bytes > 0 {
            match self.retry_stalled() {
                Delivery::Done => work += 1,
                Delivery::Stalled => return Ok(0),
            }
        }
        let mut delivered = 0;
        'socket: while delivered < FRAMES_PER_ROUND_MAX {
            while let Some(frame) = self
                .assembler
                .next_frame()
                .map_err(|e| format!("the server sent bytes that are not a frame: {e}"))?
            {
                delivered += 1;
                let delivery = deliver(
                    frame,
                    &self.addr,
                    &self.conn,
                    &mut self.rings,
                    self.ring_capacity_bytes,
                    &mut self.stalled,
                    &mut self.stalled_bytes,
                )?;
                if matches!(delivery, Delivery::Stalled) {
                    break 'socket;
                }
                if delivered >= FRAMES_PER_ROUND_MAX {
                    break 'socket;
                }
            }
            match self
                .transport
                .read_into(&mut self.assembler)
                .map_err(|e| format!("reading from the server failed: {e}"))?
            {
                Received::Bytes => work += 1,
                Received::Nothing => break,
                Received::Closed => return Err("the server closed the connection".into()),
            }
        }
        if let Some(rings) = &mut self.rings {
            rings.rx.publish();
        }
        Ok(work + delivered)
    }

    fn retry_stalled(&mut self) -> Delivery {
        let Some(rings) = &mut self.rings else {
            return Delivery::Done;
        };
        let frame = &self.stalled[..self.stalled_bytes];
        match rings.rx.claim(frame.len()) {
            Ok(mut claim) => {
                claim.bytes_mut().copy_from_slice(frame);
                claim.commit_deferred();
                rings.rx.publish();
                self.stalled_bytes = 0;
                Delivery::Done
            }
            Err(_) => Delivery::Stalled,
        }
    }

    /// Waits for the socket, the agent's control connection or its tx doorbell, after
    /// telling the agent's producers (the ring's parking protocol) to ring.
    fn park(&mut self) -> Result<(), String> {
        if let Some(rings) = &mut self.rings {
            if Consumer::arm_park(&mut rings.lanes) {
                crate::doorbell::asymmetric_barrier();
            }
            if Consumer::any_pending(&rings.lanes) {
                return Ok(());
            }
            // The daemon's side beats while it serves the segment.
            let beat = &rings.segment.control().daemon_heartbeat.0;
            beat.store(
                beat.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        let mut socket_flags = PollFlags::empty();
        if self.stalled_bytes == 0 {
            socket_flags |= PollFlags::IN;
        }
        if self.transport.wants_write(&self.out) {
            socket_flags |= PollFlags::OUT;
        }
        let bell = self
            .rings
            .as_ref()
            .and_then(|r| r.lanes[0].doorbell())
            .map(|bell| bell.as_fd());
        let socket_fd = self.transport.socket().as_fd();
        let rung = poll_park(socket_fd, socket_flags, self.conn.as_fd(), bell)?;
        if rung {
            if let Some(bell) = self.rings.as_ref().and_then(|r| r.lanes[0].doorbell()) {
                // Empties the pipe (a zero wait); the lanes are read on the next round.
                bell.wait(Duration::ZERO);
            }
        }
        Ok(())
    }

    /// Gives the server what is buffered (the agent's `Goodbye`), for a moment at most.
    fn final_flush(&mut self) {
        let deadline = std::time::Instant::now() + FINAL_FLUSH_TIMEOUT;
        while self.transport.wants_write(&self.out) && std::time::Instant::now() < deadline {
            if self.transport.flush(&mut self.out).is_err() {
                return;
            }
            if self.transport.wants_write(&self.out) {
                std::thread::sleep(PARK_TIMEOUT);
            }
        }
        self.transport.close();
    }
}

/// Polls the socket (for `socket_flags`), the control connection and the tx doorbell for
/// [`PARK_TIMEOUT`]; returns whether the doorbell was rung.
fn poll_park(
    socket: BorrowedFd<'_>,
    socket_flags: PollFlags,
    conn: BorrowedFd<'_>,
    bell: Option<BorrowedFd<'_>>,
) -> Result<bool, String> {
    let timeout = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: PARK_TIMEOUT.as_nanos() as i64,
    };
    // Without a doorbell (before registration) the control connection stands in for it,
    // polled for nothing.
    let (bell_fd, bell_flags, count) = match bell {
        Some(bell) => (bell, PollFlags::IN, 3),
        None => (conn, PollFlags::empty(), 2),
    };
    let mut fds = [
        PollFd::new(&conn, PollFlags::IN),
        PollFd::new(&socket, socket_flags),
        PollFd::new(&bell_fd, bell_flags),
    ];
    match rustix::event::poll(&mut fds[..count], Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(format!("poll failed: {e}")),
    }
    Ok(count == 3 && !fds[2].revents().is_empty())
}

/// Hands one frame from the server to the agent: a control message to its control
/// connection (creating its rings at `Registered`), a data frame into its rx ring.
fn deliver(
    frame: &[u8],
    addr: &str,
    conn: &ControlConn,
    rings: &mut Option<Rings>,
    ring_capacity_bytes: u32,
    stalled: &mut Vec<u8>,
    stalled_bytes: &mut usize,
) -> Result<Delivery, String> {
    let header =
        FrameHeader::validate(frame).map_err(|e| format!("the server sent a bad frame: {e}"))?;
    if header.kind() == FrameKind::Control {
        let msg = decode_control::<ServerMsg>(header, &frame[crate::wire::HEADER_BYTES..])
            .map_err(|e| format!("the server sent a bad control message: {e}"))?;
        let sent = match msg {
            ServerMsg::Registered { agent_id, .. } if rings.is_none() => {
                let (new_rings, sent) = register(conn, &msg, agent_id, ring_capacity_bytes)?;
                *rings = Some(new_rings);
                sent
            }
            ServerMsg::Registered { .. } => {
                return Err("the server sent Registered twice".into());
            }
            _ => conn.send(&msg, &[]),
        };
        return match sent {
            Ok(()) => Ok(Delivery::Done),
            Err(ControlError::Closed) => Err("the agent closed its connection".into()),
            Err(e) => Err(format!("relaying to the agent failed: {e}")),
        };
    }
    let Some(rings) = rings else {
        return Err(format!(
            "the server sent a {:?} frame before registering the agent",
            header.kind()
        ));
    };
    let frame_bytes_max = rings.rx.frame_bytes_max();
    if frame.len() > frame_bytes_max {
        tracing::warn!(
            %addr,
            frame_bytes = frame.len(),
            frame_bytes_max,
            "dropped a frame from the server larger than the agent's rx ring takes"
        );
        return Ok(Delivery::Done);
    }
    match rings.rx.claim(frame.len()) {
        Ok(mut claim) => {
            claim.bytes_mut().copy_from_slice(frame);
            claim.commit_deferred();
            Ok(Delivery::Done)
        }
        Err(ClaimError::Full { .. }) => {
            // Publish what went in before, then hold this one until the agent makes room.
            rings.rx.publish();
            if stalled.len() < frame.len() {
                // Once per connection: sized for the largest frame the ring takes.
                stalled.resize(frame_bytes_max, 0);
            }
            stalled[..frame.len()].copy_from_slice(frame);
            *stalled_bytes = frame.len();
            Ok(Delivery::Stalled)
        }
        Err(e @ ClaimError::TooLarge { .. }) => {
            tracing::warn!(%addr, error = %e, "dropped a frame from the server");
            Ok(Delivery::Done)
        }
    }
}

/// Creates the agent's segment and doorbells as the daemon's admission does, and passes
/// the agent's ends with `Registered`: the segment, the tx bell's ring end, the rx bell's
/// wait end.
fn register(
    conn: &ControlConn,
    msg: &ServerMsg,
    agent_id: u32,
    ring_capacity_bytes: u32,
) -> Result<(Rings, Result<(), ControlError>), String> {
    let capacity = match ring_capacity_bytes {
        0 => REMOTE_RING_CAPACITY_DEFAULT_BYTES,
        bytes => bytes as usize,
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let segment = Segment::create(
        &SegmentConfig::new(agent_id)
            .with_capacity(capacity, capacity)
            .huge_pages(HugePages::Auto),
    )
    .map_err(|e| failed("cannot create the agent's segment", &e))?;
    // Pipes, as the daemon makes them: the agent gets its own ends.
    let (agent_tx_bell, bridge_tx_bell) = Doorbell::pipe().map_err(|e| failed("doorbell", &e))?;
    let (bridge_rx_bell, agent_rx_bell) = Doorbell::pipe().map_err(|e| failed("doorbell", &e))?;
    let mut lanes = Vec::with_capacity(TX_LANES);
    lanes.push(Consumer::new(
        segment.tx_lane_memory(0),
        Some(bridge_tx_bell),
    ));
    lanes.extend((1..TX_LANES).map(|lane| Consumer::new(segment.tx_lane_memory(lane), None)));
    // The agent parks often on its rx ring: fenced, as the router's rx producers are.
    let rx = Producer::new_fenced(segment.rx_memory(), Some(bridge_rx_bell));
    let segment_fd = segment
        .try_clone_fd()
        .map_err(|e| failed("segment descriptor", &e))?;
    let fds = [
        segment_fd.as_fd(),
        agent_tx_bell.as_fd(),
        agent_rx_bell.as_fd(),
    ];
    let sent = conn.send(msg, &fds);
    // The agent's ends close here: the agent holds its own copies now.
    Ok((Rings { segment, lanes, rx }, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_takes_the_host_part() {
        assert_eq!(host_of("example.net:7447"), "example.net");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7447"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }

    #[test]
    fn out_buffer_compacts_and_bounds() {
        let mut out = OutBuf::new();
        out.buf.extend_from_slice(&[1u8; 100]);
        out.consume(40);
        assert_eq!(out.pending_bytes(), 60);
        out.consume(60);
        out.compact();
        assert_eq!(out.pending_bytes(), 0);
        assert!(out.buf.is_empty());
        out.buf.resize(OUT_PENDING_BYTES_MAX, 0);
        assert!(!out.has_room());
    }
}
