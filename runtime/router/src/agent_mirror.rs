//! Per-agent mirror slots: each routing core owns a block of slots in the daemon's stats
//! segment and lends one to each agent it serves, for as long as it serves it. An agent's
//! slot holds its id and name, frames and bytes taken from its tx rings and written into its
//! rx ring, its deferrals and the nacks it was sent by reason, and its rings' occupancy
//! ([`AGENT_COUNTERS`]).
//!
//! The counters live in the shard's own memory beside the agent's rings (plain integers:
//! one writer) and cost two additions and a flag per batch read from the agent and per frame
//! written to it; they reach the segment only when the shard publishes. A scheduled publish
//! writes the slots of the agents the shard moved frames for since their last publish (so
//! an active agent's slot trails it as closely as the shard's own), then
//! [`AGENT_SLOTS_PER_PUBLISH`] more agents' slots round robin (ring occupancy and deferrals
//! change without the router moving a frame); its cost grows with the agents that were
//! active, not with the agents served. A shard about to park, or shutting down, publishes
//! every agent's slot. A slot is lent at registration and cleared (agent id 0)
//! and taken back when the shard reclaims the agent. An agent that finds no free slot is
//! served as usual and counted in the shard's `agents_unmirrored` gauge until a departed
//! agent's slot is free for it.
//!
//! ```
//! use agentwire_router::{agent_mirror, mirror, RouterConfig, RouterControl};
//! use agentwire_shm::stats_segment::{StatsLayout, StatsReader, StatsSegment};
//! let words = mirror::SHARD_MIRROR_COUNTERS as u32;
//! let seg = StatsSegment::create_memfd("doc", StatsLayout::new(3, words)).unwrap();
//! let p = std::env::temp_dir().join(format!("aw-doc-agent-mirror-{}.sock", std::process::id()));
//! let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
//! core.set_stats_slot(seg.writer(0).unwrap()).unwrap();
//! core.set_agent_stats_slots(vec![seg.writer(1).unwrap(), seg.writer(2).unwrap()]).unwrap();
//! let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
//! let mut slot = vec![0; words as usize];
//! reader.snapshot(1, &mut slot).unwrap();
//! assert_eq!(slot[0], 0, "no agent yet: the slot is free");
//! ```

use crate::deferral::Deferral;
use crate::duty_cycle::{DataAgent, RoutingCore};
use crate::mirror::{MirrorError, SHARD_MIRROR_COUNTERS};
use crate::outbox::Outbox;
use agentwire_shm::control::AGENT_NAME_BYTES_MAX;
use agentwire_shm::stats_segment::SlotWriter;

/// Words of an agent's name in its slot: [`AGENT_NAME_BYTES_MAX`] bytes, little-endian,
/// zero padded.
///
/// ```
/// assert_eq!(agentwire_router::agent_mirror::NAME_WORDS, 8);
/// ```
pub const NAME_WORDS: usize = AGENT_NAME_BYTES_MAX / 8;
const _: () = assert!(AGENT_NAME_BYTES_MAX % 8 == 0);

/// Nack reasons an agent's slot counts, index = `NackReason as usize - 1`.
const NACK_REASONS: usize = 6;

/// The names of an agent slot's words, in order. `agent_id` 0 marks a free slot;
/// `name_0`..`name_7` hold the agent's name ([`unpack_name`]); `shard` is the shard serving
/// it; `frames_in`/`bytes_in` were taken from its tx rings, `frames_out`/`bytes_out` written
/// into its rx ring (deliveries, acks and nacks); `frames_deferred` waited in its deferral on
/// its own shard (`deferred_now` wait there now); `nacks_*` are the nacks it was sent, by
/// reason; the occupancy gauges are its fullest tx lane and its rx ring in permille of their
/// capacity; `leaving` is 1 once it left and its last frames drain; `publishes` counts the
/// slot's updates since it was lent; `slot_lends` counts the times the slot was lent (a
/// reader that sees it change knows the slot changed hands between two reads).
///
/// ```
/// let names = agentwire_router::agent_mirror::AGENT_COUNTERS;
/// assert_eq!((names[0], names[1], names[10]), ("agent_id", "name_0", "frames_in"));
/// ```
pub const AGENT_COUNTERS: [&str; 27] = [
    "agent_id",
    "name_0",
    "name_1",
    "name_2",
    "name_3",
    "name_4",
    "name_5",
    "name_6",
    "name_7",
    "shard",
    "frames_in",
    "bytes_in",
    "frames_out",
    "bytes_out",
    "frames_deferred",
    "deferred_now",
    "nacks_no_such_agent",
    "nacks_no_subscriber",
    "nacks_destination_full",
    "nacks_malformed",
    "nacks_not_permitted",
    "nacks_dead_letter_refused",
    "tx_occupancy_max_permille",
    "rx_occupancy_permille",
    "leaving",
    "publishes",
    "slot_lends",
];

