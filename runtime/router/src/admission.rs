//! Admission: the accept thread takes connections, answers status requests and admits
//! agents (segment, doorbells, registry entry, the Add command to its shard).

use crate::commands::{CommandSender, NewAgent, RouterCmd};
use crate::config::{RouterConfig, ROUTER_AGENTS_MAX};
use crate::deferral::Deferral;
use crate::liveness;
use crate::placement;
use crate::registry::AgentRecord;
use crate::server::{Accepted, ControlListener, HandshakeError};
use crate::session::control_loop;
use crate::shared::{bump, forget_agent, Shared};
use crate::stats::count;
use crate::status::status_report;
use agentwire_shm::control::ControlConn;
use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::ring::{Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig, TX_LANES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) fn accept_loop(
    mut listener: ControlListener,
    shared: Arc<Shared>,
    shard_cmds: Vec<CommandSender>,
    config: RouterConfig,
) {
    let mut next_agent_id = 1u32;
    let mut control_threads: Vec<JoinHandle<()>> = Vec::new();
    let mut progress: HashMap<u32, liveness::Progress> = HashMap::new();
    let mut liveness_due = Instant::now() + liveness::LIVENESS_CHECK_INTERVAL;
    // SYNC POINT: shutdown (the Release store in `RouterControl::shutdown`).
    while !shared.shutdown.load(Ordering::Acquire) {
        if let Some(timeout) = config.liveness_timeout {
            if Instant::now() >= liveness_due {
                liveness_due = Instant::now() + liveness::LIVENESS_CHECK_INTERVAL;
                liveness::check_liveness(&shared, &mut progress, timeout);
            }
        }
        if let Some(allow) = shared.reloaded_allow.lock().expect("allow lock").take() {
            tracing::info!(uids = ?allow.uids, gids = ?allow.gids, "allow-list reloaded");
            listener.set_allow_list(allow);
        }
        let pending = match listener.accept(Some(Duration::from_millis(20))) {
            Ok(Some(Accepted::Agent(p))) => p,
            Ok(Some(Accepted::Status(request))) => {
                request.answer(status_report(&shared));
                continue;
            }
            Ok(None) => continue,
            Err(HandshakeError::Control(e)) => {
                tracing::debug!("handshake failed: {e}");
                continue;
            }
            Err(e) => {
                count(&shared.stats[0].handshakes_refused, 1);
                tracing::info!("refused: {e}");
                continue;
            }
        };
        control_threads.retain(|t| !t.is_finished());
        if control_threads.len() >= config.agents_max.min(ROUTER_AGENTS_MAX) {
            pending.refuse(
                agentwire_shm::control::RefuseReason::Full,
                format!("{} agents max", config.agents_max),
            );
            continue;
        }
        let agent_id = next_agent_id;
        next_agent_id += 1;
        let peer_pid = pending.peer().pid;
        let shard = {
            let reg = shared.registry.lock().expect("registry lock");
            let mut load = vec![0usize; shard_cmds.len()];
            for rec in reg.agents.values() {
                load[rec.shard] += 1;
            }
            let agent_node = if shard_cmds.len() > 1 {
                placement::process_numa_node(peer_pid)
            } else {
                None
            };
            placement::choose_shard(&load, &config.shard_numa_nodes, agent_node)
        };
        let cmds = &shard_cmds[shard];
        let congested = Arc::new(AtomicBool::new(false));
        let admitted = (|| -> Result<ControlConn, Box<dyn std::error::Error>> {
            let segment = Segment::create(
                &SegmentConfig::new(agent_id)
                    .with_capacity(config.ring_capacity_bytes, config.ring_capacity_bytes)
                    .huge_pages(HugePages::Auto),
            )?;
            let tx_bell = Doorbell::new()?;
            let rx_bell = Doorbell::new()?;
            let registration = pending.registration().clone();
            let topic_ids = {
                let mut reg = shared.registry.lock().expect("registry lock");
                let topic_ids: Vec<u32> = registration
                    .topics
                    .iter()
                    .map(|t| reg.topic_id(t))
                    .collect();
                let capabilities = registration
                    .capabilities
                    .iter()
                    .filter_map(|c| {
                        Some((c.name.clone(), semver::Version::parse(&c.version).ok()?))
                    })
                    .collect();
                reg.agents.insert(
                    agent_id,
                    AgentRecord {
                        name: registration.name.clone(),
                        pid: peer_pid,
                        capabilities,
                        topics: topic_ids.clone(),
                        features: registration.features.clone(),
                        stale: false,
                        segment: segment.clone(),
                        shard,
                        congested: congested.clone(),
                    },
                );
                reg.invalidate();
                topic_ids
            };
            let cmd = RouterCmd::Add(Box::new(NewAgent {
                agent_id,
                congested: congested.clone(),
                tx: (0..TX_LANES)
                    .map(|lane| {
                        Ok(Consumer::new(
                            segment.tx_lane_memory(lane),
                            Some(tx_bell.try_clone()?),
                        ))
                    })
                    .collect::<Result<Vec<_>, std::io::Error>>()?,
                // Agents park often on their rx ring: fenced, so they never interrupt this
                // router's core with a membarrier when they sleep.
                rx: Producer::new_fenced(segment.rx_memory(), Some(rx_bell.try_clone()?)),
                segment: segment.clone(),
                deferral: match config.defer_capacity_bytes {
                    0 => None,
                    bytes => Some(Deferral::new(bytes)?),
                },
            }));
            // Queue the agent for the router before it learns its id, so any frame naming
            // this id is written after the router could know it.
            cmds.send(cmd).map_err(|_| "router stopped")?;
            bump(&shared);
            match pending.admit(agent_id, topic_ids, &segment, &tx_bell, &rx_bell) {
                Ok(conn) => Ok(conn),
                Err(e) => {
                    let _ = cmds.send(RouterCmd::Remove { agent_id });
                    Err(e.into())
                }
            }
        })();
        match admitted {
            Ok(conn) => {
                count(&shared.stats[0].agents_admitted, 1);
                tracing::debug!(agent_id, shard, "agent admitted");
                let shared = shared.clone();
                let cmds = cmds.clone();
                let pidfd = liveness::open_pidfd(peer_pid);
                let spawned = std::thread::Builder::new()
                    .name(format!("aw-ctl-{agent_id}"))
                    .spawn(move || control_loop(agent_id, conn, pidfd, shared, cmds));
                if let Ok(handle) = spawned {
                    control_threads.push(handle);
                }
            }
            Err(e) => {
                forget_agent(&shared, agent_id);
                tracing::warn!(agent_id, "admitting agent failed: {e}");
            }
        }
    }
    for t in control_threads {
        let _ = t.join();
    }
}
