//! Authorization per peer identity: which agent names and capabilities a peer may register,
//! which topics it may subscribe to and publish to, and which agents it may send to. The
//! peer is who the kernel says connected (SO_PEERCRED uid and gid, as for the allow-list).
//!
//! A [`Policy`] is a list of [`Rule`]s. The first rule that matches the peer (its uid is in
//! the rule's `uids` or its gid in its `gids`) decides everything that peer may do; a peer
//! no rule matches may do nothing once any rule exists (deny by default). A policy with no
//! rules allows everything: the default, for a single-user machine where every agent runs as
//! the same user.
//!
//! Each allowance is a list of [`Pattern`]s: an exact string, or a prefix ending in `*`
//! (`ocr-*` allows `ocr-1` and `ocr-`; `*` alone allows everything). An empty list allows
//! nothing.
//!
//! What is enforced, on the control path: the name, each capability and each topic of a
//! registration (refused `NotPermitted` with a detail naming what), `Subscribe` and
//! `ResolveTopic` (answered with an error), and, once a policy is configured, names are
//! owned: a name a live agent of another uid registered is refused. On the data path, every
//! frame of an agent its rule restricts: a publish only to a topic its `publish` patterns
//! allow (whatever id the frame names, resolved or guessed), a unicast, request or response
//! only to an agent whose name its `send` patterns allow, and an anycast or feature route
//! only ever picks such an agent; anything else is nacked `NotPermitted`. The sets are
//! computed per rule when a shard rebuilds its tables, so the per-frame cost is one
//! membership test, and nothing at all with no rules. Agents behind a gateway and in-process
//! endpoints have no kernel identity and are not restricted (network identities come with
//! the network transport).
//!
//! ```
//! use agentwire_router::policy::{Action, Pattern, Policy, Rule};
//! use agentwire_shm::control::PeerCredentials;
//! let ocr = Rule {
//!     uids: vec![1001],
//!     names: vec![Pattern::new("ocr-*").unwrap()],
//!     publish: vec![Pattern::new("ocr.results").unwrap()],
//!     ..Rule::default()
//! };
//! let policy = Policy { rules: vec![ocr] };
//! let peer = PeerCredentials { pid: 1, uid: 1001, gid: 1001 };
//! assert!(policy.permits(&peer, Action::Name("ocr-2")).is_ok());
//! assert!(policy.permits(&peer, Action::Subscribe("ocr.results")).is_err());
//! let stranger = PeerCredentials { pid: 2, uid: 1002, gid: 1002 };
//! assert!(policy.permits(&stranger, Action::Name("ocr-2")).is_err());
//! assert!(Policy::open().permits(&stranger, Action::Name("anything")).is_ok());
//! ```

use crate::gate::RefusalLog;
use crate::registry::{AgentRecord, Registry};
use crate::stats::{count, RouterStats};
use agentwire_shm::control::{PeerCredentials, Registration};
use std::sync::Arc;
use std::time::Instant;

/// An allowed string: exact, or a prefix when it ends in `*` (`*` alone matches everything).
/// A `*` anywhere else is refused when the pattern is made, so a pattern never means more
/// than it reads.
///
/// ```
/// use agentwire_router::policy::Pattern;
/// let p = Pattern::new("alerts.*").unwrap();
/// assert!(p.matches("alerts.fire") && !p.matches("alert"));
/// assert!(Pattern::new("exact").unwrap().matches("exact"));
/// assert!(Pattern::new("a*b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The text as written (with its trailing `*` when a prefix).
    text: String,
}

impl Pattern {
    /// A pattern from its text; an error (saying why) for an empty one or a `*` before the
    /// end.
    ///
    /// ```
    /// assert!(agentwire_router::policy::Pattern::new("").is_err());
    /// ```
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing: leave it out".into());
        }
        if text[..text.len() - 1].contains('*') {
            return Err(
                "`*` may only end a pattern (a prefix wildcard): exact strings or `prefix*`".into(),
            );
        }
        Ok(Self { text: text.into() })
    }

    /// Whether `s` matches: equal to an exact pattern, or starting with a prefix pattern.
    ///
    /// ```
    /// let all = agentwire_router::policy::Pattern::new("*").unwrap();
    /// assert!(all.matches("") && all.matches("x"));
    /// ```
    pub fn matches(&self, s: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => s.starts_with(prefix),
            None => s == self.text,
        }
    }

    /// The pattern as written.
    ///
    /// ```
    /// assert_eq!(agentwire_router::policy::Pattern::new("a*").unwrap().as_str(), "a*");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What one group of peers may do: the peers (by uid or gid; a rule with neither matches
