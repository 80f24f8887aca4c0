//! The registry: every admitted agent with its name, capabilities, topics and features,
//! behind a mutex on the control path only, with the discovery cache.

use crate::config::DISCOVERY_CACHE_ENTRIES_MAX;
use crate::limits;
use crate::policy::Policy;
use agentwire_shm::control::{AgentInfo, PeerCredentials};
use agentwire_shm::segment::Segment;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) agents: HashMap<u32, AgentRecord>,
    /// Topic ids by name, for topics some live agent holds (subscribed or resolved).
    pub(crate) topics: HashMap<String, u32>,
    /// Each held topic's name and how many agents hold it; freed at zero.
    pub(crate) topic_entries: HashMap<u32, TopicEntry>,
    /// The last topic id given out: ids are never reused, so a publisher's old id can never
    /// name another topic.
    pub(crate) last_topic_id: u32,
    pub(crate) capability_routes: Vec<(String, semver::VersionReq)>,
    pub(crate) generation: u64,
    /// Discovery answers by (capability, requirement), dropped on every change of who is
    /// registered or live ([`Registry::invalidate`]).
    pub(crate) discovery: HashMap<(String, String), Vec<AgentInfo>>,
    /// The authorization policy the shards build their send rights from (replaced on
    /// reload, with a generation bump).
    pub(crate) policy: Arc<Policy>,
    /// The uids of agents that left, most recent last (at most
    /// [`DEPARTED_OWNERS_MAX`]), so that their frames still held (deferred, or on a link)
    /// are charged to their uid when they are dead-lettered.
    pub(crate) departed_owners: DepartedOwners,
}

/// How many departed agents' uids the registry remembers (see [`Registry::owner_of`]).
pub(crate) const DEPARTED_OWNERS_MAX: usize = 4096;

/// The uids of agents that left, bounded: the oldest is forgotten first.
#[derive(Debug, Default)]
pub(crate) struct DepartedOwners {
    uid_of: rustc_hash::FxHashMap<u32, u32>,
    order: std::collections::VecDeque<u32>,
}

impl DepartedOwners {
    fn remember(&mut self, agent_id: u32, uid: u32) {
        if self.order.len() == DEPARTED_OWNERS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.uid_of.remove(&oldest);
            }
        }
        self.uid_of.insert(agent_id, uid);
        self.order.push_back(agent_id);
    }
}

