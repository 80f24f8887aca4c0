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

use std::collections::{HashMap, VecDeque};

use agentwire_router::control::RouterControl;
use agentwire_router::endpoint::{Endpoint, EndpointError, EndpointKind};
use agentwire_shm::control::{CapabilitySpec, Registration};
use agentwire_shm::stream_events::{encode_ack, IngestAck, STREAM_CAPABILITY, STREAM_FEATURE_ID};
use agentwire_shm::wire::{FrameHeader, FrameKind};

use crate::detect::{by_name, Detector, UnknownDetector};
use crate::event::{Event, Key};
use crate::output_json::output_json;
use crate::window::{Output, SpecError, WindowKind, WindowOperator, WindowSpec};

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
    /// The most keys with a detector; events of further keys are windowed but not scored
    /// (counted in [`EngineStats::events_unscored`]). A `cad-ose` detector reserves its
    /// context tables up front (tens of MB of address space, about 0.5 MB touched), so this
    /// bounds the engine's memory.
    pub detector_keys_max: usize,
    /// Events whose time is further than this ahead of the host's clock are refused (one
    /// agent's far-future time would otherwise move the watermark past everyone's windows);
    /// `None`: no limit (replays of old or synthetic data with a clock of their own).
    pub future_tolerance_ns: Option<i64>,
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
type Detectors = HashMap<Key, Box<dyn Detector>>;

/// The engine's state besides its endpoint (split so frames can be read while it changes).
struct Core {
    config: StreamEngineConfig,
    op: WindowOperator,
    detectors: Detectors,
    outbox: VecDeque<(FrameHeader, Vec<u8>)>,
    stats: EngineStats,
    alerts_topic_id: u32,
    results_topic_id: Option<u32>,
    aligned: rkyv::util::AlignedVec<16>,
    /// A frame's events, reused.
    events: Vec<Event>,
    /// The durable log and checkpoints, if configured, and the log's encode buffers
    /// (reused).
    durable: Option<durable::Durable>,
    /// Outputs published in the current epoch (the `seq` of the next one).
    output_seq: u64,
    encoded: Vec<u8>,
    ends: Vec<usize>,
}

/// The streaming engine as a router endpoint.
pub struct StreamEngine {
    endpoint: Endpoint,
    core: Core,
}

impl StreamEngine {
    /// Registers the engine with the router (name, capability `stream-ingest` 1.0.0, its
    /// feature id) and resolves its topics.
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
        let mut stats = EngineStats::default();
        let (op, detectors, durable) = match &config.state {
            None => (
                WindowOperator::new(config.window.clone())?,
                HashMap::new(),
                None,
            ),
            Some(state) => {
                let opened = durable::Durable::open(state)?;
                if opened.torn_bytes_cut > 0 {
                    note(&format!(
                        "log {}: cut {} bytes of a torn tail at open",
                        state.log.dir.display(),
                        opened.torn_bytes_cut
                    ));
                }
                let (op, detectors) = match opened.snapshot {
                    Some(snapshot) => {
                        stats.restored_epoch = opened.durable.epoch - 1;
                        restore_state(&config, snapshot, opened.durable.checkpoint_dir())?
                    }
                    None => (WindowOperator::new(config.window.clone())?, HashMap::new()),
                };
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
                (op, detectors, Some(opened.durable))
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
        Ok(Self {
            endpoint,
            core: Core {
                config,
                op,
                detectors,
                outbox: VecDeque::new(),
                stats,
                alerts_topic_id,
                results_topic_id,
                aligned: rkyv::util::AlignedVec::new(),
                events: Vec::new(),
                durable,
                output_seq: 0,
                encoded: Vec::new(),
                ends: Vec::new(),
            },
        })
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

    /// What the engine counted.
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
        self.core.stats
    }

    /// One duty-cycle pass: sends what waits in the outbox, reads up to
    /// [`FRAMES_PER_PASS_MAX`] frames and processes their events. Returns the frames read
    /// plus the frames sent (0: idle).
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
        let mut work = self.flush_outbox();
        if self.core.replaying() {
            // The log's events come first, in the order they were taken; new frames wait
            // (their senders feel backpressure) until the replay is done.
            return work + self.core.replay_some() + self.flush_outbox();
        }
        self.core.checkpoint_if_due();
        let mut events = 0;
        for _ in 0..FRAMES_PER_PASS_MAX {
            let core = &mut self.core;
            let read = self.endpoint.read(1, |header, payload| {
                events += core.on_frame(header, payload);
                None::<(FrameHeader, Vec<u8>)>
            });
            // A ring the router found corrupt is its to report; the engine reads on.
            let read = read.unwrap_or(0);
            work += read;
            if read == 0 || events >= EVENTS_PER_PASS_MAX {
                break;
            }
        }
        work + self.flush_outbox()
    }

