//! Checkpoint files: one per shard per epoch (its operator snapshot), and one manifest per
//! epoch, written last, that commits the epoch (the input offset to resume from, the
//! source's watermark progress, and the run's counters).
//!
//! Every file is written whole to a temporary name, `fdatasync`ed, renamed into place, and
//! the directory synced: a file under its final name is complete. Each starts with a
//! header (magic `AWCK`, format version, CRC-32 of the body, body length), so a damaged
//! file is refused, never restored. An epoch counts only when its manifest and every
//! shard file check out; [`CheckpointStore::latest`] falls back to the newest such epoch.
//! Epochs older than the last [`EPOCHS_KEPT`] committed are deleted after each commit.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::sharded::SHARDS_MAX;

/// Committed epochs kept on disk (the newest is the one restored; one more in case it is
/// damaged after the commit).
pub const EPOCHS_KEPT: u64 = 2;

const MAGIC: &[u8; 4] = b"AWCK";
const FORMAT_VERSION: u8 = 1;
/// magic (4) + version (1) + CRC-32 of the body (4) + body length (8).
const HEADER_BYTES: usize = 17;

/// What commits an epoch.
///
/// ```
/// use agentwire_streaming::exactly_once::checkpoint::Manifest;
/// let m = Manifest { epoch: 3, shards: 2, input_offset: 8192, source_max_ns: Some(5), events_in: 8192, events_filtered: 0, records_malformed: 0 };
/// assert_eq!(m.epoch, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The epoch committed (1 is the first).
    pub epoch: u64,
    /// Shards that wrote a file for it.
    pub shards: u32,
    /// The next input offset to read after restoring this epoch.
    pub input_offset: u64,
    /// The largest event time of the input up to `input_offset` (the source's watermark
    /// progress, broadcast to every shard).
    pub source_max_ns: Option<i64>,
    /// Input records read up to `input_offset`.
    pub events_in: u64,
    /// Of them, dropped by a filter.
    pub events_filtered: u64,
    /// Of them, records that did not decode.
    pub records_malformed: u64,
}

/// A checkpoint file could not be written or read.
///
/// ```
/// use agentwire_streaming::exactly_once::checkpoint::CheckpointError;
/// let e = CheckpointError::Damaged { path: "x".into(), why: "bad magic" };
/// assert_eq!(e.to_string(), "checkpoint file x is damaged: bad magic");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("checkpoint {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file fails its checks.
    #[error("checkpoint file {path} is damaged: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Which check failed.
        why: &'static str,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A committed epoch: its manifest and each shard's state, in shard order.
pub type Committed = (Manifest, Vec<Vec<u8>>);

