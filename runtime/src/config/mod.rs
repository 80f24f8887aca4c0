//! The daemon's configuration: TOML, every key optional. Every problem of a file is reported
//! at once, each naming the file, the line and the key: TOML syntax errors (all of them, and
//! then nothing else), unknown keys and values of the wrong type (inside sections too),
//! values out of range, and (when the daemon starts, [`Config::check_cpus`]) CPUs this
//! process may not run on. The embedded default (`runtime/default.toml`) documents each key
//! with its unit; `docs/config.md` lists every key ([`known_keys`]) with its default and
//! whether a SIGHUP reload applies it ([`applies_on_reload`]), held to the parser by a test.
//!
//! ```
//! let config = agentwire_runtime::config::Config::parse("idle = \"spin\"", "inline").unwrap();
//! assert_eq!(config.idle, agentwire_shm::idle::IdleStrategy::Spin);
//! let err = agentwire_runtime::config::Config::parse("idel = 1\nagents_max = 0", "a.toml").unwrap_err();
//! assert!(err.to_string().contains("a.toml:1: idel: unknown key"), "{err}");
//! assert!(err.to_string().contains("a.toml:2: agents_max = 0"), "{err}");
//! ```

mod authorize;
mod document;
mod keys;
mod sections;

pub use keys::{applies_on_reload, known_keys, ReloadChanges, PARTITION_NAME};

use agentwire_router::server::AllowList;
use agentwire_scheduler::plan::{PartitionSpec, PlanConfig, PlanOptions};
use agentwire_scheduler::rebalance::RebalanceConfig;
use agentwire_shm::idle::IdleStrategy;
use document::Document;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The embedded default configuration, documented key by key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../default.toml");

