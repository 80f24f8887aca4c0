//! The registry: every admitted agent with its name, capabilities, topics and features,
//! behind a mutex on the control path only, with the discovery cache.

use crate::config::DISCOVERY_CACHE_ENTRIES_MAX;
use agentwire_shm::control::AgentInfo;
use agentwire_shm::segment::Segment;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) agents: HashMap<u32, AgentRecord>,
    pub(crate) topics: HashMap<String, u32>,
    pub(crate) capability_routes: Vec<(String, semver::VersionReq)>,
    pub(crate) generation: u64,
    /// Discovery answers by (capability, requirement), dropped on every change of who is
    /// registered or live ([`Registry::invalidate`]).
    pub(crate) discovery: HashMap<(String, String), Vec<AgentInfo>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentRecord {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) capabilities: Vec<(String, semver::Version)>,
    pub(crate) topics: Vec<u32>,
    /// Feature ids it serves (feature routes).
    pub(crate) features: Vec<u32>,
    /// Its heartbeat and rings stood still past the liveness timeout: kept out of anycast,
    /// feature routes and discovery until it shows life again.
    pub(crate) stale: bool,
    /// For ring-occupancy gauges in status reports.
    pub(crate) segment: Segment,
    /// The shard serving its rings.
    pub(crate) shard: usize,
    /// The gateway endpoint it stands behind (a remote agent: its frames go through the
    /// gateway's rings), or `None` for an endpoint with rings of its own.
    pub(crate) via: Option<u32>,
    /// Set by its shard while frames wait in its deferral: other shards then stop
    /// forwarding to it and defer on their side ([`links`]).
    pub(crate) congested: Arc<AtomicBool>,
}

/// Where a new registry entry's rings are and who it is, besides its registration.
pub(crate) struct Placement {
    pub(crate) pid: u32,
    pub(crate) segment: Segment,
    pub(crate) shard: usize,
    pub(crate) via: Option<u32>,
    pub(crate) congested: Arc<AtomicBool>,
}

impl Registry {
    /// Enters agent `agent_id` with `registration` (topics resolved to ids, capabilities
    /// whose version parses); returns its topics' ids. The caller bumps the generation.
    pub(crate) fn enter(
        &mut self,
        agent_id: u32,
        registration: &agentwire_shm::control::Registration,
        placement: Placement,
    ) -> Vec<u32> {
        let topic_ids: Vec<u32> = registration
            .topics
            .iter()
            .map(|t| self.topic_id(t))
            .collect();
        let capabilities = registration
            .capabilities
            .iter()
            .filter_map(|c| Some((c.name.clone(), semver::Version::parse(&c.version).ok()?)))
            .collect();
        let record = AgentRecord {
            name: registration.name.clone(),
            pid: placement.pid,
            capabilities,
            topics: topic_ids.clone(),
            features: registration.features.clone(),
            stale: false,
            segment: placement.segment,
            shard: placement.shard,
            via: placement.via,
            congested: placement.congested,
        };
        self.agents.insert(agent_id, record);
        self.invalidate();
        topic_ids
    }

    /// Forgets cached discovery answers: call in the same critical section as any change
    /// to the agents, their capabilities or their liveness.
    pub(crate) fn invalidate(&mut self) {
        self.discovery.clear();
    }

    /// Live agents offering `capability` at a version satisfying `requirement`, from the
    /// cache when the same question was answered since the last change. Returns the answer
    /// and whether it came from the cache.
    pub(crate) fn discover(
        &mut self,
        capability: &str,
        requirement: &str,
    ) -> Result<(Vec<AgentInfo>, bool), String> {
        let key = (capability.to_string(), requirement.to_string());
        if let Some(hit) = self.discovery.get(&key) {
            return Ok((hit.clone(), true));
        }
        let req = semver::VersionReq::parse(requirement)
            .map_err(|e| format!("requirement {requirement:?}: {e}"))?;
        let answer = self.matching(capability, &req);
        // Bounded: distinct questions asked between two registry changes.
        if self.discovery.len() >= DISCOVERY_CACHE_ENTRIES_MAX {
            self.discovery.clear();
        }
        self.discovery.insert(key, answer.clone());
        Ok((answer, false))
    }

    pub(crate) fn topic_id(&mut self, topic: &str) -> u32 {
        let next = self.topics.len() as u32 + 1;
        *self.topics.entry(topic.to_string()).or_insert(next)
    }

    pub(crate) fn matching(
        &self,
        capability: &str,
        requirement: &semver::VersionReq,
    ) -> Vec<AgentInfo> {
        let mut out: Vec<AgentInfo> = self
            .agents
            .iter()
            .filter(|(_, rec)| !rec.stale)
            .filter_map(|(&id, rec)| {
                rec.capabilities
                    .iter()
                    .find(|(name, version)| name == capability && requirement.matches(version))
                    .map(|(_, version)| AgentInfo {
                        agent_id: id,
                        name: rec.name.clone(),
                        version: version.to_string(),
                    })
            })
            .collect();
        out.sort_by_key(|a| a.agent_id);
        out
    }

    /// Every feature id some registered agent serves, in order.
    pub(crate) fn features(&self) -> std::collections::BTreeSet<u32> {
        self.agents
            .values()
            .flat_map(|rec| rec.features.iter().copied())
            .collect()
    }

    /// Live agents serving `feature`, by id.
    pub(crate) fn serving(&self, feature: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .agents
            .iter()
            .filter(|(_, rec)| !rec.stale && rec.features.contains(&feature))
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        out
    }
}
