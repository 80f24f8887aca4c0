//! The agent client library: connect to the daemon, register, and exchange frames over the
//! segment's ring pair.
//!
//! ```no_run
//! use agentwire_shm::client::Agent;
//! use std::time::Duration;
//! let mut agent = Agent::builder("summarizer")
//!     .socket("/run/agentwire/agentwire.sock")
//!     .capability("summarize", "1.2.0")
//!     .topic("news")
//!     .connect()?;
//! agent.publish("news", b"payload")?;
//! if let Some(msg) = agent.recv(Some(Duration::from_millis(10)))? {
//!     println!("{} bytes from agent {}", msg.payload().len(), msg.header().source());
//! }
//! # Ok::<(), agentwire_shm::client::ClientError>(())
//! ```

use crate::control::{
    AgentInfo, CapabilitySpec, ClientMsg, ControlConn, ControlError, NackBody, RefuseReason,
    Registration, ServerMsg, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use crate::doorbell::Doorbell;
use crate::idle::{IdleStrategy, Idler};
use crate::ring::{ClaimError, Consumer, FrameRef, Producer, RingError};
use crate::segment::{state, Segment, SegmentError};
use crate::wire::{
    FrameError, FrameHeader, FrameKind, DAEMON_AGENT_ID, FLAG_ACK_REQUESTED, FLAG_ANYCAST,
    FLAG_FEATURE, HEADER_BYTES,
};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod held;
use held::Held;
pub mod remote;

/// Control requests wait at most this long for the daemon's answer.
pub const CONTROL_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default socket path: `/run/agentwire/agentwire.sock` for root, else
/// `$XDG_RUNTIME_DIR/agentwire/agentwire.sock`, else `/tmp/agentwire-$UID/agentwire.sock`.
/// `AGENTWIRE_SOCKET` overrides all of them.
///
/// ```
/// let p = agentwire_shm::client::default_socket_path();
/// assert!(p.ends_with("agentwire.sock"));
/// ```
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTWIRE_SOCKET") {
        return PathBuf::from(p);
    }
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/agentwire/agentwire.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("agentwire/agentwire.sock"),
        None => runtime_dir_fallback().join("agentwire.sock"),
    }
}

/// The runtime directory of a user other than root without `$XDG_RUNTIME_DIR`:
/// `/tmp/agentwire-$UID`. It lives in a directory everyone may write, so another user could
/// have made it first: the daemon refuses it unless this user owns it and nobody else may
/// write to it (`agentwire_router::dirs`), and an agent checks who the daemon behind the
/// socket is ([`AgentBuilder::daemon_uid`]).
///
/// ```
/// let dir = agentwire_shm::client::runtime_dir_fallback();
/// assert!(dir.starts_with("/tmp"));
/// ```
pub fn runtime_dir_fallback() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    PathBuf::from(format!("/tmp/agentwire-{uid}"))
}

/// The uids a daemon may run as for this process to trust it: `named` when it names any,
/// else root and this process's own uid (the default of [`AgentBuilder::daemon_uid`]).
///
/// ```
/// use agentwire_shm::client::trusted_daemon_uids;
/// assert!(trusted_daemon_uids(&[]).contains(&0));
/// assert_eq!(trusted_daemon_uids(&[1234]), vec![1234]);
/// ```
pub fn trusted_daemon_uids(named: &[u32]) -> Vec<u32> {
    if !named.is_empty() {
        return named.to_vec();
    }
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        vec![0]
    } else {
        vec![0, uid]
    }
}

/// Checks the credentials (SO_PEERCRED) of the process serving `conn` before anything is
/// sent to it: a socket path another user could have taken first must not hand this
/// agent's registration, and later its payloads, to that user's process.
fn check_daemon(conn: &ControlConn, socket: &Path, named: &[u32]) -> Result<(), ClientError> {
    let peer = conn.peer_credentials()?;
    let trusted = trusted_daemon_uids(named);
    if trusted.contains(&peer.uid) {
        return Ok(());
    }
    Err(ClientError::UntrustedDaemon {
        socket: socket.to_path_buf(),
        pid: peer.pid,
        uid: peer.uid,
        trusted,
    })
}

/// Asks the router at `socket` for its status without registering as an agent (what
/// `agentwire status` and `agentwire agents` use). The daemon is checked first, as an agent
/// checks it: it must run as root or as this process's uid (else `UntrustedDaemon`, and
/// nothing was sent; [`query_status_trusting`] names other uids).
///
/// ```no_run
/// let report = agentwire_shm::client::query_status("/run/agentwire/agentwire.sock".as_ref())?;
/// println!("{} agents", report.agents.len());
/// # Ok::<(), agentwire_shm::client::ClientError>(())
/// ```
pub fn query_status(socket: &Path) -> Result<crate::control::StatusReport, ClientError> {
    query_status_trusting(socket, &[])
}

/// [`query_status`] from a daemon that runs as one of `daemon_uids` (empty: root or this
/// process's uid, as for agents; see [`trusted_daemon_uids`]).
///
/// ```no_run
/// let socket = "/run/agentwire/agentwire.sock".as_ref();
/// let report = agentwire_shm::client::query_status_trusting(socket, &[998])?;
/// # Ok::<(), agentwire_shm::client::ClientError>(())
/// ```
pub fn query_status_trusting(
    socket: &Path,
    daemon_uids: &[u32],
) -> Result<crate::control::StatusReport, ClientError> {
    let conn = ControlConn::connect(socket)?;
    check_daemon(&conn, socket, daemon_uids)?;
    let hello = ClientMsg::Hello {
        version_min: PROTOCOL_VERSION_MIN,
        version_max: PROTOCOL_VERSION_MAX,
        client: format!("agentwire status, pid {}", std::process::id()),
    };
    send_hello(&conn, &hello)?;
    match expect_reply(&conn)? {
        (ServerMsg::Welcome { .. }, _) => {}
        (other, _) => {
            return Err(ClientError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )))
        }
    }
    conn.send(&ClientMsg::Status, &[])?;
    let mut report = match expect_reply(&conn)? {
        (ServerMsg::Status(report), _) => report,
        (other, _) => {
            return Err(ClientError::Protocol(format!(
                "expected Status, got {other:?}"
            )))
        }
    };
    // The rest of the routes and agents, a page at a time.
    while report.routes.len() < report.routes_total as usize {
        let skip = report.routes.len() as u32;
        conn.send(&ClientMsg::StatusRoutes { skip }, &[])?;
        match expect_reply(&conn)? {
            (ServerMsg::StatusRoutes { routes }, _) if routes.is_empty() => break,
            (ServerMsg::StatusRoutes { routes }, _) => report.routes.extend(routes),
            (other, _) => {
                return Err(ClientError::Protocol(format!(
                    "expected StatusRoutes, got {other:?}"
                )))
            }
        }
    }
    while report.agents.len() < report.agents_total as usize {
        let after = report.agents.last().map_or(0, |a| a.agent_id);
        conn.send(&ClientMsg::StatusAgents { after }, &[])?;
        match expect_reply(&conn)? {
            (ServerMsg::StatusAgents { agents }, _) if agents.is_empty() => break,
            (ServerMsg::StatusAgents { agents }, _) => report.agents.extend(agents),
            (other, _) => {
                return Err(ClientError::Protocol(format!(
                    "expected StatusAgents, got {other:?}"
                )))
            }
        }
    }
    Ok(report)
}

