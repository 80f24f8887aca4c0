//! What the control side and every routing core share: the registry, the counters, the
//! shutdown flag and each shard's wake.

use crate::control::StatusHook;
use crate::endpoint::EndpointRequest;
use crate::heartbeat::ShardBeat;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::server::AllowList;
use crate::stats::RouterStats;
use crate::wake::ShardWake;
use agentwire_shm::doorbell::Doorbell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct Shared {
    /// A new allow-list and policy for the control loop (SIGHUP reload).
    pub(crate) reloaded: Mutex<Option<(AllowList, Policy)>>,
    /// The deferral deadline in ns (`u64::MAX`: none); re-read by the core when the
    /// registry generation changes.
    pub(crate) defer_deadline_ns: AtomicU64,
    /// Facts the embedding daemon adds to status reports (metrics address, DLQ path...).
    pub(crate) info: Mutex<Vec<(String, String)>>,
    /// Fills the parts of a status report the embedding daemon owns (partitions, moves).
    pub(crate) status_hook: Mutex<Option<StatusHook>>,
    pub(crate) started: std::time::Instant,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) generation: AtomicU64,
    /// One set per shard (the control loop's counters live in shard 0's).
    pub(crate) stats: Box<[RouterStats]>,
    /// Per shard: its last duty cycle moved nothing and its links were empty (the shutdown
    /// drain ends when every shard is quiet).
    pub(crate) quiet: Box<[AtomicBool]>,
    /// Per shard, at shutdown: nothing left in its agents' lanes, its deferrals or its
    /// links (the settling ends when every shard is settled).
    pub(crate) settled: Box<[AtomicBool]>,
    /// Routing cores that ran at least one duty cycle, and those that finished (marked
    /// their segments closed): the control loop keeps connections open at shutdown until
    /// every started core finished.
    pub(crate) cores_started: std::sync::atomic::AtomicUsize,
    pub(crate) cores_finished: std::sync::atomic::AtomicUsize,
    /// Shards that finished draining (after which no shard writes to a link).
    pub(crate) finished: std::sync::atomic::AtomicUsize,
    pub(crate) shutdown: AtomicBool,
    /// Rung to wake the control loop (shutdown, reload, endpoint requests).
    pub(crate) control_wake: Doorbell,
    /// In-process endpoint requests for the control loop (bounded by
    /// [`crate::endpoint::ENDPOINT_REQUESTS_MAX`]).
    pub(crate) endpoint_requests: Mutex<Vec<EndpointRequest>>,
    /// Agents a routing core asks the control loop to remove fully (registry,
    /// connection), and why. Pushed once per agent and reason, so bounded by the agents
    /// registered.
    pub(crate) removals_requested: Mutex<Vec<(u32, Removal)>>,
    /// Per shard: how other threads wake its core when it is parked ([`wake`]).
    pub(crate) wakes: Box<[Arc<ShardWake>]>,
    /// Per shard: its duty-cycle count and nudge flag, for a service watchdog
    /// ([`crate::heartbeat`]).
    pub(crate) beats: Box<[ShardBeat]>,
}

/// Why a routing core asks for an agent's removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// One of its rings failed validation (the shard dropped it already).
    CorruptRing,
    /// A subscriber that missed `slow_subscriber_evict_copies` copies in a row.
    SlowSubscriber,
}

impl Shared {
    /// Asks the control loop to remove `agent_id` fully, and wakes it.
    pub(crate) fn request_removal(&self, agent_id: u32, why: Removal) {
        self.removals_requested
            .lock()
            .expect("removals lock")
            .push((agent_id, why));
        self.control_wake.ring();
    }
}

pub(crate) fn bump(shared: &Shared) {
    let mut reg = shared.registry.lock().expect("registry lock");
    reg.generation += 1;
    // SYNC POINT: registry generation. Publishes the registry changes made under the lock;
    // pairs with the Acquire loads in `RoutingCore::refresh_tables` and `route_frame`.
    shared.generation.store(reg.generation, Ordering::Release);
}

/// Removes an agent from the registry and tells the routing thread its tables changed.
pub(crate) fn forget_agent(shared: &Shared, agent_id: u32) {
    {
        let mut reg = shared.registry.lock().expect("registry lock");
        reg.release(agent_id);
    }
    bump(shared);
}
