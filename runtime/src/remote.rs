//! Remote agents in the daemon: `[remote]` with a `listen` address starts the network
//! listener ([`agentwire_transport::server::RemoteListener`]) on its own pinned executor;
//! each connection is a gateway endpoint of the router. TLS 1.3 with client certificates
//! is required unless `allow_plaintext = true` (logged as a warning). What each client
//! certificate may register, and whom its agent may send to and publish on, is said by
//! `[[remote.identity]]` tables (first match wins; none: any certificate the CA signed may
//! register and send anything). The listener's counters show in
//! `agentwire status` as `remote.*` and in the Prometheus endpoint as
//! `agentwire_remote_<counter>`.
//!
//! `udp_listen` starts the UDP telemetry receiver
//! ([`agentwire_transport::udp::UdpTelemetry`], an executor of its own on `cpu`; no TLS, no
//! identity: fire-and-forget frames from `agentwire_shm::telemetry::TelemetrySender`, for a
//! trusted network). Its publish frames go to `udp_topic`, its feature frames to their
//! feature routes; loss, reordering and duplicates per source show as `remote.udp_*`.
//!
//! ```toml
//! [remote]
//! listen = "0.0.0.0:7450"
//! tls_certificate = "/etc/agentwire/tls/daemon.crt"   # the daemon's chain (PEM)
//! tls_key = "/etc/agentwire/tls/daemon.key"           # its key (PEM)
//! tls_client_ca = "/etc/agentwire/tls/clients-ca.crt" # signs the agents' certificates
//! allow_plaintext = false           # true: no TLS (trusted network or loopback only)
//! connections_max = 256
//! handshake_timeout_ms = 5000       # TLS + Hello + Register
//! idle_timeout_ms = 900000          # silent both ways this long: closed
//! frame_bytes_max = 1048576         # largest frame a remote agent may send
//! ring_capacity_bytes = 0           # each connection's rings in the router (0: ring_capacity_bytes)
//! cpu = 3                           # pin the transport executor (default: unpinned)
//! udp_listen = "0.0.0.0:7451"       # UDP telemetry (absent: none); works without `listen`
//! udp_topic = "telemetry"           # where telemetry publish frames go
//! udp_sources_max = 4096            # sources tracked for loss (least recently seen evicted)
//! udp_recv_buffer_bytes = 4194304   # SO_RCVBUF asked for (capped by net.core.rmem_max)
//!
//! [[remote.identity]]
//! identities = ["cn:ocr-*", "dns:scanner.example"]  # cn:, dns:, uri:, email:, ip:; exact or prefix*
//! names = ["ocr-*"]
//! capabilities = ["ocr"]
//! subscribe = ["scans.*"]
//! publish = ["ocr.results"]
//! send = ["store", "scanner-*"]     # agents it may send to (and routes may pick for it)
//! ```

use agentwire_router::policy::{Pattern, Rule};
use agentwire_transport::config::{ListenerConfig, TlsFiles};
use agentwire_transport::identity::{IdentityRule, IdentityRules};
use agentwire_transport::stats::StatsSnapshot;
use agentwire_transport::udp::{UdpStatsSnapshot, UdpTelemetryConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[remote]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// Address to listen on (absent: no listener).
    pub listen: Option<String>,
    /// The daemon's certificate chain (PEM).
    pub tls_certificate: Option<PathBuf>,
    /// The daemon's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA that signs client certificates (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Serve without TLS (default false).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Connections at once.
    pub connections_max: Option<usize>,
    /// Handshake deadline, ms.
    pub handshake_timeout_ms: Option<u64>,
    /// Idle deadline, ms.
    pub idle_timeout_ms: Option<u64>,
    /// Largest frame a client may send, bytes.
    pub frame_bytes_max: Option<usize>,
    /// Each connection's ring capacity in the router, bytes (0: the daemon's).
    pub ring_capacity_bytes: Option<u32>,
    /// CPU of the transport executor.
    pub cpu: Option<usize>,
    /// Identity rules.
    #[serde(default)]
    pub identity: Vec<IdentitySection>,
    /// UDP telemetry address (absent: no UDP).
    pub udp_listen: Option<String>,
    /// Topic of telemetry publish frames (default `"telemetry"`).
    pub udp_topic: Option<String>,
    /// Telemetry sources tracked at once (default 4096).
    pub udp_sources_max: Option<usize>,
    /// SO_RCVBUF asked for the telemetry socket, bytes (default 4 MiB).
    pub udp_recv_buffer_bytes: Option<usize>,
}

