//! The install manifest: every file `agentwire install` wrote, with its length and CRC-32,
//! so `agentwire uninstall` removes exactly those files and keeps any an operator has edited
//! since (it never destroys a file it did not create).
//!
//! ```ignore
//! let mut m = Manifest::default();
//! m.record("/etc/agentwire/agentwire.toml", b"x = 1\n");
//! assert!(m.files[0].matches(b"x = 1\n"));
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's format version.
pub const FORMAT_VERSION: u32 = 1;

/// One file written by the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    /// Where it is, as seen on the target system (without the prefix).
    pub path: PathBuf,
    /// Its length in bytes when written.
    pub bytes: u64,
    /// CRC-32 of its contents when written.
    pub crc32: u32,
}

impl InstalledFile {
    /// Whether `contents` are what the install wrote.
    pub fn matches(&self, contents: &[u8]) -> bool {
        contents.len() as u64 == self.bytes && crc32fast::hash(contents) == self.crc32
    }
}

/// What an install wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The agentwire version that installed.
    pub version: String,
    /// The files, in the order written.
    pub files: Vec<InstalledFile>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            files: Vec::new(),
        }
    }
}

impl Manifest {
    /// Records `path` (a target-system path) as written with `contents`; a path written
    /// again replaces its entry.
    pub fn record(&mut self, path: &Path, contents: &[u8]) {
        self.files.retain(|f| f.path != path);
        self.files.push(InstalledFile {
            path: path.to_path_buf(),
            bytes: contents.len() as u64,
            crc32: crc32fast::hash(contents),
        });
    }

    /// Carries `entry` over from an earlier manifest (a file installed then and edited
    /// since, which this install leaves as it is).
    pub fn keep(&mut self, entry: InstalledFile) {
        self.files.retain(|f| f.path != entry.path);
        self.files.push(entry);
    }

    /// The entry for `path`, if the install wrote it.
    pub fn get(&self, path: &Path) -> Option<&InstalledFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Reads the manifest at `file` (`Ok(None)`: there is none).
    pub fn load(file: &Path) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("read {}: {e}", file.display())),
        };
        let m: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not an install manifest: {e}", file.display()))?;
        if m.format != FORMAT_VERSION {
            return Err(format!(
                "{} has format {}; this agentwire reads format {FORMAT_VERSION}",
                file.display(),
                m.format
            ));
        }
        Ok(Some(m))
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_file_no_longer_matches() {
        let mut m = Manifest::default();
        m.record(Path::new("/etc/a"), b"one\n");
        m.record(Path::new("/etc/a"), b"two\n");
        assert_eq!(m.files.len(), 1);
        let f = m.get(Path::new("/etc/a")).unwrap();
        assert!(f.matches(b"two\n"));
        assert!(!f.matches(b"two\n# edited\n"));
        assert!(!f.matches(b"one\n"));
    }

    #[test]
    fn it_reads_back_what_it_writes_and_refuses_what_it_did_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.json");
        assert_eq!(Manifest::load(&file).unwrap(), None);
        let mut m = Manifest::default();
        m.record(Path::new("/usr/local/bin/agentwire"), b"\x7fELF");
        std::fs::write(&file, m.to_json()).unwrap();
        assert_eq!(Manifest::load(&file).unwrap(), Some(m));
        std::fs::write(&file, "{\"something\": \"else\"}").unwrap();
        assert!(Manifest::load(&file)
            .unwrap_err()
            .contains("is not an install manifest"));
    }
}
