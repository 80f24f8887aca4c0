//! Node links in the daemon: `[node]` names this node and, with `[[node.peer]]` tables, the
//! other nodes it links to ([`agentwire_transport::node::NodeLinks`], an executor of its
//! own). Of two nodes the one whose name sorts first dials; the other accepts on its
//! `listen` address. TLS 1.3 both ways is required unless `allow_plaintext = true`: each
//! node presents its certificate (`tls_certificate`, `tls_key`) and trusts the CA that signs
//! every node's (`tls_ca`); a peer must present the identity its table names (`cn:NAME` by
//! default). The links show in `agentwire links`, their counters in `agentwire status` as
//! `links.*` and in Prometheus as `agentwire_links_<counter>`.
//!
//! ```toml
//! [node]
//! name = "a"                          # this node, unique in the cluster: a-z 0-9 . _ -
//! listen = "0.0.0.0:7460"             # where peers whose name sorts after dial (optional otherwise)
//! tls_certificate = "/etc/agentwire/tls/node-a.crt"
//! tls_key = "/etc/agentwire/tls/node-a.key"
//! tls_ca = "/etc/agentwire/tls/nodes-ca.crt"
//! allow_plaintext = false
//! ping_interval_ms = 500
//! dead_after_ms = 3000                # a link silent this long is down
//! retry_min_ms = 100                  # first redial wait, doubling
//! retry_max_ms = 5000
//! cpu = 3                             # pin the links' executor (default: unpinned)
//!
//! [[node.peer]]
//! name = "b"
//! addr = "10.0.0.2:7460"
//! server_name = "10.0.0.2"            # the name b's certificate carries (default: addr's IP)
//! identity = "cn:b"                   # what b must present when it dials (default cn:NAME)
//! ```

use agentwire_transport::config::TlsFiles;
use agentwire_transport::node::config::{NodeConfig, PeerConfig};
use agentwire_transport::node::LinksHandle;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[node]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's name (absent: no links).
    pub name: Option<String>,
    /// Where peers dial this node.
    pub listen: Option<String>,
    /// This node's certificate chain (PEM).
    pub tls_certificate: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every node's certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Links without TLS (default false).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// TLS handshake plus `Hello` deadline, ms.
    pub handshake_timeout_ms: Option<u64>,
    /// Interval between pings, ms.
    pub ping_interval_ms: Option<u64>,
    /// Silence that takes a link down, ms.
    pub dead_after_ms: Option<u64>,
    /// First redial wait, ms.
    pub retry_min_ms: Option<u64>,
    /// Longest redial wait, ms.
    pub retry_max_ms: Option<u64>,
    /// Each link's rings in the router, bytes (0: the daemon's).
    pub ring_capacity_bytes: Option<u32>,
    /// CPU of the links' executor.
    pub cpu: Option<usize>,
    /// The other nodes.
    #[serde(default)]
    pub peer: Vec<PeerSection>,
    /// A NATS server of the cluster to join (`nats://host:port` or `tls://`; cargo feature
    /// `nats`).
    pub nats_url: Option<String>,
    /// The JetStream key-value bucket of the registries (default `agentwire`).
    pub nats_bucket: Option<String>,
    /// Lifetime of this node's registry entry, ms (default 3000).
    pub nats_ttl_ms: Option<u64>,
}

/// How the daemon joins a NATS cluster (`[node] nats_*`), whatever the build: a build
/// without the cargo feature `nats` refuses it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// This node's name.
    pub node: String,
    /// The server URL(s).
    pub url: String,
    /// The key-value bucket.
    pub bucket: String,
    /// The registry entry's lifetime.
    pub ttl: Duration,
    /// TLS to the server (`tls://` URLs): the node's certificate, key and CA.
    pub tls: Option<TlsFiles>,
}

/// One `[[node.peer]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Its node name.
    pub name: String,
    /// Where it listens for links.
    pub addr: String,
    /// The name its certificate carries (default: the address's IP).
    pub server_name: Option<String>,
    /// The certificate identity it presents (default `cn:NAME`).
    pub identity: Option<String>,
}

