//! The on-disk layout: file names and the meta file that fixes the format version and the
//! partition count.
//!
//! ```text
//! <dir>/agentwire-log.toml                          format_version, partition_count
//! <dir>/<partition>/<base offset, 20 digits>.log    one segment
//! ```
//!
//! Creation is a handshake: partition directories and their first (empty) segments are made
//! and synced first, the meta file is written last (to a temporary name, synced, renamed,
//! directory synced). A directory without a meta file is created afresh only if it is empty or
//! holds nothing but what an interrupted creation leaves; anything else is refused.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::LogError;
use super::file_io::{self, SegmentFile};

/// The meta file's name in the log directory.
pub(crate) const META_FILE_NAME: &str = "agentwire-log.toml";
const META_TMP_FILE_NAME: &str = "agentwire-log.toml.tmp";

/// The format version this build reads and writes (meta file and record magic together).
///
/// ```
/// assert_eq!(agentwire_streaming::log::FORMAT_VERSION, 1);
/// ```
pub const FORMAT_VERSION: u32 = 1;

const SEGMENT_NAME_DIGITS: usize = 20;
const SEGMENT_SUFFIX: &str = ".log";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    partition_count: u32,
}

/// `<dir>/<partition>`.
pub(crate) fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(partition.to_string())
}

/// `<partition dir>/<base offset, 20 digits>.log`.
pub(crate) fn segment_path(partition_dir: &Path, base_offset: u64) -> PathBuf {
    partition_dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

/// The base offset a segment file name stands for, or `None` if it is not a segment name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Opens the log directory: checks the meta file against `partition_count`, or creates the
/// log when the directory is new. Refuses entries the log did not make.
pub(crate) fn open_or_create(dir: &Path, partition_count: u32) -> Result<(), LogError> {
    fs::create_dir_all(dir).map_err(LogError::io("create log directory", dir))?;
    let meta_path = dir.join(META_FILE_NAME);
    if meta_path.exists() {
        check_meta(&meta_path, partition_count)?;
    } else {
        if !is_blank_or_half_created(dir, partition_count)? {
            return Err(LogError::MetaMissing { dir: dir.into() });
        }
        create(dir, partition_count)?;
    }
    check_top_level_entries(dir, partition_count)
}

fn check_meta(meta_path: &Path, partition_count: u32) -> Result<(), LogError> {
    let text = fs::read_to_string(meta_path).map_err(LogError::io("read meta file", meta_path))?;
    let meta: Meta = toml::from_str(&text).map_err(|error| LogError::MetaInvalid {
        path: meta_path.into(),
        reason: error.to_string(),
    })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(LogError::FormatVersionMismatch {
            path: meta_path.into(),
            on_disk: meta.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if meta.partition_count != partition_count {
        return Err(LogError::PartitionCountMismatch {
            on_disk: meta.partition_count,
            configured: partition_count,
        });
    }
    Ok(())
}

/// True when `dir` holds nothing, or only what [`create`] makes before the meta file: the
/// temporary meta file and partition directories holding at most an empty first segment.
fn is_blank_or_half_created(dir: &Path, partition_count: u32) -> Result<bool, LogError> {
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let name = entry.file_name();
        if name == META_TMP_FILE_NAME {
            continue;
        }
        let Some(partition) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return Ok(false);
        };
        if partition >= partition_count || !entry.path().is_dir() {
            return Ok(false);
        }
        let pdir = entry.path();
        for segment in fs::read_dir(&pdir).map_err(LogError::io("list partition", &pdir))? {
            let segment = segment.map_err(LogError::io("list partition", &pdir))?;
            let is_first = segment.file_name().to_str().and_then(parse_segment_name) == Some(0);
            let len = segment.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if !is_first || len != 0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn create(dir: &Path, partition_count: u32) -> Result<(), LogError> {
    for partition in 0..partition_count {
        let pdir = partition_dir(dir, partition);
        fs::create_dir_all(&pdir).map_err(LogError::io("create partition directory", &pdir))?;
        let first = segment_path(&pdir, 0);
        if !first.exists() {
            SegmentFile::create_new(&first).map_err(LogError::io("create segment", &first))?;
        }
        file_io::sync_dir(&pdir).map_err(LogError::io("sync partition directory", &pdir))?;
    }
    let meta = Meta {
        format_version: FORMAT_VERSION,
        partition_count,
    };
    let text = toml::to_string(&meta).expect("two integers serialize");
    let tmp = dir.join(META_TMP_FILE_NAME);
    fs::write(&tmp, text).map_err(LogError::io("write meta file", &tmp))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(LogError::io("sync meta file", &tmp))?;
    let meta_path = dir.join(META_FILE_NAME);
    fs::rename(&tmp, &meta_path).map_err(LogError::io("rename meta file", &meta_path))?;
    file_io::sync_dir(dir).map_err(LogError::io("sync log directory", dir))
}

fn check_top_level_entries(dir: &Path, partition_count: u32) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let name = entry.file_name();
        if name == META_FILE_NAME {
            continue;
        }
        // Only the canonical decimal spelling ("7", not "07") names a partition.
        let is_partition = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok().filter(|p| p.to_string() == n))
            .is_some_and(|p| p < partition_count);
        if !is_partition || !entry.path().is_dir() {
            return Err(LogError::UnexpectedFile { path: entry.path() });
        }
    }
    Ok(())
}

/// The base offsets of the segments in a partition directory, ascending; any other entry is
/// an error.
pub(crate) fn list_segments(partition: u32, pdir: &Path) -> Result<Vec<u64>, LogError> {
    if !pdir.is_dir() {
        return Err(LogError::MissingPartition {
            partition,
            path: pdir.into(),
        });
    }
    let mut bases = Vec::new();
    for entry in fs::read_dir(pdir).map_err(LogError::io("list partition", pdir))? {
        let entry = entry.map_err(LogError::io("list partition", pdir))?;
        let base = entry.file_name().to_str().and_then(parse_segment_name);
        match base {
            Some(base) if entry.path().is_file() => bases.push(base),
            _ => return Err(LogError::UnexpectedFile { path: entry.path() }),
        }
    }
    if bases.is_empty() {
        return Err(LogError::NoSegments {
            partition,
            path: pdir.into(),
        });
    }
    bases.sort_unstable();
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_other_names() {
        let path = segment_path(Path::new("/x"), 42);
        assert_eq!(path, Path::new("/x/00000000000000000042.log"));
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.idx"), None);
    }
}
