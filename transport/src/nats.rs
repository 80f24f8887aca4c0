//! Clusters through NATS (cargo feature `nats`): a daemon joins an existing NATS cluster to
//! find the nodes it has no direct link to, share its registry with them, and carry topic
//! publishes and frames to them. No home-made cluster protocol: membership and registries
//! live in a JetStream key-value bucket, the traffic on core NATS subjects.
//!
//! - **Registry.** Each node puts its agents (those of its own: never another node's) under
//!   its name in the bucket (`bucket`, default `agentwire`), again every third of `ttl`; the
//!   bucket's entries expire after `ttl`, so a node killed without a goodbye leaves every
//!   other node's registry within `ttl` plus a poll.
//! - **Proxies.** Every agent of a node this one has no direct link up to is a proxy here,
//!   a remote agent of a gateway endpoint ([`EndpointKind::Link`], so anycast and feature
//!   routes prefer this node's agents) named `NODE/AGENT`. One more proxy, `nats`, subscribes
//!   to every topic those agents subscribe to.
//! - **Traffic.** A publish this node's router delivers to the `nats` proxy goes to subject
//!   `agentwire.topic.<hex of the topic name>` once, whatever the number of nodes; a frame for
//!   a proxy goes to `agentwire.node.<node>`. Each message is the origin node's name (a length
//!   byte, then the name) followed by the frame (docs/wire.md, §2) with its source as the
//!   origin's agent id and, for a frame, its destination as the receiver's agent id. A node
//!   subscribes to the topics its own agents subscribe to and to its own node subject, and
//!   drops what it hears from itself or from a node it has a direct link up to (the link
//!   carries that traffic).
//!
//! Core NATS is at-most-once: a frame NATS loses is not nacked (direct links are the path
//! that accounts for every frame). The client (`async-nats`) runs on a thread of its own with
//! a Tokio runtime; the router is reached only through the gateway endpoint.
//!
//! ```no_run
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! use agentwire_transport::nats::{NatsCluster, NatsConfig};
//! let router = TestRouter::start(TestRouterConfig::new("/tmp/aw-nats-a.sock".into())).unwrap();
//! let cluster = NatsCluster::start(
//!     NatsConfig::new("a", "nats://127.0.0.1:4222"),
//!     router.control().endpoint_registrar(),
//!     None,
//! ).unwrap();
//! println!("{:?}", cluster.nodes());
//! ```

use crate::config::TlsFiles;
use crate::node::session::proxy_name;
use crate::node::LinksHandle;
use crate::TransportError;
use agentwire_router::endpoint::{Endpoint, EndpointKind, EndpointRegistrar, GatewayControl};
use agentwire_shm::control::{CapabilitySpec, ClientMsg, Registration, ServerMsg};
use agentwire_shm::ring::ClaimError;
use agentwire_shm::wire::{FrameHeader, FrameKind, FLAG_ACK_REQUESTED, HEADER_BYTES};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default key-value bucket.
pub const BUCKET_DEFAULT: &str = "agentwire";
/// Default lifetime of a node's registry entry (it is put again every third of it).
pub const TTL_DEFAULT: Duration = Duration::from_secs(3);
/// Frames taken from the gateway per pass.
const FRAMES_PER_READ: usize = 64;
/// How often the bucket is read for the other nodes.
const NODES_POLL: Duration = Duration::from_millis(250);
/// How often the bridge re-reads which nodes have a direct link up.
const LINKED_REFRESH: Duration = Duration::from_millis(20);
/// How often an idle bridge looks at the stop flag and its topic subscriptions.
const TICK: Duration = Duration::from_millis(50);
/// Messages from NATS waiting for the bridge at most.
const INBOX_MESSAGES_MAX: usize = 8192;
/// How long starting waits for the NATS server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame received from NATS waits at most this long for room in the router's ring.
const SEND_WAIT: Duration = Duration::from_millis(100);

/// How a node joins a NATS cluster.
///
/// ```
/// let c = agentwire_transport::nats::NatsConfig::new("a", "nats://127.0.0.1:4222");
/// assert_eq!(c.bucket, "agentwire");
/// ```
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// This node's name (as in `[node] name`).
    pub node: String,
    /// The NATS server(s): `nats://host:port` (or `tls://`), comma-separated for several.
    pub url: String,
    /// The JetStream key-value bucket holding the registries (created when missing).
    pub bucket: String,
    /// Lifetime of a node's registry entry.
    pub ttl: Duration,
    /// TLS to the NATS server: this node's certificate and key, and the CA to trust.
    pub tls: Option<TlsFiles>,
    /// Bytes of each ring of the bridge's gateway endpoint (0: the router's default).
    pub ring_capacity_bytes: u32,
}

