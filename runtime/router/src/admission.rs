//! Admission of an agent that passed the handshake: its segment (rings of the size it asked
//! for, within limits), doorbells and deferral, its registry entry, the `Add` command to the
//! shard that will serve it, and the `Registered` answer carrying the descriptors.

use crate::commands::{CommandSender, NewAgent, RouterCmd};
use crate::config::RouterConfig;
use crate::deferral::Deferral;
use crate::placement;
use crate::registry::Placement;
use crate::shared::{bump, forget_agent, Shared};
use agentwire_shm::control::{ControlConn, PeerCredentials, Registration, ServerMsg};
use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::ring::{check_capacity, Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig, TX_LANES};
use rustix::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Why an agent that passed the handshake was not admitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmitError {
    /// It asked for rings the router does not make; it is told so.
    #[error("{0}")]
    Refused(String),
    /// The router could not set it up (memory, descriptors) or the answer failed.
    #[error("{0}")]
    Failed(String),
}

/// The ring capacity for an agent that asked for `requested` bytes (0: the default).
pub(crate) fn ring_capacity(config: &RouterConfig, requested: u32) -> Result<usize, String> {
    if requested == 0 {
        return Ok(config.ring_capacity_bytes);
    }
    let bytes = requested as usize;
    let within = (config.ring_capacity_min_bytes..=config.ring_capacity_max_bytes).contains(&bytes);
    if !within || check_capacity(bytes).is_err() {
        return Err(format!(
            "ring capacity {bytes} bytes: this daemon makes rings of a power of two from {} to \
             {} bytes",
            config.ring_capacity_min_bytes, config.ring_capacity_max_bytes
        ));
    }
    Ok(bytes)
}

/// The shard for a new agent from `peer`: the least loaded, preferring its NUMA node.
pub(crate) fn choose_shard(config: &RouterConfig, per_shard: &[usize], peer: u32) -> usize {
    let agent_node = if per_shard.len() > 1 {
        placement::process_numa_node(peer)
    } else {
        None
    };
    placement::choose_shard(per_shard, &config.shard_numa_nodes, agent_node)
}

/// An admitted endpoint's rings, as its owner sees them: the segment, the end of the tx
/// bell it rings and the end of the rx bell it waits on. The router keeps the other ends
/// (separate open file descriptions: see [`Doorbell::pipe`]).
pub(crate) struct Rings {
    pub(crate) segment: Segment,
    pub(crate) tx_bell: Doorbell,
    pub(crate) rx_bell: Doorbell,
    pub(crate) topic_ids: Vec<u32>,
}

/// What admitting one agent needs.
pub(crate) struct Admission<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) config: &'a RouterConfig,
    pub(crate) cmds: &'a CommandSender,
    pub(crate) agent_id: u32,
    pub(crate) shard: usize,
}

