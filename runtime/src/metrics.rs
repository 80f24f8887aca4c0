//! The Prometheus endpoint: `GET /metrics` on 127.0.0.1 (text exposition format, encoded by
//! `prometheus-client`), served by one thread (`aw-metrics`) that reads the routing core's
//! per-core counters on each scrape. Nothing on the routing path knows it exists: the
//! counters are plain single-writer words the core keeps anyway.
//!
//! Series (one per router shard, labelled `core="<its cpu>"`): `agentwire_<counter>_total` for every counter
//! in [`agentwire_router::RouterStats`], `agentwire_router_batches_total{frames="1"|"2-3"|...|"32+"}` for
//! the batch-size histogram buckets, gauges `agentwire_deferred_frames`,
//! `agentwire_agents_stale`, `agentwire_handshakes_pending`, and router-wide `agentwire_agents`, and per agent `agentwire_agent_{tx,rx}_occupied_bytes{agent=...}`;
//! from the stats segment's agent slots ([`MetricsServer::serve_agent_mirror`]), per agent
//! `agentwire_agent_{frames,bytes}_{in,out}_total`, `agentwire_agent_frames_deferred_total`
//! and `agentwire_agent_nacks_total{reason=...}`;
//! with `[streaming] enabled`, the engine's `agentwire_stream_<counter>_total` (events
//! accepted and malformed, alerts, results, acks, checkpoints, events replayed, ...) and the
//! gauges `agentwire_stream_running`, `agentwire_stream_checkpoint_bytes`,
//! `agentwire_stream_restored_epoch` and `agentwire_stream_shards`.
//!
//! ```no_run
//! # use agentwire_router::{RouterConfig, RouterControl};
//! let (control, _core) = RouterControl::start(RouterConfig::new("/tmp/aw-m.sock".into())).unwrap();
//! let server = agentwire_runtime::metrics::MetricsServer::start(0, control.observer(), vec![1]).unwrap();
//! println!("scrape http://{}/metrics", server.local_addr());
//! ```

