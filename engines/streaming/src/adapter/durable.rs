//! The engine's durable state: a log that every accepted event is appended to before it is
//! processed and acknowledged, and checkpoints of the windows and detectors taken together
//! with the log offset they cover.
//!
//! A restart restores the newest committed checkpoint and replays the log from its offset,
//! in the order the events were first taken, so the windows, the detectors and every output
//! are those of a run that never stopped. Outputs carry `(shard, epoch, seq)`: the shard
//! that made it, the epoch after the last checkpoint, and the output's place in it. An
//! output replayed after a crash has the id it had before, so a subscriber that keeps the
//! ids it saw drops the repeats.
//!
//! Layout of the state directory: `log/` (the [`crate::log`] format, one partition) and
//! `checkpoints/` ([`CheckpointStore`] files, one per shard). A restore onto another number
//! of shards moves each key's windows and detector to its new shard.
//!
//! What a crash can lose:
//! - with `fsync_interval_ms = 0`, nothing that was acknowledged;
//! - otherwise, on power failure, the acknowledged events of the last interval.
//!
//! A process crash (SIGKILL, panic) loses nothing either way, because the page cache survives
//! it. A checkpoint syncs the log first, so it never covers events the disk does not hold.
//!
//! ```
//! use agentwire_streaming::adapter::durable::StateConfig;
//! let c = StateConfig::new("/var/lib/agentwire/stream");
//! assert!(c.log.dir.ends_with("stream/log"));
//! assert!(c.checkpoint_dir().ends_with("stream/checkpoints"));
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::Key;
use crate::exactly_once::checkpoint::{CheckpointError, CheckpointStore, Manifest};
use crate::log::{Log, LogConfig, LogError};
use crate::window::OperatorSnapshot;

/// The partition of the log the engine writes (it has one).
pub const LOG_PARTITION: u32 = 0;
/// The default time between checkpoints.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 10_000;

/// Where the engine keeps its state, and how often it checkpoints.
///
/// ```
/// use agentwire_streaming::adapter::durable::StateConfig;
/// let c = StateConfig { checkpoint_interval_ms: 0, ..StateConfig::new("/tmp/s") };
/// assert_eq!(c.checkpoint_interval(), None);
/// ```
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The state directory (it holds `log/` and `checkpoints/`).
    pub dir: PathBuf,
    /// The log's settings; its `dir` is `<dir>/log`.
    pub log: LogConfig,
    /// Time between checkpoints, ms (0: none; a restart then replays the whole log).
    pub checkpoint_interval_ms: u64,
}

impl StateConfig {
    /// State in `dir`, the log with its defaults, a checkpoint every
    /// [`CHECKPOINT_INTERVAL_MS_DEFAULT`] ms.
    ///
    /// ```
    /// let c = agentwire_streaming::adapter::durable::StateConfig::new("/tmp/s");
    /// assert_eq!(c.checkpoint_interval_ms, 10_000);
    /// ```
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            log: LogConfig::new(dir.join("log")),
            dir,
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
        }
    }

    /// `<dir>/checkpoints`.
    ///
    /// ```
    /// let c = agentwire_streaming::adapter::durable::StateConfig::new("/tmp/s");
    /// assert_eq!(c.checkpoint_dir(), std::path::Path::new("/tmp/s/checkpoints"));
    /// ```
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// The time between checkpoints (`None`: no checkpoints).
    ///
    /// ```
    /// let c = agentwire_streaming::adapter::durable::StateConfig::new("/tmp/s");
    /// assert_eq!(c.checkpoint_interval(), Some(std::time::Duration::from_secs(10)));
    /// ```
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        (self.checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(self.checkpoint_interval_ms))
    }
}

/// Why the engine's state could not be opened, restored or checkpointed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The log.
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// A checkpoint file.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// A committed checkpoint that cannot be used with this configuration or does not
    /// decode.
    #[error("checkpoint {dir}: {why}")]
    Restore {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong, and what to do.
        why: String,
    },
}

/// What a checkpoint holds of one shard: its windows and each of its keys' detector.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct ShardSnapshot {
    /// The shard's window operator.
    pub window: OperatorSnapshot,
    /// Each key's detector state ([`crate::detect::Detector::save`]).
    pub detectors: Vec<(Key, Vec<u8>)>,
}

/// A shard's checkpoint file: the detector's name (a restore with another detector is
/// refused) and the shard's state.
#[derive(Serialize, Deserialize)]
pub(super) struct ShardFile {
    pub detector: String,
    pub shard: ShardSnapshot,
}

/// The newest committed checkpoint.
pub(super) struct Restored {
    /// The epoch.
    pub epoch: u64,
    /// Each shard's state, in shard order (as many as the checkpoint had).
    pub shards: Vec<ShardSnapshot>,
    /// The detector the state was written with.
    pub detector: String,
    /// The largest event time taken up to the checkpoint.
    pub max_event_time_ns: Option<i64>,
}

/// The log records still to replay: `[next, end)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replay {
    pub next: u64,
    pub end: u64,
}

