//! The live mirror, read side: the daemon's stats segment (`<socket>.stats`) and the names
//! file beside it (`<socket>.stats.names`), opened read-only and read with bounded seqlock
//! snapshots ([`agentwire_shm::stats_segment`]) while the daemon runs: no query, no lock, no
//! pause for any router shard.
//!
//! ```
//! use agentwire_shm::stats_segment::*;
//! use agentwire_twin::mirror::Mirror;
//! let dir = std::env::temp_dir().join(format!("aw-twin-mirror-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let (stats, names) = (dir.join("s.stats"), dir.join("s.stats.names"));
//! StatsNames { creator_pid: std::process::id(), slots: vec![SlotNames::new("daemon", ["agents"])] }
//!     .write_file(&names).unwrap();
//! let seg = StatsSegment::create_file(&stats, StatsLayout::new(1, 1)).unwrap();
//! seg.writer(0).unwrap().add(0, 3);
//! let state = Mirror::open(&stats, &names).unwrap().read().unwrap();
//! assert_eq!(state.get("daemon", "agents"), Some(3));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use agentwire_shm::stats_segment::{StatsNames, StatsReader, StatsSegmentError};
use std::path::{Path, PathBuf};

/// Why the mirror could not be opened or read.
///
/// ```
/// use agentwire_twin::mirror::{Mirror, MirrorError};
/// let e = Mirror::open("/nonexistent/s.stats".as_ref(), "/nonexistent/n".as_ref()).unwrap_err();
/// assert!(matches!(e, MirrorError::Segment { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The segment could not be opened or its header is not valid.
    #[error("{}: {source}", path.display())]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// Why.
        source: StatsSegmentError,
    },
    /// The names file could not be read or parsed.
    #[error("{}: {source}", path.display())]
    Names {
        /// The names file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The names file and the segment do not belong together (another daemon run, or a
    /// names file with more slots or counters than the segment holds).
    #[error("{0}")]
    Mismatch(String),
    /// A slot could not be read.
    #[error("{0}")]
    Snapshot(#[from] agentwire_shm::stats_segment::SnapshotError),
}

/// One slot as read: its name, its update sequence (`None`: its writer was mid-update on
/// every try, its counters are zero here) and its named counters.
///
/// ```
/// let s = agentwire_twin::mirror::SlotState { name: "daemon".into(), sequence: Some(2),
///     counters: vec![("agents".into(), 1)] };
/// assert_eq!(s.get("agents"), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// `router.shard<N>`, `daemon`, ...
    pub name: String,
    /// The slot's sequence (twice its updates), or `None` when busy.
    pub sequence: Option<u64>,
    /// Counters in slot order.
    pub counters: Vec<(String, u64)>,
}

impl SlotState {
    /// The counter called `name`.
    ///
    /// ```
    /// let s = agentwire_twin::mirror::SlotState { name: "d".into(), sequence: None, counters: vec![] };
    /// assert_eq!(s.get("x"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// The daemon's state at one read: each slot consistent in itself (slots have different
/// writers, so two slots may be a few microseconds apart).
///
/// ```
/// use agentwire_twin::mirror::{MirrorState, SlotState};
/// let shard = |n: u64| SlotState { name: format!("router.shard{n}"), sequence: Some(2),
///     counters: vec![("frames_in".into(), 10 * (n + 1))] };
/// let state = MirrorState { creator_pid: 1, creator_running: true, slots: vec![shard(0), shard(1)] };
/// assert_eq!(state.total("router.", "frames_in"), 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorState {
    /// The daemon that made the segment.
    pub creator_pid: u32,
    /// Whether that process still runs (else these are its last values).
    pub creator_running: bool,
    /// Every slot, in slot order.
    pub slots: Vec<SlotState>,
}

impl MirrorState {
    /// The counter `counter` of the slot called `slot`.
    ///
    /// ```
    /// # use agentwire_twin::mirror::MirrorState;
    /// let state = MirrorState { creator_pid: 1, creator_running: false, slots: vec![] };
    /// assert_eq!(state.get("daemon", "agents"), None);
    /// ```
    pub fn get(&self, slot: &str, counter: &str) -> Option<u64> {
        self.slots.iter().find(|s| s.name == slot)?.get(counter)
    }

