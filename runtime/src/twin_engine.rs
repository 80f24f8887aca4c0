//! The digital twin in the daemon: `[twin] enabled = true` samples the live mirror
//! ([`crate::mirror`]) on the twin partition's executor every `sample_interval_ms` and keeps
//! the signals ([`agentwire_twin::signals`]) in an on-disk history
//! ([`agentwire_twin::history`]: 1 s buckets for a day, 1 min for a month, bounded by
//! `history_bytes_max`) that survives restarts. Its counters show in `agentwire status` as
//! `twin.*`.
//!
//! The sampler runs as a chain of short jobs on the `twin` partition: each waits at most
//! [`JOB_WAIT`] for the next sample to be due, so the partition's core stays free to move
//! between partitions. Open buckets are written every [`FLUSH_INTERVAL`] and when the
//! daemon stops.
//!
//! ```toml
//! [twin]
//! enabled = true                # default false
//! sample_interval_ms = 1000     # 10 ..= 60000
//! state_dir = "/var/lib/agentwire/twin"  # default: `twin/` beside the dead-letter queue
//! history_bytes_max = 268435456 # the history's bound on disk (default 256 MiB)
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_twin::history::{History, HistoryConfig};
use agentwire_twin::mirror::Mirror;
use agentwire_twin::signals::Sampler;
use serde::Deserialize;

use crate::partitions::Submitter;

/// The partition the twin runs on.
pub const PARTITION: &str = "twin";
/// The longest one sampler job waits for its sample to be due before it queues the next.
pub const JOB_WAIT: Duration = Duration::from_millis(10);
/// How often open history buckets are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Default sample interval, ms.
pub const SAMPLE_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Default bound of the history on disk, bytes.
pub const HISTORY_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// `[twin]` as written.
///
/// ```
/// let s = agentwire_runtime::twin_engine::TwinSection { enabled: true, ..Default::default() };
/// assert_eq!(s.checked().unwrap().sample_interval, std::time::Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
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
}

/// `[twin]` checked, with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinSettings {
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
        Ok(TwinSettings {
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
    /// Signal values appended to the history.
    pub values_appended: u64,
    /// Appends or flushes the history refused (each logged at most once a minute).
    pub history_errors: u64,
    /// Series in the history.
    pub series: u64,
    /// The history's bytes on disk.
    pub history_bytes: u64,
}

/// What one sampler job needs: the mirror, the sampler, the history and when to act next.
struct TwinState {
    mirror: Mirror,
    sampler: Sampler,
    history: History,
    started: Instant,
    interval: Duration,
    next_sample: Instant,
    next_flush: Instant,
    last_error_log: Option<Instant>,
    stats: TwinStats,
}

/// The running twin: its counters, and its history to flush at shutdown.
#[derive(Clone)]
pub struct TwinHandle {
    state: Arc<Mutex<TwinState>>,
    history_dir: PathBuf,
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
            ("twin.values_appended".into(), s.values_appended),
            ("twin.history_errors".into(), s.history_errors),
            ("twin.series".into(), s.series),
            ("twin.history_bytes".into(), s.history_bytes),
        ]
    }

    /// The history's directory.
    pub fn history_dir(&self) -> &Path {
        &self.history_dir
    }

    /// Writes the open buckets (the daemon calls this when it stops).
    pub fn finish(&self) {
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
    let now = Instant::now();
    let state = Arc::new(Mutex::new(TwinState {
        mirror,
        sampler: Sampler::default(),
        history,
        started: now,
        interval: settings.sample_interval,
        next_sample: now,
        next_flush: now + FLUSH_INTERVAL,
        last_error_log: None,
        stats: TwinStats::default(),
    }));
    submitter
        .submit(PARTITION, sampler_job(state.clone(), submitter.clone()))
        .map_err(|e| format!("the {PARTITION} partition: {e}"))?;
    Ok(TwinHandle {
        state,
        history_dir: dir,
    })
}

/// One sampler job: waits up to [`JOB_WAIT`] for the sample to be due, samples if it is,
/// then queues the next job.
fn sampler_job(state: Arc<Mutex<TwinState>>, submitter: Submitter) -> crate::partitions::Job {
    Box::new(move || {
        let due = state.lock().map(|s| s.next_sample).ok();
        let Some(due) = due else {
            return; // poisoned: a step panicked and said so
        };
        let wait = due.saturating_duration_since(Instant::now());
        std::thread::sleep(wait.min(JOB_WAIT));
        if Instant::now() >= due {
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Ok(mut s) = state.lock() {
                    s.step();
                }
            }));
            if stepped.is_err() {
                tracing::error!("the twin's sampler panicked and stopped");
                return;
            }
        }
        if submitter.stopping() {
            return;
        }
        let next = sampler_job(state, submitter.clone());
        if let Err(e) = submitter.submit(PARTITION, next) {
            tracing::warn!("twin sampler stopped: {e}");
        }
    })
}

impl TwinState {
    /// Reads the mirror, appends its signals, flushes when due.
    fn step(&mut self) {
        let now = Instant::now();
        // The next sample is due one interval after this one was, not after now: the
        // samples keep their period; one missed by more than an interval is skipped.
        self.next_sample += self.interval;
        if self.next_sample < now {
            self.next_sample = now + self.interval;
        }
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
