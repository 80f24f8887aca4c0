//! A de-duplicating JSON-lines sink: each line carries the (shard, epoch, sequence) of the
//! output it holds, and the sink writes a line only if its id is past the last one it holds
//! for that shard. A shard's outputs come in (epoch, sequence) order, and a run restored from
//! a checkpoint emits the same outputs with the same ids again, so whatever was written after
//! the checkpoint before a crash is skipped on the replay, never written twice.
//!
//! Line format: `{"shard":S,"epoch":E,"seq":Q,"output":{...}}` and a newline.
//!
//! Opening reads the file back: the last complete line per shard sets where it resumes, and
//! a torn last line (a crash mid-write: no newline, or not JSON) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The most shards a sink tracks.
pub const SINK_SHARDS_MAX: usize = 4_096;

/// An output's id: (epoch, sequence within the epoch) of one shard.
pub type OutputId = (u64, u64);

/// The sink file could not be used.
///
/// ```
/// use agentwire_streaming::exactly_once::sink::SinkError;
/// let e = SinkError::Foreign { path: "out.jsonl".into(), line: 3 };
/// assert_eq!(e.to_string(), "out.jsonl:3: not a line of an exactly-once sink");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file operation failed.
    #[error("sink {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A complete line that is not ours: the file was written by something else.
    #[error("{path}:{line}: not a line of an exactly-once sink")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: u64,
    },
    /// A shard id past [`SINK_SHARDS_MAX`].
    #[error("shard {shard}: at most {SINK_SHARDS_MAX} shards")]
    Shard {
        /// The shard.
        shard: usize,
    },
}

/// What opening found.
///
/// ```
/// use agentwire_streaming::exactly_once::sink::SinkRecovery;
/// assert_eq!(SinkRecovery::default().torn_bytes_cut, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkRecovery {
    /// Complete lines found.
    pub lines: u64,
    /// Bytes of a torn last line cut off.
    pub torn_bytes_cut: u64,
}

/// Whether a cut line is, as far as it goes, a line this sink writes:
/// `{"shard":N,"epoch":N,"seq":N,"output":` then anything. Anything else is not ours to cut.
fn is_our_prefix(line: &str) -> bool {
    const TEMPLATE: &str = "{\"shard\":#,\"epoch\":#,\"seq\":#,\"output\":";
    let mut template = TEMPLATE.chars().peekable();
    let mut digits = 0;
    for c in line.chars() {
        match template.peek() {
            None => return true,
            Some('#') if c.is_ascii_digit() => digits += 1,
            Some('#') if digits > 0 => {
                template.next();
                digits = 0;
                if template.next() != Some(c) {
                    return false;
                }
            }
            Some(&t) if t == c => {
                template.next();
            }
            _ => return false,
        }
    }
    true
}

#[derive(Deserialize)]
struct Id {
    shard: usize,
    epoch: u64,
    seq: u64,
}

/// The sink.
///
/// ```
/// use agentwire_streaming::exactly_once::sink::DedupSink;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.jsonl");
/// let (mut sink, _) = DedupSink::open(&path).unwrap();
/// assert!(sink.write(0, (1, 0), "{\"n\":1}").unwrap());
/// assert!(!sink.write(0, (1, 0), "{\"n\":1}").unwrap()); // a replay: skipped
/// sink.sync().unwrap();
/// assert_eq!(sink.skipped(), 1);
/// ```
pub struct DedupSink {
    path: PathBuf,
    file: BufWriter<File>,
    /// The last id written per shard.
    last: Vec<Option<OutputId>>,
    written: u64,
    skipped: u64,
}

