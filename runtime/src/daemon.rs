//! `agentwire serve`: the daemon. The control side (accept thread, one control thread per
//! agent) comes from [`agentwire_shm::routing`]; the routing duty cycle runs on a glommio
//! `LocalExecutor` pinned to the router CPU, in a thread named `aw-router-<cpu>`.
//!
//! Built so far (issue 3): one router shard with priority lanes, per-destination deferral
//! whose deadline feeds the persisted dead-letter queue ([`crate::dlq`], opened before the
//! socket is taken), the Prometheus endpoint ([`crate::metrics`]), status over the control
//! socket, a memlock preflight, SIGHUP reload of the allow-list and deadline
//! ([`Daemon::reload`]), and a clean shutdown that routes what is committed and
//! dead-letters what still waits. Still to come: several shards with SPSC rings between
//! them.
//!
//! ```no_run
//! use agentwire_runtime::{config::Config, daemon::Daemon};
//! let daemon = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into())?;
//! daemon.shutdown();
//! daemon.join();
//! # Ok::<(), agentwire_runtime::daemon::DaemonError>(())
//! ```

use crate::config::Config;
use agentwire_shm::control::ControlError;
use agentwire_shm::idle::Idler;
use agentwire_shm::routing::{RouterConfig, RouterControl, RouterStats};
use glommio::{LocalExecutorBuilder, Placement};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Locked memory the router executor needs beyond its io_memory (io_uring rings and
/// bookkeeping), in bytes.
pub const EXECUTOR_MEMLOCK_OVERHEAD_BYTES: u64 = 512 * 1024;
/// How long start waits for the router executor to come up.
pub const EXECUTOR_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not start. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// RLIMIT_MEMLOCK is below what the router executor locks.
    #[error(
        "RLIMIT_MEMLOCK is {limit_kib} KiB but the router executor needs {needed_kib} KiB of \
         locked memory for io_uring: raise it (`ulimit -l {needed_kib}`, or LimitMEMLOCK= in \
         the systemd unit) or lower io_memory_bytes in the config"
    )]
    Memlock {
        /// The soft limit.
        limit_kib: u64,
        /// What is needed.
        needed_kib: u64,
    },
    /// The configured CPU is not available to this process.
    #[error("router_cpu {cpu} is not one this process may run on (allowed: {allowed:?}); change router_cpu in the config")]
    BadCpu {
        /// The CPU asked for.
        cpu: usize,
        /// CPUs in this process's affinity mask.
        allowed: Vec<usize>,
    },
    /// The control socket could not be set up (e.g. another daemon serves it).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The dead-letter queue could not be opened (foreign file, newer format, I/O).
    #[error("dead-letter queue: {0}")]
    Dlq(#[from] crate::dlq::DlqError),
    /// The router executor failed to start.
    #[error("starting the router executor on cpu {cpu}: {detail}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// What failed.
        detail: String,
    },
}

/// CPUs this process may run on.
///
/// ```
/// assert!(!agentwire_runtime::daemon::allowed_cpus().is_empty());
/// ```
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Checks RLIMIT_MEMLOCK against what an executor with `io_memory_bytes` locks.
///
/// ```
/// assert!(agentwire_runtime::daemon::check_memlock(64 * 1024, Some(1 << 30)).is_ok());
/// assert!(agentwire_runtime::daemon::check_memlock(10 << 20, Some(8 << 20)).is_err());
/// ```
pub fn check_memlock(io_memory_bytes: usize, limit_bytes: Option<u64>) -> Result<(), DaemonError> {
    let needed = io_memory_bytes as u64 + EXECUTOR_MEMLOCK_OVERHEAD_BYTES;
    match limit_bytes {
        Some(limit) if limit < needed => Err(DaemonError::Memlock {
            limit_kib: limit / 1024,
            needed_kib: needed.div_ceil(1024),
        }),
        _ => Ok(()),
    }
}

/// The running daemon.
pub struct Daemon {
    config: Config,
    control: RouterControl,
    _metrics: Option<crate::metrics::MetricsServer>,
    /// One executor per router shard.
    routers: Vec<glommio::ExecutorJoinHandle<()>>,
    router_cpus: Vec<usize>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.control.socket_path())
            .field("router_cpus", &self.router_cpus)
            .finish()
    }
}