    /// Every agent with a mirror slot, in slot order.
    ///
    /// ```
    /// # use agentwire_twin::mirror::MirrorState;
    /// let state = MirrorState { creator_pid: 1, creator_running: false, slots: vec![] };
    /// assert!(state.agents().is_empty());
    /// ```
    pub fn agents(&self) -> Vec<AgentState> {
        self.slots
            .iter()
            .filter_map(AgentState::from_slot)
            .collect()
    }

    /// The router shards' slots (named `router.*`), in slot order.
    ///
    /// ```
    /// # use agentwire_twin::mirror::{MirrorState, SlotState};
    /// let slot = |name: &str| SlotState { name: name.into(), sequence: Some(2), counters: vec![] };
    /// let state = MirrorState { creator_pid: 1, creator_running: false,
    ///     slots: vec![slot("router.shard0"), slot("daemon"), slot("router.shard1")] };
    /// assert_eq!(state.router_shards().count(), 2);
    /// ```
    pub fn router_shards(&self) -> impl Iterator<Item = &SlotState> {
        self.slots.iter().filter(|s| s.name.starts_with("router."))
    }

    /// The sum of `counter` over every slot whose name starts with `prefix` (e.g. every
    /// router shard: `router.`), wrapping.
    ///
    /// ```
    /// # use agentwire_twin::mirror::MirrorState;
    /// let state = MirrorState { creator_pid: 1, creator_running: false, slots: vec![] };
    /// assert_eq!(state.total("router.", "frames_in"), 0);
    /// ```
    pub fn total(&self, prefix: &str, counter: &str) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .filter_map(|s| s.get(counter))
            .fold(0u64, u64::wrapping_add)
    }
}

/// An agent slot not lent to any agent: named `agent.*`, its `agent_id` word 0.
fn is_free_agent_slot(names: &agentwire_shm::stats_segment::SlotNames, words: &[u64]) -> bool {
    names.name.starts_with(AGENT_SLOT_PREFIX)
        && names.counters.first().map(String::as_str) == Some("agent_id")
        && words.first() == Some(&0)
}

/// Slot names of agent slots start with this ([`agentwire_router::agent_mirror`]).
///
/// ```
/// assert_eq!(agentwire_twin::mirror::AGENT_SLOT_PREFIX, "agent.");
/// ```
pub const AGENT_SLOT_PREFIX: &str = "agent.";

/// One agent as its mirror slot shows it.
///
/// ```
/// use agentwire_twin::mirror::{AgentState, SlotState};
/// let slot = SlotState { name: "agent.shard0.3".into(), sequence: Some(8), counters: vec![
///     ("agent_id".into(), 7), ("name_0".into(), 0x6968), ("shard".into(), 0), ("frames_in".into(), 12)] };
/// let agent = AgentState::from_slot(&slot).unwrap();
/// assert_eq!((agent.agent_id, agent.name.as_str(), agent.get("frames_in")), (7, "hi", Some(12)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    /// The agent's id.
    pub agent_id: u32,
    /// Its registered name.
    pub name: String,
    /// The router shard serving it.
    pub shard: u64,
    /// The slot it was read from.
    pub slot: String,
    /// Its counters and gauges (every word but the id, name and shard).
    pub counters: Vec<(String, u64)>,
}

impl AgentState {
    /// The agent in an agent slot; `None` for any other slot or a free one.
    ///
    /// ```
    /// use agentwire_twin::mirror::{AgentState, SlotState};
    /// let daemon = SlotState { name: "daemon".into(), sequence: Some(2), counters: vec![] };
    /// assert!(AgentState::from_slot(&daemon).is_none());
    /// ```
    pub fn from_slot(slot: &SlotState) -> Option<Self> {
        if !slot.name.starts_with(AGENT_SLOT_PREFIX) {
            return None;
        }
        let agent_id = u32::try_from(slot.get("agent_id")?)
            .ok()
            .filter(|&id| id != 0)?;
        let name_words: Vec<u64> = (0..agentwire_router::agent_mirror::NAME_WORDS)
            .map(|i| slot.get(&format!("name_{i}")).unwrap_or(0))
            .collect();
        let skip = |n: &str| n == "agent_id" || n == "shard" || n.starts_with("name_");
        Some(Self {
            agent_id,
            name: agentwire_router::agent_mirror::unpack_name(&name_words),
            shard: slot.get("shard").unwrap_or(0),
            slot: slot.name.clone(),
            counters: slot
                .counters
                .iter()
                .filter(|(n, _)| !skip(n))
                .cloned()
                .collect(),
        })
    }

