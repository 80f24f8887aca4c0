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
use crate::connection::{bell_stream, within, Wakeup};
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
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl NodeShared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
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

/// A peer agent's proxy on this node.
struct Proxy {
    local: u32,
    /// What the peer announced (topics included).
    announced: Registration,
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
    let joined = glommio::executor()
        .spawn_blocking(move || join_router(&registrar, &gateway_peer, ring_capacity_bytes))
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
    {
        let mut proxies = node.proxies.borrow_mut();
        proxies.remove(&node_proxy);
        for proxy in session.proxies.borrow().values() {
            proxies.remove(&proxy.local);
        }
    }
    status.peer_agents.store(0, Ordering::Relaxed);
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

/// A proxy's name: `peer/agent`, cut to the name limit (on a character boundary).
fn proxy_name(peer: &str, agent: &str) -> String {
    let mut name = format!("{peer}/{agent}");
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
        glommio::executor()
            .spawn_blocking(move || control.request(proxy, msg))
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
            if !self.pending.borrow().is_empty() {
                self.answered.notify();
            }
            if self.last_heard.get().elapsed() >= config.dead_after {
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
            if !agent.live || proxies.contains(&agent.agent_id) {
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
            }
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
                let added = glommio::executor()
                    .spawn_blocking(move || control.add_remote(identity))
                    .await;
                match added {
                    Ok(local) => local,
                    Err(e) => {
                        // One agent the router will not take (its limits): the link stays.
                        tracing::warn!(peer = %self.peer, agent = %announced.name,
                            "node link: the peer's agent is not offered here: {e}");
                        self.status
                            .set_error(format!("agent {:?} not offered: {e}", announced.name));
                        return self.update_topics(&old_topics, &[]).await;
                    }
                }
            }
        };
        self.node.proxies.borrow_mut().insert(local);
        self.peer_of.borrow_mut().insert(local, peer_id);
        let new_topics = announced.topics.clone();
        self.proxies
            .borrow_mut()
            .insert(peer_id, Proxy { local, announced });
        self.status
            .peer_agents
            .store(self.proxies.borrow().len() as u64, Ordering::Relaxed);
        self.update_topics(&old_topics, &new_topics).await
    }

    async fn agent_down(&self, peer_id: u32) -> Result<(), End> {
        let Some(proxy) = self.proxies.borrow_mut().remove(&peer_id) else {
            return Ok(());
        };
        self.forget_proxy(proxy.local);
        self.status
            .peer_agents
            .store(self.proxies.borrow().len() as u64, Ordering::Relaxed);
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

    /// Sends one frame into the router, waiting while its lane is full (the socket is not
    /// read meanwhile: backpressure reaches the peer through TCP).
    async fn send(&self, header: FrameHeader, payload: &[u8]) -> Result<(), End> {
        let mut wait = FULL_SLEEP_MIN;
        loop {
            let sent = self.gateway.borrow_mut().try_send(header, payload);
            match sent {
                Ok(()) => return Ok(()),
                Err(ClaimError::Full { .. }) => {
                    if self.node.stopping() {
                        return Err(End::Stopped);
                    }
                    glommio::timer::sleep(wait).await;
                    wait = (wait * 2).min(FULL_SLEEP_MAX);
                }
                Err(e) => {
                    add(&self.status.frames_dropped, 1);
                    tracing::warn!(peer = %self.peer, "node link: frame dropped: {e}");
                    return Ok(());
                }
            }
        }
    }

    // ---- the writer -------------------------------------------------------------------

    /// Waits until the router delivers to the gateway, a control frame is queued, or the
    /// stop poll interval passes.
    async fn wait_for_work(&self, bell: &mut UnixStream) -> Result<(), End> {
        if self.gateway.borrow_mut().prepare_to_wait() || !self.pending.borrow().is_empty() {
            return Ok(());
        }
        let mut drained = [0u8; 64];
        let rung = async {
            match bell.read(&mut drained).await {
                Ok(0) => Err(End::Stopped),
                Ok(_) => Ok(()),
                Err(e) => Err(End::Io(e)),
            }
        };
        let answered = async {
            self.answered.wait().await;
            Ok(())
        };
        let stop_poll = async {
            glommio::timer::sleep(STOP_POLL).await;
            Ok(())
        };
        futures_lite::future::or(rung, futures_lite::future::or(answered, stop_poll)).await
    }

    /// Appends one frame the router delivered to the gateway, translated to the peer's ids,
    /// to `batch`; returns whether it was forwarded.
    fn forward(&self, header: &FrameHeader, payload: &[u8], batch: &mut Vec<u8>) -> bool {
        let stats = &self.node.stats;
        let kind = header.kind();
        if matches!(kind, FrameKind::Ack | FrameKind::Nack | FrameKind::Control) {
            // The router's answer to a frame a proxy sent on the peer's behalf.
            add(&stats.nacks_not_relayed, u64::from(kind == FrameKind::Nack));
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
                add(&stats.frames_unknown_destination, 1);
                add(&self.status.frames_dropped, 1);
                return false;
            };
            out.address_to(destination);
        }
        let flags = out.routing_flags.get() & !FLAG_ACK_REQUESTED;
        out.routing_flags.set(flags);
        let at = batch.len();
        batch.resize(at + HEADER_BYTES, 0);
        out.write_to(&mut batch[at..]);
        batch.extend_from_slice(payload);
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
            while batch.len() < batch_max {
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
