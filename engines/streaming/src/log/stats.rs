//! The log's counters.

/// Counters since the log was opened (recovery's included). Read them with
/// [`Log::stats`](super::Log::stats).
///
/// ```
/// use agentwire_streaming::log::{Log, LogConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
/// log.append_batch(0, &[b"a", b"bc"]).unwrap();
/// let stats = log.stats();
/// assert_eq!(stats.records_appended, 2);
/// assert_eq!(stats.batches_appended, 1);
/// assert_eq!(stats.fsyncs, 1); // FsyncPolicy::EveryBatch: one per batch
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended.
    pub records_appended: u64,
    /// Bytes written by appends, headers included.
    pub bytes_appended: u64,
    /// Successful `append_batch` calls that wrote something.
    pub batches_appended: u64,
    /// `fdatasync` calls on segment data: per batch or interval as the policy says, on
    /// `sync_now`, when a segment is sealed, and after a recovery truncation.
    pub fsyncs: u64,
    /// `fsync` calls on directories (a new segment's entry).
    pub dir_syncs: u64,
    /// New segments started because the active one was full.
    pub segments_rolled: u64,
    /// Sealed segments deleted by retention.
    pub segments_deleted: u64,
    /// Bytes cut from torn or corrupt tails when the log was opened.
    pub bytes_truncated_at_recovery: u64,
}