    /// The counter called `name`.
    ///
    /// ```
    /// # use agentwire_twin::mirror::AgentState;
    /// let a = AgentState { agent_id: 1, name: "a".into(), shard: 0, slot: "agent.shard0.0".into(),
    ///     counters: vec![("frames_out".into(), 4)] };
    /// assert_eq!(a.get("frames_out"), Some(4));
    /// ```
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// An open mirror: the segment mapped read-only, its names checked against it once.
pub struct Mirror {
    reader: StatsReader,
    names: StatsNames,
    words: Vec<u64>,
    sequences: Vec<Option<u64>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("creator_pid", &self.names.creator_pid)
            .field("slots", &self.names.slots.len())
            .finish()
    }
}

impl Mirror {
    /// Opens the segment at `stats` and its names at `names`, and checks that they belong
    /// together: the same creator pid, as many slots, no slot naming more counters than the
    /// segment holds.
    ///
    /// ```
    /// use agentwire_twin::mirror::Mirror;
    /// assert!(Mirror::open("/nonexistent".as_ref(), "/nonexistent.names".as_ref()).is_err());
    /// ```
    pub fn open(stats: &Path, names: &Path) -> Result<Self, MirrorError> {
        let reader = StatsReader::open_path(stats).map_err(|source| MirrorError::Segment {
            path: stats.to_path_buf(),
            source,
        })?;
        let labels = StatsNames::read_file(names).map_err(|source| MirrorError::Names {
            path: names.to_path_buf(),
            source,
        })?;
        let layout = reader.layout();
        if labels.creator_pid != reader.creator_pid() {
            return Err(MirrorError::Mismatch(format!(
                "{} was written by pid {}, the segment {} by pid {}: the daemon restarted \
                 between the two; read again",
                names.display(),
                labels.creator_pid,
                stats.display(),
                reader.creator_pid()
            )));
        }
        if labels.slots.len() != layout.slot_count as usize {
            return Err(MirrorError::Mismatch(format!(
                "{} names {} slots, the segment has {}",
                names.display(),
                labels.slots.len(),
                layout.slot_count
            )));
        }
        labels
            .validate(layout.counters_per_slot as usize)
            .map_err(|e| MirrorError::Mismatch(format!("{}: {e}", names.display())))?;
        let slots = layout.slot_count as usize;
        Ok(Self {
            words: vec![0; slots * layout.counters_per_slot as usize],
            sequences: vec![None; slots],
            reader,
            names: labels,
        })
    }

    /// The pid of the daemon that created the segment.
    ///
    /// ```no_run
    /// # fn f(m: &agentwire_twin::mirror::Mirror) {
    /// println!("daemon pid {}", m.creator_pid());
    /// # }
    /// ```
    pub fn creator_pid(&self) -> u32 {
        self.names.creator_pid
    }

