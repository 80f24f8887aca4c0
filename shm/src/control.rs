//! The control protocol between agents and the daemon: a `SOCK_SEQPACKET` Unix socket
//! (message boundaries kept, descriptors attached to the message they belong to), rkyv
//! messages validated with bytecheck on receipt, descriptors passed with SCM_RIGHTS.
//!
//! The handshake: the daemon checks the peer's credentials (SO_PEERCRED) against its
//! allow-list as it accepts, before reading anything (and the client checks the daemon's);
//! the client sends [`ClientMsg::Hello`] with the protocol range it speaks; the daemon picks
//! the highest common version or refuses with both ranges named, then takes
//! [`ClientMsg::Register`] and answers [`ServerMsg::Registered`] with three descriptors: the
//! segment memfd, the tx doorbell and the rx doorbell.
//!
//! ```
//! use agentwire_shm::control::{ClientMsg, ControlConn};
//! let (a, b) = ControlConn::pair().unwrap();
//! a.send(&ClientMsg::Goodbye, &[]).unwrap();
//! let (msg, fds) = b.recv::<ClientMsg>(Some(std::time::Duration::from_secs(1))).unwrap();
//! assert!(matches!(msg, ClientMsg::Goodbye) && fds.is_empty());
//! ```

// rkyv's derive generates resolver types whose fields carry no docs; every source type here
// is documented, so the lint is relaxed for this module only.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

/// Oldest control/wire protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 3;
/// Newest control/wire protocol version this build speaks. Version 3: status routes come in
/// pages (`StatusRoutes`), a route lists at most [`ROUTE_AGENTS_LISTED_MAX`] agents, and
/// `Refused { PerUidLimit }`.
pub const PROTOCOL_VERSION_MAX: u16 = 3;
/// Agents per status message at most: a status report of thousands of agents comes in
/// pages, each also bounded in bytes ([`STATUS_PAGE_BYTES_MAX`]).
pub const STATUS_AGENTS_PER_MESSAGE: usize = 128;
/// Routes per status message at most (also bounded in bytes).
pub const STATUS_ROUTES_PER_MESSAGE: usize = 128;
/// What one status page may hold, estimated from its strings and lists: well under
/// [`CONTROL_MESSAGE_BYTES_MAX`] whatever agents registered (every name and list they can
/// register is bounded), so an admin reply can never be broken by what agents register.
pub const STATUS_PAGE_BYTES_MAX: usize = 24 * 1024;
/// Agents a route lists at most in a status report (`agents_total` says how many it has).
pub const ROUTE_AGENTS_LISTED_MAX: usize = 64;
/// Largest control message in bytes; larger ones are refused.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Most descriptors one control message carries.
pub const CONTROL_FDS_MAX: usize = 4;
/// Longest agent name in bytes.
pub const AGENT_NAME_BYTES_MAX: usize = 64;

/// A capability an agent offers, with its semver version.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CapabilitySpec {
    /// Capability name, e.g. `summarize`.
    pub name: String,
    /// Semver version, e.g. `1.4.2`.
    pub version: String,
}

/// What an agent tells the daemon about itself.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// Agent name (1 to 64 bytes).
    pub name: String,
    /// Capabilities offered.
    pub capabilities: Vec<CapabilitySpec>,
    /// Topics subscribed at registration.
    pub topics: Vec<String>,
    /// Feature ids this agent serves.
    pub features: Vec<u32>,
    /// Bytes of each of its rings the agent asks for (a power of two within the daemon's
    /// limits); 0 takes the daemon's default. Protocol version 2.
    pub ring_capacity_bytes: u32,
}