/// The Prometheus endpoint's default port (127.0.0.1 only).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// The top-level keys a file may set (tables included).
const KEYS: &[&str] = &[
    "socket",
    "router_cpu",
    "router_cpus",
    "ring_capacity_bytes",
    "idle",
    "router_batch_frames",
    "allow_uids",
    "allow_gids",
    "authorize",
    "io_memory_bytes",
    "agents_max",
    "handshakes_per_uid_max",
    "agents_per_uid_max",
    "defer_capacity_bytes",
    "defer_deadline_ms",
    "slow_subscriber",
    "slow_subscriber_evict_copies",
    "liveness_timeout_ms",
    "dlq_path",
    "dlq_records_max",
    "dlq_bytes_max",
    "dlq_records_per_sender_max",
    "dlq_bytes_per_sender_max",
    "dlq_records_per_uid_max",
    "dlq_bytes_per_uid_max",
    "metrics",
    "metrics_port",
    "plan",
    "partitions",
    "rebalance",
    "streaming",
    "twin",
    "remote",
    "node",
];

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Control socket (`None`: the default for this user).
    pub socket: Option<PathBuf>,
    /// Router CPU (`None`: the last CPU this process may run on).
    pub router_cpu: Option<usize>,
    /// Router shards' CPUs, one shard per entry (empty: one shard on `router_cpu`).
    pub router_cpus: Vec<usize>,
    /// Ring capacity per agent and direction, bytes.
    pub ring_capacity_bytes: usize,
    /// Router idle strategy.
    pub idle: IdleStrategy,
    /// Frames the router drains from one lane per read (`router_batch_frames`, default 32).
    pub router_batch_frames: usize,
    /// Who may connect.
    pub allow: AllowList,
    /// What each peer identity may register, subscribe to and publish to (`[[authorize]]`
    /// tables, first match wins; none: everything allowed).
    pub policy: agentwire_router::policy::Policy,
    /// io_uring memory of the router executor, bytes.
    pub io_memory_bytes: usize,
    /// Most agents at once.
    pub agents_max: usize,
    /// Most connections one uid may have in their handshake at once
    /// (`handshakes_per_uid_max`, default 64).
    pub handshakes_per_uid_max: usize,
    /// Most agents one uid may have registered at once (`agents_per_uid_max`; 0 in the
    /// file, `None` here: only `agents_max` bounds them).
    pub agents_per_uid_max: Option<usize>,
    /// Per-destination deferral, bytes (0: off).
    pub defer_capacity_bytes: usize,
    /// How long a deferred frame waits before it is dead-lettered (`None`: forever).
    pub defer_deadline: Option<std::time::Duration>,
    /// What a publish does for a subscriber that cannot take its copy (`slow_subscriber`:
    /// `drop`, the default, or `backpressure`).
    pub slow_subscriber: agentwire_router::config::SlowSubscriber,
    /// Copies missed in a row that remove a subscriber (`slow_subscriber_evict_copies`; 0:
    /// never).
    pub slow_subscriber_evict_copies: u64,
    /// How long an agent may show no progress before anycast, feature routes and discovery
    /// skip it (`None`: never).
    pub liveness_timeout: Option<std::time::Duration>,
    /// The dead-letter queue's file and bounds.
    pub dlq: crate::dlq::DlqConfig,
    /// Whether the file named `dlq_path`; otherwise `dlq.path` is [`crate::dlq::default_path`],
    /// which `agentwire serve` replaces with the runtime directory when it cannot be used
    /// ([`crate::dlq_path::resolve_default`]).
    pub dlq_path_given: bool,
    /// Serve Prometheus metrics on 127.0.0.1.
    pub metrics: bool,
    /// Metrics port (0: any free port, shown by `agentwire status`).
    pub metrics_port: u16,
    /// The partitions to plan (`[plan]`, `[partitions.*]`; the embedded default's five
    /// one-core partitions when none are configured). [`Config::plan_config`] applies
    /// `router_cpu(s)` to it.
    pub plan: PlanConfig,
    /// Whether the file configured partitions itself.
    pub partitions_configured: bool,
    /// Rebalancing between engine partitions (`[rebalance]`).
    pub rebalance: RebalanceConfig,
    /// The streaming engine (`[streaming]`; `None` or `enabled = false`: not run). Checked
    /// at load ([`StreamingSection::engine_config`](crate::stream_engine::StreamingSection::engine_config)).
    pub streaming: Option<crate::stream_engine::StreamingSection>,
    /// The digital twin (`[twin]`; `None` or `enabled = false`: not run). Checked at load
    /// ([`TwinSection::checked`](crate::twin_engine::TwinSection::checked)).
    pub twin: Option<crate::twin_engine::TwinSection>,
    /// Remote agents over the network (`[remote]`; no `listen`: no listener). Checked at
    /// load ([`RemoteSection::listener_config`](crate::remote::RemoteSection::listener_config)).
    pub remote: Option<crate::remote::RemoteSection>,
    /// Links to other nodes (`[node]`; no `name`: none). Checked at load
    /// ([`NodeSection::links_config`](crate::node_links::NodeSection::links_config)).
    pub node: Option<crate::node_links::NodeSection>,
    /// The file and the line of each key it set, for errors found after parsing.
    pub source: ConfigSource,
}

/// Where a configuration came from: the file (or "embedded default") and the line of every
/// key it set, so that a problem found later (a CPU the machine lacks) names file, line and
/// key too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigSource {
    /// File name, or "embedded default".
    pub origin: String,
    /// Line (from 1) of each key the file set, by dotted path: `router_cpus`,
    /// `partitions.nas.cpus`, `rebalance.sample_ms`.
    pub lines: BTreeMap<String, usize>,
}

/// One problem in a configuration: file, line, key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// File name, or "embedded default".
    pub origin: String,
    /// Line of the key, from 1 (`None`: the key is not in the file).
    pub line: Option<usize>,
    /// The key, dotted when nested (`partitions.nas.cpus`); empty for a syntax error on a
    /// line that names none.
    pub key: String,
    /// The rest: ` = VALUE: what is allowed`, or `: what is wrong`.
    pub detail: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.origin)?,
            None => write!(f, "{}: ", self.origin)?,
        }
        // A syntax error on a line with no key has no key to name.
        let detail = match self.key.as_str() {
            "" => self.detail.trim_start_matches(": "),
            key => {
                f.write_str(key)?;
                &self.detail
            }
        };
        f.write_str(detail)
    }
}

