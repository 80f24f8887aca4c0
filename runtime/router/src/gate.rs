//! Who may hold the control loop's room, decided before anything is read from a connection:
//! a peer whose credentials (SO_PEERCRED, taken by the kernel at `connect`) are not on the
//! allow-list is refused as it is accepted, and one uid may hold at most
//! `handshakes_per_uid_max` connections in their handshake (and, when set,
//! `agents_per_uid_max` agents). So silent connections, a stranger's or an allowed user's,
//! cannot fill the handshake slots everyone shares. Refusals are counted and logged at most
//! once per [`REFUSAL_LOG_INTERVAL`] per kind, with the number left unlogged, so a flood of
//! them cannot flood the log either.

use crate::config::RouterConfig;
use crate::handshake;
use crate::server::{AllowList, HandshakeError};
use crate::stats::{count, RouterStats};
use agentwire_shm::control::{ControlConn, PeerCredentials, RefuseReason};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often one kind of refusal at accept is logged, and one kind of any other event a
/// peer can cause again and again (a corrupt ring, garbage on its socket, a stale agent):
/// each is counted, and its log line is rate-limited through a [`RefusalLog`].
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one uid holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// Connections in their handshake (status queries included).
    handshakes: usize,
    /// Registered agents.
    agents: usize,
}