impl Admission<'_> {
    /// Sets the agent up and answers `Registered` on `conn`. On error nothing of it is left
    /// registered (the shard is told to drop it if it was told to add it).
    pub(crate) fn admit(
        &self,
        conn: &ControlConn,
        peer: &PeerCredentials,
        registration: &Registration,
    ) -> Result<(), AdmitError> {
        let failed = |e: &dyn std::fmt::Display| AdmitError::Failed(e.to_string());
        let rings = self.set_up(peer.pid, Some(*peer), registration)?;
        let answered = rings
            .segment
            .try_clone_fd()
            .map_err(|e| failed(&e))
            .and_then(|fd| {
                let msg = ServerMsg::Registered {
                    agent_id: self.agent_id,
                    topic_ids: rings.topic_ids.clone(),
                };
                let fds = [fd.as_fd(), rings.tx_bell.as_fd(), rings.rx_bell.as_fd()];
                conn.send(&msg, &fds).map_err(|e| failed(&e))
            });
        if let Err(e) = answered {
            self.undo();
            return Err(e);
        }
        Ok(())
    }

    /// Sets up an endpoint's rings, registry entry and shard, and returns its rings: the
    /// agent side of the segment and both doorbells (for a socket agent, sent over its
    /// connection; for an in-process endpoint, handed over directly). `peer`: who the kernel
    /// says connected (`None` for an endpoint of the daemon's own).
    pub(crate) fn set_up(
        &self,
        pid: u32,
        peer: Option<PeerCredentials>,
        registration: &Registration,
    ) -> Result<Rings, AdmitError> {
        let capacity = ring_capacity(self.config, registration.ring_capacity_bytes)
            .map_err(AdmitError::Refused)?;
        let failed = |e: &dyn std::fmt::Display| AdmitError::Failed(e.to_string());
        let segment = Segment::create(
            &SegmentConfig::new(self.agent_id)
                .with_capacity(capacity, capacity)
                .huge_pages(HugePages::Auto),
        )
        .map_err(|e| failed(&e))?;
        // Pipes, not eventfds: the agent gets its own ends, so nothing it does to them can
        // make the router's ring of its rx bell, or its drain of the tx bell, block.
        let (tx_bell, router_tx_bell) = Doorbell::pipe().map_err(|e| failed(&e))?;
        // An endpoint of the daemon's own (no peer) gets a socket pair for its rx bell, so an
        // async executor can await it as a stream (the network transport's connections).
        let (router_rx_bell, rx_bell) = match peer {
            Some(_) => Doorbell::pipe(),
            None => Doorbell::socket_pair(),
        }
        .map_err(|e| failed(&e))?;
        let congested = Arc::new(AtomicBool::new(false));
        let new_agent = self
            .new_agent(
                &segment,
                router_tx_bell,
                router_rx_bell,
                congested.clone(),
                &registration.name,
            )
            .map_err(|e| failed(&e))?;
        let topic_ids = self
            .register(pid, peer, registration, &segment, congested)
            .map_err(AdmitError::Refused)?;
        // Queue the agent for its shard before it learns its id, so any frame naming this id
        // is written after the shard could know it.
        if self
            .cmds
            .try_send(RouterCmd::Add(Box::new(new_agent)))
            .is_err()
        {
            forget_agent(self.shared, self.agent_id);
            return Err(AdmitError::Failed(
                "its shard's command queue is full".into(),
            ));
        }
        bump(self.shared);
        Ok(Rings {
            segment,
            tx_bell,
            rx_bell,
            topic_ids,
        })
    }

    /// Takes back what [`Admission::set_up`] did, for an endpoint that never started.
    pub(crate) fn undo(&self) {
        forget_agent(self.shared, self.agent_id);
        // The shard drops what it was given; if its queue is full the control loop's removal
        // of this id (it never became a session) has nothing left to undo.
        let _ = self.cmds.try_send(RouterCmd::Remove {
            agent_id: self.agent_id,
        });
    }

    /// The shard's view of the agent: a consumer per tx lane, the rx producer, its deferral
    /// (made here so the routing core never maps memory), its name as mirror slot words.
    fn new_agent(
        &self,
        segment: &Segment,
        tx_bell: Doorbell,
        rx_bell: Doorbell,
        congested: Arc<AtomicBool>,
        name: &str,
    ) -> std::io::Result<NewAgent> {
        // The router parks on lane 0's bell alone (the agent rings one bell for every lane),
        // so the other lanes hold none: three descriptors fewer per agent.
        let mut tx = Vec::with_capacity(TX_LANES);
        tx.push(Consumer::new(segment.tx_lane_memory(0), Some(tx_bell)));
        tx.extend((1..TX_LANES).map(|lane| Consumer::new(segment.tx_lane_memory(lane), None)));
        let deferral = match self.config.defer_capacity_bytes {
            0 => None,
            bytes => Some(Deferral::new(bytes).map_err(std::io::Error::other)?),
        };
        Ok(NewAgent {
            agent_id: self.agent_id,
            congested,
            tx,
            // Agents park often on their rx ring: fenced, so they never interrupt this
            // router's core with a membarrier when they sleep.
            rx: Producer::new_fenced(segment.rx_memory(), Some(rx_bell)),
            segment: segment.clone(),
            deferral,
            name: crate::agent_mirror::pack_name(name),
        })
    }

    /// Enters the agent in the registry; returns its topics' ids.
    fn register(
        &self,
        pid: u32,
        peer: Option<PeerCredentials>,
        registration: &Registration,
        segment: &Segment,
        congested: Arc<AtomicBool>,
    ) -> Result<Vec<u32>, String> {
        let placement = Placement {
            pid,
            peer,
            segment: segment.clone(),
            shard: self.shard,
            via: None,
            send_rule: None,
            congested,
        };
        let mut reg = self.shared.registry.lock().expect("registry lock");
        reg.enter(self.agent_id, registration, placement)
    }
}
