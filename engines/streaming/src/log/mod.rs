//! The durable log: partitioned, append-only, on local disk.
//!
//! Each partition numbers its records from offset 0 and stores them in segment files; a
//! batch of records is encoded into one buffer and written with one positioned write (group
//! commit: many records, one write, at most one `fdatasync`). Every record carries a CRC-32,
//! and no record that fails a check is ever handed to a reader.
//!
//! ```
//! use agentwire_streaming::log::{FsyncPolicy, Log, LogConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let config = LogConfig {
//!     partition_count: 2,
//!     fsync: FsyncPolicy::EveryBatch,
//!     ..LogConfig::new(dir.path())
//! };
//! let (mut log, _report) = Log::open(config).unwrap();
//! let range = log.append_batch(0, &[b"one", b"two"]).unwrap();
//! assert_eq!((range.start, range.end), (0, 2));
//! let mut payloads = Vec::new();
//! log.read(0, 0, 100, &mut |_offset, _time_ms, payload: &[u8]| payloads.push(payload.to_vec()))
//!     .unwrap();
//! assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
//! ```
//!
//! # Layout
//!
//! ```text
//! <dir>/agentwire-log.toml                          format_version = 1, partition_count = N
//! <dir>/<partition>/<base offset, 20 digits>.log    e.g. 0/00000000000000001024.log
//! ```
//!
//! A segment's name is the offset of its first record. The meta file is written last when a
//! log is created; opening a log with another format version or partition count is refused
//! ([`LogError::FormatVersionMismatch`], [`LogError::PartitionCountMismatch`]), and so is any
//! file or directory the log did not create ([`LogError::UnexpectedFile`]), a missing
//! partition directory, an empty one, and a segment whose intact first record disagrees with
//! its name ([`LogError::SegmentNameMismatch`]).
//!
//! # Record format
//!
//! Little-endian, no padding, a 25-byte header ([`RECORD_HEADER_BYTES`]) then the payload:
//!
//! | bytes | field | type | why it is there |
//! |---|---|---|---|
//! | 0 | magic | `u8` = `0xA1` ([`RECORD_MAGIC`]) | marks a record start and names the record format; a zeroed or foreign tail fails here at once, before the length is trusted |
//! | 1..5 | checksum | `u32` | CRC-32 (IEEE, `crc32fast`) over bytes 5.. to the end of the payload: everything after this field, so a damaged length, offset, time or payload is caught. CRC-32 catches every error burst up to 32 bits, so any single damaged byte |
//! | 5..9 | payload length | `u32` | where the record ends; a length that runs past the file is a torn write |
//! | 9..17 | offset | `u64` | the record's position in its partition; checked against the expected next offset, which catches stale records and misnamed or overlapping segments |
//! | 17..25 | append time | `u64`, ms since the Unix epoch | what age retention measures, and what readers get as the append time |
//! | 25.. | payload | bytes | the record, at most `record_bytes_max` (limit checked when appending) |
//!
//! The magic byte is outside the checksum because it is checked by value.
//!
//! # Fsync policies
//!
//! Every batch is written to the file before [`Log::append_batch`] returns, so a crash of the
//! process alone (the kernel survives) loses nothing under any policy. A power failure loses
//! whatever had not reached stable storage:
//!
//! - [`FsyncPolicy::EveryBatch`]: `append_batch` returns after `fdatasync`. **Loses nothing
//!   acknowledged**: a batch whose `append_batch` returned `Ok` survives; a batch in flight
//!   when power fails may be lost whole or in part, and recovery cuts any part of it.
//! - [`FsyncPolicy::Interval`]: a partition syncs on the first append whose append time is
//!   `interval_ms` or more after its oldest unsynced append. **Loses up to `interval_ms` of
//!   appends** per partition while appends keep coming. An idle partition's last appends stay
//!   unsynced until its next append or [`Log::sync_now`], so the daemon calls `sync_now` from a
//!   timer every `interval_ms` to keep the bound when traffic stops.
//! - [`FsyncPolicy::Never`]: the log never syncs on append. **Loses whatever the OS had not
//!   written back**: up to the kernel's dirty-page writeback interval (on Linux
//!   `vm.dirty_expire_centisecs`, 30 s by default, plus up to `dirty_writeback_centisecs`,
//!   5 s) of appends, and more if writeback falls behind.
//!
//! Under every policy a segment is synced once when it is sealed (before the next one is
//! created, then the directory is synced), and [`Log::sync_now`] syncs every partition. So a
//! power failure can only tear the active (last) segment of a partition, which is what
//! recovery scans; sealed segments stay whole and contiguous. Under `Interval` and `Never` the
//! records lost are always a suffix: a partition never comes back with a hole.
//!
//! After a write or sync error a partition refuses appends ([`LogError::WriterFailed`]):
//! after a failed `fdatasync` the kernel may have dropped the dirty pages, so what the file
//! holds is unknown until a reopen scans it. An `Err` from `append_batch` therefore means
//! "not acknowledged", never "not written".
//!
//! # Recovery
//!
//! [`Log::open`] scans the last segment of every partition from its start, checking every
//! record (magic, length within the file, checksum, offset equal to the previous one plus 1).
//! At the first record that fails — a short header, a short payload, a bad magic byte, a bad
//! checksum, or an intact record with an out-of-sequence offset (stale bytes) — the file is
//! truncated to the end of the last good record and synced, and appends continue at the next
//! offset. The [`RecoveryReport`] says, per partition, how many bytes were cut and why
//! ([`RecordDefect`]). The scan reads through the one read buffer; a record larger than it is
//! checksummed in pieces.
//!
//! Sealed segments are not scanned at open (only their first record is read, to check the
//! name), so opening costs one read per sealed segment plus the scan of each last segment. A
//! sealed segment damaged later (bit rot, a flipped byte) is reported by the read that reaches
//! it as [`LogError::Corrupt`] with the partition, the segment and the byte position; the bad
//! record is never returned, and the records before it are.
//!
//! # Reads
//!
//! [`Log::read`] goes through one buffer of `read_buffer_bytes`, allocated at open. There is
//! no offset index: a read finds its segment by base offset, then walks record headers from
//! the segment start (or from where the previous read stopped, so sequential reads never
//! rescan). Skipped records have their headers checked; every record served has its checksum
//! checked.
//!
//! # Retention
//!
//! [`Log::enforce_retention`] deletes whole sealed segments, oldest first; the start offset
//! moves to the oldest remaining segment, and reading below it is
//! [`LogError::OffsetBelowStart`]. The active segment is never deleted. The newest append time
//! of a sealed segment found at open is learned by scanning it (every check) the first time
//! age retention looks at it; a corrupt one stops age retention with [`LogError::Corrupt`],
//! while size retention deletes it regardless.
//!
//! # Limits
//!
//! Every size is bounded in [`LogConfig`]: records (`record_bytes_max`), batches
//! (`batch_bytes_max`, so the encode buffer), segments (`segment_bytes_max`), the read buffer
//! (`read_buffer_bytes`), partitions ([`PARTITION_COUNT_MAX`]). Each partition keeps at most
//! two files open: its active segment and one sealed segment being read.

mod config;
mod error;
mod file_io;
mod layout;
mod partition;
mod record;
mod recovery;
mod scan;
mod stats;
mod store;

pub use config::{
    FsyncPolicy, LogConfig, FSYNC_INTERVAL_MS_MAX, PARTITION_COUNT_MAX, READ_BUFFER_BYTES_LIMIT,
    SEGMENT_BYTES_MAX_LIMIT,
};
pub use error::{ConfigError, LogError, RecordDefect};
pub use layout::FORMAT_VERSION;
pub use record::{RECORD_HEADER_BYTES, RECORD_MAGIC};
pub use recovery::{PartitionRecovery, RecoveryReport};
pub use stats::LogStats;
pub use store::{Log, OffsetRange, ReadOutcome};
