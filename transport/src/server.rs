//! The listener: one glommio executor (io_uring networking), pinned when told, accepting
//! connections within the connection limit and serving each on a task of its own.

use crate::config::ListenerConfig;
use crate::connection::{self, Context};
use crate::running::Running;
use crate::stats::{add, StatsSnapshot, TransportStats};
use crate::TransportError;
use agentwire_router::endpoint::EndpointRegistrar;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long stopping waits for connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Memory glommio registers for its io_uring buffers (networking needs little).
const IO_MEMORY_BYTES: usize = 512 * 1024;

/// A running listener for remote agents. Dropping it stops accepting, closes every
/// connection (their remote agents leave the router) and joins the executor.
///
/// ```
/// use agentwire_router::testing::{TestRouter, TestRouterConfig};
/// use agentwire_transport::{config::ListenerConfig, server::RemoteListener};
/// let sock = std::env::temp_dir().join(format!("aw-doc-listener-{}.sock", std::process::id()));
/// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
/// let config = ListenerConfig::plaintext("127.0.0.1:0".parse().unwrap());
/// let listener = RemoteListener::start(config, router.control().endpoint_registrar()).unwrap();
/// assert_ne!(listener.local_addr().port(), 0);
/// assert_eq!(listener.stats().connections_active, 0);
/// ```
pub struct RemoteListener {
    local_addr: SocketAddr,
    stats: Arc<TransportStats>,
    /// Stopped and joined on drop: every connection closes (its agents leave the router).
    _running: Running,
}

impl std::fmt::Debug for RemoteListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteListener")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl RemoteListener {
    /// Starts the executor, binds `config.listen` and serves remote agents, registering
    /// one gateway endpoint per connection through `registrar`. Fails (before anything
    /// runs) on a TLS configuration that cannot be loaded, plaintext that was not allowed,
    /// or an address that cannot be bound.
    ///
    /// ```
    /// use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// use agentwire_transport::{config::ListenerConfig, server::RemoteListener};
    /// let sock = std::env::temp_dir().join(format!("aw-doc-listener-pt-{}.sock", std::process::id()));
    /// let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
    /// let mut config = ListenerConfig::plaintext("127.0.0.1:0".parse().unwrap());
    /// config.allow_plaintext = false;
    /// let e = RemoteListener::start(config, router.control().endpoint_registrar()).unwrap_err();
    /// assert!(e.to_string().contains("plaintext"));
    /// ```
    pub fn start(
        config: ListenerConfig,
        registrar: EndpointRegistrar,
    ) -> Result<Self, TransportError> {
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::server_config(files)?),
            None if config.allow_plaintext => {
                tracing::warn!(
                    listen = %config.listen,
                    "remote agents listener WITHOUT TLS (allow_plaintext): anyone who reaches \
                     {} may register agents and read their traffic; use it on a trusted \
                     network or loopback only",
                    config.listen
                );
                None
            }
            None => return Err(TransportError::PlaintextNotAllowed(config.listen)),
        };
        let stats = Arc::new(TransportStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (bound, bound_rx) = sync_channel(1);
        let placement = match config.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let context = (config, registrar, stats.clone(), stop.clone(), tls);
        let executor = LocalExecutorBuilder::new(placement)
            .name("aw-transport")
            .io_memory(IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(move || async move {
                let (config, registrar, stats, stop, tls) = context;
                let listener = match crate::listen::bind_exclusive(config.listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = bound.send(listener.local_addr().map_err(|e| e.to_string()));
                let context = Rc::new(Context::new(config, registrar, stats, stop, tls));
                accept_loop(listener, context).await;
            })
            .map_err(|e| TransportError::Executor(e.to_string()))?;
        let (running, local_addr) = Running::confirm(stop, executor, &bound_rx)?;
        Ok(Self {
            local_addr,
            stats,
            _running: running,
        })
    }

    /// The address bound (the real port when the configuration asked for port 0).
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::server::RemoteListener) {
    /// println!("remote agents connect to {}", l.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's counters now.
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::server::RemoteListener) {
    /// println!("{} remote connections", l.stats().connections_active);
    /// # }
    /// ```
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters themselves, to read after this handle moved (a status hook).
    ///
    /// ```no_run
    /// # fn f(l: &agentwire_transport::server::RemoteListener) {
    /// let stats = l.stats_handle();
    /// std::thread::spawn(move || println!("{:?}", stats.snapshot()));
    /// # }
    /// ```
    pub fn stats_handle(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }
}

/// Accepts until stopped; then waits (a bounded time) for the connections to close.
async fn accept_loop(listener: TcpListener, context: Rc<Context>) {
    while !context.stopping() {
        let accepted =
            glommio::timer::timeout(STOP_POLL, async { Ok(listener.accept().await) }).await;
        let stream = match accepted {
            Err(_) => continue, // no connection within the poll interval
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!("accept on the remote agents listener failed: {e}");
                glommio::timer::sleep(STOP_POLL).await;
                continue;
            }
        };
        add(&context.stats.connections_accepted, 1);
        let active = context.stats.connections_active.load(Ordering::Relaxed);
        if active as usize >= context.config.connections_max {
            add(&context.stats.connections_over_limit, 1);
            context.note_refusal(&format!(
                "connection refused: {active} remote connections open, the limit \
                 (connections_max)"
            ));
            drop(stream);
            continue;
        }
        add(&context.stats.connections_active, 1);
        let context = context.clone();
        glommio::spawn_local(async move {
            connection::serve(stream, &context).await;
            context
                .stats
                .connections_active
                .fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
    // Every connection task sees the stop flag within its poll interval and ends (its
    // gateway endpoint, and so its remote agent, leaves the router).
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    while context.stats.connections_active.load(Ordering::Relaxed) > 0
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}
