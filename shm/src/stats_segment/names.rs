//! The names file beside a stats segment ([`StatsNames`]): what each slot is and what each of
//! its counters means, so that any reader (the twin, `agentwire twin state`, a script) can
//! label the numbers without sharing a build with the writer.
//!
//! A small text format (`docs/wire.md` §7.4), one record per line, fields split by single
//! spaces:
//!
//! ```text
//! agentwire-stats-names 1
//! pid 4242
//! slot router.shard0 frames_in bytes_in ...
//! slot daemon agents dlq_records ...
//! ```
//!
//! Slot lines come in slot order. A slot may name fewer counters than the segment holds per
//! slot (the rest are unused and stay zero), never more. `pid` is the segment's creator: a
//! reader checks it against the segment header, so a names file and a segment of two
//! different daemon runs are never paired. The file is written under a temporary name and
//! renamed into place, before the segment is, and is bounded in size ([`NAMES_FILE_BYTES_MAX`]).

use std::io::Write;
use std::path::Path;

/// First line of a names file, with its format version.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::NAMES_FILE_HEADER, "agentwire-stats-names 1");
/// ```
pub const NAMES_FILE_HEADER: &str = "agentwire-stats-names 1";
/// Largest names file a reader accepts (a counter name is at most [`NAME_BYTES_MAX`] bytes).
///
/// ```
/// assert!(agentwire_shm::stats_segment::NAMES_FILE_BYTES_MAX >= 64 * 1024);
/// ```
pub const NAMES_FILE_BYTES_MAX: u64 = 1 << 20;
/// Longest slot or counter name.
///
/// ```
/// assert_eq!(agentwire_shm::stats_segment::NAME_BYTES_MAX, 96);
/// ```
pub const NAME_BYTES_MAX: usize = 96;

/// One slot's name and its counters' names, in counter order.
///
/// ```
/// let s = agentwire_shm::stats_segment::SlotNames::new("router.shard0", ["frames_in"]);
/// assert_eq!(s.counters, ["frames_in"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotNames {
    /// What writes the slot, e.g. `router.shard0`, `daemon`.
    pub name: String,
    /// Counter names, index = counter index in the slot.
    pub counters: Vec<String>,
}

impl SlotNames {
    /// A slot called `name` with `counters`.
    ///
    /// ```
    /// let s = agentwire_shm::stats_segment::SlotNames::new("daemon", ["agents", "dlq_records"]);
    /// assert_eq!((s.name.as_str(), s.counters.len()), ("daemon", 2));
    /// ```
    pub fn new<S: Into<String>>(name: &str, counters: impl IntoIterator<Item = S>) -> Self {
        Self {
            name: name.to_string(),
            counters: counters.into_iter().map(Into::into).collect(),
        }
    }
}

/// The names of a segment's slots and counters, and the pid of the process that made it.
///
/// ```
/// use agentwire_shm::stats_segment::{SlotNames, StatsNames};
/// let names = StatsNames { creator_pid: 7, slots: vec![SlotNames::new("daemon", ["agents"])] };
/// let text = names.to_text();
/// assert_eq!(StatsNames::parse(&text).unwrap(), names);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsNames {
    /// The segment creator's pid (the daemon's).
    pub creator_pid: u32,
    /// One entry per slot, in slot order.
    pub slots: Vec<SlotNames>,
}

/// Why a names file was refused: the line (1-based) and what is wrong with it.
///
/// ```
/// let err = agentwire_shm::stats_segment::StatsNames::parse("nonsense").unwrap_err();
/// assert_eq!(err.line, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stats names line {line}: {why}")]
pub struct NamesError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