/// Errors an agent sees. Each carries what it needs to act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused the connection.
    #[error("daemon refused the connection ({reason:?}): {detail}")]
    Refused {
        /// Reason class.
        reason: RefuseReason,
        /// The daemon's explanation.
        detail: String,
    },
    /// The process serving the socket runs as a uid this agent does not trust (by default
    /// root and the agent's own uid; see [`AgentBuilder::daemon_uid`]). Nothing was sent.
    #[error(
        "the daemon at {} runs as uid {uid} (pid {pid}), not one this agent trusts \
         (uids {trusted:?}): refusing to register with it (if that daemon is the right one, \
         name its uid with AgentBuilder::daemon_uid)",
        socket.display()
    )]
    UntrustedDaemon {
        /// The socket connected to.
        socket: PathBuf,
        /// The serving process's pid.
        pid: u32,
        /// The serving process's uid.
        uid: u32,
        /// The uids trusted.
        trusted: Vec<u32>,
    },
    /// The daemon is gone (socket closed or segment marked closed); call `reconnect`.
    #[error("disconnected from the daemon; call reconnect()")]
    Disconnected,
    /// Every reconnect attempt failed.
    #[error("reconnect failed after {attempts} attempts: {last}")]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
    /// The tx ring stayed full past the send timeout (the daemon is not draining).
    #[error("backpressure: tx ring full for {0:?}")]
    Backpressure(Duration),
    /// The frame can never fit the ring.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// No response within the timeout.
    #[error("no response to request {correlation_id} within {timeout:?}")]
    Timeout {
        /// The request's correlation id.
        correlation_id: u64,
        /// The timeout.
        timeout: Duration,
    },
    /// Too many frames arrived while waiting for a response; they stay queued.
    #[error("request stash full ({0} frames) while waiting for a response")]
    StashFull(usize),
    /// The daemon nacked a request.
    #[error("request nacked: {0:?}")]
    Nacked(NackBody),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The segment could not be mapped or failed its layout checks.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The rx ring broke its protocol (daemon bug or memory corruption).
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A received frame failed validation.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The daemon answered something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A remote daemon ([`AgentBuilder::remote`]) could not be reached, or the TLS
    /// handshake with it failed (an unknown issuer, an expired certificate, a refused
    /// client certificate), or the stream broke before the agent was registered.
    #[error("remote daemon at {addr}: {cause}")]
    Remote {
        /// The address connected to.
        addr: String,
        /// What failed, in words.
        cause: String,
    },
}

/// Options for one outgoing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Priority class 0 (most urgent) to 3.
    pub priority: u8,
    /// Ask the daemon for an ack once delivered.
    pub ack: bool,
    /// Feature id (0: none).
    pub feature_id: u32,
    /// Correlation id (0: none).
    pub correlation_id: u64,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            priority: 2,
            ack: false,
            feature_id: 0,
            correlation_id: 0,
        }
    }
}

/// Builds and connects an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    socket: PathBuf,
    registration: Registration,
    versions: (u16, u16),
    idle: IdleStrategy,
    reconnect_attempts_max: u32,
    reconnect_backoff_initial: Duration,
    send_timeout: Duration,
    request_stash_frames_max: usize,
    /// Uids the daemon may run as (empty: root and this process's uid).
    daemon_uids: Vec<u32>,
    /// A remote daemon instead of the socket (see `remote`).
    remote: remote::RemoteConfig,
}

impl AgentBuilder {
    /// Sets the daemon socket (default: [`default_socket_path`]).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").socket("/tmp/x.sock");
    /// ```
    pub fn socket(mut self, path: impl AsRef<Path>) -> Self {
        self.socket = path.as_ref().to_path_buf();
        self
    }

    /// Offers a capability at a semver version.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").capability("ocr", "2.1.0");
    /// ```
    pub fn capability(mut self, name: &str, version: &str) -> Self {
        self.registration.capabilities.push(CapabilitySpec {
            name: name.into(),
            version: version.into(),
        });
        self
    }

    /// Subscribes to a topic at registration.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").topic("alerts");
    /// ```
    pub fn topic(mut self, topic: &str) -> Self {
        self.registration.topics.push(topic.into());
        self
    }

    /// Serves a feature id.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").feature(12);
    /// ```
    pub fn feature(mut self, feature_id: u32) -> Self {
        self.registration.features.push(feature_id);
        self
    }

    /// Asks for rings of `capacity_bytes` each way (a power of two within the daemon's
    /// limits, `ring_capacity_min_bytes..=ring_capacity_max_bytes`; default: the daemon's
    /// `ring_capacity_bytes`). Small rings let one daemon serve many thousands of agents.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").ring_capacity(4096);
    /// ```
    pub fn ring_capacity(mut self, capacity_bytes: u32) -> Self {
        self.registration.ring_capacity_bytes = capacity_bytes;
        self
    }

    /// Offers a protocol version range (default: all this build speaks).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").protocol_versions(2, 2);
    /// ```
    pub fn protocol_versions(mut self, min: u16, max: u16) -> Self {
        self.versions = (min, max);
        self
    }

    /// How blocking receives wait (default: spin then park).
    ///
    /// ```
    /// use agentwire_shm::idle::IdleStrategy;
    /// let b = agentwire_shm::client::Agent::builder("a").idle(IdleStrategy::Spin);
    /// ```
    pub fn idle(mut self, idle: IdleStrategy) -> Self {
        self.idle = idle;
        self
    }

    /// Reconnect attempts before giving up (default 10), with backoff doubling from
    /// `initial` up to 1 s.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a")
    ///     .reconnect(5, std::time::Duration::from_millis(20));
    /// ```
    pub fn reconnect(mut self, attempts_max: u32, initial: Duration) -> Self {
        self.reconnect_attempts_max = attempts_max.max(1);
        self.reconnect_backoff_initial = initial;
        self
    }

    /// How long `send` waits for room in a full tx ring (default 1 s).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").send_timeout(std::time::Duration::from_millis(50));
    /// ```
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Most frames kept aside while a request waits for its response (default 4096).
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("a").request_stash_frames_max(64);
    /// ```
    pub fn request_stash_frames_max(mut self, frames_max: usize) -> Self {
        self.request_stash_frames_max = frames_max;
        self
    }

    /// Trusts a daemon running as `uid`; call once per uid. Before it sends anything the
    /// agent reads the credentials of the process behind the socket (SO_PEERCRED) and
    /// refuses one of another uid with [`ClientError::UntrustedDaemon`]. Default: root and
    /// this process's own uid. Naming any uid replaces that default (root included: name 0
    /// too if the daemon may also run as root).
    ///
    /// ```
    /// // The daemon runs as the service user 998, or as root.
    /// let b = agentwire_shm::client::Agent::builder("a").daemon_uid(998).daemon_uid(0);
    /// ```
    pub fn daemon_uid(mut self, uid: u32) -> Self {
        if !self.daemon_uids.contains(&uid) {
            self.daemon_uids.push(uid);
        }
        self
    }

