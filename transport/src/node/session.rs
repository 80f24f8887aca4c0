//! One node link while it is up: a gateway endpoint ([`EndpointKind::Link`]) stands for
//! the peer's agents, each a remote agent of the gateway (a proxy named `peer/agent`, with
//! the agent's capabilities and features), plus one proxy named after the peer that
//! subscribes to every topic some agent of the peer subscribes to, so a publish crosses
//! the link once and is fanned out on the other side.
//!
//! Three loops share the session on the links' executor (`RefCell`s, never borrowed across
//! an await):
//! - the reader: control messages (registry increments, topic ids, pings) and data frames,
//!   whose source and destination it translates to this node's ids before sending them
//!   into the router (waiting, and so stopping the socket, while the ring is full);
//! - the writer: what the router delivered to the gateway, translated to the peer's ids,
//!   one socket write per batch;
//! - the keeper: registry changes to send (every `sync_interval`), pings, and the silence
//!   deadline.
//!
//! Nothing crosses two links: a frame whose source is another link's proxy is not
//! forwarded (the node it came from reached every node it links to itself), and proxies
//! are never announced to other peers.

use super::config::NodeConfig;
use super::protocol::{self, LinkMsg};
use super::status::{add, LinkState, LinkStatus, NodeStats};
use crate::connection::{bell_stream, wait_for_gateway, within, Wakeup, Woken};
use agentwire_router::endpoint::{Endpoint, EndpointKind, EndpointRegistrar, GatewayControl};
use agentwire_shm::control::{ClientMsg, Registration, ServerMsg, AGENT_NAME_BYTES_MAX};
use agentwire_shm::ring::ClaimError;
use agentwire_shm::stream_frames::FrameAssembler;
use agentwire_shm::wire::{FrameHeader, FrameKind, FLAG_ACK_REQUESTED, HEADER_BYTES};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::UnixStream;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames taken from the gateway's ring per read call.
const FRAMES_PER_READ: usize = 64;
/// Empty polls of the writer that only yield before it waits on the doorbell.
const IDLE_YIELDS: u32 = 4;
/// The reader's first and longest sleep while the router's ring is full.
const FULL_SLEEP_MIN: Duration = Duration::from_micros(20);
const FULL_SLEEP_MAX: Duration = Duration::from_millis(1);
/// The longest an idle writer waits before it looks at the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Frames sent and not yet confirmed by the peer, at most: the writer stops taking frames
/// from the router past this (the gateway's ring fills; the router defers).
const IN_FLIGHT_MAX: usize = 65_536;
/// The reader confirms after a socket read once this many frames are unconfirmed and the
/// router took them all (else the keeper does, every `sync_interval`).
const CONFIRM_EVERY: u64 = 1024;
/// How long a link that went down waits for the router to take its nacks.
const NACK_DRAIN: Duration = Duration::from_secs(1);

/// What every link of a node shares (one executor).
pub(crate) struct NodeShared {
    pub(crate) config: NodeConfig,
    pub(crate) registrar: EndpointRegistrar,
    pub(crate) stats: Arc<NodeStats>,
    pub(crate) stop: Arc<AtomicBool>,
    /// One per configured peer, in the configuration's order.
    pub(crate) links: Vec<Arc<LinkStatus>>,
    /// Whether a session with each peer runs (one link per pair of nodes).
    pub(crate) active: RefCell<Vec<bool>>,
    /// Every proxy of every link: never announced to a peer, never forwarded from.
    pub(crate) proxies: RefCell<FxHashSet<u32>>,
    /// The epoch of pings.
    pub(crate) clock: Instant,
    /// Jobs running on the blocking pool: the executor waits for them before it ends (a
    /// job whose awaiting task was dropped when its link ended still answers into the
    /// executor).
    pub(crate) blocking_jobs: Arc<AtomicUsize>,
}

impl NodeShared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `job` on the executor's blocking pool (it waits on the router's control loop).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let jobs = self.blocking_jobs.clone();
        jobs.fetch_add(1, Ordering::Relaxed);
        glommio::executor()
            .spawn_blocking(move || {
                let answer = job();
                jobs.fetch_sub(1, Ordering::Relaxed);
                answer
            })
            .await
    }

    /// Waits (bounded) until no blocking job runs, before the executor ends.
    pub(crate) async fn await_blocking_jobs(&self) {
        let deadline = Instant::now() + agentwire_router::endpoint::ENDPOINT_REQUEST_TIMEOUT * 2;
        while self.blocking_jobs.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // The pool answers right after the job returns.
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    Closed,
    Silent,
    Stopped,
    Malformed(String),
    Io(std::io::Error),
    Router(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("the peer closed the link"),
            End::Silent => f.write_str("the peer went silent (no ping answered)"),
            End::Stopped => f.write_str("stopping"),
            End::Malformed(why) => write!(f, "malformed traffic: {why}"),
            End::Io(e) => write!(f, "socket error: {e}"),
            End::Router(why) => write!(f, "the router refused the link's gateway: {why}"),
        }
    }
}

