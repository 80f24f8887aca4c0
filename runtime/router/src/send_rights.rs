//! Whom each restricted agent of a shard may send to, computed from the `[[authorize]]`
//! policy ([`crate::policy`]) when the shard rebuilds its tables: per rule, the ids of the
//! agents its `send` patterns name and of the topics its `publish` patterns name, and per
//! source agent, its rule. The data path then asks one membership question per frame, and
//! none at all when the policy is open (no rights built).

use crate::gate::RefusalLog;
use crate::policy::{Action, Policy};
use crate::registry::Registry;
use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Instant;

/// What the agents of one rule may reach.
#[derive(Debug, Default)]
pub(crate) struct Allowed {
    /// Agent ids whose names the rule's `send` patterns allow.
    agents: FxHashSet<u32>,
    /// Topic ids whose names the rule's `publish` patterns allow.
    topics: FxHashSet<u32>,
}

impl Allowed {
    /// Whether a unicast, request or response to `agent` is allowed.
    pub(crate) fn agent(&self, agent: u32) -> bool {
        self.agents.contains(&agent)
    }

    /// Whether a publish to `topic` is allowed.
    pub(crate) fn topic(&self, topic: u32) -> bool {
        self.topics.contains(&topic)
    }
}

/// The rights of this shard's restricted agents (those with a kernel identity, under a
/// policy with rules).
#[derive(Debug, Default)]
pub(crate) struct SendRights {
    /// Source agent → index into `allowed`.
    of_source: FxHashMap<u32, usize>,
    /// One entry per rule some source uses, and one (empty) for sources no rule matches.
    allowed: Vec<Allowed>,
    /// Refused frames' log line, at most once per
    /// [`REFUSAL_LOG_INTERVAL`](crate::gate::REFUSAL_LOG_INTERVAL).
    pub(crate) log: RefusalLog,
}

impl SendRights {
    /// The rights of the agents of `shard` under `policy`, or `None` when
    /// the policy is open (nobody restricted). Agents without a kernel identity (in-process
    /// endpoints, agents behind a gateway) are not restricted.
    pub(crate) fn build(policy: &Policy, reg: &Registry, shard: usize) -> Option<Box<Self>> {
        if policy.is_open() {
            return None;
        }
        let mut rights = Box::<Self>::default();
        // Rule index → slot in `allowed`; `usize::MAX` stands for "no rule matches".
        let mut slot_of_rule: FxHashMap<usize, usize> = FxHashMap::default();
        for (&id, rec) in &reg.agents {
            let Some(peer) = rec.peer.filter(|_| rec.via.is_none() && rec.shard == shard) else {
                continue;
            };
            let rule = policy.rule_of(&peer).unwrap_or(usize::MAX);
            let slot = *slot_of_rule.entry(rule).or_insert_with(|| {
                let allowed = match policy.rules.get(rule) {
                    None => Allowed::default(),
                    Some(rule) => Allowed {
                        agents: reg
                            .agents
                            .iter()
                            .filter(|(_, r)| rule.allows(Action::Send(&r.name)))
                            .map(|(&id, _)| id)
                            .collect(),
                        topics: reg
                            .topic_entries
                            .iter()
                            .filter(|(_, t)| rule.allows(Action::Publish(&t.name)))
                            .map(|(&id, _)| id)
                            .collect(),
                    },
                };
                rights.allowed.push(allowed);
                rights.allowed.len() - 1
            });
            rights.of_source.insert(id, slot);
        }
        Some(rights)
    }

    /// Where the rights of `source` are ([`SendRights::allowed`]), or `None` when it is not
    /// restricted: one lookup per frame, the rights then taken by index.
    pub(crate) fn slot_of(&self, source: u32) -> Option<usize> {
        self.of_source.get(&source).copied()
    }

    /// The rights at `slot` (from [`SendRights::slot_of`]).
    pub(crate) fn allowed(&self, slot: usize) -> &Allowed {
        &self.allowed[slot]
    }

    /// Logs a refused frame (at a rate limit; every refusal is counted by the caller).
    pub(crate) fn note_refusal(&mut self, source: u32, what: &dyn std::fmt::Display) {
        if let Some(unlogged) = self.log.due(Instant::now()) {
            tracing::warn!(
                source,
                unlogged_since_last = unlogged,
                "frame not permitted: {what} (logged at most once every {:?})",
                crate::gate::REFUSAL_LOG_INTERVAL
            );
        }
    }
}
