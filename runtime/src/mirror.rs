//! The daemon's live mirror: a stats segment beside the control socket (`<socket>.stats`,
//! with its names in `<socket>.stats.names`), one slot per router shard, written by the shard
//! itself ([`agentwire_router::mirror`]), one `daemon` slot for what no shard owns
//! (agents registered, the dead-letter queue's size, each engine partition's CPUs and busy
//! ratio), written every [`DAEMON_SLOT_PERIOD`] by the `aw-mirror` thread, and then each
//! shard's block of agent slots (`agent.shard<S>.<N>`), which the shard lends to the agents
//! it serves ([`agentwire_router::agent_mirror`]; [`agent_slots_per_shard`] each). The
//! digital twin and `agentwire twin state` read it without asking the daemon anything
//! (`docs/twin.md`).
//!
//! ```no_run
//! let socket = std::path::Path::new("/run/agentwire/agentwire.sock");
//! assert_eq!(agentwire_runtime::mirror::stats_path(socket),
//!            std::path::Path::new("/run/agentwire/agentwire.sock.stats"));
//! ```

use agentwire_router::RouterObserver;
use agentwire_shm::control::PartitionStatus;
use agentwire_shm::stats_segment::{SlotNames, SlotWriter, StatsLayout, StatsNames, StatsSegment};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the `daemon` slot is refreshed. Its values change slowly (agents come and go,
/// partitions' busy ratios are sampled by the rebalancer), so 10 ms keeps its lag far under
/// the mirror's 1 ms target's spirit at a cost of a hundred small updates a second.
///
/// ```
/// assert_eq!(agentwire_runtime::mirror::DAEMON_SLOT_PERIOD.as_millis(), 10);
/// ```
pub const DAEMON_SLOT_PERIOD: Duration = Duration::from_millis(10);

/// The `daemon` slot's fixed counters, before the per-partition ones.
///
/// ```
/// assert_eq!(agentwire_runtime::mirror::DAEMON_COUNTERS[0], "agents");
/// ```
pub const DAEMON_COUNTERS: [&str; 3] = ["agents", "uptime_ms", "dlq_bytes"];

/// Counters per engine partition in the `daemon` slot, each named
/// `partition.<name>.<counter>`.
///
/// ```
/// assert!(agentwire_runtime::mirror::PARTITION_COUNTERS.contains(&"busy_permille"));
/// ```
pub const PARTITION_COUNTERS: [&str; 4] =
    ["cpus", "busy_permille", "jobs_queued", "jobs_completed"];

/// Agent slots in a stats segment, over all shards: at most this many agents are mirrored
/// one by one (the rest are counted in their shard's `agents_unmirrored` and in its totals).
/// 512 slots of 512 bytes are 256 KiB of segment and about 200 KiB of names file.
///
/// ```
/// assert_eq!(agentwire_runtime::mirror::AGENT_SLOTS_MAX, 512);
/// ```
pub const AGENT_SLOTS_MAX: usize = 512;

/// Agent slots each of `shards` router shards gets: an equal share of [`AGENT_SLOTS_MAX`]
/// (an agent is served by one shard, which lends it a slot of its own block), and never so
/// many that the segment passes its slot limit.
///
/// ```
/// use agentwire_runtime::mirror::agent_slots_per_shard;
/// assert_eq!(agent_slots_per_shard(1), 512);
/// assert_eq!(agent_slots_per_shard(2), 256);
/// assert_eq!(agent_slots_per_shard(600), 0);
/// ```
pub fn agent_slots_per_shard(shards: usize) -> usize {
    let limit = agentwire_shm::stats_segment::STATS_SLOT_COUNT_MAX as usize;
    let room = limit.saturating_sub(shards + 1);
    AGENT_SLOTS_MAX.min(room) / shards.max(1)
}

/// The stats segment of the daemon serving `socket`: the socket's path with `.stats`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(agentwire_runtime::mirror::stats_path(Path::new("/tmp/x.sock")),
///            Path::new("/tmp/x.sock.stats"));
/// ```
pub fn stats_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".stats");
    PathBuf::from(p)
}

