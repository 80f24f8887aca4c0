//! History: an on-disk store of named series (`shard0.frames_in`) with tiers of resolution,
//! retention by age per tier, downsampling, and a hard bound on its total size.
//!
//! Every tier aggregates the raw samples into buckets of its resolution (the default: 1 s
//! buckets kept 24 h, 1 min buckets kept 30 days); a [`Bucket`] keeps the count, min, max,
//! sum (so the mean) and last value, all computed from the raw samples, so a coarse tier is
//! exact, not an aggregate of aggregates. A bucket is written when a sample for a later bucket
//! arrives, or by [`History::flush`] (a flushed bucket that receives more samples is written
//! again, and a query merges records with the same start exactly).
//!
//! # Files
//!
//! `<dir>/<series>/r<resolution_ms>-<seq>.seg`: one directory per series, segment files per
//! tier numbered in order. A segment is a 32-byte header and 48-byte records, each with its
//! own CRC-32 (see `segment.rs`); a segment holds at most [`HistoryConfig::segment_bytes_max`]
//! bytes, then the next one starts. On [`History::open`] every segment is scanned: a torn
//! tail (a partial record) is truncated, a record whose checksum fails is counted and never
//! returned, a segment with a missing or bad header is removed, and a segment of a resolution
//! no tier has is removed; [`History::stats`] counts each.
//!
//! # Bounds
//!
//! - Age: the store's clock is the start of the finest-tier bucket of its newest sample (of
//!   any series); a tier returns no bucket that starts more than its retention before the
//!   clock, and a segment whose newest bucket is that old is deleted.
//! - Size: the segment files never hold more than [`HistoryConfig::bytes_max`] bytes in all;
//!   before a write that would pass it, the segments with the oldest data (of any series or
//!   tier) are deleted, and counted.
//! - Memory: per series and tier, one open bucket and a list of its segments' metadata;
//!   queries read through a 64 KiB buffer and return at most
//!   [`HistoryConfig::query_points_max`] buckets; at most [`HistoryConfig::series_max`]
//!   series.
//!
//! Writes are plain `write` calls, one per bucket: data survives a crash of the process
//! (the open buckets excepted) but not of the machine unless the files were synced.

mod segment;
mod store;
#[cfg(test)]
mod tests;

pub use store::History;

/// One tier: buckets of `resolution_ms`, kept for `retention_ms`.
///
/// ```
/// use agentwire_twin::history::Tier;
/// let minutes = Tier::new(60_000, 30 * 24 * 3_600_000);
/// assert_eq!(minutes.resolution_ms, 60_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The bucket width in milliseconds.
    pub resolution_ms: u64,
    /// How long buckets are kept, in milliseconds of the store's clock.
    pub retention_ms: u64,
}

impl Tier {
    /// A tier of `resolution_ms` buckets kept `retention_ms`.
    ///
    /// ```
    /// use agentwire_twin::history::Tier;
    /// assert_eq!(Tier::new(1000, 86_400_000).retention_ms, 86_400_000);
    /// ```
    pub fn new(resolution_ms: u64, retention_ms: u64) -> Self {
        Self {
            resolution_ms,
            retention_ms,
        }
    }
}

/// The store's options (a builder; [`Default`] gives the values below).
///
/// - `tiers = [1 s kept 24 h, 1 min kept 30 days]`: finest first, resolutions increasing, 1 to
///   [`TIERS_MAX`];
/// - `bytes_max = 1 GiB`: all segment files together;
/// - `segment_bytes_max = 1 MiB`: one segment file (at least one header and one record);
/// - `series_max = 4096`: distinct series;
/// - `query_points_max = 200_000`: buckets one query may span (a day of seconds fits).
///
/// ```
/// use agentwire_twin::history::{HistoryConfig, Tier};
/// let c = HistoryConfig::default().tiers(vec![Tier::new(1000, 3_600_000)]).bytes_max(1 << 20);
/// assert_eq!(c.bytes_max_value(), 1 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    tiers: Vec<Tier>,
    bytes_max: u64,
    segment_bytes_max: u64,
    series_max: usize,
    query_points_max: usize,
}

/// The most tiers a store may have.
pub const TIERS_MAX: usize = 8;

impl Default for HistoryConfig {
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().tiers_value()[1].resolution_ms, 60_000);
    /// ```
    fn default() -> Self {
        const HOUR_MS: u64 = 3_600_000;
        Self {
            tiers: vec![
                Tier::new(1000, 24 * HOUR_MS),
                Tier::new(60_000, 30 * 24 * HOUR_MS),
            ],
            bytes_max: 1 << 30,
            segment_bytes_max: 1 << 20,
            series_max: 4096,
            query_points_max: 200_000,
        }
    }
}

