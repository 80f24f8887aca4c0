//! Whom each restricted agent of a shard may send to, computed from the `[[authorize]]`
//! policy ([`crate::policy`]) when the shard rebuilds its tables: per rule, the ids of the
//! agents its `send` patterns name and of the topics its `publish` patterns name, and per
//! source agent, its rule. The data path then asks one membership question per frame, and
//! none at all when the policy is open (no rights built).

use crate::gate::RefusalLog;
use crate::policy::{Action, Policy, Rule};
use crate::registry::Registry;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Instant;

/// What the agents of one rule may reach.
#[derive(Debug, Default)]
pub(crate) struct Allowed {
    /// Agent ids whose names the rule's `send` patterns allow.
    agents: FxHashSet<u32>,
    /// Topic ids whose names the rule's `publish` patterns allow.
    topics: FxHashSet<u32>,
}

/// Which rule a source's rights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RuleKey {
    /// A policy rule's index (`None`: no rule matches).
    Policy(Option<usize>),
    /// A remote agent's rule, by address.
    Remote(usize),
}

impl Allowed {
    /// What `rule` allows among the registry's agents and topics (nothing without a rule).
    fn of(rule: Option<&Rule>, reg: &Registry) -> Self {
        let Some(rule) = rule else {
            return Self::default();
        };
        Self {
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
        }
    }

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
    /// The rights of the restricted agents of `shard`, or `None` when nobody is: agents
    /// with a kernel identity under a policy with rules (their rule's patterns), and agents
    /// behind a gateway that gave them a send rule (a network identity's patterns).
    /// In-process endpoints and unrestricted remote agents are not restricted.
    pub(crate) fn build(policy: &Policy, reg: &Registry, shard: usize) -> Option<Box<Self>> {
        let any_remote_rule = reg.agents.values().any(|r| r.send_rule.is_some());
        if policy.is_open() && !any_remote_rule {
            return None;
        }
        let mut rights = Box::<Self>::default();
        // One slot per rule some source uses: a policy rule by index (`None`: no rule
        // matches, nothing allowed), a remote agent's rule by its address (shared by every
        // agent of one network identity rule).
        let mut slot_of_rule: FxHashMap<RuleKey, usize> = FxHashMap::default();
        for (&id, rec) in &reg.agents {
            if rec.shard != shard {
                continue;
            }
            let (key, rule) = match (&rec.send_rule, rec.peer, rec.via) {
                (Some(rule), _, _) => (RuleKey::Remote(Arc::as_ptr(rule) as usize), Some(&**rule)),
                (None, Some(peer), None) if !policy.is_open() => {
                    let index = policy.rule_of(&peer);
                    (
                        RuleKey::Policy(index),
                        index.and_then(|i| policy.rules.get(i)),
                    )
                }
                _ => continue,
            };
            let slot = *slot_of_rule.entry(key).or_insert_with(|| {
                rights.allowed.push(Allowed::of(rule, reg));
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
