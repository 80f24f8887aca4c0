//! The control plane: one thread, one epoll set, every connection a small state machine.
//! It accepts, runs each handshake one message at a time under that step's own deadline,
//! admits agents, answers their requests and status queries, watches each agent's pidfd,
//! and checks liveness. Nothing here blocks on a connection: sockets are non-blocking and
//! a send that would block drops that connection, so one slow or silent client never
//! delays anyone else.

use crate::admission::{choose_shard, Admission, AdmitError};
use crate::commands::{CommandSender, RouterCmd};
use crate::config::RouterConfig;
use crate::endpoint::{EndpointKind, EndpointRequest, EndpointRings};
use crate::gate::{Gate, RefusalLog, REFUSAL_LOG_INTERVAL};
use crate::handshake::{self, Next, Policy, Step};
use crate::liveness::{self, Progress};
use crate::policy::{Authorizer, NotPermitted};
use crate::server::{AllowList, ControlListener, HandshakeError, HANDSHAKE_STEP_TIMEOUT};
use crate::session;
use crate::shared::{forget_agent, Removal, Shared};
use crate::stats::count;
use crate::status::{agent_page, route_page, status_first_page};
use agentwire_shm::control::{
    ClientMsg, ControlConn, ControlError, PeerCredentials, RefuseReason, ServerMsg,
};
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections in their handshake at once; more are closed at once (and counted), so a
/// flood of connections cannot grow the loop's memory without bound. Peers not on the
/// allow-list never take one, and one uid takes at most `handshakes_per_uid_max` (`gate`).
pub const HANDSHAKES_PENDING_MAX: usize = 1024;
/// Connections accepted per wakeup before the loop serves the others again.
const ACCEPTS_PER_WAKE_MAX: usize = 64;
/// Events taken per epoll wait.
const EVENTS_PER_WAIT_MAX: usize = 256;
/// Longest epoll wait: bounds how late a reload or a liveness check runs.
const WAIT_MAX: Duration = Duration::from_millis(250);
/// Longest the control loop keeps connections open at shutdown for the routing cores to
/// finish (their drain and settling are bounded by twice `SHUTDOWN_WAIT`).
const CORES_FINISH_WAIT: Duration = Duration::from_secs(5);

/// Tokens: the listener, the loop's wake bell, one per connection slot (its socket), and
/// one per watched process (its pidfd, the pid with [`PROCESS_TOKEN`] set).
const LISTENER: u64 = 0;
const WAKE: u64 = 1;
const FIRST_SLOT_TOKEN: u64 = 2;
const PROCESS_TOKEN: u64 = 1 << 63;

fn socket_token(slot: u64) -> u64 {
    FIRST_SLOT_TOKEN + slot
}

/// One agent process watched through its pidfd, for every agent it registered: while the
/// pidfd is held the pid cannot name another process, so one pidfd serves them all.
struct Watch {
    pidfd: OwnedFd,
    slots: Vec<u64>,
}

/// One connection and where it is.
struct Conn {
    conn: ControlConn,
    peer: PeerCredentials,
    state: ConnState,
}

enum ConnState {
    /// In its handshake; closed if the step's deadline passes.
    Handshake { step: Step, deadline: Instant },
    /// An admitted agent, its process watched through a pidfd ([`Watch`]).
    Agent { agent_id: u32, shard: usize },
}

/// An endpoint registered in-process.
struct EndpointEntry {
    shard: usize,
    kind: EndpointKind,
    remotes: Vec<u32>,
}

/// Why a connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Close {
    /// The peer closed, said goodbye, or the socket failed.
    Gone,
    /// An agent's process exited while its socket lived on elsewhere.
    Exited,
    /// A routing core dropped the agent: one of its rings failed validation.
    Corrupt,
    /// A subscriber that stayed behind (slow-subscriber policy).
    Slow,
    /// A reload took away what it holds (the allow-list or the policy), and why.
    Revoked(String),
}