/// One `[[remote.identity]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Certificate identities it applies to.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Agent names they may register.
    #[serde(default)]
    pub names: Vec<String>,
    /// Capabilities they may offer.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Topics they may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topics they may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Agents they may send to, by name (unicast, request, response; and whom anycast and
    /// feature routes may pick for them).
    #[serde(default)]
    pub send: Vec<String>,
}

/// The TLS files of a section (`section.tls_certificate`, `.tls_key`, and the CA key
/// `ca_key`), or `None` for plaintext, which must be allowed (`allow_plaintext`); an error
/// names the key and says what `who` needs.
///
/// ```
/// # use agentwire_runtime::remote::tls_files;
/// let none = None;
/// let (key, why) = tls_files(("node", "node links", "tls_ca"), [&none, &none, &none], false).unwrap_err();
/// assert_eq!(key, "node.tls_certificate");
/// assert!(why.contains("allow_plaintext"));
/// assert!(tls_files(("node", "node links", "tls_ca"), [&none, &none, &none], true).unwrap().is_none());
/// ```
pub fn tls_files(
    (section, who, ca_key): (&str, &str, &str),
    [certificate, key, ca]: [&Option<PathBuf>; 3],
    allow_plaintext: bool,
) -> Result<Option<TlsFiles>, (String, String)> {
    match (certificate, key, ca) {
        (None, None, None) if allow_plaintext => Ok(None),
        (None, None, None) => Err((
            format!("{section}.tls_certificate"),
            format!(
                "{who} need TLS: set tls_certificate, tls_key and {ca_key} (or \
                 allow_plaintext = true on a trusted network)"
            ),
        )),
        (Some(c), Some(k), Some(ca)) if !allow_plaintext => Ok(Some(TlsFiles {
            certificate_chain: c.clone(),
            private_key: k.clone(),
            client_ca: ca.clone(),
        })),
        (Some(_), Some(_), Some(_)) => Err((
            format!("{section}.allow_plaintext"),
            "true together with TLS files: choose one".into(),
        )),
        (c, k, _) => {
            let missing = if c.is_none() {
                "tls_certificate"
            } else if k.is_none() {
                "tls_key"
            } else {
                ca_key
            };
            Err((
                format!("{section}.{missing}"),
                format!("missing: TLS needs tls_certificate, tls_key and {ca_key}"),
            ))
        }
    }
}

fn patterns(key: &str, texts: &[String]) -> Result<Vec<Pattern>, (String, String)> {
    texts
        .iter()
        .map(|t| Pattern::new(t).map_err(|why| (key.to_string(), format!("{t:?}: {why}"))))
        .collect()
}

