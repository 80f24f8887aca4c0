//! The digital twin in the daemon: `[twin] enabled = true` samples the live mirror
//! ([`crate::mirror`]) on the twin partition's executor every `sample_interval_ms` and keeps
//! the signals ([`agentwire_twin::signals`]) in an on-disk history
//! ([`agentwire_twin::history`]: 1 s buckets for a day, 1 min for a month, bounded by
//! `history_bytes_max`) that survives restarts. Its counters show in `agentwire status` as
//! `twin.*`.
//!
//! Each sample is one short job on the `twin` partition, queued when it is due by the
//! `aw-twin-tick` thread (which only sleeps and queues): the job never waits, so the
//! partition's busy ratio is the twin's real work and its core stays free to move between
//! partitions. A sample still queued or running when the next is due is not queued twice
//! (counted in `twin.samples_skipped`). Open buckets are written every [`FLUSH_INTERVAL`]
//! and when the daemon stops.
//!
//! ```toml
//! [twin]
//! enabled = true                # default false
//! sample_interval_ms = 1000     # 10 ..= 60000
//! state_dir = "/var/lib/agentwire/twin"  # default: `twin/` beside the dead-letter queue
//! history_bytes_max = 268435456 # the history's bound on disk (default 256 MiB)
//! risk_interval_ms = 60000      # how often every watch is assessed
//! risk_step_ms = 60000          # 1000 or 60000: the history tier risks are assessed on
//! risk_horizon_steps = 60       # steps to look ahead
//! alert_level = 0.5             # a crossing probability at or above it publishes an alert
//! alerts_topic = "twin.alerts"
//! [[twin.watch]]                # default: rx rings 90 %, router and partitions busy 95 %
//! signal = "router.rx_occupancy_max_permille"
//! threshold = 900
//! ```
//!
//! Every `risk_interval_ms` the twin assesses each watch on the last day of the chosen
//! tier's buckets ([`agentwire_twin::alerts`]) and, for each whose crossing probability
//! within the horizon is at or above `alert_level`, publishes the alert's JSON on
//! `alerts_topic` from its in-process endpoint `agentwire-twin` (and logs it). The last
//! assessment of every watch is the status fact `twin_risks`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_router::control::RouterControl;
use agentwire_router::endpoint::{Endpoint, EndpointKind};
use agentwire_shm::control::Registration;
use agentwire_shm::wire::{FrameHeader, FrameKind};
use agentwire_twin::alerts::{RiskCheck, RiskSettings, WatchSpec};
use agentwire_twin::history::{History, HistoryConfig};
use agentwire_twin::mirror::Mirror;
use agentwire_twin::signals::Sampler;
use serde::Deserialize;

use crate::partitions::Submitter;

/// The partition the twin runs on.
pub const PARTITION: &str = "twin";
/// How often open history buckets are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Default sample interval, ms.
pub const SAMPLE_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Buckets of history a risk assessment forecasts from, at most (a day of 1 min buckets).
pub const RISK_HISTORY_STEPS: usize = 1440;
/// The twin's endpoint name (it publishes alerts from it).
pub const ENDPOINT_NAME: &str = "agentwire-twin";
/// Default bound of the history on disk, bytes.
pub const HISTORY_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// `[twin]` as written.
///
/// ```
/// let s = agentwire_runtime::twin_engine::TwinSection { enabled: true, ..Default::default() };
/// assert_eq!(s.checked().unwrap().sample_interval, std::time::Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TwinSection {
    /// Run the twin (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Time between samples of the mirror, ms (10 ..= 60,000; default 1,000).
    pub sample_interval_ms: Option<u64>,
    /// The history's directory (default: `twin/` beside the dead-letter queue).
    pub state_dir: Option<PathBuf>,
    /// The history's bound on disk in bytes (at least 1 MiB; default 256 MiB).
    pub history_bytes_max: Option<u64>,
    /// Time between risk assessments, ms (100 ..= 3,600,000; default 60,000).
    pub risk_interval_ms: Option<u64>,
    /// The step risks are assessed in: 1000 (the history's 1 s buckets) or 60000 (its
    /// 1 min buckets; the default).
    pub risk_step_ms: Option<u64>,
    /// Steps to look ahead (1 ..= 2880; default 60: an hour of 1 min steps).
    pub risk_horizon_steps: Option<usize>,
    /// The crossing probability that publishes an alert, in (0, 1] (default 0.5).
    pub alert_level: Option<f64>,
    /// The topic alerts are published on (default `twin.alerts`).
    pub alerts_topic: Option<String>,
    /// The watched signals (default: [`agentwire_twin::alerts::default_watches`]).
    pub watch: Option<Vec<WatchSection>>,
}