/// One kind of refusal's (or other peer-triggered event's) log: a line at most once per
/// interval, with the count it stood for.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Whether to log now; when so, how many refusals went unlogged before this one.
    pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if !due {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The per-uid accounting and the refusals at accept.
#[derive(Debug)]
pub(crate) struct Gate {
    held: HashMap<u32, Held>,
    handshakes_per_uid_max: usize,
    agents_per_uid_max: Option<usize>,
    strangers: RefusalLog,
    over_limit: RefusalLog,
}

impl Gate {
    pub(crate) fn new(config: &RouterConfig) -> Self {
        // A limit of 0 would refuse every connection: 1 is the least that serves anyone.
        Self {
            held: HashMap::new(),
            handshakes_per_uid_max: config.handshakes_per_uid_max.max(1),
            agents_per_uid_max: config.agents_per_uid_max.map(|n| n.max(1)),
            strangers: RefusalLog::default(),
            over_limit: RefusalLog::default(),
        }
    }

    /// Decides, before reading anything, whether the peer just accepted may begin its
    /// handshake; when it may, counts the handshake against its uid. When it may not, the
    /// connection is refused, counted and (rate-limited) logged here, and dropped by the
    /// caller.
    pub(crate) fn begin_handshake(
        &mut self,
        conn: &ControlConn,
        peer: &PeerCredentials,
        allow: &AllowList,
        stats: &RouterStats,
    ) -> bool {
        if !allow.admits(peer, conn.peer_groups()) {
            count(&stats.connections_not_permitted, 1);
            let error = HandshakeError::NotPermitted(*peer);
            self.refuse(conn, peer, RefuseReason::NotPermitted, &error, stats);
            return false;
        }
        let held = self.held.entry(peer.uid).or_default();
        if held.handshakes >= self.handshakes_per_uid_max {
            count(&stats.connections_over_uid_limit, 1);
            let error = HandshakeError::PerUidLimit {
                uid: peer.uid,
                held: self.handshakes_per_uid_max,
                what: "connections in their handshake",
                key: "handshakes_per_uid_max",
            };
            self.refuse(conn, peer, RefuseReason::PerUidLimit, &error, stats);
            return false;
        }
        held.handshakes += 1;
        true
    }

    /// A handshake of `uid` ended without an agent (refused, closed, timed out).
    pub(crate) fn end_handshake(&mut self, uid: u32) {
        self.update(uid, |held| {
            held.handshakes = held.handshakes.saturating_sub(1)
        });
    }

    /// Whether `uid` may register one more agent.
    pub(crate) fn may_register(&self, uid: u32) -> Result<(), HandshakeError> {
        let Some(max) = self.agents_per_uid_max else {
            return Ok(());
        };
        let agents = self.held.get(&uid).map_or(0, |h| h.agents);
        if agents < max {
            return Ok(());
        }
        Err(HandshakeError::PerUidLimit {
            uid,
            held: max,
            what: "agents",
            key: "agents_per_uid_max",
        })
    }

    /// A handshake of `uid` became a registered agent.
    pub(crate) fn registered(&mut self, uid: u32) {
        self.update(uid, |held| {
            held.handshakes = held.handshakes.saturating_sub(1);
            held.agents += 1;
        });
    }

    /// An agent of `uid` left.
    pub(crate) fn agent_left(&mut self, uid: u32) {
        self.update(uid, |held| held.agents = held.agents.saturating_sub(1));
    }

    /// Counts a refusal for a per-uid limit found after accept (at registration) and logs it
    /// under the same rate limit.
    pub(crate) fn note_over_limit(
        &mut self,
        peer: &PeerCredentials,
        error: &HandshakeError,
        stats: &RouterStats,
    ) {
        count(&stats.connections_over_uid_limit, 1);
        self.log(RefuseReason::PerUidLimit, peer, error);
    }

    fn update(&mut self, uid: u32, change: impl FnOnce(&mut Held)) {
        if let Some(held) = self.held.get_mut(&uid) {
            change(held);
            if held.handshakes == 0 && held.agents == 0 {
                self.held.remove(&uid);
            }
        }
    }

    fn refuse(
        &mut self,
        conn: &ControlConn,
        peer: &PeerCredentials,
        reason: RefuseReason,
        error: &HandshakeError,
        stats: &RouterStats,
    ) {
        count(&stats.handshakes_refused, 1);
        self.log(reason, peer, error);
        handshake::refuse_unread(conn, reason, error);
    }

    fn log(&mut self, reason: RefuseReason, peer: &PeerCredentials, error: &HandshakeError) {
        let log = match reason {
            RefuseReason::NotPermitted => &mut self.strangers,
            _ => &mut self.over_limit,
        };
        if let Some(unlogged) = log.due(Instant::now()) {
            let (pid, uid, gid) = (peer.pid, peer.uid, peer.gid);
            tracing::warn!(
                pid,
                uid,
                gid,
                unlogged_since_last = unlogged,
                "refused a connection: {error} (logged at most once every {REFUSAL_LOG_INTERVAL:?})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerCredentials {
        PeerCredentials {
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    #[test]
    fn a_refusal_is_logged_once_per_interval_with_the_count_it_stands_for() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.due(start), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.due(start + Duration::from_secs(1)), None);
        }
        assert_eq!(log.due(start + REFUSAL_LOG_INTERVAL), Some(1000));
        assert_eq!(log.due(start + REFUSAL_LOG_INTERVAL), None);
    }

    #[test]
    fn a_uid_holds_at_most_its_handshakes_and_agents_and_gets_them_back() {
        let config = RouterConfig {
            handshakes_per_uid_max: 2,
            agents_per_uid_max: Some(1),
            ..RouterConfig::new("/nonexistent/s.sock".into())
        };
        let mut gate = Gate::new(&config);
        let stats = RouterStats::default();
        let allow = AllowList::current_user();
        let peer = me();
        let (server, _client) = ControlConn::pair().unwrap();
        assert!(gate.begin_handshake(&server, &peer, &allow, &stats));
        assert!(gate.begin_handshake(&server, &peer, &allow, &stats));
        assert!(!gate.begin_handshake(&server, &peer, &allow, &stats));
        assert_eq!(count_of(&stats.connections_over_uid_limit), 1);
        gate.registered(peer.uid);
        assert!(gate.may_register(peer.uid).is_err());
        assert!(gate.begin_handshake(&server, &peer, &allow, &stats));
        gate.agent_left(peer.uid);
        gate.end_handshake(peer.uid);
        gate.end_handshake(peer.uid);
        assert!(gate.held.is_empty(), "{:?}", gate.held);
        assert!(!gate.begin_handshake(&server, &peer, &AllowList::nobody(), &stats));
        assert_eq!(count_of(&stats.connections_not_permitted), 1);
        assert_eq!(count_of(&stats.handshakes_refused), 2);
    }

    fn count_of(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}
