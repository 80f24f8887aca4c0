//! How a router is started: [`RouterConfig`] and the limits every router obeys.

use crate::server::AllowList;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::segment::TX_LANES;
use std::path::PathBuf;
use std::time::Duration;

/// Agents a router admits at once by default ([`RouterConfig::agents_max`]).
pub const AGENTS_MAX_DEFAULT: usize = 4096;
/// Largest [`RouterConfig::agents_max`] accepted.
pub const AGENTS_MAX_LIMIT: usize = 1 << 20;
/// Connections one uid may have in their handshake at once by default
/// ([`RouterConfig::handshakes_per_uid_max`]): a sixteenth of the router's handshake slots
/// (`HANDSHAKES_PENDING_MAX`), so one user's silent connections leave the rest to everyone
/// else, and well above what a user's agents connecting at once need (the control bench
/// connects from 4 threads, 4 handshakes at a time).
pub const HANDSHAKES_PER_UID_MAX_DEFAULT: usize = 64;
/// Smallest ring an agent may ask for by default ([`RouterConfig::ring_capacity_min_bytes`]).
pub const RING_CAPACITY_MIN_BYTES_DEFAULT: usize = 4096;
/// Largest ring an agent may ask for by default ([`RouterConfig::ring_capacity_max_bytes`]).
pub const RING_CAPACITY_MAX_BYTES_DEFAULT: usize = 16 << 20;
/// Most router shards (cores) one router runs.
pub const ROUTER_SHARDS_MAX: usize = 64;
/// Most bytes in flight on one link between two shards (see [`links`]).
pub const LINK_BUDGET_BYTES_MAX: usize = 64 * 1024;
/// Most distinct discovery questions cached between two registry changes.
pub const DISCOVERY_CACHE_ENTRIES_MAX: usize = 1024;
/// Duty cycles between bumps of each segment's daemon heartbeat.
pub const HEARTBEAT_PASSES: u64 = 1024;
/// A shard times one duty cycle in this many (two monotonic clock reads, tens of
/// nanoseconds, so about a nanosecond a pass on average) for its busy-time counters
/// ([`crate::RouterStats::busy_ns_sampled`]). Prime, so the sampled passes fall evenly on
/// the passes that do periodic work (every 8th, 64th, 1024th pass).
///
/// ```
/// assert_eq!(agentwire_router::config::BUSY_SAMPLE_PASSES, 61);
/// ```
pub const BUSY_SAMPLE_PASSES: u64 = 61;
/// Shortest bound on one park of a router shard with no agent and nothing deferred (its
/// park timeout when that is longer), whatever the idle strategy: everything that could
/// give it work (a new agent, a link record, shutdown) rings its doorbell, so the bound only
/// caps a missed wakeup.
pub const IDLE_SHARD_PARK_MIN: Duration = Duration::from_millis(100);
/// Duty cycles run at shutdown to route frames already committed.
pub const DRAIN_PASSES_MAX: usize = 10_000;
/// How long a shard waits at shutdown for the other shards to go quiet.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// Shortest wait before a shard offers frames again to a dead-letter sink that answered
/// [`SinkRefusal::Busy`](crate::sink::SinkRefusal::Busy) (a replay or purge holds the
/// queue's lock); each further `Busy` doubles the wait up to [`DEAD_LETTER_RETRY_MAX`], and
/// the first frame the sink takes (or refuses for another reason) resets it. Meanwhile the
/// frames stay deferred and the sink is not called at all, so a long replay costs the router
/// at most one lock attempt per wait rather than one per duty cycle.
pub const DEAD_LETTER_RETRY_MIN: Duration = Duration::from_millis(1);
/// Longest wait between two offers to a busy dead-letter sink (see
/// [`DEAD_LETTER_RETRY_MIN`]): at most 10 lock attempts per second per shard, and a frame
/// waits at most this long after the replay ends.
pub const DEAD_LETTER_RETRY_MAX: Duration = Duration::from_millis(100);
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
/// assert_eq!(agentwire_router::lane_batch_frames(32), [64, 48, 32, 16]);
/// assert_eq!(agentwire_router::lane_batch_frames(1), [2, 1, 1, 1]);
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
    /// What each peer identity may register, subscribe to and publish to (see
    /// [`crate::policy`]); open by default (no rules: everything allowed).
    pub policy: crate::policy::Policy,
    /// Protocol versions accepted.
    pub versions: (u16, u16),
    /// Ring capacity each way for an agent that does not ask for one.
    pub ring_capacity_bytes: usize,
    /// The duty cycle's idle strategy (used by [`RoutingCore::run`]).
    pub idle: IdleStrategy,
    /// Most agents admitted at once (1..=[`AGENTS_MAX_LIMIT`]).
    pub agents_max: usize,
    /// Most connections one uid may have in their handshake at once (silent, slow, or an
    /// admin tool's status query), at least 1; its next connection is refused at once with
    /// `PerUidLimit`. Registered agents do not count here (see `agents_per_uid_max`).
    pub handshakes_per_uid_max: usize,
    /// Most agents one uid may have registered at once; `None`: only `agents_max` bounds
    /// them (the default: one service user commonly runs every agent).
    pub agents_per_uid_max: Option<usize>,
    /// The first agent id this router gives (ids only grow while it runs). A daemon that
    /// persists the ids it gave starts above them, so ids are never reused across restarts.
    pub first_agent_id: u32,
    /// Where the ids given are persisted (see [`crate::agent_ids`]); `None`: ids only
    /// grow while this router runs.
    pub agent_id_store: Option<std::sync::Arc<std::sync::Mutex<crate::agent_ids::AgentIdStore>>>,
    /// Smallest ring (each way) an agent may ask for at registration.
    pub ring_capacity_min_bytes: usize,
    /// Largest ring (each way) an agent may ask for at registration.
    pub ring_capacity_max_bytes: usize,
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
    /// What a publish does for a subscriber whose ring and deferral are both full.
    pub slow_subscriber: SlowSubscriber,
    /// With [`SlowSubscriber::Drop`]: a subscriber that missed this many copies in a row is
    /// removed (its connection closed; it may connect again). 0: never.
    pub slow_subscriber_evict_copies: u64,
}

