//! The streaming engine inside the daemon: an in-process router endpoint that serves the
//! engine's feature id, takes event batches from any agent, runs event-time windows and a
//! streaming anomaly detector per key, and publishes window results and alerts to topics.
//!
//! - Frames to [`STREAM_FEATURE_ID`] (or the configured id) carry an rkyv
//!   [`EventBatch`](agentwire_shm::stream_events::EventBatch) ([`ingest`]).
//! - A batch sent as a request is answered with an
//!   [`IngestAck`]; a batch sent plainly is answered
//!   only when some of it was refused, so a sender always learns of bad events.
//! - Each event is scored by its key's detector (from that event and the key's earlier ones);
//!   a score at or above `alert_threshold` publishes an alert (JSON: key, event_time_ns,
//!   value, score, detector) to `alerts_topic`. Window results go to `results_topic` (JSON,
//!   as `agentwire stream run` writes them).
//! - With a state directory ([`durable`]), every accepted event is logged before it is
//!   processed and acknowledged, the windows and detectors are checkpointed with the log
//!   offset they cover, and a restart restores the checkpoint and replays the log after it:
//!   the engine goes on as if it had never stopped. Outputs carry `epoch` and `seq`; a
//!   replayed output repeats the id it had, so subscribers can drop repeats.
//! - [`StreamEngine::do_work`] is one duty-cycle pass (Aeron's contract: returns the work
//!   done); the daemon calls it from the streaming partition's executors. Outgoing frames
//!   that find the ring full wait in a bounded outbox; past its bound the oldest are
//!   dropped and counted.
//!
//! ```
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
//! let sock = std::env::temp_dir().join(format!("aw-doc-stream-{}.sock", std::process::id()));
//! let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
//! let mut engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
//! assert_eq!(engine.do_work(), 0); // nothing sent yet
//! ```

pub mod durable;
pub mod ingest;
pub mod shard;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use agentwire_router::control::RouterControl;
use agentwire_router::endpoint::{Endpoint, EndpointError, EndpointKind};
use agentwire_shm::control::{CapabilitySpec, Registration};
use agentwire_shm::stream_events::{encode_ack, IngestAck, STREAM_CAPABILITY, STREAM_FEATURE_ID};
use agentwire_shm::wire::{FrameHeader, FrameKind};

use crate::detect::{by_name, Detector, UnknownDetector};
use crate::event::{time_in_range, Event, Key};
use crate::pipeline::sharded::{shard_of, SHARDS_MAX};
use crate::window::{OperatorSnapshot, SpecError, WindowKind, WindowOperator, WindowSpec};
use shard::{Frame, ShardLink, ShardMsg, ShardRunner, ShardSettings};

/// Frames read per duty-cycle pass at most.
pub const FRAMES_PER_PASS_MAX: usize = 64;
/// A pass stops reading frames once it has handled this many events (a frame is never
/// split, so one pass handles at most this plus one batch).
pub const EVENTS_PER_PASS_MAX: usize = 8_192;
/// The log's retention (size and age, as configured) is applied once per this many frames.
pub const RETENTION_EVERY_FRAMES: u64 = 1_024;
/// Outgoing frames held while the ring is full; past it the oldest are dropped (counted).
pub const OUTBOX_FRAMES_MAX: usize = 4_096;