/// `[[twin.watch]]`: a signal and the threshold it must not reach.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    /// The signal (a history series: `router.rx_occupancy_max_permille`, ...).
    pub signal: String,
    /// The threshold.
    pub threshold: f64,
    /// Failure is reaching it from above (default false: from below, rising).
    #[serde(default)]
    pub below: bool,
}

/// `[twin]` checked, with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinSettings {
    /// Time between risk assessments.
    pub risk_interval: Duration,
    /// How watches are assessed (tier, horizon, history, level).
    pub risk: RiskSettings,
    /// The topic alerts are published on.
    pub alerts_topic: String,
    /// The watches (`None`: the defaults for the daemon's partitions).
    pub watches: Option<Vec<WatchSpec>>,
    /// Time between samples.
    pub sample_interval: Duration,
    /// The history's directory, when the file names one.
    pub state_dir: Option<PathBuf>,
    /// The history's bound on disk.
    pub history_bytes_max: u64,
}

impl TwinSection {
    /// The settings, checked; the error names the key.
    ///
    /// ```
    /// use agentwire_runtime::twin_engine::TwinSection;
    /// let s = TwinSection { sample_interval_ms: Some(1), ..Default::default() };
    /// assert_eq!(s.checked().unwrap_err().0, "twin.sample_interval_ms");
    /// ```
    pub fn checked(&self) -> Result<TwinSettings, (&'static str, String)> {
        let ms = self
            .sample_interval_ms
            .unwrap_or(SAMPLE_INTERVAL_MS_DEFAULT);
        if !(10..=60_000).contains(&ms) {
            return Err((
                "twin.sample_interval_ms",
                format!("{ms} is not in 10..=60000"),
            ));
        }
        let bytes = self.history_bytes_max.unwrap_or(HISTORY_BYTES_MAX_DEFAULT);
        if bytes < 1 << 20 {
            return Err((
                "twin.history_bytes_max",
                format!("{bytes} is below 1048576 (1 MiB)"),
            ));
        }
        if self
            .state_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err((
                "twin.state_dir",
                "empty: name a directory or leave it out".into(),
            ));
        }
        let risk_ms = self.risk_interval_ms.unwrap_or(60_000);
        if !(100..=3_600_000).contains(&risk_ms) {
            return Err((
                "twin.risk_interval_ms",
                format!("{risk_ms} is not in 100..=3600000"),
            ));
        }
        let tier = match self.risk_step_ms.unwrap_or(60_000) {
            1000 => 0,
            60_000 => 1,
            other => {
                return Err((
                    "twin.risk_step_ms",
                    format!("{other}: must be 1000 or 60000 (a history tier)"),
                ))
            }
        };
        let horizon = self.risk_horizon_steps.unwrap_or(60);
        if !(1..=2880).contains(&horizon) {
            return Err((
                "twin.risk_horizon_steps",
                format!("{horizon} is not in 1..=2880"),
            ));
        }
        let level = self.alert_level.unwrap_or(0.5);
        if !(level > 0.0 && level <= 1.0) {
            return Err(("twin.alert_level", format!("{level} is not in (0, 1]")));
        }
        let topic = self
            .alerts_topic
            .clone()
            .unwrap_or_else(|| "twin.alerts".into());
        if topic.is_empty() {
            return Err(("twin.alerts_topic", "empty".into()));
        }
        let watches = match &self.watch {
            None => None,
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for w in list {
                    if w.signal.is_empty() || !w.threshold.is_finite() {
                        return Err((
                            "twin.watch",
                            format!(
                                "signal {:?}, threshold {}: a signal and a finite threshold",
                                w.signal, w.threshold
                            ),
                        ));
                    }
                    out.push(WatchSpec {
                        signal: w.signal.clone(),
                        threshold: w.threshold,
                        below: w.below,
                    });
                }
                Some(out)
            }
        };
        Ok(TwinSettings {
            risk_interval: Duration::from_millis(risk_ms),
            risk: RiskSettings {
                tier,
                horizon_steps: horizon,
                history_steps: RISK_HISTORY_STEPS,
                level,
            },
            alerts_topic: topic,
            watches,
            sample_interval: Duration::from_millis(ms),
            state_dir: self.state_dir.clone(),
            history_bytes_max: bytes,
        })
    }
}

