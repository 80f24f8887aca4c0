//! agentwire-transport: agents on other hosts reach the daemon over the network with the
//! same frames, the same handshake and the same semantics as over shared memory.
//!
//! - [`server::RemoteListener`]: remote agents over TCP on glommio's io_uring networking,
//!   TLS 1.3 with client certificates (rustls), each connection a gateway endpoint of the
//!   router; plaintext only when configured, with a warning.
//! - [`identity`]: what a client certificate's identity may register.
//! - [`udp::UdpTelemetry`]: fire-and-forget telemetry frames over UDP, loss counted per
//!   source (`agentwire_shm::telemetry` is the format and the sender).
//! - [`node::NodeLinks`]: links between daemons named in a static peer list (the same TLS
//!   transport), registries exchanged, unicast, publishes, anycast and feature routes
//!   forwarded both ways.
//! - [`config`], [`tls`], [`stats`]: the listener's settings, rustls configuration and
//!   counters.
//!
//! The frames on the stream are the shared-memory wire format back to back
//! (`agentwire_shm::stream_frames`); the client side is `Agent::builder(..).remote(..)` in
//! the client library.
//!
//! ```
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! use agentwire_transport::{config::ListenerConfig, server::RemoteListener};
//! let sock = std::env::temp_dir().join(format!("aw-doc-transport-{}.sock", std::process::id()));
//! let router = TestRouter::start(TestRouterConfig::new(sock)).unwrap();
//! let listener = RemoteListener::start(
//!     ListenerConfig::plaintext("127.0.0.1:0".parse().unwrap()),
//!     router.control().endpoint_registrar(),
//! ).unwrap();
//! println!("remote agents: {}", listener.local_addr());
//! ```
#![deny(unsafe_code)]

pub mod config;
mod connection;
pub mod identity;
mod listen;
#[cfg(feature = "nats")]
pub mod nats;
/// A NATS server for tests and benches (the `nats` and `test-pki` features together).
#[cfg(all(feature = "nats", feature = "test-pki"))]
pub mod nats_server;
pub mod node;
mod running;
pub mod server;
pub mod stats;
#[cfg(feature = "test-pki")]
pub mod test_pki;
pub mod tls;
pub mod udp;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    /// No TLS configured and plaintext not allowed.
    #[error(
        "the remote agents listener on {0} has no TLS configured and plaintext is not allowed \
         (set the TLS files, or allow_plaintext = true on a trusted network)"
    )]
    PlaintextNotAllowed(std::net::SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen for remote agents: {0}")]
    Bind(String),
    /// A configuration that cannot work (names, addresses, timers), said in words.
    #[error("{0}")]
    Config(String),
    /// The executor could not start (CPU not allowed, memlock, ...).
    #[error("the transport executor could not start: {0}")]
    Executor(String),
}