/// The engine's settings.
///
/// ```
/// use agentwire_streaming::adapter::StreamEngineConfig;
/// let c = StreamEngineConfig::default();
/// assert_eq!((c.name.as_str(), c.alerts_topic.as_str()), ("streaming", "stream.alerts"));
/// ```
#[derive(Debug, Clone)]
pub struct StreamEngineConfig {
    /// The endpoint's agent name.
    pub name: String,
    /// The feature id it serves.
    pub feature_id: u32,
    /// Windows over every key.
    pub window: WindowSpec,
    /// Where window results are published (`None`: not published).
    pub results_topic: Option<String>,
    /// Where alerts are published.
    pub alerts_topic: String,
    /// The detector each key gets (a [`crate::detect::NAMES`] entry).
    pub detector: String,
    /// Scores at or above this publish an alert.
    pub alert_threshold: f64,
    /// The most keys with a detector on one shard (so the engine holds at most `shards`
    /// times this); events of further keys are windowed but not scored (counted in
    /// [`EngineStats::events_unscored`]). A `cad-ose` detector reserves its context tables
    /// up front (tens of MB of address space, about 0.5 MB touched), so this bounds the
    /// engine's memory.
    pub detector_keys_max: usize,
    /// Events whose time is further than this ahead of the host's clock are refused (one
    /// agent's far-future time would otherwise move the watermark past everyone's windows);
    /// `None`: no limit (replays of old or synthetic data with a clock of their own).
    pub future_tolerance_ns: Option<i64>,
    /// Processing shards (1 to 256): each key's windows and detector live on shard
    /// `shard_of(key, shards)`, and the host drives each shard's runner on its own core
    /// (the daemon: the streaming partition's active cores). [`StreamEngine::set_shards`]
    /// changes it while running.
    pub shards: usize,
    /// The state directory: the durable log accepted events are appended to before they are
    /// processed and acknowledged (one append per frame: group commit), and the checkpoints
    /// a restart resumes from ([`durable`]); `None`: events are processed in memory only.
    pub state: Option<durable::StateConfig>,
}

impl Default for StreamEngineConfig {
    fn default() -> Self {
        Self {
            name: "streaming".into(),
            feature_id: STREAM_FEATURE_ID,
            window: WindowSpec::new(WindowKind::Tumbling {
                size_ns: 1_000_000_000,
            }),
            results_topic: Some("stream.windows".into()),
            alerts_topic: "stream.alerts".into(),
            detector: crate::detect::DEFAULT.into(),
            alert_threshold: 0.99,
            detector_keys_max: 1_024,
            future_tolerance_ns: Some(300_000_000_000),
            shards: 1,
            state: None,
        }
    }
}