/// The twin's counters (`agentwire status`, `twin.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwinStats {
    /// Mirror reads turned into samples.
    pub samples: u64,
    /// Mirror reads that failed (a busy slot on every try, a segment gone).
    pub read_errors: u64,
    /// Samples not queued because the previous one was still queued or running.
    pub samples_skipped: u64,
    /// Signal values appended to the history.
    pub values_appended: u64,
    /// Appends or flushes the history refused (each logged at most once a minute).
    pub history_errors: u64,
    /// Series in the history.
    pub series: u64,
    /// The history's bytes on disk.
    pub history_bytes: u64,
    /// Watches assessed (each watch each time, with enough history).
    pub risk_checks: u64,
    /// Assessments that failed (logged at most once a minute).
    pub risk_errors: u64,
    /// Alerts published.
    pub alerts_published: u64,
    /// Alerts not published: the endpoint's ring to the router was full.
    pub alerts_dropped: u64,
}

/// What one sampler job needs: the mirror, the sampler, the history and when to act next.
struct TwinState {
    mirror: Mirror,
    sampler: Sampler,
    history: History,
    started: Instant,
    next_flush: Instant,
    last_error_log: Option<Instant>,
    stats: TwinStats,
    risk: RiskSettings,
    risk_interval: Duration,
    next_risk: Instant,
    watches: Vec<WatchSpec>,
    /// The endpoint alerts are published from, and the alerts topic's id.
    endpoint: Endpoint,
    alerts_topic_id: u32,
    /// The last assessment of every watch (status fact `twin_risks`).
    last_risks: Vec<RiskCheck>,
}

/// The running twin: its counters, its tick thread, and its history to flush at shutdown.
#[derive(Clone)]
pub struct TwinHandle {
    state: Arc<Mutex<TwinState>>,
    history_dir: PathBuf,
    ticker: Arc<Ticker>,
}

/// The `aw-twin-tick` thread and how to stop it.
struct Ticker {
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for TwinHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinHandle")
            .field("history_dir", &self.history_dir)
            .finish()
    }
}

impl TwinHandle {
    /// The counters as `(name, value)` for the status report.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let s = self
            .state
            .lock()
            .map(|s| s.stats.clone())
            .unwrap_or_default();
        vec![
            ("twin.samples".into(), s.samples),
            ("twin.read_errors".into(), s.read_errors),
            ("twin.samples_skipped".into(), s.samples_skipped),
            ("twin.values_appended".into(), s.values_appended),
            ("twin.history_errors".into(), s.history_errors),
            ("twin.series".into(), s.series),
            ("twin.history_bytes".into(), s.history_bytes),
            ("twin.risk_checks".into(), s.risk_checks),
            ("twin.risk_errors".into(), s.risk_errors),
            ("twin.alerts_published".into(), s.alerts_published),
            ("twin.alerts_dropped".into(), s.alerts_dropped),
        ]
    }

    /// The last assessment of every watch as a JSON array (status fact `twin_risks`).
    pub fn risks_json(&self) -> String {
        let Ok(s) = self.state.lock() else {
            return "[]".into();
        };
        let step_ms = s.risk_step_ms();
        let items: Vec<String> = s
            .last_risks
            .iter()
            .map(|c| c.to_json(s.risk.horizon_steps, step_ms))
            .collect();
        format!("[{}]", items.join(","))
    }

    /// The history's directory.
    pub fn history_dir(&self) -> &Path {
        &self.history_dir
    }

    /// Stops the tick thread and writes the open buckets (the daemon calls this when it
    /// stops, after its partitions took their last jobs).
    pub fn finish(&self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        let thread = self.ticker.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            thread.thread().unpark();
            let _ = thread.join();
        }
        if let Ok(mut s) = self.state.lock() {
            if let Err(e) = s.history.flush() {
                tracing::warn!("twin history: the last flush failed: {e}");
            }
        }
    }
}

