//! One partition: its segments, appends with group commit and segment rolling, reads,
//! syncing and retention.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::config::{FsyncPolicy, LogConfig};
use super::error::{LogError, RecordDefect};
use super::file_io::{self, SegmentFile};
use super::layout::{list_segments, partition_dir, segment_path};
use super::record::{encode_into, encoded_bytes};
use super::recovery::{check_sealed_name, scan_tail, PartitionRecovery};
use super::scan::{next_record, Check, Next, ReadBuffer};
use super::stats::LogStats;
use super::{OffsetRange, ReadOutcome};

/// One segment file's place in the partition.
struct Segment {
    base_offset: u64,
    path: PathBuf,
    len_bytes: u64,
    /// Newest append time of its records; `None` until known (a sealed segment found at open
    /// is scanned for it only when age retention asks).
    newest_append_time_ms: Option<u64>,
}

/// Where the last read stopped, so a reader going forward does not rescan the segment.
#[derive(Clone, Copy)]
struct ReadHint {
    segment_base: u64,
    offset: u64,
    position: u64,
}

pub(crate) struct Partition {
    index: u32,
    dir: PathBuf,
    /// Oldest first; never empty; the last is the active segment.
    segments: VecDeque<Segment>,
    /// The active segment, open read-write.
    active: SegmentFile,
    /// At most one sealed segment open for reading at a time (bounds open files to two per
    /// partition however many segments there are).
    sealed_reader: Option<(u64, SegmentFile)>,
    next_offset: u64,
    /// Append time of the oldest append not yet synced; `None` when everything is synced.
    unsynced_since_ms: Option<u64>,
    /// A write or sync failed; appends are refused until reopen.
    failed: bool,
    read_hint: Option<ReadHint>,
}

impl Partition {
    /// Opens partition `index` under the log directory `log_dir`, recovering its tail.
    pub(crate) fn open(
        index: u32,
        log_dir: &Path,
        buf: &mut ReadBuffer,
        stats: &mut LogStats,
    ) -> Result<(Self, PartitionRecovery), LogError> {
        let dir = partition_dir(log_dir, index);
        let bases = list_segments(index, &dir)?;
        let (&last_base, sealed_bases) = bases.split_last().expect("list_segments is non-empty");
        let mut segments = VecDeque::with_capacity(bases.len());
        for &base_offset in sealed_bases {
            let path = segment_path(&dir, base_offset);
            let file =
                SegmentFile::open_read_only(&path).map_err(LogError::io("open segment", &path))?;
            let len_bytes = file
                .len_bytes()
                .map_err(LogError::io("stat segment", &path))?;
            check_sealed_name(&path, &file, base_offset, len_bytes, buf)?;
            segments.push_back(Segment {
                base_offset,
                path,
                len_bytes,
                newest_append_time_ms: None,
            });
        }
        let path = segment_path(&dir, last_base);
        let active =
            SegmentFile::open_read_write(&path).map_err(LogError::io("open segment", &path))?;
        let len_bytes = active
            .len_bytes()
            .map_err(LogError::io("stat segment", &path))?;
        let tail = scan_tail(&path, &active, last_base, len_bytes, buf)?;
        let bytes_truncated = len_bytes - tail.good_bytes;
        if bytes_truncated > 0 {
            active
                .truncate(tail.good_bytes)
                .and_then(|()| active.sync_data())
                .map_err(LogError::io("truncate torn tail", &path))?;
            stats.fsyncs += 1;
            stats.bytes_truncated_at_recovery += bytes_truncated;
        }
        segments.push_back(Segment {
            base_offset: last_base,
            path,
            len_bytes: tail.good_bytes,
            newest_append_time_ms: tail.newest_append_time_ms,
        });
        let recovery = PartitionRecovery {
            partition: index,
            segment: last_base,
            bytes_truncated,
            defect: tail.defect,
            next_offset: tail.next_offset,
        };
        let partition = Self {
            index,
            dir,
            segments,
            active,
            sealed_reader: None,
            next_offset: tail.next_offset,
            unsynced_since_ms: None,
            failed: false,
            read_hint: None,
        };
        Ok((partition, recovery))
    }

