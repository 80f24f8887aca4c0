//! Opening a partition's segments: the tail scan that cuts a torn or corrupt end, the check
//! that each sealed segment's name matches its first record, and the report of what was cut.

use std::path::Path;

use super::error::{LogError, RecordDefect};
use super::file_io::SegmentFile;
use super::scan::{next_record, Check, Next, ReadBuffer};

/// What [`Log::open`](super::Log::open) found and cut, per partition.
///
/// ```
/// use agentwire_streaming::log::{Log, LogConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let (_, report) = Log::open(LogConfig::new(dir.path())).unwrap();
/// assert_eq!(report.partitions.len(), 1);
/// assert_eq!(report.bytes_truncated_total(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionRecovery>,
}

impl RecoveryReport {
    /// Bytes cut over all partitions.
    ///
    /// ```
    /// let report = agentwire_streaming::log::RecoveryReport::default();
    /// assert_eq!(report.bytes_truncated_total(), 0);
    /// ```
    pub fn bytes_truncated_total(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes_truncated).sum()
    }
}

/// Recovery of one partition.
///
/// ```
/// use agentwire_streaming::log::PartitionRecovery;
/// let clean = PartitionRecovery {
///     partition: 0, segment: 0, bytes_truncated: 0, defect: None, next_offset: 0,
/// };
/// assert!(clean.defect.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRecovery {
    /// The partition.
    pub partition: u32,
    /// Base offset of its last (active) segment, the one scanned.
    pub segment: u64,
    /// Bytes cut from the end of that segment.
    pub bytes_truncated: u64,
    /// Why the cut started where it did; `None` when the tail was clean.
    pub defect: Option<RecordDefect>,
    /// The offset the next append gets.
    pub next_offset: u64,
}

/// The result of scanning the last segment.
pub(crate) struct TailScan {
    /// Bytes of whole, good records from the start of the segment.
    pub(crate) good_bytes: u64,
    /// Offset after the last good record.
    pub(crate) next_offset: u64,
    /// Newest append time among the good records.
    pub(crate) newest_append_time_ms: Option<u64>,
    /// The first bad record's defect, if the scan stopped before the end of the file.
    pub(crate) defect: Option<RecordDefect>,
}

/// Scans the last segment from its start with every check, stopping at the first record that
/// fails one. An intact first record whose offset is not the name's is a misnamed file, an
/// error; a later intact record out of sequence is stale data and is cut.
pub(crate) fn scan_tail(
    path: &Path,
    file: &SegmentFile,
    base_offset: u64,
    len_bytes: u64,
    buf: &mut ReadBuffer,
) -> Result<TailScan, LogError> {
    buf.invalidate();
    let mut scan = TailScan {
        good_bytes: 0,
        next_offset: base_offset,
        newest_append_time_ms: None,
        defect: None,
    };
    while scan.good_bytes < len_bytes {
        let next = next_record(
            buf,
            file,
            scan.good_bytes,
            len_bytes,
            scan.next_offset,
            Check::Full,
        )
        .map_err(LogError::io("scan segment", path))?;
        match next {
            Next::Record(found) => {
                scan.good_bytes = found.next_position();
                scan.next_offset += 1;
                let time_ms = found.header.append_time_ms;
                scan.newest_append_time_ms = scan.newest_append_time_ms.max(Some(time_ms));
            }
            Next::Misplaced(found) if found.position == 0 => {
                return Err(LogError::SegmentNameMismatch {
                    path: path.into(),
                    name_offset: base_offset,
                    record_offset: found.header.offset,
                })
            }
            Next::Misplaced(_) => {
                scan.defect = Some(RecordDefect::OffsetOutOfSequence);
                break;
            }
            Next::Defect(defect) => {
                scan.defect = Some(defect);
                break;
            }
        }
    }
    buf.invalidate();
    Ok(scan)
}

/// Checks a sealed segment's first record against its name. Only an intact record can
/// disagree; a damaged one is left for reads to report as [`LogError::Corrupt`], so one bad
/// old segment does not keep the rest of the log from opening.
pub(crate) fn check_sealed_name(
    path: &Path,
    file: &SegmentFile,
    base_offset: u64,
    len_bytes: u64,
    buf: &mut ReadBuffer,
) -> Result<(), LogError> {
    if len_bytes == 0 {
        return Ok(());
    }
    buf.invalidate();
    let next = next_record(buf, file, 0, len_bytes, base_offset, Check::Full)
        .map_err(LogError::io("read segment", path))?;
    buf.invalidate();
    match next {
        Next::Misplaced(found) => Err(LogError::SegmentNameMismatch {
            path: path.into(),
            name_offset: base_offset,
            record_offset: found.header.offset,
        }),
        Next::Record(_) | Next::Defect(_) => Ok(()),
    }
}
