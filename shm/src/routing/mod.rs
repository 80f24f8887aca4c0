//! The routing core shared by the in-process test router ([`crate::testing::TestRouter`])
//! and the daemon: admission (the handshake from [`crate::server`], segment and doorbell
//! creation), one control thread per agent (subscribe, resolve, discover), the registry, and
//! [`RoutingCore`], whose [`RoutingCore::do_work`] is one duty cycle over every agent's tx
//! ring. The caller decides where the duty cycle runs: a plain thread for tests, a pinned
//! executor in the daemon.
//!
//! Semantics (docs/wire.md §6): unicast; publish to every subscriber, every copy placed or
//! none; anycast to a capability route, to the least-loaded live agent whose version
//! satisfies the route's requirement; a full destination's frames wait in its bounded
//! deferral ([`crate::deferral`]) and, past the deadline, go to a [`DeadLetterSink`] with a
//! nack to the sender; when the deferral is full too the frame stays in the sender's lane
//! (backpressure); priority lanes served by a weighted policy ([`LANE_WEIGHTS`]); acks on
//! request; nacks with a reason, counted in the sender's control block too; a departing
//! agent's committed frames are still routed before its segment is reclaimed. The registry sits behind a mutex on the control path only; the
//! duty cycle sees it through a generation counter and rebuilt tables.
//!
//! ```
//! use agentwire_shm::routing::{RouterConfig, RouterControl};
//! use agentwire_shm::idle::{IdleStrategy, Idler};
//! let sock = std::env::temp_dir().join(format!("aw-doc-routing-{}.sock", std::process::id()));
//! let (control, mut core) = RouterControl::start(RouterConfig::new(sock)).unwrap();
//! let router = std::thread::spawn(move || core.run(IdleStrategy::default()));
//! let mut a = agentwire_shm::client::Agent::builder("a").socket(control.socket_path()).connect().unwrap();
//! a.publish("nobody", b"x").unwrap(); // nacked: no subscriber
//! assert!(a.recv(Some(std::time::Duration::from_secs(5))).unwrap().is_some());
//! control.shutdown();
//! router.join().unwrap();
//! ```

use crate::control::{
    AgentInfo, AgentStatus, ClientMsg, ControlConn, ControlError, NackBody, NackReason,
    RouteStatus, ServerMsg, StatusReport,
};
use crate::deferral::Deferral;
use crate::idle::{Doorbell, IdleStrategy, Idler};
use crate::ring::{Consumer, Producer};
use crate::segment::{state, HugePages, Segment, SegmentConfig, TX_LANES};
use crate::server::{Accepted, AllowList, ControlListener, HandshakeError};
use crate::wire::{Destination, FrameHeader, FrameKind, DAEMON_AGENT_ID, HEADER_BYTES};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod links;
pub mod liveness;
pub mod placement;
pub mod wake;

use links::{LinkFlags, LinkReceiver, LinkSender};
use wake::ShardWake;

/// Most agents a router admits.
pub const ROUTER_AGENTS_MAX: usize = 256;
/// Most router shards (cores) one router runs.
pub const ROUTER_SHARDS_MAX: usize = 64;
/// Most bytes in flight on one link between two shards (see [`links`]).
pub const LINK_BUDGET_BYTES_MAX: usize = 64 * 1024;
/// Most distinct discovery questions cached between two registry changes.
pub const DISCOVERY_CACHE_ENTRIES_MAX: usize = 1024;
/// Duty cycles between bumps of each segment's daemon heartbeat.
pub const HEARTBEAT_PASSES: u64 = 1024;
/// Shortest bound on one park of a router shard with no agent and nothing deferred (its
/// park timeout when that is longer), whatever the idle strategy: everything that could
/// give it work (a new agent, a link record, shutdown) rings its doorbell, so the bound only
/// caps a missed wakeup.
pub const IDLE_SHARD_PARK_MIN: Duration = Duration::from_millis(100);
/// Duty cycles run at shutdown to route frames already committed.
pub const DRAIN_PASSES_MAX: usize = 10_000;
/// How long a shard waits at shutdown for the other shards to go quiet.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// Frames drained from one tx lane per read by default ([`RouterConfig::batch_frames`]).
pub const ROUTER_BATCH_FRAMES_DEFAULT: usize = 32;
/// Largest [`RouterConfig::batch_frames`] accepted.
pub const ROUTER_BATCH_FRAMES_LIMIT: usize = 1024;
/// Priority lanes, the weighted policy (docs/wire.md §6). Each duty cycle serves every
/// agent's four lanes, one class after the other. Which class goes first is picked by smooth
/// weighted round robin over the classes that were backlogged in the previous cycle, with
/// these weights: when a destination is full, the room that frees up goes to contending
/// classes 8 : 4 : 2 : 1, and a backlogged class goes first at least once every 15 cycles,
/// so no class starves. After the first, classes follow in priority order.
pub const LANE_WEIGHTS: [u32; TX_LANES] = [8, 4, 2, 1];
/// Frames a class may route per agent per duty cycle with the default batch size: when every
/// lane of every agent is full (the router core is the bottleneck), router time goes to
/// classes 4 : 3 : 2 : 1. See [`lane_batch_frames`].
pub const LANE_BATCH_FRAMES: [usize; TX_LANES] = lane_batch_frames(ROUTER_BATCH_FRAMES_DEFAULT);

/// Per-class frame budgets per agent per duty cycle for a batch size of `batch_frames`:
/// 2, 1.5, 1 and 0.5 batches (at least one frame each), the 4 : 3 : 2 : 1 share.
///
/// ```
/// assert_eq!(agentwire_shm::routing::lane_batch_frames(32), [64, 48, 32, 16]);
/// assert_eq!(agentwire_shm::routing::lane_batch_frames(1), [2, 1, 1, 1]);
/// ```
pub const fn lane_batch_frames(batch_frames: usize) -> [usize; TX_LANES] {
    let half = if batch_frames / 2 == 0 {
        1
    } else {
        batch_frames / 2
    };
    [2 * batch_frames, 3 * batch_frames / 2, batch_frames, half]
}

/// How to start a router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Socket path to listen on.
    pub socket: PathBuf,
    /// Who may connect.
    pub allow: AllowList,
    /// Protocol versions accepted.
    pub versions: (u16, u16),
    /// Ring capacity each way per agent.
    pub ring_capacity_bytes: usize,
    /// The duty cycle's idle strategy (used by [`RoutingCore::run`]).
    pub idle: IdleStrategy,
    /// Most agents admitted at once (at most [`ROUTER_AGENTS_MAX`]).
    pub agents_max: usize,
    /// Bytes of per-destination deferral (frames waiting for room in a full rx ring); 0
    /// turns deferral off (a frame for a full destination then waits in its sender's ring).
    pub defer_capacity_bytes: usize,
    /// How long a deferred frame may wait before it is dead-lettered and its sender nacked
    /// with `DestinationFull`. `None`: frames wait as long as it takes (no loss, only
    /// backpressure). Expiry needs a sink ([`RoutingCore::set_dead_letters`]).
    pub defer_deadline: Option<Duration>,
    /// How long nothing an agent owns may stand still (heartbeat, ring positions) before it
    /// is stale: skipped by anycast, feature routes and discovery until it moves again.
    /// `None`: never stale (only a closed socket or an exited process removes an agent).
    pub liveness_timeout: Option<Duration>,
    /// Router shards (one routing core each, 1..=[`ROUTER_SHARDS_MAX`]); agents are spread
    /// over them at registration ([`placement`]).
    pub shards: usize,
    /// Each shard's NUMA node, when known (placement prefers shards near the agent).
    pub shard_numa_nodes: Vec<Option<u32>>,
    /// Frames drained from one tx lane per read (1..=[`ROUTER_BATCH_FRAMES_LIMIT`]); the
    /// per-class budgets per duty cycle scale with it ([`lane_batch_frames`]). Larger batches
    /// publish ring positions less often (throughput), smaller ones turn to the next agent
    /// sooner (latency under contention).
    pub batch_frames: usize,
}

impl RouterConfig {
    /// Defaults: current user allowed, all versions, 256 KiB rings, spin-then-park.
    ///
    /// ```
    /// let c = agentwire_shm::routing::RouterConfig::new("/tmp/t.sock".into());
    /// assert_eq!(c.ring_capacity_bytes, 256 * 1024);
    /// ```
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            allow: AllowList::current_user(),
            versions: (
                crate::control::PROTOCOL_VERSION_MIN,
                crate::control::PROTOCOL_VERSION_MAX,
            ),
            ring_capacity_bytes: 256 * 1024,
            idle: IdleStrategy::SpinThenPark {
                spins_max: 20_000,
                park_timeout_ns: 200_000,
            },
            agents_max: ROUTER_AGENTS_MAX,
            defer_capacity_bytes: 256 * 1024,
            defer_deadline: None,
            liveness_timeout: Some(Duration::from_secs(5)),
            shards: 1,
            shard_numa_nodes: Vec::new(),
            batch_frames: ROUTER_BATCH_FRAMES_DEFAULT,
        }
    }
}

/// Where the routing core puts frames it gives up on (the daemon's dead-letter queue file).
/// Called on the routing core's thread, only for frames past their deadline or left over at
/// shutdown, never on the fast path.
///
/// ```
/// use agentwire_shm::routing::DeadLetterSink;
/// use agentwire_shm::control::NackReason;
/// struct Keep(Vec<Vec<u8>>);
/// impl DeadLetterSink for Keep {
///     fn accept(&mut self, _reason: NackReason, frame: &[u8]) -> Result<u64, String> {
///         self.0.push(frame.to_vec());
///         Ok(self.0.len() as u64)
///     }
/// }
/// let mut k = Keep(Vec::new());
/// assert_eq!(k.accept(NackReason::DestinationFull, b"f"), Ok(1));
/// ```
pub trait DeadLetterSink: Send {
    /// Keeps `frame` (durably, eventually); returns its sequence number. `Err` when it cannot
    /// take it now (full, locked by `dlq replay`): the router keeps the frame and retries.
    fn accept(&mut self, reason: NackReason, frame: &[u8]) -> Result<u64, String>;
    /// Makes what was accepted durable. The router calls it at most once per
    /// [`HEARTBEAT_PASSES`] duty cycles after an accept, and at shutdown.
    fn flush(&mut self) {}
}