impl Daemon {
    /// Checks the machine, binds the socket and starts the router executor.
    ///
    /// ```no_run
    /// # use agentwire_runtime::{config::Config, daemon::Daemon};
    /// let d = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into())?;
    /// println!("router on cpu {}", d.router_cpu());
    /// # Ok::<(), agentwire_runtime::daemon::DaemonError>(())
    /// ```
    pub fn start(config: &Config, socket: PathBuf) -> Result<Self, DaemonError> {
        let allowed = allowed_cpus();
        let cpus = if config.router_cpus.is_empty() {
            vec![config
                .router_cpu
                .unwrap_or_else(|| *allowed.last().unwrap_or(&0))]
        } else {
            config.router_cpus.clone()
        };
        if let Some(&cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(DaemonError::BadCpu { cpu, allowed });
        }
        let is_root = rustix::process::geteuid().is_root();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock).current;
        if !is_root {
            check_memlock(config.io_memory_bytes * cpus.len(), limit)?;
        }
        let mut router_config = RouterConfig::new(socket);
        router_config.allow = config.allow.clone();
        router_config.ring_capacity_bytes = config.ring_capacity_bytes;
        router_config.idle = config.idle;
        router_config.agents_max = config.agents_max;
        router_config.defer_capacity_bytes = config.defer_capacity_bytes;
        router_config.defer_deadline = config.defer_deadline;
        router_config.liveness_timeout = config.liveness_timeout;
        router_config.shards = cpus.len();
        router_config.shard_numa_nodes = cpus
            .iter()
            .map(|&c| agentwire_shm::routing::placement::cpu_numa_node(c))
            .collect();
        // Open (and recover) the dead-letter queue before taking the socket, so a damaged or
        // foreign file stops the start with its own message.
        let dlq = crate::dlq::DeadLetterQueue::open(config.dlq.clone())?;
        let recovery = dlq.recovery();
        tracing::info!(
            path = %dlq.path().display(),
            records = dlq.len(),
            truncated_bytes = recovery.truncated_bytes,
            "dead-letter queue open"
        );
        let dlq_path = dlq.path().display().to_string();
        let (control, mut cores) = RouterControl::start_sharded(router_config)?;
        // Each shard appends through its own handle (the file lock orders them).
        let mut dlq = Some(dlq);
        for core in &mut cores {
            let handle = match dlq.take() {
                Some(first) => first,
                None => crate::dlq::DeadLetterQueue::open(config.dlq.clone())?,
            };
            core.set_dead_letters(Box::new(DlqSink { dlq: handle }));
        }
        let cpu_list = cpus
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        control.set_info("router_cpu", cpu_list.clone());
        control.set_info("dlq", dlq_path);
        let metrics = if config.metrics {
            match crate::metrics::MetricsServer::start(
                config.metrics_port,
                control.observer(),
                cpus.clone(),
            ) {
                Ok(server) => {
                    let url = format!("http://{}/metrics", server.local_addr());
                    tracing::info!(%url, "metrics endpoint");
                    control.set_info("metrics", url);
                    Some(server)
                }
                Err(e) => {
                    // Routing matters more than metrics: serve without them, say so once.
                    tracing::error!("{e}; serving without metrics");
                    control.set_info("metrics", format!("off: {e}"));
                    None
                }
            }
        } else {
            control.set_info("metrics", "off (--no-metrics or metrics = false)");
            None
        };
        let mut routers = Vec::with_capacity(cpus.len());
        for (core, &cpu) in cores.into_iter().zip(&cpus) {
            routers.push(spawn_router(core, cpu, config)?);
        }
        tracing::info!(
            socket = %control.socket_path().display(),
            router_cpus = %cpu_list,
            idle = ?config.idle,
            ring_capacity_bytes = config.ring_capacity_bytes,
            "agentwire serving"
        );
        Ok(Self {
            config: config.clone(),
            control,
            routers,
            router_cpus: cpus,
            _metrics: metrics,
        })
    }

    /// Applies a re-read configuration without dropping clients: the allow-list (for new
    /// connections) and the deferral deadline. Keys that need a restart (socket, router
    /// CPU, ring sizes, io memory, DLQ file, metrics) are kept as they are; returns their
    /// names so the caller can say so.
    ///
    /// ```no_run
    /// # use agentwire_runtime::{config::Config, daemon::Daemon};
    /// # let mut daemon = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// let kept = daemon.reload(&Config::embedded_default());
    /// assert!(kept.is_empty());
    /// ```
    pub fn reload(&mut self, config: &Config) -> Vec<&'static str> {
        self.control
            .reload(config.allow.clone(), config.defer_deadline);
        let old = &self.config;
        let needs_restart = [
            ("socket", old.socket != config.socket),
            (
                "router_cpu",
                old.router_cpu != config.router_cpu || old.router_cpus != config.router_cpus,
            ),
            (
                "ring_capacity_bytes",
                old.ring_capacity_bytes != config.ring_capacity_bytes,
            ),
            ("idle", old.idle != config.idle),
            (
                "io_memory_bytes",
                old.io_memory_bytes != config.io_memory_bytes,
            ),
            ("agents_max", old.agents_max != config.agents_max),
            (
                "defer_capacity_bytes",
                old.defer_capacity_bytes != config.defer_capacity_bytes,
            ),
            ("dlq", old.dlq != config.dlq),
            (
                "liveness_timeout_ms",
                old.liveness_timeout != config.liveness_timeout,
            ),
            (
                "metrics",
                old.metrics != config.metrics || old.metrics_port != config.metrics_port,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        self.config.allow = config.allow.clone();
        self.config.defer_deadline = config.defer_deadline;
        tracing::info!(
            allow_uids = ?config.allow.uids,
            allow_gids = ?config.allow.gids,
            defer_deadline = ?config.defer_deadline,
            "configuration reloaded"
        );
        needs_restart
    }

    /// The control socket.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// println!("{}", d.socket_path().display());
    /// ```
    pub fn socket_path(&self) -> &Path {
        self.control.socket_path()
    }

    /// The CPU the router runs on.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// assert!(d.router_cpu() < 1024);
    /// ```
    pub fn router_cpu(&self) -> usize {
        self.router_cpus[0]
    }

    /// Every router shard's CPU, shard 0 first.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// assert!(!d.router_cpus().is_empty());
    /// ```
    pub fn router_cpus(&self) -> &[usize] {
        &self.router_cpus
    }

    /// The router's counters.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// let _ = d.stats().frames_delivered.load(std::sync::atomic::Ordering::Relaxed);
    /// ```
    pub fn stats(&self) -> &RouterStats {
        self.control.stats()
    }

    /// Asks the router to stop (it drains committed frames first).
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// d.shutdown();
    /// ```
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// Waits for the router and the control threads to finish (after [`Daemon::shutdown`]).
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// d.shutdown();
    /// d.join();
    /// ```
    pub fn join(mut self) {
        self.shutdown();
        for router in self.routers.drain(..) {
            if let Err(e) = router.join() {
                tracing::error!("router executor failed: {e}");
            }
        }
    }
}