    /// Connects, negotiates, registers and maps the segment.
    ///
    /// ```no_run
    /// let agent = agentwire_shm::client::Agent::builder("a").connect()?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn connect(self) -> Result<Agent, ClientError> {
        let link = Link::establish(&self)?;
        Ok(Agent {
            idler: Idler::new(self.idle),
            builder: self,
            link,
            correlation_ids: CorrelationIds::new(),
            stash: VecDeque::new(),
            topic_ids: HashMap::new(),
            capability_routes: HashMap::new(),
            idle_polls: 0,
            held: None,
        })
    }
}

/// Everything that belongs to one connection; replaced whole on reconnect.
#[derive(Debug)]
struct Link {
    conn: ControlConn,
    segment: Segment,
    /// One tx ring per priority class (`segment::TX_LANES`), sharing one doorbell.
    tx: Vec<Producer>,
    rx: Consumer,
    agent_id: u32,
    version: u16,
}

/// Sends Hello. A refused peer (not on the allow-list, over a limit) may find the socket
/// closed by the daemon before Hello goes out: then the daemon's refusal is read and
/// returned, not the broken pipe.
fn send_hello(conn: &ControlConn, hello: &ClientMsg) -> Result<(), ClientError> {
    if let Err(e) = conn.send(hello, &[]) {
        return match expect_reply(conn) {
            Err(refused @ ClientError::Refused { .. }) => Err(refused),
            _ => Err(e.into()),
        };
    }
    Ok(())
}

fn expect_reply(conn: &ControlConn) -> Result<(ServerMsg, Vec<rustix::fd::OwnedFd>), ClientError> {
    reply_of(conn.recv::<ServerMsg>(Some(CONTROL_REPLY_TIMEOUT)))
}

/// A control reply as the agent reports it: a refusal or a closed connection become their
/// errors.
fn reply_of(
    received: Result<(ServerMsg, Vec<rustix::fd::OwnedFd>), ControlError>,
) -> Result<(ServerMsg, Vec<rustix::fd::OwnedFd>), ClientError> {
    match received {
        Ok((ServerMsg::Refused { reason, detail }, _)) => {
            Err(ClientError::Refused { reason, detail })
        }
        Ok(reply) => Ok(reply),
        Err(ControlError::Closed) => Err(ClientError::Disconnected),
        Err(e) => Err(e.into()),
    }
}

/// How often a remote agent waiting for a control reply moves arrived frames aside.
const REMOTE_REPLY_POLL: Duration = Duration::from_millis(1);

impl Link {
    fn establish(b: &AgentBuilder) -> Result<Self, ClientError> {
        if b.remote.is_remote() {
            // The bridge thread plays the daemon's part on a local control connection.
            let (conn, bridge) = remote::connect(b)?;
            return Self::handshake(b, conn).map_err(|e| bridge.explain(e));
        }
        let conn = ControlConn::connect(&b.socket)?;
        check_daemon(&conn, &b.socket, &b.daemon_uids)?;
        Self::handshake(b, conn)
    }

