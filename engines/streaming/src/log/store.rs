//! [`Log`]: the partitions of one log directory behind one API.

use std::time::{SystemTime, UNIX_EPOCH};

use super::config::LogConfig;
use super::error::LogError;
use super::layout;
use super::partition::Partition;
use super::recovery::RecoveryReport;
use super::scan::ReadBuffer;
use super::stats::LogStats;

/// Offsets `start..end` (end exclusive) given to one appended batch.
///
/// ```
/// let range = agentwire_streaming::log::OffsetRange { start: 3, end: 5 };
/// assert_eq!(range.count(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// Offset of the batch's first record.
    pub start: u64,
    /// One past the offset of its last record.
    pub end: u64,
}

impl OffsetRange {
    /// Number of offsets in the range.
    ///
    /// ```
    /// let empty = agentwire_streaming::log::OffsetRange { start: 7, end: 7 };
    /// assert_eq!(empty.count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        self.end - self.start
    }
}

/// What one [`Log::read`] did.
///
/// ```
/// let outcome = agentwire_streaming::log::ReadOutcome { records_visited: 2, next_offset: 9 };
/// assert_eq!(outcome.next_offset, 9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Records passed to the visitor.
    pub records_visited: usize,
    /// The offset to read from next.
    pub next_offset: u64,
}

/// A partitioned, append-only log in one directory. See the [module doc](super) for the
/// format, the fsync policies and recovery.
///
/// One `Log` is owned by one thread (thread-per-core); every operation takes `&mut self` and
/// reuses the log's two buffers (encode and read).
///
/// ```
/// use agentwire_streaming::log::{Log, LogConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let config = LogConfig { partition_count: 2, ..LogConfig::new(dir.path()) };
/// let (mut log, _) = Log::open(config.clone()).unwrap();
/// let range = log.append_batch(1, &[b"first", b"second"]).unwrap();
/// assert_eq!((range.start, range.end), (0, 2));
/// drop(log);
///
/// let (mut log, report) = Log::open(config).unwrap();
/// assert_eq!(report.bytes_truncated_total(), 0);
/// let mut seen = Vec::new();
/// let outcome = log.read(1, 0, 10, &mut |offset, _time_ms, payload: &[u8]| {
///     seen.push((offset, payload.to_vec()));
/// }).unwrap();
/// assert_eq!(outcome.next_offset, 2);
/// assert_eq!(seen, vec![(0, b"first".to_vec()), (1, b"second".to_vec())]);
/// ```
pub struct Log {
    config: LogConfig,
    partitions: Vec<Partition>,
    /// One batch, encoded; grows to the largest batch seen (at most `batch_bytes_max`), then
    /// appends allocate nothing.
    encode_buf: Vec<u8>,
    read_buf: ReadBuffer,
    stats: LogStats,
}

impl Log {
    /// Validates `config`, opens (or creates) the log in `config.dir` and recovers every
    /// partition's tail.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig, LogError};
    /// let dir = tempfile::tempdir().unwrap();
    /// Log::open(LogConfig { partition_count: 3, ..LogConfig::new(dir.path()) }).unwrap();
    /// let again = Log::open(LogConfig { partition_count: 4, ..LogConfig::new(dir.path()) });
    /// assert!(matches!(again, Err(LogError::PartitionCountMismatch { on_disk: 3, configured: 4 })));
    /// ```
    pub fn open(config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        layout::open_or_create(&config.dir, config.partition_count)?;
        let mut read_buf = ReadBuffer::new(config.read_buffer_bytes);
        let mut stats = LogStats::default();
        let mut partitions = Vec::with_capacity(config.partition_count as usize);
        let mut report = RecoveryReport::default();
        for index in 0..config.partition_count {
            let (partition, recovery) =
                Partition::open(index, &config.dir, &mut read_buf, &mut stats)?;
            partitions.push(partition);
            report.partitions.push(recovery);
        }
        let log = Log {
            config,
            partitions,
            encode_buf: Vec::new(),
            read_buf,
            stats,
        };
        Ok((log, report))
    }

    /// Appends `records` to `partition` as one batch stamped with the wall clock (ms since the
    /// Unix epoch): one write, and one `fdatasync` if the policy calls for it. Offsets are
    /// consecutive per partition from 0. On any error nothing was acknowledged; after an I/O
    /// error the partition refuses appends until the log is reopened.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// assert_eq!(log.append_batch(0, &[b"a"]).unwrap().start, 0);
    /// assert_eq!(log.append_batch(0, &[b"b", b"c"]).unwrap().start, 1);
    /// ```
    pub fn append_batch(
        &mut self,
        partition: u32,
        records: &[&[u8]],
    ) -> Result<OffsetRange, LogError> {
        self.append_batch_at(partition, records, wall_clock_ms())
    }

    /// [`Log::append_batch`] with the append time given: the time stored in each record and the
    /// clock the `Interval` policy measures. Tests and replays pass it explicitly.
    ///
    /// ```
    /// use agentwire_streaming::log::{FsyncPolicy, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig {
    ///     fsync: FsyncPolicy::Interval { interval_ms: 100 },
    ///     ..LogConfig::new(dir.path())
    /// };
    /// let (mut log, _) = Log::open(config).unwrap();
    /// log.append_batch_at(0, &[b"a"], 1_000).unwrap();
    /// log.append_batch_at(0, &[b"b"], 1_050).unwrap();
    /// assert_eq!(log.stats().fsyncs, 0);
    /// log.append_batch_at(0, &[b"c"], 1_100).unwrap(); // 100 ms after the oldest unsynced
    /// assert_eq!(log.stats().fsyncs, 1);
    /// ```
    pub fn append_batch_at(
        &mut self,
        partition: u32,
        records: &[&[u8]],
        append_time_ms: u64,
    ) -> Result<OffsetRange, LogError> {
        let index = self.partition_index(partition)?;
        self.partitions[index].append(
            records,
            append_time_ms,
            &self.config,
            &mut self.encode_buf,
            &mut self.stats,
        )
    }

