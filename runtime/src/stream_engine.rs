//! The streaming engine in the daemon: `[streaming] enabled = true` registers the engine as
//! an in-process router endpoint ([`agentwire_streaming::adapter`]) and drives it on the
//! streaming partition's executors: the ingest (frames, the log, outputs, checkpoints) and
//! one processing shard per active core of the partition, each as a chain of jobs. A job
//! runs passes for up to [`SLICE`], or until it finds no work and has parked once, then
//! queues the next, so every job gets the partition's cores in turn and the cores can still
//! move between partitions (a job always ends). When the rebalancer lends the partition a
//! core or takes one back, the engine moves to as many shards at a barrier: every shard
//! snapshots, the state is checkpointed, and each key's windows and detector move to their
//! new shard; nothing is lost or counted twice.
//! The engine's counters show in `agentwire status` as `stream.*` and in
//! `agentwire stream status`.
//!
//! The engine keeps its state in a state directory (by default `stream/` beside the
//! dead-letter queue): every accepted event is logged before it is processed and
//! acknowledged, the windows and detectors are checkpointed every `checkpoint_interval_ms`
//! and when the daemon stops, and a restart restores the last checkpoint and replays the
//! log after it ([`agentwire_streaming::adapter::durable`]). While it replays, new events
//! wait in their senders' rings.
//!
//! ```toml
//! [streaming]
//! enabled = true                    # default false
//! detector = "cad-ose"              # per key (the default); see `agentwire stream nab-score`
//! alert_threshold = 0.99            # a score at or above it publishes an alert
//! alerts_topic = "stream.alerts"
//! results_topic = "stream.windows"  # "" publishes no window results
//! feature_id = 1398013953           # the engine's feature id (0x53540001)
//! detector_keys_max = 1024          # keys with a detector; further keys are not scored
//! future_tolerance_ms = 300000      # events further ahead of this host's clock are refused
//! state_dir = "/var/lib/agentwire/stream"  # log + checkpoints (default: `stream/` beside the
//!                                   # dead-letter queue; "": in memory only)
//! checkpoint_interval_ms = 10000    # 0: no checkpoints (a restart replays the whole log)
//! log_fsync_interval_ms = 10        # 0: fsync every batch before its ack
//! log_retention_bytes = 1073741824  # older segments are deleted
//! [streaming.window]                # as in a pipeline file (`agentwire stream run`)
//! kind = "tumbling"
//! size_ms = 1000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_router::control::RouterControl;
use agentwire_streaming::adapter::durable::StateConfig;
use agentwire_streaming::adapter::shard::ShardRunner;
use agentwire_streaming::adapter::{EngineStats, StreamEngine, StreamEngineConfig};
use agentwire_streaming::pipeline::file::WindowSection;
use serde::Deserialize;

use crate::partitions::Submitter;

/// The partition the engine runs on.
pub const PARTITION: &str = "streaming";
/// The longest one job drives the engine before it queues the next.
pub const SLICE: Duration = Duration::from_millis(2);
/// How long an idle engine parks on its doorbell within a slice.
const IDLE_PARK: Duration = Duration::from_micros(500);

/// `[streaming]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamingSection {
    /// Run the engine (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The feature id it serves.
    pub feature_id: Option<u32>,
    /// The detector each key gets.
    pub detector: Option<String>,
    /// Alert threshold in [0, 1].
    pub alert_threshold: Option<f64>,
    /// Alerts topic.
    pub alerts_topic: Option<String>,
    /// Window results topic (`""`: none).
    pub results_topic: Option<String>,
    /// Keys with a detector at most.
    pub detector_keys_max: Option<usize>,
    /// Events further than this ahead of the host's clock are refused (0: no limit).
    pub future_tolerance_ms: Option<u64>,
    /// The state directory: the durable log accepted events are appended to before they are
    /// processed and acknowledged, and the checkpoints a restart resumes from (default:
    /// `stream/` beside the dead-letter queue; `""`: in memory only).
    pub state_dir: Option<std::path::PathBuf>,
    /// Time between checkpoints, ms (default 10,000; 0: none, a restart replays the log).
    pub checkpoint_interval_ms: Option<u64>,
    /// The log's fsync interval, ms (0: every batch, before its ack).
    pub log_fsync_interval_ms: Option<u64>,
    /// The bytes the log keeps; older segments are deleted (default 1 GiB).
    pub log_retention_bytes: Option<u64>,
    /// The windows.
    pub window: Option<WindowSection>,
}

