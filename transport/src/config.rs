//! What a remote-agent listener is told: where to listen, TLS or (explicitly) not, the
//! identity rules, and the bounds on every connection.

use crate::identity::IdentityRules;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The PEM files of a TLS listener.
///
/// ```
/// let files = agentwire_transport::config::TlsFiles {
///     certificate_chain: "/etc/agentwire/tls/daemon.crt".into(),
///     private_key: "/etc/agentwire/tls/daemon.key".into(),
///     client_ca: "/etc/agentwire/tls/clients-ca.crt".into(),
/// };
/// assert!(files.client_ca.ends_with("clients-ca.crt"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The daemon's certificate, then its intermediates (PEM).
    pub certificate_chain: PathBuf,
    /// The daemon's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The CA certificates that sign client certificates (PEM); a client without a
    /// certificate they sign is refused.
    pub client_ca: PathBuf,
}

/// Default bound on connections at once.
pub const CONNECTIONS_MAX_DEFAULT: usize = 256;
/// Default deadline for the TLS handshake plus `Hello` and `Register`.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default: a connection with no traffic either way for this long is closed (the client
/// library reconnects on its next call).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15 * 60);
/// Default bound on the bytes gathered for one socket write (a batch of frames).
pub const WRITE_BATCH_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// Default bytes of each of a connection's rings in the router (its gateway endpoint): 0,
/// the router's own default.
pub const RING_CAPACITY_BYTES_DEFAULT: u32 = 0;

/// A remote-agent listener's configuration.
///
/// ```
/// use agentwire_transport::config::ListenerConfig;
/// let plain = ListenerConfig::plaintext("127.0.0.1:0".parse().unwrap());
/// assert!(plain.tls.is_none() && plain.allow_plaintext);
/// ```
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// TLS 1.3 with client certificates; `None` is plaintext, refused unless
    /// `allow_plaintext` says otherwise.
    pub tls: Option<TlsFiles>,
    /// Plaintext is allowed (only without `tls`); logged as a warning at start.
    pub allow_plaintext: bool,
    /// What each certificate identity may register.
    pub identities: IdentityRules,
    /// Connections at once; one more is closed at accept and counted.
    pub connections_max: usize,
    /// TLS handshake + `Hello` + `Register` must finish within this.
    pub handshake_timeout: Duration,
    /// A connection silent both ways for this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame a client may send (bytes, header included).
    pub frame_bytes_max: usize,
    /// Most bytes gathered for one socket write.
    pub write_batch_bytes_max: usize,
    /// Bytes of each ring of a connection's gateway endpoint (a power of two within the
    /// router's limits; 0: the router's default).
    pub ring_capacity_bytes: u32,
    /// CPU to pin the transport's executor to (`None`: not pinned).
    pub cpu: Option<usize>,
}

impl ListenerConfig {
    /// A TLS listener with default bounds and no identity rules.
    ///
    /// ```
    /// use agentwire_transport::config::{ListenerConfig, TlsFiles};
    /// let files = TlsFiles { certificate_chain: "c".into(), private_key: "k".into(), client_ca: "ca".into() };
    /// let c = ListenerConfig::tls("0.0.0.0:7450".parse().unwrap(), files);
    /// assert!(!c.allow_plaintext);
    /// ```
    pub fn tls(listen: SocketAddr, files: TlsFiles) -> Self {
        Self {
            tls: Some(files),
            allow_plaintext: false,
            ..Self::plaintext(listen)
        }
    }

    /// A plaintext listener (no TLS: for a trusted network or tests only).
    ///
    /// ```
    /// let c = agentwire_transport::config::ListenerConfig::plaintext("127.0.0.1:0".parse().unwrap());
    /// assert_eq!(c.connections_max, agentwire_transport::config::CONNECTIONS_MAX_DEFAULT);
    /// ```
    pub fn plaintext(listen: SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            allow_plaintext: true,
            identities: IdentityRules::default(),
            connections_max: CONNECTIONS_MAX_DEFAULT,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            frame_bytes_max: agentwire_shm::stream_frames::STREAM_FRAME_BYTES_MAX_DEFAULT,
            write_batch_bytes_max: WRITE_BATCH_BYTES_MAX_DEFAULT,
            ring_capacity_bytes: RING_CAPACITY_BYTES_DEFAULT,
            cpu: None,
        }
    }
}