impl HistoryConfig {
    /// The tiers, finest first.
    ///
    /// ```
    /// use agentwire_twin::history::{HistoryConfig, Tier};
    /// let c = HistoryConfig::default().tiers(vec![Tier::new(10, 1000)]);
    /// assert_eq!(c.tiers_value().len(), 1);
    /// ```
    pub fn tiers(mut self, tiers: Vec<Tier>) -> Self {
        self.tiers = tiers;
        self
    }

    /// The bound on all segment files' bytes together.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().bytes_max(4096).bytes_max_value(), 4096);
    /// ```
    pub fn bytes_max(mut self, bytes: u64) -> Self {
        self.bytes_max = bytes;
        self
    }

    /// The bound on one segment file's bytes.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// let c = HistoryConfig::default().segment_bytes_max(4096);
    /// assert_eq!(c.segment_bytes_max_value(), 4096);
    /// ```
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// The most distinct series.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().series_max(8).series_max_value(), 8);
    /// ```
    pub fn series_max(mut self, series: usize) -> Self {
        self.series_max = series;
        self
    }

    /// The most buckets one query may span.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().query_points_max(10).query_points_max_value(), 10);
    /// ```
    pub fn query_points_max(mut self, points: usize) -> Self {
        self.query_points_max = points;
        self
    }

    /// The tiers.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().tiers_value()[0].resolution_ms, 1000);
    /// ```
    pub fn tiers_value(&self) -> &[Tier] {
        &self.tiers
    }

    /// The bound on all segment files' bytes.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().bytes_max_value(), 1 << 30);
    /// ```
    pub fn bytes_max_value(&self) -> u64 {
        self.bytes_max
    }

    /// The bound on one segment file's bytes.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().segment_bytes_max_value(), 1 << 20);
    /// ```
    pub fn segment_bytes_max_value(&self) -> u64 {
        self.segment_bytes_max
    }

    /// The most distinct series.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().series_max_value(), 4096);
    /// ```
    pub fn series_max_value(&self) -> usize {
        self.series_max
    }

    /// The most buckets one query may span.
    ///
    /// ```
    /// use agentwire_twin::history::HistoryConfig;
    /// assert_eq!(HistoryConfig::default().query_points_max_value(), 200_000);
    /// ```
    pub fn query_points_max_value(&self) -> usize {
        self.query_points_max
    }

    /// Checks the options (done by [`History::open`]).
    ///
    /// ```
    /// use agentwire_twin::history::{HistoryConfig, Tier};
    /// assert!(HistoryConfig::default().validate().is_ok());
    /// assert!(HistoryConfig::default().tiers(vec![]).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |why: String| Err(OpenError::BadConfig(why));
        if self.tiers.is_empty() || self.tiers.len() > TIERS_MAX {
            return bad(format!("1 to {TIERS_MAX} tiers, not {}", self.tiers.len()));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.resolution_ms == 0 || t.retention_ms < t.resolution_ms {
                return bad(format!(
                    "tier {i}: resolution {} ms must be at least 1 and at most its retention {} ms",
                    t.resolution_ms, t.retention_ms
                ));
            }
            if i > 0 && t.resolution_ms <= self.tiers[i - 1].resolution_ms {
                return bad(format!(
                    "tier {i}: resolutions must increase ({} ms after {} ms)",
                    t.resolution_ms,
                    self.tiers[i - 1].resolution_ms
                ));
            }
        }
        let one = segment::HEADER_BYTES + segment::RECORD_BYTES;
        if self.segment_bytes_max < one {
            return bad(format!(
                "segment_bytes_max {} is below one header and one record ({one})",
                self.segment_bytes_max
            ));
        }
        if self.bytes_max < self.segment_bytes_max {
            return bad(format!(
                "bytes_max {} is below segment_bytes_max {}",
                self.bytes_max, self.segment_bytes_max
            ));
        }
        if self.series_max == 0 || self.query_points_max == 0 {
            return bad("series_max and query_points_max must be at least 1".into());
        }
        Ok(())
    }
}

/// One bucket of a tier: the samples whose time lies in `[start_ms, start_ms + resolution)`.
///
/// ```
/// use agentwire_twin::history::Bucket;
/// let mut b = Bucket::new(0, 2.0);
/// b.add(4.0);
/// assert_eq!((b.count, b.min, b.max, b.mean(), b.last), (2, 2.0, 4.0, 3.0, 4.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// The bucket's start, in ms (a multiple of the tier's resolution).
    pub start_ms: u64,
    /// Samples in it.
    pub count: u32,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The samples' sum.
    pub sum: f64,
    /// The latest sample.
    pub last: f64,
}

impl Bucket {
    /// A bucket starting at `start_ms` holding one sample.
    ///
    /// ```
    /// use agentwire_twin::history::Bucket;
    /// assert_eq!(Bucket::new(5000, 1.5).count, 1);
    /// ```
    pub fn new(start_ms: u64, value: f64) -> Self {
        Self {
            start_ms,
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
        }
    }