    /// Commits a checkpoint now if the engine has a state directory and has taken events
    /// since the last one (the daemon calls it on shutdown, so a clean restart replays
    /// nothing). Returns whether one was written; an error is also counted in
    /// [`EngineStats::checkpoint_errors`].
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # use agentwire_streaming::adapter::{durable::StateConfig, StreamEngine, StreamEngineConfig};
    /// # let sock = std::env::temp_dir().join(format!("aw-doc-stream-ck-{}.sock", std::process::id()));
    /// # let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = StreamEngineConfig { state: Some(StateConfig::new(dir.path())), ..Default::default() };
    /// let mut engine = StreamEngine::register(router.control(), config).unwrap();
    /// assert!(!engine.checkpoint().unwrap()); // nothing taken yet
    /// ```
    pub fn checkpoint(&mut self) -> Result<bool, durable::StateError> {
        self.core.checkpoint()
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

    fn flush_outbox(&mut self) -> usize {
        let mut sent = 0;
        while let Some((header, payload)) = self.core.outbox.front() {
            if self.endpoint.try_send(*header, payload).is_err() {
                break;
            }
            self.core.outbox.pop_front();
            sent += 1;
        }
        sent
    }
}

impl Core {
    /// One frame: decode, window, score; the ack, if one is due, joins the outbox (a reply
    /// returned to the ring's read would make a full tx ring stop the read before the frame
    /// is released, and the frame would be applied again on the next pass). Returns the
    /// events it held.
    fn on_frame(&mut self, header: &FrameHeader, payload: &[u8]) -> usize {
        self.stats.frames_in += 1;
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
        for event in &events {
            self.take(event);
        }
        let held = events.len() + outcome.malformed as usize;
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

    fn replaying(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.replay.is_some())
    }

    /// Replays up to [`EVENTS_PER_PASS_MAX`] logged events, unless the outbox is half full
    /// (the replay waits for subscribers rather than dropping their outputs). Returns the
    /// events replayed.
    fn replay_some(&mut self) -> usize {
        if self.outbox.len() >= OUTBOX_FRAMES_MAX / 2 {
            return 0;
        }
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
        if durable.replay.is_none() {
            note(&format!(
                "replay done: {} events",
                self.stats.events_replayed + events.len() as u64
            ));
        }
        self.stats.replay_malformed += malformed;
        self.stats.events_replayed += events.len() as u64;
        for event in &events {
            self.take(event);
        }
        let replayed = events.len();
        self.events = events;
        replayed
    }

    /// A checkpoint if one is due; a failure is counted and said, and the engine runs on.
    fn checkpoint_if_due(&mut self) {
        let due = match self.durable.as_ref().map(durable::Durable::due) {
            Some(Ok(due)) => due,
            None => false,
            Some(Err(e)) => {
                self.stats.checkpoint_errors += 1;
                note(&format!("checkpoint: {e}"));
                false
            }
        };
        if due {
            let _ = self.checkpoint();
        }
    }