/// One line per problem; a count first when there are several.
fn list_problems(origin: &str, problems: &[ConfigProblem]) -> String {
    match problems {
        [one] => format!("config {one}"),
        _ => {
            let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            format!(
                "config {origin}: {} problems:\n{}",
                problems.len(),
                lines.join("\n")
            )
        }
    }
}

/// A configuration that could not be read or is invalid; names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Every problem of a file: TOML syntax errors (then nothing else is checked), or
    /// unknown keys, wrong types, values out of range, CPUs this process may not use; each
    /// with its line and key.
    #[error("{}", list_problems(origin, problems))]
    Invalid {
        /// File name.
        origin: String,
        /// What is wrong, in file order of discovery.
        problems: Vec<ConfigProblem>,
    },
}

impl Config {
    /// The plan request the daemon uses: [`Config::plan`] with `router_cpus` (or
    /// `router_cpu`) as the router partition's named CPUs, and a one-core router partition
    /// when the configured partitions have none.
    ///
    /// ```
    /// let c = agentwire_runtime::config::Config::parse("router_cpus = [0, 1]", "inline").unwrap();
    /// assert_eq!(c.plan_config().partitions["router"].cpus, vec![0, 1]);
    /// ```
    pub fn plan_config(&self) -> PlanConfig {
        let mut plan = self.plan.clone();
        let named: Vec<usize> = if self.router_cpus.is_empty() {
            self.router_cpu.into_iter().collect()
        } else {
            self.router_cpus.clone()
        };
        let router = if named.is_empty() {
            match plan.partitions.get("router") {
                Some(_) => return plan,
                // Every daemon routes: a configured plan without a router gets one core.
                None => PartitionSpec {
                    any: 1,
                    ..Default::default()
                },
            }
        } else {
            PartitionSpec {
                cpus: named,
                ..Default::default()
            }
        };
        plan.partitions.insert(
            "router".into(),
            PartitionSpec {
                priority: Some(0),
                ..router
            },
        );
        plan
    }

    /// The embedded default.
    ///
    /// ```
    /// let c = agentwire_runtime::config::Config::embedded_default();
    /// assert_eq!(c.ring_capacity_bytes, 1 << 20);
    /// ```
    pub fn embedded_default() -> Self {
        Self::parse(DEFAULT_CONFIG_TOML, "embedded default").expect("the embedded default is valid")
    }