/// Opens the history in `settings.state_dir` (else `default_dir`), opens the mirror and
/// queues the first sampler job on the twin partition.
pub(crate) fn start(
    submitter: &Submitter,
    control: &RouterControl,
    partitions: &[String],
    settings: &TwinSettings,
    default_dir: &Path,
    stats_path: &Path,
    names_path: &Path,
) -> Result<TwinHandle, String> {
    let dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| default_dir.to_path_buf());
    let config = HistoryConfig::default().bytes_max(settings.history_bytes_max);
    let history =
        History::open(&dir, config).map_err(|e| format!("twin history {}: {e}", dir.display()))?;
    let mirror = Mirror::open(stats_path, names_path).map_err(|e| format!("twin mirror: {e}"))?;
    let mut endpoint = control
        .register_endpoint(
            Registration {
                name: ENDPOINT_NAME.into(),
                ..Default::default()
            },
            EndpointKind::InProcess,
        )
        .map_err(|e| format!("registering the twin's endpoint: {e}"))?;
    let alerts_topic_id = endpoint
        .topic_id(&settings.alerts_topic)
        .map_err(|e| format!("twin.alerts_topic {:?}: {e}", settings.alerts_topic))?;
    let watches = settings
        .watches
        .clone()
        .unwrap_or_else(|| agentwire_twin::alerts::default_watches(partitions));
    let now = Instant::now();
    let state = Arc::new(Mutex::new(TwinState {
        risk: settings.risk,
        risk_interval: settings.risk_interval,
        next_risk: now + settings.risk_interval,
        watches,
        endpoint,
        alerts_topic_id,
        last_risks: Vec::new(),
        mirror,
        sampler: Sampler::default(),
        history,
        started: now,
        next_flush: now + FLUSH_INTERVAL,
        last_error_log: None,
        stats: TwinStats::default(),
    }));
    let ticker = Arc::new(Ticker {
        stop: AtomicBool::new(false),
        thread: Mutex::new(None),
    });
    let thread = {
        let (state, submitter, ticker) = (state.clone(), submitter.clone(), ticker.clone());
        let interval = settings.sample_interval;
        std::thread::Builder::new()
            .name("aw-twin-tick".into())
            .spawn(move || tick(&state, &submitter, &ticker.stop, interval))
            .map_err(|e| format!("spawning aw-twin-tick: {e}"))?
    };
    if let Ok(mut t) = ticker.thread.lock() {
        *t = Some(thread);
    }
    Ok(TwinHandle {
        state,
        history_dir: dir,
        ticker,
    })
}

/// The tick thread: queues one sample job on the twin partition every `interval` (the
/// samples keep their period; one missed by more than an interval is skipped), never two at
/// once, until `stop` or the partitions stop.
fn tick(
    state: &Arc<Mutex<TwinState>>,
    submitter: &Submitter,
    stop: &AtomicBool,
    interval: Duration,
) {
    let in_flight = Arc::new(AtomicBool::new(false));
    let mut due = Instant::now();
    while !stop.load(Ordering::Relaxed) && !submitter.stopping() {
        let now = Instant::now();
        if now < due {
            std::thread::park_timeout(due - now);
            continue;
        }
        due += interval;
        if due < now {
            due = now + interval;
        }
        // SYNC POINT: in-flight (the job's Release store when it is done).
        if in_flight.swap(true, Ordering::AcqRel) {
            if let Ok(mut s) = state.lock() {
                s.stats.samples_skipped += 1;
            }
            continue;
        }
        let (job_state, job_flag) = (state.clone(), in_flight.clone());
        let job: crate::partitions::Job = Box::new(move || {
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Ok(mut s) = job_state.lock() {
                    s.step();
                }
            }));
            if stepped.is_err() {
                tracing::error!("a twin sample panicked; the next one runs as usual");
            }
            // SYNC POINT: in-flight (the tick's AcqRel swap).
            job_flag.store(false, Ordering::Release);
        });
        if let Err(e) = submitter.submit(PARTITION, job) {
            in_flight.store(false, Ordering::Release);
            if submitter.stopping() {
                break;
            }
            tracing::warn!("twin sample not queued: {e}");
        }
    }
}