/// Index of each word in [`AGENT_COUNTERS`].
mod word {
    pub(super) const AGENT_ID: usize = 0;
    pub(super) const NAME: usize = 1;
    pub(super) const SHARD: usize = 9;
    pub(super) const FRAMES_IN: usize = 10;
    pub(super) const FRAMES_DEFERRED: usize = 14;
    pub(super) const NACKS: usize = 16;
    pub(super) const TX_OCCUPANCY: usize = 22;
    pub(super) const PUBLISHES: usize = 25;
    pub(super) const LENT: usize = 26;
}
const _: () = assert!(word::NACKS + NACK_REASONS == word::TX_OCCUPANCY);
const _: () = assert!(word::LENT + 1 == AGENT_COUNTERS.len());

/// Agent slots a regular publish refreshes (round robin); parking and shutdown refresh all.
///
/// ```
/// assert_eq!(agentwire_router::agent_mirror::AGENT_SLOTS_PER_PUBLISH, 8);
/// ```
pub const AGENT_SLOTS_PER_PUBLISH: usize = 8;

/// An agent's name as slot words: its bytes little-endian, zero padded, cut at
/// [`AGENT_NAME_BYTES_MAX`] bytes.
///
/// ```
/// use agentwire_router::agent_mirror::{pack_name, unpack_name};
/// let words = pack_name("sensor-7");
/// assert_eq!(unpack_name(&words), "sensor-7");
/// ```
pub fn pack_name(name: &str) -> [u64; NAME_WORDS] {
    let mut bytes = [0u8; AGENT_NAME_BYTES_MAX];
    let n = name.len().min(AGENT_NAME_BYTES_MAX);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut words = [0u64; NAME_WORDS];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
    }
    words
}

/// The name held in slot words ([`pack_name`]): the bytes up to the first zero, invalid
/// UTF-8 replaced (a slot is shared memory: a reader trusts nothing in it).
///
/// ```
/// assert_eq!(agentwire_router::agent_mirror::unpack_name(&[0x6968]), "hi");
/// ```
pub fn unpack_name(words: &[u64]) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .take(NAME_WORDS)
        .flat_map(|w| w.to_le_bytes())
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One agent's counters, kept by the shard that serves it (plain integers: one writer).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AgentCounters {
    pub(crate) frames_in: u64,
    pub(crate) bytes_in: u64,
}

/// What the rx side of an agent counted ([`crate::outbox::Outbox`] keeps it).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RxCounters {
    pub(crate) frames_out: u64,
    pub(crate) bytes_out: u64,
    /// By `NackReason as usize - 1`.
    pub(crate) nacks: [u64; NACK_REASONS],
}

impl RxCounters {
    /// Counts a nack of reason code `reason` (1..=6; anything else is ignored).
    #[inline]
    pub(crate) fn nack(&mut self, reason: u32) {
        if let Some(n) = (reason as usize)
            .checked_sub(1)
            .and_then(|i| self.nacks.get_mut(i))
        {
            *n = n.wrapping_add(1);
        }
    }
}

/// A shard's block of agent slots: the writers, which are free, and the round-robin cursor.
#[derive(Debug, Default)]
pub(crate) struct AgentSlots {
    writers: Vec<SlotWriter>,
    /// Indexes into `writers` not lent, lowest last (lent first).
    free: Vec<u32>,
    /// Next agent (index into the shard's agents) a regular publish starts from.
    cursor: usize,
}

impl AgentSlots {
    fn new(writers: Vec<SlotWriter>) -> Self {
        let free = (0..writers.len() as u32).rev().collect();
        Self {
            writers,
            free,
            cursor: 0,
        }
    }

    /// No slots were given.
    pub(crate) fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }

    /// Lends a free slot, if any.
    pub(crate) fn lend(&mut self) -> Option<u32> {
        let slot = self.free.pop()?;
        let writer = &mut self.writers[slot as usize];
        writer.update(|w| {
            let lent = w[word::LENT].wrapping_add(1);
            w.fill(0);
            w[word::LENT] = lent;
        });
        Some(slot)
    }

    /// Clears a lent slot (agent id 0: free) and takes it back.
    pub(crate) fn release(&mut self, slot: Option<u32>) {
        let Some(slot) = slot else {
            return;
        };
        if let Some(writer) = self.writers.get_mut(slot as usize) {
            writer.update(|w| {
                let lent = w[word::LENT];
                w.fill(0);
                w[word::LENT] = lent;
            });
            self.free.push(slot);
        }
    }
}