    /// The oldest offset still stored.
    pub(crate) fn start_offset(&self) -> u64 {
        self.segments.front().expect("never empty").base_offset
    }

    /// The offset the next append gets.
    pub(crate) fn end_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes stored, all segments.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len_bytes).sum()
    }

    /// Appends a batch with one positioned write and, as the policy says, one sync.
    pub(crate) fn append(
        &mut self,
        records: &[&[u8]],
        append_time_ms: u64,
        config: &LogConfig,
        encode_buf: &mut Vec<u8>,
        stats: &mut LogStats,
    ) -> Result<OffsetRange, LogError> {
        if self.failed {
            return Err(LogError::WriterFailed {
                partition: self.index,
            });
        }
        let batch_bytes = check_batch(records, config)?;
        let start = self.next_offset;
        if records.is_empty() {
            return Ok(OffsetRange { start, end: start });
        }
        let active_bytes = self.segments.back().expect("never empty").len_bytes;
        if active_bytes > 0 && active_bytes + batch_bytes > config.segment_bytes_max {
            self.roll(stats)?;
        }
        encode_buf.clear();
        for (offset, record) in (start..).zip(records) {
            encode_into(encode_buf, offset, append_time_ms, record);
        }
        debug_assert_eq!(encode_buf.len() as u64, batch_bytes);
        let segment = self.segments.back_mut().expect("never empty");
        if let Err(source) = self.active.write_all_at(encode_buf, segment.len_bytes) {
            // Best effort: drop a partial batch so a retry cannot leave stale records behind
            // it. Whether or not that works, the partition stops taking appends.
            let _ = self.active.truncate(segment.len_bytes);
            self.failed = true;
            return Err(LogError::Io {
                op: "append",
                path: segment.path.clone(),
                source,
            });
        }
        let record_count = records.len() as u64;
        segment.len_bytes += batch_bytes;
        segment.newest_append_time_ms = segment.newest_append_time_ms.max(Some(append_time_ms));
        self.next_offset += record_count;
        stats.records_appended += record_count;
        stats.bytes_appended += batch_bytes;
        stats.batches_appended += 1;
        let unsynced_since_ms = *self.unsynced_since_ms.get_or_insert(append_time_ms);
        let sync_due = match config.fsync {
            FsyncPolicy::EveryBatch => true,
            FsyncPolicy::Interval { interval_ms } => {
                append_time_ms.saturating_sub(unsynced_since_ms) >= interval_ms
            }
            FsyncPolicy::Never => false,
        };
        if sync_due {
            self.sync(stats)?;
        }
        Ok(OffsetRange {
            start,
            end: self.next_offset,
        })
    }

    /// Syncs the active segment if anything in it is unsynced.
    pub(crate) fn sync(&mut self, stats: &mut LogStats) -> Result<(), LogError> {
        if self.unsynced_since_ms.is_none() {
            return Ok(());
        }
        if let Err(source) = self.active.sync_data() {
            // After a failed fdatasync the kernel may have dropped the dirty pages; what is on
            // disk is unknown until a reopen scans it.
            self.failed = true;
            let path = self.segments.back().expect("never empty").path.clone();
            return Err(LogError::Io {
                op: "sync",
                path,
                source,
            });
        }
        self.unsynced_since_ms = None;
        stats.fsyncs += 1;
        Ok(())
    }

    /// Seals the active segment and starts one at the next offset. The sealed segment is
    /// synced first under every policy, so a sealed segment is always whole on disk and a
    /// power failure can only tear the active one.
    fn roll(&mut self, stats: &mut LogStats) -> Result<(), LogError> {
        self.sync(stats)?;
        let path = segment_path(&self.dir, self.next_offset);
        let file = SegmentFile::create_new(&path).map_err(LogError::io("create segment", &path))?;
        file_io::sync_dir(&self.dir)
            .map_err(LogError::io("sync partition directory", &self.dir))?;
        stats.dir_syncs += 1;
        self.active = file;
        self.segments.push_back(Segment {
            base_offset: self.next_offset,
            path,
            len_bytes: 0,
            newest_append_time_ms: None,
        });
        stats.segments_rolled += 1;
        Ok(())
    }

    /// Visits up to `records_max` records from `from_offset`, checking each one served.
    pub(crate) fn read<F: FnMut(u64, u64, &[u8])>(
        &mut self,
        from_offset: u64,
        records_max: usize,
        buf: &mut ReadBuffer,
        visit: &mut F,
    ) -> Result<ReadOutcome, LogError> {
        self.check_readable(from_offset)?;
        let mut segment_index = self
            .segments
            .partition_point(|s| s.base_offset <= from_offset)
            - 1;
        let segment_base = self.segments[segment_index].base_offset;
        let (mut offset, mut position) = match self.read_hint {
            Some(hint) if hint.segment_base == segment_base && hint.offset <= from_offset => {
                (hint.offset, hint.position)
            }
            _ => (segment_base, 0),
        };
        let mut records_visited = 0;
        buf.invalidate();
        while records_visited < records_max && offset < self.next_offset {
            let segment = &self.segments[segment_index];
            let is_active = segment_index + 1 == self.segments.len();
            let limit_offset = self
                .segments
                .get(segment_index + 1)
                .map_or(u64::MAX, |s| s.base_offset);
            if position >= segment.len_bytes || offset >= limit_offset {
                // The end of a sealed segment: it must end exactly where the next one begins.
                if position != segment.len_bytes || offset != limit_offset {
                    return Err(self.corrupt(
                        segment.base_offset,
                        position,
                        RecordDefect::OffsetOutOfSequence,
                    ));
                }
                segment_index += 1;
                position = 0;
                buf.invalidate();
                continue;
            }
            let file = reader_file(&self.active, &mut self.sealed_reader, segment, is_active)?;
            let check = if offset < from_offset {
                Check::HeaderOnly
            } else {
                Check::Full
            };
            let next = next_record(buf, file, position, segment.len_bytes, offset, check)
                .map_err(LogError::io("read segment", &segment.path))?;
            let found = match next {
                Next::Record(found) => found,
                Next::Misplaced(_) => {
                    return Err(self.corrupt(
                        segment.base_offset,
                        position,
                        RecordDefect::OffsetOutOfSequence,
                    ))
                }
                Next::Defect(defect) => {
                    return Err(self.corrupt(segment.base_offset, position, defect))
                }
            };
            if offset >= from_offset {
                let read_buffer_bytes = buf.capacity_bytes();
                let payload = buf
                    .payload(file, &found, segment.len_bytes)
                    .map_err(LogError::io("read segment", &segment.path))?
                    .ok_or(LogError::RecordExceedsReadBuffer {
                        partition: self.index,
                        offset,
                        record_bytes: found.header.record_bytes(),
                        read_buffer_bytes,
                    })?;
                visit(offset, found.header.append_time_ms, payload);
                records_visited += 1;
            }
            offset += 1;
            position = found.next_position();
        }
        self.read_hint = Some(ReadHint {
            segment_base: self.segments[segment_index].base_offset,
            offset,
            position,
        });
        Ok(ReadOutcome {
            records_visited,
            next_offset: offset,
        })
    }

    fn check_readable(&self, offset: u64) -> Result<(), LogError> {
        let start_offset = self.start_offset();
        if offset < start_offset {
            return Err(LogError::OffsetBelowStart {
                partition: self.index,
                offset,
                start_offset,
            });
        }
        if offset > self.next_offset {
            return Err(LogError::OffsetAboveEnd {
                partition: self.index,
                offset,
                end_offset: self.next_offset,
            });
        }
        Ok(())
    }

    fn corrupt(&self, segment: u64, position: u64, defect: RecordDefect) -> LogError {
        LogError::Corrupt {
            partition: self.index,
            segment,
            position,
            defect,
        }
    }

    /// Deletes sealed segments, oldest first, while the partition is over
    /// `retention_bytes_max` or the oldest one's newest record is older than
    /// `retention_age_ms`. Returns how many were deleted.
    pub(crate) fn enforce_retention(
        &mut self,
        now_ms: u64,
        config: &LogConfig,
        buf: &mut ReadBuffer,
        stats: &mut LogStats,
    ) -> Result<u64, LogError> {
        let mut stored_bytes = self.stored_bytes();
        let mut deleted_count = 0;
        while self.segments.len() > 1 {
            let over_size =
                config.retention_bytes_max != 0 && stored_bytes > config.retention_bytes_max;
            let expired = !over_size
                && config.retention_age_ms != 0
                && now_ms.saturating_sub(self.oldest_newest_append_time_ms(buf)?)
                    > config.retention_age_ms;
            if !over_size && !expired {
                break;
            }
            let oldest = self.segments.front().expect("len > 1");
            if self
                .sealed_reader
                .as_ref()
                .is_some_and(|(base, _)| *base == oldest.base_offset)
            {
                self.sealed_reader = None;
            }
            // Not followed by a directory sync: a deletion undone by a power failure only
            // keeps a whole, synced segment a little longer.
            file_io::remove_file(&oldest.path)
                .map_err(LogError::io("delete segment", &oldest.path))?;
            stored_bytes -= oldest.len_bytes;
            self.segments.pop_front();
            deleted_count += 1;
            stats.segments_deleted += 1;
        }
        Ok(deleted_count)
    }

    /// The newest append time in the oldest segment, scanning it (every check) the first time.
    fn oldest_newest_append_time_ms(&mut self, buf: &mut ReadBuffer) -> Result<u64, LogError> {
        let segment = self.segments.front().expect("never empty");
        if let Some(time_ms) = segment.newest_append_time_ms {
            return Ok(time_ms);
        }
        let file = reader_file(&self.active, &mut self.sealed_reader, segment, false)?;
        let limit_offset = self.segments.get(1).map_or(u64::MAX, |s| s.base_offset);
        let (mut offset, mut position, mut newest_ms) = (segment.base_offset, 0, 0);
        buf.invalidate();
        while position < segment.len_bytes && offset < limit_offset {
            let next = next_record(buf, file, position, segment.len_bytes, offset, Check::Full)
                .map_err(LogError::io("read segment", &segment.path))?;
            let Next::Record(found) = next else {
                let defect = match next {
                    Next::Defect(defect) => defect,
                    _ => RecordDefect::OffsetOutOfSequence,
                };
                return Err(self.corrupt(segment.base_offset, position, defect));
            };
            newest_ms = newest_ms.max(found.header.append_time_ms);
            offset += 1;
            position = found.next_position();
        }
        buf.invalidate();
        let segment = self.segments.front_mut().expect("never empty");
        segment.newest_append_time_ms = Some(newest_ms);
        Ok(newest_ms)
    }
}