/// Adds to a counter only one thread writes (the routing core, or the accept thread): a
/// load and a store, no locked read-modify-write on the hot path.
#[inline]
fn count(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Upper bounds of the batch-size histogram buckets (frames taken from one tx ring in one
/// pass): 1, 2-3, 4-7, 8-15, 16-31, 32+.
pub const BATCH_BUCKETS: [usize; 6] = [1, 3, 7, 15, 31, usize::MAX];

fn batch_bucket(frames: usize) -> usize {
    BATCH_BUCKETS.iter().position(|&b| frames <= b).unwrap_or(5)
}

/// Counters of one routing core, in its own memory, each written by one thread (monotonic
/// unless named a gauge).
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Frames taken from agents' tx rings.
    pub frames_in: AtomicU64,
    /// Bytes taken from agents' tx rings.
    pub bytes_in: AtomicU64,
    /// Frames delivered to a destination ring (a fan-out counts once per subscriber).
    pub frames_delivered: AtomicU64,
    /// Bytes delivered to destination rings.
    pub bytes_delivered: AtomicU64,
    /// Nacks by reason: no such agent.
    pub nacks_no_such_agent: AtomicU64,
    /// Nacks by reason: no subscriber.
    pub nacks_no_subscriber: AtomicU64,
    /// Nacks by reason: destination full past its deadline.
    pub nacks_destination_full: AtomicU64,
    /// Nacks by reason: not permitted.
    pub nacks_not_permitted: AtomicU64,
    /// Frames parked in a destination's deferral because its ring was full.
    pub frames_deferred: AtomicU64,
    /// Frames (copies) handed to another shard's link for an agent it serves.
    pub frames_forwarded: AtomicU64,
    /// Frames taken from other shards' links.
    pub frames_from_links: AtomicU64,
    /// Gauge: frames waiting in deferrals now.
    pub deferred_now: AtomicU64,
    /// Frames handed to the dead-letter sink.
    pub frames_dead_lettered: AtomicU64,
    /// Times the dead-letter sink could not take a frame (it stays deferred).
    pub dead_letter_refusals: AtomicU64,
    /// Frames dropped because no dead-letter sink existed to take them (shutdown with
    /// deferred frames, or a destination gone, on a router without a sink).
    pub frames_dropped: AtomicU64,
    /// Duty cycles run.
    pub duty_cycles: AtomicU64,
    /// Duty cycles that found no work (idle ratio = this / `duty_cycles`).
    pub duty_cycles_idle: AtomicU64,
    /// Batch-size histogram, one count per non-empty read of a tx ring, bucketed by
    /// [`BATCH_BUCKETS`].
    pub batch_frames: [AtomicU64; 6],
    /// Frames rejected (nacked) for any reason.
    pub frames_rejected: AtomicU64,
    /// Of those, rejected as malformed.
    pub frames_malformed: AtomicU64,
    /// Acks sent.
    pub acks_sent: AtomicU64,
    /// Acks or nacks dropped because the sender's rx ring was full.
    pub replies_dropped: AtomicU64,
    /// Handshakes refused.
    pub handshakes_refused: AtomicU64,
    /// Agents admitted.
    pub agents_admitted: AtomicU64,
    /// Agents removed (segment reclaimed).
    pub agents_removed: AtomicU64,
    /// Rings found corrupt (agent disconnected).
    pub rings_corrupt: AtomicU64,
    /// Agents removed because their process exited (pidfd) while the control socket was
    /// still open (a child had inherited it).
    pub agents_exited: AtomicU64,
    /// Gauge: agents stale now (see [`liveness`]).
    pub agents_stale: AtomicU64,
    /// Discovery questions answered from the cache.
    pub discovery_cache_hits: AtomicU64,
    /// Discovery questions computed from the registry.
    pub discovery_cache_misses: AtomicU64,
}

impl RouterStats {
    /// Every counter by name (histogram buckets as `batch_frames_le_<bound>`), for status
    /// reports and the metrics endpoint.
    ///
    /// ```
    /// let s = agentwire_shm::routing::RouterStats::default();
    /// assert!(s.snapshot().iter().any(|(name, v)| name == "frames_delivered" && *v == 0));
    /// ```
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let named = [
            ("frames_in", &self.frames_in),
            ("bytes_in", &self.bytes_in),
            ("frames_delivered", &self.frames_delivered),
            ("bytes_delivered", &self.bytes_delivered),
            ("frames_rejected", &self.frames_rejected),
            ("frames_malformed", &self.frames_malformed),
            ("nacks_no_such_agent", &self.nacks_no_such_agent),
            ("nacks_no_subscriber", &self.nacks_no_subscriber),
            ("nacks_destination_full", &self.nacks_destination_full),
            ("nacks_not_permitted", &self.nacks_not_permitted),
            ("frames_deferred", &self.frames_deferred),
            ("frames_forwarded", &self.frames_forwarded),
            ("frames_from_links", &self.frames_from_links),
            ("deferred_now", &self.deferred_now),
            ("frames_dead_lettered", &self.frames_dead_lettered),
            ("dead_letter_refusals", &self.dead_letter_refusals),
            ("frames_dropped", &self.frames_dropped),
            ("acks_sent", &self.acks_sent),
            ("replies_dropped", &self.replies_dropped),
            ("handshakes_refused", &self.handshakes_refused),
            ("agents_admitted", &self.agents_admitted),
            ("agents_removed", &self.agents_removed),
            ("rings_corrupt", &self.rings_corrupt),
            ("agents_exited", &self.agents_exited),
            ("agents_stale", &self.agents_stale),
            ("discovery_cache_hits", &self.discovery_cache_hits),
            ("discovery_cache_misses", &self.discovery_cache_misses),
            ("duty_cycles", &self.duty_cycles),
            ("duty_cycles_idle", &self.duty_cycles_idle),
        ];
        let mut out: Vec<(String, u64)> = named
            .into_iter()
            .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
            .collect();
        for (bound, c) in BATCH_BUCKETS.iter().zip(&self.batch_frames) {
            let label = if *bound == usize::MAX {
                "inf".to_string()
            } else {
                bound.to_string()
            };
            out.push((
                format!("batch_frames_le_{label}"),
                c.load(Ordering::Relaxed),
            ));
        }
        out
    }
}

#[derive(Debug, Default)]
struct Registry {
    agents: HashMap<u32, AgentRecord>,
    topics: HashMap<String, u32>,
    capability_routes: Vec<(String, semver::VersionReq)>,
    generation: u64,
    /// Discovery answers by (capability, requirement), dropped on every change of who is
    /// registered or live ([`Registry::invalidate`]).
    discovery: HashMap<(String, String), Vec<AgentInfo>>,
}

#[derive(Debug, Clone)]
struct AgentRecord {
    name: String,
    pid: u32,
    capabilities: Vec<(String, semver::Version)>,
    topics: Vec<u32>,
    /// Feature ids it serves (feature routes).
    features: Vec<u32>,
    /// Its heartbeat and rings stood still past the liveness timeout: kept out of anycast,
    /// feature routes and discovery until it shows life again.
    stale: bool,
    /// For ring-occupancy gauges in status reports.
    segment: Segment,
    /// The shard serving its rings.
    shard: usize,
    /// Set by its shard while frames wait in its deferral: other shards then stop
    /// forwarding to it and defer on their side ([`links`]).
    congested: Arc<AtomicBool>,
}

impl Registry {
    /// Forgets cached discovery answers: call in the same critical section as any change
    /// to the agents, their capabilities or their liveness.
    fn invalidate(&mut self) {
        self.discovery.clear();
    }

    /// Live agents offering `capability` at a version satisfying `requirement`, from the
    /// cache when the same question was answered since the last change. Returns the answer
    /// and whether it came from the cache.
    fn discover(
        &mut self,
        capability: &str,
        requirement: &str,
    ) -> Result<(Vec<AgentInfo>, bool), String> {
        let key = (capability.to_string(), requirement.to_string());
        if let Some(hit) = self.discovery.get(&key) {
            return Ok((hit.clone(), true));
        }
        let req = semver::VersionReq::parse(requirement)
            .map_err(|e| format!("requirement {requirement:?}: {e}"))?;
        let answer = self.matching(capability, &req);
        // Bounded: distinct questions asked between two registry changes.
        if self.discovery.len() >= DISCOVERY_CACHE_ENTRIES_MAX {
            self.discovery.clear();
        }
        self.discovery.insert(key, answer.clone());
        Ok((answer, false))
    }

    fn topic_id(&mut self, topic: &str) -> u32 {
        let next = self.topics.len() as u32 + 1;
        *self.topics.entry(topic.to_string()).or_insert(next)
    }

    fn matching(&self, capability: &str, requirement: &semver::VersionReq) -> Vec<AgentInfo> {
        let mut out: Vec<AgentInfo> = self
            .agents
            .iter()
            .filter(|(_, rec)| !rec.stale)
            .filter_map(|(&id, rec)| {
                rec.capabilities
                    .iter()
                    .find(|(name, version)| name == capability && requirement.matches(version))
                    .map(|(_, version)| AgentInfo {
                        agent_id: id,
                        name: rec.name.clone(),
                        version: version.to_string(),
                    })
            })
            .collect();
        out.sort_by_key(|a| a.agent_id);
        out
    }

    /// Every feature id some registered agent serves, in order.
    fn features(&self) -> std::collections::BTreeSet<u32> {
        self.agents
            .values()
            .flat_map(|rec| rec.features.iter().copied())
            .collect()
    }

    /// Live agents serving `feature`, by id.
    fn serving(&self, feature: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .agents
            .iter()
            .filter(|(_, rec)| !rec.stale && rec.features.contains(&feature))
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        out
    }
}

/// What the routing thread needs to know, rebuilt when the registry generation changes.
#[derive(Debug, Default)]
struct RoutingTable {
    subscribers: HashMap<u32, Vec<u32>>,
    capability_routes: Vec<Vec<u32>>,
    round_robin: Vec<usize>,
    /// Feature id → live agents serving it, and its round-robin cursor.
    features: rustc_hash::FxHashMap<u32, (Vec<u32>, usize)>,
}

enum RouterCmd {
    Add(Box<NewAgent>),
    Remove { agent_id: u32 },
}

/// The sending end of a routing core's command queue: a bounded channel plus a count of the
/// commands posted, so the core pays one plain load per duty cycle and touches the channel
/// (whose `try_recv` issues a full fence) only when something was posted.
#[derive(Clone)]
struct CommandSender {
    tx: SyncSender<RouterCmd>,
    posted: Arc<AtomicU64>,
    /// The core's wake: a parked core takes the command now, not a park timeout later.
    wake: Arc<ShardWake>,
}

impl CommandSender {
    fn send(&self, cmd: RouterCmd) -> Result<(), std::sync::mpsc::SendError<RouterCmd>> {
        self.tx.send(cmd)?;
        self.posted.fetch_add(1, Ordering::Release);
        self.wake.notify();
        Ok(())
    }
}

/// The routing core's end of its command queue (see [`CommandSender`]).
struct CommandReceiver {
    rx: Receiver<RouterCmd>,
    posted: Arc<AtomicU64>,
    /// `posted` when the queue was last emptied.
    seen: u64,
}

impl CommandReceiver {
    /// Whether a command was posted since the queue was last found empty.
    fn pending(&self) -> bool {
        self.posted.load(Ordering::Acquire) != self.seen
    }

    /// The next command, if one was posted since the queue was last found empty.
    fn try_recv(&mut self) -> Option<RouterCmd> {
        let posted = self.posted.load(Ordering::Acquire);
        if posted == self.seen {
            return None;
        }
        match self.rx.try_recv() {
            Ok(cmd) => Some(cmd),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                // Everything counted so far is taken (a command is counted after it is
                // queued, so one queued but not yet counted may have been taken early).
                self.seen = posted;
                None
            }
        }
    }
}

/// A bounded command queue for one routing core, whose posts ring `wake`.
fn command_queue(bound: usize, wake: Arc<ShardWake>) -> (CommandSender, CommandReceiver) {
    let (tx, rx) = sync_channel::<RouterCmd>(bound);
    let posted = Arc::new(AtomicU64::new(0));
    (
        CommandSender {
            tx,
            posted: posted.clone(),
            wake,
        },
        CommandReceiver {
            rx,
            posted,
            seen: 0,
        },
    )
}

struct NewAgent {
    agent_id: u32,
    congested: Arc<AtomicBool>,
    /// One consumer per tx lane (priority class).
    tx: Vec<Consumer>,
    rx: Producer,
    segment: Segment,
    /// Made on the accept thread so the routing core never maps memory.
    deferral: Option<Deferral>,
}

/// Adds what the embedding daemon knows to a status report (see
/// [`RouterControl::set_status_hook`]).
pub type StatusHook = Box<dyn Fn(&mut StatusReport) + Send + Sync>;

struct Shared {
    /// A new allow-list for the accept thread (SIGHUP reload).
    reloaded_allow: Mutex<Option<AllowList>>,
    /// The deferral deadline in ns (`u64::MAX`: none); re-read by the core when the
    /// registry generation changes.
    defer_deadline_ns: AtomicU64,
    /// Facts the embedding daemon adds to status reports (metrics address, DLQ path...).
    info: Mutex<Vec<(String, String)>>,
    /// Fills the parts of a status report the embedding daemon owns (partitions, moves).
    status_hook: Mutex<Option<StatusHook>>,
    started: std::time::Instant,
    registry: Mutex<Registry>,
    generation: AtomicU64,
    /// One set per shard (the accept thread's counters live in shard 0's).
    stats: Box<[RouterStats]>,
    /// Per shard: its last duty cycle moved nothing and its links were empty (the shutdown
    /// drain ends when every shard is quiet).
    quiet: Box<[AtomicBool]>,
    /// Shards that finished draining (after which no shard writes to a link).
    finished: std::sync::atomic::AtomicUsize,
    shutdown: AtomicBool,
    /// Per shard: how other threads wake its core when it is parked ([`wake`]).
    wakes: Box<[Arc<ShardWake>]>,
}

/// A running router's control side: the accept thread (which spawns one control thread per
/// agent), the registry and the counters. Dropping it shuts the router down and joins the
/// accept thread; the data side is the [`RoutingCore`] returned with it.
pub struct RouterControl {
    socket: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RouterControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterControl")
            .field("socket", &self.socket)
            .finish()
    }
}

