//! A shard's mirror: each routing core publishes its counters and a few gauges into its own
//! slot of the daemon's stats segment ([`agentwire_shm::stats_segment`]), so the digital
//! twin and `agentwire twin state` read the live state without asking anyone.
//!
//! The core publishes from its own duty cycle: every [`MIRROR_PUBLISH_PASSES`] passes while
//! it runs, on the first idle pass after a burst of work (at most once per
//! [`MIRROR_EDGE_PASSES_MIN`] passes), and once more before it parks (a parked shard's slot
//! is never behind what it did). A publish is one seqlock update of
//! [`SHARD_MIRROR_COUNTERS`] words (loads of the shard's counters, one pass over its agents'
//! rings for the occupancy gauges) and the updates of a few agents' own slots
//! ([`crate::agent_mirror`]): no allocation, no syscall, no lock.
//!
//! ```
//! use agentwire_router::{mirror, RouterConfig, RouterControl};
//! use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
//! let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, mirror::SHARD_MIRROR_COUNTERS as u32)).unwrap();
//! let p = std::env::temp_dir().join(format!("aw-doc-mirror-{}.sock", std::process::id()));
//! let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
//! core.set_stats_slot(seg.writer(0).unwrap()).unwrap();
//! core.do_work();
//! core.publish_mirror();
//! let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
//! let mut counters = vec![0; mirror::SHARD_MIRROR_COUNTERS];
//! reader.snapshot(0, &mut counters).unwrap();
//! let names = mirror::shard_counter_names();
//! let duty = names.iter().position(|n| *n == "duty_cycles").unwrap();
//! assert_eq!(counters[duty], 1);
//! ```

use crate::agent_mirror::permille;
use crate::duty_cycle::RoutingCore;
use crate::stats::{RouterStats, ROUTER_COUNTERS};
use agentwire_shm::stats_segment::SlotWriter;

/// Gauges a shard adds after its [`RouterStats`] counters: agents it serves, the fullest
/// tx ring (agent to router) and rx ring (router to agent) it serves in permille of the
/// ring's capacity, the publishes so far (the slot's own update count), and the agents it
/// serves without a mirror slot of their own ([`crate::agent_mirror`]).
///
/// ```
/// assert_eq!(agentwire_router::mirror::SHARD_GAUGES[0], "agents_served");
/// ```
pub const SHARD_GAUGES: [&str; 5] = [
    "agents_served",
    "tx_occupancy_max_permille",
    "rx_occupancy_max_permille",
    "mirror_publishes",
    "agents_unmirrored",
];

/// Words a shard's slot must hold: its counters, then [`SHARD_GAUGES`].
///
/// ```
/// use agentwire_router::{mirror, stats};
/// assert_eq!(mirror::SHARD_MIRROR_COUNTERS, stats::ROUTER_COUNTERS + mirror::SHARD_GAUGES.len());
/// ```
pub const SHARD_MIRROR_COUNTERS: usize = ROUTER_COUNTERS + SHARD_GAUGES.len();

/// A running shard publishes its slot every this many duty cycles (and before it parks). A
/// busy duty cycle takes about a microsecond to tens of microseconds, so the mirror trails
/// the shard by well under a millisecond; an idle spinning one pays one publish (tens of
/// nanoseconds) per this many passes.
///
/// ```
/// assert_eq!(agentwire_router::mirror::MIRROR_PUBLISH_PASSES, 64);
/// ```
pub const MIRROR_PUBLISH_PASSES: u64 = 64;

/// A burst's end publishes at once unless the last publish was fewer than this many passes
/// ago (a shard alternating busy and idle passes publishes at most once per this many).
///
/// ```
/// assert_eq!(agentwire_router::mirror::MIRROR_EDGE_PASSES_MIN, 8);
/// ```
pub const MIRROR_EDGE_PASSES_MIN: u64 = 8;

/// The names of a shard slot's words, in order: [`RouterStats::names`], then
/// [`SHARD_GAUGES`].
///
/// ```
/// let names = agentwire_router::mirror::shard_counter_names();
/// assert_eq!(names.len(), agentwire_router::mirror::SHARD_MIRROR_COUNTERS);
/// assert_eq!(names.last(), Some(&"agents_unmirrored"));
/// ```
pub fn shard_counter_names() -> Vec<&'static str> {
    let mut names = RouterStats::names().to_vec();
    names.extend(SHARD_GAUGES);
    names
}

