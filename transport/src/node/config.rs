//! A node's link settings: its name, where it listens for other nodes, its static peer
//! list, TLS, and the link's timers and bounds.

use crate::config::TlsFiles;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest node name (bytes); names are `[a-z0-9._-]`, so a proxy's name
/// (`node/agent`) stays readable.
pub const NODE_NAME_BYTES_MAX: usize = 32;
/// Default interval between pings on a link (RTT and proof of life).
pub const PING_INTERVAL_DEFAULT: Duration = Duration::from_millis(500);
/// Default: a link silent this long is dead (closed and redialled).
pub const DEAD_AFTER_DEFAULT: Duration = Duration::from_secs(3);
/// Default first and longest wait between dials of a peer that is down (doubling).
pub const RETRY_MIN_DEFAULT: Duration = Duration::from_millis(100);
/// See [`RETRY_MIN_DEFAULT`].
pub const RETRY_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// Default: how often a link looks for registry changes to send.
pub const SYNC_INTERVAL_DEFAULT: Duration = Duration::from_millis(20);

/// Another node this one links to.
///
/// ```
/// let b = agentwire_transport::node::config::PeerConfig::new("b", "127.0.0.1:7461".parse().unwrap());
/// assert_eq!(b.server_name, "127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its node name (what it says in its `Hello`).
    pub name: String,
    /// Where it listens for links.
    pub addr: SocketAddr,
    /// The name its certificate must carry when this node dials it (an IP address or a DNS
    /// name; default: the address's IP).
    pub server_name: String,
    /// A certificate identity (`cn:..`, `dns:..`, ...) it must present when it dials this
    /// node; `None`: `cn:NAME`.
    pub identity: Option<String>,
}

impl PeerConfig {
    /// A peer with the default server name and identity.
    ///
    /// ```
    /// let c = agentwire_transport::node::config::PeerConfig::new("c", "10.0.0.3:7460".parse().unwrap());
    /// assert!(c.identity.is_none());
    /// ```
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            addr,
            server_name: addr.ip().to_string(),
            identity: None,
        }
    }

    /// The certificate identity it must present (`cn:NAME` unless configured).
    ///
    /// ```
    /// let c = agentwire_transport::node::config::PeerConfig::new("c", "10.0.0.3:7460".parse().unwrap());
    /// assert_eq!(c.expected_identity(), "cn:c");
    /// ```
    pub fn expected_identity(&self) -> String {
        self.identity
            .clone()
            .unwrap_or_else(|| format!("cn:{}", self.name))
    }
}

/// A node's links.
///
/// ```
/// use agentwire_transport::node::config::{NodeConfig, PeerConfig};
/// let mut a = NodeConfig::plaintext("a", "127.0.0.1:0".parse().unwrap());
/// a.peers.push(PeerConfig::new("b", "127.0.0.1:7461".parse().unwrap()));
/// assert!(a.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name, unique in the cluster.
    pub name: String,
    /// Where other nodes dial this one (needed when a peer's name sorts before this one's:
    /// of two nodes, the one whose name sorts first dials).
    pub listen: Option<SocketAddr>,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
    /// TLS 1.3 both ways: this node's certificate and key, and the CA that signs every
    /// node's certificate. `None` is plaintext, refused unless `allow_plaintext`.
    pub tls: Option<TlsFiles>,
    /// Plaintext links are allowed (only without `tls`); logged as a warning.
    pub allow_plaintext: bool,
    /// TLS handshake plus `Hello` must finish within this.
    pub handshake_timeout: Duration,
    /// Interval between pings.
    pub ping_interval: Duration,
    /// A link silent this long is dead.
    pub dead_after: Duration,
    /// First wait before redialling a peer; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between dials.
    pub retry_max: Duration,
    /// How often a link looks for registry changes.
    pub sync_interval: Duration,
    /// Largest frame a peer may send (bytes, header included).
    pub frame_bytes_max: usize,
    /// Most bytes gathered for one socket write.
    pub write_batch_bytes_max: usize,
    /// Bytes of each ring of a link's gateway endpoint (0: the router's default).
    pub ring_capacity_bytes: u32,
    /// CPU to pin the links' executor to (`None`: not pinned).
    pub cpu: Option<usize>,
}