fn millis(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, (String, String)> {
    match value {
        None => Ok(default),
        Some(0) => Err((format!("node.{key}"), "at least 1".into())),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn address(key: &str, text: &str) -> Result<SocketAddr, (String, String)> {
    text.parse().map_err(|e| {
        (
            key.to_string(),
            format!("{text:?} is not an address:port ({e})"),
        )
    })
}

impl NodeSection {
    /// The links' configuration, or `None` without `name`; an error names the key
    /// (`node.peer[0].addr`) and what is wrong.
    ///
    /// ```
    /// use agentwire_runtime::node_links::{NodeSection, PeerSection};
    /// let s = NodeSection { name: Some("a".into()), allow_plaintext: true,
    ///     peer: vec![PeerSection { name: "b".into(), addr: "nowhere".into(), ..Default::default() }],
    ///     ..Default::default() };
    /// assert_eq!(s.links_config().unwrap_err().0, "node.peer[0].addr");
    /// let none = NodeSection::default();
    /// assert!(none.links_config().unwrap().is_none());
    /// ```
    pub fn links_config(&self) -> Result<Option<NodeConfig>, (String, String)> {
        let Some(name) = &self.name else {
            if self.listen.is_some() || !self.peer.is_empty() || self.nats_url.is_some() {
                return Err((
                    "node.name".into(),
                    "missing: a node with a listen address, peers or a NATS server needs a \
                     name"
                        .into(),
                ));
            }
            return Ok(None);
        };
        if self.listen.is_none() && self.peer.is_empty() {
            // A node in a NATS cluster only: no links to run.
            check_node_name(name)?;
            return Ok(None);
        }
        let listen = self
            .listen
            .as_deref()
            .map(|l| address("node.listen", l))
            .transpose()?;
        let tls = crate::remote::tls_files(
            ("node", "node links", "tls_ca"),
            [&self.tls_certificate, &self.tls_key, &self.tls_ca],
            self.allow_plaintext,
        )?;
        // A placeholder listen address: replaced (or removed) just below.
        let any: SocketAddr = "0.0.0.0:0".parse().expect("an address");
        let mut config = match tls {
            Some(files) => NodeConfig::tls(name, any, files),
            None => NodeConfig::plaintext(name, any),
        };
        config.listen = listen;
        use agentwire_transport::node::config as defaults;
        config.handshake_timeout = millis(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            agentwire_transport::config::HANDSHAKE_TIMEOUT_DEFAULT,
        )?;
        config.ping_interval = millis(
            "ping_interval_ms",
            self.ping_interval_ms,
            defaults::PING_INTERVAL_DEFAULT,
        )?;
        config.dead_after = millis(
            "dead_after_ms",
            self.dead_after_ms,
            defaults::DEAD_AFTER_DEFAULT,
        )?;
        config.retry_min = millis(
            "retry_min_ms",
            self.retry_min_ms,
            defaults::RETRY_MIN_DEFAULT,
        )?;
        config.retry_max = millis(
            "retry_max_ms",
            self.retry_max_ms,
            defaults::RETRY_MAX_DEFAULT,
        )?;
        if let Some(bytes) = self.ring_capacity_bytes {
            if bytes != 0 && !bytes.is_power_of_two() {
                return Err((
                    "node.ring_capacity_bytes".into(),
                    format!("{bytes} is not a power of two (or 0)"),
                ));
            }
            config.ring_capacity_bytes = bytes;
        }
        config.cpu = self.cpu;
        for (i, peer) in self.peer.iter().enumerate() {
            let addr = address(&format!("node.peer[{i}].addr"), &peer.addr)?;
            let mut p = PeerConfig::new(&peer.name, addr);
            if let Some(server_name) = &peer.server_name {
                p.server_name = server_name.clone();
            }
            p.identity = peer.identity.clone();
            config.peers.push(p);
        }
        config.validate().map_err(|why| ("node".to_string(), why))?;
        Ok(Some(config))
    }
}

fn check_node_name(name: &str) -> Result<(), (String, String)> {
    NodeConfig::plaintext(name, "0.0.0.0:0".parse().expect("an address"))
        .validate()
        .map_err(|why| ("node.name".to_string(), why))
}

impl NodeSection {
    /// The NATS settings, or `None` without `nats_url`; an error names the key.
    ///
    /// ```
    /// use agentwire_runtime::node_links::NodeSection;
    /// let s = NodeSection { name: Some("a".into()), nats_url: Some("nats://127.0.0.1:4222".into()),
    ///     ..Default::default() };
    /// assert_eq!(s.nats_settings().unwrap().unwrap().bucket, "agentwire");
    /// let bad = NodeSection { nats_url: Some("http://x".into()), ..s };
    /// assert_eq!(bad.nats_settings().unwrap_err().0, "node.nats_url");
    /// ```
    pub fn nats_settings(&self) -> Result<Option<NatsSettings>, (String, String)> {
        let Some(url) = &self.nats_url else {
            return Ok(None);
        };
        let Some(node) = &self.name else {
            return Err((
                "node.name".into(),
                "missing: a NATS node needs a name".into(),
            ));
        };
        let schemes = ["nats://", "tls://"];
        if url
            .split(',')
            .any(|u| !schemes.iter().any(|s| u.trim().starts_with(s)))
        {
            return Err((
                "node.nats_url".into(),
                format!("{url:?}: each server is nats://host:port or tls://host:port"),
            ));
        }
        let bucket = self
            .nats_bucket
            .clone()
            .unwrap_or_else(|| "agentwire".into());
        let bucket_ok = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !bucket_ok {
            return Err((
                "node.nats_bucket".into(),
                format!("{bucket:?}: letters, digits, '_' and '-' only"),
            ));
        }
        let ttl = millis("nats_ttl_ms", self.nats_ttl_ms, Duration::from_secs(3))?;
        if ttl < Duration::from_secs(1) {
            return Err(("node.nats_ttl_ms".into(), "at least 1000".into()));
        }
        let tls = match (&self.tls_certificate, &self.tls_key, &self.tls_ca) {
            (Some(c), Some(k), Some(ca)) if url.starts_with("tls://") => Some(TlsFiles {
                certificate_chain: c.clone(),
                private_key: k.clone(),
                client_ca: ca.clone(),
            }),
            _ => None,
        };
        Ok(Some(NatsSettings {
            node: node.clone(),
            url: url.clone(),
            bucket,
            ttl,
            tls,
        }))
    }
}

/// The links' counters as `links.*` status counters.
///
/// ```no_run
/// # fn f(h: &agentwire_transport::node::LinksHandle) {
/// let c = agentwire_runtime::node_links::counters(h);
/// assert!(c.iter().any(|(k, _)| k == "links.links_up"));
/// # }
/// ```
pub fn counters(handle: &LinksHandle) -> Vec<(String, u64)> {
    handle
        .counters()
        .into_iter()
        .map(|(k, v)| (format!("links.{k}"), v))
        .collect()
}