impl RouterControl {
    /// Binds the socket (refusing one another router serves), starts the accept thread and
    /// returns the routing core for the caller to drive.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// let p = std::env::temp_dir().join(format!("aw-doc-rc-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.agent_count(), 0);
    /// ```
    pub fn start(config: RouterConfig) -> Result<(Self, RoutingCore), ControlError> {
        let (control, mut cores) = Self::start_sharded(RouterConfig {
            shards: 1,
            ..config
        })?;
        let core = cores.pop().expect("one shard");
        Ok((control, core))
    }

    /// [`RouterControl::start`] with `config.shards` routing cores, one per shard, for the
    /// caller to run on a core each. Shards reach each other's agents through [`links`].
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// let p = std::env::temp_dir().join(format!("aw-doc-rcs-{}.sock", std::process::id()));
    /// let (_control, cores) = RouterControl::start_sharded(RouterConfig { shards: 2, ..RouterConfig::new(p) }).unwrap();
    /// assert_eq!(cores.len(), 2);
    /// ```
    pub fn start_sharded(config: RouterConfig) -> Result<(Self, Vec<RoutingCore>), ControlError> {
        let shards = config.shards.clamp(1, ROUTER_SHARDS_MAX);
        let listener = ControlListener::bind(&config.socket, config.allow.clone())?
            .with_versions(config.versions.0, config.versions.1);
        let shared = Arc::new(Shared {
            reloaded_allow: Mutex::new(None),
            defer_deadline_ns: AtomicU64::new(deadline_ns(config.defer_deadline)),
            info: Mutex::new(Vec::new()),
            status_hook: Mutex::new(None),
            started: std::time::Instant::now(),
            registry: Mutex::new(Registry::default()),
            generation: AtomicU64::new(0),
            stats: (0..shards).map(|_| RouterStats::default()).collect(),
            quiet: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            finished: std::sync::atomic::AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            wakes: (0..shards)
                .map(|_| ShardWake::new().map(Arc::new))
                .collect::<Result<_, _>>()
                .map_err(ControlError::Io)?,
        });
        let plan = LinkPlan::new(&config, shards);
        // links_out[i][j]: shard i's sender to shard j; links_in[j]: (i, receiver).
        let mut links_out: Vec<Vec<Option<LinkSender>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        let mut links_in: Vec<Vec<LinkReceiver>> = (0..shards).map(|_| Vec::new()).collect();
        for (i, outs) in links_out.iter_mut().enumerate() {
            for (j, out) in outs.iter_mut().enumerate() {
                if i != j {
                    let (tx, rx) = links::link(plan.capacity_bytes, plan.budget_bytes)
                        .map_err(|e| ControlError::Io(std::io::Error::other(e.to_string())))?;
                    *out = Some(tx.waking(shared.wakes[j].clone()));
                    links_in[j].push(rx);
                }
            }
        }
        let mut cmd_txs = Vec::with_capacity(shards);
        let mut cores = Vec::with_capacity(shards);
        for (shard, (outs, ins)) in links_out.into_iter().zip(links_in).enumerate() {
            let (cmd_tx, cmd_rx) =
                command_queue(ROUTER_AGENTS_MAX * 2, shared.wakes[shard].clone());
            cmd_txs.push(cmd_tx);
            let mut core = RoutingCore::new(shared.clone(), cmd_rx, shard);
            core.producers.links = outs;
            core.links_in = ins;
            core.deferrals.capacity_bytes = config.defer_capacity_bytes;
            core.deferrals.reserve_bytes = plan.reserve_bytes;
            core.batch_frames = config.batch_frames.clamp(1, ROUTER_BATCH_FRAMES_LIMIT);
            core.lane_budget = lane_batch_frames(core.batch_frames);
            cores.push(core);
        }
        let accept = {
            let shared = shared.clone();
            let config = RouterConfig {
                shards,
                ..config.clone()
            };
            std::thread::Builder::new()
                .name("aw-accept".into())
                .spawn(move || accept_loop(listener, shared, cmd_txs, config))
                .map_err(ControlError::Io)?
        };
        Ok((
            Self {
                socket: config.socket,
                shared,
                accept: Some(accept),
            },
            cores,
        ))
    }

    /// The socket agents connect to.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcsp-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p.clone())).unwrap();
    /// assert_eq!(control.socket_path(), p.as_path());
    /// ```
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// A view of counters and status for other threads.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcob-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let observer = control.observer();
    /// assert_eq!(observer.status().pid, std::process::id());
    /// ```
    pub fn observer(&self) -> RouterObserver {
        RouterObserver {
            shared: self.shared.clone(),
        }
    }

    /// Applies a reloaded configuration (SIGHUP) without dropping clients: the allow-list
    /// for connections accepted from now on, and the deferral deadline for frames deferred
    /// from now on.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # use agentwire_shm::server::AllowList;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rl-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.reload(AllowList::current_user(), Some(std::time::Duration::from_millis(500)));
    /// ```
    pub fn reload(&self, allow: AllowList, defer_deadline: Option<Duration>) {
        *self.shared.reloaded_allow.lock().expect("allow lock") = Some(allow);
        self.shared
            .defer_deadline_ns
            .store(deadline_ns(defer_deadline), Ordering::Relaxed);
        bump(&self.shared);
    }

    /// Adds (or replaces) a fact shown in status reports, e.g. the metrics address.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcin-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.set_info("dlq", "/var/lib/agentwire/dlq.log");
    /// assert_eq!(control.observer().status().info, vec![("dlq".to_string(), "/var/lib/agentwire/dlq.log".to_string())]);
    /// ```
    pub fn set_info(&self, key: &str, value: impl Into<String>) {
        let mut info = self.shared.info.lock().expect("info lock");
        let value = value.into();
        match info.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => info.push((key.to_string(), value)),
        }
    }

    /// Sets the function that adds the daemon's own parts (partitions, core moves) to every
    /// status report. It runs on the control thread answering the query, with no router
    /// lock held.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rchook-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.set_status_hook(Box::new(|report| report.core_moves.clear()));
    /// assert!(control.observer().status().core_moves.is_empty());
    /// ```
    pub fn set_status_hook(&self, hook: StatusHook) {
        *self.shared.status_hook.lock().expect("status hook lock") = Some(hook);
    }

    /// The router's counters.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcst-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.stats().frames_delivered.load(std::sync::atomic::Ordering::Relaxed), 0);
    /// ```
    pub fn stats(&self) -> &RouterStats {
        &self.shared.stats[0]
    }

    /// One shard's counters (`None` past the last shard).
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcss-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.shard_stats(0).is_some() && control.shard_stats(1).is_none());
    /// ```
    pub fn shard_stats(&self, shard: usize) -> Option<&RouterStats> {
        self.shared.stats.get(shard)
    }

    /// Live agents.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcac-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.agent_count(), 0);
    /// ```
    pub fn agent_count(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .agents
            .len()
    }

    /// Asks every thread and the routing core to stop: the core marks every segment closed,
    /// control connections close, the socket is removed.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcsd-{}.sock", std::process::id()));
    /// let (control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.shutdown();
    /// assert!(core.should_stop());
    /// ```
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        // Parked cores look at the flag now, not a park timeout later.
        for wake in self.shared.wakes.iter() {
            wake.notify();
        }
    }
}

