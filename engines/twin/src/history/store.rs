//! The store: series, their tiers' segments, appends, queries, retention and the size bound.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::segment::{self, HEADER_BYTES, RECORD_BYTES};
use super::{valid_name, AppendError, Bucket, HistoryConfig, OpenError, QueryError, Stats};

/// One segment file's metadata.
#[derive(Debug)]
struct Segment {
    seq: u64,
    bytes: u64,
    /// Record slots, valid or not.
    records: u64,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

/// One series' data at one tier.
#[derive(Debug, Default)]
struct Stream {
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    /// The bucket being filled (not yet written).
    open: Option<Bucket>,
    next_seq: u64,
}

#[derive(Debug)]
struct Series {
    tiers: Vec<Stream>,
    /// The newest sample time (after a reopen: the newest stored bucket start).
    newest_ms: Option<u64>,
}

/// An on-disk store of named series (see the [module doc](super)).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use agentwire_twin::history::{History, HistoryConfig};
/// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
/// for s in 0..120u64 {
///     h.append("shard0.frames_in", s * 1000, s as f64).unwrap();
/// }
/// h.flush().unwrap();
/// let minutes = h.query("shard0.frames_in", 1, 0, 120_000).unwrap();
/// assert_eq!(minutes.len(), 2);
/// assert_eq!((minutes[0].count, minutes[0].max, minutes[1].last), (60, 59.0, 119.0));
/// drop(h);
/// let h = History::open(dir.path(), HistoryConfig::default()).unwrap();
/// assert_eq!(h.query("shard0.frames_in", 0, 0, 120_000).unwrap().len(), 120);
/// ```
#[derive(Debug)]
pub struct History {
    dir: PathBuf,
    config: HistoryConfig,
    /// Opened with [`History::open_read_only`]: nothing on disk is changed, appends are
    /// refused.
    read_only: bool,
    series: BTreeMap<String, Series>,
    bytes_total: u64,
    /// The store's clock (see [`History::newest_ms`]).
    newest_ms: Option<u64>,
    stats: Stats,
}

fn io_open(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `r<resolution_ms>-<seq>.seg` parsed.
fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix('r')?.strip_suffix(".seg")?;
    let (res, seq) = rest.split_once('-')?;
    Some((res.parse().ok()?, seq.parse().ok()?))
}

impl History {
    /// Opens (creating it if needed) the store in `dir`: scans every segment, repairs torn
    /// tails, removes bad segments, then applies retention and the size bound.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let h = History::open(dir.path().join("history"), HistoryConfig::default()).unwrap();
    /// assert_eq!(h.bytes_total(), 0);
    /// ```
    pub fn open(dir: impl AsRef<Path>, config: HistoryConfig) -> Result<Self, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        config.validate()?;
        std::fs::create_dir_all(&dir).map_err(io_open(&dir))?;
        let mut store = Self::scan_dir(dir, config, false)?;
        store.enforce_retention().map_err(|e| match e {
            AppendError::Io { path, source } => OpenError::Io { path, source },
            other => OpenError::BadConfig(other.to_string()),
        })?;
        store
            .make_room(0)
            .map_err(|(path, source)| OpenError::Io { path, source })?;
        Ok(store)
    }