/// Per-record and batch size checks; returns the encoded size of the batch.
fn check_batch(records: &[&[u8]], config: &LogConfig) -> Result<u64, LogError> {
    let mut batch_bytes = 0u64;
    for (index_in_batch, record) in records.iter().enumerate() {
        if record.len() > config.record_bytes_max as usize {
            return Err(LogError::RecordTooLarge {
                index_in_batch,
                record_bytes: record.len(),
                record_bytes_max: config.record_bytes_max,
            });
        }
        batch_bytes += encoded_bytes(record.len()) as u64;
    }
    if batch_bytes > config.batch_bytes_max {
        return Err(LogError::BatchTooLarge {
            batch_bytes,
            batch_bytes_max: config.batch_bytes_max,
        });
    }
    Ok(batch_bytes)
}

/// The file to read `segment` from: the active file, or the one cached sealed file (opening it
/// and closing the previous one when it is another segment). A free function over the two
/// fields so the caller can keep borrowing the segment list.
fn reader_file<'a>(
    active: &'a SegmentFile,
    sealed_reader: &'a mut Option<(u64, SegmentFile)>,
    segment: &Segment,
    is_active: bool,
) -> Result<&'a SegmentFile, LogError> {
    if is_active {
        return Ok(active);
    }
    if sealed_reader.as_ref().map(|(base, _)| *base) != Some(segment.base_offset) {
        let file = SegmentFile::open_read_only(&segment.path)
            .map_err(LogError::io("open segment", &segment.path))?;
        *sealed_reader = Some((segment.base_offset, file));
    }
    Ok(&sealed_reader.as_ref().expect("just set").1)
}
