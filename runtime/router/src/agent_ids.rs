//! Agent ids that are never reused, across restarts too: a daemon keeps a small file (beside
//! its dead-letter queue) holding the id it may not reach without writing the file again.
//! At start it begins at that mark and reserves a block above it; the control loop reserves
//! the next block, durably, before giving the first id past the current one. A crash loses
//! at most the unused part of a block, never an id's uniqueness, so a dead letter's
//! destination id can never name an unrelated agent of a later run.
//!
//! ```
//! use agentwire_router::agent_ids::AgentIdStore;
//! let path = std::env::temp_dir().join(format!("aw-doc-ids-{}", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//! let (mut first_run, from) = AgentIdStore::open(&path).unwrap();
//! assert_eq!(from, 1);
//! first_run.reserve(70_000).unwrap(); // past the first block: the mark moves up first
//! drop(first_run);
//! let (_second_run, from) = AgentIdStore::open(&path).unwrap();
//! assert!(from > 70_000);
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// Ids reserved at a time (one durable write per block).
pub const AGENT_ID_BLOCK: u32 = 65_536;

/// The persisted high-water mark of agent ids.
#[derive(Debug)]
pub struct AgentIdStore {
    path: PathBuf,
    /// Ids below this may be given; reaching it needs a new reservation first.
    reserved_until: u32,
}

/// Why the id file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentIdError {
    /// Reading or writing the file failed.
    #[error("agent id file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds something else than an id.
    #[error("agent id file {}: {found:?} is not an agent id (remove the file only if no dead letters name agents of earlier runs)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: String,
    },
    /// Every id was given.
    #[error("agent ids are exhausted (the mark in {} reached {})", path.display(), u32::MAX)]
    Exhausted {
        /// The file.
        path: PathBuf,
    },
}

impl AgentIdStore {
    /// Opens (or creates) the mark at `path`; returns the store and the first id this run
    /// gives. Reserves the first block durably before returning.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("aw-doc-ids-open-{}", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let (_store, first) = agentwire_router::agent_ids::AgentIdStore::open(&path).unwrap();
    /// assert_eq!(first, 1);
    /// ```
    pub fn open(path: &Path) -> Result<(Self, u32), AgentIdError> {
        let io = |source| AgentIdError::Io {
            path: path.to_path_buf(),
            source,
        };
        let first = match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| AgentIdError::Corrupt {
                    path: path.to_path_buf(),
                    found: text.trim().chars().take(40).collect(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io(e)),
        };
        let mut store = Self {
            path: path.to_path_buf(),
            reserved_until: first,
        };
        store.reserve(first)?;
        Ok((store, first))
    }

    /// Makes `id` safe to give: when it reaches the reserved mark, moves the mark a block
    /// above it, durably (write, fsync, rename, fsync of the directory), first.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("aw-doc-ids-res-{}", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let (mut store, first) = agentwire_router::agent_ids::AgentIdStore::open(&path).unwrap();
    /// store.reserve(first + 1).unwrap();
    /// ```
    pub fn reserve(&mut self, id: u32) -> Result<(), AgentIdError> {
        if id < self.reserved_until {
            return Ok(());
        }
        let Some(mark) = id.checked_add(AGENT_ID_BLOCK) else {
            return Err(AgentIdError::Exhausted {
                path: self.path.clone(),
            });
        };
        self.write(mark).map_err(|source| AgentIdError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.reserved_until = mark;
        Ok(())
    }

    fn write(&self, mark: u32) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            // 0600 (`dirs`): the mark is the daemon's alone, like the queue beside it.
            let mut file = crate::dirs::open_private(&tmp, true)?;
            writeln!(file, "{mark}")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("aw-ids-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn every_run_starts_above_every_id_an_earlier_run_could_give() {
        let path = scratch("runs");
        let (mut run1, from1) = AgentIdStore::open(&path).unwrap();
        for id in from1..from1 + 100 {
            run1.reserve(id).unwrap();
        }
        drop(run1);
        let (mut run2, from2) = AgentIdStore::open(&path).unwrap();
        assert!(from2 >= from1 + 100);
        run2.reserve(from2 + AGENT_ID_BLOCK + 5).unwrap();
        drop(run2);
        let (_run3, from3) = AgentIdStore::open(&path).unwrap();
        assert!(from3 > from2 + AGENT_ID_BLOCK + 5);
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_alone() {
        let path = scratch("corrupt");
        std::fs::write(&path, "not a number\n").unwrap();
        let err = AgentIdStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("is not an agent id"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a number\n");
    }

    #[test]
    fn the_last_ids_are_refused_rather_than_wrapped() {
        let path = scratch("exhausted");
        std::fs::write(&path, format!("{}\n", u32::MAX - 10)).unwrap();
        assert!(matches!(
            AgentIdStore::open(&path),
            Err(AgentIdError::Exhausted { .. })
        ));
    }
}