    /// Hello, Register, and the segment the daemon passed.
    fn handshake(b: &AgentBuilder, conn: ControlConn) -> Result<Self, ClientError> {
        let hello = ClientMsg::Hello {
            version_min: b.versions.0,
            version_max: b.versions.1,
            client: format!(
                "agentwire-shm {} pid {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ),
        };
        send_hello(&conn, &hello)?;
        let version = match expect_reply(&conn)? {
            (ServerMsg::Welcome { version, .. }, _) => version,
            (other, _) => {
                return Err(ClientError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )))
            }
        };
        conn.send(&ClientMsg::Register(b.registration.clone()), &[])?;
        let (agent_id, fds) = match expect_reply(&conn)? {
            (ServerMsg::Registered { agent_id, .. }, fds) => (agent_id, fds),
            (other, _) => {
                return Err(ClientError::Protocol(format!(
                    "expected Registered, got {other:?}"
                )))
            }
        };
        let [segment_fd, tx_bell, rx_bell]: [rustix::fd::OwnedFd; 3] =
            fds.try_into().map_err(|v: Vec<_>| {
                ClientError::Protocol(format!("Registered carried {} fds, expected 3", v.len()))
            })?;
        let segment = Segment::open(segment_fd)?;
        if segment.agent_id() != agent_id {
            return Err(ClientError::Protocol(format!(
                "segment belongs to agent {}, registration says {agent_id}",
                segment.agent_id()
            )));
        }
        segment
            .control()
            .agent_pid
            .store(std::process::id(), Ordering::Relaxed);
        // The ends the daemon passed: we ring tx and wait on rx (pipe ends of its own bells;
        // an older daemon's eventfds work the same way).
        let tx_bell = Doorbell::from_ring_fd(tx_bell);
        let tx = (0..crate::segment::TX_LANES)
            .map(|lane| {
                let bell = tx_bell.try_clone().map_err(ControlError::Io)?;
                Ok(Producer::new(segment.tx_lane_memory(lane), Some(bell)))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let rx = Consumer::new(segment.rx_memory(), Some(Doorbell::from_wait_fd(rx_bell)));
        Ok(Self {
            conn,
            segment,
            tx,
            rx,
            agent_id,
            version,
        })
    }
}

/// Correlation ids for requests: SipHash (keyed at random per agent) of a counter, so
/// another agent cannot predict them and answer a request it was never sent. Never 0
/// (which means "none" on the wire).
#[derive(Debug)]
struct CorrelationIds {
    keys: std::hash::RandomState,
    counter: u64,
}

impl CorrelationIds {
    fn new() -> Self {
        Self {
            keys: std::hash::RandomState::new(),
            counter: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        use std::hash::BuildHasher;
        self.counter += 1;
        self.keys.hash_one(self.counter).max(1)
    }
}

/// A connected agent.
#[derive(Debug)]
pub struct Agent {
    builder: AgentBuilder,
    link: Link,
    idler: Idler,
    correlation_ids: CorrelationIds,
    stash: VecDeque<OwnedMessage>,
    topic_ids: HashMap<String, u32>,
    /// Capability route ids by capability, then version requirement: looked up with the
    /// caller's two `&str`s, so a cached anycast builds no key.
    capability_routes: HashMap<String, HashMap<String, u32>>,
    idle_polls: u32,
    /// The frame handed out by `try_recv_held` / `recv_held`, if any (see `held`).
    held: Option<Held>,
}

/// How long a send that saw the daemon closing waits for its verdict (the daemon's drain
/// at shutdown is bounded well below this).
const CLOSE_VERDICT_WAIT: Duration = Duration::from_secs(5);
/// How long that wait goes on once the daemon's control connection is gone.
const CLOSE_VERDICT_AFTER_HANGUP: Duration = Duration::from_secs(1);

/// Idle polls between liveness checks of the control socket (a syscall).
const LIVENESS_CHECK_POLLS: u32 = 4096;
/// Bumps the agent's heartbeat in its segment (sole writer: the agent; a plain store).
fn beat(segment: &Segment) {
    let heartbeat = &segment.control().agent_heartbeat.0;
    heartbeat.store(
        heartbeat.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Idle polls between heartbeats (a plain store to the agent's own cache line): with the
/// default 1 ms park, about every 64 ms, well inside the daemon's liveness timeout.
const HEARTBEAT_POLLS: u32 = 64;

/// Counts a poll that found the rx ring empty: a caller polling is alive, so it beats now
/// and then.
fn count_empty_poll(idle_polls: &mut u32, segment: &Segment) {
    *idle_polls = idle_polls.wrapping_add(1);
    if *idle_polls % HEARTBEAT_POLLS == 0 {
        beat(segment);
    }
}

impl Agent {
    /// Starts building an agent named `name`.
    ///
    /// ```
    /// let b = agentwire_shm::client::Agent::builder("planner");
    /// ```
    pub fn builder(name: &str) -> AgentBuilder {
        AgentBuilder {
            socket: default_socket_path(),
            registration: Registration {
                name: name.into(),
                ..Default::default()
            },
            versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX),
            idle: IdleStrategy::default(),
            reconnect_attempts_max: 10,
            reconnect_backoff_initial: Duration::from_millis(10),
            send_timeout: Duration::from_secs(1),
            request_stash_frames_max: 4096,
            daemon_uids: Vec::new(),
            remote: remote::RemoteConfig::default(),
        }
    }

    /// This agent's id.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// println!("I am agent {}", agent.id());
    /// ```
    pub fn id(&self) -> u32 {
        self.link.agent_id
    }

    /// The negotiated protocol version.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// assert_eq!(agent.protocol_version(), agentwire_shm::control::PROTOCOL_VERSION_MAX);
    /// ```
    pub fn protocol_version(&self) -> u16 {
        self.link.version
    }

    /// The mapped segment (for its control block and stats).
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let rejected = agent.segment().control().frames_rejected.load(std::sync::atomic::Ordering::Relaxed);
    /// ```
    pub fn segment(&self) -> &Segment {
        &self.link.segment
    }

    fn check_alive(&mut self) -> Result<(), ClientError> {
        // SYNC POINT: segment state (the router's Release stores of CLOSING and CLOSED).
        if self.link.segment.control().state.0.load(Ordering::Acquire) != state::ACTIVE
            || self.link.conn.peer_closed()
        {
            return Err(ClientError::Disconnected);
        }
        Ok(())
    }

    /// `Disconnected` once the daemon stopped accepting frames on this segment (it is
    /// closing or closed): one load of a line the daemon writes twice in its life.
    #[inline]
    fn accepting(&self) -> Result<(), ClientError> {
        // SYNC POINT: segment state (the router's Release stores of CLOSING and CLOSED).
        match self.link.segment.control().state.0.load(Ordering::Acquire) {
            state::ACTIVE => Ok(()),
            _ => Err(ClientError::Disconnected),
        }
    }

    /// Whether the daemon accepted everything published on `lane`: yes while the segment is
    /// active. The publish comes before this load (the ring's wake protocol: a fence, or
    /// the daemon's membarrier), and the daemon marks CLOSING before its last drain, so a
    /// frame whose sender still saw ACTIVE is drained. One that saw CLOSING waits for the
    /// daemon's verdict: accepted if the daemon's head passed it by the time it marked the
    /// segment CLOSED (it was then delivered, dead-lettered or nacked), else `Disconnected`
    /// (never accepted).
    #[inline]
    fn confirm_lane(&mut self, lane: usize) -> Result<(), ClientError> {
        // SYNC POINT: closing (the router's Release store of CLOSING, then its barrier).
        let now = self.link.segment.control().state.0.load(Ordering::Acquire);
        if now == state::ACTIVE {
            return Ok(());
        }
        self.settle(lane)
    }

    #[cold]
    fn settle(&mut self, lane: usize) -> Result<(), ClientError> {
        let memory = self.link.tx[lane].memory().clone();
        let end = memory.positions().1;
        let segment = self.link.segment.clone();
        let control = segment.control();
        let mut deadline = Instant::now() + CLOSE_VERDICT_WAIT;
        let mut peer_closed = false;
        // SYNC POINT: segment state (the router's Release store of CLOSED, after its head).
        while control.state.0.load(Ordering::Acquire) != state::CLOSED {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // A stopping daemon closes control connections once its routers finished; a
            // crashed one never marks the segment: give it a moment, not the whole wait.
            if !peer_closed && self.link.conn.peer_closed() {
                peer_closed = true;
                deadline = deadline.min(now + CLOSE_VERDICT_AFTER_HANGUP);
            }
            // The daemon may be waiting for room in our rx ring to nack what it gives up on:
            // keep what arrives (later receives return it), up to the stash limit.
            self.stash_arrivals()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        let closed = control.state.0.load(Ordering::Acquire) == state::CLOSED;
        if closed && memory.positions().0 >= end {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }

    /// Moves what waits in the rx ring into the stash (at most the stash limit), so the
    /// daemon has room to write.
    fn stash_arrivals(&mut self) -> Result<(), ClientError> {
        let stash_max = self.builder.request_stash_frames_max;
        let stash = &mut self.stash;
        let room = stash_max.saturating_sub(stash.len());
        if room == 0 {
            return Ok(());
        }
        self.link.rx.read(room, |frame| {
            if FrameHeader::validate(frame).is_ok() {
                stash.push_back(OwnedMessage::from_frame(frame));
            }
            core::ops::ControlFlow::Continue(())
        })?;
        Ok(())
    }

    /// Whether the daemon accepted every frame committed on the lane of `priority` so far
    /// (after [`FrameClaim::commit`], which cannot say): `Ok` while it serves this agent;
    /// while it shuts down, `Ok` only if it took them before it stopped (they are then
    /// delivered, dead-lettered or nacked), else `Disconnected`.
    ///
    /// ```no_run
    /// # use agentwire_shm::wire::FrameKind;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.claim(FrameKind::Send, 2, 0, Default::default())?.commit();
    /// agent.confirm(2)?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn confirm(&mut self, priority: u8) -> Result<(), ClientError> {
        self.confirm_lane(usize::from(priority).min(crate::segment::TX_LANES - 1))
    }

    fn control_request(&mut self, msg: &ClientMsg) -> Result<ServerMsg, ClientError> {
        self.link.conn.send(msg, &[]).map_err(|e| match e {
            ControlError::Closed => ClientError::Disconnected,
            e => e.into(),
        })?;
        let reply = if self.builder.remote.is_remote() {
            self.await_remote_reply()?
        } else {
            expect_reply(&self.link.conn)?
        };
        match reply {
            (ServerMsg::Error { detail }, _) => Err(ClientError::Protocol(detail)),
            (reply, _) => Ok(reply),
        }
    }

    /// A remote agent's control reply travels on the stream behind the data frames sent to
    /// it before: while it waits, what arrives in the rx ring moves to the stash (bounded by
    /// `request_stash_frames_max`, read first by the next receives), so the bridge can
    /// deliver up to the reply instead of holding it behind a full ring.
    fn await_remote_reply(&mut self) -> Result<(ServerMsg, Vec<rustix::fd::OwnedFd>), ClientError> {
        let deadline = Instant::now() + CONTROL_REPLY_TIMEOUT;
        loop {
            match self.link.conn.recv::<ServerMsg>(Some(REMOTE_REPLY_POLL)) {
                Err(ControlError::Timeout(_)) if Instant::now() < deadline => {
                    // A frame held in place (receive-in-place) stays where it is.
                    if self.held.is_none() {
                        self.stash_arrivals()?;
                    }
                }
                Err(ControlError::Timeout(_)) => {
                    return Err(ControlError::Timeout(CONTROL_REPLY_TIMEOUT).into())
                }
                received => return reply_of(received),
            }
        }
    }

    /// Claims room for a frame with a `payload_len_bytes` payload; write the payload into
    /// [`FrameClaim::payload_mut`] and commit. The zero-copy path.
    ///
    /// ```no_run
    /// use agentwire_shm::wire::FrameKind;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let mut claim = agent.claim(FrameKind::Send, 2, 8, Default::default())?;
    /// claim.payload_mut().copy_from_slice(&42u64.to_le_bytes());
    /// claim.commit();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn claim(
        &mut self,
        kind: FrameKind,
        destination: u32,
        payload_len_bytes: usize,
        options: SendOptions,
    ) -> Result<FrameClaim<'_>, ClientError> {
        let flags = if options.ack { FLAG_ACK_REQUESTED } else { 0 };
        self.claim_with_flags(kind, destination, payload_len_bytes, options, flags)
    }

    fn claim_with_flags(
        &mut self,
        kind: FrameKind,
        destination: u32,
        payload_len_bytes: usize,
        options: SendOptions,
        flags: u32,
    ) -> Result<FrameClaim<'_>, ClientError> {
        self.accepting()?;
        let header = FrameHeader::new(
            kind,
            self.link.agent_id,
            destination,
            payload_len_bytes as u32,
        )
        .with_priority(options.priority)
        .with_correlation(options.correlation_id)
        .with_feature(options.feature_id)
        .with_flags(flags);
        let frame_len = HEADER_BYTES + payload_len_bytes;
        let lane = usize::from(header.priority());
        // The deadline is taken only once the ring is found full: reading the clock on every
        // send cost 6% of a routed-throughput run (perf, cpu-clock, 2026-11-21).
        let mut deadline = None;
        let mut spins = 0u32;
        // Poll for room; the daemon drains continuously, so a full ring is transient unless
        // the daemon is gone or overloaded. `can_claim` touches no shared state unless the
        // cached head says the ring is full.
        while !self.link.tx[lane].can_claim(frame_len) {
            if frame_len > self.link.tx[lane].frame_bytes_max() {
                break; // claim() below reports TooLarge
            }
            // Frames committed with `commit_deferred` (a batch larger than the free room)
            // are published before waiting: the daemon cannot free room for frames it
            // cannot see. A no-op when nothing is pending.
            self.link.tx[lane].publish();
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.builder.send_timeout);
            spins += 1;
            if spins % 1024 == 0 {
                self.check_alive()?;
                if Instant::now() >= deadline {
                    return Err(ClientError::Backpressure(self.builder.send_timeout));
                }
                std::thread::yield_now();
            }
            core::hint::spin_loop();
        }
        let mut claim = self.link.tx[lane].claim(frame_len)?;
        header.write_to(claim.bytes_mut());
        Ok(FrameClaim { claim })
    }