/// nobody) and the patterns of what they may register, subscribe to and publish to.
///
/// ```
/// use agentwire_router::policy::{Pattern, Rule};
/// let rule = Rule { gids: vec![2000], capabilities: vec![Pattern::new("ocr").unwrap()], ..Rule::default() };
/// assert!(rule.names.is_empty()); // may register no name: every agent needs one
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Peers whose uid is one of these match.
    pub uids: Vec<u32>,
    /// Peers whose gid is one of these match.
    pub gids: Vec<u32>,
    /// Agent names they may register.
    pub names: Vec<Pattern>,
    /// Capabilities they may offer.
    pub capabilities: Vec<Pattern>,
    /// Topics they may subscribe to (at registration or later).
    pub subscribe: Vec<Pattern>,
    /// Topics they may publish to (resolve to an id, and send publishes to).
    pub publish: Vec<Pattern>,
    /// Agents they may send to, by name: unicast, request and response frames, and the
    /// agents an anycast or feature route may pick for them. A service that answers
    /// requests lists its clients here.
    pub send: Vec<Pattern>,
}

impl Rule {
    /// Whether this rule applies to `peer`: its uid or its gid is listed.
    ///
    /// ```
    /// use agentwire_router::policy::Rule;
    /// use agentwire_shm::control::PeerCredentials;
    /// let p = PeerCredentials { pid: 1, uid: 5, gid: 6 };
    /// assert!(Rule { gids: vec![6], ..Rule::default() }.matches(&p));
    /// assert!(!Rule::default().matches(&p));
    /// ```
    pub fn matches(&self, peer: &PeerCredentials) -> bool {
        self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }

    fn patterns(&self, kind: ActionKind) -> &[Pattern] {
        match kind {
            ActionKind::Name => &self.names,
            ActionKind::Capability => &self.capabilities,
            ActionKind::Subscribe => &self.subscribe,
            ActionKind::Publish => &self.publish,
            ActionKind::Send => &self.send,
        }
    }

    /// Whether this rule lets its peers do `action` (whoever they are).
    ///
    /// ```
    /// use agentwire_router::policy::{Action, Pattern, Rule};
    /// let rule = Rule { send: vec![Pattern::new("ocr-*").unwrap()], ..Rule::default() };
    /// assert!(rule.allows(Action::Send("ocr-1")) && !rule.allows(Action::Send("billing")));
    /// ```
    pub fn allows(&self, action: Action<'_>) -> bool {
        let (kind, subject) = action.kind_and_subject();
        self.patterns(kind).iter().any(|p| p.matches(subject))
    }
}

/// One thing a peer asks to do, with the string it names.
///
/// ```
/// use agentwire_router::policy::Action;
/// assert_eq!(Action::Publish("t").to_string(), "publish to topic \"t\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Register an agent under this name.
    Name(&'a str),
    /// Offer this capability.
    Capability(&'a str),
    /// Subscribe to this topic.
    Subscribe(&'a str),
    /// Publish to this topic (resolve its id, send publishes to it).
    Publish(&'a str),
    /// Send to the agent of this name (unicast, request, response; picked by a route).
    Send(&'a str),
}

impl Action<'_> {
    fn kind_and_subject(&self) -> (ActionKind, &str) {
        match *self {
            Action::Name(s) => (ActionKind::Name, s),
            Action::Capability(s) => (ActionKind::Capability, s),
            Action::Subscribe(s) => (ActionKind::Subscribe, s),
            Action::Publish(s) => (ActionKind::Publish, s),
            Action::Send(s) => (ActionKind::Send, s),
        }
    }
}

impl std::fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Name(s) => write!(f, "register the name {s:?}"),
            Action::Capability(s) => write!(f, "offer the capability {s:?}"),
            Action::Subscribe(s) => write!(f, "subscribe to topic {s:?}"),
            Action::Publish(s) => write!(f, "publish to topic {s:?}"),
            Action::Send(s) => write!(f, "send to the agent {s:?}"),
        }
    }
}

/// The kinds of refusal, each logged under its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Name,
    Capability,
    Subscribe,
    Publish,
    Send,
}

