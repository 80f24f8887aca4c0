//! [`Outboxes`]: every destination a shard writes to (its agents' rx rings, other shards'
//! links), committed per frame and published once per batch.

use crate::links::{LinkFlags, LinkSender};
use crate::reply::NackEncoder;
use agentwire_shm::ring::Producer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every agent's rx producer, keyed by agent id (FxHash: SipHash cost ~6% of the router core
/// in a routed-throughput profile). Frames are committed as they are routed and each touched
/// ring is published once per source batch: with the fenced wake protocol a publish is a
/// locked instruction, and publishing per frame cost ~20% of the router core.
///
/// Agents another shard serves are reached through that shard's link ([`links`]): a write
/// for one is a link record, refused while the agent is congested (frames wait in its
/// deferral on its own shard) or the link's in-flight budget is spent.
#[derive(Default)]
pub(crate) struct Outboxes {
    pub(crate) rings: rustc_hash::FxHashMap<u32, Outbox>,
    pub(crate) dirty: Vec<u32>,
    /// Agents of other shards (from the registry at the last table rebuild).
    pub(crate) remote: rustc_hash::FxHashMap<u32, RemoteDest>,
    /// Links to other shards, by shard index (`None` for this shard).
    pub(crate) links: Vec<Option<LinkSender>>,
    pub(crate) links_dirty: bool,
    /// Remote agents behind a gateway endpoint of this shard → that gateway (their frames go
    /// into its ring).
    pub(crate) aliases: rustc_hash::FxHashMap<u32, u32>,
    /// Every remote agent behind a gateway, on any shard: a copy routed to one by anycast or
    /// feature is re-addressed to it (see `FrameHeader::address_to`).
    pub(crate) behind_gateway: rustc_hash::FxHashSet<u32>,
    /// The remote agents behind a node link (another node's agents): anycast and feature
    /// routes take one only when no agent of this node can take the frame.
    pub(crate) behind_link: rustc_hash::FxHashSet<u32>,
    /// The node links' gateway endpoints: daemon code that may send a nack on a proxy's
    /// behalf (for a frame its link lost), which no agent may.
    pub(crate) link_gateways: rustc_hash::FxHashSet<u32>,
    /// Buffers nack bodies are encoded into (see [`NackEncoder`]).
    pub(crate) nack_encoder: Option<Box<NackEncoder>>,
    /// Agents of this shard whose rx ring was found corrupt (a head out of range), each
    /// once: the duty cycle drops them. At most one entry per agent served here.
    pub(crate) corrupt_rx: Vec<u32>,
    /// Parked agents woken by this shard's publishes (a doorbell rung), all told.
    pub(crate) wakes: u64,
    /// Wall-clock ns those doorbell rings took, all told (`Producer::wake_ns`).
    pub(crate) wake_ns: u64,
}

/// Where [`Outboxes::write_flagged`] put a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// In the rx ring of an agent this shard serves.
    Delivered,
    /// On the link to the shard that serves the agent.
    Forwarded,
    /// Nowhere: no such agent, or no room.
    Refused,
}

pub(crate) struct RemoteDest {
    pub(crate) shard: usize,
    pub(crate) congested: Arc<AtomicBool>,
    /// Its rx ring, read only for its occupancy (least-loaded choice).
    pub(crate) rx: agentwire_shm::ring::RingMemory,
}

pub(crate) struct Outbox {
    pub(crate) producer: Producer,
    pub(crate) dirty: bool,
    /// Its corruption was noted in [`Outboxes::corrupt_rx`].
    pub(crate) corrupt_noted: bool,
    /// What was written into this ring, and the nacks among it, for the agent's mirror slot.
    pub(crate) rx: crate::agent_mirror::RxCounters,
    /// The agent's mirror slot ([`crate::agent_mirror`]), and whether `rx` changed since it
    /// was last published there.
    pub(crate) mirror_slot: Option<u32>,
    pub(crate) mirror_dirty: bool,
}

impl Outbox {
    /// After a refused claim: notes the agent in `corrupt_rx` once if the refusal was a
    /// corrupt ring rather than a full one.
    #[cold]
    fn note_if_corrupt(&mut self, owner: u32, corrupt_rx: &mut Vec<u32>) {
        if self.producer.is_corrupt() && !self.corrupt_noted {
            self.corrupt_noted = true;
            corrupt_rx.push(owner);
        }
    }
}