impl NodeConfig {
    /// Plaintext links with default timers (tests, a trusted network).
    ///
    /// ```
    /// let c = agentwire_transport::node::config::NodeConfig::plaintext("a", "127.0.0.1:0".parse().unwrap());
    /// assert!(c.allow_plaintext && c.tls.is_none());
    /// ```
    pub fn plaintext(name: &str, listen: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            listen: Some(listen),
            peers: Vec::new(),
            tls: None,
            allow_plaintext: true,
            handshake_timeout: crate::config::HANDSHAKE_TIMEOUT_DEFAULT,
            ping_interval: PING_INTERVAL_DEFAULT,
            dead_after: DEAD_AFTER_DEFAULT,
            retry_min: RETRY_MIN_DEFAULT,
            retry_max: RETRY_MAX_DEFAULT,
            sync_interval: SYNC_INTERVAL_DEFAULT,
            frame_bytes_max: agentwire_shm::stream_frames::STREAM_FRAME_BYTES_MAX_DEFAULT,
            write_batch_bytes_max: crate::config::WRITE_BATCH_BYTES_MAX_DEFAULT,
            ring_capacity_bytes: 0,
            cpu: None,
        }
    }

    /// TLS links with default timers.
    ///
    /// ```
    /// use agentwire_transport::{config::TlsFiles, node::config::NodeConfig};
    /// let files = TlsFiles { certificate_chain: "n.crt".into(), private_key: "n.key".into(), client_ca: "ca.crt".into() };
    /// let c = NodeConfig::tls("a", "0.0.0.0:7460".parse().unwrap(), files);
    /// assert!(!c.allow_plaintext);
    /// ```
    pub fn tls(name: &str, listen: SocketAddr, files: TlsFiles) -> Self {
        Self {
            tls: Some(files),
            allow_plaintext: false,
            ..Self::plaintext(name, listen)
        }
    }

    /// Checks names (this node's and its peers': valid, distinct), that a listen address is
    /// there when some peer dials this node, and the timers.
    ///
    /// ```
    /// let mut c = agentwire_transport::node::config::NodeConfig::plaintext("Bad Name", "127.0.0.1:0".parse().unwrap());
    /// assert!(c.validate().unwrap_err().contains("Bad Name"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        let mut seen = std::collections::HashSet::new();
        for peer in &self.peers {
            check_name(&peer.name)?;
            if peer.name == self.name {
                return Err(format!("peer {:?} has this node's own name", peer.name));
            }
            if !seen.insert(peer.name.as_str()) {
                return Err(format!("peer {:?} is listed twice", peer.name));
            }
            if peer.name < self.name && self.listen.is_none() {
                return Err(format!(
                    "peer {:?} dials this node (its name sorts first), so this node needs a \
                     listen address",
                    peer.name
                ));
            }
        }
        if self.ping_interval.is_zero() || self.dead_after <= self.ping_interval {
            return Err("dead_after must be longer than ping_interval (both above 0)".into());
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err("retry_min must be above 0 and at most retry_max".into());
        }
        Ok(())
    }

    /// Whether this node dials `peer` (its name sorts first) or waits for it.
    ///
    /// ```
    /// use agentwire_transport::node::config::{NodeConfig, PeerConfig};
    /// let a = NodeConfig::plaintext("a", "127.0.0.1:0".parse().unwrap());
    /// assert!(a.dials(&PeerConfig::new("b", "127.0.0.1:1".parse().unwrap())));
    /// ```
    pub fn dials(&self, peer: &PeerConfig) -> bool {
        self.name < peer.name
    }
}

/// A node name: 1 to [`NODE_NAME_BYTES_MAX`] bytes of `[a-z0-9._-]`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NODE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?} must be 1 to {NODE_NAME_BYTES_MAX} bytes of a-z, 0-9, '.', '_' \
             and '-'"
        ))
    }
}
