//! Segment file I/O: the one place that touches the file system for segment data.
//!
//! This first version uses `std::fs` with positioned I/O (`pread`/`pwrite` through
//! [`std::os::unix::fs::FileExt`]), so no call depends on a file cursor. The daemon's writer
//! later moves to glommio `DmaFile` direct I/O; that swap replaces this module and nothing
//! else, which is why every read, write, truncate, sync and directory operation on segment data
//! goes through here.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An open segment file, read-write when it is the active segment, read-only when sealed.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    file: File,
}

impl SegmentFile {
    /// Creates a new, empty segment file; fails if one already exists at `path`.
    pub(crate) fn create_new(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Self { file })
    }

    /// Opens an existing segment for appending (the active segment) or recovery truncation.
    pub(crate) fn open_read_write(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self { file })
    }

    /// Opens a sealed segment for reading.
    pub(crate) fn open_read_only(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
        })
    }

    /// The file's current length in bytes, from the file system.
    pub(crate) fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Fills `buf` from `position`; the caller knows the bytes exist.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, position)
    }

    /// Writes all of `bytes` at `position` (one positioned write for a whole batch).
    pub(crate) fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, position)
    }

    /// Cuts the file to `len_bytes`.
    pub(crate) fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    /// `fdatasync`: the data and the size reach stable storage; other metadata may not.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// `fsync` on a directory, so a file created or renamed in it survives a power failure.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes a segment file.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    fs::remove_file(path)
}