    /// Opens the store in `dir` to read while its owner (the daemon's twin) may be writing
    /// it: nothing on disk is created, repaired, removed or truncated. A partial record at a
    /// segment's end is not read (the writer may be writing it), a bad segment or one of
    /// another tier's resolution is skipped, a segment the writer retires after the open
    /// reads as empty, and appends are refused ([`AppendError::ReadOnly`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{AppendError, History, HistoryConfig};
    /// let mut writer = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// writer.append("a", 0, 1.0).unwrap();
    /// writer.append("a", 1000, 2.0).unwrap();
    /// let mut reader = History::open_read_only(dir.path(), HistoryConfig::default()).unwrap();
    /// assert_eq!(reader.query("a", 0, 0, 2000).unwrap().len(), 1, "the open bucket is the writer's");
    /// assert!(matches!(reader.append("a", 3000, 1.0), Err(AppendError::ReadOnly)));
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>, config: HistoryConfig) -> Result<Self, OpenError> {
        config.validate()?;
        Self::scan_dir(dir.as_ref().to_path_buf(), config, true)
    }

    /// Loads every series under `dir` (see [`History::open`] and
    /// [`History::open_read_only`]).
    fn scan_dir(dir: PathBuf, config: HistoryConfig, read_only: bool) -> Result<Self, OpenError> {
        let mut store = Self {
            dir: dir.clone(),
            config,
            read_only,
            series: BTreeMap::new(),
            bytes_total: 0,
            newest_ms: None,
            stats: Stats::default(),
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_open(&dir))? {
            let entry = entry.map_err(io_open(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_name(&name) && entry.file_type().map_err(io_open(&dir))?.is_dir() {
                names.push(name);
            }
        }
        for name in names {
            store.load_series(&name)?;
        }
        store.newest_ms = store.series.values().filter_map(|s| s.newest_ms).max();
        Ok(store)
    }

    fn load_series(&mut self, name: &str) -> Result<(), OpenError> {
        let dir = self.dir.join(name);
        let mut series = Series {
            tiers: self
                .config
                .tiers
                .iter()
                .map(|_| Stream::default())
                .collect(),
            newest_ms: None,
        };
        let entries = match std::fs::read_dir(&dir) {
            // Read-only: the writer dropped the whole series since the directory was listed.
            Err(e) if self.read_only && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other.map_err(io_open(&dir))?,
        };
        for entry in entries {
            let entry = entry.map_err(io_open(&dir))?;
            let path = entry.path();
            if !entry.file_type().map_err(io_open(&path))?.is_file() {
                continue; // Not ours: left alone.
            }
            let Some((resolution_ms, seq)) =
                parse_segment_name(&entry.file_name().to_string_lossy())
            else {
                continue; // Not ours: left alone.
            };
            let Some(tier) = self
                .config
                .tiers
                .iter()
                .position(|t| t.resolution_ms == resolution_ms)
            else {
                if !self.read_only {
                    std::fs::remove_file(&path).map_err(io_open(&path))?;
                    self.stats.orphan_segments_removed += 1;
                }
                continue;
            };
            let scan = match segment::scan(&path, resolution_ms) {
                // Read-only: the writer retired the segment since the directory was listed.
                Err(e) if self.read_only && e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(io_open(&path))?,
            };
            let Some(scan) = scan else {
                if !self.read_only {
                    std::fs::remove_file(&path).map_err(io_open(&path))?;
                    self.stats.bad_segments_removed += 1;
                }
                continue;
            };
            let bytes = HEADER_BYTES + scan.records * RECORD_BYTES;
            if scan.torn_bytes > 0 && !self.read_only {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_open(&path))?;
                file.set_len(bytes).map_err(io_open(&path))?;
                self.stats.torn_segments += 1;
                self.stats.torn_bytes += scan.torn_bytes;
            }
            self.stats.corrupt_records += scan.corrupt;
            self.bytes_total += bytes;
            series.newest_ms = series.newest_ms.max(scan.last_ms);
            series.tiers[tier].segments.push_back(Segment {
                seq,
                bytes,
                records: scan.records,
                first_ms: scan.first_ms,
                last_ms: scan.last_ms,
            });
        }
        for stream in &mut series.tiers {
            stream.segments.make_contiguous().sort_by_key(|s| s.seq);
            stream.next_seq = stream.segments.back().map_or(0, |s| s.seq + 1);
        }
        self.series.insert(name.to_string(), series);
        Ok(())
    }

    /// Stores a sample of `series` taken at `time_ms` (ms since any fixed origin, the Unix
    /// epoch for the twin). Times of a series must not go backwards.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{AppendError, History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("dlq.depth", 5000, 3.0).unwrap();
    /// assert!(matches!(h.append("dlq.depth", 4000, 1.0), Err(AppendError::OutOfOrder { .. })));
    /// assert!(matches!(h.append("../x", 6000, 1.0), Err(AppendError::BadName(_))));
    /// ```
    pub fn append(&mut self, series: &str, time_ms: u64, value: f64) -> Result<(), AppendError> {
        if self.read_only {
            return Err(AppendError::ReadOnly);
        }
        if !value.is_finite() {
            return Err(AppendError::NotFinite {
                series: series.to_string(),
                time_ms,
                value,
            });
        }
        if !valid_name(series) {
            return Err(AppendError::BadName(series.to_string()));
        }
        if !self.series.contains_key(series) {
            if self.series.len() >= self.config.series_max {
                return Err(AppendError::TooManySeries {
                    series: series.to_string(),
                    max: self.config.series_max,
                });
            }
            let s = Series {
                tiers: self
                    .config
                    .tiers
                    .iter()
                    .map(|_| Stream::default())
                    .collect(),
                newest_ms: None,
            };
            self.series.insert(series.to_string(), s);
        }
        let entry = self.series.get_mut(series).expect("inserted above");
        if let Some(newest_ms) = entry.newest_ms.filter(|n| time_ms < *n) {
            return Err(AppendError::OutOfOrder {
                series: series.to_string(),
                time_ms,
                value,
                newest_ms,
            });
        }
        entry.newest_ms = Some(time_ms);
        // The clock moves in finest-tier buckets, so that it reads the same after a reopen
        // (which knows bucket starts, not sample times).
        let finest_ms = self.config.tiers[0].resolution_ms;
        self.newest_ms = self.newest_ms.max(Some(time_ms - time_ms % finest_ms));
        for tier in 0..self.config.tiers.len() {
            let start_ms = time_ms - time_ms % self.config.tiers[tier].resolution_ms;
            let stream = &mut self.series.get_mut(series).expect("present").tiers[tier];
            let closed = match &mut stream.open {
                Some(b) if b.start_ms == start_ms => {
                    b.add(value);
                    None
                }
                open => open.replace(Bucket::new(start_ms, value)),
            };
            if let Some(bucket) = closed {
                self.write(series, tier, &bucket)?;
            }
        }
        Ok(())
    }

    /// Writes every open bucket (a later sample in the same bucket is written as another
    /// record, merged by queries).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("a", 0, 1.0).unwrap();
    /// h.flush().unwrap();
    /// h.append("a", 500, 3.0).unwrap();
    /// h.flush().unwrap();
    /// let b = h.query("a", 0, 0, 1000).unwrap();
    /// assert_eq!((b.len(), b[0].count, b[0].mean()), (1, 2, 2.0));
    /// ```
    pub fn flush(&mut self) -> Result<(), AppendError> {
        if self.read_only {
            return Err(AppendError::ReadOnly);
        }
        let mut pending = Vec::new();
        for (name, series) in &mut self.series {
            for (tier, stream) in series.tiers.iter_mut().enumerate() {
                if let Some(b) = stream.open.take() {
                    pending.push((name.clone(), tier, b));
                }
            }
        }
        for (name, tier, bucket) in pending {
            self.write(&name, tier, &bucket)?;
        }
        Ok(())
    }

    /// The store's configuration.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// assert_eq!(h.config().tiers_value()[0].resolution_ms, 1000);
    /// ```
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The buckets of `series` at tier `tier` (0 the finest) whose start lies in
    /// `[from_ms, to_ms)`, oldest first, within the tier's retention; the open bucket
    /// included. An unknown series has none.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("a", 1000, 1.0).unwrap();
    /// h.append("a", 2000, 2.0).unwrap();
    /// assert_eq!(h.query("a", 0, 0, 10_000).unwrap().len(), 2);
    /// assert!(h.query("b", 0, 0, 10_000).unwrap().is_empty());
    /// ```
    pub fn query(
        &self,
        series: &str,
        tier: usize,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Bucket>, QueryError> {
        let tiers = self.config.tiers.len();
        let t = *self
            .config
            .tiers
            .get(tier)
            .ok_or(QueryError::NoSuchTier { tier, tiers })?;
        let points = to_ms.saturating_sub(from_ms).div_ceil(t.resolution_ms);
        if points > self.config.query_points_max as u64 {
            return Err(QueryError::RangeTooLarge {
                points,
                max: self.config.query_points_max,
            });
        }
        let Some(stream) = self.series.get(series).map(|s| &s.tiers[tier]) else {
            return Ok(Vec::new());
        };
        let from_ms = from_ms.max(self.cutoff_ms(tier));
        let mut out: Vec<Bucket> = Vec::new();
        let mut keep = |b: Bucket| {
            if b.start_ms >= from_ms && b.start_ms < to_ms {
                match out.last_mut() {
                    Some(prev) if prev.start_ms == b.start_ms => prev.merge(&b),
                    _ => out.push(b),
                }
            }
        };
        for seg in &stream.segments {
            let (Some(first), Some(last)) = (seg.first_ms, seg.last_ms) else {
                continue;
            };
            if last < from_ms || first >= to_ms {
                continue;
            }
            let path = self.segment_path(series, tier, seg.seq);
            let read = segment::read(&path, |b| {
                let more = b.start_ms < to_ms;
                keep(b);
                more
            });
            match read {
                // Read-only: the writer retired (or repaired) the segment after the open.
                Err(e)
                    if self.read_only
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                        ) => {}
                other => other.map_err(|source| QueryError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            }
        }
        if let Some(b) = stream.open {
            keep(b);
        }
        Ok(out)
    }

    /// The series' names, sorted.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("b", 0, 1.0).unwrap();
    /// h.append("a", 0, 1.0).unwrap();
    /// assert_eq!(h.series().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn series(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// What recovery and the bounds removed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// assert_eq!(h.stats().torn_segments, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The segment files' bytes together (at most the configured `bytes_max`).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("a", 0, 1.0).unwrap();
    /// h.flush().unwrap();
    /// assert_eq!(h.bytes_total(), 2 * (32 + 48)); // two tiers: a header and a record each
    /// ```
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// The store's clock: the start of the finest-tier bucket of the newest sample of any
    /// series.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.append("a", 7000, 1.0).unwrap();
    /// assert_eq!(h.newest_ms(), Some(7000));
    /// ```
    pub fn newest_ms(&self) -> Option<u64> {
        self.newest_ms
    }

    /// Deletes every segment whose newest bucket is older than its tier's retention (done on
    /// open and whenever a segment starts; call it to age out series that stopped).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use agentwire_twin::history::{History, HistoryConfig};
    /// let mut h = History::open(dir.path(), HistoryConfig::default()).unwrap();
    /// h.enforce_retention().unwrap();
    /// assert_eq!(h.stats().segments_dropped_age, 0);
    /// ```
    pub fn enforce_retention(&mut self) -> Result<(), AppendError> {
        for tier in 0..self.config.tiers.len() {
            let cutoff = self.cutoff_ms(tier);
            let names: Vec<String> = self.series.keys().cloned().collect();
            for name in names {
                loop {
                    let stream = &self.series[&name].tiers[tier];
                    let Some(seg) = stream.segments.front() else {
                        break;
                    };
                    // The active segment goes too once all it holds is old: the next
                    // write starts a new one.
                    // A segment with no valid record ages out unless it is the one being
                    // written.
                    let fresh = match seg.last_ms {
                        Some(last) => last >= cutoff,
                        None => stream.segments.len() == 1,
                    };
                    if fresh {
                        break;
                    }
                    let records = seg.records;
                    self.drop_front(&name, tier)
                        .map_err(|(path, source)| AppendError::Io { path, source })?;
                    self.stats.segments_dropped_age += 1;
                    self.stats.records_dropped_age += records;
                }
            }
        }
        Ok(())
    }

    /// The oldest bucket start a tier keeps.
    fn cutoff_ms(&self, tier: usize) -> u64 {
        self.newest_ms
            .unwrap_or(0)
            .saturating_sub(self.config.tiers[tier].retention_ms)
    }

    fn segment_path(&self, series: &str, tier: usize, seq: u64) -> PathBuf {
        let res = self.config.tiers[tier].resolution_ms;
        self.dir.join(series).join(format!("r{res}-{seq:010}.seg"))
    }

    /// Deletes the oldest segment of `series` at `tier`.
    fn drop_front(&mut self, series: &str, tier: usize) -> Result<(), (String, std::io::Error)> {
        let seq = self.series[series].tiers[tier]
            .segments
            .front()
            .expect("caller checked")
            .seq;
        let path = self.segment_path(series, tier, seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((path.display().to_string(), e)),
        }
        let seg = self.series.get_mut(series).expect("present").tiers[tier]
            .segments
            .pop_front()
            .expect("caller checked");
        self.bytes_total -= seg.bytes;
        Ok(())
    }

    /// Deletes the segments with the oldest data until `need` more bytes fit in `bytes_max`.
    fn make_room(&mut self, need: u64) -> Result<(), (String, std::io::Error)> {
        while self.bytes_total + need > self.config.bytes_max {
            // The oldest: the front segment (of any series and tier) whose newest bucket is
            // the oldest; one with no valid record counts as oldest of all.
            let oldest = self
                .series
                .iter()
                .flat_map(|(name, s)| {
                    s.tiers
                        .iter()
                        .enumerate()
                        .filter_map(move |(tier, stream)| {
                            stream
                                .segments
                                .front()
                                .map(|seg| (seg.last_ms.map_or(0, |l| l + 1), tier, name))
                        })
                })
                .min();
            let Some((_, tier, name)) = oldest else {
                break; // Nothing left to delete; validate() makes one segment fit.
            };
            let name = name.clone();
            let seg = &self.series[&name].tiers[tier].segments[0];
            let (bytes, records) = (seg.bytes, seg.records);
            self.drop_front(&name, tier)?;
            self.stats.segments_dropped_size += 1;
            self.stats.records_dropped_size += records;
            self.stats.bytes_dropped_size += bytes;
        }
        Ok(())
    }

    /// Appends `bucket` to the newest segment of `series` at `tier`, starting a new one when
    /// it is full, after making room under the size bound.
    fn write(&mut self, series: &str, tier: usize, bucket: &Bucket) -> Result<(), AppendError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| AppendError::Io { path, source }
        };
        let io_pair = |(path, source)| AppendError::Io { path, source };
        let segment_bytes_max = self.config.segment_bytes_max;
        let fits = |s: &Self| {
            s.series[series].tiers[tier]
                .segments
                .back()
                .is_some_and(|seg| seg.bytes + RECORD_BYTES <= segment_bytes_max)
        };
        let mut new_segment = !fits(self);
        let need = RECORD_BYTES + if new_segment { HEADER_BYTES } else { 0 };
        self.make_room(need).map_err(io_pair)?;
        if !new_segment && !fits(self) {
            // Making room deleted the segment this series was writing.
            new_segment = true;
            self.make_room(RECORD_BYTES + HEADER_BYTES)
                .map_err(io_pair)?;
        }
        if new_segment {
            let stream = &mut self.series.get_mut(series).expect("present").tiers[tier];
            let seq = stream.next_seq;
            stream.next_seq += 1;
            let path = self.segment_path(series, tier, seq);
            std::fs::create_dir_all(path.parent().expect("in a series directory"))
                .map_err(io(&path))?;
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io(&path))?;
            let header = segment::encode_header(self.config.tiers[tier].resolution_ms);
            file.write_all(&header).map_err(io(&path))?;
            self.series.get_mut(series).expect("present").tiers[tier]
                .segments
                .push_back(Segment {
                    seq,
                    bytes: HEADER_BYTES,
                    records: 0,
                    first_ms: None,
                    last_ms: None,
                });
            self.bytes_total += HEADER_BYTES;
        }
        let seq = self.series[series].tiers[tier]
            .segments
            .back()
            .expect("one exists")
            .seq;
        let path = self.segment_path(series, tier, seq);
        let mut file: File = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let record = segment::encode_record(bucket);
        let before = file.metadata().map_err(io(&path))?.len();
        if let Err(e) = file.write_all(&record) {
            // Leave no torn record behind (best effort: open repairs it otherwise).
            let _ = file.set_len(before);
            return Err(io(&path)(e));
        }
        let seg = self.series.get_mut(series).expect("present").tiers[tier]
            .segments
            .back_mut()
            .expect("one exists");
        seg.bytes += RECORD_BYTES;
        seg.records += 1;
        seg.first_ms.get_or_insert(bucket.start_ms);
        seg.last_ms = Some(bucket.start_ms);
        self.bytes_total += RECORD_BYTES;
        if new_segment {
            self.enforce_retention()?;
        }
        Ok(())
    }
}

impl Drop for History {
    /// Writes the open buckets (errors are ignored here: call [`History::flush`] to see them).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