/// The names file of [`stats_path`]: `.stats.names`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(agentwire_runtime::mirror::names_path(Path::new("/tmp/x.sock")),
///            Path::new("/tmp/x.sock.stats.names"));
/// ```
pub fn names_path(socket: &Path) -> PathBuf {
    names_path_for(&stats_path(socket))
}

/// The names file beside the stats segment `stats`: its path with `.names`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(agentwire_runtime::mirror::names_path_for(Path::new("/tmp/s.stats")),
///            Path::new("/tmp/s.stats.names"));
/// ```
pub fn names_path_for(stats: &Path) -> PathBuf {
    let mut p = stats.as_os_str().to_owned();
    p.push(".names");
    PathBuf::from(p)
}

/// A partition's name as a counter name component: lower case, anything but
/// `a-z 0-9 _ -` as `_`.
///
/// ```
/// assert_eq!(agentwire_runtime::mirror::name_component("My Part"), "my_part");
/// ```
pub fn name_component(name: &str) -> String {
    name.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .take(48)
        .collect()
}

/// The `daemon` slot's counter names for these partitions.
///
/// ```
/// let names = agentwire_runtime::mirror::daemon_counter_names(&["streaming".to_string()]);
/// assert!(names.contains(&"partition.streaming.busy_permille".to_string()));
/// ```
pub fn daemon_counter_names(partitions: &[String]) -> Vec<String> {
    let mut names: Vec<String> = DAEMON_COUNTERS.iter().map(|s| s.to_string()).collect();
    for p in partitions {
        let p = name_component(p);
        names.extend(
            PARTITION_COUNTERS
                .iter()
                .map(|c| format!("partition.{p}.{c}")),
        );
    }
    names
}

/// Why the mirror could not be set up. The daemon serves without it (routing matters more)
/// and says so once.
///
/// ```
/// let e = agentwire_runtime::mirror::MirrorSetupError("x".into());
/// assert_eq!(e.to_string(), "stats mirror: x");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("stats mirror: {0}")]
pub struct MirrorSetupError(pub String);

/// The daemon's stats segment and the thread that writes its `daemon` slot. Dropping it
/// stops the thread; the files stay (a reader of a stopped daemon sees its last counters and
/// a creator pid that is gone) and are replaced by the next start.
pub struct DaemonMirror {
    segment: StatsSegment,
    /// Router shards (slots `0..shards`; the `daemon` slot is `shards`).
    shards: usize,
    /// Agent slots per shard, after the `daemon` slot.
    agent_slots_per_shard: usize,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DaemonMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonMirror")
            .field("path", &self.path)
            .finish()
    }
}

/// What the `daemon` slot reads each period.
pub(crate) struct DaemonSources {
    /// The router's registry (agent count).
    pub(crate) observer: RouterObserver,
    /// The engine partitions' status.
    pub(crate) partitions: Box<dyn Fn() -> Vec<PartitionStatus> + Send>,
    /// The dead-letter queue file.
    pub(crate) dlq_path: PathBuf,
}