/// Messages from an agent to the daemon.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub enum ClientMsg {
    /// Opens the handshake with the protocol range the client speaks.
    Hello {
        /// Oldest version offered.
        version_min: u16,
        /// Newest version offered.
        version_max: u16,
        /// Free-form client description for logs.
        client: String,
    },
    /// Registers the agent; answered with `Registered` and the segment descriptors.
    Register(Registration),
    /// Subscribes to a topic; answered with `TopicId`.
    Subscribe {
        /// Topic name.
        topic: String,
    },
    /// Unsubscribes from a topic; answered with `Done`.
    Unsubscribe {
        /// Topic name.
        topic: String,
    },
    /// Looks up (or creates) a topic id for publishing; answered with `TopicId`.
    ResolveTopic {
        /// Topic name.
        topic: String,
    },
    /// Looks up (or creates) an anycast route for a capability and a semver requirement;
    /// answered with `CapabilityRoute`.
    ResolveCapability {
        /// Capability name.
        capability: String,
        /// Semver requirement, e.g. `^1.2`.
        requirement: String,
    },
    /// Lists live agents offering a capability that satisfies a requirement; answered with
    /// `Agents`.
    Discover {
        /// Capability name.
        capability: String,
        /// Semver requirement.
        requirement: String,
    },
    /// Leaves cleanly.
    Goodbye,
    /// Asks for the router's status instead of registering (admin tools); allowed right
    /// after `Welcome`, answered with `Status` carrying the first
    /// [`STATUS_AGENTS_PER_MESSAGE`] agents; the rest come with `StatusAgents`.
    Status,
    /// After `Status`: the next agents (ids above `after`), answered with `StatusAgents`.
    StatusAgents {
        /// The last agent id already received.
        after: u32,
    },
    /// After `Status`: the next routes (in the report's order, past the first `skip`),
    /// answered with `StatusRoutes`.
    StatusRoutes {
        /// Routes already received.
        skip: u32,
    },
}

/// Why the daemon refused a connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The peer's uid/gid is not on the allow-list.
    NotPermitted,
    /// No protocol version in common.
    VersionUnsupported,
    /// The request was malformed or out of order.
    BadRequest,
    /// The daemon is at its agent limit.
    Full,
    /// The peer's uid already holds as many connections in their handshake, or as many
    /// agents, as the daemon allows one uid (`handshakes_per_uid_max`, `agents_per_uid_max`);
    /// the detail names the limit. Added after protocol version 2 shipped: an older client
    /// reads it as a malformed message.
    PerUidLimit,
}

/// A live agent offering a capability.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Agent id.
    pub agent_id: u32,
    /// Agent name.
    pub name: String,
    /// Matching capability version.
    pub version: String,
}

/// Messages from the daemon to an agent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub enum ServerMsg {
    /// The handshake succeeded at this version.
    Welcome {
        /// Negotiated version.
        version: u16,
        /// Daemon description.
        daemon: String,
    },
    /// The daemon refuses; the connection closes after this.
    Refused {
        /// Reason class.
        reason: RefuseReason,
        /// Human-readable detail naming the values involved.
        detail: String,
    },
    /// Registration accepted; carries 3 fds: segment, tx doorbell, rx doorbell.
    Registered {
        /// The agent's id.
        agent_id: u32,
        /// Ids of the topics subscribed at registration, in order.
        topic_ids: Vec<u32>,
    },
    /// A topic's id.
    TopicId {
        /// Topic id.
        topic_id: u32,
    },
    /// An anycast route id.
    CapabilityRoute {
        /// Route id (the frame destination with `FLAG_ANYCAST`).
        route_id: u32,
    },
    /// Discovery results.
    Agents {
        /// Matching live agents.
        agents: Vec<AgentInfo>,
    },
    /// The router's status (answer to `ClientMsg::Status`).
    Status(StatusReport),
    /// The next agents of a status report, in id order (empty: no more).
    StatusAgents {
        /// At most [`STATUS_AGENTS_PER_MESSAGE`] agents.
        agents: Vec<AgentStatus>,
    },
    /// The next routes of a status report (empty: no more).
    StatusRoutes {
        /// At most [`STATUS_ROUTES_PER_MESSAGE`] routes.
        routes: Vec<RouteStatus>,
    },
    /// Generic success.
    Done,
    /// A request failed.
    Error {
        /// What went wrong.
        detail: String,
    },
}

