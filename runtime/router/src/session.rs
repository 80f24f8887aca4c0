//! One admitted agent's requests on its control connection: subscribe, unsubscribe, resolve
//! a topic or capability route, discover, goodbye. Answered by the control loop as each
//! arrives; no thread per agent.

use crate::policy::{Action, Authorizer};
use crate::shared::{bump, Shared};
use crate::stats::count;
use agentwire_shm::control::{ClientMsg, PeerCredentials, ServerMsg};
use std::sync::atomic::Ordering;

/// The answer to one request from agent `agent_id`; `None` for `Goodbye` (the agent leaves).
/// The registry generation (which makes every shard rebuild its tables) is bumped only when
/// routing changed: a subscription added or removed, a capability route made. A subscribe
/// or a resolve (to publish) of a topic the policy does not allow `peer` is answered with an
/// error, counted and logged at a rate limit (`authz`).
pub(crate) fn answer(
    shared: &Shared,
    agent_id: u32,
    msg: ClientMsg,
    authz: &mut Authorizer,
    peer: &PeerCredentials,
) -> Option<ServerMsg> {
    let action = match &msg {
        ClientMsg::Subscribe { topic } => Some(Action::Subscribe(topic)),
        ClientMsg::ResolveTopic { topic } => Some(Action::Publish(topic)),
        _ => None,
    };
    if let Some(Err(refusal)) = action.map(|a| authz.policy.permits(peer, a)) {
        authz.note(peer, &refusal, &shared.stats[0]);
        return Some(ServerMsg::Error {
            detail: refusal.to_string(),
        });
    }
    let refused = |detail: String| {
        count(&shared.stats[0].control_requests_refused, 1);
        ServerMsg::Error { detail }
    };
    let (reply, changed) = {
        let mut reg = shared.registry.lock().expect("registry lock");
        match msg {
            ClientMsg::Goodbye => return None,
            ClientMsg::Subscribe { topic } => match reg.hold_topic(agent_id, &topic) {
                Ok(topic_id) => {
                    let added = reg.agents.get_mut(&agent_id).is_some_and(|rec| {
                        let added = !rec.topics.contains(&topic_id);
                        if added {
                            rec.topics.push(topic_id);
                        }
                        added
                    });
                    (ServerMsg::TopicId { topic_id }, added)
                }
                Err(detail) => (refused(detail), false),
            },
            ClientMsg::Unsubscribe { topic } => {
                // Never makes a topic: an unknown one has no subscriber to remove.
                let topic_id = reg.topics.get(&topic).copied();
                let removed = match (topic_id, reg.agents.get_mut(&agent_id)) {
                    (Some(id), Some(rec)) => {
                        let before = rec.topics.len();
                        rec.topics.retain(|&t| t != id);
                        rec.topics.len() != before
                    }
                    _ => false,
                };
                (ServerMsg::Done, removed)
            }
            ClientMsg::ResolveTopic { topic } => match reg.hold_topic(agent_id, &topic) {
                // A topic with no subscriber yet routes nowhere either way: tables unchanged.
                Ok(topic_id) => (ServerMsg::TopicId { topic_id }, false),
                Err(detail) => (refused(detail), false),
            },
            ClientMsg::ResolveCapability {
                capability,
                requirement,
            } => match reg.resolve_capability(agent_id, capability, &requirement) {
                Ok((route_id, made)) => (ServerMsg::CapabilityRoute { route_id }, made),
                Err(detail) => (refused(detail), false),
            },
            ClientMsg::Discover {
                capability,
                requirement,
            } => {
                if let Err(detail) = crate::limits::check_capability(&capability, &requirement) {
                    (refused(detail), false)
                } else {
                    match reg.discover(&capability, &requirement) {
                        Ok((agents, cached)) => {
                            // The control loop is the sole writer here, but shard 0 writes its
                            // own counters in this set: a locked add (control path, not data).
                            let counter = if cached {
                                &shared.stats[0].discovery_cache_hits
                            } else {
                                &shared.stats[0].discovery_cache_misses
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            (ServerMsg::Agents { agents }, false)
                        }
                        Err(detail) => (ServerMsg::Error { detail }, false),
                    }
                }
            }
            ClientMsg::Hello { .. }
            | ClientMsg::Register(_)
            | ClientMsg::Status
            | ClientMsg::StatusAgents { .. }
            | ClientMsg::StatusRoutes { .. } => (
                ServerMsg::Error {
                    detail: "already registered".into(),
                },
                false,
            ),
        }
    };
    if changed {
        bump(shared);
    }
    Some(reply)
}