/// The open log and checkpoint store.
pub(super) struct Durable {
    pub log: Log,
    store: CheckpointStore,
    dir: PathBuf,
    interval: Option<Duration>,
    last_checkpoint: Instant,
    /// The log offset the newest checkpoint covers.
    checkpointed_offset: u64,
    /// Records to replay before new frames are read.
    pub replay: Option<Replay>,
}

/// What opening the state found.
pub(super) struct Opened {
    pub durable: Durable,
    /// The newest committed checkpoint.
    pub restored: Option<Restored>,
    /// Bytes of a torn log tail cut at open.
    pub torn_bytes_cut: u64,
    /// Records between the checkpoint and the log's start that retention deleted (lost to
    /// the replay; the engine says so).
    pub gap_records: u64,
}

impl Durable {
    /// Opens the log and the checkpoint store, reads the newest committed checkpoint and
    /// sets up the replay of the log from the offset it covers (from the log's start
    /// without one).
    pub fn open(config: &StateConfig) -> Result<Opened, StateError> {
        let (log, recovery) = Log::open(config.log.clone())?;
        let dir = config.checkpoint_dir();
        let store = CheckpointStore::open(&dir)?;
        let restore_error = |why: String| StateError::Restore {
            dir: dir.clone(),
            why,
        };
        let (epoch, from_offset, restored) = match store.latest()? {
            None => (0, log.start_offset(LOG_PARTITION)?, None),
            Some((manifest, files)) => {
                let mut detector = None;
                let mut shards = Vec::with_capacity(files.len());
                for (i, bytes) in files.iter().enumerate() {
                    let file: ShardFile = postcard::from_bytes(bytes).map_err(|e| {
                        restore_error(format!(
                            "epoch {} shard {i} does not decode: {e}",
                            manifest.epoch
                        ))
                    })?;
                    if detector.as_ref().is_some_and(|d| *d != file.detector) {
                        return Err(restore_error(format!(
                            "epoch {}: its shards name different detectors",
                            manifest.epoch
                        )));
                    }
                    detector = Some(file.detector);
                    shards.push(file.shard);
                }
                let restored = Restored {
                    epoch: manifest.epoch,
                    shards,
                    detector: detector.unwrap_or_default(),
                    max_event_time_ns: manifest.source_max_ns,
                };
                (manifest.epoch, manifest.input_offset, Some(restored))
            }
        };
        let start = log.start_offset(LOG_PARTITION)?;
        let end = log.end_offset(LOG_PARTITION)?;
        if from_offset > end {
            return Err(restore_error(format!(
                "epoch {epoch} covers the log up to offset {from_offset}, but the log ends at \
                 {end}: the log in {} is not the one checkpointed (move the state directory \
                 aside to start empty)",
                config.log.dir.display()
            )));
        }
        let next = from_offset.max(start);
        Ok(Opened {
            durable: Self {
                log,
                store,
                dir,
                interval: config.checkpoint_interval(),
                last_checkpoint: Instant::now(),
                checkpointed_offset: from_offset,
                replay: (next < end).then_some(Replay { next, end }),
            },
            restored,
            torn_bytes_cut: recovery.bytes_truncated_total(),
            gap_records: start.saturating_sub(from_offset),
        })
    }

    /// Whether a checkpoint is due: the interval has passed, no replay is under way, and
    /// the log has grown since the last one.
    pub fn due(&self) -> Result<bool, StateError> {
        let Some(interval) = self.interval else {
            return Ok(false);
        };
        Ok(self.replay.is_none() && self.last_checkpoint.elapsed() >= interval && self.grown()?)
    }

    /// Restarts the interval (a checkpoint was asked for another reason).
    pub fn checkpoint_started(&mut self) {
        self.last_checkpoint = Instant::now();
    }

    /// Whether the log holds events the newest checkpoint does not cover.
    pub fn grown(&self) -> Result<bool, StateError> {
        Ok(self.log.end_offset(LOG_PARTITION)? > self.checkpointed_offset)
    }

    /// Commits `shards` (every shard's state after every event in the log, in shard order)
    /// as `epoch`: syncs the log, writes each shard's file, then the manifest with the log's
    /// end offset and the largest event time taken. Returns the bytes written.
    pub fn commit(
        &mut self,
        epoch: u64,
        detector: &str,
        shards: Vec<ShardSnapshot>,
        max_event_time_ns: Option<i64>,
    ) -> Result<u64, StateError> {
        self.last_checkpoint = Instant::now();
        self.log.sync_now()?;
        let offset = self.log.end_offset(LOG_PARTITION)?;
        let mut written = 0;
        let count = shards.len() as u32;
        for (i, shard) in shards.into_iter().enumerate() {
            let file = ShardFile {
                detector: detector.to_string(),
                shard,
            };
            let bytes = postcard::to_allocvec(&file).expect("plain data serializes");
            self.store.write_shard(epoch, i as u32, &bytes)?;
            written += bytes.len() as u64;
        }
        self.store.commit(&Manifest {
            epoch,
            shards: count,
            input_offset: offset,
            source_max_ns: max_event_time_ns,
            events_in: offset,
            events_filtered: 0,
            records_malformed: 0,
        })?;
        self.checkpointed_offset = offset;
        Ok(written)
    }

    /// The checkpoint directory, for messages.
    pub fn checkpoint_dir(&self) -> &std::path::Path {
        &self.dir
    }
}