impl Drop for RouterControl {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Sizes of the links between shards. A link's ring holds the largest frame a segment ring
/// can carry; its in-flight budget is small enough that every destination's deferral can
/// keep room for what all other shards may have in flight to it, plus one record's wrap.
struct LinkPlan {
    capacity_bytes: usize,
    budget_bytes: usize,
    /// Deferral bytes a shard's own senders leave free for link arrivals.
    reserve_bytes: usize,
}

impl LinkPlan {
    fn new(config: &RouterConfig, shards: usize) -> Self {
        if shards < 2 {
            return Self {
                capacity_bytes: 0,
                budget_bytes: 0,
                reserve_bytes: 0,
            };
        }
        let others = shards - 1;
        let defer = config.defer_capacity_bytes;
        let budget_bytes = if defer == 0 {
            LINK_BUDGET_BYTES_MAX
        } else {
            (defer / (4 * others)).clamp(256, LINK_BUDGET_BYTES_MAX)
        };
        Self {
            capacity_bytes: (config.ring_capacity_bytes * 2).clamp(
                crate::ring::RING_CAPACITY_MIN_BYTES,
                crate::ring::RING_CAPACITY_MAX_BYTES,
            ),
            budget_bytes,
            // In flight from every other shard, plus the largest deferrable record (a
            // quarter of the deferral) lost to a wrap.
            reserve_bytes: others * budget_bytes + defer / 4,
        }
    }
}

fn deadline_ns(deadline: Option<Duration>) -> u64 {
    deadline.map_or(u64::MAX, |d| {
        d.as_nanos().min(u128::from(u64::MAX / 2)) as u64
    })
}

fn accept_loop(
    mut listener: ControlListener,
    shared: Arc<Shared>,
    shard_cmds: Vec<CommandSender>,
    config: RouterConfig,
) {
    let mut next_agent_id = 1u32;
    let mut control_threads: Vec<JoinHandle<()>> = Vec::new();
    let mut progress: HashMap<u32, liveness::Progress> = HashMap::new();
    let mut liveness_due = Instant::now() + liveness::LIVENESS_CHECK_INTERVAL;
    while !shared.shutdown.load(Ordering::Acquire) {
        if let Some(timeout) = config.liveness_timeout {
            if Instant::now() >= liveness_due {
                liveness_due = Instant::now() + liveness::LIVENESS_CHECK_INTERVAL;
                check_liveness(&shared, &mut progress, timeout);
            }
        }
        if let Some(allow) = shared.reloaded_allow.lock().expect("allow lock").take() {
            tracing::info!(uids = ?allow.uids, gids = ?allow.gids, "allow-list reloaded");
            listener.set_allow_list(allow);
        }
        let pending = match listener.accept(Some(Duration::from_millis(20))) {
            Ok(Some(Accepted::Agent(p))) => p,
            Ok(Some(Accepted::Status(request))) => {
                request.answer(status_report(&shared));
                continue;
            }
            Ok(None) => continue,
            Err(HandshakeError::Control(e)) => {
                tracing::debug!("handshake failed: {e}");
                continue;
            }
            Err(e) => {
                count(&shared.stats[0].handshakes_refused, 1);
                tracing::info!("refused: {e}");
                continue;
            }
        };
        control_threads.retain(|t| !t.is_finished());
        if control_threads.len() >= config.agents_max.min(ROUTER_AGENTS_MAX) {
            pending.refuse(
                crate::control::RefuseReason::Full,
                format!("{} agents max", config.agents_max),
            );
            continue;
        }
        let agent_id = next_agent_id;
        next_agent_id += 1;
        let peer_pid = pending.peer().pid;
        let shard = {
            let reg = shared.registry.lock().expect("registry lock");
            let mut load = vec![0usize; shard_cmds.len()];
            for rec in reg.agents.values() {
                load[rec.shard] += 1;
            }
            let agent_node = if shard_cmds.len() > 1 {
                placement::process_numa_node(peer_pid)
            } else {
                None
            };
            placement::choose_shard(&load, &config.shard_numa_nodes, agent_node)
        };
        let cmds = &shard_cmds[shard];
        let congested = Arc::new(AtomicBool::new(false));
        let admitted = (|| -> Result<ControlConn, Box<dyn std::error::Error>> {
            let segment = Segment::create(
                &SegmentConfig::new(agent_id)
                    .with_capacity(config.ring_capacity_bytes, config.ring_capacity_bytes)
                    .huge_pages(HugePages::Auto),
            )?;
            let tx_bell = Doorbell::new()?;
            let rx_bell = Doorbell::new()?;
            let registration = pending.registration().clone();
            let topic_ids = {
                let mut reg = shared.registry.lock().expect("registry lock");
                let topic_ids: Vec<u32> = registration
                    .topics
                    .iter()
                    .map(|t| reg.topic_id(t))
                    .collect();
                let capabilities = registration
                    .capabilities
                    .iter()
                    .filter_map(|c| {
                        Some((c.name.clone(), semver::Version::parse(&c.version).ok()?))
                    })
                    .collect();
                reg.agents.insert(
                    agent_id,
                    AgentRecord {
                        name: registration.name.clone(),
                        pid: peer_pid,
                        capabilities,
                        topics: topic_ids.clone(),
                        features: registration.features.clone(),
                        stale: false,
                        segment: segment.clone(),
                        shard,
                        congested: congested.clone(),
                    },
                );
                reg.invalidate();
                topic_ids
            };
            let cmd = RouterCmd::Add(Box::new(NewAgent {
                agent_id,
                congested: congested.clone(),
                tx: (0..TX_LANES)
                    .map(|lane| {
                        Ok(Consumer::new(
                            segment.tx_lane_memory(lane),
                            Some(tx_bell.try_clone()?),
                        ))
                    })
                    .collect::<Result<Vec<_>, std::io::Error>>()?,
                // Agents park often on their rx ring: fenced, so they never interrupt this
                // router's core with a membarrier when they sleep.
                rx: Producer::new_fenced(segment.rx_memory(), Some(rx_bell.try_clone()?)),
                segment: segment.clone(),
                deferral: match config.defer_capacity_bytes {
                    0 => None,
                    bytes => Some(Deferral::new(bytes)?),
                },
            }));
            // Queue the agent for the router before it learns its id, so any frame naming
            // this id is written after the router could know it.
            cmds.send(cmd).map_err(|_| "router stopped")?;
            bump(&shared);
            match pending.admit(agent_id, topic_ids, &segment, &tx_bell, &rx_bell) {
                Ok(conn) => Ok(conn),
                Err(e) => {
                    let _ = cmds.send(RouterCmd::Remove { agent_id });
                    Err(e.into())
                }
            }
        })();
        match admitted {
            Ok(conn) => {
                count(&shared.stats[0].agents_admitted, 1);
                tracing::debug!(agent_id, shard, "agent admitted");
                let shared = shared.clone();
                let cmds = cmds.clone();
                let pidfd = liveness::open_pidfd(peer_pid);
                let spawned = std::thread::Builder::new()
                    .name(format!("aw-ctl-{agent_id}"))
                    .spawn(move || control_loop(agent_id, conn, pidfd, shared, cmds));
                if let Ok(handle) = spawned {
                    control_threads.push(handle);
                }
            }
            Err(e) => {
                forget_agent(&shared, agent_id);
                tracing::warn!(agent_id, "admitting agent failed: {e}");
            }
        }
    }
    for t in control_threads {
        let _ = t.join();
    }
}

/// Every shard's counters added up (gauges too: their sum is the router's).
fn summed_counters(shared: &Shared) -> Vec<(String, u64)> {
    let mut sum = shared.stats[0].snapshot();
    for stats in &shared.stats[1..] {
        for ((_, total), (_, v)) in sum.iter_mut().zip(stats.snapshot()) {
            *total += v;
        }
    }
    sum
}

/// The router's counters and live agents, for `agentwire status`.
fn status_report(shared: &Shared) -> StatusReport {
    let counters = summed_counters(shared);
    let reg = shared.registry.lock().expect("registry lock");
    let mut agents: Vec<AgentStatus> = reg
        .agents
        .iter()
        .map(|(&agent_id, rec)| AgentStatus {
            agent_id,
            name: rec.name.clone(),
            pid: rec.pid,
            capabilities: rec
                .capabilities
                .iter()
                .map(|(n, v)| format!("{n}@{v}"))
                .collect(),
            topics: rec.topics.clone(),
            features: rec.features.clone(),
            live: !rec.stale,
            shard: rec.shard as u32,
            tx_occupied_bytes: (0..TX_LANES)
                .map(|lane| rec.segment.tx_lane_memory(lane).occupied_bytes() as u64)
                .sum(),
            rx_occupied_bytes: rec.segment.rx_memory().occupied_bytes() as u64,
            ring_capacity_bytes: rec.segment.rx_memory().capacity_bytes() as u64,
        })
        .collect();
    agents.sort_by_key(|a| a.agent_id);
    let mut routes: Vec<RouteStatus> = reg
        .topics
        .iter()
        .map(|(name, &topic_id)| {
            let mut subscribers: Vec<u32> = reg
                .agents
                .iter()
                .filter(|(_, rec)| rec.topics.contains(&topic_id))
                .map(|(&id, _)| id)
                .collect();
            subscribers.sort_unstable();
            RouteStatus {
                kind: "topic".into(),
                route_id: topic_id,
                name: name.clone(),
                requirement: String::new(),
                agents: subscribers,
            }
        })
        .collect();
    routes.sort_by_key(|r| r.route_id);
    routes.extend(
        reg.capability_routes
            .iter()
            .enumerate()
            .map(|(route_id, (capability, req))| RouteStatus {
                kind: "capability".into(),
                route_id: route_id as u32,
                name: capability.clone(),
                requirement: req.to_string(),
                agents: reg
                    .matching(capability, req)
                    .into_iter()
                    .map(|a| a.agent_id)
                    .collect(),
            }),
    );
    routes.extend(reg.features().into_iter().map(|feature| RouteStatus {
        kind: "feature".into(),
        route_id: feature,
        name: format!("feature {feature}"),
        requirement: String::new(),
        agents: reg.serving(feature),
    }));
    let mut report = StatusReport {
        daemon: format!("agentwire {}", env!("CARGO_PKG_VERSION")),
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs(),
        counters,
        agents,
        routes,
        info: shared.info.lock().expect("info lock").clone(),
        shards: shared
            .stats
            .iter()
            .enumerate()
            .map(|(shard, stats)| crate::control::ShardStatus {
                shard: shard as u32,
                agents: reg.agents.values().filter(|r| r.shard == shard).count() as u32,
                counters: stats.snapshot(),
            })
            .collect(),
        partitions: Vec::new(),
        core_moves: Vec::new(),
    };
    drop(reg);
    if let Some(hook) = shared
        .status_hook
        .lock()
        .expect("status hook lock")
        .as_ref()
    {
        hook(&mut report);
    }
    report
}

/// A read-only view of a running router for other threads (the metrics endpoint): counters
/// and the same report `agentwire status` gets.
#[derive(Clone)]
pub struct RouterObserver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RouterObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterObserver").finish_non_exhaustive()
    }
}

impl RouterObserver {
    /// The router's counters by name.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obs-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.observer().counters().iter().any(|(n, _)| n == "frames_in"));
    /// ```
    pub fn counters(&self) -> Vec<(String, u64)> {
        summed_counters(&self.shared)
    }

    /// The full status report (counters, agents with ring occupancy, routes, info).
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obs2-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.observer().status().agents.is_empty());
    /// ```
    pub fn status(&self) -> StatusReport {
        status_report(&self.shared)
    }
}

fn bump(shared: &Shared) {
    let mut reg = shared.registry.lock().expect("registry lock");
    reg.generation += 1;
    shared.generation.store(reg.generation, Ordering::Release);
}

/// Marks agents stale (or live again) from their progress; see [`liveness`].
fn check_liveness(
    shared: &Shared,
    progress: &mut HashMap<u32, liveness::Progress>,
    timeout: Duration,
) {
    let now = Instant::now();
    let mut changed = false;
    let mut stale_now = 0u64;
    {
        let mut reg = shared.registry.lock().expect("registry lock");
        progress.retain(|id, _| reg.agents.contains_key(id));
        for (&agent_id, rec) in reg.agents.iter_mut() {
            let signature = liveness::signature(&rec.segment);
            let stale = progress
                .entry(agent_id)
                .or_insert_with(|| liveness::Progress::new(signature, now))
                .observe(signature, now, timeout);
            if stale != rec.stale {
                rec.stale = stale;
                changed = true;
                if stale {
                    tracing::warn!(agent_id, name = %rec.name, "agent stale: nothing it owns moved for {timeout:?}; anycast, feature routes and discovery skip it");
                } else {
                    tracing::info!(agent_id, name = %rec.name, "agent live again");
                }
            }
            stale_now += u64::from(stale);
        }
        if changed {
            reg.invalidate();
        }
    }
    // Sole writer: the accept thread.
    shared.stats[0]
        .agents_stale
        .store(stale_now, Ordering::Relaxed);
    if changed {
        bump(shared);
    }
}