/// Why a slot was refused for a shard's mirror.
///
/// ```
/// use agentwire_router::mirror::MirrorError;
/// let e = MirrorError::SlotTooSmall { counters: 4, needed: 50 };
/// assert!(e.to_string().contains("50"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The slot holds fewer words than a shard publishes.
    #[error("stats slot holds {counters} counters, a router shard publishes {needed}")]
    SlotTooSmall {
        /// Words in the slot.
        counters: usize,
        /// [`SHARD_MIRROR_COUNTERS`].
        needed: usize,
    },
}

impl RoutingCore {
    /// Gives the core its slot of the stats segment; from now on it publishes there (see
    /// the module documentation). Refused if the slot holds fewer than
    /// [`SHARD_MIRROR_COUNTERS`] words.
    ///
    /// ```
    /// use agentwire_router::{RouterConfig, RouterControl};
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 4)).unwrap();
    /// let p = std::env::temp_dir().join(format!("aw-doc-slot-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(core.set_stats_slot(seg.writer(0).unwrap()).is_err());
    /// ```
    pub fn set_stats_slot(&mut self, writer: SlotWriter) -> Result<(), MirrorError> {
        let counters = writer.counters().len();
        if counters < SHARD_MIRROR_COUNTERS {
            return Err(MirrorError::SlotTooSmall {
                counters,
                needed: SHARD_MIRROR_COUNTERS,
            });
        }
        self.mirror = Some(writer);
        self.publish_mirror();
        Ok(())
    }

    /// Publishes the shard's counters and gauges to its slot now (a no-op without one). The
    /// duty cycle calls this on its own schedule; call it directly after driving a core by
    /// hand.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-pub-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.publish_mirror(); // no slot given: nothing to do
    /// ```
    pub fn publish_mirror(&mut self) {
        self.publish_shard_slot();
        self.publish_agent_slots(true);
    }

    /// A scheduled publish: the shard's slot and the next few agents' slots (bounded cost
    /// whatever the number of agents; see [`crate::agent_mirror`]).
    fn publish_mirror_scheduled(&mut self) {
        self.publish_shard_slot();
        self.publish_agent_slots(false);
    }

    /// Writes the shard's own slot.
    fn publish_shard_slot(&mut self) {
        let Some(mut writer) = self.mirror.take() else {
            return;
        };
        let (mut tx_max, mut rx_max) = (0u64, 0u64);
        for agent in &self.agents {
            for lane in &agent.tx {
                tx_max = tx_max.max(permille(lane.occupied_bytes(), lane.capacity_bytes()));
            }
        }
        for outbox in self.producers.rings.values_mut() {
            let producer = &mut outbox.producer;
            let capacity = producer.capacity_bytes();
            rx_max = rx_max.max(permille(producer.occupied_bytes(), capacity));
        }
        let stats = &self.shared.stats[self.shard];
        let agents = self.agents.len() as u64;
        let unmirrored = self.agents_unmirrored();
        writer.update(|words| {
            stats.write_values(&mut words[..ROUTER_COUNTERS]);
            let gauges = &mut words[ROUTER_COUNTERS..SHARD_MIRROR_COUNTERS];
            let publishes = gauges[3].wrapping_add(1);
            gauges.copy_from_slice(&[agents, tx_max, rx_max, publishes, unmirrored]);
        });
        self.mirror = Some(writer);
    }

    /// The duty cycle's hook, after a pass that did `work`: publishes every
    /// [`MIRROR_PUBLISH_PASSES`] passes, and on the first idle pass after work (a burst's
    /// end) when at least [`MIRROR_EDGE_PASSES_MIN`] passes have gone by since the last
    /// publish, so light traffic reaches the mirror at once and busy traffic costs at most
    /// one publish per that many passes.
    #[inline]
    pub(crate) fn maybe_publish_mirror(&mut self, work: usize) {
        if self.mirror.is_none() && self.agent_slots.is_empty() {
            return;
        }
        let state = &mut self.mirror_state;
        state.dirty |= work > 0;
        let since = self.passes.wrapping_sub(state.last_pass);
        let edge = work == 0 && state.dirty && since >= MIRROR_EDGE_PASSES_MIN;
        if edge || self.passes % MIRROR_PUBLISH_PASSES == 0 {
            state.dirty = false;
            state.last_pass = self.passes;
            self.publish_mirror_scheduled();
        }
    }
}

/// When a shard last published and whether it has worked since.
#[derive(Debug, Default)]
pub(crate) struct MirrorSchedule {
    /// A pass since the last publish moved frames.
    pub(crate) dirty: bool,
    /// The pass of the last scheduled publish.
    pub(crate) last_pass: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let names = shard_counter_names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
}