/// Occupancy in permille of `capacity`, clamped to 1000 (an agent's ring positions are
/// untrusted: a hostile tail may claim more than the ring holds).
pub(crate) fn permille(occupied_bytes: usize, capacity_bytes: usize) -> u64 {
    let capacity = capacity_bytes.max(1) as u64;
    (occupied_bytes as u64).min(capacity) * 1000 / capacity
}

impl RoutingCore {
    /// Gives the core a block of slots of the stats segment to lend to the agents it serves
    /// (see the module documentation); agents it already serves get theirs now. Refused if
    /// a slot holds fewer than [`AGENT_COUNTERS`] words.
    ///
    /// ```
    /// use agentwire_router::{RouterConfig, RouterControl};
    /// use agentwire_shm::stats_segment::{StatsLayout, StatsSegment};
    /// let seg = StatsSegment::create_memfd("doc", StatsLayout::new(1, 4)).unwrap();
    /// let p = std::env::temp_dir().join(format!("aw-doc-aslot-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(core.set_agent_stats_slots(vec![seg.writer(0).unwrap()]).is_err());
    /// ```
    pub fn set_agent_stats_slots(&mut self, writers: Vec<SlotWriter>) -> Result<(), MirrorError> {
        if let Some(small) = writers
            .iter()
            .map(|w| w.counters().len())
            .find(|&n| n < AGENT_COUNTERS.len())
        {
            return Err(MirrorError::SlotTooSmall {
                counters: small,
                needed: AGENT_COUNTERS.len(),
            });
        }
        self.agent_slots = AgentSlots::new(writers);
        for agent in &mut self.agents {
            agent.mirror_slot = self.agent_slots.lend();
            self.producers
                .set_mirror_slot(agent.agent_id, agent.mirror_slot);
        }
        self.publish_agent_slots(true);
        Ok(())
    }

    /// Lends slots freed by departed agents to agents served without one, in the order they
    /// came. Called only after agents were removed.
    pub(crate) fn lend_freed_slots(&mut self) {
        if self.agent_slots.free.is_empty() {
            return;
        }
        for agent in self.agents.iter_mut().filter(|a| a.mirror_slot.is_none()) {
            agent.mirror_slot = self.agent_slots.lend();
            if agent.mirror_slot.is_none() {
                break;
            }
            agent.mirror_dirty = true;
            self.producers
                .set_mirror_slot(agent.agent_id, agent.mirror_slot);
        }
    }

    /// Agents served without a mirror slot (none was free).
    pub(crate) fn agents_unmirrored(&self) -> u64 {
        self.agents
            .iter()
            .filter(|a| a.mirror_slot.is_none())
            .count() as u64
    }

    /// Writes agents' slots. With `all`, every agent's. Else, first the slots of agents the
    /// shard took frames from or wrote frames to since their last publish (their tx or rx
    /// words only), then the next [`AGENT_SLOTS_PER_PUBLISH`] agents' whole slots from the
    /// round-robin cursor (what changes without the router doing anything: ring occupancy
    /// as agents read and write, frames waiting in a deferral).
    pub(crate) fn publish_agent_slots(&mut self, all: bool) {
        let served = self.agents.len();
        if self.agent_slots.writers.is_empty() || served == 0 {
            return;
        }
        if !all {
            self.publish_dirty_agents();
        }
        let (first, count) = if all {
            (0, served)
        } else {
            (
                self.agent_slots.cursor % served,
                served.min(AGENT_SLOTS_PER_PUBLISH),
            )
        };
        for k in 0..count {
            self.publish_agent_slot((first + k) % served);
        }
        self.agent_slots.cursor = (first + count) % served;
    }