impl DedupSink {
    /// Opens (creating if needed) the sink file at `path`, reading back what it holds.
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("o.jsonl");
    /// std::fs::write(&path, "{\"shard\":0,\"epoch\":1,\"seq\":0,\"output\":{}}\n{\"shard\":0,\"ep").unwrap();
    /// let (_, recovery) = DedupSink::open(&path).unwrap();
    /// assert_eq!((recovery.lines, recovery.torn_bytes_cut), (1, 14));
    /// ```
    pub fn open(path: &Path) -> Result<(Self, SinkRecovery), SinkError> {
        let err = |op: &'static str| {
            move |source| SinkError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(err("open"))?;
        let mut last: Vec<Option<OutputId>> = Vec::new();
        let mut recovery = SinkRecovery::default();
        let mut good_bytes = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(err("read"))?;
            if n == 0 {
                break;
            }
            let complete = line.ends_with('\n');
            match serde_json::from_str::<Id>(line.trim_end()) {
                Ok(id) if complete => {
                    if id.shard >= SINK_SHARDS_MAX {
                        return Err(SinkError::Shard { shard: id.shard });
                    }
                    if last.len() <= id.shard {
                        last.resize(id.shard + 1, None);
                    }
                    last[id.shard] = last[id.shard].max(Some((id.epoch, id.seq)));
                    recovery.lines += 1;
                    good_bytes += n as u64;
                }
                // The last line, cut by a crash: torn, not foreign (it starts as ours do).
                _ if !complete && is_our_prefix(&line) => break,
                _ => {
                    return Err(SinkError::Foreign {
                        path: path.to_path_buf(),
                        line: recovery.lines + 1,
                    })
                }
            }
        }
        let len = file.metadata().map_err(err("stat"))?.len();
        if len > good_bytes {
            recovery.torn_bytes_cut = len - good_bytes;
            file.set_len(good_bytes).map_err(err("truncate"))?;
            file.sync_data().map_err(err("sync"))?;
        }
        file.seek(std::io::SeekFrom::End(0)).map_err(err("seek"))?;
        let sink = Self {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            last,
            written: 0,
            skipped: 0,
        };
        Ok((sink, recovery))
    }

    /// Writes `output` (one JSON value, no newline) as shard `shard`'s output `id`, unless
    /// the sink already holds that id or a later one of the shard; true if written.
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut sink, _) = DedupSink::open(&dir.path().join("o")).unwrap();
    /// assert!(sink.write(1, (2, 5), "7").unwrap());
    /// assert!(!sink.write(1, (2, 4), "7").unwrap());
    /// assert!(sink.write(1, (3, 0), "7").unwrap());
    /// ```
    pub fn write(&mut self, shard: usize, id: OutputId, output: &str) -> Result<bool, SinkError> {
        if shard >= SINK_SHARDS_MAX {
            return Err(SinkError::Shard { shard });
        }
        if self.last.len() <= shard {
            self.last.resize(shard + 1, None);
        }
        if self.last[shard].is_some_and(|last| id <= last) {
            self.skipped += 1;
            return Ok(false);
        }
        let (epoch, seq) = id;
        writeln!(
            self.file,
            "{{\"shard\":{shard},\"epoch\":{epoch},\"seq\":{seq},\"output\":{output}}}"
        )
        .map_err(|source| SinkError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })?;
        self.last[shard] = Some(id);
        self.written += 1;
        Ok(true)
    }

    /// Makes every line written so far durable (before the checkpoint that covers them is
    /// committed).
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut sink, _) = DedupSink::open(&dir.path().join("o")).unwrap();
    /// sink.sync().unwrap();
    /// ```
    pub fn sync(&mut self) -> Result<(), SinkError> {
        let err = |op| {
            let path = self.path.clone();
            move |source| SinkError::Io { op, path, source }
        };
        self.file.flush().map_err(err("flush"))?;
        self.file.get_ref().sync_data().map_err(err("sync"))
    }

    /// Whether the sink holds an output of an epoch after `epoch` (of any shard).
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// let (mut sink, _) = DedupSink::open(&dir.path().join("o")).unwrap();
    /// sink.write(0, (3, 0), "1").unwrap();
    /// assert!(sink.holds_past(2));
    /// assert!(!sink.holds_past(3));
    /// ```
    pub fn holds_past(&self, epoch: u64) -> bool {
        self.last.iter().flatten().any(|&(e, _)| e > epoch)
    }

    /// Lines written by this sink since it opened.
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// assert_eq!(DedupSink::open(&dir.path().join("o")).unwrap().0.written(), 0);
    /// ```
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Outputs skipped because the sink already held them (replays after a restore).
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::sink::DedupSink;
    /// let dir = tempfile::tempdir().unwrap();
    /// assert_eq!(DedupSink::open(&dir.path().join("o")).unwrap().0.skipped(), 0);
    /// ```
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_sink_resumes_after_the_last_line_of_each_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        {
            let (mut sink, _) = DedupSink::open(&path).unwrap();
            for (shard, id) in [(0, (1, 0)), (1, (1, 0)), (0, (1, 1)), (0, (2, 0))] {
                assert!(sink.write(shard, id, "{}").unwrap());
            }
            sink.sync().unwrap();
        }
        let (mut sink, recovery) = DedupSink::open(&path).unwrap();
        assert_eq!(
            recovery,
            SinkRecovery {
                lines: 4,
                torn_bytes_cut: 0
            }
        );
        assert!(!sink.write(0, (2, 0), "{}").unwrap());
        assert!(!sink.write(1, (1, 0), "{}").unwrap());
        assert!(sink.write(1, (1, 1), "{}").unwrap());
        assert!(sink.write(2, (1, 0), "{}").unwrap());
    }

    #[test]
    fn every_cut_of_the_last_line_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        let first = "{\"shard\":0,\"epoch\":1,\"seq\":0,\"output\":{\"a\":1}}\n";
        let second = "{\"shard\":0,\"epoch\":1,\"seq\":1,\"output\":{\"a\":2}}\n";
        for cut in 0..second.len() {
            std::fs::write(&path, format!("{first}{}", &second[..cut])).unwrap();
            let (mut sink, recovery) = DedupSink::open(&path).unwrap();
            assert_eq!(recovery.torn_bytes_cut, cut as u64, "cut {cut}");
            assert!(sink.write(0, (1, 1), "{\"a\":2}").unwrap());
            sink.sync().unwrap();
            drop(sink);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{first}{second}")
            );
        }
    }

    #[test]
    fn a_file_written_by_something_else_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "dear diary\nmore\n").unwrap();
        let e = DedupSink::open(&path).err().unwrap();
        assert!(e
            .to_string()
            .ends_with("notes.txt:1: not a line of an exactly-once sink"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "dear diary\nmore\n"
        );
        std::fs::write(&path, "no newline at the end").unwrap();
        assert!(DedupSink::open(&path).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "no newline at the end"
        );
    }
}