/// The checkpoint directory.
///
/// ```
/// use agentwire_streaming::exactly_once::checkpoint::{CheckpointStore, Manifest};
/// let dir = tempfile::tempdir().unwrap();
/// let store = CheckpointStore::open(dir.path()).unwrap();
/// store.write_shard(1, 0, b"state of shard 0").unwrap();
/// let m = Manifest { epoch: 1, shards: 1, input_offset: 10, source_max_ns: None, events_in: 10, events_filtered: 0, records_malformed: 0 };
/// store.commit(&m).unwrap();
/// let (back, shards) = store.latest().unwrap().unwrap();
/// assert_eq!((back, shards), (m, vec![b"state of shard 0".to_vec()]));
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint directory `dir`.
    ///
    /// ```
    /// use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
    /// let dir = tempfile::tempdir().unwrap();
    /// assert!(CheckpointStore::open(&dir.path().join("ckpt")).unwrap().latest().unwrap().is_none());
    /// ```
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn shard_path(&self, epoch: u64, shard: u32) -> PathBuf {
        self.dir
            .join(format!("epoch-{epoch:020}.shard-{shard}.ckpt"))
    }

    fn manifest_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:020}.manifest"))
    }

    /// Writes shard `shard`'s state for `epoch` (durable when this returns).
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
    /// let dir = tempfile::tempdir().unwrap();
    /// CheckpointStore::open(dir.path()).unwrap().write_shard(1, 0, b"s").unwrap();
    /// ```
    pub fn write_shard(&self, epoch: u64, shard: u32, state: &[u8]) -> Result<(), CheckpointError> {
        write_atomically(&self.dir, &self.shard_path(epoch, shard), state)
    }

    /// Commits `manifest.epoch`: every shard file of it must be written first. Older epochs
    /// past [`EPOCHS_KEPT`] are deleted.
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::checkpoint::{CheckpointStore, Manifest};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = CheckpointStore::open(dir.path()).unwrap();
    /// let m = Manifest { epoch: 1, shards: 0, input_offset: 0, source_max_ns: None, events_in: 0, events_filtered: 0, records_malformed: 0 };
    /// store.commit(&m).unwrap();
    /// ```
    pub fn commit(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let body = postcard::to_stdvec(manifest).expect("a manifest always serialises");
        write_atomically(&self.dir, &self.manifest_path(manifest.epoch), &body)?;
        self.prune(manifest.epoch.saturating_sub(EPOCHS_KEPT - 1))
    }

    /// Deletes every file of epochs below `keep_from`.
    fn prune(&self, keep_from: u64) -> Result<(), CheckpointError> {
        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name();
            let epoch = name
                .to_str()
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.get(..20))
                .and_then(|n| n.parse::<u64>().ok());
            if epoch.is_some_and(|e| e < keep_from) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        Ok(())
    }

    /// The newest committed epoch whose manifest and shard files all check out, with each
    /// shard's state in shard order; `None` if there is none.
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
    /// let dir = tempfile::tempdir().unwrap();
    /// assert!(CheckpointStore::open(dir.path()).unwrap().latest().unwrap().is_none());
    /// ```
    pub fn latest(&self) -> Result<Option<Committed>, CheckpointError> {
        let mut epochs: Vec<u64> = fs::read_dir(&self.dir)
            .map_err(io("list", &self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("epoch-")?
                    .strip_suffix(".manifest")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        for epoch in epochs.into_iter().rev() {
            if let Some(found) = self.load_epoch(epoch)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Committed epoch `epoch`, if its manifest and shard files are all there and check out
    /// (a restore that must choose an epoch other than the newest: the Kafka bridge restores
    /// the one its consumer group committed).
    ///
    /// ```
    /// # use agentwire_streaming::exactly_once::checkpoint::{CheckpointStore, Manifest};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = CheckpointStore::open(dir.path()).unwrap();
    /// for epoch in 1..=2 {
    ///     store.write_shard(epoch, 0, &[epoch as u8]).unwrap();
    ///     let m = Manifest { epoch, shards: 1, input_offset: 0, source_max_ns: None, events_in: 0, events_filtered: 0, records_malformed: 0 };
    ///     store.commit(&m).unwrap();
    /// }
    /// assert_eq!(store.load(1).unwrap().unwrap().1, vec![vec![1u8]]);
    /// assert!(store.load(3).unwrap().is_none());
    /// ```
    pub fn load(&self, epoch: u64) -> Result<Option<Committed>, CheckpointError> {
        self.load_epoch(epoch)
    }

    /// An epoch's manifest and shard states, or `None` if any of them is damaged or missing
    /// (logged by the caller through the fallback to an older epoch).
    fn load_epoch(&self, epoch: u64) -> Result<Option<Committed>, CheckpointError> {
        let Some(body) = read_checked(&self.manifest_path(epoch))? else {
            return Ok(None);
        };
        let Ok(manifest) = postcard::from_bytes::<Manifest>(&body) else {
            return Ok(None);
        };
        // A manifest that passed its checksum is still only as sane as its writer: a shard
        // count past the runner's limit is a damaged epoch, not an allocation to make.
        if manifest.epoch != epoch || manifest.shards as usize > SHARDS_MAX {
            return Ok(None);
        }
        let mut shards = Vec::with_capacity(manifest.shards as usize);
        for shard in 0..manifest.shards {
            match read_checked(&self.shard_path(epoch, shard))? {
                Some(state) => shards.push(state),
                None => return Ok(None),
            }
        }
        Ok(Some((manifest, shards)))
    }
}

/// Writes `body` with its header to `path` through a temporary file, synced and renamed,
/// then syncs `dir`.
fn write_atomically(dir: &Path, path: &Path, body: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(MAGIC);
    header[4] = FORMAT_VERSION;
    header[5..9].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header[9..17].copy_from_slice(&(body.len() as u64).to_le_bytes());
    file.write_all(&header).map_err(io("write", &tmp))?;
    file.write_all(body).map_err(io("write", &tmp))?;
    file.sync_data().map_err(io("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// The body of a checkpoint file; `None` if it is missing or fails a check.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    Ok(check(&bytes).ok().map(<[u8]>::to_vec))
}

/// The body after a valid header, or which check failed.
fn check(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER_BYTES {
        return Err("shorter than its header");
    }
    if &bytes[..4] != MAGIC {
        return Err("bad magic");
    }
    if bytes[4] != FORMAT_VERSION {
        return Err("unknown format version");
    }
    let crc = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != len {
        return Err("length does not match");
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum does not match");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(epoch: u64, shards: u32) -> Manifest {
        Manifest {
            epoch,
            shards,
            input_offset: epoch * 100,
            source_max_ns: Some(epoch as i64),
            events_in: epoch * 100,
            events_filtered: 0,
            records_malformed: 0,
        }
    }

    #[test]
    fn a_damaged_newest_epoch_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for epoch in 1..=2 {
            store.write_shard(epoch, 0, &[epoch as u8; 10]).unwrap();
            store.commit(&manifest(epoch, 1)).unwrap();
        }
        // Every single flipped byte of the newest shard file is caught.
        let path = store.shard_path(2, 0);
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            let (m, shards) = store.latest().unwrap().unwrap();
            assert_eq!((m.epoch, shards), (1, vec![vec![1u8; 10]]), "byte {i}");
        }
        // A missing shard file, or a cut one, too.
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().0.epoch, 1);
        fs::remove_file(&path).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().0.epoch, 1);
    }

    #[test]
    fn an_epoch_without_its_manifest_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write_shard(1, 0, b"a").unwrap();
        store.commit(&manifest(1, 1)).unwrap();
        store.write_shard(2, 0, b"b").unwrap();
        assert_eq!(store.latest().unwrap().unwrap().0.epoch, 1);
    }

    #[test]
    fn commits_keep_only_the_last_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for epoch in 1..=5 {
            store.write_shard(epoch, 0, b"s").unwrap();
            store.commit(&manifest(epoch, 1)).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2 * EPOCHS_KEPT as usize, "{names:?}");
        assert!(names[0].starts_with("epoch-00000000000000000004"));
    }
}