impl Outbox {
    /// Claims room for a frame, lets `fill` write it and commits it for the next publish,
    /// noting the agent in `dirty` once. False (nothing written) when the ring is full.
    #[inline]
    pub(crate) fn commit(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        dirty: &mut Vec<u32>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Ok(mut claim) = self.producer.claim(len_bytes) else {
            return false;
        };
        fill(claim.bytes_mut());
        claim.commit_deferred();
        self.rx.frames_out = self.rx.frames_out.wrapping_add(1);
        self.rx.bytes_out = self.rx.bytes_out.wrapping_add(len_bytes as u64);
        self.mirror_dirty = true;
        if !self.dirty {
            self.dirty = true;
            dirty.push(agent_id);
        }
        true
    }
}

impl Outboxes {
    pub(crate) fn insert(&mut self, agent_id: u32, producer: Producer) {
        self.rings.insert(
            agent_id,
            Outbox {
                producer,
                dirty: false,
                corrupt_noted: false,
                rx: Default::default(),
                mirror_slot: None,
                mirror_dirty: false,
            },
        );
    }

    pub(crate) fn remove(&mut self, agent_id: u32) {
        if let Some(mut outbox) = self.rings.remove(&agent_id) {
            outbox.producer.publish();
        }
    }

    /// Whose ring takes frames for `agent_id` on this shard: the agent's own, or its
    /// gateway's for a remote agent behind a gateway endpoint. No map lookup while this shard
    /// serves no gateway with remote agents.
    #[inline]
    fn owner(&self, agent_id: u32) -> u32 {
        if self.aliases.is_empty() {
            agent_id
        } else {
            self.aliases.get(&agent_id).copied().unwrap_or(agent_id)
        }
    }

    /// The ring that takes frames for `agent_id` on this shard, and its owner (see
    /// [`Outboxes::owner`]).
    #[inline]
    fn local_ring(&mut self, agent_id: u32) -> Option<(u32, &mut Outbox)> {
        let owner = self.owner(agent_id);
        self.rings.get_mut(&owner).map(|o| (owner, o))
    }

    /// Counts a nack of reason code `reason` sent to `agent_id`, if its ring is on this
    /// shard (for its mirror slot; a gateway's remote agents count in the gateway's).
    pub(crate) fn note_nack(&mut self, agent_id: u32, reason: u32) {
        if let Some((_, outbox)) = self.local_ring(agent_id) {
            outbox.rx.nack(reason);
            outbox.mirror_dirty = true;
        }
    }

    /// Gives the agent's ring its mirror slot (or takes it away).
    pub(crate) fn set_mirror_slot(&mut self, agent_id: u32, slot: Option<u32>) {
        if let Some(outbox) = self.rings.get_mut(&agent_id) {
            outbox.mirror_slot = slot;
            outbox.mirror_dirty = true;
        }
    }

    /// Notes that frames were deferred for `agent_id`: its slot shows it at the next publish.
    pub(crate) fn note_deferred(&mut self, agent_id: u32) {
        if let Some((_, outbox)) = self.local_ring(agent_id) {
            outbox.mirror_dirty = true;
        }
    }

    /// Served here or by another shard.
    pub(crate) fn contains(&self, agent_id: u32) -> bool {
        self.is_local(agent_id) || self.remote.contains_key(&agent_id)
    }

    /// Served by this shard.
    pub(crate) fn is_local(&self, agent_id: u32) -> bool {
        self.rings.contains_key(&agent_id) || self.aliases.contains_key(&agent_id)
    }

    /// How many of `targets` go over the same link as `agent_id` (1 for a local agent).
    pub(crate) fn copies_via_same_link(&self, agent_id: u32, targets: &[u32]) -> usize {
        match self.remote.get(&agent_id) {
            None => 1,
            Some(r) => targets
                .iter()
                .filter(|t| self.remote.get(t).is_some_and(|o| o.shard == r.shard))
                .count(),
        }
    }

    pub(crate) fn occupied_bytes(&mut self, agent_id: u32) -> usize {
        if let Some((_, o)) = self.local_ring(agent_id) {
            return o.producer.occupied_bytes();
        }
        match self.remote.get(&agent_id) {
            // SYNC POINT: congested (the Release stores in `Deferrals`).
            Some(r) if r.congested.load(Ordering::Acquire) => usize::MAX - 1,
            Some(r) => r.rx.occupied_bytes(),
            None => usize::MAX,
        }
    }