    /// Sends `payload` (an rkyv archive, or any bytes) to an agent.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send(2, b"hello")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send(&mut self, to_agent: u32, payload: &[u8]) -> Result<(), ClientError> {
        self.send_with(FrameKind::Send, to_agent, payload, SendOptions::default())
    }

    /// Sends with explicit kind and options.
    ///
    /// ```no_run
    /// use agentwire_shm::{client::SendOptions, wire::FrameKind};
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send_with(FrameKind::Send, 2, b"urgent", SendOptions { priority: 0, ack: true, ..Default::default() })?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send_with(
        &mut self,
        kind: FrameKind,
        destination: u32,
        payload: &[u8],
        options: SendOptions,
    ) -> Result<(), ClientError> {
        let lane = usize::from(options.priority).min(crate::segment::TX_LANES - 1);
        let mut claim = self.claim(kind, destination, payload.len(), options)?;
        claim.payload_mut().copy_from_slice(payload);
        claim.commit();
        self.confirm_lane(lane)
    }

    /// Writes a complete frame, header included, without validating it: for tools that
    /// forward frames, and for tests of the daemon's validation (a hostile agent can write
    /// anything into its own tx ring; the daemon must cope).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send_raw(&[0u8; 48])?; // the daemon nacks this: length 0 is malformed
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        // The lane of the priority byte the frame claims (clamped): the daemon validates it.
        let lane = frame
            .get(core::mem::offset_of!(FrameHeader, priority))
            .map_or(crate::segment::TX_LANE_DEFAULT, |&p| {
                usize::from(p).min(crate::segment::TX_LANES - 1)
            });
        self.accepting()?;
        let mut claim = self.link.tx[lane].claim(frame.len())?;
        claim.bytes_mut().copy_from_slice(frame);
        claim.commit();
        self.confirm_lane(lane)
    }

    /// Sends a batch of frames to one agent with a single publish (one release store) when
    /// the ring has room for the whole batch; a larger batch is published as it goes. Returns
    /// the frames sent, like `write(2)`: fewer than given if the ring stayed full past the
    /// send timeout after some were sent; the error only if none was.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send_batch(2, [&b"a"[..], &b"b"[..]])?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send_batch<'p>(
        &mut self,
        to_agent: u32,
        payloads: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<usize, ClientError> {
        let lane = crate::segment::TX_LANE_DEFAULT;
        let mut sent = 0;
        let mut result = Ok(());
        for payload in payloads {
            match self.claim(
                FrameKind::Send,
                to_agent,
                payload.len(),
                SendOptions::default(),
            ) {
                Ok(mut claim) => {
                    claim.payload_mut().copy_from_slice(payload);
                    claim.commit_deferred();
                    sent += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Frames written before an error are sent too (the count says how many).
        self.link.tx[lane].publish();
        if sent > 0 {
            self.confirm_lane(lane)?;
        }
        match result {
            Err(e) if sent == 0 => Err(e),
            _ => Ok(sent),
        }
    }

    /// Publishes committed-but-deferred frames (see [`FrameClaim::commit_deferred`]).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.flush();
    /// ```
    pub fn flush(&mut self) {
        for lane in &mut self.link.tx {
            lane.publish();
        }
    }

    /// Resolves (and caches) a topic id.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let id = agent.topic_id("news")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn topic_id(&mut self, topic: &str) -> Result<u32, ClientError> {
        if let Some(&id) = self.topic_ids.get(topic) {
            return Ok(id);
        }
        match self.control_request(&ClientMsg::ResolveTopic {
            topic: topic.into(),
        })? {
            ServerMsg::TopicId { topic_id } => {
                self.topic_ids.insert(topic.into(), topic_id);
                Ok(topic_id)
            }
            other => Err(ClientError::Protocol(format!(
                "expected TopicId, got {other:?}"
            ))),
        }
    }

    /// Publishes `payload` to every subscriber of `topic`.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.publish("alerts", b"disk full")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), ClientError> {
        let topic_id = self.topic_id(topic)?;
        self.send_with(
            FrameKind::Publish,
            topic_id,
            payload,
            SendOptions::default(),
        )
    }

    /// Sends to one live agent offering `capability` at a version satisfying `requirement`.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.anycast("ocr", "^2", b"image bytes")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn anycast(
        &mut self,
        capability: &str,
        requirement: &str,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.anycast_flagged(capability, requirement, payload, FLAG_ANYCAST)
    }

    /// Like [`anycast`](Self::anycast), but the least-loaded matching agent of the whole
    /// cluster may take it: an agent of another node (behind a node link or NATS) competes
    /// with this node's on equal terms, instead of being chosen only when no local one can
    /// take the frame ([`FLAG_ANY_NODE`](crate::wire::FLAG_ANY_NODE), wire 1.2).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.anycast_any_node("ocr", "^2", b"image bytes")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn anycast_any_node(
        &mut self,
        capability: &str,
        requirement: &str,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let flags = FLAG_ANYCAST | crate::wire::FLAG_ANY_NODE;
        self.anycast_flagged(capability, requirement, payload, flags)
    }

    fn anycast_flagged(
        &mut self,
        capability: &str,
        requirement: &str,
        payload: &[u8],
        flags: u32,
    ) -> Result<(), ClientError> {
        let route_id = self.capability_route(capability, requirement)?;
        let mut claim = self.claim_with_flags(
            FrameKind::Send,
            route_id,
            payload.len(),
            SendOptions::default(),
            flags,
        )?;
        claim.payload_mut().copy_from_slice(payload);
        claim.commit();
        self.confirm_lane(usize::from(SendOptions::default().priority))
    }

    /// Sends to one live agent (or engine) registered for `feature_id`: the least loaded
    /// when several are (feature route, docs/wire.md §2).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send_feature(12, b"embedding request")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send_feature(&mut self, feature_id: u32, payload: &[u8]) -> Result<(), ClientError> {
        self.send_feature_with(feature_id, payload, SendOptions::default())
    }

    /// [`Agent::send_feature`] with options (priority, ack, correlation id); the options'
    /// own `feature_id` is replaced by `feature_id`.
    ///
    /// ```no_run
    /// # use agentwire_shm::client::SendOptions;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.send_feature_with(12, b"x", SendOptions { ack: true, ..Default::default() })?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn send_feature_with(
        &mut self,
        feature_id: u32,
        payload: &[u8],
        options: SendOptions,
    ) -> Result<(), ClientError> {
        let options = SendOptions {
            feature_id,
            ..options
        };
        let mut flags = FLAG_FEATURE;
        if options.ack {
            flags |= FLAG_ACK_REQUESTED;
        }
        let lane = usize::from(options.priority).min(crate::segment::TX_LANES - 1);
        let mut claim = self.claim_with_flags(FrameKind::Send, 0, payload.len(), options, flags)?;
        claim.payload_mut().copy_from_slice(payload);
        claim.commit();
        self.confirm_lane(lane)
    }

    /// Sends `batch` to the streaming engine serving `feature_id` (usually
    /// [`STREAM_FEATURE_ID`](crate::stream_events::STREAM_FEATURE_ID)): many events in one
    /// frame. The engine counts malformed events and answers with an
    /// [`IngestAck`](crate::stream_events::IngestAck) only if there were any; use
    /// [`stream_batch_acked`](Self::stream_batch_acked) to wait for the answer every time.
    ///
    /// ```no_run
    /// use agentwire_shm::stream_events::{EventBatch, WireEvent, WireKey, STREAM_FEATURE_ID};
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let batch = EventBatch { events: vec![WireEvent {
    ///     key: WireKey::Id(7), event_time_ns: 1_000, value: 0.25, attributes: vec![],
    /// }] };
    /// agent.stream_batch(STREAM_FEATURE_ID, &batch)?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn stream_batch(
        &mut self,
        feature_id: u32,
        batch: &crate::stream_events::EventBatch,
    ) -> Result<(), ClientError> {
        let bytes = crate::stream_events::encode_batch(batch);
        self.send_feature(feature_id, &bytes)
    }

    /// Sends `batch` as a request to the streaming engine's agent `engine` (found with
    /// `discover(STREAM_CAPABILITY, "^1")`) and waits up to `timeout` for its
    /// [`IngestAck`](crate::stream_events::IngestAck): how many events it took and refused.
    ///
    /// ```no_run
    /// use agentwire_shm::stream_events::{EventBatch, STREAM_CAPABILITY};
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let engine = agent.discover(STREAM_CAPABILITY, "^1")?[0].agent_id;
    /// let ack = agent.stream_batch_acked(engine, &EventBatch::default(), std::time::Duration::from_secs(1))?;
    /// println!("{} taken, {} refused", ack.accepted, ack.malformed);
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn stream_batch_acked(
        &mut self,
        engine: u32,
        batch: &crate::stream_events::EventBatch,
        timeout: Duration,
    ) -> Result<crate::stream_events::IngestAck, ClientError> {
        let bytes = crate::stream_events::encode_batch(batch);
        let reply = self.request(engine, &bytes, timeout)?;
        crate::stream_events::decode_ack(reply.payload())
            .map_err(|e| ClientError::Protocol(format!("the engine's ack does not decode: {e}")))
    }

    fn capability_route(
        &mut self,
        capability: &str,
        requirement: &str,
    ) -> Result<u32, ClientError> {
        let cached = self
            .capability_routes
            .get(capability)
            .and_then(|by_requirement| by_requirement.get(requirement));
        if let Some(&id) = cached {
            return Ok(id);
        }
        let msg = ClientMsg::ResolveCapability {
            capability: capability.into(),
            requirement: requirement.into(),
        };
        match self.control_request(&msg)? {
            ServerMsg::CapabilityRoute { route_id } => {
                self.capability_routes
                    .entry(capability.into())
                    .or_default()
                    .insert(requirement.into(), route_id);
                Ok(route_id)
            }
            other => Err(ClientError::Protocol(format!(
                "expected CapabilityRoute, got {other:?}"
            ))),
        }
    }

    /// Subscribes to a topic (kept across reconnects).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.subscribe("alerts")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn subscribe(&mut self, topic: &str) -> Result<u32, ClientError> {
        match self.control_request(&ClientMsg::Subscribe {
            topic: topic.into(),
        })? {
            ServerMsg::TopicId { topic_id } => {
                if !self.builder.registration.topics.iter().any(|t| t == topic) {
                    self.builder.registration.topics.push(topic.into());
                }
                self.topic_ids.insert(topic.into(), topic_id);
                Ok(topic_id)
            }
            other => Err(ClientError::Protocol(format!(
                "expected TopicId, got {other:?}"
            ))),
        }
    }

    /// Unsubscribes from a topic.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.unsubscribe("alerts")?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn unsubscribe(&mut self, topic: &str) -> Result<(), ClientError> {
        self.control_request(&ClientMsg::Unsubscribe {
            topic: topic.into(),
        })?;
        self.builder.registration.topics.retain(|t| t != topic);
        Ok(())
    }

    /// Lists live agents offering `capability` at a version satisfying `requirement`.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// for a in agent.discover("ocr", ">=2.0, <3")? { println!("{} {}", a.name, a.version); }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn discover(
        &mut self,
        capability: &str,
        requirement: &str,
    ) -> Result<Vec<AgentInfo>, ClientError> {
        let msg = ClientMsg::Discover {
            capability: capability.into(),
            requirement: requirement.into(),
        };
        match self.control_request(&msg)? {
            ServerMsg::Agents { agents } => Ok(agents),
            other => Err(ClientError::Protocol(format!(
                "expected Agents, got {other:?}"
            ))),
        }
    }

    /// Sends a request and waits for the response with the same correlation id. Frames that
    /// arrive meanwhile are kept (up to the stash limit) and returned by later receives.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let reply = agent.request(2, b"ping", std::time::Duration::from_millis(100))?;
    /// println!("{:?}", reply.payload());
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn request(
        &mut self,
        to_agent: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<OwnedMessage, ClientError> {
        let correlation_id = self.correlation_ids.next_id();
        let options = SendOptions {
            correlation_id,
            ..Default::default()
        };
        self.send_with(FrameKind::Request, to_agent, payload, options)?;
        // A held frame stays at the ring's head; reading past it would stash it again.
        self.release_held();
        let deadline = Instant::now() + timeout;
        loop {
            let mut found = None;
            let stash_max = self.builder.request_stash_frames_max;
            let stash = &mut self.stash;
            let mut overflow = false;
            let read = self.link.rx.read(64, |frame| {
                let Ok(header) = FrameHeader::validate(frame) else {
                    return core::ops::ControlFlow::Continue(()); // daemon-validated; skip garbage
                };
                // The reply is the response from the agent asked, or the router's nack; the
                // router stamps every source, so another agent cannot pass for either.
                let is_reply = header.correlation() == correlation_id
                    && match header.kind() {
                        FrameKind::Response => header.source() == to_agent,
                        FrameKind::Nack => header.source() == DAEMON_AGENT_ID,
                        _ => false,
                    };
                if is_reply {
                    found = Some(OwnedMessage::from_frame(frame));
                    return core::ops::ControlFlow::Break(());
                }
                if stash.len() >= stash_max {
                    overflow = true;
                    return core::ops::ControlFlow::Break(());
                }
                stash.push_back(OwnedMessage::from_frame(frame));
                core::ops::ControlFlow::Continue(())
            })?;
            if let Some(reply) = found {
                // Release the reply frame itself (the read stopped before consuming it).
                drop(self.link.rx.peek()?);
                if reply.header().kind() == FrameKind::Nack {
                    return Err(ClientError::Nacked(reply.nack_body().unwrap_or(NackBody {
                        reason: 0,
                        detail: "unreadable nack".into(),
                    })));
                }
                return Ok(reply);
            }
            if overflow {
                return Err(ClientError::StashFull(stash_max));
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    correlation_id,
                    timeout,
                });
            }
            self.idle_once(read)?;
        }
    }

    /// Answers a request: a response to its source with its correlation id.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let request = agent.recv(None)?.map(|m| m.to_owned());
    /// if let Some(req) = request {
    ///     agent.respond(req.header(), b"pong")?;
    /// }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn respond(&mut self, request: &FrameHeader, payload: &[u8]) -> Result<(), ClientError> {
        let options = SendOptions {
            correlation_id: request.correlation(),
            priority: request.priority(),
            ..Default::default()
        };
        self.send_with(FrameKind::Response, request.source(), payload, options)
    }

    /// Shows the daemon this agent is alive. `recv` does it while waiting; an agent that
    /// computes for longer than the daemon's liveness timeout (5 s by default) without
    /// sending or receiving calls it now and then, or anycast and feature routes skip it
    /// meanwhile.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.heartbeat();
    /// ```
    pub fn heartbeat(&self) {
        beat(&self.link.segment);
    }

    fn idle_once(&mut self, work: usize) -> Result<(), ClientError> {
        if work > 0 {
            self.idle_polls = 0;
            self.idler.reset();
            return Ok(());
        }
        self.idle_polls = self.idle_polls.wrapping_add(1);
        if self.idle_polls % HEARTBEAT_POLLS == 0 {
            self.heartbeat();
        }
        if self.idle_polls % LIVENESS_CHECK_POLLS == 0 {
            self.check_alive()?;
        }
        self.idler.idle(0, &mut self.link.rx);
        Ok(())
    }

    /// Receives one frame if one is ready.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// while let Some(msg) = agent.try_recv()? { println!("{}", msg.payload().len()); }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>, ClientError> {
        self.release_held();
        if let Some(owned) = self.stash.pop_front() {
            return Ok(Some(Message::Owned(owned)));
        }
        match self.link.rx.peek()? {
            Some(frame) => {
                FrameHeader::validate(frame.bytes())?;
                Ok(Some(Message::InRing(frame)))
            }
            None => {
                // (Fields, not a method on `self`: `self.link.rx` is still borrowed here.)
                count_empty_poll(&mut self.idle_polls, &self.link.segment);
                Ok(None)
            }
        }
    }

    /// Receives one frame, waiting up to `timeout` (`None`: until one arrives or the daemon
    /// goes away) with the builder's idle strategy.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let msg = agent.recv(Some(std::time::Duration::from_secs(1)))?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>, ClientError> {
        if self.wait_for_frame(timeout)? {
            self.try_recv()
        } else {
            Ok(None)
        }
    }

    /// Releases the held frame, then waits up to `timeout` (`None`: until a frame arrives or
    /// the daemon goes away) with the builder's idle strategy; true once a frame is ready
    /// (stashed or in the ring), false when the time is up.
    fn wait_for_frame(&mut self, timeout: Option<Duration>) -> Result<bool, ClientError> {
        self.release_held();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if !self.stash.is_empty() || !self.link.rx.is_empty() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.idle_once(0)?;
        }
    }

    /// Receives up to `frames_max` ready frames, calling `on_message` for each in place; one
    /// release store for the whole batch. Returns how many were handled.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let n = agent.recv_batch(32, |header, payload| { let _ = (header.source(), payload.len()); })?;
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn recv_batch<F>(
        &mut self,
        frames_max: usize,
        mut on_message: F,
    ) -> Result<usize, ClientError>
    where
        F: FnMut(&FrameHeader, &[u8]),
    {
        self.release_held();
        let mut handled = 0;
        while handled < frames_max {
            let Some(owned) = self.stash.pop_front() else {
                break;
            };
            on_message(owned.header(), owned.payload());
            handled += 1;
        }
        let mut bad = None;
        handled +=
            self.link.rx.read(frames_max - handled, |frame| {
                match FrameHeader::validate(frame) {
                    Ok(header) => {
                        on_message(header, &frame[HEADER_BYTES..]);
                        core::ops::ControlFlow::Continue(())
                    }
                    Err(e) => {
                        bad = Some(e);
                        core::ops::ControlFlow::Continue(())
                    }
                }
            })?;
        match bad {
            Some(e) => Err(e.into()),
            None => Ok(handled),
        }
    }

    /// Drops the current link and connects again with bounded retries and backoff,
    /// re-registering with the same name, capabilities, topics and features.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let got = agent.recv(None).map(|m| m.is_some());
    /// if let Err(agentwire_shm::client::ClientError::Disconnected) = got {
    ///     agent.reconnect()?;
    /// }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut backoff = self.builder.reconnect_backoff_initial;
        let mut last = ClientError::Disconnected;
        for attempt in 1..=self.builder.reconnect_attempts_max {
            match Link::establish(&self.builder) {
                Ok(link) => {
                    // The held frame lived in the old link's ring.
                    self.held = None;
                    tracing::info!(
                        attempt,
                        agent_id = link.agent_id,
                        "reconnected to the daemon"
                    );
                    self.link = link;
                    self.topic_ids.clear();
                    self.capability_routes.clear();
                    self.idler.reset();
                    return Ok(());
                }
                Err(e @ (ClientError::Refused { .. } | ClientError::UntrustedDaemon { .. })) => {
                    return Err(e)
                }
                Err(e) => last = e,
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        Err(ClientError::ReconnectFailed {
            attempts: self.builder.reconnect_attempts_max,
            last: Box::new(last),
        })
    }

    /// Leaves cleanly: tells the daemon, which reclaims the segment.
    ///
    /// ```no_run
    /// # let agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.close();
    /// ```
    pub fn close(self) {
        let _ = self.link.conn.send(&ClientMsg::Goodbye, &[]);
    }
}