/// A topic some live agent holds.
#[derive(Debug, Clone)]
pub(crate) struct TopicEntry {
    pub(crate) name: String,
    /// Agents holding it (subscribed, or resolved it to publish).
    pub(crate) holders: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentRecord {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Who the kernel says connected (an agent with rings of its own), or `None` (an
    /// in-process endpoint, an agent behind a gateway): the identity the policy restricts.
    pub(crate) peer: Option<PeerCredentials>,
    pub(crate) capabilities: Vec<(String, semver::Version)>,
    /// Topics it subscribes to (ids).
    pub(crate) topics: Vec<u32>,
    /// Topics it holds: subscribed or resolved, each once (at most
    /// [`limits::TOPICS_PER_AGENT_MAX`]).
    pub(crate) held_topics: Vec<u32>,
    /// Capability routes it resolved, each once (at most
    /// [`limits::CAPABILITY_ROUTES_PER_AGENT_MAX`]).
    pub(crate) routes_resolved: Vec<u32>,
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
    /// What a remote agent may send to and publish on (the `send` and `publish` patterns of
    /// the rule its network identity matched), or `None`: not restricted by its gateway
    /// (the `[[authorize]]` policy still applies to agents with a kernel identity).
    pub(crate) send_rule: Option<Arc<crate::policy::Rule>>,
    /// It is a gateway endpoint: `Some(true)` for a node link's, `Some(false)` for a
    /// network connection's, `None` for anything else.
    pub(crate) gateway: Option<bool>,
    /// Set by its shard while frames wait in its deferral: other shards then stop
    /// forwarding to it and defer on their side ([`links`]).
    pub(crate) congested: Arc<AtomicBool>,
}

/// Where a new registry entry's rings are and who it is, besides its registration.
pub(crate) struct Placement {
    pub(crate) pid: u32,
    pub(crate) peer: Option<PeerCredentials>,
    pub(crate) segment: Segment,
    pub(crate) shard: usize,
    pub(crate) via: Option<u32>,
    pub(crate) send_rule: Option<Arc<crate::policy::Rule>>,
    pub(crate) congested: Arc<AtomicBool>,
}

impl Registry {
    /// Enters agent `agent_id` with `registration` (topics resolved to ids, capabilities
    /// whose version parses); returns its topics' ids, or why it cannot hold them (the
    /// router's topic limit; nothing of it is left). The caller bumps the generation.
    pub(crate) fn enter(
        &mut self,
        agent_id: u32,
        registration: &agentwire_shm::control::Registration,
        placement: Placement,
    ) -> Result<Vec<u32>, String> {
        let capabilities = registration
            .capabilities
            .iter()
            .filter_map(|c| Some((c.name.clone(), semver::Version::parse(&c.version).ok()?)))
            .collect();
        let record = AgentRecord {
            name: registration.name.clone(),
            pid: placement.pid,
            peer: placement.peer,
            capabilities,
            topics: Vec::new(),
            held_topics: Vec::new(),
            routes_resolved: Vec::new(),
            features: registration.features.clone(),
            stale: false,
            segment: placement.segment,
            shard: placement.shard,
            via: placement.via,
            send_rule: placement.send_rule,
            gateway: None,
            congested: placement.congested,
        };
        self.agents.insert(agent_id, record);
        self.invalidate();
        let mut topic_ids = Vec::with_capacity(registration.topics.len());
        for topic in &registration.topics {
            match self.hold_topic(agent_id, topic) {
                Ok(id) => topic_ids.push(id),
                Err(e) => {
                    self.release(agent_id);
                    return Err(e);
                }
            }
        }
        if let Some(rec) = self.agents.get_mut(&agent_id) {
            rec.topics = topic_ids.clone();
            rec.topics.dedup();
        }
        Ok(topic_ids)
    }

    /// Removes an agent and lets go of what it held (a topic no one holds any more is
    /// freed; its id is not given out again).
    pub(crate) fn release(&mut self, agent_id: u32) -> Option<AgentRecord> {
        let rec = self.agents.remove(&agent_id)?;
        if let Some(peer) = rec.peer.filter(|_| rec.via.is_none()) {
            self.departed_owners.remember(agent_id, peer.uid);
        }
        for topic in &rec.held_topics {
            let Some(entry) = self.topic_entries.get_mut(topic) else {
                continue;
            };
            entry.holders -= 1;
            if entry.holders == 0 {
                if let Some(freed) = self.topic_entries.remove(topic) {
                    self.topics.remove(&freed.name);
                }
            }
        }
        self.invalidate();
        Some(rec)
    }

    /// The uid `agent_id` connected as (live, or among the last [`DEPARTED_OWNERS_MAX`] to
    /// leave); `None` for an in-process endpoint, an agent behind a gateway, or one
    /// forgotten.
    pub(crate) fn owner_of(&self, agent_id: u32) -> Option<u32> {
        match self.agents.get(&agent_id) {
            Some(rec) => rec.peer.filter(|_| rec.via.is_none()).map(|p| p.uid),
            None => self.departed_owners.uid_of.get(&agent_id).copied(),
        }
    }

    /// The id of `topic` for `agent_id`, which from now on holds it: made if no live agent
    /// holds it yet. Refused past the name length, the agent's topic limit or the router's.
    pub(crate) fn hold_topic(&mut self, agent_id: u32, topic: &str) -> Result<u32, String> {
        limits::check_topic_name(topic)?;
        let existing = self.topics.get(topic).copied();
        let Some(rec) = self.agents.get_mut(&agent_id) else {
            return Err(format!("agent {agent_id} is not registered"));
        };
        if let Some(id) = existing {
            if rec.held_topics.contains(&id) {
                return Ok(id);
            }
        }
        if rec.held_topics.len() >= limits::TOPICS_PER_AGENT_MAX {
            return Err(format!(
                "topic {topic:?}: this agent holds {} topics already, the most one agent may",
                limits::TOPICS_PER_AGENT_MAX
            ));
        }
        let id = match existing {
            Some(id) => id,
            None => {
                if self.topic_entries.len() >= limits::TOPICS_MAX || self.last_topic_id == u32::MAX
                {
                    return Err(format!(
                        "topic {topic:?}: the router holds {} topics, its limit",
                        self.topic_entries.len()
                    ));
                }
                self.last_topic_id += 1;
                let id = self.last_topic_id;
                self.topics.insert(topic.to_string(), id);
                self.topic_entries.insert(
                    id,
                    TopicEntry {
                        name: topic.to_string(),
                        holders: 0,
                    },
                );
                id
            }
        };
        rec.held_topics.push(id);
        if let Some(entry) = self.topic_entries.get_mut(&id) {
            entry.holders += 1;
        }
        Ok(id)
    }

    /// The route id of (`capability`, `requirement`) for `agent_id`: made if new (the
    /// second value says so: the routing tables must learn it). Refused past the string
    /// lengths, the agent's route limit or the router's.
    pub(crate) fn resolve_capability(
        &mut self,
        agent_id: u32,
        capability: String,
        requirement: &str,
    ) -> Result<(u32, bool), String> {
        limits::check_capability(&capability, requirement)?;
        let req = semver::VersionReq::parse(requirement)
            .map_err(|e| format!("requirement {requirement:?}: {e}"))?;
        let existing = self
            .capability_routes
            .iter()
            .position(|(c, r)| *c == capability && *r == req)
            .map(|i| i as u32);
        let routes_max = limits::CAPABILITY_ROUTES_MAX;
        let Some(rec) = self.agents.get_mut(&agent_id) else {
            return Err(format!("agent {agent_id} is not registered"));
        };
        if let Some(id) = existing.filter(|id| rec.routes_resolved.contains(id)) {
            return Ok((id, false));
        }
        if rec.routes_resolved.len() >= limits::CAPABILITY_ROUTES_PER_AGENT_MAX {
            return Err(format!(
                "capability {capability:?}: this agent resolved {} routes already, the most \
                 one agent may",
                limits::CAPABILITY_ROUTES_PER_AGENT_MAX
            ));
        }
        let (id, made) = match existing {
            Some(id) => (id, false),
            None if self.capability_routes.len() >= routes_max => {
                return Err(format!(
                    "capability {capability:?}: the router holds {routes_max} routes, its limit"
                ));
            }
            None => {
                self.capability_routes.push((capability, req));
                ((self.capability_routes.len() - 1) as u32, true)
            }
        };
        rec.routes_resolved.push(id);
        Ok((id, made))
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
