//! Node links: daemons named in a static peer list link to each other over TLS 1.3 (mutual
//! authentication: every node's certificate signed by one CA, the certificate's identity
//! checked against the peer list), exchange their registries (a snapshot, then
//! increments), and forward unicast, topic publishes (one copy per node, fanned out
//! there), anycast and feature routes (an agent of the sending node first, else the
//! least-loaded one of another node).
//!
//! Of two nodes the one whose name sorts first dials; the other accepts on its `listen`
//! address. A link that drops is redialled with doubling backoff; while it is down the
//! peer's agents are gone from this node's registry (discovery stops offering them and
//! frames for them are refused as for any departed agent).
//!
//! Each peer agent is a proxy on this node, a remote agent of the link's gateway endpoint
//! named `peer/agent`: its id here is what local agents address, and the link translates
//! ids both ways (a global agent id is the pair node name and id there). See `session`
//! for the data path and docs/wire.md ("Node links") for the protocol.
//!
//! ```no_run
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! use agentwire_transport::node::{config::{NodeConfig, PeerConfig}, NodeLinks};
//! let router = TestRouter::start(TestRouterConfig::new("/tmp/aw-node-a.sock".into())).unwrap();
//! let mut config = NodeConfig::plaintext("a", "127.0.0.1:7460".parse().unwrap());
//! config.peers.push(PeerConfig::new("b", "127.0.0.1:7461".parse().unwrap()));
//! let links = NodeLinks::start(config, router.control().endpoint_registrar()).unwrap();
//! for link in links.links() {
//!     println!("{} {:?}", link.peer, link.state);
//! }
//! ```

pub mod config;
pub mod protocol;
pub(crate) mod session;
pub mod status;

use crate::connection::within;
use crate::identity::certificate_identities;
use crate::running::Running;
use crate::TransportError;
use agentwire_router::endpoint::EndpointRegistrar;
use agentwire_shm::stream_frames::FrameAssembler;
use agentwire_shm::wire::{FrameHeader, HEADER_BYTES};
use config::NodeConfig;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use protocol::{LinkMsg, LINK_PROTOCOL_VERSION};
use session::{End, NodeShared};
use status::{add, LinkReport, LinkState, LinkStatus, NodeStats};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the accept loop and a waiting dialer look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Memory glommio registers for its io_uring buffers.
const IO_MEMORY_BYTES: usize = 512 * 1024;
/// How long stopping waits for accepted links to wind down.
const SESSIONS_CLOSE_WAIT: Duration = Duration::from_secs(3);
/// A link that stayed up this long resets the dial backoff when it drops.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A node's running links. Dropping it closes every link (the peers' agents leave this
/// node's registry) and joins the executor.
pub struct NodeLinks {
    local_addr: Option<SocketAddr>,
    handle: LinksHandle,
    _running: Running,
}

impl std::fmt::Debug for NodeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLinks")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// The links' status and counters, readable from any thread after the [`NodeLinks`]
/// moved (the daemon's status hook).
///
/// ```no_run
/// # fn f(links: &agentwire_transport::node::NodeLinks) {
/// let handle = links.handle();
/// std::thread::spawn(move || println!("{:?}", handle.links()));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LinksHandle {
    links: Arc<Vec<Arc<LinkStatus>>>,
    stats: Arc<NodeStats>,
}

impl LinksHandle {
    /// Every configured peer's link now.
    ///
    /// ```no_run
    /// # fn f(h: &agentwire_transport::node::LinksHandle) {
    /// assert!(h.links().iter().all(|l| !l.peer.is_empty()));
    /// # }
    /// ```
    pub fn links(&self) -> Vec<LinkReport> {
        self.links.iter().map(|l| l.report()).collect()
    }

    /// The node's link counters (all links together).
    ///
    /// ```no_run
    /// # fn f(h: &agentwire_transport::node::LinksHandle) {
    /// for (name, value) in h.counters() { println!("links.{name} {value}"); }
    /// # }
    /// ```
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.stats.snapshot()
    }
}

