//! One admitted agent's requests on its control connection: subscribe, unsubscribe, resolve
//! a topic or capability route, discover, goodbye. Answered by the control loop as each
//! arrives; no thread per agent.

use crate::shared::{bump, Shared};
use agentwire_shm::control::{ClientMsg, ServerMsg};
use std::sync::atomic::Ordering;

/// The answer to one request from agent `agent_id`; `None` for `Goodbye` (the agent leaves).
pub(crate) fn answer(shared: &Shared, agent_id: u32, msg: ClientMsg) -> Option<ServerMsg> {
    let reply = {
        let mut reg = shared.registry.lock().expect("registry lock");
        match msg {
            ClientMsg::Goodbye => return None,
            ClientMsg::Subscribe { topic } => {
                let topic_id = reg.topic_id(&topic);
                if let Some(rec) = reg.agents.get_mut(&agent_id) {
                    if !rec.topics.contains(&topic_id) {
                        rec.topics.push(topic_id);
                    }
                }
                ServerMsg::TopicId { topic_id }
            }
            ClientMsg::Unsubscribe { topic } => {
                let topic_id = reg.topic_id(&topic);
                if let Some(rec) = reg.agents.get_mut(&agent_id) {
                    rec.topics.retain(|&t| t != topic_id);
                }
                ServerMsg::Done
            }
            ClientMsg::ResolveTopic { topic } => ServerMsg::TopicId {
                topic_id: reg.topic_id(&topic),
            },
            ClientMsg::ResolveCapability {
                capability,
                requirement,
            } => match semver::VersionReq::parse(&requirement) {
                Ok(req) => {
                    let existing = reg
                        .capability_routes
                        .iter()
                        .position(|(c, r)| *c == capability && *r == req);
                    let route_id = existing.unwrap_or_else(|| {
                        reg.capability_routes.push((capability, req));
                        reg.capability_routes.len() - 1
                    });
                    ServerMsg::CapabilityRoute {
                        route_id: route_id as u32,
                    }
                }
                Err(e) => ServerMsg::Error {
                    detail: format!("requirement {requirement:?}: {e}"),
                },
            },
            ClientMsg::Discover {
                capability,
                requirement,
            } => match reg.discover(&capability, &requirement) {
                Ok((agents, cached)) => {
                    // The control loop is the sole writer here, but shard 0 writes its own counters
                    // in this set: a locked add (control path, not data path).
                    let counter = if cached {
                        &shared.stats[0].discovery_cache_hits
                    } else {
                        &shared.stats[0].discovery_cache_misses
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    ServerMsg::Agents { agents }
                }
                Err(detail) => ServerMsg::Error { detail },
            },
            ClientMsg::Hello { .. }
            | ClientMsg::Register(_)
            | ClientMsg::Status
            | ClientMsg::StatusAgents { .. } => ServerMsg::Error {
                detail: "already registered".into(),
            },
        }
    };
    bump(shared);
    Some(reply)
}