    /// Whether `copies` frames of `len_bytes` for the agent can be written now.
    pub(crate) fn can_claim_copies(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        copies: usize,
    ) -> bool {
        let owner = self.owner(agent_id);
        let corrupt_rx = &mut self.corrupt_rx;
        if let Some(o) = self.rings.get_mut(&owner) {
            if o.producer.can_claim(len_bytes) {
                return true;
            }
            o.note_if_corrupt(owner, corrupt_rx);
            return false;
        }
        let Some(remote) = self.remote.get(&agent_id) else {
            return false;
        };
        let Some(Some(link)) = self.links.get_mut(remote.shard) else {
            return false;
        };
        // Room first (an acquire of the receiver's head), then the flag: a flag set before
        // the room we were granted is seen.
        // SYNC POINT: congested (the Release stores in `Deferrals`).
        link.can_take_copies(len_bytes, copies) && !remote.congested.load(Ordering::Acquire)
    }

    /// Whether a reply of `len_bytes` for `agent_id` would be placed now (its ring, or its
    /// shard's link whatever the agent's congestion: replies ignore it). True for an
    /// unknown agent (its reply is dropped and counted anyway).
    pub(crate) fn can_reply(&mut self, agent_id: u32, len_bytes: usize) -> bool {
        if let Some((_, o)) = self.local_ring(agent_id) {
            return o.producer.can_claim(len_bytes);
        }
        let Some(remote) = self.remote.get(&agent_id) else {
            return true;
        };
        match self.links.get_mut(remote.shard) {
            Some(Some(link)) => link.can_take_copies(len_bytes, 1),
            _ => true,
        }
    }

    pub(crate) fn can_claim(&mut self, agent_id: u32, len_bytes: usize) -> bool {
        self.can_claim_copies(agent_id, len_bytes, 1)
    }

    /// Claims `len_bytes` in the agent's rx ring (or its shard's link), lets `fill` write
    /// the frame, commits it for the next [`Outboxes::publish`]. False if there is no such
    /// agent or no room.
    pub(crate) fn write(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.write_flagged(agent_id, len_bytes, LinkFlags::NONE, fill) != Placed::Refused
    }

    /// Writes a frame for an agent this shard serves if its ring has room (true), in one map
    /// lookup; false (nothing written) for another shard's agent, an unknown one, or a full
    /// ring.
    #[inline]
    pub(crate) fn deliver_local(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let owner = self.owner(agent_id);
        let dirty = &mut self.dirty;
        let Some(outbox) = self.rings.get_mut(&owner) else {
            return false;
        };
        if outbox.commit(owner, len_bytes, dirty, fill) {
            return true;
        }
        outbox.note_if_corrupt(owner, &mut self.corrupt_rx);
        false
    }

    /// [`Outboxes::write`] that says where the frame went, with `link_flags` for the record
    /// when the agent is another shard's (what that shard must do besides delivering;
    /// ignored for this shard's own agents). One map lookup for a local agent.
    pub(crate) fn write_flagged(
        &mut self,
        agent_id: u32,
        len_bytes: usize,
        link_flags: LinkFlags,
        fill: impl FnOnce(&mut [u8]),
    ) -> Placed {
        let owner = self.owner(agent_id);
        let Some(outbox) = self.rings.get_mut(&owner) else {
            let Some(remote) = self.remote.get(&agent_id) else {
                return Placed::Refused;
            };
            let Some(Some(link)) = self.links.get_mut(remote.shard) else {
                return Placed::Refused;
            };
            // Congestion was checked by the caller (`can_claim_copies`) when the copy was
            // routed; replies ignore it (small, best effort, budgeted anyway).
            if !link.can_take_copies(len_bytes, 1)
                || !link.write(agent_id, link_flags, len_bytes, fill)
            {
                return Placed::Refused;
            }
            self.links_dirty = true;
            return Placed::Forwarded;
        };
        if outbox.commit(owner, len_bytes, &mut self.dirty, fill) {
            Placed::Delivered
        } else {
            outbox.note_if_corrupt(owner, &mut self.corrupt_rx);
            Placed::Refused
        }
    }

    /// Publishes every ring and link written since the last call.
    pub(crate) fn publish(&mut self) {
        for agent_id in self.dirty.drain(..) {
            if let Some(outbox) = self.rings.get_mut(&agent_id) {
                outbox.dirty = false;
                let (wakes, wake_ns) = (outbox.producer.wakeups(), outbox.producer.wake_ns());
                outbox.producer.publish();
                let woke = outbox.producer.wakeups() - wakes;
                if woke > 0 {
                    self.wakes += woke;
                    self.wake_ns += outbox.producer.wake_ns() - wake_ns;
                }
            }
        }
        if self.links_dirty {
            self.links_dirty = false;
            for link in self.links.iter_mut().flatten() {
                link.publish();
            }
        }
    }
}