fn control_loop(
    agent_id: u32,
    conn: ControlConn,
    pidfd: Option<rustix::fd::OwnedFd>,
    shared: Arc<Shared>,
    cmds: CommandSender,
) {
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        let msg = match conn.recv::<ClientMsg>(Some(Duration::from_millis(20))) {
            Ok((msg, _)) => msg,
            Err(ControlError::Timeout(_)) => {
                // The socket can outlive the agent (a child inherited it): the pidfd says
                // when the process itself is gone.
                if pidfd.as_ref().is_some_and(liveness::exited) {
                    tracing::info!(agent_id, "agent process exited with its control socket still open elsewhere; removing it");
                    shared.stats[0]
                        .agents_exited
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
                continue;
            }
            Err(ControlError::Malformed(detail)) => {
                let _ = conn.send(&ServerMsg::Error { detail }, &[]);
                continue;
            }
            Err(_) => break,
        };
        let reply = {
            let mut reg = shared.registry.lock().expect("registry lock");
            match msg {
                ClientMsg::Goodbye => break,
                ClientMsg::Subscribe { topic } => {
                    let topic_id = reg.topic_id(&topic);
                    if let Some(rec) = reg.agents.get_mut(&agent_id) {
                        if !rec.topics.contains(&topic_id) {
                            rec.topics.push(topic_id);
                        }
                    }
                    ServerMsg::TopicId { topic_id }
                }
                ClientMsg::Unsubscribe { topic } => {
                    let topic_id = reg.topic_id(&topic);
                    if let Some(rec) = reg.agents.get_mut(&agent_id) {
                        rec.topics.retain(|&t| t != topic_id);
                    }
                    ServerMsg::Done
                }
                ClientMsg::ResolveTopic { topic } => ServerMsg::TopicId {
                    topic_id: reg.topic_id(&topic),
                },
                ClientMsg::ResolveCapability {
                    capability,
                    requirement,
                } => match semver::VersionReq::parse(&requirement) {
                    Ok(req) => {
                        let existing = reg
                            .capability_routes
                            .iter()
                            .position(|(c, r)| *c == capability && *r == req);
                        let route_id = existing.unwrap_or_else(|| {
                            reg.capability_routes.push((capability, req));
                            reg.capability_routes.len() - 1
                        });
                        ServerMsg::CapabilityRoute {
                            route_id: route_id as u32,
                        }
                    }
                    Err(e) => ServerMsg::Error {
                        detail: format!("requirement {requirement:?}: {e}"),
                    },
                },
                ClientMsg::Discover {
                    capability,
                    requirement,
                } => match reg.discover(&capability, &requirement) {
                    Ok((agents, cached)) => {
                        // Many control threads: a locked add (control path, not data path).
                        let counter = if cached {
                            &shared.stats[0].discovery_cache_hits
                        } else {
                            &shared.stats[0].discovery_cache_misses
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        ServerMsg::Agents { agents }
                    }
                    Err(detail) => ServerMsg::Error { detail },
                },
                ClientMsg::Hello { .. } | ClientMsg::Register(_) | ClientMsg::Status => {
                    ServerMsg::Error {
                        detail: "already registered".into(),
                    }
                }
            }
        };
        bump(&shared);
        if conn.send(&reply, &[]).is_err() {
            break;
        }
    }
    forget_agent(&shared, agent_id);
    let _ = cmds.send(RouterCmd::Remove { agent_id });
}

/// Removes an agent from the registry and tells the routing thread its tables changed.
fn forget_agent(shared: &Shared, agent_id: u32) {
    {
        let mut reg = shared.registry.lock().expect("registry lock");
        reg.agents.remove(&agent_id);
        reg.invalidate();
    }
    bump(shared);
}

struct DataAgent {
    agent_id: u32,
    /// Tx lanes, index = priority class.
    tx: Vec<Consumer>,
    segment: Segment,
    /// The agent left: nothing more is delivered to it, but frames it committed before
    /// leaving are still routed (they were accepted) before its segment is reclaimed.
    leaving: bool,
}

/// Rebuilds the routing tables from the registry and the rings this shard holds, and tells
/// `producers` where every other shard's agents are.
fn rebuild_table(shared: &Shared, producers: &mut Outboxes, shard: usize) -> RoutingTable {
    let reg = shared.registry.lock().expect("registry lock");
    producers.remote.clear();
    for (&id, rec) in &reg.agents {
        if rec.shard != shard {
            producers.remote.insert(
                id,
                RemoteDest {
                    shard: rec.shard,
                    congested: rec.congested.clone(),
                    rx: rec.segment.rx_memory(),
                },
            );
        }
    }
    let mut table = RoutingTable::default();
    for (&id, rec) in &reg.agents {
        if !producers.contains(id) {
            continue;
        }
        for &topic in &rec.topics {
            table.subscribers.entry(topic).or_default().push(id);
        }
    }
    for subs in table.subscribers.values_mut() {
        subs.sort_unstable();
    }
    for (capability, req) in &reg.capability_routes {
        let ids = reg
            .matching(capability, req)
            .into_iter()
            .map(|a| a.agent_id)
            .filter(|&id| producers.contains(id))
            .collect();
        table.capability_routes.push(ids);
    }
    table.round_robin = vec![0; table.capability_routes.len()];
    for feature in reg.features() {
        let ids: Vec<u32> = reg
            .serving(feature)
            .into_iter()
            .filter(|&id| producers.contains(id))
            .collect();
        if !ids.is_empty() {
            table.features.insert(feature, (ids, 0));
        }
    }
    table
}

/// The data side of a router: every agent's tx consumer and rx producer, the routing tables,
/// and one duty cycle ([`RoutingCore::do_work`]). It lives on one thread or executor.
pub struct RoutingCore {
    shared: Arc<Shared>,
    /// This core's shard index.
    shard: usize,
    /// Links from every other shard.
    links_in: Vec<LinkReceiver>,
    cmds: CommandReceiver,
    agents: Vec<DataAgent>,
    producers: Outboxes,
    deferrals: Deferrals,
    table: RoutingTable,
    seen_generation: u64,
    needs_refresh: bool,
    passes: u64,
    dead_letters: Option<Box<dyn DeadLetterSink>>,
    dead_letters_unflushed: bool,
    defer_deadline_ns: Option<u64>,
    /// Lane scheduler state: smooth weighted round robin counters, and which classes had
    /// frames left over (blocked or out of budget) in the last duty cycle.
    lane_current: [i64; TX_LANES],
    lane_backlog: [bool; TX_LANES],
    /// Frames per read ([`RouterConfig::batch_frames`]).
    batch_frames: usize,
    /// Frames per class per agent per duty cycle ([`lane_batch_frames`]).
    lane_budget: [usize; TX_LANES],
}

impl std::fmt::Debug for RoutingCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingCore")
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl RoutingCore {
    fn new(shared: Arc<Shared>, cmds: CommandReceiver, shard: usize) -> Self {
        Self {
            shared,
            shard,
            links_in: Vec::new(),
            cmds,
            agents: Vec::new(),
            producers: Outboxes::default(),
            deferrals: Deferrals::default(),
            table: RoutingTable::default(),
            seen_generation: u64::MAX,
            needs_refresh: false,
            passes: 0,
            dead_letters: None,
            dead_letters_unflushed: false,
            defer_deadline_ns: None,
            lane_current: [0; TX_LANES],
            lane_backlog: [false; TX_LANES],
            batch_frames: ROUTER_BATCH_FRAMES_DEFAULT,
            lane_budget: LANE_BATCH_FRAMES,
        }
    }

    /// Gives the core a dead-letter sink: deferred frames past the configured deadline (and
    /// frames still deferred at shutdown) go there and their senders are nacked with
    /// `DestinationFull`. Without a sink deferred frames wait for as long as it takes.
    ///
    /// ```
    /// # use agentwire_shm::routing::{DeadLetterSink, RouterConfig, RouterControl};
    /// # use agentwire_shm::control::NackReason;
    /// struct Drop_;
    /// impl DeadLetterSink for Drop_ {
    ///     fn accept(&mut self, _: NackReason, _: &[u8]) -> Result<u64, String> { Ok(0) }
    /// }
    /// # let p = std::env::temp_dir().join(format!("aw-doc-sdl-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.set_dead_letters(Box::new(Drop_));
    /// ```
    pub fn set_dead_letters(&mut self, sink: Box<dyn DeadLetterSink>) {
        self.dead_letters = Some(sink);
    }

    /// Whether the control side asked the router to stop.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ss-{}.sock", std::process::id()));
    /// let (_control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(!core.should_stop());
    /// ```
    pub fn should_stop(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Agents whose rings this core serves (including departing ones still being drained).
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ac-{}.sock", std::process::id()));
    /// let (_control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.agents_served(), 0);
    /// ```
    pub fn agents_served(&self) -> usize {
        self.agents.len()
    }

    /// Applies queued registrations and departures; true if there were any. The routing
    /// table is built from the registry *and* the set of rings this core holds, so a change
    /// here must rebuild it even when the registry generation was already seen (an agent's
    /// registry entry can be seen before its Add command arrives).
    fn take_commands(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.cmds.try_recv() {
                Some(RouterCmd::Add(new)) => {
                    let NewAgent {
                        agent_id,
                        congested,
                        tx,
                        rx,
                        segment,
                        deferral,
                    } = *new;
                    self.producers.insert(agent_id, rx);
                    if let Some(deferral) = deferral {
                        self.deferrals.by_destination.insert(agent_id, deferral);
                    }
                    self.deferrals.congested.insert(agent_id, congested);
                    self.agents.push(DataAgent {
                        agent_id,
                        tx,
                        segment,
                        leaving: false,
                    });
                }
                Some(RouterCmd::Remove { agent_id }) => {
                    self.producers.remove(agent_id);
                    self.deferrals.congested.remove(&agent_id);
                    // Frames still waiting for it are given up on at the next service.
                    if self
                        .deferrals
                        .by_destination
                        .get(&agent_id)
                        .is_some_and(Deferral::is_empty)
                    {
                        self.deferrals.by_destination.remove(&agent_id);
                    }
                    if let Some(agent) = self.agents.iter_mut().find(|a| a.agent_id == agent_id) {
                        agent.leaving = true;
                        agent
                            .segment
                            .control()
                            .state
                            .0
                            .store(state::CLOSED, Ordering::Release);
                    }
                }
                None => return changed,
            }
            changed = true;
        }
    }

    /// One duty cycle: take in registrations and departures, refresh tables if the registry
    /// changed, route up to [`RouterConfig::batch_frames`] frames from every agent, reclaim
    /// drained departed agents. Returns the frames handled (at least 1 while a frame waits
    /// for a table refresh, so the caller does not idle).
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-dw-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.do_work(), 0);
    /// ```
    pub fn do_work(&mut self) -> usize {
        let commands_taken = self.take_commands();
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.seen_generation || commands_taken {
            self.seen_generation = generation;
            self.table = rebuild_table(&self.shared, &mut self.producers, self.shard);
            self.defer_deadline_ns = match self.shared.defer_deadline_ns.load(Ordering::Relaxed) {
                u64::MAX => None,
                ns => Some(ns),
            };
        }
        // A frame naming an unknown destination may have been written right after its
        // destination registered, before this core took the registration in. Such a frame
        // waits for one pass that re-reads commands and tables, and is nacked only if the
        // destination is still unknown then.
        let fresh = self.needs_refresh;
        self.needs_refresh = false;
        self.passes += 1;
        let beat = self.passes % HEARTBEAT_PASSES == 0;
        // Frames already waiting go first: they are older than anything in the tx rings.
        let mut work = self.service_deferrals(false);
        if !self.links_in.is_empty() {
            work += self.drain_links(fresh);
        }
        let deadline_after_ns = self
            .defer_deadline_ns
            .filter(|_| self.dead_letters.is_some());
        let mut corrupt = Vec::new();
        let stats = &self.shared.stats[self.shard];
        if beat {
            for agent in &self.agents {
                // Sole writer: a plain store, not a locked add, and only every
                // HEARTBEAT_PASSES passes (a locked add per agent per pass was on the
                // latency path of every hop).
                let heartbeat = &agent.segment.control().daemon_heartbeat.0;
                heartbeat.store(heartbeat.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
        }
        // Priority lanes (see LANE_WEIGHTS). The first agent visited rotates each cycle so
        // no agent is always last in its class.
        let agents_len = self.agents.len();
        let first = if agents_len == 0 {
            0
        } else {
            (self.passes as usize) % agents_len
        };
        let order = lane_order(&mut self.lane_current, &self.lane_backlog);
        self.lane_backlog = [false; TX_LANES];
        for class in order {
            let budget_total = self.lane_budget[class];
            let mut index = first;
            for _ in 0..agents_len {
                let agent = &mut self.agents[index];
                index += 1;
                if index == agents_len {
                    index = 0;
                }
                let source = agent.agent_id;
                let control = agent.segment.control();
                let mut left = budget_total;
                while left > 0 {
                    let budget = left.min(self.batch_frames);
                    let mut ctx = RouteContext {
                        producers: &mut self.producers,
                        deferrals: &mut self.deferrals,
                        table: &mut self.table,
                        stats,
                        fresh,
                        needs_refresh: false,
                        generation: &self.shared.generation,
                        table_generation: self.seen_generation,
                        deadline: Deadline::new(deadline_after_ns),
                        bytes_in: 0,
                        stopped: false,
                    };
                    let result = agent.tx[class].read(budget, |frame| {
                        ctx.bytes_in += frame.len() as u64;
                        let flow = route_frame(source, frame, &mut ctx, control);
                        ctx.stopped = flow.is_break();
                        flow
                    });
                    self.needs_refresh |= ctx.needs_refresh;
                    let (bytes_in, stopped) = (ctx.bytes_in, ctx.stopped);
                    self.producers.publish();
                    match result {
                        Ok(n) => {
                            if n > 0 {
                                work += n;
                                count(&stats.frames_in, n as u64);
                                count(&stats.bytes_in, bytes_in);
                                count(&stats.batch_frames[batch_bucket(n)], 1);
                            }
                            left -= n;
                            if stopped || (left == 0 && n == budget) {
                                // Frames left behind: this class contends next cycle.
                                self.lane_backlog[class] = true;
                            }
                            if stopped || n < budget {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(agent_id = source, lane = class, "dropping agent: {e}");
                            count(&stats.rings_corrupt, 1);
                            if !corrupt.contains(&source) {
                                corrupt.push(source);
                            }
                            break;
                        }
                    }
                }
            }
        }
        for id in corrupt {
            self.producers.remove(id);
            self.agents.retain(|a| a.agent_id != id);
        }
        // Reclaim departed agents once their tx ring is drained.
        let before = self.agents.len();
        self.agents
            .retain_mut(|a| !(a.leaving && a.tx.iter_mut().all(Consumer::is_empty)));
        count(&stats.agents_removed, (before - self.agents.len()) as u64);
        let deferred_now = self.deferrals.frames_now as u64;
        if stats.deferred_now.load(Ordering::Relaxed) != deferred_now {
            stats.deferred_now.store(deferred_now, Ordering::Relaxed);
        }
        count(&stats.duty_cycles, 1);
        if work == 0 {
            count(&stats.duty_cycles_idle, 1);
        }
        if beat {
            self.flush_dead_letters();
        }
        work + usize::from(self.needs_refresh)
    }

    /// Delivers what other shards forwarded to this shard's agents: into the agent's ring,
    /// or behind what waits in its deferral (links may use the room the deferral keeps for
    /// them), acking when the sender asked; relays acks and nacks for this shard's agents
    /// (counting nacks in their control blocks). A record for an agent this shard does not
    /// know waits for one table refresh, then its sender is nacked. Returns records taken.
    fn drain_links(&mut self, fresh: bool) -> usize {
        let Self {
            links_in,
            producers,
            deferrals,
            agents,
            shared,
            shard,
            needs_refresh,
            defer_deadline_ns,
            dead_letters,
            lane_budget,
            ..
        } = self;
        let stats = &shared.stats[*shard];
        let mut deadline = Deadline::new(defer_deadline_ns.filter(|_| dead_letters.is_some()));
        let mut taken = 0;
        for link in links_in.iter_mut() {
            taken += link.read(lane_budget[0], |record| {
                let target = record.target;
                let frame = record.frame;
                let len = frame.len();
                let copy = |out: &mut [u8]| out.copy_from_slice(frame);
                if record.flags.is_reply() {
                    let reason = record.flags.reject_reason();
                    if reason != 0 {
                        if let Some(a) = agents.iter().find(|a| a.agent_id == target) {
                            let control = a.segment.control();
                            count(&control.frames_rejected, 1);
                            control.last_reject_reason.store(reason, Ordering::Relaxed);
                        }
                    }
                    if !(producers.is_local(target) && producers.write(target, len, copy)) {
                        count(&stats.replies_dropped, 1);
                    }
                    return ControlFlow::Continue(());
                }
                let source = u32::from_le_bytes(frame[24..28].try_into().expect("header"));
                let correlation = u64::from_le_bytes(frame[16..24].try_into().expect("header"));
                if !producers.is_local(target) {
                    if !fresh {
                        // Maybe registered here a moment ago: re-read commands first.
                        *needs_refresh = true;
                        return ControlFlow::Break(());
                    }
                    let detail = format!("no agent {target}");
                    nack(
                        source,
                        correlation,
                        NackReason::NoSuchAgent,
                        &detail,
                        producers,
                        stats,
                        None,
                    );
                    return ControlFlow::Continue(());
                }
                let waiting = deferrals.is_waiting(target);
                if !waiting && producers.write(target, len, copy) {
                    count(&stats.frames_delivered, 1);
                    count(&stats.bytes_delivered, len as u64);
                    if record.flags.ack_owed() {
                        ack(source, correlation, producers, stats);
                    }
                } else if deferrals.can_take(target, len, true) {
                    let pushed =
                        deferrals.push(target, len, deadline.get(), record.flags.ack_owed(), copy);
                    debug_assert!(pushed, "room checked");
                    count(&stats.frames_deferred, 1);
                } else {
                    // Only a frame too large to defer, for a full ring: it waits here.
                    return ControlFlow::Break(());
                }
                count(&stats.frames_from_links, 1);
                ControlFlow::Continue(())
            });
        }
        producers.publish();
        taken
    }

    /// Moves deferred frames into their destination rings as room appears (acking those
    /// whose sender asked), and gives up on frames past their deadline, for a destination
    /// that left, or every one when `shutting_down`: each goes to the dead-letter sink and
    /// its sender gets a nack. Without a sink, frames wait (or, for a destination that left
    /// or at shutdown, are dropped and counted). Returns the frames moved or given up on.
    fn service_deferrals(&mut self, shutting_down: bool) -> usize {
        if self.deferrals.waiting.is_empty() {
            return 0;
        }
        let now_ns = monotonic_ns();
        let Self {
            deferrals,
            producers,
            agents,
            shared,
            shard,
            dead_letters,
            dead_letters_unflushed,
            batch_frames,
            ..
        } = self;
        let stats = &shared.stats[*shard];
        let mut work = 0;
        let mut i = 0;
        while i < deferrals.waiting.len() {
            let dest = deferrals.waiting[i];
            let gone = !producers.contains(dest);
            let Some(deferral) = deferrals.by_destination.get_mut(&dest) else {
                deferrals.waiting.swap_remove(i);
                continue;
            };
            let batch = if gone || shutting_down {
                usize::MAX
            } else {
                *batch_frames
            };
            let taken = deferral.service(batch, |d| {
                let source = u32::from_le_bytes(d.frame[24..28].try_into().expect("header"));
                let correlation = u64::from_le_bytes(d.frame[16..24].try_into().expect("header"));
                if !gone && !shutting_down {
                    let link_flags = if d.ack_owed {
                        LinkFlags::ACK_OWED
                    } else {
                        LinkFlags::NONE
                    };
                    // Another shard's agent: only while it is not congested.
                    let placed = if producers.is_local(dest)
                        || producers.can_claim(dest, d.frame.len())
                    {
                        producers.write_flagged(dest, d.frame.len(), link_flags, |out| {
                            out.copy_from_slice(d.frame);
                        })
                    } else {
                        Placed::Refused
                    };
                    match placed {
                        Placed::Delivered => {
                            count(&stats.frames_delivered, 1);
                            count(&stats.bytes_delivered, d.frame.len() as u64);
                            if d.ack_owed {
                                ack(source, correlation, producers, stats);
                            }
                            return ControlFlow::Continue(());
                        }
                        Placed::Forwarded => {
                            count(&stats.frames_forwarded, 1);
                            return ControlFlow::Continue(());
                        }
                        Placed::Refused => {}
                    }
                    if d.deadline_ns > now_ns {
                        return ControlFlow::Break(());
                    }
                }
                let (reason, why) = if gone {
                    (NackReason::NoSuchAgent, "left with frames waiting for it")
                } else if shutting_down {
                    (NackReason::DestinationFull, "still full at daemon shutdown")
                } else {
                    (NackReason::DestinationFull, "stayed full past the deadline")
                };
                let source_control = agents
                    .iter()
                    .find(|a| a.agent_id == source)
                    .map(|a| a.segment.control());
                let detail = match dead_letters.as_mut() {
                    Some(sink) => match sink.accept(reason, d.frame) {
                        Ok(sequence) => {
                            *dead_letters_unflushed = true;
                            count(&stats.frames_dead_lettered, 1);
                            format!("agent {dest} {why}; dead-lettered as record {sequence}")
                        }
                        Err(e) => {
                            count(&stats.dead_letter_refusals, 1);
                            if !shutting_down {
                                tracing::debug!("dead-letter queue refused a frame: {e}");
                                return ControlFlow::Break(());
                            }
                            count(&stats.frames_dropped, 1);
                            tracing::error!("dead-letter queue refused a frame at shutdown ({e}); dropped");
                            format!("agent {dest} {why}; dropped: dead-letter queue refused it ({e})")
                        }
                    },
                    None => {
                        if !gone && !shutting_down {
                            return ControlFlow::Break(());
                        }
                        count(&stats.frames_dropped, 1);
                        format!("agent {dest} {why}; dropped (no dead-letter queue)")
                    }
                };
                nack(source, correlation, reason, &detail, producers, stats, source_control);
                ControlFlow::Continue(())
            });
            deferrals.frames_now -= taken;
            work += taken;
            if deferral.is_empty() {
                deferrals.waiting.swap_remove(i);
                if gone {
                    deferrals.by_destination.remove(&dest);
                }
                if let Some(flag) = deferrals.congested.get(&dest) {
                    flag.store(false, Ordering::Release);
                }
            } else {
                i += 1;
            }
        }
        producers.publish();
        work
    }

    /// Idles after a duty cycle that did no work: spins while the idle strategy says spin,
    /// then parks on every agent's tx doorbell and this shard's own doorbell at once. Any
    /// agent's send, a record on a link from another shard, a command (a new agent, a
    /// departure) and shutdown each wake it ([`wake`]); the park timeout bounds how late a
    /// deferral deadline and the heartbeat run. Dead letters appended since the last sync are
    /// synced before parking. A shard with no agent and nothing deferred parks at once, for
    /// up to its park timeout or [`IDLE_SHARD_PARK_MIN`], whichever is longer, whatever the
    /// strategy.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-id-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.idle(&mut Idler::new(IdleStrategy::Spin));
    /// ```
    pub fn idle(&mut self, idler: &mut Idler) {
        let unoccupied = self.agents.is_empty() && self.deferrals.frames_now == 0;
        let timeout = match idler.park_due() {
            // Nothing to serve and nothing that waits for a deadline: sleep until rung.
            Some(timeout) if unoccupied => timeout.max(IDLE_SHARD_PARK_MIN),
            None if unoccupied => IDLE_SHARD_PARK_MIN,
            Some(timeout) => timeout,
            None => return,
        };
        // The sync runs every HEARTBEAT_PASSES passes; a parking shard may pass slowly.
        self.flush_dead_letters();
        // SYNC POINT: shard park (the flag, then the last poll of links and commands).
        self.wake().arm();
        let mut barrier_needed = false;
        for agent in &mut self.agents {
            barrier_needed |= Consumer::arm_park(&mut agent.tx);
        }
        if barrier_needed {
            crate::idle::asymmetric_barrier();
        }
        let posted = self.cmds.pending()
            || self.shared.shutdown.load(Ordering::Acquire)
            || self.links_in.iter_mut().any(|l| !l.is_empty())
            || self.agents.iter().any(|a| Consumer::any_pending(&a.tx));
        if !posted {
            let mut bells: Vec<&Doorbell> = Vec::with_capacity(self.agents.len() + 1);
            bells.push(self.wake().bell());
            bells.extend(
                self.agents
                    .iter()
                    .filter_map(|a| a.tx.first().and_then(|c| c.doorbell())),
            );
            // An agent without a doorbell cannot wake us: look again soon.
            let timeout = if bells.len() < self.agents.len() + 1 {
                timeout.min(Duration::from_micros(50))
            } else {
                timeout
            };
            crate::idle::wait_any(&bells, timeout);
        }
        self.wake().disarm();
    }

    /// How other threads wake this core when it is parked (links, commands, shutdown).
    fn wake(&self) -> &ShardWake {
        &self.shared.wakes[self.shard]
    }

    /// Syncs the dead letters appended since the last sync, if any.
    fn flush_dead_letters(&mut self) {
        if self.dead_letters_unflushed {
            self.dead_letters_unflushed = false;
            if let Some(sink) = self.dead_letters.as_mut() {
                sink.flush();
            }
        }
    }

    /// Marks every served segment closed (agents see it and reconnect).
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-cl-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.close();
    /// ```
    pub fn close(&mut self) {
        for agent in &self.agents {
            agent
                .segment
                .control()
                .state
                .0
                .store(state::CLOSED, Ordering::Release);
        }
    }

    /// Runs duty cycles with `idle` between empty ones until the control side stops the
    /// router, then closes every segment.
    ///
    /// ```no_run
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let (control, core) = RouterControl::start(RouterConfig::new("/tmp/x.sock".into())).unwrap();
    /// std::thread::spawn(move || core.run(agentwire_shm::idle::IdleStrategy::Spin));
    /// ```
    pub fn run(mut self, idle: IdleStrategy) {
        let mut idler = Idler::new(idle);
        while !self.should_stop() {
            self.step(&mut idler);
        }
        self.finish();
    }

    /// One duty cycle, then idles with `idler` if it did no work. Callers that interleave
    /// other work (the daemon's executor yields between steps) loop on this.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-step-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.step(&mut Idler::new(IdleStrategy::Spin)), 0);
    /// ```
    pub fn step(&mut self, idler: &mut Idler) -> usize {
        let work = self.do_work();
        if work == 0 {
            self.idle(idler);
        } else {
            idler.reset();
        }
        work
    }

    /// At shutdown: routes what is already committed ([`RoutingCore::drain`]), then marks
    /// every segment closed. Returns the frames routed while draining.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-fin-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.finish(), 0);
    /// ```
    pub fn finish(&mut self) -> usize {
        let mut routed = self.drain();
        if !self.links_in.is_empty() {
            // Every shard stops routing before any takes its last look at its links, so
            // nothing forwarded is left behind in one.
            let shared = self.shared.clone();
            shared.finished.fetch_add(1, Ordering::AcqRel);
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            while shared.finished.load(Ordering::Acquire) < shared.stats.len()
                && Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            loop {
                let taken = self.drain_links(true);
                routed += taken;
                if taken == 0 {
                    break;
                }
            }
        }
        // What still waits for a full destination goes to the dead-letter sink (or is
        // dropped and counted without one), so the shutdown loses nothing it could keep.
        let given_up = self.service_deferrals(true);
        if given_up > 0 {
            tracing::info!(
                given_up,
                "frames still deferred at shutdown were dead-lettered"
            );
        }
        if let Some(sink) = self.dead_letters.as_mut() {
            sink.flush();
        }
        self.close();
        routed
    }

    /// At shutdown: routes what is already committed in the tx rings, for at most
    /// [`DRAIN_PASSES_MAX`] duty cycles (a destination that stays full cannot hold the
    /// shutdown hostage). Returns the frames routed.
    ///
    /// ```
    /// # use agentwire_shm::routing::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-dr-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.drain(), 0);
    /// ```
    pub fn drain(&mut self) -> usize {
        let shared = self.shared.clone();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut routed = 0;
        let mut passes = 0;
        while passes < DRAIN_PASSES_MAX {
            let work = self.do_work();
            routed += work;
            if work > 0 {
                passes += 1;
                shared.quiet[self.shard].store(false, Ordering::Release);
                continue;
            }
            let links_empty = self.links_in.iter_mut().all(LinkReceiver::is_empty);
            shared.quiet[self.shard].store(links_empty, Ordering::Release);
            // Other shards may still forward frames here: quiet only when all are.
            if links_empty && shared.quiet.iter().all(|q| q.load(Ordering::Acquire)) {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::yield_now();
        }
        routed
    }
}

struct RouteContext<'a> {
    producers: &'a mut Outboxes,
    deferrals: &'a mut Deferrals,
    table: &'a mut RoutingTable,
    stats: &'a RouterStats,
    /// Commands and tables were re-read since these frames were first seen.
    fresh: bool,
    /// Set when a frame waits for a fresh pass.
    needs_refresh: bool,
    /// The registry generation and the one the table was built from. A frame is visible
    /// only after everything its sender saw (e.g. an unsubscribe's reply), so loading the
    /// generation after seeing the frame tells whether the table is too old for it.
    generation: &'a AtomicU64,
    table_generation: u64,
    /// Deadline for frames deferred in this batch (clock read at most once per batch).
    deadline: Deadline,
    /// Bytes taken from the source ring in this batch.
    bytes_in: u64,
    /// The last frame seen was left in the source ring.
    stopped: bool,
}

/// The deadline given to frames deferred in one batch: the clock is read only when the
/// first frame of the batch is deferred.
struct Deadline {
    after_ns: Option<u64>,
    at_ns: Option<u64>,
}

impl Deadline {
    fn new(after_ns: Option<u64>) -> Self {
        Self {
            after_ns,
            at_ns: None,
        }
    }

    fn get(&mut self) -> u64 {
        match self.after_ns {
            None => u64::MAX,
            Some(after) => *self
                .at_ns
                .get_or_insert_with(|| monotonic_ns().saturating_add(after)),
        }
    }
}

/// The order in which one duty cycle serves the priority classes: first the class picked by
/// smooth weighted round robin among `backlog`ged classes (each adds its weight to its
/// counter, the largest counter goes first and gives back the sum of the weights), then the
/// rest in priority order. With no contention, plain priority order.
fn lane_order(current: &mut [i64; TX_LANES], backlog: &[bool; TX_LANES]) -> [usize; TX_LANES] {
    let mut order = [0, 1, 2, 3];
    let total: i64 = (0..TX_LANES)
        .filter(|&c| backlog[c])
        .map(|c| i64::from(LANE_WEIGHTS[c]))
        .sum();
    let contending = backlog.iter().filter(|&&b| b).count();
    if contending < 2 {
        return order;
    }
    let mut pick = 0;
    let mut best = i64::MIN;
    for c in 0..TX_LANES {
        if backlog[c] {
            current[c] += i64::from(LANE_WEIGHTS[c]);
            if current[c] > best {
                best = current[c];
                pick = c;
            }
        }
    }
    current[pick] -= total;
    order.copy_within(0..pick, 1);
    order[0] = pick;
    order
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// Every destination's deferral (see [`crate::deferral`]) and which ones hold frames.
/// This shard's own agents get theirs at registration; an agent of another shard gets one
/// here the first time frames must wait for it (it was congested), once per agent.
#[derive(Default)]
struct Deferrals {
    by_destination: rustc_hash::FxHashMap<u32, Deferral>,
    /// Destinations with frames waiting.
    waiting: Vec<u32>,
    /// Frames waiting in all deferrals.
    frames_now: usize,
    /// Bytes of each deferral (0: deferral off).
    capacity_bytes: usize,
    /// Bytes of this shard's agents' deferrals that frames from this shard's own senders
    /// leave free for frames arriving over links (which cannot be refused).
    reserve_bytes: usize,
    /// This shard's agents' congestion flags: set while their deferral holds frames.
    congested: rustc_hash::FxHashMap<u32, Arc<AtomicBool>>,
}

impl Deferrals {
    /// Whether frames wait for `id` (a new frame for it must queue behind them).
    #[inline]
    fn is_waiting(&self, id: u32) -> bool {
        !self.waiting.is_empty() && self.by_destination.get(&id).is_some_and(|d| !d.is_empty())
    }

    /// Whether a frame for `id` can wait in its deferral: one from this shard's senders
    /// leaves the link reserve free in the deferral of an agent served here; one that
    /// arrived over a link (`arrival`) may use it.
    fn can_take(&mut self, id: u32, frame_bytes: usize, arrival: bool) -> bool {
        let local = self.congested.contains_key(&id);
        if !local && !self.by_destination.contains_key(&id) && self.capacity_bytes > 0 {
            // First wait for an agent of another shard: allocated once, off the fast path.
            match Deferral::new(self.capacity_bytes) {
                Ok(d) => {
                    self.by_destination.insert(id, d);
                }
                Err(e) => {
                    tracing::warn!(agent_id = id, "no deferral for a remote agent: {e}");
                    return false;
                }
            }
        }
        let reserve = if local && !arrival {
            self.reserve_bytes
        } else {
            0
        };
        self.by_destination.get_mut(&id).is_some_and(|d| {
            d.can_take(frame_bytes)
                && (reserve == 0
                    || d.room_bytes()
                        >= frame_bytes + crate::deferral::DEFERRAL_PREFIX_BYTES + 16 + reserve)
        })
    }

    fn push(
        &mut self,
        id: u32,
        frame_bytes: usize,
        deadline_ns: u64,
        ack_owed: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(deferral) = self.by_destination.get_mut(&id) else {
            return false;
        };
        let was_empty = deferral.is_empty();
        if !deferral.push_with(frame_bytes, deadline_ns, ack_owed, fill) {
            return false;
        }
        if was_empty {
            self.waiting.push(id);
            if let Some(flag) = self.congested.get(&id) {
                // Other shards stop forwarding to it and defer on their side.
                flag.store(true, Ordering::Release);
            }
        }
        self.frames_now += 1;
        true
    }
}

/// Routes one frame from `source`. `Break` leaves it in the source ring (destination full,
/// or destination unknown and tables not yet re-read).
fn route_frame(
    source: u32,
    frame: &[u8],
    ctx: &mut RouteContext<'_>,
    source_control: &crate::segment::ControlBlock,
) -> ControlFlow<()> {
    let RouteContext {
        producers,
        deferrals,
        table,
        stats,
        fresh,
        needs_refresh,
        generation,
        table_generation,
        deadline,
        bytes_in: _,
        stopped: _,
    } = ctx;
    let (generation, table_generation) = (*generation, *table_generation);
    let (producers, deferrals, table, stats) =
        (&mut **producers, &mut **deferrals, &mut **table, *stats);
    let header = match FrameHeader::validate(frame) {
        Ok(h) => *h,
        Err(e) => {
            count(&stats.frames_malformed, 1);
            // Echo the correlation id if the bytes are there, even from a bad header.
            let correlation = frame
                .get(16..24)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            nack(
                source,
                correlation,
                NackReason::Malformed,
                &e.to_string(),
                producers,
                stats,
                Some(source_control),
            );
            return ControlFlow::Continue(());
        }
    };
    if matches!(
        header.destination_kind(),
        Destination::Topic(_) | Destination::Capability(_) | Destination::Feature(_)
    ) && generation.load(Ordering::Acquire) != table_generation
    {
        *needs_refresh = true;
        return ControlFlow::Break(());
    }
    let mut unknown =
        |what: String, reason: NackReason, correlation: u64, producers: &mut Outboxes| {
            if *fresh {
                nack(
                    source,
                    correlation,
                    reason,
                    &what,
                    producers,
                    stats,
                    Some(source_control),
                );
                ControlFlow::Continue(())
            } else {
                *needs_refresh = true;
                ControlFlow::Break(())
            }
        };
    if matches!(header.kind(), FrameKind::Ack | FrameKind::Nack) {
        nack(
            source,
            header.correlation(),
            NackReason::NotPermitted,
            "agents may not send acks or nacks",
            producers,
            stats,
            Some(source_control),
        );
        return ControlFlow::Continue(());
    }
    // The ring owner is the source, whatever the frame claims.
    let stamp = |out: &mut [u8]| {
        out.copy_from_slice(frame);
        out[24..28].copy_from_slice(&source.to_le_bytes());
    };
    let len = frame.len();
    // Fast path, one map lookup: a unicast to an agent of this shard with room in its ring
    // and nothing deferred anywhere (so nothing waits for it either).
    if let Destination::Agent(id) = header.destination_kind() {
        if deferrals.waiting.is_empty() && producers.deliver_local(id, len, stamp) {
            count(&stats.frames_delivered, 1);
            count(&stats.bytes_delivered, len as u64);
            if header.ack_requested() {
                ack(source, header.correlation(), producers, stats);
            }
            return ControlFlow::Continue(());
        }
    }
    let targets: smallvec_like::Targets<'_> = match header.destination_kind() {
        Destination::Agent(id) => {
            if !producers.contains(id) || id == DAEMON_AGENT_ID {
                return unknown(
                    format!("no agent {id}"),
                    NackReason::NoSuchAgent,
                    header.correlation(),
                    producers,
                );
            }
            smallvec_like::Targets::One(id)
        }
        Destination::Topic(topic) => match table.subscribers.get(&topic) {
            Some(subs) if !subs.is_empty() => smallvec_like::Targets::Many(subs),
            _ => {
                return unknown(
                    format!("no subscriber to topic {topic}"),
                    NackReason::NoSubscriber,
                    header.correlation(),
                    producers,
                )
            }
        },
        Destination::Capability(route) => {
            let route = route as usize;
            match table.capability_routes.get(route) {
                Some(ids) if !ids.is_empty() => {
                    let start = table.round_robin[route];
                    table.round_robin[route] = start.wrapping_add(1);
                    smallvec_like::Targets::One(least_loaded(ids, start, producers, deferrals))
                }
                _ => {
                    return unknown(
                        format!("no live agent for capability route {route}"),
                        NackReason::NoSuchAgent,
                        header.correlation(),
                        producers,
                    )
                }
            }
        }
        Destination::Feature(feature) => match table.features.get_mut(&feature) {
            Some((ids, cursor)) => {
                let start = *cursor;
                *cursor = start.wrapping_add(1);
                smallvec_like::Targets::One(least_loaded(ids, start, producers, deferrals))
            }
            None => {
                return unknown(
                    format!("no live agent serves feature {feature}"),
                    NackReason::NoSuchAgent,
                    header.correlation(),
                    producers,
                )
            }
        },
    };
    // Every copy is placed or none is: straight into the destination ring when nothing
    // waits for that destination and it has room, else behind what waits in its deferral.
    // If a copy fits neither, the frame stays in the sender's ring: backpressure on this
    // sender only, and only once a destination's deferral is full.
    // A copy for another shard's agent goes over that shard's link unless the agent is
    // congested (then it waits in this shard's deferral for it). Each copy's choice is made
    // once, here, and kept below: a congestion flag that flips in between is seen next time.
    let any_waiting = !deferrals.waiting.is_empty();
    let all = targets.as_slice();
    let mut direct_bits = [0u64; ROUTER_AGENTS_MAX / 64];
    for (k, &id) in all.iter().enumerate() {
        let copies = if all.len() > 1 {
            producers.copies_via_same_link(id, all)
        } else {
            1
        };
        let direct = !(any_waiting && deferrals.is_waiting(id))
            && producers.can_claim_copies(id, len, copies);
        if direct {
            direct_bits[k / 64] |= 1 << (k % 64);
        } else if !deferrals.can_take(id, len, false) {
            return ControlFlow::Break(());
        }
    }
    // A unicast or anycast ack is sent once the frame is in the destination ring; a topic's
    // once every copy is in a ring or a deferral (a copy that later expires is nacked).
    // A unicast to another shard's agent is acked by that shard once it lands.
    let owe_ack = header.ack_requested() && matches!(targets, smallvec_like::Targets::One(_));
    let mut ack_deferred = false;
    let link_flags = if owe_ack {
        LinkFlags::ACK_OWED
    } else {
        LinkFlags::NONE
    };
    for (k, &id) in all.iter().enumerate() {
        let direct = direct_bits[k / 64] & (1 << (k % 64)) != 0;
        let placed = if direct {
            producers.write_flagged(id, len, link_flags, stamp)
        } else {
            Placed::Refused
        };
        if placed == Placed::Delivered {
            count(&stats.frames_delivered, 1);
            count(&stats.bytes_delivered, len as u64);
        } else if placed == Placed::Forwarded {
            count(&stats.frames_forwarded, 1);
            ack_deferred |= owe_ack;
        } else {
            let pushed = deferrals.push(id, len, deadline.get(), owe_ack, stamp);
            debug_assert!(pushed, "room checked above");
            count(&stats.frames_deferred, 1);
            ack_deferred |= owe_ack;
        }
    }
    if header.ack_requested() && !ack_deferred {
        ack(source, header.correlation(), producers, stats);
    }
    ControlFlow::Continue(())
}

/// The candidate whose rx ring holds the fewest bytes (a destination with deferred frames
/// counts as full; so does a congested agent of another shard), scanning from the
/// round-robin cursor so ties spread the load.
fn least_loaded(ids: &[u32], start: usize, producers: &mut Outboxes, deferrals: &Deferrals) -> u32 {
    if ids.len() == 1 {
        return ids[0];
    }
    let mut best = (usize::MAX, ids[start % ids.len()]);
    for k in 0..ids.len() {
        let id = ids[(start + k) % ids.len()];
        let load = if deferrals.is_waiting(id) {
            usize::MAX - 1
        } else {
            producers.occupied_bytes(id)
        };
        if load < best.0 {
            best = (load, id);
            if load == 0 {
                break;
            }
        }
    }
    best.1
}

fn ack(source: u32, correlation: u64, producers: &mut Outboxes, stats: &RouterStats) {
    reply(
        source,
        FrameHeader::new(FrameKind::Ack, DAEMON_AGENT_ID, source, 0).with_correlation(correlation),
        &[],
        LinkFlags::REPLY,
        producers,
        stats,
    );
    count(&stats.acks_sent, 1);
}

fn nack(
    source: u32,
    correlation: u64,
    reason: NackReason,
    detail: &str,
    producers: &mut Outboxes,
    stats: &RouterStats,
    source_control: Option<&crate::segment::ControlBlock>,
) {
    count(&stats.frames_rejected, 1);
    match reason {
        NackReason::NoSuchAgent => count(&stats.nacks_no_such_agent, 1),
        NackReason::NoSubscriber => count(&stats.nacks_no_subscriber, 1),
        NackReason::DestinationFull => count(&stats.nacks_destination_full, 1),
        NackReason::Malformed => {} // counted as frames_malformed where it is detected
        NackReason::NotPermitted => count(&stats.nacks_not_permitted, 1),
    }
    if let Some(control) = source_control {
        // The agent reads these; only the router writes them.
        count(&control.frames_rejected, 1);
        control
            .last_reject_reason
            .store(reason as u32, Ordering::Relaxed);
    }
    let body = NackBody {
        reason: reason as u32,
        detail: detail.chars().take(200).collect(),
    };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&body).expect("nack body serializes");
    let header = FrameHeader::new(
        FrameKind::Nack,
        DAEMON_AGENT_ID,
        source,
        payload.len() as u32,
    )
    .with_correlation(correlation)
    .with_priority(0);
    reply(
        source,
        header,
        &payload,
        LinkFlags::nack(reason as u32),
        producers,
        stats,
    );
}

/// Writes an ack or nack for `source`; for an agent of another shard, over the link with
/// `flags` saying what it is (that shard counts a nack in the agent's control block).
fn reply(
    source: u32,
    header: FrameHeader,
    payload: &[u8],
    flags: LinkFlags,
    producers: &mut Outboxes,
    stats: &RouterStats,
) {
    let placed = producers.write_flagged(source, HEADER_BYTES + payload.len(), flags, |out| {
        header.write_to(out);
        out[HEADER_BYTES..].copy_from_slice(payload);
    });
    if placed == Placed::Refused {
        count(&stats.replies_dropped, 1);
    }
}

/// Every agent's rx producer, keyed by agent id (FxHash: SipHash cost ~6% of the router core
/// in a routed-throughput profile). Frames are committed as they are routed and each touched
/// ring is published once per source batch: with the fenced wake protocol a publish is a
/// locked instruction, and publishing per frame cost ~20% of the router core.
///
/// Agents another shard serves are reached through that shard's link ([`links`]): a write
/// for one is a link record, refused while the agent is congested (frames wait in its
/// deferral on its own shard) or the link's in-flight budget is spent.
#[derive(Default)]
struct Outboxes {
    rings: rustc_hash::FxHashMap<u32, Outbox>,
    dirty: Vec<u32>,
    /// Agents of other shards (from the registry at the last table rebuild).
    remote: rustc_hash::FxHashMap<u32, RemoteDest>,
    /// Links to other shards, by shard index (`None` for this shard).
    links: Vec<Option<LinkSender>>,
    links_dirty: bool,
}

/// Where [`Outboxes::write_flagged`] put a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// In the rx ring of an agent this shard serves.
    Delivered,
    /// On the link to the shard that serves the agent.
    Forwarded,
    /// Nowhere: no such agent, or no room.
    Refused,
}

struct RemoteDest {
    shard: usize,
    congested: Arc<AtomicBool>,
    /// Its rx ring, read only for its occupancy (least-loaded choice).
    rx: crate::ring::RingMemory,
}

struct Outbox {
    producer: Producer,
    dirty: bool,
}

impl Outbox {
    /// Claims room for a frame, lets `fill` write it and commits it for the next publish,
    /// noting the agent in `dirty` once. False (nothing written) when the ring is full.
    #[inline]
    fn commit(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        dirty: &mut Vec<u32>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Ok(mut claim) = self.producer.claim(len_bytes) else {
            return false;
        };
        fill(claim.bytes_mut());
        claim.commit_deferred();
        if !self.dirty {
            self.dirty = true;
            dirty.push(agent_id);
        }
        true
    }
}

impl Outboxes {
    fn insert(&mut self, agent_id: u32, producer: Producer) {
        self.rings.insert(
            agent_id,
            Outbox {
                producer,
                dirty: false,
            },
        );
    }

    fn remove(&mut self, agent_id: u32) {
        if let Some(mut outbox) = self.rings.remove(&agent_id) {
            outbox.producer.publish();
        }
    }

    /// Served here or by another shard.
    fn contains(&self, agent_id: u32) -> bool {
        self.rings.contains_key(&agent_id) || self.remote.contains_key(&agent_id)
    }

    /// Served by this shard.
    fn is_local(&self, agent_id: u32) -> bool {
        self.rings.contains_key(&agent_id)
    }

    /// How many of `targets` go over the same link as `agent_id` (1 for a local agent).
    fn copies_via_same_link(&self, agent_id: u32, targets: &[u32]) -> usize {
        match self.remote.get(&agent_id) {
            None => 1,
            Some(r) => targets
                .iter()
                .filter(|t| self.remote.get(t).is_some_and(|o| o.shard == r.shard))
                .count(),
        }
    }

    fn occupied_bytes(&mut self, agent_id: u32) -> usize {
        if let Some(o) = self.rings.get_mut(&agent_id) {
            return o.producer.occupied_bytes();
        }
        match self.remote.get(&agent_id) {
            Some(r) if r.congested.load(Ordering::Acquire) => usize::MAX - 1,
            Some(r) => r.rx.occupied_bytes(),
            None => usize::MAX,
        }
    }

    /// Whether `copies` frames of `len_bytes` for the agent can be written now.
    fn can_claim_copies(&mut self, agent_id: u32, len_bytes: usize, copies: usize) -> bool {
        if let Some(o) = self.rings.get_mut(&agent_id) {
            return o.producer.can_claim(len_bytes);
        }
        let Some(remote) = self.remote.get(&agent_id) else {
            return false;
        };
        let Some(Some(link)) = self.links.get_mut(remote.shard) else {
            return false;
        };
        // Room first (an acquire of the receiver's head), then the flag: a flag set before
        // the room we were granted is seen.
        link.can_take_copies(len_bytes, copies) && !remote.congested.load(Ordering::Acquire)
    }

    fn can_claim(&mut self, agent_id: u32, len_bytes: usize) -> bool {
        self.can_claim_copies(agent_id, len_bytes, 1)
    }

    /// Claims `len_bytes` in the agent's rx ring (or its shard's link), lets `fill` write
    /// the frame, commits it for the next [`Outboxes::publish`]. False if there is no such
    /// agent or no room.
    fn write(&mut self, agent_id: u32, len_bytes: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.write_flagged(agent_id, len_bytes, LinkFlags::NONE, fill) != Placed::Refused
    }

    /// Writes a frame for an agent this shard serves if its ring has room (true), in one map
    /// lookup; false (nothing written) for another shard's agent, an unknown one, or a full
    /// ring.
    #[inline]
    fn deliver_local(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(outbox) = self.rings.get_mut(&agent_id) else {
            return false;
        };
        outbox.commit(agent_id, len_bytes, &mut self.dirty, fill)
    }

    /// [`Outboxes::write`] that says where the frame went, with `link_flags` for the record
    /// when the agent is another shard's (what that shard must do besides delivering;
    /// ignored for this shard's own agents). One map lookup for a local agent.
    fn write_flagged(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        link_flags: LinkFlags,
        fill: impl FnOnce(&mut [u8]),
    ) -> Placed {
        let Some(outbox) = self.rings.get_mut(&agent_id) else {
            let Some(remote) = self.remote.get(&agent_id) else {
                return Placed::Refused;
            };
            let Some(Some(link)) = self.links.get_mut(remote.shard) else {
                return Placed::Refused;
            };
            // Congestion was checked by the caller (`can_claim_copies`) when the copy was
            // routed; replies ignore it (small, best effort, budgeted anyway).
            if !link.can_take_copies(len_bytes, 1)
                || !link.write(agent_id, link_flags, len_bytes, fill)
            {
                return Placed::Refused;
            }
            self.links_dirty = true;
            return Placed::Forwarded;
        };
        if outbox.commit(agent_id, len_bytes, &mut self.dirty, fill) {
            Placed::Delivered
        } else {
            Placed::Refused
        }
    }

    /// Publishes every ring and link written since the last call.
    fn publish(&mut self) {
        for agent_id in self.dirty.drain(..) {
            if let Some(outbox) = self.rings.get_mut(&agent_id) {
                outbox.dirty = false;
                outbox.producer.publish();
            }
        }
        if self.links_dirty {
            self.links_dirty = false;
            for link in self.links.iter_mut().flatten() {
                link.publish();
            }
        }
    }
}

mod smallvec_like {
    /// Delivery targets without allocating: one agent, or a topic's subscriber list
    /// borrowed from the routing table.
    pub(super) enum Targets<'t> {
        One(u32),
        Many(&'t [u32]),
    }

    impl Targets<'_> {
        pub(super) fn as_slice(&self) -> &[u32] {
            match self {
                Targets::One(id) => std::slice::from_ref(id),
                Targets::Many(v) => v,
            }
        }
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    fn first_picks(backlog: [bool; TX_LANES], cycles: usize) -> [usize; TX_LANES] {
        let mut current = [0; TX_LANES];
        let mut picks = [0; TX_LANES];
        for _ in 0..cycles {
            let order = lane_order(&mut current, &backlog);
            let mut sorted = order;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "every class is served every cycle");
            picks[order[0]] += 1;
        }
        picks
    }

    #[test]
    fn contending_classes_go_first_by_weight_and_none_starves() {
        assert_eq!(first_picks([true; 4], 15), [8, 4, 2, 1]);
        assert_eq!(first_picks([true; 4], 150), [80, 40, 20, 10]);
        assert_eq!(first_picks([true, false, false, true], 90), [80, 0, 0, 10]);
        // Every window of 15 cycles gives the least urgent class its turn.
        let mut current = [0; TX_LANES];
        let firsts: Vec<usize> = (0..150)
            .map(|_| lane_order(&mut current, &[true; 4])[0])
            .collect();
        assert!(firsts.windows(15).all(|w| w.contains(&3)));
    }

    #[test]
    fn without_contention_the_order_is_plain_priority() {
        let mut current = [0; TX_LANES];
        assert_eq!(lane_order(&mut current, &[false; 4]), [0, 1, 2, 3]);
        assert_eq!(
            lane_order(&mut current, &[false, false, true, false]),
            [0, 1, 2, 3]
        );
        assert_eq!(current, [0; TX_LANES]);
    }
}