impl NodeLinks {
    /// Validates `config`, loads its TLS files, starts the links' executor, binds the
    /// listen address (when set) and starts dialling the peers this node dials. Fails
    /// before anything runs on a bad configuration, TLS files that cannot be loaded,
    /// plaintext that was not allowed, or an address that cannot be bound.
    ///
    /// ```
    /// use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// use agentwire_transport::node::{config::NodeConfig, NodeLinks};
    /// let sock = std::env::temp_dir().join(format!("aw-doc-links-{}.sock", std::process::id()));
    /// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let mut config = NodeConfig::plaintext("a", "127.0.0.1:0".parse().unwrap());
    /// config.allow_plaintext = false;
    /// let e = NodeLinks::start(config, router.control().endpoint_registrar()).unwrap_err();
    /// assert!(e.to_string().contains("plaintext"));
    /// ```
    pub fn start(config: NodeConfig, registrar: EndpointRegistrar) -> Result<Self, TransportError> {
        config.validate().map_err(TransportError::Config)?;
        let tls = match &config.tls {
            Some(files) => Some((
                crate::tls::server_config(files)?,
                crate::tls::link_client_config(files)?,
            )),
            None if config.allow_plaintext => {
                tracing::warn!(
                    node = %config.name,
                    "node links WITHOUT TLS (allow_plaintext): anyone who reaches this node's \
                     link address can pose as a peer and read the traffic; use it on a \
                     trusted network or loopback only"
                );
                None
            }
            None => {
                return Err(TransportError::Config(format!(
                    "node {}: links have no TLS configured and plaintext is not allowed (set \
                     the TLS files, or allow_plaintext = true on a trusted network)",
                    config.name
                )))
            }
        };
        let stats = Arc::new(NodeStats::default());
        let links: Vec<Arc<LinkStatus>> = config
            .peers
            .iter()
            .map(|p| {
                Arc::new(LinkStatus::new(
                    &p.name,
                    p.addr.to_string(),
                    config.dials(p),
                ))
            })
            .collect();
        let links = Arc::new(links);
        let stop = Arc::new(AtomicBool::new(false));
        let (bound, bound_rx) = sync_channel(1);
        let placement = match config.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let context = (
            config,
            registrar,
            stats.clone(),
            stop.clone(),
            links.clone(),
        );
        let executor = LocalExecutorBuilder::new(placement)
            .name("aw-links")
            .io_memory(IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(move || async move {
                let (config, registrar, stats, stop, links) = context;
                let listener = match config.listen.map(crate::listen::bind_exclusive).transpose() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = listener.as_ref().map(|l| l.local_addr());
                let _ = bound.send(match local {
                    Some(Err(e)) => Err(e.to_string()),
                    Some(Ok(addr)) => Ok(Some(addr)),
                    None => Ok(None),
                });
                let peers = config.peers.len();
                let node = Rc::new(NodeShared {
                    config,
                    registrar,
                    stats,
                    stop,
                    links: links.to_vec(),
                    active: RefCell::new(vec![false; peers]),
                    proxies: RefCell::default(),
                    clock: Instant::now(),
                    blocking_jobs: Arc::default(),
                });
                let tls = tls.map(|(server, client)| {
                    (
                        futures_rustls::TlsAcceptor::from(server),
                        futures_rustls::TlsConnector::from(client),
                    )
                });
                let mut tasks = Vec::new();
                for index in 0..peers {
                    if node.config.dials(&node.config.peers[index]) {
                        let (node, connector) = (node.clone(), tls.as_ref().map(|t| t.1.clone()));
                        tasks.push(glommio::spawn_local(dial_loop(index, node, connector)));
                    }
                }
                if let Some(listener) = listener {
                    accept_loop(listener, node.clone(), tls.map(|t| t.0)).await;
                }
                for task in tasks {
                    task.await;
                }
                // Accepted links wind down (their nacks) before the executor ends.
                let deadline = Instant::now() + SESSIONS_CLOSE_WAIT;
                while node.active.borrow().iter().any(|&a| a) && Instant::now() < deadline {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                node.await_blocking_jobs().await;
            })
            .map_err(|e| TransportError::Executor(e.to_string()))?;
        let (running, local_addr) = Running::confirm(stop, executor, &bound_rx)?;
        Ok(Self {
            local_addr,
            handle: LinksHandle { links, stats },
            _running: running,
        })
    }

    /// The address bound for links (the real port when the configuration asked for 0),
    /// or `None` when this node only dials.
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::node::NodeLinks) {
    /// println!("links on {:?}", l.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Every configured peer's link now.
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::node::NodeLinks) {
    /// let up = l.links().iter().filter(|l| l.state == agentwire_transport::node::status::LinkState::Up).count();
    /// # }
    /// ```
    pub fn links(&self) -> Vec<LinkReport> {
        self.handle.links()
    }

    /// A handle on the status and counters that can move to another thread.
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::node::NodeLinks) {
    /// let h = l.handle();
    /// # }
    /// ```
    pub fn handle(&self) -> LinksHandle {
        self.handle.clone()
    }
}

/// Why a link could not be set up.
type SetUpError = String;

/// Dials peer `index` until stopped: a session while the link is up, a doubling wait
/// after each failure or drop.
async fn dial_loop(
    index: usize,
    node: Rc<NodeShared>,
    connector: Option<futures_rustls::TlsConnector>,
) {
    let status = node.links[index].clone();
    let mut wait = node.config.retry_min;
    while !node.stopping() {
        status.set_state(LinkState::Connecting);
        let began = Instant::now();
        match dial(index, &node, connector.as_ref()).await {
            Ok(end) => {
                note_end(&node, &status, &end);
                if began.elapsed() >= STABLE_AFTER {
                    wait = node.config.retry_min;
                }
            }
            Err(e) => {
                add(&node.stats.link_failures, 1);
                add(&status.retries, 1);
                tracing::debug!(peer = %status.peer, "node link: dial failed: {e}");
                status.set_error(e);
            }
        }
        if node.stopping() {
            break;
        }
        status.set_state(LinkState::Retrying);
        let until = Instant::now() + wait;
        while !node.stopping() && Instant::now() < until {
            glommio::timer::sleep(STOP_POLL.min(until - Instant::now())).await;
        }
        wait = (wait * 2).min(node.config.retry_max);
    }
}

/// A session's end: logged, counted and kept as the link's last error.
fn note_end(node: &NodeShared, status: &LinkStatus, end: &End) {
    if matches!(end, End::Stopped) {
        return;
    }
    add(&node.stats.link_failures, 1);
    add(&status.retries, 1);
    tracing::warn!(peer = %status.peer, "node link down: {end}");
}

/// One dial: TCP, TLS, `Hello` both ways, then the session until it ends.
async fn dial(
    index: usize,
    node: &NodeShared,
    connector: Option<&futures_rustls::TlsConnector>,
) -> Result<End, SetUpError> {
    let peer = &node.config.peers[index];
    let limit = node.config.handshake_timeout;
    let stream = within(limit, TcpStream::connect(peer.addr))
        .await
        .ok_or_else(|| format!("connecting to {} timed out", peer.addr))?
        .map_err(|e| format!("connecting to {}: {e}", peer.addr))?;
    let _ = stream.set_nodelay(true);
    match connector {
        None => hello_as_dialer(stream, index, node).await,
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from(peer.server_name.clone())
                .map_err(|e| format!("server name {:?}: {e}", peer.server_name))?;
            let tls = within(limit, connector.connect(name, stream))
                .await
                .ok_or_else(|| format!("TLS handshake with {} timed out", peer.addr))?
                .map_err(|e| format!("TLS handshake with {}: {e}", peer.addr))?;
            hello_as_dialer(tls, index, node).await
        }
    }
}

async fn hello_as_dialer<S>(
    mut stream: S,
    index: usize,
    node: &NodeShared,
) -> Result<End, SetUpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = node.config.handshake_timeout;
    let peer = node.config.peers[index].name.clone();
    let hello = LinkMsg::Hello {
        node: node.config.name.clone(),
        version: LINK_PROTOCOL_VERSION,
    };
    write_msg(&mut stream, &hello).await?;
    let mut assembler = FrameAssembler::new(node.config.frame_bytes_max);
    let answer = within(limit, read_msg(&mut stream, &mut assembler))
        .await
        .ok_or_else(|| format!("{peer} did not answer Hello within {limit:?}"))??;
    match answer {
        LinkMsg::Hello {
            node: name,
            version,
        } if name == peer => {
            if version != LINK_PROTOCOL_VERSION {
                return Err(format!(
                    "{peer} speaks link protocol {version}, this node {LINK_PROTOCOL_VERSION}"
                ));
            }
        }
        LinkMsg::Hello { node: name, .. } => {
            return Err(format!("dialled {peer} but {name:?} answered"));
        }
        LinkMsg::Refused { detail } => return Err(format!("{peer} refused the link: {detail}")),
        other => return Err(format!("{peer} answered {}", protocol::name(&other))),
    }
    if std::mem::replace(&mut node.active.borrow_mut()[index], true) {
        return Err(format!("a link with {peer} is already up"));
    }
    let end = session::run(stream, assembler, index, node).await;
    node.active.borrow_mut()[index] = false;
    Ok(end)
}