    /// Visits up to `records_max` records of `partition` from `from_offset` in offset order,
    /// calling `visit(offset, append_time_ms, payload)`. Every record visited passed its
    /// checksum; a bad one ends the read with [`LogError::Corrupt`] after the good records
    /// before it were visited. Reading at the end offset visits nothing.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// log.append_batch(0, &[b"a", b"b", b"c"]).unwrap();
    /// let mut total_bytes = 0;
    /// let outcome = log.read(0, 1, 5, &mut |_, _, payload: &[u8]| total_bytes += payload.len()).unwrap();
    /// assert_eq!((outcome.records_visited, outcome.next_offset, total_bytes), (2, 3, 2));
    /// ```
    pub fn read<F: FnMut(u64, u64, &[u8])>(
        &mut self,
        partition: u32,
        from_offset: u64,
        records_max: usize,
        visit: &mut F,
    ) -> Result<ReadOutcome, LogError> {
        let index = self.partition_index(partition)?;
        self.partitions[index].read(from_offset, records_max, &mut self.read_buf, visit)
    }

    /// The oldest offset of `partition` still stored (moves up with retention).
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// assert_eq!(log.start_offset(0).unwrap(), 0);
    /// ```
    pub fn start_offset(&self, partition: u32) -> Result<u64, LogError> {
        Ok(self.partitions[self.partition_index(partition)?].start_offset())
    }

    /// The offset the next record appended to `partition` gets.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// log.append_batch(0, &[b"a", b"b"]).unwrap();
    /// assert_eq!(log.end_offset(0).unwrap(), 2);
    /// ```
    pub fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        Ok(self.partitions[self.partition_index(partition)?].end_offset())
    }

    /// Syncs every partition with unsynced appends, whatever the policy: when it returns, all
    /// acknowledged appends are on stable storage. The checkpointing layer calls it; under
    /// `Interval`, a timer should too, so an idle partition does not stay unsynced.
    ///
    /// There is no separate `flush`: `append_batch` writes each batch to the file before it
    /// returns, so nothing waits in a user-space buffer.
    ///
    /// ```
    /// use agentwire_streaming::log::{FsyncPolicy, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::new(dir.path()) };
    /// let (mut log, _) = Log::open(config).unwrap();
    /// log.append_batch(0, &[b"a"]).unwrap();
    /// log.sync_now().unwrap();
    /// log.sync_now().unwrap(); // nothing left to sync
    /// assert_eq!(log.stats().fsyncs, 1);
    /// ```
    pub fn sync_now(&mut self) -> Result<(), LogError> {
        for partition in &mut self.partitions {
            partition.sync(&mut self.stats)?;
        }
        Ok(())
    }

    /// Applies retention to every partition at time `now_ms` (ms since the Unix epoch, passed
    /// in so callers and tests own the clock): deletes whole sealed segments, oldest first,
    /// while a partition holds more than `retention_bytes_max`, or while its oldest segment's
    /// newest record is older than `retention_age_ms`. The active segment is never deleted.
    /// Returns the number of segments deleted.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { retention_age_ms: 1_000, ..LogConfig::new(dir.path()) };
    /// let (mut log, _) = Log::open(config).unwrap();
    /// log.append_batch_at(0, &[b"a"], 5_000).unwrap();
    /// assert_eq!(log.enforce_retention(1_000_000).unwrap(), 0); // only the active segment
    /// ```
    pub fn enforce_retention(&mut self, now_ms: u64) -> Result<u64, LogError> {
        let mut deleted_count = 0;
        for partition in &mut self.partitions {
            deleted_count += partition.enforce_retention(
                now_ms,
                &self.config,
                &mut self.read_buf,
                &mut self.stats,
            )?;
        }
        Ok(deleted_count)
    }

    /// Bytes `partition` holds on disk, all segments, headers included.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig, RECORD_HEADER_BYTES};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// log.append_batch(0, &[b"abc"]).unwrap();
    /// assert_eq!(log.stored_bytes(0).unwrap(), (RECORD_HEADER_BYTES + 3) as u64);
    /// ```
    pub fn stored_bytes(&self, partition: u32) -> Result<u64, LogError> {
        Ok(self.partitions[self.partition_index(partition)?].stored_bytes())
    }

    /// The counters since open.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// assert_eq!(log.stats().records_appended, 0);
    /// ```
    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// The configuration the log was opened with.
    ///
    /// ```
    /// use agentwire_streaming::log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    /// assert_eq!(log.config().partition_count, 1);
    /// ```
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    fn partition_index(&self, partition: u32) -> Result<usize, LogError> {
        if partition < self.config.partition_count {
            Ok(partition as usize)
        } else {
            Err(LogError::PartitionOutOfRange {
                partition,
                partition_count: self.config.partition_count,
            })
        }
    }
}

fn wall_clock_ms() -> u64 {
    // A clock before 1970 stamps 0; a time is a label here, never an ordering key.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
