//! The log's errors.

use std::io;
use std::path::PathBuf;

/// A [`LogConfig`](super::LogConfig) value outside its bounds.
///
/// ```
/// use agentwire_streaming::log::{ConfigError, LogConfig};
/// let config = LogConfig { record_bytes_max: 0, ..LogConfig::new("/tmp/log") };
/// let error = config.validate().unwrap_err();
/// assert!(matches!(error, ConfigError::OutOfRange { key: "record_bytes_max", .. }));
/// assert!(error.to_string().contains("record_bytes_max = 0"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `dir` is the empty path.
    #[error("log config: dir is empty")]
    DirEmpty,
    /// A key's value is outside `min..=max`.
    #[error("log config: {key} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The key, as spelled in `LogConfig`.
        key: &'static str,
        /// The value given.
        value: u64,
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
}

/// What is wrong with a record found on disk.
///
/// ```
/// use agentwire_streaming::log::RecordDefect;
/// assert_eq!(RecordDefect::BadChecksum.to_string(), "checksum mismatch");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordDefect {
    /// Fewer bytes left in the segment than a header.
    #[error("short header")]
    ShortHeader,
    /// The first byte is not [`RECORD_MAGIC`](super::RECORD_MAGIC).
    #[error("bad magic byte")]
    BadMagic,
    /// The header's payload length runs past the end of the segment.
    #[error("short payload")]
    ShortPayload,
    /// The CRC-32 over length, offset, append time and payload does not match.
    #[error("checksum mismatch")]
    BadChecksum,
    /// The record is intact but its offset is not the next one in the partition (or a sealed
    /// segment does not end where the next one begins).
    #[error("offset out of sequence")]
    OffsetOutOfSequence,
}

/// An error from a [`Log`](super::Log) operation.
///
/// ```
/// use agentwire_streaming::log::{Log, LogConfig, LogError};
/// let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
/// let error = log.append_batch(9, &[b"x"]).unwrap_err();
/// assert!(matches!(error, LogError::PartitionOutOfRange { partition: 9, partition_count: 1 }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file system operation failed.
    #[error("log: {op} {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No such partition.
    #[error("log: partition {partition} does not exist (the log has {partition_count})")]
    PartitionOutOfRange {
        /// The partition asked for.
        partition: u32,
        /// Partitions in the log.
        partition_count: u32,
    },
    /// A record in the batch is larger than `record_bytes_max`; nothing was appended.
    #[error("log: record {index_in_batch} of the batch is {record_bytes} bytes, over record_bytes_max = {record_bytes_max}")]
    RecordTooLarge {
        /// Position of the record in the batch.
        index_in_batch: usize,
        /// Its payload size.
        record_bytes: usize,
        /// The limit.
        record_bytes_max: u32,
    },
    /// The encoded batch is larger than `batch_bytes_max`; nothing was appended.
    #[error("log: batch encodes to {batch_bytes} bytes, over batch_bytes_max = {batch_bytes_max}")]
    BatchTooLarge {
        /// Encoded size of the batch, headers included.
        batch_bytes: u64,
        /// The limit.
        batch_bytes_max: u64,
    },
    /// A write or sync of this partition failed earlier, so what its file holds past the last
    /// acknowledged batch is unknown; appends are refused until the log is reopened, whose
    /// recovery scan settles it.
    #[error("log: partition {partition} refuses appends after an earlier write or sync failure; reopen the log")]
    WriterFailed {
        /// The partition.
        partition: u32,
    },
    /// A stored record failed its checks; it is never returned as data.
    #[error("log: corrupt record in partition {partition}, segment {segment}, byte {position}: {defect}")]
    Corrupt {
        /// The partition.
        partition: u32,
        /// The segment's base offset (its file name).
        segment: u64,
        /// Byte position of the bad record in the segment file.
        position: u64,
        /// What is wrong with it.
        defect: RecordDefect,
    },
    /// The offset was deleted by retention.
    #[error(
        "log: offset {offset} of partition {partition} is below its start offset {start_offset}"
    )]
    OffsetBelowStart {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The partition's oldest offset.
        start_offset: u64,
    },
    /// The offset has not been appended yet.
    #[error("log: offset {offset} of partition {partition} is past its end offset {end_offset}")]
    OffsetAboveEnd {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The next offset to be appended.
        end_offset: u64,
    },
    /// A stored record is larger than `read_buffer_bytes` (the log was written with a larger
    /// `record_bytes_max`); raise `read_buffer_bytes` to read it.
    #[error("log: record {offset} of partition {partition} is {record_bytes} bytes, larger than read_buffer_bytes = {read_buffer_bytes}")]
    RecordExceedsReadBuffer {
        /// The partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
        /// Header plus payload.
        record_bytes: u64,
        /// The configured buffer.
        read_buffer_bytes: usize,
    },
    /// The directory holds files but no log meta file.
    #[error(
        "log: {dir} is not empty and has no {} meta file",
        super::layout::META_FILE_NAME
    )]
    MetaMissing {
        /// The log directory.
        dir: PathBuf,
    },
    /// The meta file cannot be parsed.
    #[error("log: meta file {path} is invalid: {reason}")]
    MetaInvalid {
        /// The meta file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log was written in a format this code does not read.
    #[error("log: {path} has format version {on_disk}; this build reads version {supported}")]
    FormatVersionMismatch {
        /// The meta file.
        path: PathBuf,
        /// Version in the file.
        on_disk: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// The log has a different partition count than configured.
    #[error("log: the log on disk has {on_disk} partitions; the config asks for {configured}")]
    PartitionCountMismatch {
        /// Partitions recorded in the meta file.
        on_disk: u32,
        /// `partition_count` in the config.
        configured: u32,
    },
    /// A partition directory is missing.
    #[error("log: partition {partition} directory {path} is missing")]
    MissingPartition {
        /// The partition.
        partition: u32,
        /// The expected directory.
        path: PathBuf,
    },
    /// A partition directory holds no segment file.
    #[error("log: partition {partition} directory {path} holds no segment")]
    NoSegments {
        /// The partition.
        partition: u32,
        /// The directory.
        path: PathBuf,
    },
    /// A file or directory that the log did not create.
    #[error("log: unexpected entry {path} in the log directory")]
    UnexpectedFile {
        /// The entry.
        path: PathBuf,
    },
    /// A segment's first intact record has a different offset than its file name says.
    #[error("log: segment {path} is named for offset {name_offset} but its first record has offset {record_offset}")]
    SegmentNameMismatch {
        /// The segment file.
        path: PathBuf,
        /// Offset in the name.
        name_offset: u64,
        /// Offset in its first record.
        record_offset: u64,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