/// Starts one router shard's executor, pinned to `cpu`, thread named `aw-router-<cpu>`.
fn spawn_router(
    core: agentwire_shm::routing::RoutingCore,
    cpu: usize,
    config: &Config,
) -> Result<glommio::ExecutorJoinHandle<()>, DaemonError> {
    let idle = config.idle;
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let router = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("aw-router")
        .io_memory(config.io_memory_bytes)
        .spawn(move || async move {
            // glommio names the thread after its own executor id; name it by role and
            // core so perf and top -H read well.
            if let Ok(name) = CString::new(format!("aw-router-{cpu}")) {
                let _ = rustix::thread::set_name(&name);
            }
            let _ = started_tx.send(());
            let mut core = core;
            let mut idler = Idler::new(idle);
            while !core.should_stop() {
                core.step(&mut idler);
                glommio::yield_if_needed().await;
            }
            let routed = core.finish();
            tracing::info!(routed, cpu, "router shard drained and stopped");
        })
        .map_err(|e| DaemonError::Executor {
            cpu,
            detail: e.to_string(),
        })?;
    if started_rx.recv_timeout(EXECUTOR_START_TIMEOUT).is_err() {
        let detail = match router.join() {
            Ok(()) => "exited before starting".to_string(),
            Err(e) => e.to_string(),
        };
        return Err(DaemonError::Executor { cpu, detail });
    }
    Ok(router)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
        for router in self.routers.drain(..) {
            let _ = router.join();
        }
    }
}

/// The router's dead-letter sink: the persisted queue. `try_append` never waits: while
/// `agentwire dlq replay` holds the queue's lock, the router keeps the frame and retries.
struct DlqSink {
    dlq: crate::dlq::DeadLetterQueue,
}

impl agentwire_shm::routing::DeadLetterSink for DlqSink {
    fn accept(
        &mut self,
        reason: agentwire_shm::control::NackReason,
        frame: &[u8],
    ) -> Result<u64, String> {
        self.dlq
            .try_append(reason as u32, frame)
            .map_err(|e| e.to_string())
    }

    fn flush(&mut self) {
        if let Err(e) = self.dlq.sync() {
            tracing::error!("dead-letter queue: {e}");
        }
    }
}