/// What a publish does for a subscriber that cannot take its copy now (its rx ring and its
/// deferral are full): the policy against one silent subscriber stalling a topic.
///
/// ```
/// use agentwire_router::config::SlowSubscriber;
/// assert_eq!("drop".parse::<SlowSubscriber>(), Ok(SlowSubscriber::Drop));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowSubscriber {
    /// Drop that subscriber's copy (counted in `subscriber_copies_dropped`; a publisher that
    /// asked for an ack is nacked `DestinationFull` instead); the publisher and the other
    /// subscribers keep their rate. The default, as NATS does for slow consumers.
    Drop,
    /// Every copy or none: the frame waits in the publisher's lane until every subscriber
    /// can take it (no loss; one silent subscriber stalls the topic).
    Backpressure,
}

impl std::str::FromStr for SlowSubscriber {
    type Err = String;

    /// `drop` or `backpressure`.
    ///
    /// ```
    /// use agentwire_router::config::SlowSubscriber;
    /// assert!("sometimes".parse::<SlowSubscriber>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(Self::Drop),
            "backpressure" => Ok(Self::Backpressure),
            other => Err(format!(
                "unknown slow-subscriber policy {other:?}: use drop or backpressure"
            )),
        }
    }
}

impl RouterConfig {
    /// Defaults: current user allowed, all versions, 256 KiB rings, spin-then-park.
    ///
    /// ```
    /// let c = agentwire_router::RouterConfig::new("/tmp/t.sock".into());
    /// assert_eq!(c.ring_capacity_bytes, 256 * 1024);
    /// ```
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            allow: AllowList::current_user(),
            policy: crate::policy::Policy::open(),
            versions: (
                agentwire_shm::control::PROTOCOL_VERSION_MIN,
                agentwire_shm::control::PROTOCOL_VERSION_MAX,
            ),
            ring_capacity_bytes: 256 * 1024,
            idle: IdleStrategy::SpinThenPark {
                spins_max: 20_000,
                park_timeout_ns: 200_000,
            },
            agents_max: AGENTS_MAX_DEFAULT,
            handshakes_per_uid_max: HANDSHAKES_PER_UID_MAX_DEFAULT,
            agents_per_uid_max: None,
            first_agent_id: 1,
            agent_id_store: None,
            ring_capacity_min_bytes: RING_CAPACITY_MIN_BYTES_DEFAULT,
            ring_capacity_max_bytes: RING_CAPACITY_MAX_BYTES_DEFAULT,
            defer_capacity_bytes: 256 * 1024,
            defer_deadline: None,
            liveness_timeout: Some(Duration::from_secs(5)),
            shards: 1,
            shard_numa_nodes: Vec::new(),
            batch_frames: ROUTER_BATCH_FRAMES_DEFAULT,
            slow_subscriber: SlowSubscriber::Drop,
            slow_subscriber_evict_copies: 0,
        }
    }
}

pub(crate) fn deadline_ns(deadline: Option<Duration>) -> u64 {
    deadline.map_or(u64::MAX, |d| {
        d.as_nanos().min(u128::from(u64::MAX / 2)) as u64
    })
}