/// The control loop's state; [`ControlLoop::run`] runs it on its own thread.
pub(crate) struct ControlLoop {
    epoll: OwnedFd,
    listener: ControlListener,
    shared: Arc<Shared>,
    shard_cmds: Vec<CommandSender>,
    config: RouterConfig,
    conns: HashMap<u64, Conn>,
    watched: HashMap<u32, Watch>,
    next_slot: u64,
    /// Slots in their handshake (status queries too): the only ones with a deadline, so
    /// deadlines are looked for here and not over every agent's connection.
    handshaking: HashSet<u64>,
    /// Who may begin a handshake, and what each uid holds.
    gate: Gate,
    agents_per_shard: Vec<usize>,
    next_agent_id: u32,
    /// In-process and gateway endpoints by id, with their shard and remote agents.
    endpoints: HashMap<u32, EndpointEntry>,
    /// Remote agents behind a gateway: id → gateway id.
    remotes: HashMap<u32, u32>,
    /// Removals a full shard queue could not take yet (retried every wakeup).
    removals_waiting: Vec<(usize, u32)>,
    progress: HashMap<u32, Progress>,
    liveness_due: Instant,
    /// Rate-limited logs of what peers can cause again and again (each is counted):
    /// garbage on a control socket (one limit for all peers, as a peer can fork new pids
    /// faster than any per-pid limit forgets them), agents removed for a corrupt ring or a
    /// subscriber left behind, and agents going stale or live again.
    garbage_log: RefusalLog,
    removal_log: RefusalLog,
    liveness_log: RefusalLog,
    /// The authorization policy, with its refusals' rate-limited logs.
    authz: Authorizer,
}