/// Accepts links until stopped.
async fn accept_loop(
    listener: TcpListener,
    node: Rc<NodeShared>,
    acceptor: Option<futures_rustls::TlsAcceptor>,
) {
    while !node.stopping() {
        let accepted =
            glommio::timer::timeout(STOP_POLL, async { Ok(listener.accept().await) }).await;
        let stream = match accepted {
            Err(_) => continue,
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!("accept on the node link listener failed: {e}");
                glommio::timer::sleep(STOP_POLL).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (node, acceptor) = (node.clone(), acceptor.clone());
        glommio::spawn_local(async move {
            if let Err(e) = accept(stream, &node, acceptor).await {
                add(&node.stats.links_refused, 1);
                tracing::warn!("node link refused: {e}");
            }
        })
        .detach();
    }
}

async fn accept(
    stream: TcpStream,
    node: &NodeShared,
    acceptor: Option<futures_rustls::TlsAcceptor>,
) -> Result<(), SetUpError> {
    let remote = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "an unknown address".into());
    let limit = node.config.handshake_timeout;
    match acceptor {
        None => hello_as_acceptor(stream, None, &remote, node).await,
        Some(acceptor) => {
            let tls = within(limit, acceptor.accept(stream))
                .await
                .ok_or_else(|| format!("TLS handshake from {remote} timed out"))?
                .map_err(|e| format!("TLS handshake from {remote}: {e}"))?;
            let identities = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| certificate_identities(c))
                .ok_or_else(|| format!("{remote} presented no certificate"))??;
            hello_as_acceptor(tls, Some(identities), &remote, node).await
        }
    }
}