/// A frame sent to the peer and not yet confirmed: what its nack needs.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Its sender here.
    source: u32,
    correlation: u64,
    /// A nack is owed if it is lost: every unicast, anycast and feature frame, and a
    /// publish whose sender asked for an ack.
    nack_owed: bool,
}

/// A peer agent's proxy on this node.
struct Proxy {
    local: u32,
    /// What the peer announced (topics included).
    announced: Registration,
}

/// Counts a peer agent being added (see `Session::adding`) while it lives; wakes the
/// writer when it goes.
struct Adding<'s, 'n> {
    session: &'s Session<'n>,
}

impl<'s, 'n> Adding<'s, 'n> {
    fn new(session: &'s Session<'n>) -> Self {
        session.adding.set(session.adding.get() + 1);
        Self { session }
    }
}

impl Drop for Adding<'_, '_> {
    fn drop(&mut self) {
        self.session.adding.set(self.session.adding.get() - 1);
        self.session.answered.notify();
    }
}

/// A link that is up (after both `Hello`s).
struct Session<'n> {
    node: &'n NodeShared,
    status: &'n LinkStatus,
    peer: String,
    gateway: RefCell<Endpoint>,
    control: GatewayControl,
    /// Subscribes, for the peer, to the topics its agents subscribe to.
    node_proxy: u32,
    /// The peer's agents by their id there.
    proxies: RefCell<FxHashMap<u32, Proxy>>,
    /// Proxy id here to agent id there.
    peer_of: RefCell<FxHashMap<u32, u32>>,
    /// Topics the node proxy holds: name to (id here, how many peer agents subscribe).
    node_topics: RefCell<HashMap<String, (u32, u32)>>,
    /// The peer's topic ids to this node's.
    topic_in: RefCell<FxHashMap<u32, u32>>,
    /// What this node announced: its agents by id, as announced.
    exported: RefCell<FxHashMap<u32, Registration>>,
    seen_generation: Cell<u64>,
    /// Control frames for the writer.
    pending: RefCell<Vec<u8>>,
    answered: Wakeup,
    last_heard: Cell<Instant>,
    /// The reader holds a frame the router has no room for yet (backpressure): the peer
    /// is not silent, this side is not reading. The keeper does not count it as silence.
    reader_waiting: Cell<bool>,
    /// Peer agents being added to the router: their proxies may be routed to before the
    /// link has recorded them, so the writer takes nothing from the gateway meanwhile (a
    /// frame for such a proxy would be nacked as unknown).
    adding: Cell<u32>,
    /// Frames sent and not yet confirmed, oldest first.
    in_flight: RefCell<std::collections::VecDeque<InFlight>>,
    /// Data frames taken off the link (sent into the router or dropped and counted).
    received: Cell<u64>,
    /// The last `received` confirmed to the peer.
    confirmed: Cell<u64>,
    /// The last count the peer confirmed.
    peer_confirmed: Cell<u64>,
    /// Frames the writer could not forward, to nack to their senders.
    nacks_owed: RefCell<Vec<InFlight>>,
}

/// Runs an established link (both `Hello`s exchanged) until it ends.
pub(crate) async fn run<S>(
    stream: S,
    assembler: FrameAssembler,
    peer_index: usize,
    node: &NodeShared,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = &node.links[peer_index];
    let peer = status.peer.clone();
    let registrar = node.registrar.clone();
    let ring_capacity_bytes = node.config.ring_capacity_bytes;
    let gateway_peer = peer.clone();
    let joined = node
        .blocking(move || join_router(&registrar, &gateway_peer, ring_capacity_bytes))
        .await;
    let (gateway, node_proxy) = match joined {
        Ok(joined) => joined,
        Err(e) => return End::Router(e),
    };
    let mut bell = match bell_stream(&gateway) {
        Ok(bell) => bell,
        Err(e) => return End::Io(e),
    };
    node.proxies.borrow_mut().insert(node_proxy);
    let session = Session {
        node,
        status,
        peer,
        control: gateway.gateway_control(),
        gateway: RefCell::new(gateway),
        node_proxy,
        proxies: RefCell::default(),
        peer_of: RefCell::default(),
        node_topics: RefCell::default(),
        topic_in: RefCell::default(),
        exported: RefCell::default(),
        seen_generation: Cell::new(0),
        pending: RefCell::default(),
        answered: Wakeup::default(),
        last_heard: Cell::new(Instant::now()),
        reader_waiting: Cell::new(false),
        adding: Cell::new(0),
        in_flight: RefCell::default(),
        received: Cell::new(0),
        confirmed: Cell::new(0),
        peer_confirmed: Cell::new(0),
        nacks_owed: RefCell::default(),
    };
    add(&node.stats.links_up, 1);
    add(&node.stats.link_connects, 1);
    add(&status.connects, 1);
    status.set_state(LinkState::Up);
    tracing::info!(peer = %session.peer, "node link up");
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut assembler = assembler;
    let end = futures_lite::future::or(
        session.read_loop(&mut reader, &mut assembler),
        futures_lite::future::or(session.write_loop(&mut writer, &mut bell), session.keep()),
    )
    .await;
    node.stats.links_up.fetch_sub(1, Ordering::Relaxed);
    if !matches!(end, End::Stopped) {
        status.set_error(end.to_string());
    }
    status.set_state(if status.dials {
        LinkState::Retrying
    } else {
        LinkState::Waiting
    });
    session.account_for_lost_frames().await;
    {
        let mut proxies = node.proxies.borrow_mut();
        proxies.remove(&node_proxy);
        for proxy in session.proxies.borrow().values() {
            proxies.remove(&proxy.local);
        }
    }
    status.clear_agents();
    // Dropping the session drops the gateway: the router forgets every proxy, so discovery
    // stops offering the peer's agents.
    end
}