impl StatsNames {
    /// Checks every name (1 to [`NAME_BYTES_MAX`] bytes of `a-z 0-9 _ . -`) and that no
    /// slot names more than `counters_per_slot` counters.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{SlotNames, StatsNames};
    /// let n = StatsNames { creator_pid: 1, slots: vec![SlotNames::new("d", ["a", "b"])] };
    /// assert!(n.validate(2).is_ok());
    /// assert!(n.validate(1).is_err());
    /// ```
    pub fn validate(&self, counters_per_slot: usize) -> Result<(), NamesError> {
        for (i, slot) in self.slots.iter().enumerate() {
            let line = i + 3;
            let bad = std::iter::once(&slot.name)
                .chain(&slot.counters)
                .find(|n| !name_ok(n));
            if let Some(bad) = bad {
                return Err(NamesError {
                    line,
                    why: format!("bad name {bad:?} (1-{NAME_BYTES_MAX} bytes of a-z 0-9 _ . -)"),
                });
            }
            if slot.counters.len() > counters_per_slot {
                return Err(NamesError {
                    line,
                    why: format!(
                        "slot {} names {} counters, the segment holds {counters_per_slot}",
                        slot.name,
                        slot.counters.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The file's text.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{SlotNames, StatsNames};
    /// let n = StatsNames { creator_pid: 9, slots: vec![SlotNames::new("d", ["a", "b"])] };
    /// assert_eq!(n.to_text(), "agentwire-stats-names 1\npid 9\nslot d a b\n");
    /// ```
    pub fn to_text(&self) -> String {
        let mut text = format!("{NAMES_FILE_HEADER}\npid {}\n", self.creator_pid);
        for slot in &self.slots {
            text.push_str("slot ");
            text.push_str(&slot.name);
            for counter in &slot.counters {
                text.push(' ');
                text.push_str(counter);
            }
            text.push('\n');
        }
        text
    }

    /// Parses a names file's text, checking the header, the pid and every name.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::StatsNames;
    /// let n = StatsNames::parse("agentwire-stats-names 1\npid 3\nslot daemon agents\n").unwrap();
    /// assert_eq!((n.creator_pid, n.slots[0].counters[0].as_str()), (3, "agents"));
    /// assert!(StatsNames::parse("agentwire-stats-names 2\npid 3\n").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, NamesError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let err = |line, why: &str| NamesError {
            line,
            why: why.to_string(),
        };
        match lines.next() {
            Some((_, NAMES_FILE_HEADER)) => {}
            Some((n, _)) => return Err(err(n, &format!("expected {NAMES_FILE_HEADER:?}"))),
            None => return Err(err(0, "empty file")),
        }
        let creator_pid = match lines.next() {
            Some((n, line)) => line
                .strip_prefix("pid ")
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(|| err(n, "expected `pid <number>`"))?,
            None => return Err(err(0, "no pid line")),
        };
        let mut slots = Vec::new();
        for (n, line) in lines {
            let mut fields = line.split(' ');
            if fields.next() != Some("slot") {
                return Err(err(n, "expected `slot <name> <counter>...`"));
            }
            let name = fields.next().unwrap_or_default();
            let counters: Vec<String> = fields.map(str::to_string).collect();
            slots.push(SlotNames {
                name: name.to_string(),
                counters,
            });
        }
        let names = Self { creator_pid, slots };
        names.validate(usize::MAX)?;
        Ok(names)
    }

    /// Writes the file at `path` (mode 0640) under a temporary name, then renames it into
    /// place: a reader sees the old file or the whole new one.
    ///
    /// ```
    /// use agentwire_shm::stats_segment::{SlotNames, StatsNames};
    /// let p = std::env::temp_dir().join(format!("aw-names-doc-{}", std::process::id()));
    /// let n = StatsNames { creator_pid: 1, slots: vec![SlotNames::new("daemon", ["agents"])] };
    /// n.write_file(&p).unwrap();
    /// assert_eq!(StatsNames::read_file(&p).unwrap(), n);
    /// std::fs::remove_file(&p).unwrap();
    /// ```
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)
            .and_then(|mut f| f.write_all(self.to_text().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Reads and parses the file at `path`, refusing one over [`NAMES_FILE_BYTES_MAX`].
    ///
    /// ```
    /// let e = agentwire_shm::stats_segment::StatsNames::read_file(
    ///     std::path::Path::new("/nonexistent/names")).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn read_file(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(NAMES_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > NAMES_FILE_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: over {NAMES_FILE_BYTES_MAX} bytes", path.display()),
            ));
        }
        Self::parse(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_lines() {
        for text in [
            "agentwire-stats-names 1\npid x\n",
            "agentwire-stats-names 1\npid 1\nslot\n",
            "agentwire-stats-names 1\npid 1\nslot Bad\n",
            "agentwire-stats-names 1\npid 1\nslot a b  c\n",
            "agentwire-stats-names 1\npid 1\nsloth a\n",
            "agentwire-stats-names 1\n",
        ] {
            assert!(StatsNames::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn round_trips_many_slots() {
        let names = StatsNames {
            creator_pid: 4242,
            slots: (0..4)
                .map(|i| SlotNames::new(&format!("router.shard{i}"), ["frames_in", "bytes_in"]))
                .collect(),
        };
        assert_eq!(StatsNames::parse(&names.to_text()).unwrap(), names);
    }
}