impl DaemonMirror {
    /// Creates the names file and the segment for `shards` router shards, the `daemon`
    /// slot (partitions named `partitions`), then each shard's block of agent slots.
    pub(crate) fn create(
        socket: &Path,
        shards: usize,
        partitions: &[String],
    ) -> Result<Self, MirrorSetupError> {
        let shard_names = agentwire_router::mirror::shard_counter_names();
        let daemon_names = daemon_counter_names(partitions);
        let mut slots: Vec<SlotNames> = (0..shards)
            .map(|s| SlotNames::new(&format!("router.shard{s}"), shard_names.iter().copied()))
            .collect();
        slots.push(SlotNames::new("daemon", daemon_names.iter().cloned()));
        let agent_slots_per_shard = agent_slots_per_shard(shards);
        for shard in 0..shards {
            slots.extend((0..agent_slots_per_shard).map(|n| {
                SlotNames::new(
                    &format!("agent.shard{shard}.{n}"),
                    agentwire_router::agent_mirror::AGENT_COUNTERS,
                )
            }));
        }
        let per_slot = slots.iter().map(|s| s.counters.len()).max().unwrap_or(1);
        let names = StatsNames {
            creator_pid: std::process::id(),
            slots,
        };
        names
            .validate(per_slot)
            .map_err(|e| MirrorSetupError(e.to_string()))?;
        let path = stats_path(socket);
        // Names first: a reader that finds the new segment finds its names.
        let names_file = names_path(socket);
        names
            .write_file(&names_file)
            .map_err(|e| MirrorSetupError(format!("{}: {e}", names_file.display())))?;
        let layout = StatsLayout::new(names.slots.len() as u32, per_slot as u32);
        let segment = StatsSegment::create_file(&path, layout)
            .map_err(|e| MirrorSetupError(format!("{}: {e}", path.display())))?;
        Ok(Self {
            segment,
            shards,
            agent_slots_per_shard,
            path,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// The slot writer for router shard `shard`.
    pub(crate) fn shard_slot(&self, shard: usize) -> Result<SlotWriter, MirrorSetupError> {
        self.segment
            .writer(shard)
            .map_err(|e| MirrorSetupError(e.to_string()))
    }

    /// The slot writers of router shard `shard`'s block of agent slots.
    pub(crate) fn agent_slots(&self, shard: usize) -> Result<Vec<SlotWriter>, MirrorSetupError> {
        let first = self.shards + 1 + shard * self.agent_slots_per_shard;
        (first..first + self.agent_slots_per_shard)
            .map(|slot| {
                self.segment
                    .writer(slot)
                    .map_err(|e| MirrorSetupError(e.to_string()))
            })
            .collect()
    }

    /// Starts the `aw-mirror` thread writing the `daemon` slot.
    pub(crate) fn start_daemon_slot(
        &mut self,
        sources: DaemonSources,
    ) -> Result<(), MirrorSetupError> {
        let slot = self.shards;
        let writer = self
            .segment
            .writer(slot)
            .map_err(|e| MirrorSetupError(e.to_string()))?;
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("aw-mirror".into())
            .spawn(move || daemon_slot_loop(writer, sources, &stop))
            .map_err(|e| MirrorSetupError(format!("spawning aw-mirror: {e}")))?;
        self.thread = Some(thread);
        Ok(())
    }

    /// The segment file.
    ///
    /// ```no_run
    /// # fn f(m: &agentwire_runtime::mirror::DaemonMirror) {
    /// println!("{}", m.path().display());
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DaemonMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Writes the `daemon` slot every [`DAEMON_SLOT_PERIOD`] until `stop`.
fn daemon_slot_loop(mut writer: SlotWriter, sources: DaemonSources, stop: &AtomicBool) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let agents = sources.observer.agent_count() as u64;
        let dlq_bytes = std::fs::metadata(&sources.dlq_path).map_or(0, |m| m.len());
        let partitions = (sources.partitions)();
        let uptime_ms = started.elapsed().as_millis() as u64;
        writer.update(|words| {
            words[..DAEMON_COUNTERS.len()].copy_from_slice(&[agents, uptime_ms, dlq_bytes]);
            let per_partition =
                words[DAEMON_COUNTERS.len()..].chunks_exact_mut(PARTITION_COUNTERS.len());
            for (chunk, p) in per_partition.zip(&partitions) {
                chunk.copy_from_slice(&[
                    p.cpus.len() as u64,
                    u64::from(p.busy_permille),
                    p.jobs_queued,
                    p.jobs_completed,
                ]);
            }
        });
        std::thread::park_timeout(DAEMON_SLOT_PERIOD);
    }
}