impl StreamingSection {
    /// The engine's settings, checked; the error names the key (`streaming.detector`).
    ///
    /// ```
    /// use agentwire_runtime::stream_engine::StreamingSection;
    /// let s = StreamingSection { enabled: true, alert_threshold: Some(2.0), ..Default::default() };
    /// assert_eq!(s.engine_config().unwrap_err(), ("streaming.alert_threshold", "2 is not in [0, 1]".to_string()));
    /// ```
    pub fn engine_config(&self) -> Result<StreamEngineConfig, (&'static str, String)> {
        self.engine_config_in(None)
    }

    /// [`Self::engine_config`], with the state in `default_state_dir` when `state_dir` is
    /// not set (the daemon passes `stream/` beside its dead-letter queue).
    ///
    /// ```
    /// use agentwire_runtime::stream_engine::StreamingSection;
    /// let s = StreamingSection { enabled: true, ..Default::default() };
    /// let c = s.engine_config_in(Some(std::path::Path::new("/srv/aw/stream"))).unwrap();
    /// assert!(c.state.unwrap().log.dir.ends_with("stream/log"));
    /// let off = StreamingSection { state_dir: Some("".into()), ..s };
    /// assert!(off.engine_config_in(Some(std::path::Path::new("/srv/aw/stream"))).unwrap().state.is_none());
    /// ```
    pub fn engine_config_in(
        &self,
        default_state_dir: Option<&std::path::Path>,
    ) -> Result<StreamEngineConfig, (&'static str, String)> {
        let mut c = StreamEngineConfig::default();
        if let Some(id) = self.feature_id {
            if id == 0 {
                return Err(("streaming.feature_id", "0 is no feature id".into()));
            }
            c.feature_id = id;
        }
        if let Some(d) = &self.detector {
            agentwire_streaming::detect::by_name(d)
                .map_err(|e| ("streaming.detector", e.to_string()))?;
            c.detector = d.clone();
        }
        if let Some(t) = self.alert_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(("streaming.alert_threshold", format!("{t} is not in [0, 1]")));
            }
            c.alert_threshold = t;
        }
        if let Some(topic) = &self.alerts_topic {
            if topic.is_empty() {
                return Err(("streaming.alerts_topic", "empty".into()));
            }
            c.alerts_topic = topic.clone();
        }
        if let Some(topic) = &self.results_topic {
            c.results_topic = (!topic.is_empty()).then(|| topic.clone());
        }
        if let Some(keys) = self.detector_keys_max {
            if keys == 0 {
                return Err(("streaming.detector_keys_max", "at least 1".into()));
            }
            c.detector_keys_max = keys;
        }
        if let Some(ms) = self.future_tolerance_ms {
            c.future_tolerance_ns = match ms {
                0 => None,
                ms => Some(
                    i64::try_from(ms)
                        .ok()
                        .and_then(|ms| ms.checked_mul(1_000_000))
                        .ok_or((
                            "streaming.future_tolerance_ms",
                            format!("{ms} is too large"),
                        ))?,
                ),
            };
        }
        let state_dir = match &self.state_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.as_path()),
            None => default_state_dir,
        };
        if let Some(dir) = state_dir {
            let mut state = StateConfig::new(dir);
            if let Some(ms) = self.checkpoint_interval_ms {
                state.checkpoint_interval_ms = ms;
            }
            let log = &mut state.log;
            log.batch_bytes_max = 16 << 20;
            log.retention_bytes_max = self.log_retention_bytes.unwrap_or(1 << 30);
            log.fsync = match self.log_fsync_interval_ms.unwrap_or(10) {
                0 => agentwire_streaming::log::FsyncPolicy::EveryBatch,
                interval_ms => agentwire_streaming::log::FsyncPolicy::Interval { interval_ms },
            };
            log.validate()
                .map_err(|e| ("streaming.state_dir", e.to_string()))?;
            c.state = Some(state);
        }
        if let Some(window) = &self.window {
            c.window = window.to_spec().map_err(|e| ("streaming.window", e))?;
        }
        Ok(c)
    }
}

/// The running engine's shared view: its counters, refreshed after each slice.
#[derive(Debug, Clone, Default)]
pub struct StreamHandle {
    stats: Arc<Mutex<EngineStats>>,
    agent_id: u32,
    /// False once the engine stopped (a panic in it, or the host shutting down).
    running: Arc<AtomicBool>,
}