/// One live agent as the router reports it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// Agent id.
    pub agent_id: u32,
    /// Agent name.
    pub name: String,
    /// Process id (SO_PEERCRED at connect); 0 for a remote agent (behind a gateway: a
    /// network connection), which has no process on this machine.
    pub pid: u32,
    /// Capabilities as `name@version`.
    pub capabilities: Vec<String>,
    /// Bytes waiting in the agent's tx ring (a snapshot).
    pub tx_occupied_bytes: u64,
    /// Bytes waiting in the agent's rx ring (a snapshot).
    pub rx_occupied_bytes: u64,
    /// Capacity of each of the agent's rings.
    pub ring_capacity_bytes: u64,
    /// Subscribed topic ids.
    pub topics: Vec<u32>,
    /// Feature ids it serves.
    pub features: Vec<u32>,
    /// False while it is stale (nothing it owns moved for the liveness timeout): anycast,
    /// feature routes and discovery skip it.
    pub live: bool,
    /// Router shard that serves its rings.
    pub shard: u32,
}

/// The router's status: its counters and its live agents.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusReport {
    /// Build that answers, e.g. `agentwire 0.1.0`.
    pub daemon: String,
    /// Daemon process id.
    pub pid: u32,
    /// Seconds since the router started.
    pub uptime_s: u64,
    /// Counters by name (monotonic).
    pub counters: Vec<(String, u64)>,
    /// Live agents, in id order: all of them from [`query_status`](crate::client::query_status);
    /// on the wire, the first [`STATUS_AGENTS_PER_MESSAGE`] (the rest come with
    /// `StatusAgents`).
    pub agents: Vec<AgentStatus>,
    /// How many agents the router has (`agents` holds them all once every page arrived).
    pub agents_total: u32,
    /// Topic, capability and feature routes: all of them from
    /// [`query_status`](crate::client::query_status); on the wire, the first page (the rest
    /// come with `StatusRoutes`).
    pub routes: Vec<RouteStatus>,
    /// How many routes the router has.
    pub routes_total: u32,
    /// Facts about the daemon: `router_cpu`, `metrics` (its URL), `dlq` (its path).
    pub info: Vec<(String, String)>,
    /// Each router shard's own counters (`counters` is their sum).
    pub shards: Vec<ShardStatus>,
    /// Partitions of the plan the daemon applied (router first), with their executors.
    pub partitions: Vec<PartitionStatus>,
    /// The last core moves between partitions (rebalancing), oldest first.
    pub core_moves: Vec<CoreMoveStatus>,
}

/// One partition of the applied plan (`agentwire status`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionStatus {
    /// `router`, `streaming`, `nas`, `twin`, `fusion` or a configured name.
    pub name: String,
    /// Rebalancing priority.
    pub priority: u32,
    /// CPUs the plan gave it.
    pub home_cpus: Vec<u32>,
    /// CPUs it runs on now (home CPUs not lent, and borrowed ones).
    pub cpus: Vec<u32>,
    /// Busy ratio over the last sample, in thousandths.
    pub busy_permille: u32,
    /// Jobs run to completion.
    pub jobs_completed: u64,
    /// Jobs waiting in its queue.
    pub jobs_queued: u64,
    /// Its executors (dormant ones too: a lent core's executor sleeps until it returns).
    pub executors: Vec<ExecutorStatus>,
}

/// One pinned executor thread.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecutorStatus {
    /// Thread name, `aw-<role>-<cpu>`.
    pub thread: String,
    /// The CPU it is pinned to.
    pub cpu: u32,
    /// Its affinity mask as the thread read it back (sched_getaffinity) after pinning.
    pub affinity: Vec<u32>,
    /// Running the partition's work (false: its core is lent out, or not yet borrowed).
    pub active: bool,
}

/// One core moved between partitions.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreMoveStatus {
    /// Milliseconds since the daemon started.
    pub at_ms: u64,
    /// The CPU.
    pub cpu: u32,
    /// Partition that stopped running on it.
    pub from: String,
    /// Partition that started running on it.
    pub to: String,
    /// `borrow` or `return`.
    pub kind: String,
    /// Why (busy ratios against the marks).
    pub reason: String,
}

/// One router shard as the router reports it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardStatus {
    /// Shard index (0-based).
    pub shard: u32,
    /// Agents whose rings it serves.
    pub agents: u32,
    /// Its counters by name.
    pub counters: Vec<(String, u64)>,
}