    /// Writes the tx words of agents taken from, and the rx words of agents written to,
    /// since their last publish.
    fn publish_dirty_agents(&mut self) {
        let shard = self.shard as u64;
        let writers = &mut self.agent_slots.writers;
        for agent in self.agents.iter_mut().filter(|a| a.mirror_dirty) {
            agent.mirror_dirty = false;
            if let Some(writer) = agent.mirror_slot.and_then(|s| writers.get_mut(s as usize)) {
                writer.update(|w| {
                    fill_tx(w, agent, shard);
                    w[word::PUBLISHES] = w[word::PUBLISHES].wrapping_add(1);
                });
            }
        }
        let deferrals = &self.deferrals.by_destination;
        for (id, outbox) in self.producers.rings.iter_mut() {
            if !outbox.mirror_dirty {
                continue;
            }
            outbox.mirror_dirty = false;
            if let Some(writer) = outbox.mirror_slot.and_then(|s| writers.get_mut(s as usize)) {
                let deferral = deferrals.get(id);
                writer.update(|w| {
                    fill_rx(w, outbox, deferral);
                    w[word::PUBLISHES] = w[word::PUBLISHES].wrapping_add(1);
                });
            }
        }
    }

    /// Writes the whole slot of the agent at `index` in `self.agents` (none without a slot).
    fn publish_agent_slot(&mut self, index: usize) {
        let shard = self.shard as u64;
        let agent = &mut self.agents[index];
        let Some(slot) = agent.mirror_slot else {
            return;
        };
        agent.mirror_dirty = false;
        let outbox = self.producers.rings.get_mut(&agent.agent_id);
        let deferral = self.deferrals.by_destination.get(&agent.agent_id);
        let writer = &mut self.agent_slots.writers[slot as usize];
        writer.update(|w| {
            fill_tx(w, agent, shard);
            if let Some(outbox) = outbox {
                outbox.mirror_dirty = false;
                fill_rx(w, outbox, deferral);
            }
            w[word::PUBLISHES] = w[word::PUBLISHES].wrapping_add(1);
        });
    }
}

/// Fills an agent slot's words about who the agent is and what the shard took from it.
fn fill_tx(w: &mut [u64], agent: &mut DataAgent, shard: u64) {
    let tx_max = agent
        .tx
        .iter()
        .map(|lane| permille(lane.occupied_bytes(), lane.capacity_bytes()))
        .max()
        .unwrap_or(0);
    w[word::AGENT_ID] = u64::from(agent.agent_id);
    w[word::NAME..word::SHARD].copy_from_slice(&agent.name);
    w[word::SHARD] = shard;
    w[word::FRAMES_IN] = agent.counters.frames_in;
    w[word::FRAMES_IN + 1] = agent.counters.bytes_in;
    w[word::TX_OCCUPANCY] = tx_max;
    w[word::TX_OCCUPANCY + 2] = u64::from(agent.leaving);
}

/// Fills an agent slot's words about what the shard wrote into its rx ring and deferred for
/// it.
fn fill_rx(w: &mut [u64], outbox: &mut Outbox, deferral: Option<&Deferral>) {
    let rx = outbox.rx;
    let capacity = outbox.producer.capacity_bytes();
    let occupied = outbox.producer.occupied_bytes();
    w[word::FRAMES_IN + 2] = rx.frames_out;
    w[word::FRAMES_IN + 3] = rx.bytes_out;
    w[word::FRAMES_DEFERRED] = deferral.map_or(0, Deferral::frames_pushed);
    w[word::FRAMES_DEFERRED + 1] = deferral.map_or(0, |d| d.frames() as u64);
    w[word::NACKS..word::TX_OCCUPANCY].copy_from_slice(&rx.nacks);
    w[word::TX_OCCUPANCY + 1] = permille(occupied, capacity);
}

const _: () = assert!(AGENT_COUNTERS.len() <= SHARD_MIRROR_COUNTERS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_cut() {
        assert_eq!(unpack_name(&pack_name("")), "");
        let long = "x".repeat(100);
        assert_eq!(unpack_name(&pack_name(&long)).len(), AGENT_NAME_BYTES_MAX);
        assert_eq!(unpack_name(&[u64::MAX]), "\u{fffd}".repeat(8));
    }

    #[test]
    fn counter_names_are_unique() {
        let mut sorted = AGENT_COUNTERS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), AGENT_COUNTERS.len());
    }

    #[test]
    fn nack_reasons_out_of_range_are_ignored() {
        let mut rx = RxCounters::default();
        for reason in [0, 1, 6, 7, u32::MAX] {
            rx.nack(reason);
        }
        assert_eq!(rx.nacks, [1, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn permille_is_clamped() {
        assert_eq!(permille(0, 4096), 0);
        assert_eq!(permille(2048, 4096), 500);
        assert_eq!(permille(usize::MAX, 4096), 1000);
        assert_eq!(permille(5, 0), 1000);
    }
}