/// Why a peer may not do something; its text is what the client is told.
///
/// ```
/// use agentwire_router::policy::{Action, Policy, Rule};
/// use agentwire_shm::control::PeerCredentials;
/// let policy = Policy { rules: vec![Rule { uids: vec![7], ..Rule::default() }] };
/// let peer = PeerCredentials { pid: 1, uid: 8, gid: 8 };
/// let refusal = policy.permits(&peer, Action::Name("a")).unwrap_err();
/// assert!(refusal.to_string().contains("no [[authorize]] rule matches"), "{refusal}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not permitted: uid {uid} gid {gid} may not {what} ({why})")]
pub struct NotPermitted {
    uid: u32,
    gid: u32,
    /// The action refused, as text (`register the name "x"`).
    what: String,
    /// Which rule said no, or that none matched.
    why: String,
    kind: Refusal,
}

/// What a refusal was about, for its rate-limited log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Action(ActionKind),
    NameOwned,
}

/// Who decides: the rules, first match wins; none at all: everything is allowed.
///
/// ```
/// use agentwire_router::policy::Policy;
/// assert!(Policy::default().is_open());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// The rules in order; the first that matches a peer applies to it.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// No rules: every peer the allow-list admits may do everything (the default).
    ///
    /// ```
    /// assert!(agentwire_router::policy::Policy::open().rules.is_empty());
    /// ```
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether no rule is configured (everything allowed, names not owned).
    ///
    /// ```
    /// assert!(agentwire_router::policy::Policy::open().is_open());
    /// ```
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// The index of the rule that applies to `peer` (the first that matches), or `None`:
    /// no rule matches (it may do nothing, unless the policy is open).
    ///
    /// ```
    /// use agentwire_router::policy::{Policy, Rule};
    /// use agentwire_shm::control::PeerCredentials;
    /// let policy = Policy { rules: vec![Rule { gids: vec![6], ..Rule::default() }] };
    /// assert_eq!(policy.rule_of(&PeerCredentials { pid: 1, uid: 5, gid: 6 }), Some(0));
    /// assert_eq!(policy.rule_of(&PeerCredentials { pid: 1, uid: 5, gid: 7 }), None);
    /// ```
    pub fn rule_of(&self, peer: &PeerCredentials) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(peer))
    }

    /// Whether `peer` may do `action`.
    ///
    /// ```
    /// use agentwire_router::policy::{Action, Policy};
    /// use agentwire_shm::control::PeerCredentials;
    /// let peer = PeerCredentials { pid: 1, uid: 8, gid: 8 };
    /// assert!(Policy::open().permits(&peer, Action::Subscribe("x")).is_ok());
    /// ```
    pub fn permits(&self, peer: &PeerCredentials, action: Action<'_>) -> Result<(), NotPermitted> {
        if self.is_open() {
            return Ok(());
        }
        let (kind, _) = action.kind_and_subject();
        let why = match self.rule_of(peer) {
            None => "no [[authorize]] rule matches its uid or gid".to_string(),
            Some(i) => {
                if self.rules[i].allows(action) {
                    return Ok(());
                }
                let patterns = self.rules[i].patterns(kind);
                let listed: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
                format!("its [[authorize]] rule {i} allows {listed:?}")
            }
        };
        Err(NotPermitted {
            uid: peer.uid,
            gid: peer.gid,
            what: action.to_string(),
            why,
            kind: Refusal::Action(kind),
        })
    }

    /// Whether `peer` may register `registration`: its name, each capability and each topic
    /// (subscribed at registration); the first thing not allowed is the refusal.
    ///
    /// ```
    /// use agentwire_router::policy::Policy;
    /// use agentwire_shm::control::{PeerCredentials, Registration};
    /// let peer = PeerCredentials { pid: 1, uid: 8, gid: 8 };
    /// let r = Registration { name: "a".into(), ..Default::default() };
    /// assert!(Policy::open().permits_registration(&peer, &r).is_ok());
    /// ```
    pub fn permits_registration(
        &self,
        peer: &PeerCredentials,
        registration: &Registration,
    ) -> Result<(), NotPermitted> {
        if self.is_open() {
            return Ok(());
        }
        self.permits(peer, Action::Name(&registration.name))?;
        for c in &registration.capabilities {
            self.permits(peer, Action::Capability(&c.name))?;
        }
        for topic in &registration.topics {
            self.permits(peer, Action::Subscribe(topic))?;
        }
        Ok(())
    }
}

impl Policy {
    /// Whether `peer` may still hold what agent `rec` registered (its name, capabilities and
    /// subscriptions), after a reload changed the policy.
    pub(crate) fn permits_held(
        &self,
        peer: &PeerCredentials,
        rec: &AgentRecord,
        reg: &Registry,
    ) -> Result<(), NotPermitted> {
        if self.is_open() {
            return Ok(());
        }
        self.permits(peer, Action::Name(&rec.name))?;
        for (capability, _) in &rec.capabilities {
            self.permits(peer, Action::Capability(capability))?;
        }
        for topic in &rec.topics {
            if let Some(entry) = reg.topic_entries.get(topic) {
                self.permits(peer, Action::Subscribe(&entry.name))?;
            }
        }
        Ok(())
    }
}