/// One route as the router reports it (`agentwire routes`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// `topic`, `capability` or `feature`.
    pub kind: String,
    /// Topic id, capability route id (what frames carry as their destination) or feature id.
    pub route_id: u32,
    /// Topic or capability name.
    pub name: String,
    /// Semver requirement of a capability route (empty for topics).
    pub requirement: String,
    /// Agents the route reaches now (subscribers; capable live agents), in id order: the
    /// first [`ROUTE_AGENTS_LISTED_MAX`].
    pub agents: Vec<u32>,
    /// How many agents the route reaches.
    pub agents_total: u32,
}

/// Why the daemon refused a frame (the payload of a nack, and the reject counter's code).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackReason {
    /// No live agent with that id (or no agent for that capability route).
    NoSuchAgent = 1,
    /// Nobody subscribes to that topic.
    NoSubscriber = 2,
    /// The destination stayed full past the deadline.
    DestinationFull = 3,
    /// The frame failed validation.
    Malformed = 4,
    /// The sender may not send this kind of frame.
    NotPermitted = 5,
    /// The router gave up on the frame (its destination stayed full past the deadline, left,
    /// or the daemon shut down) and the dead-letter queue would not keep it: the sender holds
    /// as many dead letters as one sender may (`dlq_records_per_sender_max`,
    /// `dlq_bytes_per_sender_max`), the queue is full, or the frame is too large to keep. The
    /// frame is dropped (counted in `frames_dropped`); the detail says which refusal.
    DeadLetterRefused = 6,
}

impl NackReason {
    /// Decodes a reason code.
    ///
    /// ```
    /// use agentwire_shm::control::NackReason;
    /// assert_eq!(NackReason::from_u32(4), Some(NackReason::Malformed));
    /// assert_eq!(NackReason::from_u32(6), Some(NackReason::DeadLetterRefused));
    /// assert_eq!(NackReason::from_u32(7), None);
    /// ```
    pub fn from_u32(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::NoSuchAgent,
            2 => Self::NoSubscriber,
            3 => Self::DestinationFull,
            4 => Self::Malformed,
            5 => Self::NotPermitted,
            6 => Self::DeadLetterRefused,
            _ => return None,
        })
    }
}

/// The payload of a nack frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NackBody {
    /// A [`NackReason`] code.
    pub reason: u32,
    /// Detail, e.g. the validation error.
    pub detail: String,
}

/// Errors on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A socket call failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("control connection closed by peer")]
    Closed,
    /// No message arrived in time.
    #[error("no control message within {0:?}")]
    Timeout(Duration),
    /// The message failed bytecheck validation or was too large.
    #[error("malformed control message: {0}")]
    Malformed(String),
}

impl From<rustix::io::Errno> for ControlError {
    fn from(e: rustix::io::Errno) -> Self {
        Self::Io(e.into())
    }
}