    /// Snapshots every slot (bounded tries each; see
    /// [`agentwire_shm::stats_segment::StatsReader::snapshot_all`]) and labels them. An agent
    /// slot (`agent.*`) is listed only while it is lent to an agent (its `agent_id` is not
    /// 0): free ones are left out.
    ///
    /// ```no_run
    /// # fn f(m: &mut agentwire_twin::mirror::Mirror) {
    /// let state = m.read().unwrap();
    /// println!("{} frames in", state.total("router.", "frames_in"));
    /// # }
    /// ```
    pub fn read(&mut self) -> Result<MirrorState, MirrorError> {
        self.reader
            .snapshot_all(&mut self.words, &mut self.sequences)?;
        let per_slot = self.reader.layout().counters_per_slot as usize;
        let slots = self
            .names
            .slots
            .iter()
            .zip(self.words.chunks_exact(per_slot))
            .zip(&self.sequences)
            .filter(|((names, words), _)| !is_free_agent_slot(names, words))
            .map(|((names, words), &sequence)| SlotState {
                name: names.name.clone(),
                sequence,
                counters: names
                    .counters
                    .iter()
                    .cloned()
                    .zip(words.iter().copied())
                    .collect(),
            })
            .collect();
        Ok(MirrorState {
            creator_pid: self.names.creator_pid,
            creator_running: Path::new(&format!("/proc/{}", self.names.creator_pid)).exists(),
            slots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentwire_shm::stats_segment::{SlotNames, StatsLayout, StatsSegment};

    fn files(tag: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (s, n) = (
            dir.path().join(format!("{tag}.stats")),
            dir.path().join(format!("{tag}.names")),
        );
        (dir, s, n)
    }

    #[test]
    fn refuses_names_of_another_run() {
        let (_dir, stats, names) = files("pid");
        let _seg = StatsSegment::create_file(&stats, StatsLayout::new(1, 2)).unwrap();
        StatsNames {
            creator_pid: std::process::id() + 1,
            slots: vec![SlotNames::new("daemon", ["a"])],
        }
        .write_file(&names)
        .unwrap();
        let e = Mirror::open(&stats, &names).unwrap_err();
        assert!(e.to_string().contains("restarted"), "{e}");
    }

    #[test]
    fn refuses_names_that_do_not_fit() {
        let (_dir, stats, names) = files("fit");
        let _seg = StatsSegment::create_file(&stats, StatsLayout::new(1, 1)).unwrap();
        let pid = std::process::id();
        let write = |slots| {
            StatsNames {
                creator_pid: pid,
                slots,
            }
            .write_file(&names)
            .unwrap()
        };
        write(vec![SlotNames::new("daemon", ["a", "b"])]);
        assert!(matches!(
            Mirror::open(&stats, &names),
            Err(MirrorError::Mismatch(_))
        ));
        write(vec![SlotNames::new("a", ["a"]), SlotNames::new("b", ["b"])]);
        assert!(matches!(
            Mirror::open(&stats, &names),
            Err(MirrorError::Mismatch(_))
        ));
    }

    #[test]
    fn reads_live_counters_and_names_them() {
        let (_dir, stats, names) = files("live");
        let seg = StatsSegment::create_file(&stats, StatsLayout::new(2, 3)).unwrap();
        StatsNames {
            creator_pid: std::process::id(),
            slots: vec![
                SlotNames::new("router.shard0", ["frames_in", "bytes_in"]),
                SlotNames::new("router.shard1", ["frames_in", "bytes_in"]),
            ],
        }
        .write_file(&names)
        .unwrap();
        let mut mirror = Mirror::open(&stats, &names).unwrap();
        let (mut w0, mut w1) = (seg.writer(0).unwrap(), seg.writer(1).unwrap());
        w0.update(|c| c[..2].copy_from_slice(&[5, 320]));
        w1.update(|c| c[..2].copy_from_slice(&[7, 448]));
        let state = mirror.read().unwrap();
        assert!(state.creator_running);
        assert_eq!(state.total("router.", "frames_in"), 12);
        assert_eq!(state.get("router.shard1", "bytes_in"), Some(448));
        assert_eq!(
            state.slots[0].counters.len(),
            2,
            "the unnamed word is not shown"
        );
        w0.add(0, 1);
        assert_eq!(mirror.read().unwrap().total("router.", "frames_in"), 13);
    }

    #[test]
    fn lists_lent_agent_slots_only() {
        let (_dir, stats, names) = files("agents");
        let seg = StatsSegment::create_file(&stats, StatsLayout::new(2, 27)).unwrap();
        let counters = agentwire_router::agent_mirror::AGENT_COUNTERS;
        StatsNames {
            creator_pid: std::process::id(),
            slots: vec![
                SlotNames::new("agent.shard0.0", counters),
                SlotNames::new("agent.shard0.1", counters),
            ],
        }
        .write_file(&names)
        .unwrap();
        let mut mirror = Mirror::open(&stats, &names).unwrap();
        let mut lent = seg.writer(1).unwrap();
        let name = agentwire_router::agent_mirror::pack_name("pump-3");
        lent.update(|w| {
            w[0] = 42;
            w[1..9].copy_from_slice(&name);
            w[10] = 5;
        });
        let state = mirror.read().unwrap();
        assert_eq!(state.slots.len(), 1, "the free slot is left out");
        let agents = state.agents();
        assert_eq!(agents.len(), 1);
        assert_eq!(
            (agents[0].agent_id, agents[0].name.as_str()),
            (42, "pump-3")
        );
        assert_eq!(agents[0].get("frames_in"), Some(5));
        assert_eq!(
            agents[0].get("name_0"),
            None,
            "the name words are not counters"
        );
    }
}