/// A claimed outgoing frame: header written, payload to fill, then commit (or drop to abort).
#[derive(Debug)]
pub struct FrameClaim<'a> {
    claim: crate::ring::Claim<'a>,
}

impl FrameClaim<'_> {
    /// The payload area, in the ring.
    ///
    /// ```no_run
    /// # use agentwire_shm::wire::FrameKind;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let mut c = agent.claim(FrameKind::Send, 2, 4, Default::default())?;
    /// c.payload_mut().copy_from_slice(b"data");
    /// c.commit();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.claim.bytes_mut()[HEADER_BYTES..]
    }

    /// Commits and publishes.
    ///
    /// ```no_run
    /// # use agentwire_shm::wire::FrameKind;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.claim(FrameKind::Send, 2, 0, Default::default())?.commit();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn commit(self) {
        self.claim.commit();
    }

    /// Commits; visible at the next [`Agent::flush`], or earlier if a later claim on the same
    /// lane finds the ring full (it publishes before waiting for room).
    ///
    /// ```no_run
    /// # use agentwire_shm::wire::FrameKind;
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// agent.claim(FrameKind::Send, 2, 0, Default::default())?.commit_deferred();
    /// agent.flush();
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn commit_deferred(self) {
        self.claim.commit_deferred();
    }
}