/// A control message archived (rkyv), refused when larger than
/// [`CONTROL_MESSAGE_BYTES_MAX`]: what the control socket and a byte stream carry.
///
/// ```
/// use agentwire_shm::control::{archive, ClientMsg};
/// assert!(!archive(&ClientMsg::Goodbye).unwrap().is_empty());
/// ```
pub fn archive<M>(msg: &M) -> Result<rkyv::util::AlignedVec, ControlError>
where
    M: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(msg)
        .map_err(|e| ControlError::Malformed(e.to_string()))?;
    if bytes.len() > CONTROL_MESSAGE_BYTES_MAX {
        return Err(ControlError::Malformed(format!(
            "{} bytes exceeds {CONTROL_MESSAGE_BYTES_MAX}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// One end of a control connection.
#[derive(Debug)]
pub struct ControlConn {
    fd: OwnedFd,
    /// The peer's supplementary groups, read once (SO_PEERGROUPS) when first asked.
    peer_groups: std::sync::OnceLock<Vec<u32>>,
}

fn seqpacket() -> Result<OwnedFd, ControlError> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Waits until `fd` is readable or `timeout` passes; `None` waits forever.
///
/// ```
/// use rustix::fd::AsFd;
/// let bell = agentwire_shm::doorbell::Doorbell::new().unwrap();
/// let ready = agentwire_shm::control::wait_readable(bell.as_fd(), Some(std::time::Duration::ZERO));
/// assert!(!ready.unwrap());
/// ```
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, ControlError> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    loop {
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl ControlConn {
    /// Connects to a daemon's socket at `path`.
    ///
    /// ```no_run
    /// let conn = agentwire_shm::control::ControlConn::connect("/run/agentwire/agentwire.sock".as_ref());
    /// ```
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        let fd = seqpacket()?;
        let addr = rustix::net::SocketAddrUnix::new(path)?;
        rustix::net::connect(&fd, &addr)?;
        Ok(Self::from_fd(fd))
    }

    /// A connected pair, for tests and in-process use.
    ///
    /// ```
    /// let (_a, _b) = agentwire_shm::control::ControlConn::pair().unwrap();
    /// ```
    pub fn pair() -> Result<(Self, Self), ControlError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    /// Wraps an accepted (or otherwise connected) SEQPACKET socket: the daemon's side of a
    /// connection it took from [`listen`].
    ///
    /// ```
    /// let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    /// let conn = agentwire_shm::control::ControlConn::from_fd(a.into());
    /// # drop(conn);
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            fd,
            peer_groups: std::sync::OnceLock::new(),
        }
    }

    /// Sends one message with optional descriptors attached.
    ///
    /// ```
    /// # use agentwire_shm::control::{ControlConn, ServerMsg};
    /// let (a, _b) = ControlConn::pair().unwrap();
    /// a.send(&ServerMsg::Done, &[]).unwrap();
    /// ```
    pub fn send<M>(&self, msg: &M, fds: &[BorrowedFd<'_>]) -> Result<(), ControlError>
    where
        M: for<'a> Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let bytes = archive(msg)?;
        assert!(
            fds.len() <= CONTROL_FDS_MAX,
            "at most {CONTROL_FDS_MAX} fds per message"
        );
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(CONTROL_FDS_MAX))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                    return Err(ControlError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message (validated with bytecheck) and the descriptors attached to it.
    ///
    /// ```
    /// # use agentwire_shm::control::{ControlConn, ControlError, ServerMsg};
    /// let (a, b) = ControlConn::pair().unwrap();
    /// let r = b.recv::<ServerMsg>(Some(std::time::Duration::from_millis(1)));
    /// assert!(matches!(r, Err(ControlError::Timeout(_))));
    /// ```
    pub fn recv<M>(&self, timeout: Option<Duration>) -> Result<(M, Vec<OwnedFd>), ControlError>
    where
        M: Archive,
        M::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        if !wait_readable(self.fd.as_fd(), timeout)? {
            return Err(ControlError::Timeout(timeout.unwrap_or_default()));
        }
        let mut buf = vec![0u8; CONTROL_MESSAGE_BYTES_MAX];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(CONTROL_FDS_MAX))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CONNRESET) => return Err(ControlError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                fds.extend(received_fds);
            }
        }
        if received.bytes == 0 {
            return Err(ControlError::Closed);
        }
        if received.flags.contains(rustix::net::ReturnFlags::TRUNC) {
            return Err(ControlError::Malformed(format!(
                "message larger than {CONTROL_MESSAGE_BYTES_MAX} bytes"
            )));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(received.bytes);
        aligned.extend_from_slice(&buf[..received.bytes]);
        let msg = rkyv::from_bytes::<M, rkyv::rancor::Error>(&aligned)
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        Ok((msg, fds))
    }

    /// True when the peer has closed (a non-blocking peek).
    ///
    /// ```
    /// # use agentwire_shm::control::ControlConn;
    /// let (a, b) = ControlConn::pair().unwrap();
    /// assert!(!a.peer_closed());
    /// drop(b);
    /// assert!(a.peer_closed());
    /// ```
    pub fn peer_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        match rustix::net::recv(&self.fd, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) => true,
            Ok(_) => false,
            Err(rustix::io::Errno::AGAIN) => false,
            Err(_) => true,
        }
    }

    /// The peer's supplementary groups as the kernel took them at `connect`
    /// (SO_PEERGROUPS), read on the first call; empty if the kernel cannot say (before
    /// Linux 4.13). An allow-list admits a member of an allowed group by them, not only by
    /// the primary group SO_PEERCRED gives.
    ///
    /// ```
    /// # use agentwire_shm::control::ControlConn;
    /// let (a, _b) = ControlConn::pair().unwrap();
    /// let mine = rustix::process::getgroups().unwrap();
    /// assert_eq!(a.peer_groups().len(), mine.len());
    /// ```
    pub fn peer_groups(&self) -> &[u32] {
        self.peer_groups
            .get_or_init(|| read_peer_groups(&self.fd).unwrap_or_default())
    }

    /// The peer's credentials (SO_PEERCRED).
    ///
    /// ```
    /// # use agentwire_shm::control::ControlConn;
    /// let (a, _b) = ControlConn::pair().unwrap();
    /// assert_eq!(a.peer_credentials().unwrap().pid, std::process::id());
    /// ```
    pub fn peer_credentials(&self) -> Result<PeerCredentials, ControlError> {
        let cred = rustix::net::sockopt::socket_peercred(&self.fd)?;
        Ok(PeerCredentials {
            pid: cred.pid.as_raw_nonzero().get() as u32,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        })
    }
}

