//! The routing tables a shard reads on its hot path, rebuilt from the registry when its
//! generation changes.

use crate::outbox::{Outboxes, RemoteDest};
use crate::send_rights::SendRights;
use crate::shared::Shared;
use std::collections::HashMap;

/// What the routing thread needs to know, rebuilt when the registry generation changes.
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    pub(crate) subscribers: HashMap<u32, Vec<u32>>,
    pub(crate) capability_routes: Vec<Vec<u32>>,
    pub(crate) round_robin: Vec<usize>,
    /// Feature id → live agents serving it, and its round-robin cursor.
    pub(crate) features: rustc_hash::FxHashMap<u32, (Vec<u32>, usize)>,
    /// Gateway endpoint of this shard → the remote agents behind it, sorted (the sources
    /// its frames may carry).
    pub(crate) gateway_remotes: rustc_hash::FxHashMap<u32, Vec<u32>>,
    /// Whom this shard's restricted agents may send to; `None` when the policy is open.
    pub(crate) send_rights: Option<Box<SendRights>>,
}

/// Rebuilds the routing tables from the registry and the rings this shard holds, and tells
/// `producers` where every other shard's agents are.
pub(crate) fn rebuild_table(
    shared: &Shared,
    producers: &mut Outboxes,
    shard: usize,
) -> RoutingTable {
    let reg = shared.registry.lock().expect("registry lock");
    producers.remote.clear();
    producers.aliases.clear();
    producers.behind_gateway.clear();
    producers.behind_link.clear();
    producers.link_gateways.clear();
    let mut table = RoutingTable::default();
    for (&id, rec) in &reg.agents {
        if rec.gateway == Some(true) {
            producers.link_gateways.insert(id);
        }
        if let Some(gateway) = rec.via {
            producers.behind_gateway.insert(id);
            if reg.agents.get(&gateway).and_then(|g| g.gateway) == Some(true) {
                producers.behind_link.insert(id);
            }
        }
        if let Some(gateway) = rec.via.filter(|_| rec.shard == shard) {
            producers.aliases.insert(id, gateway);
            table.gateway_remotes.entry(gateway).or_default().push(id);
        } else if rec.shard != shard {
            producers.remote.insert(
                id,
                RemoteDest {
                    shard: rec.shard,
                    congested: rec.congested.clone(),
                    rx: rec.segment.rx_memory(),
                },
            );
        }
    }
    for remotes in table.gateway_remotes.values_mut() {
        remotes.sort_unstable();
    }
    for (&id, rec) in &reg.agents {
        if !producers.contains(id) {
            continue;
        }
        // A gateway takes one copy of a publish for all its remote subscribers (the frame
        // keeps the topic as destination; the far side fans it out).
        let subscriber = rec.via.unwrap_or(id);
        for &topic in &rec.topics {
            table.subscribers.entry(topic).or_default().push(subscriber);
        }
    }
    for subs in table.subscribers.values_mut() {
        subs.sort_unstable();
        subs.dedup();
    }
    for (capability, req) in &reg.capability_routes {
        let ids = reg
            .matching(capability, req)
            .into_iter()
            .map(|a| a.agent_id)
            .filter(|&id| producers.contains(id))
            .collect();
        table.capability_routes.push(ids);
    }
    table.round_robin = vec![0; table.capability_routes.len()];
    for feature in reg.features() {
        let ids: Vec<u32> = reg
            .serving(feature)
            .into_iter()
            .filter(|&id| producers.contains(id))
            .collect();
        if !ids.is_empty() {
            table.features.insert(feature, (ids, 0));
        }
    }
    table.send_rights = SendRights::build(&reg.policy, &reg, shard);
    table
}