impl NatsConfig {
    /// Defaults for `node` and `url`.
    ///
    /// ```
    /// let c = agentwire_transport::nats::NatsConfig::new("b", "nats://10.0.0.9:4222");
    /// assert_eq!(c.ttl, agentwire_transport::nats::TTL_DEFAULT);
    /// ```
    pub fn new(node: &str, url: &str) -> Self {
        Self {
            node: node.to_string(),
            url: url.to_string(),
            bucket: BUCKET_DEFAULT.to_string(),
            ttl: TTL_DEFAULT,
            tls: None,
            ring_capacity_bytes: 0,
        }
    }
}

/// The bridge's counters.
#[derive(Debug, Default)]
pub struct NatsStats {
    connected: AtomicU64,
    nodes: AtomicU64,
    registry_puts: AtomicU64,
    registry_errors: AtomicU64,
    publishes_out: AtomicU64,
    frames_out: AtomicU64,
    messages_in: AtomicU64,
    messages_ignored: AtomicU64,
    messages_malformed: AtomicU64,
    frames_unknown_source: AtomicU64,
    frames_unknown_destination: AtomicU64,
    frames_dropped_full: AtomicU64,
    publish_errors: AtomicU64,
    echoes_suppressed: AtomicU64,
}

impl NatsStats {
    /// Every counter by name (`connected` and `nodes` are gauges).
    ///
    /// ```
    /// let s = agentwire_transport::nats::NatsStats::default().snapshot();
    /// assert!(s.iter().any(|(n, _)| *n == "nodes"));
    /// ```
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("connected", get(&self.connected)),
            ("nodes", get(&self.nodes)),
            ("registry_puts", get(&self.registry_puts)),
            ("registry_errors", get(&self.registry_errors)),
            ("publishes_out", get(&self.publishes_out)),
            ("frames_out", get(&self.frames_out)),
            ("messages_in", get(&self.messages_in)),
            ("messages_ignored", get(&self.messages_ignored)),
            ("messages_malformed", get(&self.messages_malformed)),
            ("frames_unknown_source", get(&self.frames_unknown_source)),
            (
                "frames_unknown_destination",
                get(&self.frames_unknown_destination),
            ),
            ("frames_dropped_full", get(&self.frames_dropped_full)),
            ("publish_errors", get(&self.publish_errors)),
            ("echoes_suppressed", get(&self.echoes_suppressed)),
        ]
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A running NATS bridge. Dropping it deletes this node's registry entry (best effort),
/// closes the connection, and the other nodes' proxies leave this router.
pub struct NatsCluster {
    stop: Arc<AtomicBool>,
    stats: Arc<NatsStats>,
    nodes: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster").finish()
    }
}

/// One agent as a node announces it in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct AnnouncedAgent {
    id: u32,
    name: String,
    capabilities: Vec<(String, String)>,
    topics: Vec<String>,
    features: Vec<u32>,
}

/// A node's entry in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct NodeEntry {
    node: String,
    agents: Vec<AnnouncedAgent>,
}

