//! Status reports for `agentwire status` and the metrics endpoint, and [`RouterObserver`].

use crate::registry::AgentRecord;
use crate::shared::Shared;
use agentwire_shm::control::{AgentStatus, RouteStatus, StatusReport};
use agentwire_shm::segment::TX_LANES;
use std::sync::Arc;

/// Every shard's counters added up (gauges too: their sum is the router's).
pub(crate) fn summed_counters(shared: &Shared) -> Vec<(String, u64)> {
    let mut sum = shared.stats[0].snapshot();
    for stats in &shared.stats[1..] {
        for ((_, total), (_, v)) in sum.iter_mut().zip(stats.snapshot()) {
            *total += v;
        }
    }
    sum
}

/// The router's counters and live agents, for `agentwire status`.
/// One agent as `agentwire agents` shows it.
fn agent_status(agent_id: u32, rec: &AgentRecord) -> AgentStatus {
    AgentStatus {
        agent_id,
        name: rec.name.clone(),
        pid: rec.pid,
        capabilities: rec
            .capabilities
            .iter()
            .map(|(n, v)| format!("{n}@{v}"))
            .collect(),
        topics: rec.topics.clone(),
        features: rec.features.clone(),
        live: !rec.stale,
        shard: rec.shard as u32,
        tx_occupied_bytes: (0..TX_LANES)
            .map(|lane| rec.segment.tx_lane_memory(lane).occupied_bytes() as u64)
            .sum(),
        rx_occupied_bytes: rec.segment.rx_memory().occupied_bytes() as u64,
        ring_capacity_bytes: rec.segment.rx_memory().capacity_bytes() as u64,
    }
}

/// The next `limit` agents with ids above `after`, in id order (a status page).
pub(crate) fn agent_page(shared: &Shared, after: u32, limit: usize) -> Vec<AgentStatus> {
    let reg = shared.registry.lock().expect("registry lock");
    let mut ids: Vec<u32> = reg
        .agents
        .keys()
        .copied()
        .filter(|&id| id > after)
        .collect();
    ids.sort_unstable();
    ids.truncate(limit);
    ids.iter()
        .map(|id| agent_status(*id, &reg.agents[id]))
        .collect()
}

pub(crate) fn status_report(shared: &Shared) -> StatusReport {
    let counters = summed_counters(shared);
    let reg = shared.registry.lock().expect("registry lock");
    let mut agents: Vec<AgentStatus> = reg
        .agents
        .iter()
        .map(|(&agent_id, rec)| agent_status(agent_id, rec))
        .collect();
    agents.sort_by_key(|a| a.agent_id);
    let mut routes: Vec<RouteStatus> = reg
        .topics
        .iter()
        .map(|(name, &topic_id)| {
            let mut subscribers: Vec<u32> = reg
                .agents
                .iter()
                .filter(|(_, rec)| rec.topics.contains(&topic_id))
                .map(|(&id, _)| id)
                .collect();
            subscribers.sort_unstable();
            RouteStatus {
                kind: "topic".into(),
                route_id: topic_id,
                name: name.clone(),
                requirement: String::new(),
                agents: subscribers,
            }
        })
        .collect();
    routes.sort_by_key(|r| r.route_id);
    routes.extend(
        reg.capability_routes
            .iter()
            .enumerate()
            .map(|(route_id, (capability, req))| RouteStatus {
                kind: "capability".into(),
                route_id: route_id as u32,
                name: capability.clone(),
                requirement: req.to_string(),
                agents: reg
                    .matching(capability, req)
                    .into_iter()
                    .map(|a| a.agent_id)
                    .collect(),
            }),
    );
    routes.extend(reg.features().into_iter().map(|feature| RouteStatus {
        kind: "feature".into(),
        route_id: feature,
        name: format!("feature {feature}"),
        requirement: String::new(),
        agents: reg.serving(feature),
    }));
    let mut report = StatusReport {
        daemon: format!("agentwire {}", env!("CARGO_PKG_VERSION")),
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs(),
        counters,
        agents_total: agents.len() as u32,
        agents,
        routes,
        info: shared.info.lock().expect("info lock").clone(),
        shards: shared
            .stats
            .iter()
            .enumerate()
            .map(|(shard, stats)| agentwire_shm::control::ShardStatus {
                shard: shard as u32,
                agents: reg.agents.values().filter(|r| r.shard == shard).count() as u32,
                counters: stats.snapshot(),
            })
            .collect(),
        partitions: Vec::new(),
        core_moves: Vec::new(),
    };
    drop(reg);
    if let Some(hook) = shared
        .status_hook
        .lock()
        .expect("status hook lock")
        .as_ref()
    {
        hook(&mut report);
    }
    report
}

/// A read-only view of a running router for other threads (the metrics endpoint): counters
/// and the same report `agentwire status` gets.
#[derive(Clone)]
pub struct RouterObserver {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for RouterObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterObserver").finish_non_exhaustive()
    }
}

impl RouterObserver {
    /// The router's counters by name.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obs-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.observer().counters().iter().any(|(n, _)| n == "frames_in"));
    /// ```
    pub fn counters(&self) -> Vec<(String, u64)> {
        summed_counters(&self.shared)
    }

    /// The full status report (counters, agents with ring occupancy, routes, info).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obs2-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.observer().status().agents.is_empty());
    /// ```
    pub fn status(&self) -> StatusReport {
        status_report(&self.shared)
    }
}