/// Registers the link's gateway and its node proxy (blocking: the executor's pool).
fn join_router(
    registrar: &EndpointRegistrar,
    peer: &str,
    ring_capacity_bytes: u32,
) -> Result<(Endpoint, u32), String> {
    let identity = Registration {
        name: format!("link:{peer}"),
        ring_capacity_bytes,
        ..Registration::default()
    };
    let gateway = registrar
        .register(identity, EndpointKind::Link)
        .map_err(|e| e.to_string())?;
    let node_proxy = gateway
        .gateway_control()
        .add_remote(Registration {
            name: peer.to_string(),
            ..Registration::default()
        })
        .map_err(|e| e.to_string())?;
    Ok((gateway, node_proxy))
}

/// A proxy's name: `node/agent`, cut to the name limit (on a character boundary).
pub(crate) fn proxy_name(node: &str, agent: &str) -> String {
    let mut name = format!("{node}/{agent}");
    if name.len() > AGENT_NAME_BYTES_MAX {
        let mut cut = AGENT_NAME_BYTES_MAX;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

impl Session<'_> {
    fn queue(&self, msg: &LinkMsg) -> Result<(), End> {
        protocol::encode(msg, &mut self.pending.borrow_mut())
            .map_err(|e| End::Malformed(e.to_string()))?;
        self.answered.notify();
        Ok(())
    }

    /// A control request of the node proxy, on the blocking pool (it waits for the
    /// router's control loop).
    async fn node_request(&self, msg: ClientMsg) -> Result<ServerMsg, String> {
        let control = self.control.clone();
        let proxy = self.node_proxy;
        self.node
            .blocking(move || control.request(proxy, msg))
            .await
            .map_err(|e| e.to_string())
    }

    // ---- the keeper -------------------------------------------------------------------

    /// Registry changes, pings and the silence deadline, until the link ends.
    async fn keep(&self) -> End {
        let config = &self.node.config;
        let mut next_ping = Instant::now();
        let mut first = true;
        loop {
            if self.node.stopping() {
                return End::Stopped;
            }
            {
                let mut pending = self.pending.borrow_mut();
                self.sync_registry(&mut pending);
                if first {
                    // The first snapshot is complete: increments follow.
                    if let Err(e) = protocol::encode(&LinkMsg::Synced, &mut pending) {
                        return End::Malformed(e.to_string());
                    }
                    first = false;
                }
            }
            if Instant::now() >= next_ping {
                let sent_ns = self.node.clock.elapsed().as_nanos() as u64;
                if let Err(end) = self.queue(&LinkMsg::Ping { sent_ns }) {
                    return end;
                }
                next_ping = Instant::now() + config.ping_interval;
            }
            if let Err(end) = self.confirm_routed() {
                return end;
            }
            if !self.pending.borrow().is_empty() {
                self.answered.notify();
            }
            if !self.reader_waiting.get() && self.last_heard.get().elapsed() >= config.dead_after {
                return End::Silent;
            }
            glommio::timer::sleep(config.sync_interval).await;
        }
    }

    /// Appends to `out` what changed in this node's registry since the last call: an
    /// `AgentUp` for each agent new or changed, an `AgentDown` for each that left or went
    /// stale. Proxies of any link are never announced.
    fn sync_registry(&self, out: &mut Vec<u8>) {
        let Some(snapshot) = self
            .node
            .registrar
            .registry_snapshot(self.seen_generation.get())
        else {
            return;
        };
        self.seen_generation.set(snapshot.generation);
        let proxies = self.node.proxies.borrow();
        let mut exported = self.exported.borrow_mut();
        let mut now: FxHashSet<u32> = FxHashSet::default();
        let mut updates = 0u64;
        for agent in snapshot.agents {
            // Never another node's agent (this link's proxies, another link's, NATS's).
            if !agent.live || agent.behind_link || proxies.contains(&agent.agent_id) {
                continue;
            }
            now.insert(agent.agent_id);
            if exported.get(&agent.agent_id) == Some(&agent.registration) {
                continue;
            }
            let msg = LinkMsg::AgentUp {
                agent_id: agent.agent_id,
                registration: agent.registration.clone(),
            };
            if protocol::encode(&msg, out).is_ok() {
                exported.insert(agent.agent_id, agent.registration);
                updates += 1;
            }
        }
        let gone: Vec<u32> = exported
            .keys()
            .copied()
            .filter(|id| !now.contains(id))
            .collect();
        for agent_id in gone {
            if protocol::encode(&LinkMsg::AgentDown { agent_id }, out).is_ok() {
                exported.remove(&agent_id);
                updates += 1;
            }
        }
        add(&self.node.stats.registry_updates_out, updates);
    }

    // ---- the reader -------------------------------------------------------------------

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        assembler: &mut FrameAssembler,
    ) -> End {
        let dead_after = self.node.config.dead_after;
        loop {
            let mut frames = 0u64;
            let mut bytes = 0u64;
            loop {
                let frame = match assembler.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return End::Malformed(e.to_string()),
                };
                let Ok(header) = FrameHeader::validate(frame) else {
                    return End::Malformed("invalid frame header".into());
                };
                let header = *header;
                let payload = &frame[HEADER_BYTES..];
                if header.kind() == FrameKind::Control {
                    let msg = match protocol::decode(&header, payload) {
                        Ok(msg) => msg,
                        Err(e) => return End::Malformed(e.to_string()),
                    };
                    if let Err(end) = self.on_message(msg).await {
                        return end;
                    }
                    continue;
                }
                frames += 1;
                bytes += frame.len() as u64;
                // `frame` borrows the assembler; the payload is copied only when the
                // router's ring is full (see `send`).
                if let Err(end) = self.on_frame(header, payload).await {
                    return end;
                }
                if header.kind() != FrameKind::Nack {
                    // Relayed nacks are not in the peer's in-flight record.
                    self.received.set(self.received.get() + 1);
                }
            }
            if self.received.get() - self.confirmed.get() >= CONFIRM_EVERY {
                if let Err(end) = self.confirm_routed() {
                    return end;
                }
            }
            // A busy link must not starve the writer and the keeper (one executor).
            glommio::yield_if_needed().await;
            if frames > 0 {
                add(&self.status.frames_in, frames);
                add(&self.status.bytes_in, bytes);
                add(&self.node.stats.frames_in, frames);
                add(&self.node.stats.bytes_in, bytes);
            }
            match within(dead_after, reader.read(assembler.spare())).await {
                None => return End::Silent,
                Some(Ok(0)) => return End::Closed,
                Some(Ok(n)) => {
                    assembler.filled(n);
                    self.last_heard.set(Instant::now());
                }
                Some(Err(e)) => return End::Io(e),
            }
        }
    }

    async fn on_message(&self, msg: LinkMsg) -> Result<(), End> {
        match msg {
            LinkMsg::AgentUp {
                agent_id,
                registration,
            } => {
                add(&self.node.stats.registry_updates_in, 1);
                self.agent_up(agent_id, registration).await
            }
            LinkMsg::AgentDown { agent_id } => {
                add(&self.node.stats.registry_updates_in, 1);
                self.agent_down(agent_id).await
            }
            LinkMsg::TopicMap { topic_id, name } => {
                match self
                    .node_request(ClientMsg::ResolveTopic { topic: name })
                    .await
                {
                    Ok(ServerMsg::TopicId { topic_id: here }) => {
                        self.topic_in.borrow_mut().insert(topic_id, here);
                        Ok(())
                    }
                    Ok(other) => Err(End::Router(format!("resolving a topic: {other:?}"))),
                    Err(e) => Err(End::Router(e)),
                }
            }
            LinkMsg::Synced => {
                tracing::debug!(peer = %self.peer, agents = self.proxies.borrow().len(),
                    "node link: the peer's registry is in");
                Ok(())
            }
            LinkMsg::Received { frames } => self.on_confirmed(frames),
            LinkMsg::Ping { sent_ns } => self.queue(&LinkMsg::Pong { sent_ns }),
            LinkMsg::Pong { sent_ns } => {
                let now_ns = self.node.clock.elapsed().as_nanos() as u64;
                let rtt_us = now_ns.saturating_sub(sent_ns) / 1_000;
                self.status.rtt_us.store(rtt_us.max(1), Ordering::Relaxed);
                Ok(())
            }
            other @ (LinkMsg::Hello { .. } | LinkMsg::Refused { .. }) => Err(End::Malformed(
                format!("{} after the link was up", protocol::name(&other)),
            )),
        }
    }

    /// A peer agent new or changed: its proxy made (again, when its capabilities or
    /// features changed), and the node proxy's topics brought up to date.
    async fn agent_up(&self, peer_id: u32, announced: Registration) -> Result<(), End> {
        let old = self.proxies.borrow_mut().remove(&peer_id);
        let old_topics = old
            .as_ref()
            .map(|p| p.announced.topics.clone())
            .unwrap_or_default();
        let same_identity = old.as_ref().is_some_and(|p| {
            p.announced.name == announced.name
                && p.announced.capabilities == announced.capabilities
                && p.announced.features == announced.features
        });
        // Held from the proxy's registration until the link has recorded it.
        let mut adding = None;
        let local = match old {
            Some(proxy) if same_identity => proxy.local,
            old => {
                if let Some(proxy) = old {
                    self.forget_proxy(proxy.local);
                }
                let identity = Registration {
                    name: proxy_name(&self.peer, &announced.name),
                    capabilities: announced.capabilities.clone(),
                    topics: Vec::new(),
                    features: announced.features.clone(),
                    ring_capacity_bytes: 0,
                };
                let control = self.control.clone();
                adding = Some(Adding::new(self));
                let added = self
                    .node
                    .blocking(move || control.add_remote(identity))
                    .await;
                match added {
                    Ok(local) => local,
                    Err(e) => {
                        // One agent the router will not take (its limits): the link stays.
                        tracing::warn!(peer = %self.peer, agent = %announced.name,
                            "node link: the peer's agent is not offered here: {e}");
                        self.status
                            .set_error(format!("agent {:?} not offered: {e}", announced.name));
                        self.status.agent_down(peer_id);
                        return self.update_topics(&old_topics, &[]).await;
                    }
                }
            }
        };
        self.node.proxies.borrow_mut().insert(local);
        self.peer_of.borrow_mut().insert(local, peer_id);
        drop(adding);
        // The shards take the new proxy in before its first frame goes in (a shard in the
        // middle of a cycle would credit the frame to the gateway).
        let control = self.control.clone();
        self.node
            .blocking(move || control.await_routing(NACK_DRAIN))
            .await;
        let new_topics = announced.topics.clone();
        self.status.agent_up(peer_id, &announced.name, local);
        self.proxies
            .borrow_mut()
            .insert(peer_id, Proxy { local, announced });
        self.update_topics(&old_topics, &new_topics).await
    }

    async fn agent_down(&self, peer_id: u32) -> Result<(), End> {
        let Some(proxy) = self.proxies.borrow_mut().remove(&peer_id) else {
            return Ok(());
        };
        self.forget_proxy(proxy.local);
        self.status.agent_down(peer_id);
        self.update_topics(&proxy.announced.topics, &[]).await
    }

    fn forget_proxy(&self, local: u32) {
        self.peer_of.borrow_mut().remove(&local);
        self.node.proxies.borrow_mut().remove(&local);
        if let Err(e) = self.control.remove_remote(local) {
            tracing::warn!(peer = %self.peer, "node link: removing a proxy: {e}");
        }
    }

    /// The node proxy holds every topic some peer agent subscribes to: one more holder for
    /// each of `new` not in `old`, one fewer for each of `old` not in `new`.
    async fn update_topics(&self, old: &[String], new: &[String]) -> Result<(), End> {
        for topic in new.iter().filter(|t| !old.contains(t)) {
            let known = self.node_topics.borrow_mut().get_mut(topic).map(|entry| {
                entry.1 += 1;
            });
            if known.is_some() {
                continue;
            }
            // The id first, announced to the peer before the subscription can deliver a
            // publish with it (the writer sends control frames first).
            let id = match self
                .node_request(ClientMsg::ResolveTopic {
                    topic: topic.clone(),
                })
                .await
            {
                Ok(ServerMsg::TopicId { topic_id }) => topic_id,
                Ok(other) => return Err(End::Router(format!("resolving a topic: {other:?}"))),
                Err(e) => return Err(End::Router(e)),
            };
            self.queue(&LinkMsg::TopicMap {
                topic_id: id,
                name: topic.clone(),
            })?;
            self.node_topics.borrow_mut().insert(topic.clone(), (id, 1));
            let subscribe = ClientMsg::Subscribe {
                topic: topic.clone(),
            };
            if let Err(e) = self.node_request(subscribe).await {
                return Err(End::Router(e));
            }
        }
        for topic in old.iter().filter(|t| !new.contains(t)) {
            let last = {
                let mut topics = self.node_topics.borrow_mut();
                match topics.get_mut(topic) {
                    Some(entry) if entry.1 > 1 => {
                        entry.1 -= 1;
                        false
                    }
                    Some(_) => {
                        topics.remove(topic);
                        true
                    }
                    None => false,
                }
            };
            if last {
                let unsubscribe = ClientMsg::Unsubscribe {
                    topic: topic.clone(),
                };
                if let Err(e) = self.node_request(unsubscribe).await {
                    return Err(End::Router(e));
                }
            }
        }
        Ok(())
    }

    /// A data frame from the peer, translated to this node's ids and sent into the router.
    async fn on_frame(&self, mut header: FrameHeader, payload: &[u8]) -> Result<(), End> {
        let stats = &self.node.stats;
        match header.kind() {
            FrameKind::Nack => return self.on_nack(header, payload).await,
            FrameKind::Ack => {
                // A peer never forwards acks (see `forward`).
                return Err(End::Malformed("an Ack frame".into()));
            }
            _ => {}
        }
        let source = self.proxies.borrow().get(&header.source()).map(|p| p.local);
        let Some(source) = source else {
            add(&stats.frames_unknown_source, 1);
            add(&self.status.frames_dropped, 1);
            return Ok(());
        };
        let destination = if header.kind() == FrameKind::Publish {
            self.topic_in.borrow().get(&header.destination()).copied()
        } else {
            // The peer addressed one of this node's agents by its id here; never a proxy.
            Some(header.destination()).filter(|d| !self.node.proxies.borrow().contains(d))
        };
        let Some(destination) = destination else {
            add(&stats.frames_unknown_destination, 1);
            add(&self.status.frames_dropped, 1);
            return Ok(());
        };
        header.set_source(source);
        header.destination.set(destination);
        // The sender's node acked it when the link took it; no second ack from here.
        let flags = header.routing_flags.get() & !FLAG_ACK_REQUESTED;
        header.routing_flags.set(flags);
        self.send(header, payload).await
    }

    /// The peer's router refused a frame an agent of this node sent there: the nack goes
    /// to that agent, from the link's gateway (the detail says why).
    async fn on_nack(&self, mut header: FrameHeader, payload: &[u8]) -> Result<(), End> {
        let destination = header.destination();
        if self.node.proxies.borrow().contains(&destination) {
            add(&self.node.stats.frames_unknown_destination, 1);
            add(&self.status.frames_dropped, 1);
            return Ok(());
        }
        let gateway_id = self.gateway.borrow().id();
        header.set_source(gateway_id);
        add(&self.node.stats.nacks_relayed_in, 1);
        self.send(header, payload).await
    }

    /// Sends one frame into the router, waiting while its lane is full (the socket is not
    /// read meanwhile: backpressure reaches the peer through TCP).
    async fn send(&self, header: FrameHeader, payload: &[u8]) -> Result<(), End> {
        let mut wait = FULL_SLEEP_MIN;
        loop {
            let sent = self.gateway.borrow_mut().try_send(header, payload);
            match sent {
                Ok(()) => {
                    if self.reader_waiting.replace(false) {
                        // Silence is measured from here: the reader was not reading.
                        self.last_heard.set(Instant::now());
                    }
                    return Ok(());
                }
                Err(ClaimError::Full { .. }) => {
                    if self.node.stopping() {
                        self.reader_waiting.set(false);
                        return Err(End::Stopped);
                    }
                    self.reader_waiting.set(true);
                    glommio::timer::sleep(wait).await;
                    wait = (wait * 2).min(FULL_SLEEP_MAX);
                }
                Err(e) => {
                    self.reader_waiting.set(false);
                    add(&self.status.frames_dropped, 1);
                    tracing::warn!(peer = %self.peer, "node link: frame dropped: {e}");
                    return Ok(());
                }
            }
        }
    }

    /// Tells the peer how many data frames this side took off the link, once the router
    /// has taken every one of them from the gateway's ring (a frame confirmed is in an
    /// agent's ring or the router's deferral, never only in the link's hands).
    fn confirm_routed(&self) -> Result<(), End> {
        let frames = self.received.get();
        if frames == self.confirmed.get() || self.gateway.borrow_mut().tx_occupied_bytes() > 0 {
            return Ok(());
        }
        self.confirmed.set(frames);
        self.queue(&LinkMsg::Received { frames })
    }

    /// The peer took `frames` data frames in all: they leave the in-flight record.
    fn on_confirmed(&self, frames: u64) -> Result<(), End> {
        let mut in_flight = self.in_flight.borrow_mut();
        let done = frames.saturating_sub(self.peer_confirmed.get());
        if done > in_flight.len() as u64 {
            return Err(End::Malformed(format!(
                "the peer confirmed {done} frames, {} were in flight",
                in_flight.len()
            )));
        }
        in_flight.drain(..done as usize);
        self.peer_confirmed.set(frames);
        // The writer may have stopped at the in-flight bound.
        self.answered.notify();
        Ok(())
    }

    /// A nack to `frame.source` here, from the gateway: `NoSuchAgent` with `detail`.
    fn send_nack(&self, frame: &InFlight, detail: &str) -> Result<(), ClaimError> {
        let body = agentwire_shm::control::NackBody {
            reason: agentwire_shm::control::NackReason::NoSuchAgent as u32,
            detail: detail.to_string(),
        };
        // A nack body always archives; were it ever not to, the nack is given up (counted).
        let payload = agentwire_shm::control::archive(&body).map_err(|_| ClaimError::TooLarge {
            len_bytes: 0,
            max_bytes: 0,
        })?;
        let gateway_id = self.gateway.borrow().id();
        let header = FrameHeader::new(
            FrameKind::Nack,
            gateway_id,
            frame.source,
            payload.len() as u32,
        )
        .with_correlation(frame.correlation);
        self.gateway.borrow_mut().try_send(header, &payload)
    }

    /// Nacks what the writer could not forward (kept for the next pass while the gateway's
    /// lane is full).
    fn send_owed_nacks(&self) {
        if self.nacks_owed.borrow().is_empty() {
            return;
        }
        let detail = format!(
            "the node link to {} does not know this destination (it left the peer)",
            self.peer
        );
        let owed = std::mem::take(&mut *self.nacks_owed.borrow_mut());
        let mut done = 0;
        for frame in &owed {
            match self.send_nack(frame, &detail) {
                Ok(()) => {}
                Err(ClaimError::Full { .. }) => break,
                Err(_) => add(&self.status.frames_dropped, 1),
            }
            done += 1;
        }
        self.nacks_owed
            .borrow_mut()
            .extend_from_slice(&owed[done..]);
    }

    /// The link is down: every frame the router gave it that the peer did not confirm is
    /// nacked to its sender (`NoSuchAgent`, the detail naming the link): the ones never
    /// sent, and the ones sent but unconfirmed (they may have been delivered). Then waits
    /// (bounded) for the router to take the nacks before the gateway goes.
    async fn account_for_lost_frames(&self) {
        // The proxies go first, and the router's shards re-read their tables: from then on
        // a frame for the peer's agents is refused by the router itself, and every one
        // routed to the link before is in the gateway's ring (drained below).
        let control = self.control.clone();
        let removed = self
            .node
            .blocking(move || control.remove_all_remotes(NACK_DRAIN))
            .await;
        if !matches!(removed, Ok((_, true))) {
            tracing::warn!(peer = %self.peer, ?removed,
                "node link down: the router did not confirm the peer's agents left");
        }
        let peer = &self.peer;
        let unsent = format!("the node link to {peer} went down before the frame was sent");
        let in_doubt = format!(
            "the node link to {peer} went down before {peer} confirmed the frame \
             (it may have been delivered)"
        );
        let mut owed: Vec<(InFlight, bool)> = self
            .in_flight
            .borrow_mut()
            .drain(..)
            .filter(|f| f.nack_owed)
            .map(|f| (f, true))
            .collect();
        // What the router delivered to the gateway that the writer never sent.
        loop {
            let mut unsent_frames = Vec::new();
            let read = self
                .gateway
                .borrow_mut()
                .read(FRAMES_PER_READ, |header, _| {
                    let kind = header.kind();
                    let source = header.source();
                    let data =
                        !matches!(kind, FrameKind::Ack | FrameKind::Nack | FrameKind::Control);
                    if data && !self.node.proxies.borrow().contains(&source) {
                        let publish = kind == FrameKind::Publish;
                        let frame = InFlight {
                            source,
                            correlation: header.correlation(),
                            nack_owed: !publish || header.ack_requested(),
                        };
                        if frame.nack_owed {
                            unsent_frames.push((frame, false));
                        }
                    }
                });
            owed.extend(unsent_frames);
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
        // Frames the writer could not forward and has not nacked yet.
        let not_forwarded: Vec<_> = std::mem::take(&mut *self.nacks_owed.borrow_mut());
        let deadline = Instant::now() + NACK_DRAIN;
        let mut nacked = 0u64;
        let mut lost = 0u64;
        let gone = format!("the node link to {peer} went down; the destination left with it");
        let owed = owed
            .into_iter()
            .map(|(frame, sent)| (frame, if sent { &in_doubt } else { &unsent }))
            .chain(not_forwarded.into_iter().map(|frame| (frame, &gone)));
        for (frame, detail) in owed {
            // From the gateway (its proxies are gone): the detail names the peer.
            loop {
                let sent = self.send_nack(&frame, detail);
                match sent {
                    Ok(()) => {
                        nacked += 1;
                        break;
                    }
                    Err(ClaimError::Full { .. })
                        if Instant::now() < deadline && !self.node.stopping() =>
                    {
                        glommio::timer::sleep(FULL_SLEEP_MAX).await;
                    }
                    Err(_) => {
                        lost += 1;
                        break;
                    }
                }
            }
        }
        // The nacks, and the frames taken off the link, must leave the gateway's ring before
        // the gateway goes (even when stopping: the router still runs).
        let deadline = deadline.max(Instant::now() + FULL_SLEEP_MAX * 100);
        while self.gateway.borrow_mut().tx_occupied_bytes() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(FULL_SLEEP_MIN * 10).await;
        }
        add(&self.node.stats.frames_nacked_link_down, nacked);
        add(&self.node.stats.frames_lost_link_down, lost);
        if nacked + lost > 0 {
            tracing::warn!(peer = %self.peer, nacked, lost,
                "node link down: frames it held nacked to their senders");
        }
    }

    // ---- the writer -------------------------------------------------------------------

    /// Waits until the router delivers to the gateway, a control frame is queued, or the
    /// stop poll interval passes.
    async fn wait_for_work(&self, bell: &mut UnixStream) -> Result<(), End> {
        let pending = !self.pending.borrow().is_empty();
        match wait_for_gateway(&self.gateway, pending, &self.answered, bell).await {
            Woken::Work => Ok(()),
            Woken::RouterGone => Err(End::Stopped),
            Woken::Io(e) => Err(End::Io(e)),
        }
    }

    /// Appends one frame the router delivered to the gateway, translated to the peer's ids,
    /// to `batch`; returns whether it was forwarded.
    fn forward(&self, header: &FrameHeader, payload: &[u8], batch: &mut Vec<u8>) -> bool {
        let stats = &self.node.stats;
        let kind = header.kind();
        if kind == FrameKind::Nack {
            return self.forward_nack(header, payload, batch);
        }
        if matches!(kind, FrameKind::Ack | FrameKind::Control) {
            // An ack for a frame a proxy sent: the sender's node acked it already.
            return false;
        }
        let source = header.source();
        if self.node.proxies.borrow().contains(&source) {
            // It came over a link: the node it came from reached its own peers itself.
            add(&stats.echoes_suppressed, 1);
            return false;
        }
        if !self.exported.borrow().contains_key(&source) {
            // An agent so new the keeper has not announced it: announce it now, ahead of
            // its frame on the stream.
            self.sync_registry(batch);
            if !self.exported.borrow().contains_key(&source) {
                add(&stats.frames_unknown_source, 1);
                add(&self.status.frames_dropped, 1);
                return false;
            }
        }
        let mut out = *header;
        if kind != FrameKind::Publish {
            let destination = self.peer_of.borrow().get(&header.destination()).copied();
            let Some(destination) = destination else {
                // A proxy this link does not know (any more, or yet: the router routed to it
                // before the link recorded it): nacked to the sender.
                add(&stats.frames_unknown_destination, 1);
                self.nacks_owed.borrow_mut().push(InFlight {
                    source,
                    correlation: header.correlation(),
                    nack_owed: true,
                });
                return false;
            };
            out.address_to(destination);
        }
        let flags = out.routing_flags.get() & !FLAG_ACK_REQUESTED;
        out.routing_flags.set(flags);
        self.in_flight.borrow_mut().push_back(InFlight {
            source,
            correlation: header.correlation(),
            nack_owed: kind != FrameKind::Publish || header.ack_requested(),
        });
        let at = batch.len();
        batch.resize(at + HEADER_BYTES, 0);
        out.write_to(&mut batch[at..]);
        batch.extend_from_slice(payload);
        true
    }

    /// A nack this node's router sent a proxy (a frame from the peer it could not place):
    /// relayed to the agent there that sent the frame. Not in flight: never nacked itself.
    fn forward_nack(&self, header: &FrameHeader, payload: &[u8], batch: &mut Vec<u8>) -> bool {
        let destination = self.peer_of.borrow().get(&header.destination()).copied();
        let Some(destination) = destination else {
            add(&self.node.stats.nacks_not_relayed, 1);
            return false;
        };
        let mut out = *header;
        out.set_source(0);
        out.address_to(destination);
        let at = batch.len();
        batch.resize(at + HEADER_BYTES, 0);
        out.write_to(&mut batch[at..]);
        batch.extend_from_slice(payload);
        add(&self.node.stats.nacks_relayed_out, 1);
        // Counted with the data frames (it is one on the wire), never in flight.
        true
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        bell: &mut UnixStream,
    ) -> End {
        let batch_max = self.node.config.write_batch_bytes_max;
        let mut batch: Vec<u8> = Vec::with_capacity(batch_max * 2);
        let mut idle_polls = 0u32;
        loop {
            if self.node.stopping() {
                return End::Stopped;
            }
            {
                let mut pending = self.pending.borrow_mut();
                if !pending.is_empty() {
                    batch.extend_from_slice(&pending);
                    pending.clear();
                }
            }
            let mut frames = 0u64;
            while batch.len() < batch_max
                && self.in_flight.borrow().len() + FRAMES_PER_READ <= IN_FLIGHT_MAX
                && self.adding.get() == 0
            {
                let read = self
                    .gateway
                    .borrow_mut()
                    .read(FRAMES_PER_READ, |header, payload| {
                        frames += u64::from(self.forward(header, payload, &mut batch));
                    });
                match read {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return End::Malformed(format!("the gateway's ring: {e}")),
                }
            }
            self.send_owed_nacks();
            let at_bound = self.in_flight.borrow().len() + FRAMES_PER_READ > IN_FLIGHT_MAX
                || self.adding.get() > 0;
            if batch.is_empty() && at_bound {
                // Nothing more may go until the peer confirms (its `Received` wakes us), or
                // until the proxy being added is recorded (`Adding` wakes us).
                within(STOP_POLL, self.answered.wait()).await;
                continue;
            }
            if batch.is_empty() {
                idle_polls = idle_polls.saturating_add(1);
                if idle_polls <= IDLE_YIELDS {
                    futures_lite::future::yield_now().await;
                    continue;
                }
                idle_polls = 0;
                if let Err(end) = self.wait_for_work(bell).await {
                    return end;
                }
                continue;
            }
            idle_polls = 0;
            if let Err(e) = writer.write_all(&batch).await {
                return End::Io(e);
            }
            if let Err(e) = writer.flush().await {
                return End::Io(e);
            }
            let bytes = batch.len() as u64;
            add(&self.status.frames_out, frames);
            add(&self.status.bytes_out, bytes);
            add(&self.node.stats.frames_out, frames);
            add(&self.node.stats.bytes_out, bytes);
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::proxy_name;

    #[test]
    fn proxy_names_are_cut_on_a_character_boundary() {
        assert_eq!(proxy_name("b", "ocr"), "b/ocr");
        let long = "é".repeat(40);
        let name = proxy_name("node", &long);
        assert!(name.len() <= agentwire_shm::control::AGENT_NAME_BYTES_MAX);
        assert!(name.starts_with("node/é"));
    }
}
