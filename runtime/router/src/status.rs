//! Status reports for `agentwire status` and the metrics endpoint, and [`RouterObserver`].

use crate::registry::{AgentRecord, Registry};
use crate::shared::Shared;
use agentwire_shm::control::{
    AgentStatus, RouteStatus, StatusReport, ROUTE_AGENTS_LISTED_MAX, STATUS_AGENTS_PER_MESSAGE,
    STATUS_PAGE_BYTES_MAX, STATUS_ROUTES_PER_MESSAGE,
};
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

/// What an agent's entry adds to a status message, estimated from its strings and lists.
fn agent_bytes(a: &AgentStatus) -> usize {
    96 + a.name.len()
        + a.capabilities.iter().map(|c| c.len() + 8).sum::<usize>()
        + 4 * (a.topics.len() + a.features.len())
}

/// What a route's entry adds to a status message.
fn route_bytes(r: &RouteStatus) -> usize {
    64 + r.kind.len() + r.name.len() + r.requirement.len() + 4 * r.agents.len()
}

/// Items from `items` while they fit `count_max` and `bytes_max` (at least one if any).
fn take_page<T>(
    items: impl Iterator<Item = T>,
    count_max: usize,
    bytes_max: usize,
    size: fn(&T) -> usize,
) -> Vec<T> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for item in items.take(count_max) {
        bytes += size(&item);
        if bytes > bytes_max && !page.is_empty() {
            break;
        }
        page.push(item);
    }
    page
}

/// The agents with ids above `after`, in id order, as many as fit one status page.
pub(crate) fn agent_page(shared: &Shared, after: u32) -> Vec<AgentStatus> {
    let reg = shared.registry.lock().expect("registry lock");
    agents_from(
        &reg,
        after,
        STATUS_AGENTS_PER_MESSAGE,
        STATUS_PAGE_BYTES_MAX,
    )
}

fn agents_from(reg: &Registry, after: u32, count_max: usize, bytes_max: usize) -> Vec<AgentStatus> {
    let mut ids: Vec<u32> = reg
        .agents
        .keys()
        .copied()
        .filter(|&id| id > after)
        .collect();
    ids.sort_unstable();
    let entries = ids.iter().map(|id| agent_status(*id, &reg.agents[id]));
    take_page(entries, count_max, bytes_max, agent_bytes)
}

/// The routes past the first `skip` (topics by id, then capability routes by id, then
/// features), as many as fit one status page.
pub(crate) fn route_page(shared: &Shared, skip: usize) -> Vec<RouteStatus> {
    let reg = shared.registry.lock().expect("registry lock");
    routes_from(&reg, skip, STATUS_ROUTES_PER_MESSAGE, STATUS_PAGE_BYTES_MAX)
}

/// How many routes a status report has.
fn routes_total(reg: &Registry) -> usize {
    reg.topic_entries.len() + reg.capability_routes.len() + reg.features().len()
}

/// A route's agents: the first [`ROUTE_AGENTS_LISTED_MAX`] of `all` (sorted) and the count.
fn listed(mut all: Vec<u32>) -> (Vec<u32>, u32) {
    all.sort_unstable();
    let total = all.len() as u32;
    all.truncate(ROUTE_AGENTS_LISTED_MAX);
    (all, total)
}

/// Routes in report order from position `skip`; only those in the page are computed.
fn routes_from(
    reg: &Registry,
    skip: usize,
    count_max: usize,
    bytes_max: usize,
) -> Vec<RouteStatus> {
    let mut topic_ids: Vec<u32> = reg.topic_entries.keys().copied().collect();
    topic_ids.sort_unstable();
    let capabilities = reg.capability_routes.len();
    let features: Vec<u32> = reg.features().into_iter().collect();
    let total = topic_ids.len() + capabilities + features.len();
    let positions = skip.min(total)..total.min(skip.saturating_add(count_max));
    // Subscribers of the topics in this page only, in one pass over the subscriptions.
    let page_topics: std::collections::HashSet<u32> = positions
        .clone()
        .filter(|&p| p < topic_ids.len())
        .map(|p| topic_ids[p])
        .collect();
    let mut subscribers: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if !page_topics.is_empty() {
        for (&id, rec) in &reg.agents {
            for topic in rec.topics.iter().filter(|t| page_topics.contains(t)) {
                subscribers.entry(*topic).or_default().push(id);
            }
        }
    }
    // Takes each page topic's subscriber list out of `subscribers` as it builds the route.
    let mut route = |p: usize| -> RouteStatus {
        if p < topic_ids.len() {
            let topic_id = topic_ids[p];
            let (agents, agents_total) = listed(subscribers.remove(&topic_id).unwrap_or_default());
            return RouteStatus {
                kind: "topic".into(),
                route_id: topic_id,
                name: reg.topic_entries[&topic_id].name.clone(),
                requirement: String::new(),
                agents,
                agents_total,
            };
        }
        let p = p - topic_ids.len();
        if p < capabilities {
            let (capability, req) = &reg.capability_routes[p];
            let matching = reg
                .matching(capability, req)
                .into_iter()
                .map(|a| a.agent_id);
            let (agents, agents_total) = listed(matching.collect());
            return RouteStatus {
                kind: "capability".into(),
                route_id: p as u32,
                name: capability.clone(),
                requirement: req.to_string(),
                agents,
                agents_total,
            };
        }
        let feature = features[p - capabilities];
        let (agents, agents_total) = listed(reg.serving(feature));
        RouteStatus {
            kind: "feature".into(),
            route_id: feature,
            name: format!("feature {feature}"),
            requirement: String::new(),
            agents,
            agents_total,
        }
    };
    take_page(positions.map(&mut route), count_max, bytes_max, route_bytes)
}

/// The first page of a status report: counters, info and shards whole; agents and routes
/// as many as fit a page, with their totals (the rest come with `StatusAgents` and
/// `StatusRoutes`).
pub(crate) fn status_first_page(shared: &Shared) -> StatusReport {
    build_report(
        shared,
        (STATUS_AGENTS_PER_MESSAGE, STATUS_PAGE_BYTES_MAX),
        (STATUS_ROUTES_PER_MESSAGE, STATUS_PAGE_BYTES_MAX),
    )
}

/// The whole report, for in-process readers (no message size to keep under).
pub(crate) fn status_report(shared: &Shared) -> StatusReport {
    build_report(shared, (usize::MAX, usize::MAX), (usize::MAX, usize::MAX))
}

fn build_report(
    shared: &Shared,
    (agents_max, agent_bytes_max): (usize, usize),
    (routes_max, route_bytes_max): (usize, usize),
) -> StatusReport {
    let counters = summed_counters(shared);
    let reg = shared.registry.lock().expect("registry lock");
    let agents = agents_from(&reg, 0, agents_max, agent_bytes_max);
    let routes = routes_from(&reg, 0, routes_max, route_bytes_max);
    let mut report = StatusReport {
        daemon: format!("agentwire {}", env!("CARGO_PKG_VERSION")),
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs(),
        counters,
        agents_total: reg.agents.len() as u32,
        agents,
        routes_total: routes_total(&reg) as u32,
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

    /// One counter by the name [`RouterObserver::counters`] lists it under, summed over the
    /// shards (`None` for a name it does not list).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obs1-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.observer().counter("frames_in"), Some(0));
    /// assert_eq!(control.observer().counter("no such counter"), None);
    /// ```
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters()
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// Registered agents and endpoints now (what `agentwire status` counts, without building
    /// its report).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-obsac-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.observer().agent_count(), 0);
    /// ```
    pub fn agent_count(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .agents
            .len()
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