/// SO_PEERGROUPS of `fd`: the groups of the process that connected, when it connected.
fn read_peer_groups(fd: &OwnedFd) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    // NGROUPS_MAX is 65536; start small and grow when the kernel says ERANGE.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live, writable buffer of `len` bytes; the kernel writes at
        // most `len` bytes and sets `len` to what it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE) && count > groups.len() && count <= 65_536 {
            groups.resize(count, 0);
            continue;
        }
        return Err(error);
    }
}

impl AsFd for ControlConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A peer process's identity as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Picks the highest version both sides speak, or `None`.
///
/// ```
/// use agentwire_shm::control::negotiate;
/// assert_eq!(negotiate((1, 3), (2, 5)), Some(3));
/// assert_eq!(negotiate((1, 1), (2, 5)), None);
/// ```
pub fn negotiate(client: (u16, u16), daemon: (u16, u16)) -> Option<u16> {
    let high = client.1.min(daemon.1);
    let low = client.0.max(daemon.0);
    (client.0 <= client.1 && low <= high).then_some(high)
}

/// Permission bits of the daemon's control socket: its owner and its group may connect
/// (connecting needs write permission on the socket file), nobody else.
pub const SOCKET_MODE: u32 = 0o660;

/// Creates a listening SEQPACKET socket at `path` (the daemon's control socket), with mode
/// [`SOCKET_MODE`] set explicitly rather than left to the umask. The mode is set between
/// `bind` and `listen`, so nobody can connect while the file still has the umask's mode.
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// let p = std::env::temp_dir().join(format!("aw-doc-listen-{}.sock", std::process::id()));
/// let _fd = agentwire_shm::control::listen(&p, 16).unwrap();
/// assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o660);
/// # std::fs::remove_file(&p).unwrap();
/// ```
pub fn listen(path: &Path, backlog: i32) -> Result<OwnedFd, ControlError> {
    let fd = seqpacket()?;
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(SOCKET_MODE))?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = ControlConn::pair().unwrap();
        let bell = crate::doorbell::Doorbell::new().unwrap();
        a.send(
            &ServerMsg::Registered {
                agent_id: 4,
                topic_ids: vec![1, 2],
            },
            &[bell.as_fd()],
        )
        .unwrap();
        let (msg, fds) = b.recv::<ServerMsg>(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(
            msg,
            ServerMsg::Registered {
                agent_id: 4,
                topic_ids: vec![1, 2]
            }
        );
        assert_eq!(fds.len(), 1);
        // The received fd is the same eventfd.
        crate::doorbell::Doorbell::from_fd(fds.into_iter().next().unwrap()).ring();
        bell.wait(Duration::from_secs(1));
    }

    #[test]
    fn rejects_garbage_control_message() {
        let (a, b) = ControlConn::pair().unwrap();
        rustix::net::send(&a.fd, &[0xff; 7], SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<ClientMsg>(Some(Duration::from_secs(1))),
            Err(ControlError::Malformed(_))
        ));
    }
}