impl NatsCluster {
    /// Connects to `config.url` (within 5 s), creates or opens the bucket, registers the
    /// bridge's gateway and starts its thread. `links` (this node's direct links, if any)
    /// tells which nodes NATS must leave to them.
    ///
    /// ```
    /// use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// use agentwire_transport::nats::{NatsCluster, NatsConfig};
    /// let sock = std::env::temp_dir().join(format!("aw-doc-nats-{}.sock", std::process::id()));
    /// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// // Nothing listens on port 9 of loopback: the start fails, naming the server.
    /// let e = NatsCluster::start(NatsConfig::new("a", "nats://127.0.0.1:9"),
    ///     router.control().endpoint_registrar(), None).unwrap_err();
    /// assert!(e.to_string().contains("127.0.0.1:9"));
    /// ```
    pub fn start(
        config: NatsConfig,
        registrar: EndpointRegistrar,
        links: Option<LinksHandle>,
    ) -> Result<Self, TransportError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NatsStats::default());
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let shared = (stop.clone(), stats.clone(), nodes.clone());
        let thread = std::thread::Builder::new()
            .name("aw-nats".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bridge = match Bridge::connect(config, registrar, links, shared).await {
                        Ok(bridge) => {
                            let _ = started_tx.send(Ok(()));
                            bridge
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    bridge.run().await;
                });
            })
            .map_err(|e| TransportError::Executor(e.to_string()))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                stats,
                nodes,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(TransportError::Config(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(TransportError::Executor(
                    "the NATS thread ended at start".into(),
                ))
            }
        }
    }

    /// The other nodes seen in the bucket now (directly linked ones included).
    ///
    /// ```no_run
    /// # fn f(c: &agentwire_transport::nats::NatsCluster) {
    /// println!("{:?}", c.nodes());
    /// # }
    /// ```
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.lock().expect("nodes lock").clone()
    }

    /// The other nodes seen, to read from another thread (a status hook).
    ///
    /// ```no_run
    /// # fn f(c: &agentwire_transport::nats::NatsCluster) {
    /// let nodes = c.nodes_handle();
    /// std::thread::spawn(move || println!("{:?}", nodes.lock().unwrap()));
    /// # }
    /// ```
    pub fn nodes_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.nodes.clone()
    }

    /// The bridge's counters, to read from another thread.
    ///
    /// ```no_run
    /// # fn f(c: &agentwire_transport::nats::NatsCluster) {
    /// let stats = c.stats_handle();
    /// println!("{:?}", stats.snapshot());
    /// # }
    /// ```
    pub fn stats_handle(&self) -> Arc<NatsStats> {
        self.stats.clone()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Subject of a topic: its name in hex (any name is a valid subject token). Made once per
/// topic and kept (see `Bridge::topic_names`), never per message.
fn topic_subject(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut subject = String::with_capacity(16 + 2 * name.len());
    subject.push_str("agentwire.topic.");
    for b in name.bytes() {
        subject.push(char::from(HEX[usize::from(b >> 4)]));
        subject.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    subject
}

fn node_subject(node: &str) -> String {
    format!("agentwire.node.{node}")
}

/// Bytes reserved at a time in the outbound envelope buffer: one allocation serves many
/// messages (each message is split off it; the space is reused once NATS has sent them).
const ENVELOPE_BUFFER_BYTES: usize = 256 * 1024;

/// A message: the origin's name (length byte first), then the frame, written at the end of
/// `buffer` and split off it (no allocation while the buffer has room).
fn envelope(
    buffer: &mut bytes::BytesMut,
    origin: &str,
    frame_header: &FrameHeader,
    payload: &[u8],
) -> bytes::Bytes {
    let len = 1 + origin.len() + HEADER_BYTES + payload.len();
    if buffer.capacity() - buffer.len() < len {
        buffer.reserve(len.max(ENVELOPE_BUFFER_BYTES));
    }
    buffer.extend_from_slice(&[origin.len() as u8]);
    buffer.extend_from_slice(origin.as_bytes());
    let at = buffer.len();
    buffer.resize(at + HEADER_BYTES, 0);
    frame_header.write_to(&mut buffer[at..]);
    buffer.extend_from_slice(payload);
    buffer.split().freeze()
}

/// The origin and the frame of a message, validated.
fn open_envelope(message: &[u8]) -> Option<(&str, FrameHeader, &[u8])> {
    let (&len, rest) = message.split_first()?;
    let origin = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
    let frame = rest.get(usize::from(len)..)?;
    let header = *FrameHeader::validate(frame).ok()?;
    Some((origin, header, &frame[HEADER_BYTES..]))
}

/// A proxy here for another node's agent.
struct Proxy {
    local: u32,
    announced: AnnouncedAgent,
}

struct Bridge {
    config: NatsConfig,
    client: async_nats::Client,
    store: async_nats::jetstream::kv::Store,
    registrar: EndpointRegistrar,
    links: Option<LinksHandle>,
    stop: Arc<AtomicBool>,
    stats: Arc<NatsStats>,
    nodes_seen: Arc<Mutex<Vec<String>>>,
    gateway: Endpoint,
    control: GatewayControl,
    node_proxy: u32,
    /// Other nodes' agents: by node, then by id there.
    proxies: HashMap<String, HashMap<u32, Proxy>>,
    /// Proxy id here to (the node's subject, id there).
    peer_of: HashMap<u32, (async_nats::Subject, u32)>,
    /// Topics the `nats` proxy holds: name to (id here, holders).
    node_topics: HashMap<String, (u32, u32)>,
    /// Topic id here to its subject, for the `nats` proxy's topics.
    topic_names: HashMap<u32, async_nats::Subject>,
    /// Nodes with a direct link up, as of `linked_at` (read once per [`LINKED_REFRESH`],
    /// never per message).
    linked: HashSet<String>,
    linked_at: Instant,
    /// Outbound messages of one gateway read (reused: cleared, never dropped).
    outbound: Vec<(async_nats::Subject, bytes::Bytes, bool)>,
    /// Where outbound envelopes are written.
    envelopes: bytes::BytesMut,
    /// Topic ids here by name, for topics heard from NATS.
    topic_ids: HashMap<String, u32>,
    /// This node's agents as last announced, by id.
    exported: HashMap<u32, AnnouncedAgent>,
    /// Another node's agents here (ids never announced, never forwarded from).
    behind_links: HashSet<u32>,
    seen_generation: u64,
    /// Topic subjects this node subscribes to, for its own agents' topics: the task that
    /// pumps each into the inbox (aborted to let go: the subscription drops with it).
    subscribed: HashMap<String, tokio::task::JoinHandle<()>>,
    /// The task pumping this node's own subject.
    own_task: Option<tokio::task::JoinHandle<()>>,
    /// Where the pumps put what NATS delivered.
    inbox_tx: Option<tokio::sync::mpsc::Sender<Inbound>>,
}

/// A message NATS delivered: its topic (`None`: this node's subject) and its bytes.
type Inbound = (Option<Arc<str>>, bytes::Bytes);

/// Moves what a subscription delivers into the bridge's inbox (waiting while it is full:
/// then the subscription's own buffer fills, and NATS drops for a slow consumer).
async fn pump(
    mut subscriber: async_nats::Subscriber,
    topic: Option<Arc<str>>,
    inbox: tokio::sync::mpsc::Sender<Inbound>,
) {
    while let Some(message) = subscriber.next().await {
        if inbox.send((topic.clone(), message.payload)).await.is_err() {
            return;
        }
    }
}

/// Reads every other node's entry from the bucket every [`NODES_POLL`] and hands the map to
/// the bridge (and the names to `nodes_seen`).
async fn poll_bucket(
    store: async_nats::jetstream::kv::Store,
    node: String,
    stats: Arc<NatsStats>,
    nodes_seen: Arc<Mutex<Vec<String>>>,
    found: tokio::sync::mpsc::Sender<HashMap<String, NodeEntry>>,
) {
    loop {
        if let Some(entries) = read_bucket(&store, &node, &stats).await {
            let mut seen: Vec<String> = entries.keys().cloned().collect();
            seen.sort();
            stats.nodes.store(seen.len() as u64, Ordering::Relaxed);
            *nodes_seen.lock().expect("nodes lock") = seen;
            if found.send(entries).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(NODES_POLL).await;
    }
}

/// Every other node's entry in the bucket now (`None`: it could not be listed).
async fn read_bucket(
    store: &async_nats::jetstream::kv::Store,
    node: &str,
    stats: &NatsStats,
) -> Option<HashMap<String, NodeEntry>> {
    let keys = match store.keys().await {
        Ok(keys) => keys,
        Err(e) => {
            add(&stats.registry_errors, 1);
            tracing::debug!("NATS: listing the bucket: {e}");
            return None;
        }
    };
    let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
    let mut entries = HashMap::new();
    for key in keys {
        if key == node {
            continue;
        }
        match store.get(&key).await {
            Ok(Some(value)) => match serde_json::from_slice::<NodeEntry>(&value) {
                Ok(entry) if entry.node == key => {
                    entries.insert(key, entry);
                }
                _ => add(&stats.registry_errors, 1),
            },
            Ok(None) => {}
            Err(_) => add(&stats.registry_errors, 1),
        }
    }
    Some(entries)
}

/// The gateway's rx doorbell (a Unix stream socket for endpoints) as a Tokio stream.
fn bell_stream(gateway: &Endpoint) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::fd::AsFd;
    let owned = gateway.doorbell().as_fd().try_clone_to_owned()?;
    let stream = std::os::unix::net::UnixStream::from(owned);
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

type Shared = (Arc<AtomicBool>, Arc<NatsStats>, Arc<Mutex<Vec<String>>>);

impl Bridge {
    async fn connect(
        config: NatsConfig,
        registrar: EndpointRegistrar,
        links: Option<LinksHandle>,
        (stop, stats, nodes_seen): Shared,
    ) -> Result<Self, String> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("agentwire node {}", config.node))
            .connection_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &config.tls {
            options = options
                .require_tls(true)
                .add_root_certificates(tls.client_ca.clone())
                .add_client_certificate(tls.certificate_chain.clone(), tls.private_key.clone());
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(config.url.as_str()))
            .await
            .map_err(|_| {
                format!(
                    "NATS server {} did not answer within {CONNECT_TIMEOUT:?}",
                    config.url
                )
            })?
            .map_err(|e| format!("NATS server {}: {e}", config.url))?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let store = match jetstream.get_key_value(config.bucket.as_str()).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(async_nats::jetstream::kv::Config {
                    bucket: config.bucket.clone(),
                    description: "agentwire node registries".into(),
                    history: 1,
                    max_age: config.ttl,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    format!(
                        "NATS server {}: the key-value bucket {:?} (JetStream enabled?): {e}",
                        config.url, config.bucket
                    )
                })?,
        };
        let (ring_capacity_bytes, registrar2) = (config.ring_capacity_bytes, registrar.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let gateway = registrar2
                .register(
                    Registration {
                        name: "nats".into(),
                        ring_capacity_bytes,
                        ..Registration::default()
                    },
                    EndpointKind::Link,
                )
                .map_err(|e| e.to_string())?;
            let node_proxy = gateway
                .gateway_control()
                .add_remote(Registration {
                    name: "nats/topics".into(),
                    ..Registration::default()
                })
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((gateway, node_proxy))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (gateway, node_proxy) = joined;
        stats.connected.store(1, Ordering::Relaxed);
        tracing::info!(node = %config.node, url = %config.url, bucket = %config.bucket,
            "joined the NATS cluster");
        Ok(Self {
            control: gateway.gateway_control(),
            gateway,
            node_proxy,
            config,
            client,
            store,
            registrar,
            links,
            stop,
            stats,
            nodes_seen,
            proxies: HashMap::new(),
            peer_of: HashMap::new(),
            node_topics: HashMap::new(),
            topic_names: HashMap::new(),
            linked: HashSet::new(),
            linked_at: Instant::now(),
            outbound: Vec::with_capacity(FRAMES_PER_READ),
            envelopes: bytes::BytesMut::with_capacity(ENVELOPE_BUFFER_BYTES),
            topic_ids: HashMap::new(),
            exported: HashMap::new(),
            behind_links: HashSet::new(),
            seen_generation: 0,
            subscribed: HashMap::new(),
            own_task: None,
            inbox_tx: None,
        })
    }

    /// Re-reads which nodes have a direct link up (NATS leaves their traffic to the link),
    /// at most once per [`LINKED_REFRESH`] unless `now` is asked for.
    fn refresh_linked(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.linked_at) < LINKED_REFRESH {
            return;
        }
        self.linked_at = now;
        self.linked.clear();
        if let Some(links) = &self.links {
            self.linked.extend(
                links
                    .links()
                    .into_iter()
                    .filter(|r| r.state == crate::node::status::LinkState::Up)
                    .map(|r| r.peer),
            );
        }
    }

    async fn run(mut self) {
        let (inbox_tx, mut inbox) = tokio::sync::mpsc::channel::<Inbound>(INBOX_MESSAGES_MAX);
        match self.client.subscribe(node_subject(&self.config.node)).await {
            Ok(own) => {
                self.own_task = Some(tokio::spawn(pump(own, None, inbox_tx.clone())));
            }
            Err(e) => {
                tracing::error!("NATS: subscribing to this node's subject: {e}");
                return;
            }
        }
        self.inbox_tx = Some(inbox_tx);
        // The bucket is read by a task of its own (listing it is a round trip or more);
        // the loop applies what it found.
        let (entries_tx, mut entries) = tokio::sync::mpsc::channel(1);
        let poller = tokio::spawn(poll_bucket(
            self.store.clone(),
            self.config.node.clone(),
            self.stats.clone(),
            self.nodes_seen.clone(),
            entries_tx,
        ));
        let bell = match bell_stream(&self.gateway) {
            Ok(bell) => bell,
            Err(e) => {
                tracing::error!("NATS: the gateway's doorbell: {e}");
                poller.abort();
                return;
            }
        };
        let mut tick = tokio::time::interval(TICK);
        let mut next_put = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            self.refresh_linked(false);
            if Instant::now() >= next_put {
                self.put_registry().await;
                next_put = Instant::now() + self.config.ttl / 3;
            }
            if let Ok(found) = entries.try_recv() {
                self.apply_nodes(found).await;
            }
            let mut busy = self.forward_out().await;
            let mut taken = 0;
            while let Ok((topic, payload)) = inbox.try_recv() {
                self.deliver_in(&payload, topic.as_deref()).await;
                busy = true;
                taken += 1;
                if taken == FRAMES_PER_READ * 4 {
                    break;
                }
            }
            if busy {
                // Let the NATS connection and the subscription tasks run.
                tokio::task::yield_now().await;
                continue;
            }
            if self.gateway.prepare_to_wait() {
                continue;
            }
            let mut drained = [0u8; 64];
            tokio::select! {
                message = inbox.recv() => {
                    if let Some((topic, payload)) = message {
                        self.deliver_in(&payload, topic.as_deref()).await;
                    }
                }
                found = entries.recv() => {
                    if let Some(found) = found {
                        self.apply_nodes(found).await;
                    }
                }
                _ = bell.readable() => {
                    let _ = bell.try_read(&mut drained);
                }
                _ = tick.tick() => {
                    self.sync_topic_subscriptions().await;
                }
            }
        }
        poller.abort();
        if let Some(task) = self.own_task.take() {
            task.abort();
        }
        for (_, task) in self.subscribed.drain() {
            task.abort();
        }
        // Leave the bucket at once rather than at the entry's expiry.
        let _ = self.store.delete(&self.config.node).await;
        let _ = self.client.flush().await;
        self.stats.connected.store(0, Ordering::Relaxed);
    }

    /// This node's own agents (never another node's), announced again in the bucket.
    async fn put_registry(&mut self) {
        self.refresh_exported();
        let mut agents: Vec<AnnouncedAgent> = self.exported.values().cloned().collect();
        agents.sort_by_key(|a| a.id);
        let entry = NodeEntry {
            node: self.config.node.clone(),
            agents,
        };
        let Ok(value) = serde_json::to_vec(&entry) else {
            return;
        };
        match self.store.put(&self.config.node, value.into()).await {
            Ok(_) => add(&self.stats.registry_puts, 1),
            Err(e) => {
                add(&self.stats.registry_errors, 1);
                tracing::warn!("NATS: putting this node's registry: {e}");
            }
        }
    }

    /// Re-reads the registry when it changed: this node's own agents, and which agents are
    /// another node's.
    fn refresh_exported(&mut self) {
        let Some(snapshot) = self.registrar.registry_snapshot(self.seen_generation) else {
            return;
        };
        self.seen_generation = snapshot.generation;
        self.exported.clear();
        self.behind_links.clear();
        for agent in snapshot.agents {
            if agent.behind_link {
                self.behind_links.insert(agent.agent_id);
                continue;
            }
            if !agent.live {
                continue;
            }
            let r = agent.registration;
            self.exported.insert(
                agent.agent_id,
                AnnouncedAgent {
                    id: agent.agent_id,
                    name: r.name,
                    capabilities: r
                        .capabilities
                        .into_iter()
                        .map(|c| (c.name, c.version))
                        .collect(),
                    topics: r.topics,
                    features: r.features,
                },
            );
        }
    }

    /// The other nodes' entries (from the poller): proxies made for the agents of nodes
    /// without a direct link up, and removed for nodes gone (expired, deleted) or now linked.
    async fn apply_nodes(&mut self, entries: HashMap<String, NodeEntry>) {
        self.refresh_linked(true);
        let linked = &self.linked;
        let wanted: HashMap<(String, u32), AnnouncedAgent> = entries
            .into_values()
            .filter(|e| !linked.contains(&e.node))
            .flat_map(|e| {
                let node = e.node;
                e.agents.into_iter().map(move |a| ((node.clone(), a.id), a))
            })
            .collect();
        let gone: Vec<(String, u32)> = self
            .proxies
            .iter()
            .flat_map(|(node, agents)| agents.iter().map(move |(id, p)| (node, *id, p)))
            .filter(|(node, id, proxy)| {
                wanted.get(&((*node).clone(), *id)) != Some(&proxy.announced)
            })
            .map(|(node, id, _)| (node.clone(), id))
            .collect();
        for (node, id) in gone {
            let Some(agents) = self.proxies.get_mut(&node) else {
                continue;
            };
            let proxy = agents.remove(&id);
            if agents.is_empty() {
                self.proxies.remove(&node);
            }
            if let Some(proxy) = proxy {
                self.peer_of.remove(&proxy.local);
                let _ = self.control.remove_remote(proxy.local);
                self.update_topics(&proxy.announced.topics, &[]).await;
            }
        }
        for (key, announced) in wanted {
            if self
                .proxies
                .get(&key.0)
                .is_some_and(|agents| agents.contains_key(&key.1))
            {
                continue;
            }
            let identity = Registration {
                name: proxy_name(&key.0, &announced.name),
                capabilities: announced
                    .capabilities
                    .iter()
                    .map(|(name, version)| CapabilitySpec {
                        name: name.clone(),
                        version: version.clone(),
                    })
                    .collect(),
                topics: Vec::new(),
                features: announced.features.clone(),
                ring_capacity_bytes: 0,
            };
            let control = self.control.clone();
            let added = tokio::task::spawn_blocking(move || {
                let local = control.add_remote(identity)?;
                control.await_routing(Duration::from_secs(1));
                Ok::<_, agentwire_router::endpoint::EndpointError>(local)
            })
            .await;
            match added {
                Ok(Ok(local)) => {
                    self.peer_of
                        .insert(local, (node_subject(&key.0).into(), key.1));
                    let topics = announced.topics.clone();
                    self.proxies
                        .entry(key.0)
                        .or_default()
                        .insert(key.1, Proxy { local, announced });
                    self.update_topics(&[], &topics).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %key.0, agent = %announced.name,
                        "NATS: the node's agent is not offered here: {e}");
                }
                Err(e) => tracing::warn!("NATS: {e}"),
            }
        }
    }

    /// The `nats` proxy holds every topic some NATS-only agent subscribes to.
    async fn update_topics(&mut self, old: &[String], new: &[String]) {
        for topic in new.iter().filter(|t| !old.contains(t)) {
            if let Some(entry) = self.node_topics.get_mut(topic) {
                entry.1 += 1;
                continue;
            }
            let Some(id) = self
                .proxy_request(ClientMsg::Subscribe {
                    topic: topic.clone(),
                })
                .await
                .and_then(|m| match m {
                    ServerMsg::TopicId { topic_id } => Some(topic_id),
                    _ => None,
                })
            else {
                continue;
            };
            self.node_topics.insert(topic.clone(), (id, 1));
            self.topic_names.insert(id, topic_subject(topic).into());
        }
        for topic in old.iter().filter(|t| !new.contains(t)) {
            let last = match self.node_topics.get_mut(topic) {
                Some(entry) if entry.1 > 1 => {
                    entry.1 -= 1;
                    false
                }
                Some(_) => true,
                None => false,
            };
            if last {
                if let Some((id, _)) = self.node_topics.remove(topic) {
                    self.topic_names.remove(&id);
                }
                let _ = self
                    .proxy_request(ClientMsg::Unsubscribe {
                        topic: topic.clone(),
                    })
                    .await;
            }
        }
    }

    async fn proxy_request(&self, msg: ClientMsg) -> Option<ServerMsg> {
        let control = self.control.clone();
        let proxy = self.node_proxy;
        tokio::task::spawn_blocking(move || control.request(proxy, msg))
            .await
            .ok()?
            .ok()
    }

    /// Subscribes to the subject of every topic this node's own agents subscribe to (and
    /// lets go of the others).
    async fn sync_topic_subscriptions(&mut self) {
        self.refresh_exported();
        let wanted: HashSet<String> = self
            .exported
            .values()
            .flat_map(|a| a.topics.iter().cloned())
            .collect();
        self.subscribed.retain(|topic, task| {
            let keep = wanted.contains(topic);
            if !keep {
                task.abort();
            }
            keep
        });
        let Some(inbox) = self.inbox_tx.clone() else {
            return;
        };
        for topic in wanted {
            if self.subscribed.contains_key(&topic) {
                continue;
            }
            match self.client.subscribe(topic_subject(&topic)).await {
                Ok(subscriber) => {
                    let name: Arc<str> = Arc::from(topic.as_str());
                    let task = tokio::spawn(pump(subscriber, Some(name), inbox.clone()));
                    self.subscribed.insert(topic, task);
                }
                Err(e) => tracing::warn!("NATS: subscribing to topic {topic:?}: {e}"),
            }
        }
    }

    /// What the router delivered to the gateway, out to NATS. Returns whether anything was.
    async fn forward_out(&mut self) -> bool {
        let Self {
            config,
            gateway,
            peer_of,
            topic_names,
            behind_links,
            stats,
            outbound,
            envelopes,
            ..
        } = self;
        let origin = config.node.as_str();
        outbound.clear();
        let read = gateway.read(FRAMES_PER_READ, |header, payload| {
            let kind = header.kind();
            if matches!(kind, FrameKind::Ack | FrameKind::Nack | FrameKind::Control) {
                return;
            }
            let source = header.source();
            if behind_links.contains(&source) || peer_of.contains_key(&source) {
                // Another node's frame: that node reached every node itself.
                add(&stats.echoes_suppressed, 1);
                return;
            }
            let mut frame = *header;
            let flags = frame.routing_flags.get() & !FLAG_ACK_REQUESTED;
            frame.routing_flags.set(flags);
            if kind == FrameKind::Publish {
                let Some(subject) = topic_names.get(&header.destination()) else {
                    add(&stats.frames_unknown_destination, 1);
                    return;
                };
                let message = envelope(envelopes, origin, &frame, payload);
                outbound.push((subject.clone(), message, true));
            } else {
                let Some((subject, id)) = peer_of.get(&header.destination()) else {
                    add(&stats.frames_unknown_destination, 1);
                    return;
                };
                frame.address_to(*id);
                let message = envelope(envelopes, origin, &frame, payload);
                outbound.push((subject.clone(), message, false));
            }
        });
        let busy = matches!(read, Ok(n) if n > 0);
        for (subject, message, publish) in self.outbound.drain(..) {
            match self.client.publish(subject, message).await {
                Ok(()) if publish => add(&self.stats.publishes_out, 1),
                Ok(()) => add(&self.stats.frames_out, 1),
                Err(e) => {
                    add(&self.stats.publish_errors, 1);
                    tracing::debug!("NATS: publish: {e}");
                }
            }
        }
        busy
    }

    /// A message from NATS into the router: `topic` for a topic subject, `None` for this
    /// node's subject.
    async fn deliver_in(&mut self, message: &[u8], topic: Option<&str>) {
        add(&self.stats.messages_in, 1);
        let Some((origin, mut header, payload)) = open_envelope(message) else {
            add(&self.stats.messages_malformed, 1);
            return;
        };
        if origin == self.config.node || self.linked.contains(origin) {
            // Our own, or a node whose direct link carries its traffic.
            add(&self.stats.messages_ignored, 1);
            return;
        }
        if matches!(
            header.kind(),
            FrameKind::Ack | FrameKind::Nack | FrameKind::Control
        ) {
            add(&self.stats.messages_malformed, 1);
            return;
        }
        let Some(source) = self
            .proxies
            .get(origin)
            .and_then(|agents| agents.get(&header.source()))
            .map(|p| p.local)
        else {
            add(&self.stats.frames_unknown_source, 1);
            return;
        };
        let destination = match topic {
            Some(name) if header.kind() == FrameKind::Publish => match self.topic_ids.get(name) {
                Some(&id) => id,
                None => {
                    let resolved = self
                        .proxy_request(ClientMsg::ResolveTopic {
                            topic: name.to_string(),
                        })
                        .await;
                    let Some(ServerMsg::TopicId { topic_id }) = resolved else {
                        add(&self.stats.frames_unknown_destination, 1);
                        return;
                    };
                    self.topic_ids.insert(name.to_string(), topic_id);
                    topic_id
                }
            },
            Some(_) => {
                add(&self.stats.messages_malformed, 1);
                return;
            }
            None if header.kind() == FrameKind::Publish => {
                add(&self.stats.messages_malformed, 1);
                return;
            }
            None => {
                let d = header.destination();
                if self.peer_of.contains_key(&d) || self.behind_links.contains(&d) {
                    add(&self.stats.frames_unknown_destination, 1);
                    return;
                }
                d
            }
        };
        header.set_source(source);
        header.destination.set(destination);
        let deadline = Instant::now() + SEND_WAIT;
        loop {
            match self.gateway.try_send(header, payload) {
                Ok(()) => return,
                Err(ClaimError::Full { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                Err(_) => {
                    add(&self.stats.frames_dropped_full, 1);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_garbage_is_refused() {
        let mut buffer = bytes::BytesMut::new();
        let header = FrameHeader::new(FrameKind::Publish, 3, 9, 2);
        let message = envelope(&mut buffer, "node-a", &header, b"hi");
        // A second message from the same buffer leaves the first intact, and needs no
        // allocation of its own.
        let room = buffer.capacity();
        let second = envelope(
            &mut buffer,
            "b",
            &FrameHeader::new(FrameKind::Send, 4, 1, 3),
            b"abc",
        );
        assert_eq!(buffer.capacity(), room - second.len());
        let (origin, got, payload) = open_envelope(&message).unwrap();
        assert_eq!((origin, got.source(), payload), ("node-a", 3, &b"hi"[..]));
        let (origin, got, payload) = open_envelope(&second).unwrap();
        assert_eq!((origin, got.source(), payload), ("b", 4, &b"abc"[..]));
        assert!(open_envelope(&message[..10]).is_none());
        assert!(open_envelope(&[200, 1, 2]).is_none());
        assert!(open_envelope(&[]).is_none());
    }

    #[test]
    fn topic_subjects_are_hex_tokens() {
        assert_eq!(topic_subject("a.b *"), "agentwire.topic.612e62202a");
    }
}