impl ControlLoop {
    /// Sets up the epoll set over the listener and the shared wake bell.
    pub(crate) fn new(
        listener: ControlListener,
        shared: Arc<Shared>,
        shard_cmds: Vec<CommandSender>,
        config: RouterConfig,
        first_agent_id: u32,
    ) -> std::io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let readable = epoll::EventFlags::IN;
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(LISTENER),
            readable,
        )?;
        let wake = shared.control_wake.as_fd();
        epoll::add(&epoll, wake, epoll::EventData::new_u64(WAKE), readable)?;
        let shards = shard_cmds.len();
        let gate = Gate::new(&config);
        let authz = Authorizer::new(
            shared
                .registry
                .lock()
                .expect("registry lock")
                .policy
                .clone(),
        );
        Ok(Self {
            epoll,
            listener,
            shared,
            shard_cmds,
            config,
            conns: HashMap::new(),
            watched: HashMap::new(),
            next_slot: 0,
            handshaking: HashSet::new(),
            gate,
            agents_per_shard: vec![0; shards],
            next_agent_id: first_agent_id,
            endpoints: HashMap::new(),
            remotes: HashMap::new(),
            removals_waiting: Vec::new(),
            progress: HashMap::new(),
            liveness_due: Instant::now() + liveness::LIVENESS_CHECK_INTERVAL,
            garbage_log: RefusalLog::default(),
            removal_log: RefusalLog::default(),
            liveness_log: RefusalLog::default(),
            authz,
        })
    }

    /// Serves until shutdown, then closes every connection and removes every agent.
    pub(crate) fn run(mut self) {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT_MAX);
        // SYNC POINT: shutdown (the Release store in `RouterControl::shutdown`).
        while !self.shared.shutdown.load(Ordering::Acquire) {
            events.clear();
            let timeout = self.wait_timeout();
            let ts = rustix::time::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            let spare = rustix::buffer::spare_capacity(&mut events);
            if let Err(e) = epoll::wait(&self.epoll, spare, Some(&ts)) {
                if e != rustix::io::Errno::INTR {
                    tracing::error!("control loop: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events {
                self.dispatch(event.data.u64());
            }
            self.housekeeping();
        }
        self.wait_for_cores();
        // The routing cores finish on their own: they give up on what they cannot route and
        // nack senders through rings they still hold, then mark every segment closed. So
        // connections are only dropped here, never removed from the cores (a removal would
        // take a sender's ring away before its nacks are written).
        self.conns.clear();
        self.watched.clear();
    }

    /// At shutdown, waits (bounded) until every routing core that ran has finished: agents
    /// learn from their segment, not from a closed connection, that the router is done,
    /// and a sender waiting for its last verdict gets it.
    fn wait_for_cores(&self) {
        let deadline = Instant::now() + CORES_FINISH_WAIT;
        // SYNC POINT: cores finished (the Release adds at the end of `RoutingCore::finish`).
        while self.shared.cores_finished.load(Ordering::Acquire)
            < self.shared.cores_started.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Until the nearest handshake deadline or liveness check, at most [`WAIT_MAX`].
    fn wait_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut due = (now + WAIT_MAX).min(self.liveness_due);
        for slot in &self.handshaking {
            if let Some(ConnState::Handshake { deadline, .. }) =
                self.conns.get(slot).map(|c| &c.state)
            {
                due = due.min(*deadline);
            }
        }
        due.saturating_duration_since(now)
    }

    fn dispatch(&mut self, token: u64) {
        match token {
            LISTENER => self.accept(),
            WAKE => {
                self.shared.control_wake.wait(Duration::ZERO);
            }
            t if t & PROCESS_TOKEN != 0 => {
                let pid = (t & !PROCESS_TOKEN) as u32;
                let slots = self.watched.get(&pid).map(|w| w.slots.clone());
                for slot in slots.unwrap_or_default() {
                    self.close(slot, Close::Exited);
                }
            }
            t => self.serve(t - FIRST_SLOT_TOKEN),
        }
    }

    /// Deadlines, the allow-list reload, waiting removals and liveness.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        if !self.handshaking.is_empty() {
            let conns = &self.conns;
            let expired: Vec<u64> = self
                .handshaking
                .iter()
                .copied()
                .filter(|slot| {
                    let state = conns.get(slot).map(|c| &c.state);
                    matches!(state, Some(ConnState::Handshake { deadline, .. }) if *deadline <= now)
                })
                .collect();
            for slot in expired {
                let stats = &self.shared.stats[0];
                count(&stats.handshakes_timed_out, 1);
                let error = HandshakeError::TimedOut(HANDSHAKE_STEP_TIMEOUT);
                if let Some(c) = self.conns.get(&slot) {
                    tracing::debug!(pid = c.peer.pid, "closing connection: {error}");
                }
                self.close(slot, Close::Gone);
            }
        }
        self.serve_endpoint_requests();
        self.serve_removal_requests();
        let reloaded = self.shared.reloaded.lock().expect("reload lock").take();
        if let Some((allow, policy)) = reloaded {
            self.apply_reload(allow, policy);
        }
        if !self.removals_waiting.is_empty() {
            let cmds = &self.shard_cmds;
            self.removals_waiting.retain(|&(shard, agent_id)| {
                cmds[shard]
                    .try_send(RouterCmd::Remove { agent_id })
                    .is_err()
            });
        }
        if let Some(timeout) = self.config.liveness_timeout {
            if now >= self.liveness_due {
                self.liveness_due = now + liveness::LIVENESS_CHECK_INTERVAL;
                liveness::check_liveness(
                    &self.shared,
                    &mut self.progress,
                    &mut self.liveness_log,
                    timeout,
                );
            }
        }
    }

    /// Takes waiting connections into the epoll set, each with its first step's deadline.
    /// Before anything is read, a peer not on the allow-list, or whose uid holds its share of
    /// handshakes already, is refused and closed (`gate`): it never takes a slot.
    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE_MAX {
            let (conn, peer) = match self.listener.accept_pending() {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    return;
                }
            };
            let stats = &self.shared.stats[0];
            if !self
                .gate
                .begin_handshake(&conn, &peer, self.listener.allow(), stats)
            {
                continue;
            }
            if self.handshaking.len() >= HANDSHAKES_PENDING_MAX {
                // Dropped unread: a flood of connections waits on nobody's time but its own.
                count(&stats.handshakes_refused, 1);
                self.gate.end_handshake(peer.uid);
                continue;
            }
            let slot = self.next_slot;
            self.next_slot += 1;
            let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
            let data = epoll::EventData::new_u64(socket_token(slot));
            if let Err(e) = epoll::add(&self.epoll, &conn, data, flags) {
                tracing::warn!("control socket: cannot watch a connection: {e}");
                self.gate.end_handshake(peer.uid);
                continue;
            }
            let deadline = Instant::now() + HANDSHAKE_STEP_TIMEOUT;
            let state = ConnState::Handshake {
                step: Step::Hello,
                deadline,
            };
            self.handshaking.insert(slot);
            self.pending_changed();
            self.conns.insert(slot, Conn { conn, peer, state });
        }
    }

    /// Publishes how many connections are in their handshake (a gauge).
    fn pending_changed(&self) {
        let pending = &self.shared.stats[0].handshakes_pending;
        pending.store(self.handshaking.len() as u64, Ordering::Relaxed);
    }

    /// Reads one message from the connection in `slot` and acts on it.
    fn serve(&mut self, slot: u64) {
        let Some(c) = self.conns.get(&slot) else {
            return;
        };
        let msg = match c.conn.recv::<ClientMsg>(Some(Duration::ZERO)) {
            Ok((msg, _)) => msg,
            // Woken for hangup with nothing to read, or a spurious wakeup.
            Err(ControlError::Timeout(_)) if !c.conn.peer_closed() => return,
            Err(ControlError::Malformed(detail)) => {
                self.garbage(slot, &detail);
                return;
            }
            Err(_) => {
                self.close(slot, Close::Gone);
                return;
            }
        };
        match c.state {
            ConnState::Handshake { step, .. } => self.handshake_step(slot, step, msg),
            ConnState::Agent { agent_id, .. } => {
                match session::answer(&self.shared, agent_id, msg, &mut self.authz, &c.peer) {
                    Some(reply) => {
                        if c.conn.send(&reply, &[]).is_err() {
                            self.close(slot, Close::Gone);
                        }
                    }
                    None => self.close(slot, Close::Gone),
                }
            }
        }
    }

    /// Garbage on a connection: counted, logged at most once per interval; a connection
    /// still in its handshake is refused and closed, an agent is told and kept.
    fn garbage(&mut self, slot: u64, detail: &str) {
        let Some(c) = self.conns.get(&slot) else {
            return;
        };
        let stats = &self.shared.stats[0];
        count(&stats.control_messages_malformed, 1);
        if let Some(unlogged) = self.garbage_log.due(Instant::now()) {
            let (pid, uid, gid) = (c.peer.pid, c.peer.uid, c.peer.gid);
            tracing::warn!(
                pid,
                uid,
                gid,
                unlogged_since_last = unlogged,
                "malformed control message: {detail} (logged at most once every \
                 {REFUSAL_LOG_INTERVAL:?})"
            );
        }
        match c.state {
            ConnState::Handshake { .. } => {
                count(&stats.handshakes_refused, 1);
                let error = HandshakeError::BadRequest(format!("malformed message: {detail}"));
                handshake::refuse(&c.conn, RefuseReason::BadRequest, &error);
                self.close(slot, Close::Gone);
            }
            ConnState::Agent { .. } => {
                let error = ServerMsg::Error {
                    detail: detail.to_string(),
                };
                if c.conn.send(&error, &[]).is_err() {
                    self.close(slot, Close::Gone);
                }
            }
        }
    }

    fn handshake_step(&mut self, slot: u64, mut step: Step, msg: ClientMsg) {
        let c = self.conns.get(&slot).expect("slot served");
        let policy = Policy {
            allow: self.listener.allow(),
            versions: self.listener.versions(),
        };
        match handshake::advance(&mut step, msg, &c.peer, &policy, &c.conn) {
            Next::Wait => {
                let deadline = Instant::now() + HANDSHAKE_STEP_TIMEOUT;
                let c = self.conns.get_mut(&slot).expect("slot served");
                c.state = ConnState::Handshake { step, deadline };
            }
            Next::Status => {
                // The first page of agents and of routes; the rest come a page at a time
                // (`StatusAgents`, `StatusRoutes`).
                let answer = ServerMsg::Status(status_first_page(&self.shared));
                self.answer_status(slot, step, &answer);
            }
            Next::StatusAgents(after) => {
                let agents = agent_page(&self.shared, after);
                let answer = ServerMsg::StatusAgents { agents };
                self.answer_status(slot, step, &answer);
            }
            Next::StatusRoutes(skip) => {
                let routes = route_page(&self.shared, skip as usize);
                let answer = ServerMsg::StatusRoutes { routes };
                self.answer_status(slot, step, &answer);
            }
            Next::Register(registration) => self.admit(slot, &registration),
            Next::Refuse { reason, error } => self.refuse(slot, reason, &error),
        }
    }

    /// Sends a status answer; the connection stays open for the next page (closed if the
    /// send fails), with a fresh deadline.
    fn answer_status(&mut self, slot: u64, step: Step, answer: &ServerMsg) {
        let Some(c) = self.conns.get_mut(&slot) else {
            return;
        };
        if c.conn.send(answer, &[]).is_err() {
            self.close(slot, Close::Gone);
            return;
        }
        let deadline = Instant::now() + HANDSHAKE_STEP_TIMEOUT;
        c.state = ConnState::Handshake { step, deadline };
    }

    fn refuse(&mut self, slot: u64, reason: RefuseReason, error: &HandshakeError) {
        if let Some(c) = self.conns.get(&slot) {
            count(&self.shared.stats[0].handshakes_refused, 1);
            tracing::info!(pid = c.peer.pid, "refused: {error}");
            handshake::refuse(&c.conn, reason, error);
        }
        self.close(slot, Close::Gone);
    }

    /// Admits the agent in `slot`: its pidfd first (refused if it cannot be taken, so its
    /// exit is never missed), then its segment and registry entry, then the answer.
    fn admit(&mut self, slot: u64, registration: &agentwire_shm::control::Registration) {
        let agents = self.agents_per_shard.iter().sum::<usize>();
        let agents_max = self.config.agents_max;
        if agents >= agents_max {
            self.refuse(slot, RefuseReason::Full, &HandshakeError::Full(agents_max));
            return;
        }
        let peer = self.conns.get(&slot).expect("slot served").peer;
        if let Err(error) = self.gate.may_register(peer.uid) {
            let stats = &self.shared.stats[0];
            self.gate.note_over_limit(&peer, &error, stats);
            self.refuse(slot, RefuseReason::PerUidLimit, &error);
            return;
        }
        if let Err(refusal) = self.authorize(&peer, registration) {
            self.refuse_not_permitted(slot, &peer, refusal);
            return;
        }
        let agent_id = match self.next_id() {
            Ok(id) => id,
            Err(detail) => {
                let error = HandshakeError::BadRequest(detail);
                self.refuse(slot, RefuseReason::BadRequest, &error);
                return;
            }
        };
        if let Err(e) = self.watch_process(slot) {
            let pid = self.conns.get(&slot).map_or(0, |c| c.peer.pid);
            let detail = format!("cannot watch process {pid}: {e}");
            let error = HandshakeError::BadRequest(detail);
            self.refuse(slot, RefuseReason::BadRequest, &error);
            return;
        }
        let c = self.conns.get(&slot).expect("slot served");
        let shard = choose_shard(&self.config, &self.agents_per_shard, c.peer.pid);
        let admission = self.admission(agent_id, shard);
        let admitted = admission.admit(&c.conn, &c.peer, registration);
        let pid = c.peer.pid;
        match admitted {
            Ok(()) => {}
            Err(AdmitError::Refused(detail)) => {
                let error = HandshakeError::BadRequest(detail);
                self.unwatch(pid, slot);
                self.refuse(slot, RefuseReason::BadRequest, &error);
                return;
            }
            Err(AdmitError::Failed(detail)) => {
                tracing::warn!(agent_id, "admitting agent failed: {detail}");
                self.unwatch(pid, slot);
                self.close(slot, Close::Gone);
                return;
            }
        }
        self.handshaking.remove(&slot);
        self.pending_changed();
        self.gate.registered(peer.uid);
        self.agents_per_shard[shard] += 1;
        count(&self.shared.stats[0].agents_admitted, 1);
        tracing::debug!(agent_id, shard, "agent admitted");
        let c = self.conns.get_mut(&slot).expect("slot served");
        c.state = ConnState::Agent { agent_id, shard };
    }

    /// Whether the policy lets `peer` register `registration`: its name, capabilities and
    /// topics, and, once a policy is configured, a name no live agent of another uid holds.
    /// The owner check scans the registry and the connections (control path, at
    /// registration only; no state to keep in step with removals).
    fn authorize(
        &self,
        peer: &PeerCredentials,
        registration: &agentwire_shm::control::Registration,
    ) -> Result<(), NotPermitted> {
        let policy = &self.authz.policy;
        if policy.is_open() {
            return Ok(());
        }
        policy.permits_registration(peer, registration)?;
        let holders: Vec<u32> = {
            let reg = self.shared.registry.lock().expect("registry lock");
            reg.agents
                .iter()
                .filter(|(_, rec)| rec.name == registration.name)
                .map(|(&id, _)| id)
                .collect()
        };
        if holders.is_empty() {
            return Ok(());
        }
        let other_uid = self.conns.values().find_map(|c| match c.state {
            ConnState::Agent { agent_id, .. }
                if c.peer.uid != peer.uid && holders.contains(&agent_id) =>
            {
                Some(c.peer.uid)
            }
            _ => None,
        });
        match other_uid {
            Some(holder) => Err(Authorizer::name_owned(peer, &registration.name, holder)),
            None => Ok(()),
        }
    }

    /// Refuses a registration the policy does not allow: counted (in `handshakes_refused`
    /// and `requests_not_permitted`) and logged at a rate limit per kind, unlike other
    /// refusals, since a hostile peer may repeat it at will.
    fn refuse_not_permitted(&mut self, slot: u64, peer: &PeerCredentials, refusal: NotPermitted) {
        let stats = &self.shared.stats[0];
        self.authz.note(peer, &refusal, stats);
        if let Some(c) = self.conns.get(&slot) {
            count(&stats.handshakes_refused, 1);
            let error = HandshakeError::NotAuthorized(refusal);
            handshake::refuse(&c.conn, RefuseReason::NotPermitted, &error);
        }
        self.close(slot, Close::Gone);
    }

    /// Watches the process of the peer in `slot` (a pidfd taken now, or the one already
    /// held for another of its agents) before it is admitted, so its exit is never missed.
    fn watch_process(&mut self, slot: u64) -> std::io::Result<()> {
        let c = self.conns.get(&slot).expect("slot served");
        let pid = c.peer.pid;
        if let Some(watch) = self.watched.get_mut(&pid) {
            if liveness::exited(&watch.pidfd) {
                return Err(std::io::Error::other("the process has already exited"));
            }
            watch.slots.push(slot);
            return Ok(());
        }
        let pidfd = liveness::peer_pidfd(&c.conn, pid)?;
        let data = epoll::EventData::new_u64(PROCESS_TOKEN | u64::from(pid));
        epoll::add(&self.epoll, &pidfd, data, epoll::EventFlags::IN)?;
        let slots = vec![slot];
        self.watched.insert(pid, Watch { pidfd, slots });
        Ok(())
    }

    /// Stops watching `pid` for the agent in `slot`; the pidfd closes with its last agent.
    fn unwatch(&mut self, pid: u32, slot: u64) {
        if let Some(watch) = self.watched.get_mut(&pid) {
            watch.slots.retain(|&s| s != slot);
            if watch.slots.is_empty() {
                // Closing the descriptor removes it from the epoll set.
                self.watched.remove(&pid);
            }
        }
    }

    /// Closes the connection in `slot`; an agent is removed from the registry and its shard.
    fn close(&mut self, slot: u64, why: Close) {
        let Some(c) = self.conns.remove(&slot) else {
            return;
        };
        // Closing a descriptor removes it from the epoll set.
        match c.state {
            ConnState::Handshake { .. } => {
                self.handshaking.remove(&slot);
                self.pending_changed();
                self.gate.end_handshake(c.peer.uid);
            }
            ConnState::Agent { agent_id, shard } => {
                self.gate.agent_left(c.peer.uid);
                self.unwatch(c.peer.pid, slot);
                match why {
                    Close::Exited => {
                        tracing::info!(agent_id, "agent process exited with its control socket still open elsewhere; removing it");
                        count(&self.shared.stats[0].agents_exited, 1);
                    }
                    Close::Corrupt | Close::Slow => {
                        if let Some(unlogged) = self.removal_log.due(Instant::now()) {
                            let why = if matches!(why, Close::Corrupt) {
                                "one of its rings failed validation"
                            } else {
                                "a subscriber that stayed behind"
                            };
                            tracing::warn!(
                                agent_id,
                                pid = c.peer.pid,
                                unlogged_since_last = unlogged,
                                "agent removed: {why} (logged at most once every \
                                 {REFUSAL_LOG_INTERVAL:?})"
                            );
                        }
                    }
                    Close::Revoked(why) => {
                        tracing::warn!(
                            agent_id,
                            pid = c.peer.pid,
                            "agent removed on reload: {why}"
                        );
                    }
                    Close::Gone => {}
                }
                forget_agent(&self.shared, agent_id);
                self.agents_per_shard[shard] -= 1;
                self.progress.remove(&agent_id);
                let cmd = RouterCmd::Remove { agent_id };
                if self.shard_cmds[shard].try_send(cmd).is_err() {
                    self.removals_waiting.push((shard, agent_id));
                }
            }
        }
    }

    /// Removes fully the agents a routing core asked to be removed (a corrupt ring, a
    /// subscriber too far behind): registry entry, names and routes, and the connection (the
    /// agent learns from its closed connection, and for a corrupt ring its closed segment;
    /// it may connect again and get fresh rings).
    fn serve_removal_requests(&mut self) {
        let requested = std::mem::take(
            &mut *self
                .shared
                .removals_requested
                .lock()
                .expect("removals lock"),
        );
        for (agent_id, why) in requested {
            let slot = self.conns.iter().find_map(|(&slot, c)| match c.state {
                ConnState::Agent { agent_id: id, .. } if id == agent_id => Some(slot),
                _ => None,
            });
            let close = match why {
                Removal::CorruptRing => Close::Corrupt,
                Removal::SlowSubscriber => Close::Slow,
            };
            match slot {
                Some(slot) => self.close(slot, close),
                None if self.endpoints.contains_key(&agent_id) => self.remove_endpoint(agent_id),
                None => {}
            }
        }
    }

    /// Puts a reloaded allow-list and policy in force: closes the connections of peers no
    /// longer allowed, removes agents whose registration the policy now refuses, and gives
    /// the shards the policy to build send rights from (a new generation once it is in the
    /// registry, so no shard rebuilds from the old one last).
    fn apply_reload(&mut self, allow: AllowList, policy: crate::policy::Policy) {
        tracing::info!(uids = ?allow.uids, gids = ?allow.gids, rules = policy.rules.len(), "allow-list and policy reloaded");
        let policy_changed = policy != *self.authz.policy;
        let revoked: Vec<(u64, String)> = {
            let mut reg = self.shared.registry.lock().expect("registry lock");
            if policy_changed {
                self.authz.policy = Arc::new(policy);
                reg.policy = self.authz.policy.clone();
            }
            self.conns
                .iter()
                .filter_map(|(&slot, c)| {
                    if !allow.admits(&c.peer, c.conn.peer_groups()) {
                        return Some((slot, "no longer on the allow-list".to_string()));
                    }
                    let ConnState::Agent { agent_id, .. } = c.state else {
                        return None;
                    };
                    let rec = reg.agents.get(&agent_id)?;
                    self.authz
                        .policy
                        .permits_held(&c.peer, rec, &reg)
                        .err()
                        .map(|refusal| (slot, refusal.to_string()))
                })
                .collect()
        };
        if policy_changed {
            crate::shared::bump(&self.shared);
        }
        self.listener.set_allow_list(allow);
        for (slot, why) in revoked {
            self.close(slot, Close::Revoked(why));
            // Counted once it is gone: a reader that sees the count sees the registry
            // without it.
            count(&self.shared.stats[0].agents_revoked, 1);
        }
    }

    /// Registers, extends and removes in-process endpoints as their owners asked.
    fn serve_endpoint_requests(&mut self) {
        let requests = std::mem::take(
            &mut *self
                .shared
                .endpoint_requests
                .lock()
                .expect("endpoint requests lock"),
        );
        for request in requests {
            match request {
                EndpointRequest::Register {
                    registration,
                    kind,
                    reply,
                } => {
                    let _ = reply.send(self.register_endpoint(&registration, kind));
                }
                EndpointRequest::AddRemote {
                    gateway,
                    registration,
                    send_rule,
                    reply,
                } => {
                    let _ = reply.send(self.add_remote(gateway, &registration, send_rule));
                }
                EndpointRequest::Remove { agent_id } => self.remove_endpoint(agent_id),
                EndpointRequest::RemoveRemotes { gateway, reply } => {
                    let remotes = self
                        .endpoints
                        .get(&gateway)
                        .map(|e| e.remotes.clone())
                        .unwrap_or_default();
                    for remote in &remotes {
                        self.remove_endpoint(*remote);
                    }
                    let _ = reply.send(Ok(remotes.len() as u32));
                }
                EndpointRequest::RemoveRemote { gateway, agent_id } => {
                    if self.remotes.get(&agent_id) == Some(&gateway) {
                        self.remove_endpoint(agent_id);
                    }
                }
                EndpointRequest::Session {
                    gateway,
                    agent_id,
                    msg,
                    reply,
                } => {
                    let _ = reply.send(self.remote_session(gateway, agent_id, msg));
                }
                EndpointRequest::ResolveTopic {
                    agent_id,
                    topic,
                    reply,
                } => {
                    let mut reg = self.shared.registry.lock().expect("registry lock");
                    let _ = reply.send(reg.hold_topic(agent_id, &topic));
                }
            }
        }
    }

    /// What admitting agent `agent_id` on `shard` needs.
    fn admission(&self, agent_id: u32, shard: usize) -> Admission<'_> {
        Admission {
            shared: &self.shared,
            config: &self.config,
            cmds: &self.shard_cmds[shard],
            agent_id,
            shard,
        }
    }

    /// The next agent id, and room for one more agent.
    fn next_id(&mut self) -> Result<u32, String> {
        let agents = self.agents_per_shard.iter().sum::<usize>();
        if agents >= self.config.agents_max {
            return Err(HandshakeError::Full(self.config.agents_max).to_string());
        }
        let id = self.next_agent_id;
        // Ids are never reused: not while this router runs (they only grow), nor after a
        // restart when the embedding daemon persists them (`agent_ids`).
        let Some(next) = id.checked_add(1) else {
            return Err("agent ids are exhausted".into());
        };
        if let Some(store) = &self.config.agent_id_store {
            let mut store = store.lock().expect("agent id store lock");
            store.reserve(id).map_err(|e| {
                tracing::error!("{e}");
                format!("cannot persist agent ids: {e}")
            })?;
        }
        self.next_agent_id = next;
        Ok(id)
    }

    fn register_endpoint(
        &mut self,
        registration: &agentwire_shm::control::Registration,
        kind: EndpointKind,
    ) -> Result<EndpointRings, String> {
        crate::server::validate_registration(registration)?;
        let agent_id = self.next_id()?;
        let shard = choose_shard(&self.config, &self.agents_per_shard, std::process::id());
        let admission = self.admission(agent_id, shard);
        let rings = admission
            .set_up(std::process::id(), None, registration)
            .map_err(|e| e.to_string())?;
        self.agents_per_shard[shard] += 1;
        count(&self.shared.stats[0].agents_admitted, 1);
        if kind != EndpointKind::InProcess {
            let mut reg = self.shared.registry.lock().expect("registry lock");
            if let Some(rec) = reg.agents.get_mut(&agent_id) {
                rec.gateway = Some(kind == EndpointKind::Link);
            }
        }
        let remotes = Vec::new();
        self.endpoints.insert(
            agent_id,
            EndpointEntry {
                shard,
                kind,
                remotes,
            },
        );
        tracing::debug!(agent_id, shard, ?kind, "endpoint registered");
        Ok(EndpointRings {
            agent_id,
            segment: rings.segment,
            tx_bell: rings.tx_bell,
            rx_bell: rings.rx_bell,
        })
    }

    /// A remote agent behind `gateway`: a registry entry whose frames use the gateway's
    /// rings (no rings of its own, so no command to the shard).
    fn add_remote(
        &mut self,
        gateway: u32,
        registration: &agentwire_shm::control::Registration,
        send_rule: Option<Arc<crate::policy::Rule>>,
    ) -> Result<u32, String> {
        crate::server::validate_registration(registration)?;
        let Some(entry) = self.endpoints.get(&gateway) else {
            return Err(format!("no gateway {gateway}"));
        };
        if !entry.kind.is_gateway() {
            return Err(format!("endpoint {gateway} is not a gateway"));
        }
        let shard = entry.shard;
        let agent_id = self.next_id()?;
        {
            let mut reg = self.shared.registry.lock().expect("registry lock");
            let Some(gw) = reg.agents.get(&gateway) else {
                return Err(format!("no gateway {gateway}"));
            };
            let placement = crate::registry::Placement {
                // No local process: 0 marks an agent behind a gateway (`agentwire agents`
                // shows it as remote).
                pid: 0,
                peer: None,
                segment: gw.segment.clone(),
                shard,
                via: Some(gateway),
                send_rule,
                congested: gw.congested.clone(),
            };
            reg.enter(agent_id, registration, placement)?;
        }
        crate::shared::bump(&self.shared);
        self.agents_per_shard[shard] += 1;
        self.remotes.insert(agent_id, gateway);
        if let Some(entry) = self.endpoints.get_mut(&gateway) {
            entry.remotes.push(agent_id);
        }
        Ok(agent_id)
    }

    /// A remote agent's control request, answered as a local agent's would be, without a
    /// policy check (the gateway authorizes by network identity).
    fn remote_session(
        &mut self,
        gateway: u32,
        agent_id: u32,
        msg: ClientMsg,
    ) -> Result<ServerMsg, String> {
        if self.remotes.get(&agent_id) != Some(&gateway) {
            return Err(format!("agent {agent_id} is not behind gateway {gateway}"));
        }
        let peer = PeerCredentials {
            pid: std::process::id(),
            uid: 0,
            gid: 0,
        };
        let mut open = Authorizer::new(Arc::new(crate::policy::Policy::open()));
        Ok(
            session::answer(&self.shared, agent_id, msg, &mut open, &peer)
                .unwrap_or(ServerMsg::Done),
        )
    }

    /// Removes an endpoint (with its remote agents) or one remote agent.
    fn remove_endpoint(&mut self, agent_id: u32) {
        if let Some(gateway) = self.remotes.remove(&agent_id) {
            let shard = self.endpoints.get_mut(&gateway).map(|e| {
                e.remotes.retain(|&r| r != agent_id);
                e.shard
            });
            forget_agent(&self.shared, agent_id);
            if let Some(shard) = shard {
                self.agents_per_shard[shard] -= 1;
            }
            return;
        }
        let Some(entry) = self.endpoints.remove(&agent_id) else {
            return;
        };
        for remote in &entry.remotes {
            self.remotes.remove(remote);
            forget_agent(&self.shared, *remote);
            self.agents_per_shard[entry.shard] -= 1;
        }
        forget_agent(&self.shared, agent_id);
        self.agents_per_shard[entry.shard] -= 1;
        let cmd = RouterCmd::Remove { agent_id };
        if self.shard_cmds[entry.shard].try_send(cmd).is_err() {
            self.removals_waiting.push((entry.shard, agent_id));
        }
    }
}