impl RemoteSection {
    /// The listener's configuration, or `None` without `listen`; an error names the key
    /// (`remote.tls_key`) and what is wrong.
    ///
    /// ```
    /// use agentwire_runtime::remote::RemoteSection;
    /// let s = RemoteSection { listen: Some("127.0.0.1:7450".into()), ..Default::default() };
    /// let (key, why) = s.listener_config().unwrap_err();
    /// assert_eq!(key, "remote.tls_certificate");
    /// assert!(why.contains("allow_plaintext"));
    /// let plain = RemoteSection { allow_plaintext: true, ..s };
    /// assert!(plain.listener_config().unwrap().unwrap().tls.is_none());
    /// ```
    pub fn listener_config(&self) -> Result<Option<ListenerConfig>, (String, String)> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        let addr: SocketAddr = listen.parse().map_err(|e| {
            (
                "remote.listen".to_string(),
                format!("{listen:?} is not an address:port ({e})"),
            )
        })?;
        let tls = tls_files(
            ("remote", "remote agents", "tls_client_ca"),
            [&self.tls_certificate, &self.tls_key, &self.tls_client_ca],
            self.allow_plaintext,
        )?;
        let mut config = match tls {
            Some(files) => ListenerConfig::tls(addr, files),
            None => ListenerConfig::plaintext(addr),
        };
        if let Some(n) = self.connections_max {
            if n == 0 {
                return Err(("remote.connections_max".into(), "at least 1".into()));
            }
            config.connections_max = n;
        }
        if let Some(ms) = self.handshake_timeout_ms {
            if ms == 0 {
                return Err(("remote.handshake_timeout_ms".into(), "at least 1".into()));
            }
            config.handshake_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.idle_timeout_ms {
            if ms == 0 {
                return Err(("remote.idle_timeout_ms".into(), "at least 1".into()));
            }
            config.idle_timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = self.frame_bytes_max {
            let min = agentwire_shm::wire::HEADER_BYTES;
            if !(min..=agentwire_shm::wire::FRAME_BYTES_MAX).contains(&bytes) {
                return Err((
                    "remote.frame_bytes_max".into(),
                    format!(
                        "{bytes} is not in {min}..={}",
                        agentwire_shm::wire::FRAME_BYTES_MAX
                    ),
                ));
            }
            config.frame_bytes_max = bytes;
        }
        if let Some(bytes) = self.ring_capacity_bytes {
            if bytes != 0 && !bytes.is_power_of_two() {
                return Err((
                    "remote.ring_capacity_bytes".into(),
                    format!("{bytes} is not a power of two (or 0)"),
                ));
            }
            config.ring_capacity_bytes = bytes;
        }
        config.cpu = self.cpu;
        let mut rules = Vec::with_capacity(self.identity.len());
        for (i, section) in self.identity.iter().enumerate() {
            let key = |k: &str| format!("remote.identity[{i}].{k}");
            if section.identities.is_empty() {
                return Err((
                    key("identities"),
                    "empty: the rule would match nobody".into(),
                ));
            }
            rules.push(IdentityRule {
                identities: patterns(&key("identities"), &section.identities)?,
                allow: Rule {
                    names: patterns(&key("names"), &section.names)?,
                    capabilities: patterns(&key("capabilities"), &section.capabilities)?,
                    subscribe: patterns(&key("subscribe"), &section.subscribe)?,
                    publish: patterns(&key("publish"), &section.publish)?,
                    send: patterns(&key("send"), &section.send)?,
                    ..Rule::default()
                },
            });
        }
        config.identities = IdentityRules::new(rules);
        Ok(Some(config))
    }
}

impl RemoteSection {
    /// The UDP telemetry receiver's configuration, or `None` without `udp_listen`; an error
    /// names the key (`remote.udp_topic`) and what is wrong.
    ///
    /// ```
    /// use agentwire_runtime::remote::RemoteSection;
    /// let s = RemoteSection { udp_listen: Some("127.0.0.1:7451".into()), ..Default::default() };
    /// assert_eq!(s.udp_config().unwrap().unwrap().topic, "telemetry");
    /// let bad = RemoteSection { udp_topic: Some("".into()), ..s };
    /// assert_eq!(bad.udp_config().unwrap_err().0, "remote.udp_topic");
    /// ```
    pub fn udp_config(&self) -> Result<Option<UdpTelemetryConfig>, (String, String)> {
        let Some(listen) = &self.udp_listen else {
            return Ok(None);
        };
        let addr: SocketAddr = listen.parse().map_err(|e| {
            (
                "remote.udp_listen".to_string(),
                format!("{listen:?} is not an address:port ({e})"),
            )
        })?;
        let mut config = UdpTelemetryConfig::new(addr);
        if let Some(topic) = &self.udp_topic {
            if topic.is_empty() || topic.len() > agentwire_shm::control::AGENT_NAME_BYTES_MAX {
                return Err((
                    "remote.udp_topic".into(),
                    format!(
                        "{topic:?}: 1 to {} bytes",
                        agentwire_shm::control::AGENT_NAME_BYTES_MAX
                    ),
                ));
            }
            config.topic = topic.clone();
        }
        if let Some(n) = self.udp_sources_max {
            if !(1..=1 << 20).contains(&n) {
                return Err((
                    "remote.udp_sources_max".into(),
                    format!("{n} is not in 1..=1048576"),
                ));
            }
            config.sources_max = n;
        }
        if let Some(bytes) = self.udp_recv_buffer_bytes {
            if !(4096..=1 << 30).contains(&bytes) {
                return Err((
                    "remote.udp_recv_buffer_bytes".into(),
                    format!("{bytes} is not in 4096..=1073741824"),
                ));
            }
            config.recv_buffer_bytes = bytes;
        }
        config.cpu = self.cpu;
        Ok(Some(config))
    }
}

/// The UDP telemetry receiver's counters as `remote.udp_*` status counters.
///
/// ```
/// let c = agentwire_runtime::remote::udp_counters(&Default::default());
/// assert!(c.iter().any(|(k, _)| k == "remote.udp_datagrams_lost"));
/// ```
pub fn udp_counters(s: &UdpStatsSnapshot) -> Vec<(String, u64)> {
    [
        ("remote.udp_datagrams_received", s.datagrams_received),
        ("remote.udp_datagrams_malformed", s.datagrams_malformed),
        ("remote.udp_datagrams_lost", s.datagrams_lost),
        ("remote.udp_datagrams_reordered", s.datagrams_reordered),
        ("remote.udp_datagrams_duplicate", s.datagrams_duplicate),
        ("remote.udp_datagrams_late", s.datagrams_late),
        ("remote.udp_sources_active", s.sources_active),
        ("remote.udp_sources_evicted", s.sources_evicted),
        ("remote.udp_frames_forwarded", s.frames_forwarded),
        ("remote.udp_frames_refused", s.frames_refused),
        ("remote.udp_frames_dropped_full", s.frames_dropped_full),
        ("remote.udp_frames_nacked", s.frames_nacked),
        ("remote.udp_bytes_received", s.bytes_received),
        ("remote.udp_receive_errors", s.receive_errors),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A listener's counters as `remote.*` status counters.
///
/// ```
/// let c = agentwire_runtime::remote::counters(&Default::default());
/// assert!(c.iter().any(|(k, _)| k == "remote.connections_active"));
/// ```
pub fn counters(s: &StatsSnapshot) -> Vec<(String, u64)> {
    [
        ("remote.connections_accepted", s.connections_accepted),
        ("remote.connections_active", s.connections_active),
        ("remote.connections_over_limit", s.connections_over_limit),
        ("remote.tls_handshakes_failed", s.tls_handshakes_failed),
        ("remote.plaintext_refused", s.plaintext_refused),
        ("remote.handshakes_refused", s.handshakes_refused),
        ("remote.handshake_timeouts", s.handshake_timeouts),
        ("remote.idle_closed", s.idle_closed),
        ("remote.agents_registered", s.agents_registered),
        ("remote.frames_in", s.frames_in),
        ("remote.bytes_in", s.bytes_in),
        ("remote.frames_out", s.frames_out),
        ("remote.bytes_out", s.bytes_out),
        ("remote.socket_writes", s.socket_writes),
        ("remote.malformed_closed", s.malformed_closed),
        (
            "remote.frames_too_large_for_ring",
            s.frames_too_large_for_ring,
        ),
        ("remote.control_requests", s.control_requests),
        ("remote.control_refused", s.control_refused),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