/// What the engine counted.
///
/// ```
/// use agentwire_streaming::adapter::EngineStats;
/// assert_eq!(EngineStats::default().events_accepted, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Frames read.
    pub frames_in: u64,
    /// Frames read that were answers (acks, nacks, responses), never event batches: the
    /// router's nack of an alert published while no one subscribed comes back this way.
    /// Not answered, so two parties can never answer each other's answers forever.
    pub answers_in: u64,
    /// Events taken.
    pub events_accepted: u64,
    /// Events refused as malformed.
    pub events_malformed: u64,
    /// Events past `detector_keys_max` keys: windowed, not scored.
    pub events_unscored: u64,
    /// Alerts published.
    pub alerts: u64,
    /// Window results published.
    pub results: u64,
    /// Acks sent to senders.
    pub acks: u64,
    /// Outgoing frames dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Events appended to the durable log.
    pub events_logged: u64,
    /// Frames refused because the log could not be written (their events are not taken).
    pub log_errors: u64,
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// Checkpoints that failed (the engine runs on; the next one retries).
    pub checkpoint_errors: u64,
    /// Bytes of the last checkpoint's engine state.
    pub checkpoint_bytes: u64,
    /// The epoch restored at start (0: none).
    pub restored_epoch: u64,
    /// Events replayed from the log after the restored checkpoint.
    pub events_replayed: u64,
    /// Logged events retention deleted before they could be replayed (lost to the state).
    pub replay_gap_events: u64,
    /// Log records that did not decode during the replay (skipped).
    pub replay_malformed: u64,
    /// Processing shards now.
    pub shards: u64,
    /// Times the shards were rebuilt for another count.
    pub rescales: u64,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The router refused the endpoint or a topic.
    #[error("router: {0}")]
    Endpoint(#[from] EndpointError),
    /// The window spec.
    #[error("window: {0}")]
    Spec(#[from] SpecError),
    /// The detector name.
    #[error(transparent)]
    Detector(#[from] UnknownDetector),
    /// The state directory (log or checkpoints) could not be opened or restored.
    #[error("state: {0}")]
    State(#[from] durable::StateError),
}

/// Each key's detector.
pub(crate) type Detectors = HashMap<Key, Box<dyn Detector>>;

/// A barrier under way: every shard snapshots at it; then the state is committed (with a
/// state directory) and, if asked, the shards are rebuilt for another count.
#[derive(Debug, Clone, Copy)]
struct Barrier {
    epoch: u64,
    commit: bool,
    rescale_to: Option<usize>,
}

/// The engine's ingest state besides its endpoint (split so frames can be read while it
/// changes): decoding, the log, the shards' queues, checkpoints.
struct Core {
    config: StreamEngineConfig,
    outbox: VecDeque<Frame>,
    stats: EngineStats,
    aligned: rkyv::util::AlignedVec<16>,
    /// A frame's events, reused.
    events: Vec<Event>,
    /// The durable log and checkpoints, if configured, and the log's encode buffers
    /// (reused).
    durable: Option<durable::Durable>,
    encoded: Vec<u8>,
    ends: Vec<usize>,
    settings: Arc<ShardSettings>,
    links: Vec<Arc<ShardLink>>,
    /// Shards stopped by a rescale whose last outputs may still wait to be sent.
    retiring: Vec<Arc<ShardLink>>,
    /// Runners made and not yet taken by the host.
    new_runners: Vec<ShardRunner>,
    /// Messages that found their shard's queue full, in order; no frame is read until they
    /// are delivered.
    pending: VecDeque<(usize, ShardMsg)>,
    /// The largest event time taken, and the last one sent to every shard as a tick.
    max_event_time_ns: Option<i64>,
    ticked_ns: Option<i64>,
    /// The epoch outputs belong to now (the next barrier closes it).
    epoch: u64,
    barrier: Option<Barrier>,
    /// The shard count asked for by [`StreamEngine::set_shards`], applied at a barrier.
    shards_wanted: usize,
}

/// The streaming engine as a router endpoint.
pub struct StreamEngine {
    endpoint: Endpoint,
    core: Core,
}

impl StreamEngine {
    /// Registers the engine with the router (name, capability `stream-ingest` 1.0.0, its
    /// feature id), resolves its topics, restores its state (if it has a state directory
    /// with a checkpoint) onto `config.shards` shards, and makes their runners
    /// ([`StreamEngine::take_runners`]).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-reg-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let config = StreamEngineConfig { detector: "no-such".into(), ..Default::default() };
    /// assert!(StreamEngine::register(router.control(), config).is_err());
    /// ```
    pub fn register(
        control: &RouterControl,
        config: StreamEngineConfig,
    ) -> Result<Self, EngineError> {
        by_name(&config.detector)?;
        WindowOperator::new(config.window.clone())?;
        let shards = config.shards.clamp(1, SHARDS_MAX);
        let mut stats = EngineStats::default();
        let mut epoch = 1;
        let mut snapshots = Vec::new();
        let mut max_event_time_ns = None;
        let durable = match &config.state {
            None => None,
            Some(state) => {
                let opened = durable::Durable::open(state)?;
                if opened.torn_bytes_cut > 0 {
                    note(&format!(
                        "log {}: cut {} bytes of a torn tail at open",
                        state.log.dir.display(),
                        opened.torn_bytes_cut
                    ));
                }
                if let Some(restored) = opened.restored {
                    if restored.detector != config.detector {
                        return Err(durable::StateError::Restore {
                            dir: opened.durable.checkpoint_dir().to_path_buf(),
                            why: format!(
                                "written with detector {:?}, configured {:?} (move the state \
                                 directory aside to start empty)",
                                restored.detector, config.detector
                            ),
                        }
                        .into());
                    }
                    stats.restored_epoch = restored.epoch;
                    epoch = restored.epoch + 1;
                    snapshots = restored.shards;
                    max_event_time_ns = restored.max_event_time_ns;
                }
                if opened.gap_records > 0 {
                    stats.replay_gap_events = opened.gap_records;
                    note(&format!(
                        "log {}: retention deleted {} events after the last checkpoint; the \
                         state resumes without them",
                        state.log.dir.display(),
                        opened.gap_records
                    ));
                }
                if let Some(replay) = opened.durable.replay {
                    note(&format!(
                        "restored epoch {}; replaying {} logged events",
                        stats.restored_epoch,
                        replay.end - replay.next
                    ));
                }
                Some(opened.durable)
            }
        };
        let identity = Registration {
            name: config.name.clone(),
            capabilities: vec![CapabilitySpec {
                name: STREAM_CAPABILITY.into(),
                version: "1.0.0".into(),
            }],
            features: vec![config.feature_id],
            ..Default::default()
        };
        let mut endpoint = control.register_endpoint(identity, EndpointKind::InProcess)?;
        let alerts_topic_id = endpoint.topic_id(&config.alerts_topic)?;
        let results_topic_id = match &config.results_topic {
            Some(topic) => Some(endpoint.topic_id(topic)?),
            None => None,
        };
        let settings = Arc::new(ShardSettings {
            detector: config.detector.clone(),
            alert_threshold: config.alert_threshold,
            detector_keys_max: config.detector_keys_max,
            quantiles: config.window.quantiles.clone(),
            alerts_topic_id,
            results_topic_id,
        });
        let mut core = Core {
            config,
            outbox: VecDeque::new(),
            stats,
            aligned: rkyv::util::AlignedVec::new(),
            events: Vec::new(),
            durable,
            encoded: Vec::new(),
            ends: Vec::new(),
            settings,
            links: Vec::new(),
            retiring: Vec::new(),
            new_runners: Vec::new(),
            pending: VecDeque::new(),
            max_event_time_ns,
            ticked_ns: max_event_time_ns,
            epoch,
            barrier: None,
            shards_wanted: shards,
        };
        // A restore keeps the checkpoint's shard count until the replay is done, so replayed
        // outputs keep their ids; then a rescale moves to `shards`.
        let start_shards = match snapshots.len() {
            0 => shards,
            n => n.min(SHARDS_MAX),
        };
        core.build_shards(snapshots, start_shards)
            .map_err(|why| durable::StateError::Restore {
                dir: core
                    .config
                    .state
                    .as_ref()
                    .map(durable::StateConfig::checkpoint_dir)
                    .unwrap_or_default(),
                why: format!("{why} (move the state directory aside to start empty)"),
            })?;
        Ok(Self { endpoint, core })
    }

    /// The engine's agent id (what `discover("stream-ingest", "^1")` finds).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-id-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// assert!(engine.agent_id() > 0);
    /// ```
    pub fn agent_id(&self) -> u32 {
        self.endpoint.id()
    }

    /// What the engine counted (the shards' counts included).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-st-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// assert_eq!(engine.stats().frames_in, 0);
    /// ```
    pub fn stats(&self) -> EngineStats {
        let mut s = self.core.stats;
        for link in self.core.links.iter().chain(&self.core.retiring) {
            s.alerts += link.alerts.load(Ordering::Relaxed);
            s.results += link.results.load(Ordering::Relaxed);
            s.events_unscored += link.events_unscored.load(Ordering::Relaxed);
        }
        s.shards = self.core.links.len() as u64;
        s
    }

    /// The shard runners made since the last call (at registration, and after each
    /// rescale): the host drives each on its own executor until it is stopped.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-tr-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let config = StreamEngineConfig { shards: 3, ..Default::default() };
    /// let mut engine = StreamEngine::register(router.control(), config).unwrap();
    /// assert_eq!(engine.take_runners().len(), 3);
    /// assert!(engine.take_runners().is_empty());
    /// ```
    pub fn take_runners(&mut self) -> Vec<ShardRunner> {
        std::mem::take(&mut self.core.new_runners)
    }

    /// Asks for `shards` shards (1 to 256; the daemon passes the streaming partition's
    /// active cores). The engine takes a barrier: every shard snapshots, the state is
    /// checkpointed (with a state directory), then each key's windows and detector move to
    /// their new shard and new runners are made ([`StreamEngine::take_runners`]); the old
    /// runners stop. Nothing is lost or counted twice. Frames wait meanwhile.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-ss-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let mut engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// let mut runners = engine.take_runners();
    /// engine.set_shards(2);
    /// while engine.take_runners().is_empty() { // the old shard must take its barrier
    ///     engine.do_work();
    ///     runners.iter_mut().for_each(|r| { r.do_work(); });
    /// }
    /// assert_eq!(engine.stats().shards, 2);
    /// ```
    pub fn set_shards(&mut self, shards: usize) {
        self.core.shards_wanted = shards.clamp(1, SHARDS_MAX);
        self.core.maybe_rescale();
    }

    /// The shard that panicked, if one did (its keys are no longer processed: the host
    /// should stop the engine and say so).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-pa-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// assert_eq!(engine.panicked_shard(), None);
    /// ```
    pub fn panicked_shard(&self) -> Option<usize> {
        self.core
            .links
            .iter()
            .find(|l| l.panicked.load(Ordering::Acquire))
            .map(|l| l.index)
    }

    /// One duty-cycle pass of the ingest: sends the shards' outputs and what waits in the
    /// outbox, delivers queued messages, completes a barrier whose snapshots are in, and
    /// then (unless a barrier or a replay is under way) reads up to
    /// [`FRAMES_PER_PASS_MAX`] frames and hands their events to the shards. Returns the
    /// work done (0: idle).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-dw-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let mut engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// assert_eq!(engine.do_work(), 0);
    /// ```
    pub fn do_work(&mut self) -> usize {
        let mut work = self.send_outputs();
        work += self.core.deliver_pending();
        work += self.core.barrier_progress();
        if self.core.barrier.is_some() || !self.core.pending.is_empty() {
            self.core.ring();
            return work + self.send_outputs();
        }
        if self.core.replaying() {
            // The log's events come first, in the order they were taken; new frames wait
            // (their senders feel backpressure) until the replay is done.
            work += self.core.replay_some();
            self.core.tick();
            self.core.ring();
            return work + self.send_outputs();
        }
        self.core.maybe_rescale();
        self.core.checkpoint_if_due();
        if self.core.barrier.is_some() {
            self.core.ring();
            return work;
        }
        let mut events = 0;
        for _ in 0..FRAMES_PER_PASS_MAX {
            let core = &mut self.core;
            let read = self.endpoint.read(1, |header, payload| {
                events += core.on_frame(header, payload);
                None::<Frame>
            });
            // A ring the router found corrupt is its to report; the engine reads on.
            let read = read.unwrap_or(0);
            work += read;
            if read == 0 || events >= EVENTS_PER_PASS_MAX || !self.core.pending.is_empty() {
                break;
            }
        }
        self.core.tick();
        self.core.ring();
        work + self.send_outputs()
    }

    /// Starts a checkpoint now if the engine has a state directory and has taken events
    /// since the last one (the daemon asks on shutdown, so a clean restart replays
    /// nothing); [`StreamEngine::do_work`] completes it once every shard has taken its
    /// barrier ([`StreamEngine::checkpoint_pending`]). Returns whether one was started.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{durable::StateConfig, StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-ck-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = StreamEngineConfig { state: Some(StateConfig::new(dir.path())), ..Default::default() };
    /// let mut engine = StreamEngine::register(router.control(), config).unwrap();
    /// assert!(!engine.request_checkpoint()); // nothing taken yet
    /// ```
    pub fn request_checkpoint(&mut self) -> bool {
        let grown = self
            .core
            .durable
            .as_ref()
            .is_some_and(|d| d.replay.is_none() && d.grown().unwrap_or(false));
        if !grown || self.core.barrier.is_some() {
            return false;
        }
        self.core.start_barrier(true, None);
        true
    }

    /// Whether a checkpoint (or rescale) barrier is under way.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-cp-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// assert!(!engine.checkpoint_pending());
    /// ```
    pub fn checkpoint_pending(&self) -> bool {
        self.core.barrier.is_some()
    }

    /// Parks until the router rings the engine's doorbell or `timeout` passes.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-park-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let engine = StreamEngine::register(router.control(), StreamEngineConfig::default()).unwrap();
    /// engine.park(std::time::Duration::from_millis(1));
    /// ```
    pub fn park(&self, timeout: std::time::Duration) {
        self.endpoint.doorbell().wait(timeout);
    }

    /// Sends the outbox (acks, and an output a full ring sent back), then the shards'
    /// outputs while the ring takes them. Returns the frames sent.
    fn send_outputs(&mut self) -> usize {
        let mut sent = 0;
        while let Some((header, payload)) = self.core.outbox.front() {
            if self.endpoint.try_send(*header, payload).is_err() {
                return sent;
            }
            self.core.outbox.pop_front();
            sent += 1;
        }
        let core = &mut self.core;
        for link in core.links.iter().chain(&core.retiring) {
            while let Some((header, payload)) = link.outbox.pop() {
                if self.endpoint.try_send(header, &payload).is_err() {
                    core.outbox.push_back((header, payload));
                    return sent;
                }
                sent += 1;
            }
        }
        core.retiring
            .retain(|l| !(l.stopped.load(Ordering::Acquire) && l.outbox.is_empty()));
        sent
    }
}

impl Core {
    /// Makes `shards` shards holding `snapshots` (one per earlier shard, or none), each
    /// key's windows and detector on its new shard, and their runners.
    fn build_shards(
        &mut self,
        snapshots: Vec<durable::ShardSnapshot>,
        shards: usize,
    ) -> Result<(), String> {
        let mut detectors: Vec<Detectors> = (0..shards).map(|_| HashMap::new()).collect();
        let mut windows = Vec::with_capacity(snapshots.len());
        for s in snapshots {
            windows.push(s.window);
            for (key, bytes) in s.detectors {
                let d = crate::detect::restore(&self.config.detector, &bytes)
                    .map_err(|e| format!("key {key}: {e}"))?;
                detectors[shard_of(&key, shards)].insert(key, d);
            }
        }
        let windows = OperatorSnapshot::reshard(windows, shards, shard_of);
        let old = std::mem::take(&mut self.links);
        for (index, (window, detectors)) in windows.into_iter().zip(detectors).enumerate() {
            let op = WindowOperator::restore(self.config.window.clone(), window)
                .map_err(|e| format!("the windows do not fit this window spec: {e}"))?;
            let link = Arc::new(ShardLink::new(index));
            self.links.push(link.clone());
            self.new_runners.push(ShardRunner::new(
                link,
                self.settings.clone(),
                op,
                detectors,
                self.epoch,
            ));
        }
        // The old shards stop after their last outputs are sent.
        for link in old {
            let _ = link.inbox.push(ShardMsg::Stop);
            link.bell.ring();
            self.retiring.push(link);
        }
        Ok(())
    }

    fn replaying(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.replay.is_some())
    }

    /// Hands `event` to its shard with the largest event time taken before it.
    fn distribute(&mut self, event: Event) {
        let shard = shard_of(&event.key, self.links.len());
        let time_ns = event.event_time_ns;
        let msg = ShardMsg::Event {
            event,
            max_before_ns: self.max_event_time_ns,
        };
        if time_in_range(time_ns) && self.max_event_time_ns.is_none_or(|m| time_ns > m) {
            self.max_event_time_ns = Some(time_ns);
        }
        self.send(shard, msg);
    }

    /// Queues `msg` to `shard`, behind what already waits.
    fn send(&mut self, shard: usize, msg: ShardMsg) {
        if self.pending.is_empty() {
            if let Err(msg) = self.links[shard].inbox.push(msg) {
                self.pending.push_back((shard, msg));
            }
        } else {
            self.pending.push_back((shard, msg));
        }
    }

    /// Delivers waiting messages in order until a queue is full. Returns those delivered.
    fn deliver_pending(&mut self) -> usize {
        let mut delivered = 0;
        while let Some((shard, msg)) = self.pending.pop_front() {
            if let Err(msg) = self.links[shard].inbox.push(msg) {
                self.pending.push_front((shard, msg));
                break;
            }
            delivered += 1;
        }
        delivered
    }

    /// Tells every shard the input's progress if it moved since the last tick.
    fn tick(&mut self) {
        let Some(max) = self.max_event_time_ns else {
            return;
        };
        if self.ticked_ns == Some(max) {
            return;
        }
        self.ticked_ns = Some(max);
        for shard in 0..self.links.len() {
            self.send(shard, ShardMsg::Tick(max));
        }
    }

    fn ring(&self) {
        for link in &self.links {
            if !link.inbox.is_empty() {
                link.bell.ring();
            }
        }
    }

    /// Sends a barrier for the current epoch to every shard (behind a tick, so all share
    /// the input's progress).
    fn start_barrier(&mut self, commit: bool, rescale_to: Option<usize>) {
        self.ticked_ns = None;
        self.tick();
        for shard in 0..self.links.len() {
            self.send(shard, ShardMsg::Barrier(self.epoch));
        }
        if let Some(d) = self.durable.as_mut() {
            d.checkpoint_started();
        }
        self.barrier = Some(Barrier {
            epoch: self.epoch,
            commit: commit && self.durable.is_some(),
            rescale_to,
        });
        self.ring();
    }

    /// A rescale barrier, if another shard count is wanted and none is under way.
    fn maybe_rescale(&mut self) {
        if self.shards_wanted != self.links.len() && self.barrier.is_none() && !self.replaying() {
            self.start_barrier(true, Some(self.shards_wanted));
        }
    }

    /// Completes the barrier once every shard has taken it: commits the checkpoint (with a
    /// state directory) and rebuilds the shards if a rescale was asked. Returns 1 if it
    /// completed.
    fn barrier_progress(&mut self) -> usize {
        let Some(barrier) = self.barrier else {
            return 0;
        };
        // Every shard took the barrier, and every output made before it has left for the
        // router: a checkpoint never covers an output that a crash could still lose.
        let taken = self.links.iter().all(|l| {
            l.snapshot
                .lock()
                .map(|s| s.as_ref().is_some_and(|(e, _)| *e == barrier.epoch))
                .unwrap_or(false)
        });
        let sent = self.outbox.is_empty() && self.links.iter().all(|l| l.outbox.is_empty());
        if !taken || !sent {
            return 0;
        }
        let snapshots: Vec<durable::ShardSnapshot> = self
            .links
            .iter()
            .filter_map(|l| {
                l.snapshot
                    .lock()
                    .ok()
                    .and_then(|mut s| s.take())
                    .map(|s| s.1)
            })
            .collect();
        self.barrier = None;
        self.epoch = barrier.epoch + 1;
        if barrier.commit {
            if let Some(d) = self.durable.as_mut() {
                match d.commit(
                    barrier.epoch,
                    &self.config.detector,
                    snapshots.clone(),
                    self.max_event_time_ns,
                ) {
                    Ok(bytes) => {
                        self.stats.checkpoints += 1;
                        self.stats.checkpoint_bytes = bytes;
                    }
                    Err(e) => {
                        self.stats.checkpoint_errors += 1;
                        note(&format!("checkpoint: {e}"));
                    }
                }
            }
        }
        if let Some(shards) = barrier.rescale_to {
            for link in &self.links {
                self.stats.alerts += link.alerts.swap(0, Ordering::Relaxed);
                self.stats.results += link.results.swap(0, Ordering::Relaxed);
                self.stats.events_unscored += link.events_unscored.swap(0, Ordering::Relaxed);
            }
            let from = self.links.len();
            match self.build_shards(snapshots, shards) {
                Ok(()) => {
                    self.stats.rescales += 1;
                    note(&format!("shards: {from} -> {shards}"));
                }
                Err(why) => note(&format!("rescale to {shards} shards failed: {why}")),
            }
        }
        1
    }

    /// One frame: decode, log, hand the events to their shards; the ack, if one is due,
    /// joins the outbox (a reply returned to the ring's read would make a full tx ring stop
    /// the read before the frame is released, and the frame would be applied again on the
    /// next pass). Returns the events it held.
    fn on_frame(&mut self, header: &FrameHeader, payload: &[u8]) -> usize {
        self.stats.frames_in += 1;
        if matches!(
            header.kind(),
            FrameKind::Ack | FrameKind::Nack | FrameKind::Response | FrameKind::Control
        ) {
            // An answer is not a batch, and answering it (an ack for its "malformed" events)
            // drew the router's nack of that ack (the daemon is no agent), which the engine
            // answered again: a storm of a frame per pass that one unsubscribed alert
            // started (found by the Python binding's tests).
            self.stats.answers_in += 1;
            return 0;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let time_max_ns = self.time_max_ns();
        let mut outcome = ingest::decode_batch(payload, &mut self.aligned, time_max_ns, &mut |e| {
            events.push(e)
        });
        if let Err(why) = self.append_to_log(&events) {
            // Not durable, so not taken: the sender hears it and may send again.
            self.stats.log_errors += 1;
            outcome.malformed += outcome.accepted;
            outcome.accepted = 0;
            outcome.first_problem = format!("the engine's log cannot be written: {why}");
            events.clear();
        }
        self.stats.events_accepted += u64::from(outcome.accepted);
        self.stats.events_malformed += u64::from(outcome.malformed);
        let held = events.len() + outcome.malformed as usize;
        for event in events.drain(..) {
            self.distribute(event);
        }
        self.events = events;
        let wants_ack = header.kind() == FrameKind::Request || outcome.malformed > 0;
        if wants_ack {
            self.stats.acks += 1;
            let ack = IngestAck {
                accepted: outcome.accepted,
                malformed: outcome.malformed,
                first_problem: outcome.first_problem,
            };
            let bytes = encode_ack(&ack).to_vec();
            let reply =
                FrameHeader::new(FrameKind::Response, 0, header.source(), bytes.len() as u32)
                    .with_correlation(header.correlation());
            push_bounded(&mut self.outbox, &mut self.stats, (reply, bytes));
        }
        held
    }

    /// Hands up to [`EVENTS_PER_PASS_MAX`] logged events to their shards. Returns the
    /// events replayed.
    fn replay_some(&mut self) -> usize {
        let Some(durable) = self.durable.as_mut() else {
            return 0;
        };
        let Some(replay) = durable.replay else {
            return 0;
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let records_max = (replay.end - replay.next).min(EVENTS_PER_PASS_MAX as u64) as usize;
        let mut malformed = 0;
        let read = durable.log.read(
            durable::LOG_PARTITION,
            replay.next,
            records_max,
            &mut |_, _, bytes: &[u8]| match crate::codec::decode(bytes) {
                Ok(e) => events.push(e),
                Err(_) => malformed += 1,
            },
        );
        let next = match read {
            Ok(outcome) if outcome.records_visited > 0 => outcome.next_offset,
            Ok(_) => replay.end,
            Err(e) => {
                // A record that fails its checksum ends what can be replayed.
                note(&format!(
                    "replay stopped at offset {} of {}: {e}",
                    replay.next, replay.end
                ));
                replay.end
            }
        };
        durable.replay = (next < replay.end).then_some(durable::Replay {
            next,
            end: replay.end,
        });
        let done = durable.replay.is_none();
        self.stats.replay_malformed += malformed;
        self.stats.events_replayed += events.len() as u64;
        if done {
            note(&format!(
                "replay done: {} events",
                self.stats.events_replayed
            ));
        }
        let replayed = events.len();
        for event in events.drain(..) {
            self.distribute(event);
        }
        self.events = events;
        replayed
    }

    /// A checkpoint barrier if one is due; a failure to tell is counted and said.
    fn checkpoint_if_due(&mut self) {
        match self.durable.as_ref().map(durable::Durable::due) {
            Some(Ok(true)) => self.start_barrier(true, None),
            Some(Err(e)) => {
                self.stats.checkpoint_errors += 1;
                note(&format!("checkpoint: {e}"));
            }
            _ => {}
        }
    }

    /// Appends `events` to the log as one batch (nothing without a log or events).
    fn append_to_log(&mut self, events: &[Event]) -> Result<(), crate::log::LogError> {
        let Some(log) = self.durable.as_mut().map(|d| &mut d.log) else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        self.ends.clear();
        for e in events {
            crate::codec::encode(e, &mut self.encoded);
            self.ends.push(self.encoded.len());
        }
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let records: Vec<&[u8]> = starts
            .zip(&self.ends)
            .map(|(a, &b)| &self.encoded[a..b])
            .collect();
        log.append_batch(durable::LOG_PARTITION, &records)?;
        self.stats.events_logged += records.len() as u64;
        if self.stats.frames_in % RETENTION_EVERY_FRAMES == 0 {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            log.enforce_retention(now_ms)?;
        }
        Ok(())
    }

    /// The latest event time taken now: the host's clock plus the configured tolerance.
    fn time_max_ns(&self) -> i64 {
        let Some(ahead_ns) = self.config.future_tolerance_ns else {
            return crate::event::EVENT_TIME_NS_MAX;
        };
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        now_ns.saturating_add(ahead_ns)
    }
}

/// A note for the operator, once, on stderr (the engine library has no logger of its own).
fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "agentwire streaming: {text}");
}

fn push_bounded(outbox: &mut VecDeque<Frame>, stats: &mut EngineStats, frame: Frame) {
    if outbox.len() >= OUTBOX_FRAMES_MAX {
        outbox.pop_front();
        stats.outbox_dropped += 1;
    }
    outbox.push_back(frame);
}