impl StreamHandle {
    /// The counters as `stream.*` status counters.
    ///
    /// ```
    /// let h = agentwire_runtime::stream_engine::StreamHandle::default();
    /// assert!(h.counters().iter().any(|(k, _)| k == "stream.events_accepted"));
    /// ```
    pub fn counters(&self) -> Vec<(String, u64)> {
        let s = self.stats.lock().map(|s| *s).unwrap_or_default();
        [
            ("stream.agent_id", u64::from(self.agent_id)),
            (
                "stream.running",
                u64::from(self.running.load(Ordering::Relaxed)),
            ),
            ("stream.frames_in", s.frames_in),
            ("stream.answers_in", s.answers_in),
            ("stream.events_accepted", s.events_accepted),
            ("stream.events_malformed", s.events_malformed),
            ("stream.events_unscored", s.events_unscored),
            ("stream.alerts", s.alerts),
            ("stream.results", s.results),
            ("stream.acks", s.acks),
            ("stream.outbox_dropped", s.outbox_dropped),
            ("stream.events_logged", s.events_logged),
            ("stream.log_errors", s.log_errors),
            ("stream.checkpoints", s.checkpoints),
            ("stream.checkpoint_errors", s.checkpoint_errors),
            ("stream.checkpoint_bytes", s.checkpoint_bytes),
            ("stream.restored_epoch", s.restored_epoch),
            ("stream.events_replayed", s.events_replayed),
            ("stream.replay_gap_events", s.replay_gap_events),
            ("stream.replay_malformed", s.replay_malformed),
            ("stream.shards", s.shards),
            ("stream.rescales", s.rescales),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Registers the engine with one shard per active core of the streaming partition, and
/// queues its first slices there: the ingest's, and one per shard.
///
/// ```no_run
/// # fn f(control: &agentwire_router::RouterControl, s: agentwire_runtime::partitions::Submitter) {
/// let config = agentwire_streaming::adapter::StreamEngineConfig::default();
/// let handle = agentwire_runtime::stream_engine::start(control, s, config).unwrap();
/// # }
/// ```
pub fn start(
    control: &RouterControl,
    submitter: Submitter,
    mut config: StreamEngineConfig,
) -> Result<StreamHandle, String> {
    config.shards = submitter.active_cores(PARTITION).max(1);
    let mut engine = StreamEngine::register(control, config).map_err(|e| e.to_string())?;
    let handle = StreamHandle {
        stats: Arc::default(),
        agent_id: engine.agent_id(),
        running: Arc::new(AtomicBool::new(true)),
    };
    let shards = Shards::default();
    for runner in engine.take_runners() {
        start_shard(runner, &submitter, &shards)?;
    }
    let job = ingest_slice(
        engine,
        submitter.clone(),
        handle.stats.clone(),
        handle.running.clone(),
        shards,
    );
    submitter
        .submit(PARTITION, job)
        .map_err(|e| format!("the {PARTITION} partition: {e}"))?;
    Ok(handle)
}

/// The shard runners, so the ingest can drive them itself at shutdown (their own slices
/// are not queued any more once the host stops).
type Shards = Arc<Mutex<Vec<Arc<Mutex<ShardRunner>>>>>;

/// How long the checkpoint at shutdown may take.
const SHUTDOWN_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(5);

fn start_shard(runner: ShardRunner, submitter: &Submitter, shards: &Shards) -> Result<(), String> {
    let runner = Arc::new(Mutex::new(runner));
    if let Ok(mut all) = shards.lock() {
        all.push(runner.clone());
    }
    submitter
        .submit(
            PARTITION,
            shard_slice(runner, submitter.clone(), shards.clone()),
        )
        .map_err(|e| format!("the {PARTITION} partition: {e}"))
}

/// One slice of a shard: it runs until [`SLICE`] has passed or it finds no work (after one
/// park), then queues the next, so every job of the partition gets its cores in turn.
fn shard_slice(
    runner: Arc<Mutex<ShardRunner>>,
    submitter: Submitter,
    shards: Shards,
) -> crate::partitions::Job {
    Box::new(move || {
        let end = Instant::now() + SLICE;
        {
            // The ingest holds the lock only while it drives the shard at shutdown.
            let Ok(mut r) = runner.try_lock() else {
                return;
            };
            while Instant::now() < end && !submitter.stopping() && !r.is_stopped() {
                // A panic marks the shard (the ingest stops the engine and says so).
                let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.do_work()));
                match work {
                    Ok(0) => {
                        r.park(IDLE_PARK);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            if r.is_stopped() {
                drop(r);
                if let Ok(mut all) = shards.lock() {
                    all.retain(|s| !Arc::ptr_eq(s, &runner));
                }
                return;
            }
        }
        if submitter.stopping() {
            return;
        }
        let next = shard_slice(runner, submitter.clone(), shards);
        if let Err(e) = submitter.submit(PARTITION, next) {
            tracing::warn!("streaming shard stopped: {e}");
        }
    })
}

/// One slice of the engine's ingest (frames in, the log, outputs out, checkpoints and
/// rescales), which queues the next: it starts the new shards' slices, follows the
/// partition's active cores with the shard count, and at shutdown checkpoints.
fn ingest_slice(
    mut engine: StreamEngine,
    submitter: Submitter,
    stats: Arc<Mutex<EngineStats>>,
    running: Arc<AtomicBool>,
    shards: Shards,
) -> crate::partitions::Job {
    Box::new(move || {
        let end = Instant::now() + SLICE;
        let mut pass = || {
            while Instant::now() < end && !submitter.stopping() {
                if engine.do_work() == 0 {
                    engine.park(IDLE_PARK);
                    break;
                }
            }
        };
        // A bug in a stage or detector must not pass silently: the engine stops, says so
        // once, and `stream.running` turns 0.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut pass)).is_err() {
            running.store(false, Ordering::Relaxed);
            tracing::error!("streaming engine panicked and stopped; its endpoint is removed");
            return;
        }
        for runner in engine.take_runners() {
            if let Err(e) = start_shard(runner, &submitter, &shards) {
                tracing::warn!("streaming shard not started: {e}");
            }
        }
        if let Some(shard) = engine.panicked_shard() {
            running.store(false, Ordering::Relaxed);
            tracing::error!(
                shard,
                "a streaming shard panicked; the engine stopped and its endpoint is removed"
            );
            return;
        }
        // The shard count follows the partition's cores as the rebalancer lends and
        // returns them (a barrier moves the keys' state; nothing is lost). The engine
        // starts a barrier only when the count differs and none is under way.
        engine.set_shards(submitter.active_cores(PARTITION).max(1));
        if let Ok(mut s) = stats.lock() {
            *s = engine.stats();
        }
        if submitter.stopping() {
            // A clean stop leaves nothing to replay.
            checkpoint_at_shutdown(&mut engine, &shards);
            if let Ok(mut s) = stats.lock() {
                *s = engine.stats();
            }
            running.store(false, Ordering::Relaxed);
            return;
        }
        let next = ingest_slice(engine, submitter.clone(), stats, running.clone(), shards);
        if let Err(e) = submitter.submit(PARTITION, next) {
            // Only a host shutting down (or a queue a runaway filled) refuses: stop cleanly.
            running.store(false, Ordering::Relaxed);
            tracing::warn!("streaming engine stopped: {e}");
        }
    })
}

/// Checkpoints the engine, driving its shards on this thread (their slices are not queued
/// once the host stops), for at most [`SHUTDOWN_CHECKPOINT_TIMEOUT`].
fn checkpoint_at_shutdown(engine: &mut StreamEngine, shards: &Shards) {
    if !engine.request_checkpoint() {
        return;
    }
    let deadline = Instant::now() + SHUTDOWN_CHECKPOINT_TIMEOUT;
    let runners: Vec<_> = shards.lock().map(|s| s.clone()).unwrap_or_default();
    while engine.checkpoint_pending() {
        if Instant::now() > deadline {
            tracing::warn!(
                "streaming engine: the checkpoint at shutdown did not complete within {:?}; \
                 the next start replays the log",
                SHUTDOWN_CHECKPOINT_TIMEOUT
            );
            return;
        }
        let mut work = engine.do_work();
        for runner in &runners {
            if let Ok(mut r) = runner.lock() {
                work += r.do_work();
            }
        }
        if work == 0 {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_CONFIG_TOML};

    /// The `[streaming]` example in the embedded default, uncommented, is a valid config.
    #[test]
    fn the_documented_streaming_section_parses() {
        let block: String = DEFAULT_CONFIG_TOML
            .lines()
            .skip_while(|l| !l.starts_with("# [streaming]"))
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.trim_start_matches('#').trim_start().starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("[streaming.window]"), "{block}");
        let config = Config::parse(&block, "example.toml").unwrap();
        let section = config.streaming.unwrap();
        assert!(section.enabled);
        let engine = section.engine_config().unwrap();
        assert_eq!(engine.detector, "cad-ose");
        assert_eq!(engine.results_topic.as_deref(), Some("stream.windows"));
    }

    #[test]
    fn a_bad_window_is_refused_with_its_key() {
        let text =
            "[streaming]\nenabled = true\n[streaming.window]\nkind = \"tumbling\"\nsize_ms = 0\n";
        let e = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(e.contains("streaming.window"), "{e}");
        assert!(e.contains("window.size_ms = 0"), "{e}");
    }
}