    /// Reads and validates a file.
    ///
    /// ```no_run
    /// let c = agentwire_runtime::config::Config::load("/etc/agentwire/agentwire.toml".as_ref())?;
    /// # Ok::<(), agentwire_runtime::config::ConfigError>(())
    /// ```
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; keys not given take the embedded default's values.
    ///
    /// ```
    /// let c = agentwire_runtime::config::Config::parse("agents_max = 10", "inline").unwrap();
    /// assert_eq!(c.agents_max, 10);
    /// ```
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut doc = Document::parse(text, origin)?;
        doc.refuse_unknown_keys(KEYS);
        // A key with a problem takes its default, so the checks after it still run and
        // report their own problems rather than one caused by the first.
        let ring_capacity_bytes = doc.take("ring_capacity_bytes").unwrap_or(1 << 20);
        if agentwire_shm::ring::check_capacity(ring_capacity_bytes).is_err() {
            doc.invalid(
                "ring_capacity_bytes",
                ring_capacity_bytes,
                "a power of two from 1024 to 1073741824",
            );
        }
        let idle = match doc.take::<String>("idle") {
            None => IdleStrategy::default(),
            Some(text) => text.parse::<IdleStrategy>().unwrap_or_else(|e| {
                doc.invalid("idle", format!("{text:?}"), &e);
                IdleStrategy::default()
            }),
        };
        let router_batch_frames = doc
            .take("router_batch_frames")
            .unwrap_or(agentwire_router::ROUTER_BATCH_FRAMES_DEFAULT);
        if !(1..=agentwire_router::ROUTER_BATCH_FRAMES_LIMIT).contains(&router_batch_frames) {
            doc.invalid(
                "router_batch_frames",
                router_batch_frames,
                &format!("1 to {}", agentwire_router::ROUTER_BATCH_FRAMES_LIMIT),
            );
        }
        let agents_max = doc
            .take("agents_max")
            .unwrap_or(agentwire_router::AGENTS_MAX_DEFAULT);
        if agents_max == 0 || agents_max > agentwire_router::AGENTS_MAX_LIMIT {
            doc.invalid(
                "agents_max",
                agents_max,
                &format!("1 to {}", agentwire_router::AGENTS_MAX_LIMIT),
            );
        }
        let handshakes_per_uid_max = doc
            .take("handshakes_per_uid_max")
            .unwrap_or(agentwire_router::HANDSHAKES_PER_UID_MAX_DEFAULT);
        if !(1..=agentwire_router::HANDSHAKES_PENDING_MAX).contains(&handshakes_per_uid_max) {
            doc.invalid(
                "handshakes_per_uid_max",
                handshakes_per_uid_max,
                &format!(
                    "1 to {} (the connections the router holds in their handshake at once)",
                    agentwire_router::HANDSHAKES_PENDING_MAX
                ),
            );
        }
        let agents_per_uid_max = match doc.take::<usize>("agents_per_uid_max").unwrap_or(0) {
            0 => None,
            n if n > agentwire_router::AGENTS_MAX_LIMIT => {
                doc.invalid(
                    "agents_per_uid_max",
                    n,
                    &format!(
                        "0 (no limit per uid) or 1 to {}",
                        agentwire_router::AGENTS_MAX_LIMIT
                    ),
                );
                None
            }
            n => Some(n),
        };
        let io_memory_bytes = doc.take("io_memory_bytes").unwrap_or(128 * 1024);
        if io_memory_bytes < 64 * 1024 {
            doc.invalid(
                "io_memory_bytes",
                io_memory_bytes,
                "at least 65536 (glommio's minimum)",
            );
        }
        let uids: Vec<u32> = doc.take("allow_uids").unwrap_or_default();
        let gids: Vec<u32> = doc.take("allow_gids").unwrap_or_default();
        let allow = if uids.is_empty() && gids.is_empty() {
            AllowList::current_user()
        } else {
            AllowList { uids, gids }
        };
        let policy = authorize::take_policy(&mut doc);
        let defer_capacity_bytes = doc.take("defer_capacity_bytes").unwrap_or(256 * 1024);
        if defer_capacity_bytes != 0
            && agentwire_shm::ring::check_capacity(defer_capacity_bytes).is_err()
        {
            doc.invalid(
                "defer_capacity_bytes",
                defer_capacity_bytes,
                "0 (off) or a power of two from 1024 to 1073741824",
            );
        }
        let defer_deadline = match doc.take("defer_deadline_ms").unwrap_or(1000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        };
        let slow_subscriber = match doc.take::<String>("slow_subscriber") {
            None => agentwire_router::config::SlowSubscriber::Drop,
            Some(text) => text.parse().unwrap_or_else(|e: String| {
                doc.invalid("slow_subscriber", format!("{text:?}"), &e);
                agentwire_router::config::SlowSubscriber::Drop
            }),
        };
        let slow_subscriber_evict_copies = doc.take("slow_subscriber_evict_copies").unwrap_or(0);
        let router_cpu: Option<usize> = doc.take("router_cpu");
        let router_cpus: Vec<usize> = doc.take("router_cpus").unwrap_or_default();
        let mut distinct = router_cpus.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != router_cpus.len()
            || router_cpus.len() > agentwire_router::ROUTER_SHARDS_MAX
        {
            doc.invalid(
                "router_cpus",
                format!("{router_cpus:?}"),
                &format!(
                    "distinct CPUs, at most {}",
                    agentwire_router::ROUTER_SHARDS_MAX
                ),
            );
        }
        let liveness_timeout = match doc.take("liveness_timeout_ms").unwrap_or(5000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        };
        let dlq_path: Option<PathBuf> = doc.take("dlq_path");
        let dlq_path_given = dlq_path.is_some();
        let mut dlq = crate::dlq::DlqConfig::new(dlq_path.unwrap_or_else(crate::dlq::default_path));
        // Records at least 1, bytes at least 4096, everywhere.
        let (records_min, bytes_min) = (1, 4096);
        if let Some(records_max) = doc.take_at_least("dlq_records_max", records_min) {
            dlq.records_max = records_max;
        }
        if let Some(bytes_max) = doc.take_at_least("dlq_bytes_max", bytes_min) {
            dlq.bytes_max = bytes_max;
        }
        // Per sender: a tenth of the queue unless set, so no one agent fills it.
        dlq.records_per_sender_max = doc
            .take_at_least("dlq_records_per_sender_max", records_min)
            .unwrap_or((dlq.records_max / 10).max(records_min));
        dlq.bytes_per_sender_max = doc
            .take_at_least("dlq_bytes_per_sender_max", bytes_min)
            .unwrap_or((dlq.bytes_max / 10).max(bytes_min));
        // Per uid (all of one user's agents, however often they connect again): the whole
        // queue unless set; a machine shared by several users sets it.
        dlq.records_per_uid_max = doc
            .take_at_least("dlq_records_per_uid_max", records_min)
            .unwrap_or(dlq.records_max);
        dlq.bytes_per_uid_max = doc
            .take_at_least("dlq_bytes_per_uid_max", bytes_min)
            .unwrap_or(dlq.bytes_max);
        let metrics = doc.take("metrics").unwrap_or(true);
        let metrics_port = doc.take("metrics_port").unwrap_or(DEFAULT_METRICS_PORT);
        let socket: Option<PathBuf> = doc.take("socket");
        let plan_options: Option<PlanOptions> = doc.take("plan");
        let partitions: Option<BTreeMap<String, PartitionSpec>> = doc.take("partitions");
        let partitions_configured = partitions.as_ref().is_some_and(|p| !p.is_empty());
        let plan = if partitions_configured {
            PlanConfig {
                plan: plan_options.unwrap_or_default(),
                partitions: partitions.unwrap_or_default(),
            }
        } else {
            let mut default = PlanConfig::embedded_default();
            if let Some(options) = plan_options {
                default.plan = options;
            }
            default
        };
        let named_router = router_cpu.is_some() || !router_cpus.is_empty();
        if named_router && partitions_configured && plan.partitions.contains_key("router") {
            doc.invalid(
                if router_cpu.is_some() {
                    "router_cpu"
                } else {
                    "router_cpus"
                },
                format!("{:?}", router_cpu.map_or(router_cpus.clone(), |c| vec![c])),
                "the config also has [partitions.router]: name the router's CPUs in one place \
                 (cpus = [...] under [partitions.router])",
            );
        }
        let rebalance: RebalanceConfig = doc.take("rebalance").unwrap_or_default();
        for (key, why) in sections::rebalance_problems(&rebalance) {
            doc.problem(key, format!(": {why}"));
        }
        let streaming: Option<crate::stream_engine::StreamingSection> = doc.take("streaming");
        for (key, why) in streaming.iter().flat_map(sections::streaming_problems) {
            doc.problem(&key, format!(": {why}"));
        }
        let twin: Option<crate::twin_engine::TwinSection> = doc.take("twin");
        if let Some(Err((key, why))) = twin.as_ref().map(|t| t.checked()) {
            doc.problem(key, format!(": {why}"));
        }
        let remote: Option<crate::remote::RemoteSection> = doc.take("remote");
        if let Some(Err((key, why))) = remote.as_ref().map(|r| r.listener_config()) {
            doc.problem(&key, format!(": {why}"));
        }
        if let Some(Err((key, why))) = remote.as_ref().map(|r| r.udp_config()) {
            doc.problem(&key, format!(": {why}"));
        }
        let node: Option<crate::node_links::NodeSection> = doc.take("node");
        if let Some(Err((key, why))) = node.as_ref().map(|n| n.links_config()) {
            doc.problem(&key, format!(": {why}"));
        }
        if let Some(Err((key, why))) = node.as_ref().map(|n| n.nats_settings()) {
            doc.problem(&key, format!(": {why}"));
        }
        let source = doc.finish()?;
        Ok(Self {
            streaming,
            twin,
            remote,
            node,
            plan,
            partitions_configured,
            rebalance,
            socket,
            router_cpu,
            router_cpus,
            ring_capacity_bytes,
            idle,
            router_batch_frames,
            allow,
            policy,
            io_memory_bytes,
            agents_max,
            handshakes_per_uid_max,
            agents_per_uid_max,
            defer_capacity_bytes,
            defer_deadline,
            slow_subscriber,
            slow_subscriber_evict_copies,
            liveness_timeout,
            dlq,
            dlq_path_given,
            metrics,
            metrics_port,
            source,
        })
    }

    /// Checks every CPU the configuration names (`router_cpu`, `router_cpus`, each
    /// partition's `cpus`) against `allowed` (this process's CPUs, when the daemon starts);
    /// each one missing is a problem naming file, line and key.
    ///
    /// ```
    /// let c = agentwire_runtime::config::Config::parse("router_cpus = [0, 7]", "a.toml").unwrap();
    /// assert!(c.check_cpus(&[0, 7]).is_ok());
    /// let err = c.check_cpus(&[0, 1]).unwrap_err().to_string();
    /// assert!(err.contains("a.toml:1: router_cpus = [0, 7]: cpu 7 is not one"), "{err}");
    /// ```
    pub fn check_cpus(&self, allowed: &[usize]) -> Result<(), ConfigError> {
        let allowed_text = agentwire_scheduler::machine::format_cpus(allowed);
        let mut named: Vec<(String, Vec<usize>)> = Vec::new();
        if let Some(cpu) = self.router_cpu {
            named.push(("router_cpu".into(), vec![cpu]));
        }
        if !self.router_cpus.is_empty() {
            named.push(("router_cpus".into(), self.router_cpus.clone()));
        }
        if self.partitions_configured {
            for (name, spec) in &self.plan.partitions {
                if !spec.cpus.is_empty() {
                    named.push((format!("partitions.{name}.cpus"), spec.cpus.clone()));
                }
            }
        }
        let problems: Vec<ConfigProblem> = named
            .into_iter()
            .filter_map(|(key, cpus)| {
                let missing: Vec<String> = cpus
                    .iter()
                    .filter(|c| !allowed.contains(c))
                    .map(usize::to_string)
                    .collect();
                if missing.is_empty() {
                    return None;
                }
                let value = if key == "router_cpu" {
                    cpus[0].to_string()
                } else {
                    format!("{cpus:?}")
                };
                let (noun, verb) = if missing.len() == 1 {
                    ("cpu", "is not one")
                } else {
                    ("cpus", "are not ones")
                };
                Some(self.source.problem(
                    &key,
                    format!(
                        " = {value}: {noun} {} {verb} this process may run on (allowed: \
                         {allowed_text}); change {key}",
                        missing.join(", ")
                    ),
                ))
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: self.source.origin.clone(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_matches_documented_values() {
        let c = Config::embedded_default();
        assert_eq!(c.idle, IdleStrategy::default());
        assert_eq!(c.io_memory_bytes, 131_072);
        assert_eq!(c.agents_max, agentwire_router::AGENTS_MAX_DEFAULT);
        assert_eq!(
            c.handshakes_per_uid_max,
            agentwire_router::HANDSHAKES_PER_UID_MAX_DEFAULT
        );
        assert_eq!(c.agents_per_uid_max, None);
        assert_eq!(c.defer_capacity_bytes, 262_144);
        assert_eq!(c.defer_deadline, Some(std::time::Duration::from_secs(1)));
        assert_eq!(c.liveness_timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            (c.dlq.records_per_sender_max, c.dlq.bytes_per_sender_max),
            (10_000, 6_710_886)
        );
        assert_eq!((c.metrics, c.metrics_port), (true, DEFAULT_METRICS_PORT));
        assert_eq!(c.allow, AllowList::current_user());
    }

    #[test]
    fn per_sender_dead_letter_quota_is_a_tenth_of_the_queue_unless_set() {
        let c = Config::parse("dlq_records_max = 500\ndlq_bytes_max = 1048576", "t").unwrap();
        assert_eq!(
            (c.dlq.records_per_sender_max, c.dlq.bytes_per_sender_max),
            (50, 104_857)
        );
        let c = Config::parse(
            "dlq_records_max = 5\ndlq_records_per_sender_max = 2\ndlq_bytes_per_sender_max = 8192",
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.dlq.records_per_sender_max, c.dlq.bytes_per_sender_max),
            (2, 8192)
        );
        assert_eq!(
            Config::parse("dlq_records_max = 5", "t")
                .unwrap()
                .dlq
                .records_per_sender_max,
            1
        );
    }

    #[test]
    fn per_uid_dead_letter_quota_is_the_whole_queue_unless_set() {
        let c = Config::parse("dlq_records_max = 500\ndlq_bytes_max = 1048576", "t").unwrap();
        assert_eq!(
            (c.dlq.records_per_uid_max, c.dlq.bytes_per_uid_max),
            (500, 1_048_576)
        );
        let c = Config::parse(
            "dlq_records_per_uid_max = 300\ndlq_bytes_per_uid_max = 65536",
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.dlq.records_per_uid_max, c.dlq.bytes_per_uid_max),
            (300, 65_536)
        );
        let err = Config::parse(
            "dlq_records_per_uid_max = 0\ndlq_bytes_per_uid_max = 10",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t:1: dlq_records_per_uid_max")
                && err.contains("t:2: dlq_bytes_per_uid_max"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err =
            Config::parse("idle = \"spin\"\nring_capcity_bytes = 4096\n", "test.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("config test.toml:2: ring_capcity_bytes: unknown key"),
            "{msg}"
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_with_its_line() {
        let text = "idle = \"spin\"\n\
                    agents_max = 0\n\
                    # a comment\n\
                    ring_capacity_bytes = 5000\n\
                    metrics_port = 70000\n\
                    router_cpus = 3\n\
                    agnets_max = 4\n";
        let err = Config::parse(text, "/etc/agentwire/a.toml").unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let found: Vec<(Option<usize>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        for expected in [
            (Some(2), "agents_max"),
            (Some(4), "ring_capacity_bytes"),
            (Some(5), "metrics_port"),
            (Some(6), "router_cpus"),
            (Some(7), "agnets_max"),
        ] {
            assert!(found.contains(&expected), "{expected:?} in {found:?}");
        }
        assert_eq!(problems.len(), 5, "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("config /etc/agentwire/a.toml: 5 problems:"),
            "{msg}"
        );
        assert!(
            msg.contains("/etc/agentwire/a.toml:2: agents_max = 0: 1 to 1048576")
                && msg.contains(
                    "/etc/agentwire/a.toml:4: ring_capacity_bytes = 5000: a power of two"
                ),
            "{msg}"
        );
    }

    #[test]
    fn problems_inside_tables_name_the_nested_key_and_its_line() {
        let text = "[partitions.streaming]\nany = 1\ncpuz = [1]\n\n[rebalance]\nsample_ms = 1\n";
        let msg = Config::parse(text, "p.toml").unwrap_err().to_string();
        assert!(
            msg.contains("p.toml:3: partitions.streaming.cpuz: unknown field `cpuz`"),
            "{msg}"
        );
        assert!(
            msg.contains("p.toml:6: rebalance.sample_ms: sample_ms = 1"),
            "{msg}"
        );
    }

    #[test]
    fn cpus_this_process_may_not_use_are_named_with_file_line_and_key() {
        let text = "idle = \"spin\"\nrouter_cpus = [7]\n";
        let c = Config::parse(text, "/etc/agentwire/a.toml").unwrap();
        let msg = c.check_cpus(&[0, 1]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "config /etc/agentwire/a.toml:2: router_cpus = [7]: cpu 7 is not one this process \
             may run on (allowed: 0-1); change router_cpus"
        );
        let text = "router_cpu = 9\n[partitions.nas]\ncpus = [0, 5, 6]\n";
        let c = Config::parse(text, "b.toml").unwrap();
        let msg = c.check_cpus(&[0, 1]).unwrap_err().to_string();
        assert!(
            msg.contains("b.toml:1: router_cpu = 9: cpu 9 is not one")
                && msg
                    .contains("b.toml:3: partitions.nas.cpus = [0, 5, 6]: cpus 5, 6 are not ones"),
            "{msg}"
        );
        assert!(c.check_cpus(&[0, 5, 6, 9]).is_ok());
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_rule() {
        let err = Config::parse("ring_capacity_bytes = 5000", "t").unwrap_err();
        assert!(
            err.to_string()
                .contains("ring_capacity_bytes = 5000: a power of two"),
            "{err}"
        );
        assert_eq!(
            Config::parse("router_batch_frames = 8", "t")
                .unwrap()
                .router_batch_frames,
            8
        );
        let err = Config::parse("router_batch_frames = 0", "t").unwrap_err();
        assert!(
            err.to_string()
                .contains("router_batch_frames = 0: 1 to 1024"),
            "{err}"
        );
        let err = Config::parse("idle = \"nap\"", "t").unwrap_err();
        assert!(err.to_string().contains("unknown idle strategy"), "{err}");
        assert!(Config::parse("agents_max = 0", "t").is_err());
        let err = Config::parse("handshakes_per_uid_max = 0", "t").unwrap_err();
        assert!(
            err.to_string()
                .contains("handshakes_per_uid_max = 0: 1 to 1024"),
            "{err}"
        );
        let c = Config::parse("handshakes_per_uid_max = 4\nagents_per_uid_max = 100", "t").unwrap();
        assert_eq!(
            (c.handshakes_per_uid_max, c.agents_per_uid_max),
            (4, Some(100))
        );
        assert!(Config::parse("io_memory_bytes = 10", "t").is_err());
        assert!(Config::parse("defer_capacity_bytes = 3000", "t").is_err());
        let c = Config::parse(
            "slow_subscriber = \"backpressure\"\nslow_subscriber_evict_copies = 500",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.slow_subscriber,
            agentwire_router::config::SlowSubscriber::Backpressure
        );
        assert_eq!(c.slow_subscriber_evict_copies, 500);
        assert!(Config::parse("slow_subscriber = \"sometimes\"", "t").is_err());
        assert!(Config::parse("dlq_records_max = 0", "t").is_err());
        assert!(Config::parse("dlq_records_per_sender_max = 0", "t").is_err());
        assert!(Config::parse("dlq_bytes_per_sender_max = 100", "t").is_err());
        assert!(Config::parse("metrics_port = 70000", "t").is_err());
        let c = Config::parse("defer_deadline_ms = 0\nmetrics = false", "t").unwrap();
        assert_eq!((c.defer_deadline, c.metrics), (None, false));
    }
}