impl TwinState {
    /// The resolution of the history tier risks are assessed on, ms.
    fn risk_step_ms(&self) -> u64 {
        self.history
            .config()
            .tiers_value()
            .get(self.risk.tier)
            .map_or(0, |t| t.resolution_ms)
    }

    /// Reads the mirror, appends its signals, flushes when due.
    fn step(&mut self) {
        let now = Instant::now();
        let state = match self.mirror.read() {
            Ok(state) => state,
            Err(e) => {
                self.stats.read_errors += 1;
                self.log_error(&format!("twin: reading the mirror: {e}"));
                return;
            }
        };
        let time_ms = wall_ms();
        let mono_ms = now.duration_since(self.started).as_millis() as u64;
        for (signal, value) in self.sampler.sample(&state, mono_ms) {
            match self.history.append(&signal, time_ms, value) {
                Ok(()) => self.stats.values_appended += 1,
                Err(e) => {
                    self.stats.history_errors += 1;
                    self.log_error(&format!("twin history: {e}"));
                }
            }
        }
        self.stats.samples += 1;
        if now >= self.next_flush {
            self.next_flush = now + FLUSH_INTERVAL;
            if let Err(e) = self.history.flush() {
                self.stats.history_errors += 1;
                self.log_error(&format!("twin history: flush: {e}"));
            }
        }
        self.stats.series = self.history.series().count() as u64;
        self.stats.history_bytes = self.history.bytes_total();
        if now >= self.next_risk {
            self.next_risk = now + self.risk_interval;
            self.assess_risks(time_ms);
        }
    }

    /// Assesses every watch on the history and publishes an alert for each at or above the
    /// level. The router's replies to the endpoint (a nack when nobody subscribes to the
    /// alerts topic) are read and dropped first, so its ring never fills.
    fn assess_risks(&mut self, time_ms: u64) {
        while let Ok(n) = self
            .endpoint
            .read(64, |_, _| None::<(FrameHeader, Vec<u8>)>)
        {
            if n == 0 {
                break;
            }
        }
        let step_ms = self.risk_step_ms();
        let mut checks = Vec::with_capacity(self.watches.len());
        let mut failures = Vec::new();
        for watch in &self.watches {
            match agentwire_twin::alerts::assess(&self.history, watch, &self.risk, time_ms) {
                Ok(Some(check)) => checks.push(check),
                Ok(None) => {} // not enough history yet
                Err(e) => failures.push(format!("twin risk {}: {e}", watch.signal)),
            }
        }
        for line in failures {
            self.stats.risk_errors += 1;
            self.log_error(&line);
        }
        for check in &checks {
            self.stats.risk_checks += 1;
            if !check.alert {
                continue;
            }
            let json = check.to_json(self.risk.horizon_steps, step_ms);
            let header = FrameHeader::new(
                FrameKind::Publish,
                0,
                self.alerts_topic_id,
                json.len() as u32,
            );
            match self.endpoint.try_send(header, json.as_bytes()) {
                Ok(()) => {
                    self.stats.alerts_published += 1;
                    tracing::warn!(
                        signal = %check.watch.signal,
                        probability = check.probability,
                        threshold = check.watch.threshold,
                        "twin alert: the signal may cross its threshold within the horizon"
                    );
                }
                Err(_) => self.stats.alerts_dropped += 1,
            }
        }
        self.last_risks = checks;
    }

    /// Logs `line` at most once a minute (every failure is counted).
    fn log_error(&mut self, line: &str) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_error_log = Some(now);
            tracing::warn!("{line} (further failures counted in twin.* for a minute)");
        }
    }
}

/// The wall clock in ms since the Unix epoch (the history's time: it outlives restarts).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