/// A received frame: in the ring (zero-copy, released on drop) or kept aside.
#[derive(Debug)]
pub enum Message<'a> {
    /// Read in place from the rx ring.
    InRing(FrameRef<'a>),
    /// Copied aside while a request waited.
    Owned(OwnedMessage),
}

impl Message<'_> {
    fn frame(&self) -> &[u8] {
        match self {
            Message::InRing(f) => f.bytes(),
            Message::Owned(o) => &o.frame,
        }
    }

    /// The frame header, read in place.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// if let Some(m) = agent.try_recv()? { println!("from {}", m.header().source()); }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn header(&self) -> &FrameHeader {
        FrameHeader::validate(self.frame()).expect("validated on receipt")
    }

    /// The payload bytes.
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// if let Some(m) = agent.try_recv()? { println!("{} bytes", m.payload().len()); }
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.frame()[HEADER_BYTES..]
    }

    /// Reads the payload as an rkyv archive of `T`, checked with bytecheck (frames come from
    /// other processes and are untrusted).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// if let Some(m) = agent.try_recv()? {
    ///     let text: &rkyv::Archived<String> = m.access::<String>()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access<T>(&self) -> Result<&T::Archived, rkyv::rancor::Error>
    where
        T: rkyv::Archive,
        T::Archived: for<'b> rkyv::bytecheck::CheckBytes<
            rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>,
        >,
    {
        rkyv::access::<T::Archived, rkyv::rancor::Error>(self.payload())
    }

    /// Copies the frame out of the ring (releasing it).
    ///
    /// ```no_run
    /// # let mut agent = agentwire_shm::client::Agent::builder("a").connect().unwrap();
    /// let kept = agent.try_recv()?.map(|m| m.to_owned());
    /// # Ok::<(), agentwire_shm::client::ClientError>(())
    /// ```
    pub fn to_owned(&self) -> OwnedMessage {
        OwnedMessage::from_frame(self.frame())
    }
}