use agentwire_router::{RouterObserver, BATCH_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the serving thread checks for shutdown while idle.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint on 127.0.0.1:{port}: {detail} (set metrics_port, or run `agentwire serve --no-metrics`)")]
pub struct MetricsError {
    /// The port asked for.
    pub port: u16,
    /// What failed.
    pub detail: String,
}

/// A running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    addr: SocketAddr,
    /// The stats segment the per-agent counters are read from, once it is given.
    agent_mirror: AgentMirror,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsServer {
    /// Binds 127.0.0.1:`port` (0: any free port) and serves `observer`'s counters, labelled
    /// per shard with `core` = that shard's CPU from `shard_cpus`.
    ///
    /// ```no_run
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let (control, _core) = RouterControl::start(RouterConfig::new("/tmp/aw-m2.sock".into())).unwrap();
    /// let server = agentwire_runtime::metrics::MetricsServer::start(9464, control.observer(), vec![1])?;
    /// # Ok::<(), agentwire_runtime::metrics::MetricsError>(())
    /// ```
    pub fn start(
        port: u16,
        observer: RouterObserver,
        shard_cpus: Vec<usize>,
    ) -> Result<Self, MetricsError> {
        let err = |detail: String| MetricsError { port, detail };
        let server = tiny_http::Server::http(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .map_err(|e| err(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| err("not an IP listener".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut registry = Registry::default();
        let agent_mirror = AgentMirror::default();
        registry.register_collector(Box::new(RouterCollector {
            observer,
            cores: shard_cpus.iter().map(usize::to_string).collect(),
            agent_mirror: agent_mirror.clone(),
        }));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("aw-metrics".into())
                .spawn(move || serve(server, registry, stop))
                .map_err(|e| err(e.to_string()))?
        };
        Ok(Self {
            addr,
            agent_mirror,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    ///
    /// ```no_run
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let (control, _core) = RouterControl::start(RouterConfig::new("/tmp/aw-m3.sock".into())).unwrap();
    /// # let server = agentwire_runtime::metrics::MetricsServer::start(0, control.observer(), vec![1]).unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the per-agent counters of the stats segment at `stats` (labelled by `names`)
    /// from now on: `agentwire_agent_<counter>_total{agent,name}` and
    /// `agentwire_agent_nacks_total{agent,name,reason}` for every agent with a mirror slot
    /// (docs/twin.md "The live mirror"), each scrape reading the segment, never the router.
    ///
    /// ```no_run
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let (control, _core) = RouterControl::start(RouterConfig::new("/tmp/aw-m4.sock".into())).unwrap();
    /// # let server = agentwire_runtime::metrics::MetricsServer::start(0, control.observer(), vec![1]).unwrap();
    /// server.serve_agent_mirror("/tmp/aw-m4.sock.stats".as_ref(), "/tmp/aw-m4.sock.stats.names".as_ref())?;
    /// # Ok::<(), agentwire_twin::mirror::MirrorError>(())
    /// ```
    pub fn serve_agent_mirror(
        &self,
        stats: &std::path::Path,
        names: &std::path::Path,
    ) -> Result<(), agentwire_twin::mirror::MirrorError> {
        let mirror = agentwire_twin::mirror::Mirror::open(stats, names)?;
        *self
            .agent_mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(mirror);
        Ok(())
    }
}

/// The stats segment's reader, shared by the server (which is given it once the daemon made
/// the segment, after the endpoint started) and the collector.
type AgentMirror = Arc<Mutex<Option<agentwire_twin::mirror::Mirror>>>;

/// Per-agent counters served from the mirror: (slot word, metric name, help).
const AGENT_COUNTERS: [(&str, &str, &str); 5] = [
    (
        "frames_in",
        "agentwire_agent_frames_in",
        "Frames the router took from the agent's tx rings",
    ),
    (
        "bytes_in",
        "agentwire_agent_bytes_in",
        "Bytes the router took from the agent's tx rings",
    ),
    (
        "frames_out",
        "agentwire_agent_frames_out",
        "Frames the router wrote into the agent's rx ring (deliveries, acks, nacks)",
    ),
    (
        "bytes_out",
        "agentwire_agent_bytes_out",
        "Bytes the router wrote into the agent's rx ring",
    ),
    (
        "frames_deferred",
        "agentwire_agent_frames_deferred",
        "Frames that waited in the agent's deferral because its rx ring was full",
    ),
];

/// Encodes the per-agent series from one read of the mirror (nothing if there is none yet,
/// or the read failed: a scrape never waits for a writer).
fn encode_agent_mirror(
    mirror: &AgentMirror,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let agents = {
        let mut guard = mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_mut().map(agentwire_twin::mirror::Mirror::read) {
            Some(Ok(state)) => state.agents(),
            _ => return Ok(()),
        }
    };
    let ids: Vec<String> = agents.iter().map(|a| a.agent_id.to_string()).collect();
    let counter = prometheus_client::metrics::MetricType::Counter;
    for (word, metric, help) in AGENT_COUNTERS {
        let mut m = encoder.encode_descriptor(metric, help, None, counter)?;
        for (agent, id) in agents.iter().zip(&ids) {
            let labels = [("agent", id.as_str()), ("name", agent.name.as_str())];
            let value = agent.get(word).unwrap_or(0);
            ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "agentwire_agent_nacks",
        "Nacks the router sent the agent, by reason",
        None,
        counter,
    )?;
    for (agent, id) in agents.iter().zip(&ids) {
        for (word, value) in &agent.counters {
            if let Some(reason) = word.strip_prefix("nacks_") {
                let labels = [
                    ("agent", id.as_str()),
                    ("name", agent.name.as_str()),
                    ("reason", reason),
                ];
                ConstCounter::new(*value).encode(m.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: tiny_http::Server, registry: Registry, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let request = match server.recv_timeout(POLL_INTERVAL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("metrics endpoint: {e}");
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or("");
        let response = match (request.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => tiny_http::Response::from_string(body).with_header(
                        "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                            .parse::<tiny_http::Header>()
                            .expect("static header"),
                    ),
                    Err(e) => tiny_http::Response::from_string(format!("encoding failed: {e}\n"))
                        .with_status_code(500),
                }
            }
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("agentwire: metrics are at /metrics\n")
                    .with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
        };
        let _ = request.respond(response);
    }
}

/// Encodes the router's counters on each scrape.
#[derive(Debug)]
struct RouterCollector {
    observer: RouterObserver,
    /// Each shard's CPU, as the `core` label.
    cores: Vec<String>,
    /// The per-agent counters' source.
    agent_mirror: AgentMirror,
}

/// Counters that are gauges (they go down): (counter, metric name, help).
const GAUGES: [(&str, &str, &str); 3] = [
    (
        "deferred_now",
        "agentwire_deferred_frames",
        "Frames waiting in per-destination deferrals",
    ),
    (
        "agents_stale",
        "agentwire_agents_stale",
        "Agents whose heartbeat and rings stood still past the liveness timeout",
    ),
    (
        "handshakes_pending",
        "agentwire_handshakes_pending",
        "Control connections in their handshake now",
    ),
];

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = self.observer.status();
        let core_of = |shard: usize| {
            self.cores
                .get(shard)
                .cloned()
                .unwrap_or_else(|| format!("shard{shard}"))
        };
        let names: Vec<&String> = status
            .shards
            .first()
            .map(|s| s.counters.iter().map(|(n, _)| n).collect())
            .unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            if name.starts_with("batch_frames_le_") {
                continue;
            }
            let gauge = GAUGES.iter().find(|(n, _, _)| n == name);
            let (metric_name, metric_help, metric_type) = match gauge {
                Some((_, m, h)) => (
                    m.to_string(),
                    h.to_string(),
                    ConstGauge::new(0i64).metric_type(),
                ),
                None => (
                    format!("agentwire_{name}"),
                    help(name),
                    ConstCounter::new(0u64).metric_type(),
                ),
            };
            let mut m = encoder.encode_descriptor(&metric_name, &metric_help, None, metric_type)?;
            for shard in &status.shards {
                let core = core_of(shard.shard as usize);
                let labels = [("core", core.as_str())];
                let value = shard.counters.get(i).map_or(0, |(_, v)| *v);
                if gauge.is_some() {
                    ConstGauge::new(value as i64).encode(m.encode_family(&labels)?)?;
                } else {
                    ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "agentwire_router_batches",
            "Non-empty reads of a tx ring, by how many frames one read took",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for shard in &status.shards {
            let core = core_of(shard.shard as usize);
            let buckets = shard
                .counters
                .iter()
                .filter(|(n, _)| n.starts_with("batch_frames_le_"))
                .map(|(_, v)| *v);
            let mut low = 1;
            for (&high, value) in BATCH_BUCKETS.iter().zip(buckets) {
                let range = match high {
                    usize::MAX => format!("{low}+"),
                    h if h == low => low.to_string(),
                    h => format!("{low}-{h}"),
                };
                low = high.saturating_add(1);
                let labels = [("core", core.as_str()), ("frames", range.as_str())];
                ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
            }
        }
        // The streaming engine's counters (`[streaming]`) and the remote agents listener's
        // (`[remote]`), added to the status report by the daemon's status hook:
        // `agentwire_stream_<counter>_total`, `agentwire_remote_<counter>_total`. Values that
        // go down are gauges (running: 1, then 0 once the engine stopped; udp_datagrams_lost
        // falls when a datagram counted lost arrives late).
        let stream_gauges = ["running", "checkpoint_bytes", "restored_epoch", "shards"];
        encode_section(
            &mut encoder,
            &status,
            "stream",
            "Streaming engine",
            &stream_gauges,
            &["agent_id"],
        )?;
        let remote_gauges = [
            "connections_active",
            "udp_sources_active",
            "udp_datagrams_lost",
        ];
        encode_section(
            &mut encoder,
            &status,
            "remote",
            "Remote agents listener",
            &remote_gauges,
            &[],
        )?;
        // The NATS bridge's (`[node] nats_url`): `agentwire_nats_<counter>_total`, and the
        // gauges `agentwire_nats_connected` and `agentwire_nats_nodes`.
        encode_section(
            &mut encoder,
            &status,
            "nats",
            "NATS cluster bridge",
            &["connected", "nodes"],
            &[],
        )?;
        // The node links' counters (`[node]`): `agentwire_links_<counter>_total`, and
        // `agentwire_links_links_up` (a gauge).
        encode_section(
            &mut encoder,
            &status,
            "links",
            "Node links",
            &["links_up"],
            &[],
        )?;
        let core0 = core_of(0);
        let core = [("core", core0.as_str())];
        let agents = ConstGauge::new(status.agents.len() as i64);
        let mut m = encoder.encode_descriptor(
            "agentwire_agents",
            "Live agents",
            None,
            agents.metric_type(),
        )?;
        agents.encode(m.encode_family(&core)?)?;
        let mut m = encoder.encode_descriptor(
            "agentwire_partition_busy_ratio",
            "Share of the last sample a partition's active executors spent running jobs (router: non-idle duty cycles since start)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for p in &status.partitions {
            let labels = [("partition", p.name.as_str())];
            ConstGauge::new(f64::from(p.busy_permille) / 1000.0)
                .encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "agentwire_partition_cpus",
            "CPUs a partition runs on now (its planned ones not lent, and borrowed ones)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for p in &status.partitions {
            let labels = [("partition", p.name.as_str())];
            ConstGauge::new(p.cpus.len() as i64).encode(m.encode_family(&labels)?)?;
        }
        for (direction, pick) in [
            (
                "tx",
                (|a| a.tx_occupied_bytes) as fn(&agentwire_shm::control::AgentStatus) -> u64,
            ),
            ("rx", |a| a.rx_occupied_bytes),
        ] {
            let metric_name = format!("agentwire_agent_{direction}_occupied_bytes");
            let metric_help = format!("Bytes waiting in each agent's {direction} ring");
            let mut m = encoder.encode_descriptor(
                &metric_name,
                &metric_help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for agent in &status.agents {
                let id = agent.agent_id.to_string();
                let labels = [("agent", id.as_str()), ("name", agent.name.as_str())];
                ConstGauge::new(pick(agent) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        encode_agent_mirror(&self.agent_mirror, &mut encoder)
    }
}

fn help(counter: &str) -> String {
    match counter {
        "duty_cycles_idle" => {
            "Router duty cycles that found no work (idle ratio: divide by duty_cycles)".into()
        }
        "busy_ns_sampled" => {
            "Wall-clock ns of the router's timed busy duty cycles (one pass in 61 is timed; divide by busy_frames_sampled for ns a frame)".into()
        }
        "busy_passes_sampled" => "Router duty cycles timed that found work".into(),
        "busy_frames_sampled" => "Frames handled by the router's timed busy duty cycles".into(),
        other => format!("Router counter {}", other.replace('_', " ")),
    }
}

/// Encodes the status counters named `SECTION.counter` as `agentwire_SECTION_counter`:
/// gauges for those in `gauges`, counters for the rest, none for those in `skipped`.
fn encode_section(
    encoder: &mut DescriptorEncoder<'_>,
    status: &agentwire_shm::control::StatusReport,
    section: &str,
    help_prefix: &str,
    gauges: &[&str],
    skipped: &[&str],
) -> std::fmt::Result {
    for (name, value) in &status.counters {
        let Some(counter_name) = name
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            continue;
        };
        if skipped.contains(&counter_name) {
            continue;
        }
        let metric = format!("agentwire_{section}_{counter_name}");
        let help = format!("{help_prefix}: {}", counter_name.replace('_', " "));
        if gauges.contains(&counter_name) {
            let gauge = ConstGauge::new(*value as i64);
            let m = encoder.encode_descriptor(&metric, &help, None, gauge.metric_type())?;
            gauge.encode(m)?;
        } else {
            let counter = ConstCounter::new(*value);
            let m = encoder.encode_descriptor(&metric, &help, None, counter.metric_type())?;
            counter.encode(m)?;
        }
    }
    Ok(())
}