async fn hello_as_acceptor<S>(
    mut stream: S,
    identities: Option<Vec<String>>,
    remote: &str,
    node: &NodeShared,
) -> Result<(), SetUpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = node.config.handshake_timeout;
    let mut assembler = FrameAssembler::new(node.config.frame_bytes_max);
    let hello = within(limit, read_msg(&mut stream, &mut assembler))
        .await
        .ok_or_else(|| format!("{remote} did not say Hello within {limit:?}"))??;
    let LinkMsg::Hello {
        node: name,
        version,
    } = hello
    else {
        return Err(format!("{remote} opened with {}", protocol::name(&hello)));
    };
    let refusal = 'check: {
        let Some(index) = node.config.peers.iter().position(|p| p.name == name) else {
            break 'check Err(format!("{name:?} is not in this node's peer list"));
        };
        if version != LINK_PROTOCOL_VERSION {
            break 'check Err(format!(
                "link protocol {version} offered, this node speaks {LINK_PROTOCOL_VERSION}"
            ));
        }
        let expected = node.config.peers[index].expected_identity();
        if let Some(identities) = &identities {
            if !identities.contains(&expected) {
                break 'check Err(format!(
                    "the certificate of {remote} names {identities:?}, not {expected} (the \
                     identity peer {name:?} must present)"
                ));
            }
        }
        if node.active.borrow()[index] {
            break 'check Err(format!("a link with {name:?} is already up"));
        }
        Ok(index)
    };
    let index = match refusal {
        Ok(index) => index,
        Err(detail) => {
            let _ = write_msg(
                &mut stream,
                &LinkMsg::Refused {
                    detail: detail.clone(),
                },
            )
            .await;
            return Err(detail);
        }
    };
    let hello = LinkMsg::Hello {
        node: node.config.name.clone(),
        version: LINK_PROTOCOL_VERSION,
    };
    write_msg(&mut stream, &hello).await?;
    node.active.borrow_mut()[index] = true;
    let status = node.links[index].clone();
    let end = session::run(stream, assembler, index, node).await;
    node.active.borrow_mut()[index] = false;
    note_end(node, &status, &end);
    if !node.stopping() {
        status.set_state(LinkState::Waiting);
    }
    Ok(())
}

async fn write_msg<W: AsyncWrite + Unpin>(writer: &mut W, msg: &LinkMsg) -> Result<(), SetUpError> {
    let mut out = Vec::new();
    protocol::encode(msg, &mut out).map_err(|e| e.to_string())?;
    writer.write_all(&out).await.map_err(|e| e.to_string())?;
    writer.flush().await.map_err(|e| e.to_string())
}

async fn read_msg<R: AsyncRead + Unpin>(
    reader: &mut R,
    assembler: &mut FrameAssembler,
) -> Result<LinkMsg, SetUpError> {
    loop {
        match assembler.next_frame() {
            Err(e) => return Err(e.to_string()),
            Ok(Some(frame)) => {
                let header = FrameHeader::validate(frame).map_err(|e| e.to_string())?;
                return protocol::decode(header, &frame[HEADER_BYTES..]).map_err(|e| e.to_string());
            }
            Ok(None) => {}
        }
        match reader.read(assembler.spare()).await {
            Ok(0) => return Err("the peer closed the connection".into()),
            Ok(n) => assembler.filled(n),
            Err(e) => return Err(e.to_string()),
        }
    }
}