    fn checkpoint(&mut self) -> Result<bool, durable::StateError> {
        let Some(durable) = self.durable.as_mut() else {
            return Ok(false);
        };
        if durable.replay.is_some() || !durable.grown()? {
            return Ok(false);
        }
        let snapshot = durable::EngineSnapshot {
            detector: self.config.detector.clone(),
            window: self.op.snapshot(),
            detectors: self.detectors.iter().map(|(k, d)| (*k, d.save())).collect(),
        };
        let bytes = postcard::to_allocvec(&snapshot).expect("plain data serializes");
        match durable.commit(&bytes) {
            Ok(written) => {
                self.stats.checkpoints += 1;
                self.stats.checkpoint_bytes = written;
                self.output_seq = 0;
                Ok(true)
            }
            Err(e) => {
                self.stats.checkpoint_errors += 1;
                note(&format!("checkpoint: {e}"));
                Err(e)
            }
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
        log.append_batch(0, &records)?;
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

    /// The `(epoch, seq)` of the next output.
    fn next_output_id(epoch: Option<u64>, seq: &mut u64) -> (u64, u64) {
        let id = (epoch.unwrap_or(1), *seq);
        *seq += 1;
        id
    }

    fn take(&mut self, event: &Event) {
        let epoch = self.durable.as_ref().map(|d| d.epoch);
        let Core {
            op,
            outbox,
            stats,
            config,
            results_topic_id,
            output_seq,
            ..
        } = self;
        let quantiles = &config.window.quantiles;
        op.push(event, &mut |o: Output| {
            if let Some(topic) = *results_topic_id {
                stats.results += 1;
                let mut json = output_json(&o, quantiles);
                let (epoch, seq) = Self::next_output_id(epoch, output_seq);
                json["epoch"] = epoch.into();
                json["seq"] = seq.into();
                push_bounded(outbox, stats, publish(topic, json.to_string().into_bytes()));
            }
        });
        let detectors_full = self.detectors.len() >= self.config.detector_keys_max;
        let detector = match self.detectors.get_mut(&event.key) {
            Some(d) => d,
            None if detectors_full => {
                self.stats.events_unscored += 1;
                return;
            }
            None => {
                let d = by_name(&self.config.detector).expect("checked at registration");
                self.detectors.entry(event.key).or_insert(d)
            }
        };
        let score = detector.score(event.event_time_ns, event.value);
        if score >= self.config.alert_threshold {
            self.stats.alerts += 1;
            let (epoch, seq) = Self::next_output_id(epoch, &mut self.output_seq);
            let alert = serde_json::json!({
                "key": event.key, "event_time_ns": event.event_time_ns, "value": event.value,
                "score": score, "detector": self.config.detector, "epoch": epoch, "seq": seq,
            });
            let frame = publish(self.alerts_topic_id, alert.to_string().into_bytes());
            push_bounded(&mut self.outbox, &mut self.stats, frame);
        }
    }
}

/// The windows and detectors a checkpoint holds, for `config` (a checkpoint written with
/// another detector or window is refused, naming what differs).
fn restore_state(
    config: &StreamEngineConfig,
    snapshot: durable::EngineSnapshot,
    dir: &std::path::Path,
) -> Result<(WindowOperator, Detectors), durable::StateError> {
    let refuse = |why: String| durable::StateError::Restore {
        dir: dir.to_path_buf(),
        why: format!("{why} (move the state directory aside to start empty)"),
    };
    if snapshot.detector != config.detector {
        return Err(refuse(format!(
            "written with detector {:?}, configured {:?}",
            snapshot.detector, config.detector
        )));
    }
    let op = WindowOperator::restore(config.window.clone(), snapshot.window)
        .map_err(|e| refuse(format!("its windows do not fit this window spec: {e}")))?;
    if snapshot.detectors.len() > config.detector_keys_max {
        return Err(refuse(format!(
            "it holds {} detectors, more than detector_keys_max {}",
            snapshot.detectors.len(),
            config.detector_keys_max
        )));
    }
    let mut detectors = HashMap::with_capacity(snapshot.detectors.len());
    for (key, bytes) in snapshot.detectors {
        let d = crate::detect::restore(&config.detector, &bytes)
            .map_err(|e| refuse(format!("key {key}: {e}")))?;
        detectors.insert(key, d);
    }
    Ok((op, detectors))
}

/// A note for the operator, once, on stderr (the engine library has no logger of its own).
fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "agentwire streaming: {text}");
}

fn publish(topic_id: u32, payload: Vec<u8>) -> (FrameHeader, Vec<u8>) {
    let header = FrameHeader::new(FrameKind::Publish, 0, topic_id, payload.len() as u32);
    (header, payload)
}

fn push_bounded(
    outbox: &mut VecDeque<(FrameHeader, Vec<u8>)>,
    stats: &mut EngineStats,
    frame: (FrameHeader, Vec<u8>),
) {
    if outbox.len() >= OUTBOX_FRAMES_MAX {
        outbox.pop_front();
        stats.outbox_dropped += 1;
    }
    outbox.push_back(frame);
}