/// The router's side of a [`Policy`]: the policy, and the refusals' counter and rate-limited
/// logs (one line per kind of refusal at most once per
/// [`REFUSAL_LOG_INTERVAL`](crate::gate::REFUSAL_LOG_INTERVAL), with the number left
/// unlogged).
#[derive(Debug)]
pub(crate) struct Authorizer {
    /// The policy in force, shared with the registry (which the shards build send rights
    /// from): one value, replaced whole on reload.
    pub(crate) policy: Arc<Policy>,
    logs: [RefusalLog; 6],
}

impl Authorizer {
    pub(crate) fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            logs: Default::default(),
        }
    }

    /// The refusal when a policy is configured and `name` is held by a live agent of another
    /// uid (`holder`): names are owned by the uid that registered them first.
    pub(crate) fn name_owned(peer: &PeerCredentials, name: &str, holder: u32) -> NotPermitted {
        NotPermitted {
            uid: peer.uid,
            gid: peer.gid,
            what: Action::Name(name).to_string(),
            why: format!("a live agent of uid {holder} holds that name"),
            kind: Refusal::NameOwned,
        }
    }

    /// Counts a refusal in `requests_not_permitted` and logs it (rate-limited per kind).
    pub(crate) fn note(
        &mut self,
        peer: &PeerCredentials,
        refusal: &NotPermitted,
        stats: &RouterStats,
    ) {
        count(&stats.requests_not_permitted, 1);
        let slot = match refusal.kind {
            Refusal::Action(ActionKind::Name) => 0,
            Refusal::Action(ActionKind::Capability) => 1,
            Refusal::Action(ActionKind::Subscribe) => 2,
            Refusal::Action(ActionKind::Publish) => 3,
            Refusal::Action(ActionKind::Send) => 5,
            Refusal::NameOwned => 4,
        };
        if let Some(unlogged) = self.logs[slot].due(Instant::now()) {
            let pid = peer.pid;
            tracing::warn!(
                pid,
                unlogged_since_last = unlogged,
                "{refusal} (logged at most once every {:?} per kind)",
                crate::gate::REFUSAL_LOG_INTERVAL
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials { pid: 1, uid, gid }
    }

    fn patterns(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(p).unwrap()).collect()
    }

    #[test]
    fn the_first_matching_rule_decides_and_strangers_get_nothing() {
        let policy = Policy {
            rules: vec![
                Rule {
                    uids: vec![10],
                    names: patterns(&["a"]),
                    ..Rule::default()
                },
                Rule {
                    gids: vec![20],
                    names: patterns(&["*"]),
                    subscribe: patterns(&["t.*"]),
                    ..Rule::default()
                },
            ],
        };
        // uid 10 in gid 20: the first rule applies, not the wider second.
        assert!(policy.permits(&peer(10, 20), Action::Name("a")).is_ok());
        assert!(policy.permits(&peer(10, 20), Action::Name("b")).is_err());
        assert!(policy.permits(&peer(11, 20), Action::Name("b")).is_ok());
        assert!(policy
            .permits(&peer(11, 20), Action::Subscribe("t.x"))
            .is_ok());
        assert!(policy
            .permits(&peer(11, 20), Action::Publish("t.x"))
            .is_err());
        let e = policy
            .permits(&peer(12, 21), Action::Name("a"))
            .unwrap_err();
        assert!(e.to_string().contains("uid 12 gid 21"), "{e}");
    }

    #[test]
    fn a_star_only_ends_a_pattern() {
        assert!(Pattern::new("*x").is_err());
        assert!(Pattern::new("x**").is_err());
        let p = Pattern::new("x*").unwrap();
        assert!(p.matches("x") && p.matches("xy") && !p.matches("yx"));
    }

    #[test]
    fn refusals_are_counted_each_time_and_logged_per_kind() {
        let stats = RouterStats::default();
        let mut authz = Authorizer::new(Arc::new(Policy::open()));
        let refusal = Authorizer::name_owned(&peer(1, 1), "a", 2);
        for _ in 0..3 {
            authz.note(&peer(1, 1), &refusal, &stats);
        }
        let n = stats
            .requests_not_permitted
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, 3);
        assert!(
            authz.logs[4].due(Instant::now()).is_none(),
            "logged once, then quiet"
        );
    }
}
