//! The daemon's configuration: TOML, every key optional, unknown keys refused with their
//! line. The embedded default (`runtime/default.toml`) documents each key with its unit.
//!
//! ```
//! let config = agentwire_runtime::config::Config::parse("idle = \"spin\"", "inline").unwrap();
//! assert_eq!(config.idle, agentwire_shm::idle::IdleStrategy::Spin);
//! assert!(agentwire_runtime::config::Config::parse("idel = 1", "inline").is_err());
//! ```

use agentwire_scheduler::plan::{PartitionSpec, PlanConfig, PlanOptions};
use agentwire_scheduler::rebalance::RebalanceConfig;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::server::AllowList;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The embedded default configuration, documented key by key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default.toml");

/// The Prometheus endpoint's default port (127.0.0.1 only).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<PathBuf>,
    router_cpu: Option<usize>,
    router_cpus: Option<Vec<usize>>,
    ring_capacity_bytes: Option<usize>,
    idle: Option<String>,
    router_batch_frames: Option<usize>,
    allow_uids: Option<Vec<u32>>,
    allow_gids: Option<Vec<u32>>,
    io_memory_bytes: Option<usize>,
    agents_max: Option<usize>,
    defer_capacity_bytes: Option<usize>,
    defer_deadline_ms: Option<u64>,
    liveness_timeout_ms: Option<u64>,
    dlq_path: Option<PathBuf>,
    dlq_records_max: Option<u64>,
    dlq_bytes_max: Option<u64>,
    metrics: Option<bool>,
    metrics_port: Option<u16>,
    plan: Option<PlanOptions>,
    partitions: Option<BTreeMap<String, PartitionSpec>>,
    rebalance: Option<RebalanceConfig>,
}

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
    /// io_uring memory of the router executor, bytes.
    pub io_memory_bytes: usize,
    /// Most agents at once.
    pub agents_max: usize,
    /// Per-destination deferral, bytes (0: off).
    pub defer_capacity_bytes: usize,
    /// How long a deferred frame waits before it is dead-lettered (`None`: forever).
    pub defer_deadline: Option<std::time::Duration>,
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
    /// TOML syntax or an unknown key (the message carries line and column).
    #[error("config {origin}: {message}")]
    Parse {
        /// File name or "embedded default".
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A value out of range.
    #[error("config {origin}: {key} = {value}: {why}")]
    Invalid {
        /// File name.
        origin: String,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: String,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |key, value: String, why: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            value,
            why: why.to_string(),
        };
        let ring_capacity_bytes = raw.ring_capacity_bytes.unwrap_or(1 << 20);
        if agentwire_shm::ring::check_capacity(ring_capacity_bytes).is_err() {
            return Err(invalid(
                "ring_capacity_bytes",
                ring_capacity_bytes.to_string(),
                "a power of two from 1024 to 1073741824",
            ));
        }
        let idle_text = raw.idle.unwrap_or_else(|| "spin-then-park".to_string());
        let idle = idle_text
            .parse::<IdleStrategy>()
            .map_err(|e| invalid("idle", format!("{idle_text:?}"), &e))?;
        let router_batch_frames = raw
            .router_batch_frames
            .unwrap_or(agentwire_shm::routing::ROUTER_BATCH_FRAMES_DEFAULT);
        if !(1..=agentwire_shm::routing::ROUTER_BATCH_FRAMES_LIMIT).contains(&router_batch_frames) {
            return Err(invalid(
                "router_batch_frames",
                router_batch_frames.to_string(),
                &format!("1 to {}", agentwire_shm::routing::ROUTER_BATCH_FRAMES_LIMIT),
            ));
        }
        let agents_max = raw
            .agents_max
            .unwrap_or(agentwire_shm::routing::ROUTER_AGENTS_MAX);
        if agents_max == 0 || agents_max > agentwire_shm::routing::ROUTER_AGENTS_MAX {
            return Err(invalid(
                "agents_max",
                agents_max.to_string(),
                &format!("1 to {}", agentwire_shm::routing::ROUTER_AGENTS_MAX),
            ));
        }
        let io_memory_bytes = raw.io_memory_bytes.unwrap_or(128 * 1024);
        if io_memory_bytes < 64 * 1024 {
            return Err(invalid(
                "io_memory_bytes",
                io_memory_bytes.to_string(),
                "at least 65536 (glommio's minimum)",
            ));
        }
        let (uids, gids) = (
            raw.allow_uids.unwrap_or_default(),
            raw.allow_gids.unwrap_or_default(),
        );
        let allow = if uids.is_empty() && gids.is_empty() {
            AllowList::current_user()
        } else {
            AllowList { uids, gids }
        };
        let defer_capacity_bytes = raw.defer_capacity_bytes.unwrap_or(256 * 1024);
        if defer_capacity_bytes != 0
            && agentwire_shm::ring::check_capacity(defer_capacity_bytes).is_err()
        {
            return Err(invalid(
                "defer_capacity_bytes",
                defer_capacity_bytes.to_string(),
                "0 (off) or a power of two from 1024 to 1073741824",
            ));
        }
        let defer_deadline = match raw.defer_deadline_ms.unwrap_or(1000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        };
        let router_cpus = raw.router_cpus.unwrap_or_default();
        let mut distinct = router_cpus.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != router_cpus.len()
            || router_cpus.len() > agentwire_shm::routing::ROUTER_SHARDS_MAX
        {
            return Err(invalid(
                "router_cpus",
                format!("{router_cpus:?}"),
                &format!(
                    "distinct CPUs, at most {}",
                    agentwire_shm::routing::ROUTER_SHARDS_MAX
                ),
            ));
        }
        let liveness_timeout = match raw.liveness_timeout_ms.unwrap_or(5000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        };
        let dlq_path_given = raw.dlq_path.is_some();
        let mut dlq =
            crate::dlq::DlqConfig::new(raw.dlq_path.unwrap_or_else(crate::dlq::default_path));
        if let Some(records_max) = raw.dlq_records_max {
            if records_max == 0 {
                return Err(invalid("dlq_records_max", "0".into(), "at least 1"));
            }
            dlq.records_max = records_max;
        }
        if let Some(bytes_max) = raw.dlq_bytes_max {
            if bytes_max < 4096 {
                return Err(invalid(
                    "dlq_bytes_max",
                    bytes_max.to_string(),
                    "at least 4096",
                ));
            }
            dlq.bytes_max = bytes_max;
        }
        let partitions_configured = raw.partitions.as_ref().is_some_and(|p| !p.is_empty());
        let plan = if partitions_configured {
            PlanConfig {
                plan: raw.plan.clone().unwrap_or_default(),
                partitions: raw.partitions.unwrap_or_default(),
            }
        } else {
            let mut default = PlanConfig::embedded_default();
            if let Some(options) = raw.plan.clone() {
                default.plan = options;
            }
            default
        };
        let named_router = raw.router_cpu.is_some() || !router_cpus.is_empty();
        if named_router && partitions_configured && plan.partitions.contains_key("router") {
            return Err(invalid(
                "router_cpus",
                format!(
                    "{:?}",
                    raw.router_cpu.map_or(router_cpus.clone(), |c| vec![c])
                ),
                "the config also has [partitions.router]: name the router's CPUs in one place \
                 (cpus = [...] under [partitions.router])",
            ));
        }
        let rebalance = raw.rebalance.unwrap_or_default();
        if let Err(why) = rebalance.validate() {
            return Err(ConfigError::Parse {
                origin: origin.to_string(),
                message: why,
            });
        }
        Ok(Self {
            plan,
            partitions_configured,
            rebalance,
            socket: raw.socket,
            router_cpu: raw.router_cpu,
            router_cpus,
            ring_capacity_bytes,
            idle,
            router_batch_frames,
            allow,
            io_memory_bytes,
            agents_max,
            defer_capacity_bytes,
            defer_deadline,
            liveness_timeout,
            dlq,
            dlq_path_given,
            metrics: raw.metrics.unwrap_or(true),
            metrics_port: raw.metrics_port.unwrap_or(DEFAULT_METRICS_PORT),
        })
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
        assert_eq!(c.agents_max, 256);
        assert_eq!(c.defer_capacity_bytes, 262_144);
        assert_eq!(c.defer_deadline, Some(std::time::Duration::from_secs(1)));
        assert_eq!(c.liveness_timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!((c.metrics, c.metrics_port), (true, DEFAULT_METRICS_PORT));
        assert_eq!(c.allow, AllowList::current_user());
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err =
            Config::parse("idle = \"spin\"\nring_capcity_bytes = 4096\n", "test.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test.toml")
                && msg.contains("line 2")
                && msg.contains("ring_capcity_bytes"),
            "{msg}"
        );
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
        assert!(Config::parse("io_memory_bytes = 10", "t").is_err());
        assert!(Config::parse("defer_capacity_bytes = 3000", "t").is_err());
        assert!(Config::parse("dlq_records_max = 0", "t").is_err());
        assert!(Config::parse("metrics_port = 70000", "t").is_err());
        let c = Config::parse("defer_deadline_ms = 0\nmetrics = false", "t").unwrap();
        assert_eq!((c.defer_deadline, c.metrics), (None, false));
    }
}
