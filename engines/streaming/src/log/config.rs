//! The log's configuration, its defaults and its validation.

use std::path::PathBuf;

use super::error::ConfigError;
use super::record::RECORD_HEADER_BYTES;

/// Most partitions one log may have (each holds two open files: the active segment and one
/// sealed segment being read).
pub const PARTITION_COUNT_MAX: u32 = 4096;

/// Largest `segment_bytes_max` accepted: 1 TiB.
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 1 << 40;

/// Largest `read_buffer_bytes` accepted: 1 GiB.
pub const READ_BUFFER_BYTES_LIMIT: usize = 1 << 30;

/// Longest `FsyncPolicy::Interval` accepted: one hour.
pub const FSYNC_INTERVAL_MS_MAX: u64 = 3_600_000;

/// When appended data is forced to stable storage with `fdatasync`.
///
/// What each policy loses on power failure is in the [module doc](super#fsync-policies).
///
/// ```
/// use agentwire_streaming::log::FsyncPolicy;
/// let policy = FsyncPolicy::Interval { interval_ms: 100 };
/// assert_ne!(policy, FsyncPolicy::EveryBatch);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append_batch` returns only after the batch is on stable storage (one `fdatasync`
    /// per batch, the group commit).
    EveryBatch,
    /// A partition syncs on the first append that comes `interval_ms` or more after its
    /// oldest unsynced append; `Log::sync_now` syncs at once.
    Interval {
        /// Longest time, in milliseconds of append time, that appended data stays unsynced
        /// while appends keep coming; 1..=[`FSYNC_INTERVAL_MS_MAX`].
        interval_ms: u64,
    },
    /// The log never syncs segment data on its own; the OS writes it back when it chooses.
    /// `Log::sync_now` still syncs.
    Never,
}

/// Configuration of a [`Log`](super::Log). Build it with [`LogConfig::new`] and struct update
/// syntax; [`Log::open`](super::Log::open) validates it.
///
/// Keys, defaults and units:
///
/// | key | default | unit |
/// |---|---|---|
/// | `dir` | (required) | path |
/// | `partition_count = 1` | 1 | partitions, 1..=[`PARTITION_COUNT_MAX`] |
/// | `segment_bytes_max = 64 MiB` | 67_108_864 | bytes per segment file |
/// | `record_bytes_max = 1 MiB` | 1_048_576 | payload bytes per record |
/// | `batch_bytes_max = 4 MiB` | 4_194_304 | encoded bytes per `append_batch` |
/// | `read_buffer_bytes = 2 MiB` | 2_097_152 | bytes of the one read buffer |
/// | `retention_bytes_max = 0` | 0 (off) | bytes per partition |
/// | `retention_age_ms = 0` | 0 (off) | milliseconds |
/// | `fsync = EveryBatch` | [`FsyncPolicy::EveryBatch`] | |
///
/// ```
/// use agentwire_streaming::log::{FsyncPolicy, LogConfig};
/// let config = LogConfig {
///     partition_count: 4,
///     fsync: FsyncPolicy::Interval { interval_ms: 50 },
///     ..LogConfig::new("/var/lib/agentwire/log")
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The log's directory; created if it does not exist.
    pub dir: PathBuf,
    /// Number of partitions, each with its own offsets from 0. Fixed at creation.
    pub partition_count: u32,
    /// A segment is rolled before a batch would take it past this size, so no segment is
    /// larger. At least `batch_bytes_max`, at most [`SEGMENT_BYTES_MAX_LIMIT`].
    pub segment_bytes_max: u64,
    /// Largest payload accepted by `append_batch`; 1..=`u32::MAX - 25`.
    pub record_bytes_max: u32,
    /// Largest encoded batch (headers included) accepted by `append_batch`. At least one
    /// record of `record_bytes_max` (`record_bytes_max + 25`), at most `segment_bytes_max`.
    pub batch_bytes_max: u64,
    /// Size of the one buffer reads and recovery go through. At least one record of
    /// `record_bytes_max` (`record_bytes_max + 25`), at most [`READ_BUFFER_BYTES_LIMIT`].
    pub read_buffer_bytes: usize,
    /// Retention by size: sealed segments are deleted, oldest first, while a partition holds
    /// more than this. 0 turns it off; otherwise at least `segment_bytes_max`.
    pub retention_bytes_max: u64,
    /// Retention by age: a sealed segment whose newest record is older than this is deleted.
    /// 0 turns it off.
    pub retention_age_ms: u64,
    /// When data is synced to stable storage.
    pub fsync: FsyncPolicy,
}

impl LogConfig {
    /// The defaults from the table above, in `dir`.
    ///
    /// ```
    /// let config = agentwire_streaming::log::LogConfig::new("/tmp/log");
    /// assert_eq!(config.partition_count, 1);
    /// ```
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            partition_count: 1,
            segment_bytes_max: 64 << 20,
            record_bytes_max: 1 << 20,
            batch_bytes_max: 4 << 20,
            read_buffer_bytes: 2 << 20,
            retention_bytes_max: 0,
            retention_age_ms: 0,
            fsync: FsyncPolicy::EveryBatch,
        }
    }

    /// Checks every bound; the error names the key, its value and the allowed range.
    ///
    /// ```
    /// use agentwire_streaming::log::{ConfigError, LogConfig};
    /// let config = LogConfig { partition_count: 0, ..LogConfig::new("/tmp/log") };
    /// assert!(matches!(
    ///     config.validate(),
    ///     Err(ConfigError::OutOfRange { key: "partition_count", value: 0, .. })
    /// ));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::DirEmpty);
        }
        let one_record_bytes = self.record_bytes_max as u64 + RECORD_HEADER_BYTES as u64;
        check(
            "partition_count",
            self.partition_count.into(),
            1,
            PARTITION_COUNT_MAX.into(),
        )?;
        check(
            "record_bytes_max",
            self.record_bytes_max.into(),
            1,
            u64::from(u32::MAX) - RECORD_HEADER_BYTES as u64,
        )?;
        check(
            "segment_bytes_max",
            self.segment_bytes_max,
            one_record_bytes,
            SEGMENT_BYTES_MAX_LIMIT,
        )?;
        check(
            "batch_bytes_max",
            self.batch_bytes_max,
            one_record_bytes,
            self.segment_bytes_max,
        )?;
        check(
            "read_buffer_bytes",
            self.read_buffer_bytes as u64,
            one_record_bytes,
            READ_BUFFER_BYTES_LIMIT as u64,
        )?;
        if self.retention_bytes_max != 0 {
            check(
                "retention_bytes_max",
                self.retention_bytes_max,
                self.segment_bytes_max,
                u64::MAX,
            )?;
        }
        if let FsyncPolicy::Interval { interval_ms } = self.fsync {
            check("fsync.interval_ms", interval_ms, 1, FSYNC_INTERVAL_MS_MAX)?;
        }
        Ok(())
    }
}

fn check(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}