/// A frame copied out of the ring, 16-byte aligned for rkyv.
#[derive(Debug, Clone)]
pub struct OwnedMessage {
    frame: rkyv::util::AlignedVec<16>,
}

impl OwnedMessage {
    /// Copies a validated frame.
    ///
    /// ```
    /// use agentwire_shm::{client::OwnedMessage, wire::{FrameHeader, FrameKind, HEADER_BYTES}};
    /// let mut f = vec![0u8; HEADER_BYTES];
    /// FrameHeader::new(FrameKind::Send, 1, 2, 0).write_to(&mut f);
    /// assert_eq!(OwnedMessage::from_frame(&f).header().destination(), 2);
    /// ```
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(frame.len());
        aligned.extend_from_slice(frame);
        Self { frame: aligned }
    }

    /// The header.
    ///
    /// ```
    /// # use agentwire_shm::{client::OwnedMessage, wire::{FrameHeader, FrameKind, HEADER_BYTES}};
    /// # let mut f = vec![0u8; HEADER_BYTES];
    /// # FrameHeader::new(FrameKind::Send, 1, 2, 0).write_to(&mut f);
    /// assert_eq!(OwnedMessage::from_frame(&f).header().source(), 1);
    /// ```
    pub fn header(&self) -> &FrameHeader {
        FrameHeader::validate(&self.frame).expect("validated on receipt")
    }

    /// The payload.
    ///
    /// ```
    /// # use agentwire_shm::{client::OwnedMessage, wire::{FrameHeader, FrameKind, HEADER_BYTES}};
    /// # let mut f = vec![0u8; HEADER_BYTES + 1];
    /// # FrameHeader::new(FrameKind::Send, 1, 2, 1).write_to(&mut f);
    /// assert_eq!(OwnedMessage::from_frame(&f).payload().len(), 1);
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.frame[HEADER_BYTES..]
    }

    /// The nack body, for a nack frame.
    ///
    /// ```
    /// # use agentwire_shm::{client::OwnedMessage, wire::{FrameHeader, FrameKind, HEADER_BYTES}};
    /// # let mut f = vec![0u8; HEADER_BYTES];
    /// # FrameHeader::new(FrameKind::Send, 1, 2, 0).write_to(&mut f);
    /// assert!(OwnedMessage::from_frame(&f).nack_body().is_none());
    /// ```
    pub fn nack_body(&self) -> Option<NackBody> {
        if self.header().kind() != FrameKind::Nack {
            return None;
        }
        decode_nack(self.payload())
    }
}

/// Decodes a nack payload (bytecheck-validated).
///
/// ```
/// let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(
///     &agentwire_shm::control::NackBody { reason: 1, detail: "x".into() }).unwrap();
/// assert_eq!(agentwire_shm::client::decode_nack(&bytes).unwrap().reason, 1);
/// ```
pub fn decode_nack(payload: &[u8]) -> Option<NackBody> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<NackBody, rkyv::rancor::Error>(&aligned).ok()
}