    /// Adds a later sample.
    ///
    /// ```
    /// use agentwire_twin::history::Bucket;
    /// let mut b = Bucket::new(0, 1.0);
    /// b.add(-1.0);
    /// assert_eq!((b.min, b.sum, b.last), (-1.0, 0.0, -1.0));
    /// ```
    pub fn add(&mut self, value: f64) {
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        self.last = value;
    }

    /// Merges `later`, the aggregate of samples after this one's (same start).
    ///
    /// ```
    /// use agentwire_twin::history::Bucket;
    /// let mut a = Bucket::new(0, 1.0);
    /// a.merge(&Bucket::new(0, 5.0));
    /// assert_eq!((a.count, a.max, a.mean(), a.last), (2, 5.0, 3.0, 5.0));
    /// ```
    pub fn merge(&mut self, later: &Bucket) {
        self.count = self.count.saturating_add(later.count);
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.last = later.last;
    }

    /// The samples' mean.
    ///
    /// ```
    /// use agentwire_twin::history::Bucket;
    /// assert_eq!(Bucket::new(0, 7.0).mean(), 7.0);
    /// ```
    pub fn mean(&self) -> f64 {
        self.sum / f64::from(self.count.max(1))
    }
}

/// What recovery and the bounds have removed since [`History::open`] (recovery counts are
/// from the open itself).
///
/// ```
/// use agentwire_twin::history::Stats;
/// assert_eq!(Stats::default().corrupt_records, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments whose tail held a partial record, truncated at open.
    pub torn_segments: u64,
    /// Bytes removed by those truncations.
    pub torn_bytes: u64,
    /// Records that failed their checksum at open (skipped, never returned).
    pub corrupt_records: u64,
    /// Segments removed at open for a missing or bad header.
    pub bad_segments_removed: u64,
    /// Segments removed at open for a resolution that no tier has.
    pub orphan_segments_removed: u64,
    /// Segments deleted for age.
    pub segments_dropped_age: u64,
    /// Record slots in them.
    pub records_dropped_age: u64,
    /// Segments deleted to hold the size bound.
    pub segments_dropped_size: u64,
    /// Record slots in them.
    pub records_dropped_size: u64,
    /// Bytes deleted to hold the size bound.
    pub bytes_dropped_size: u64,
}

/// Why a store could not be opened.
///
/// ```
/// use agentwire_twin::history::{History, HistoryConfig, OpenError};
/// let e = History::open("/nonexistent-dir/x", HistoryConfig::default().bytes_max(1)).unwrap_err();
/// assert!(matches!(e, OpenError::BadConfig(_)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An option is out of range.
    #[error("history config: {0}")]
    BadConfig(String),
    /// The directory or a file could not be read or repaired.
    #[error("history {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a sample was not stored.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use agentwire_twin::history::{AppendError, History, HistoryConfig};
/// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
/// assert!(matches!(h.append("a", 0, f64::NAN), Err(AppendError::NotFinite { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The value is NaN or infinite.
    #[error("series {series}: value {value} at {time_ms} ms is not finite")]
    NotFinite {
        /// The series.
        series: String,
        /// The sample's time.
        time_ms: u64,
        /// The value.
        value: f64,
    },
    /// The name is not 1 to 128 of `A-Z a-z 0-9 . _ -`, or starts with a dot.
    #[error("series name {0:?} must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot")]
    BadName(String),
    /// A new series beyond [`HistoryConfig::series_max`].
    #[error("series {series}: the store already has its maximum of {max} series")]
    TooManySeries {
        /// The series.
        series: String,
        /// The bound.
        max: usize,
    },
    /// A sample older than the series' newest.
    #[error("series {series}: sample at {time_ms} ms is older than the newest, {newest_ms} ms")]
    OutOfOrder {
        /// The series.
        series: String,
        /// The sample's time.
        time_ms: u64,
        /// The value.
        value: f64,
        /// The newest time stored for the series.
        newest_ms: u64,
    },
    /// The store was opened read-only ([`History::open_read_only`]).
    #[error("the history was opened read-only")]
    ReadOnly,
    /// A write failed (the bucket being written is lost).
    #[error("history {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a query failed.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use agentwire_twin::history::{History, HistoryConfig, QueryError};
/// let h = History::open(dir.path(), HistoryConfig::default()).unwrap();
/// assert!(matches!(h.query("a", 9, 0, 1), Err(QueryError::NoSuchTier { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The tier index is out of range.
    #[error("no tier {tier}: the store has {tiers}")]
    NoSuchTier {
        /// The index asked for.
        tier: usize,
        /// The number of tiers.
        tiers: usize,
    },
    /// The range spans more buckets than [`HistoryConfig::query_points_max`].
    #[error("the range spans {points} buckets, more than the {max} a query may return")]
    RangeTooLarge {
        /// Buckets spanned.
        points: u64,
        /// The bound.
        max: usize,
    },
    /// A segment could not be read.
    #[error("history {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether `name` may name a series (and so a directory).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
