//! One admitted agent's control connection: subscribe, resolve, discover, goodbye, and
//! removal when the connection closes or the process exits.

use crate::commands::{CommandSender, RouterCmd};
use crate::liveness;
use crate::shared::{bump, forget_agent, Shared};
use agentwire_shm::control::{ClientMsg, ControlConn, ControlError, ServerMsg};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn control_loop(
    agent_id: u32,
    conn: ControlConn,
    pidfd: Option<rustix::fd::OwnedFd>,
    shared: Arc<Shared>,
    cmds: CommandSender,
) {
    loop {
        // SYNC POINT: shutdown (the Release store in `RouterControl::shutdown`).
        if shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        let msg = match conn.recv::<ClientMsg>(Some(Duration::from_millis(20))) {
            Ok((msg, _)) => msg,
            Err(ControlError::Timeout(_)) => {
                // The socket can outlive the agent (a child inherited it): the pidfd says
                // when the process itself is gone.
                if pidfd.as_ref().is_some_and(liveness::exited) {
                    tracing::info!(agent_id, "agent process exited with its control socket still open elsewhere; removing it");
                    shared.stats[0]
                        .agents_exited
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
                continue;
            }
            Err(ControlError::Malformed(detail)) => {
                let _ = conn.send(&ServerMsg::Error { detail }, &[]);
                continue;
            }
            Err(_) => break,
        };
        let reply = {
            let mut reg = shared.registry.lock().expect("registry lock");
            match msg {
                ClientMsg::Goodbye => break,
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
                        // Many control threads: a locked add (control path, not data path).
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
                ClientMsg::Hello { .. } | ClientMsg::Register(_) | ClientMsg::Status => {
                    ServerMsg::Error {
                        detail: "already registered".into(),
                    }
                }
            }
        };
        bump(&shared);
        if conn.send(&reply, &[]).is_err() {
            break;
        }
    }
    forget_agent(&shared, agent_id);
    let _ = cmds.send(RouterCmd::Remove { agent_id });
}
