//! `agentwire serve`: the daemon. At start it reads the live machine (hwloc, the device
//! probes, this process's affinity mask), plans the partitions of the config
//! ([`agentwire_scheduler::plan`]), logs the plan and the start-up checks, and applies it:
//! one router shard per router core on a glommio `LocalExecutor` pinned there
//! (`aw-router-<cpu>`), and one pinned executor per engine partition core
//! ([`crate::partitions`], `aw-<partition>-<cpu>`) with rebalancing between them. The
//! control side (accept thread, one control thread per agent) comes from
//! [`agentwire_router`].
//!
//! Also: per-destination deferral whose deadline feeds the persisted dead-letter queue
//! ([`crate::dlq`], opened before the socket is taken), the Prometheus endpoint
//! ([`crate::metrics`]), status over the control socket (partitions, executors with their
//! affinity read back, core moves), a memlock preflight, SIGHUP reload of the allow-list,
//! policy and deadline ([`Daemon::reload`]), and a clean shutdown that routes what is committed
//! and dead-letters what still waits (or drops it, counted and nacked, where the queue
//! refuses it).
//!
//! ```no_run
//! use agentwire_runtime::{config::Config, daemon::Daemon};
//! let daemon = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into())?;
//! daemon.shutdown();
//! daemon.join();
//! # Ok::<(), agentwire_runtime::daemon::DaemonError>(())
//! ```

use crate::config::Config;
use crate::partitions::{ExecutorState, PartitionHost};
use crate::service::{ServiceView, WedgeHook};
use agentwire_router::{RouterConfig, RouterControl, RouterStats};
use agentwire_scheduler::checks::{Check, CheckLevel};
use agentwire_scheduler::plan::Plan;
use agentwire_shm::control::{ControlError, PartitionStatus};
use agentwire_shm::idle::Idler;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::partitions::EXECUTOR_START_TIMEOUT;
pub use crate::planning::{allowed_cpus, EXECUTOR_MEMLOCK_OVERHEAD_BYTES};

/// Why the daemon could not start. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The node links could not start (`[node]`).
    #[error("node links: {0}")]
    Links(String),
    /// The remote agents listener could not start (`[remote]`).
    #[error("remote agents listener: {0}")]
    Remote(String),
    /// RLIMIT_MEMLOCK is below what the planned executors lock.
    #[error(
        "RLIMIT_MEMLOCK is {limit_kib} KiB but the planned executors need {needed_kib} KiB of \
         locked memory for io_uring: raise it (`ulimit -l {needed_kib}`, or LimitMEMLOCK= in \
         the systemd unit), or lower io_memory_bytes or the partitions' core counts"
    )]
    Memlock {
        /// The soft limit.
        limit_kib: u64,
        /// What is needed.
        needed_kib: u64,
    },
    /// The config names CPUs this process may not run on (each with its file, line and
    /// key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The control socket could not be set up (e.g. another daemon serves it).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The dead-letter queue could not be opened (foreign file, newer format, I/O).
    #[error("dead-letter queue: {0}")]
    Dlq(#[from] crate::dlq::DlqError),
    /// The agent id mark beside the dead-letter queue could not be read or written.
    #[error(transparent)]
    AgentIds(#[from] agentwire_router::agent_ids::AgentIdError),
    /// The config's partitions cannot be planned on this machine (the message says what
    /// to change).
    #[error("partition plan: {0}")]
    Plan(Box<agentwire_scheduler::plan::PlanError>),
    /// An engine partition's executor failed to start.
    #[error(transparent)]
    Partition(#[from] crate::partitions::PartitionError),
    /// The streaming engine could not start (`[streaming] enabled = true`).
    #[error("streaming engine: {0}")]
    Stream(String),
    /// The digital twin could not start (`[twin] enabled = true`).
    #[error("digital twin: {0}")]
    Twin(String),
    /// The router executor failed to start.
    #[error("starting the router executor on cpu {cpu}: {detail}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// What failed.
        detail: String,
    },
}

/// Checks RLIMIT_MEMLOCK against the bytes the planned executors lock in all.
///
/// ```
/// assert!(agentwire_runtime::daemon::check_memlock(64 * 1024, Some(1 << 30)).is_ok());
/// assert!(agentwire_runtime::daemon::check_memlock(10 << 20, Some(8 << 20)).is_err());
/// ```
pub fn check_memlock(needed_bytes: u64, limit_bytes: Option<u64>) -> Result<(), DaemonError> {
    let needed = needed_bytes;
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
    /// What a service manager is told ([`Daemon::service_view`]).
    view: ServiceView,
    _metrics: Option<crate::metrics::MetricsServer>,
    /// One executor per router shard.
    routers: Vec<glommio::ExecutorJoinHandle<()>>,
    router_cpus: Vec<usize>,
    plan: Plan,
    checks: Vec<Check>,
    partitions: PartitionHost,
    /// Configurations applied by [`Daemon::reload`] (status info `reloads`).
    reloads: u64,
    /// The remote agents listener (`[remote]`), stopped first when the daemon is dropped.
    remote: Option<agentwire_transport::server::RemoteListener>,
    /// The node links (`[node]`), stopped with the listener.
    links: Option<agentwire_transport::node::NodeLinks>,
    /// The NATS bridge (`[node] nats_url`), stopped before the links.
    nats: Option<NatsBridge>,
    /// The UDP telemetry receiver (`[remote] udp_listen`), stopped with the listener.
    udp: Option<agentwire_transport::udp::UdpTelemetry>,
    /// The stats segment and its `daemon` slot's thread ([`crate::mirror`]).
    _mirror: Option<crate::mirror::DaemonMirror>,
    /// The digital twin (`[twin]`), its history flushed when the daemon stops.
    twin: Option<crate::twin_engine::TwinHandle>,
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
    /// Checks the machine, binds the socket, starts every executor and the configured
    /// engine. When it returns the daemon is ready in the sense a service manager's
    /// `READY=1` means: the control socket accepts connections, every executor runs pinned
    /// to its CPU (its affinity read back and checked; one that is not pinned is an error),
    /// and the streaming engine, when `[streaming] enabled = true`, is registered and
    /// discoverable. (The socket answers from the moment it is bound, a little earlier; a
    /// client that must find the engine waits for readiness, `Type=notify`.)
    ///
    /// ```no_run
    /// # use agentwire_runtime::{config::Config, daemon::Daemon};
    /// let d = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into())?;
    /// println!("router on cpu {}", d.router_cpu());
    /// # Ok::<(), agentwire_runtime::daemon::DaemonError>(())
    /// ```
    pub fn start(config: &Config, socket: PathBuf) -> Result<Self, DaemonError> {
        config.check_cpus(&allowed_cpus())?;
        let (machine, machine_lines) = crate::planning::live_machine();
        for line in &machine_lines {
            tracing::info!("{line}");
        }
        let plan = agentwire_scheduler::plan::plan(&machine, &config.plan_config())
            .map_err(|e| DaemonError::Plan(Box::new(e)))?;
        let cpus = plan
            .partition("router")
            .map(|p| p.executor_pus())
            .unwrap_or_default();
        if cpus.is_empty() {
            return Err(DaemonError::Executor {
                cpu: 0,
                detail: "the plan gave the router no core".into(),
            });
        }
        let check_input = crate::planning::check_input(config, &plan);
        if !check_input.memlock_exempt {
            check_memlock(
                check_input.memlock_needed_bytes(),
                check_input.memlock_limit_bytes,
            )?;
        }
        tracing::info!(
            machine = %machine.source,
            "partition plan ({} executors)",
            check_input.executors
        );
        for line in plan.table().lines() {
            tracing::info!("plan: {line}");
        }
        let checks = agentwire_scheduler::checks::run_checks(
            &agentwire_scheduler::checks::SystemFiles::live(),
            &check_input,
        );
        for check in &checks {
            match check.level {
                CheckLevel::Ok => tracing::info!("{check}"),
                CheckLevel::Advice | CheckLevel::Problem => tracing::warn!("{check}"),
            }
        }
        let mut router_config = RouterConfig::new(socket);
        router_config.allow = config.allow.clone();
        router_config.policy = config.policy.clone();
        router_config.ring_capacity_bytes = config.ring_capacity_bytes;
        router_config.idle = config.idle;
        router_config.batch_frames = config.router_batch_frames;
        router_config.agents_max = config.agents_max;
        router_config.handshakes_per_uid_max = config.handshakes_per_uid_max;
        router_config.agents_per_uid_max = config.agents_per_uid_max;
        router_config.defer_capacity_bytes = config.defer_capacity_bytes;
        router_config.defer_deadline = config.defer_deadline;
        router_config.slow_subscriber = config.slow_subscriber;
        router_config.slow_subscriber_evict_copies = config.slow_subscriber_evict_copies;
        router_config.liveness_timeout = config.liveness_timeout;
        router_config.shards = cpus.len();
        router_config.shard_numa_nodes = cpus
            .iter()
            .map(|&c| agentwire_router::placement::cpu_numa_node(c))
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
        let dlq_file = dlq.path().to_path_buf();
        let dlq_path = dlq.path().display().to_string();
        // Agent ids never repeat, across restarts too: the mark lives beside the queue, so a
        // dead letter never names an unrelated agent of a later run.
        let ids_path = agent_ids_path(dlq.path());
        let (ids, first_id) = agentwire_router::agent_ids::AgentIdStore::open(&ids_path)?;
        tracing::info!(path = %ids_path.display(), first_id, "agent ids");
        router_config.first_agent_id = first_id;
        router_config.agent_id_store = Some(std::sync::Arc::new(std::sync::Mutex::new(ids)));
        let (control, mut cores) = RouterControl::start_sharded(router_config)?;
        // Each shard appends through its own handle (the file lock orders them).
        let mut dlq = Some(dlq);
        for core in &mut cores {
            let handle = match dlq.take() {
                Some(first) => first,
                None => crate::dlq::DeadLetterQueue::open(config.dlq.clone())?,
            };
            core.set_dead_letters(Box::new(crate::dlq_sink::DlqSink::new(handle)));
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
        control.set_info("machine", machine.source.clone());
        if !plan.notes.is_empty() {
            control.set_info("plan_notes", plan.notes.join("; "));
        }
        for check in &checks {
            control.set_info(
                &format!("check.{}", check.name),
                format!("{}: {}", check.level, check.line),
            );
        }
        let heartbeats = control.heartbeats();
        let wedge = WedgeHook::from_env(cpus.len());
        // Engine executors before the routers: if one cannot start, no router runs yet.
        let partitions =
            PartitionHost::start(&plan, config.rebalance.clone(), config.io_memory_bytes)?;
        let mirror = start_mirror(&control, &mut cores, &partitions, dlq_file);
        if let (Some(server), Some(m)) = (&metrics, &mirror) {
            let names = crate::mirror::names_path_for(m.path());
            if let Err(e) = server.serve_agent_mirror(m.path(), &names) {
                tracing::error!("metrics: serving without per-agent counters: {e}");
            }
        }
        let mut routers = Vec::with_capacity(cpus.len());
        let mut router_states = Vec::with_capacity(cpus.len());
        for (core, &cpu) in cores.into_iter().zip(&cpus) {
            let state = Arc::new(ExecutorState::new(
                &crate::partitions::thread_name("router", cpu),
                cpu,
            ));
            let wedge = wedge.as_ref().filter(|h| h.shard() == router_states.len());
            routers.push(spawn_router(core, state.clone(), config, wedge.cloned())?);
            router_states.push(state);
        }
        check_pinned(
            router_states
                .iter()
                .map(|s| s.status())
                .chain(partitions.status().0.into_iter().flat_map(|p| p.executors)),
        )?;
        let stream = match config.streaming.as_ref().filter(|s| s.enabled) {
            Some(section) => {
                // The engine's log and checkpoints live beside the dead-letter queue unless
                // `state_dir` says otherwise.
                let default_state = config.dlq.path.parent().map(|d| d.join("stream"));
                let engine = section
                    .engine_config_in(default_state.as_deref())
                    .map_err(|(key, why)| DaemonError::Stream(format!("{key}: {why}")))?;
                let handle = crate::stream_engine::start(&control, partitions.submitter(), engine)
                    .map_err(DaemonError::Stream)?;
                tracing::info!(
                    partition = crate::stream_engine::PARTITION,
                    "streaming engine serving feature id {:#x}",
                    section
                        .feature_id
                        .unwrap_or(agentwire_shm::stream_events::STREAM_FEATURE_ID)
                );
                Some(handle)
            }
            None => None,
        };
        let twin = start_twin(config, &control, &partitions, mirror.as_ref())?;
        let twin_stats = twin.clone();
        let remote = match config.remote.as_ref().map(|r| r.listener_config()) {
            Some(Ok(Some(listener))) => {
                let started = agentwire_transport::server::RemoteListener::start(
                    listener,
                    control.endpoint_registrar(),
                )
                .map_err(|e| DaemonError::Remote(e.to_string()))?;
                let tls = config
                    .remote
                    .as_ref()
                    .is_some_and(|r| r.tls_certificate.is_some());
                tracing::info!(
                    listen = %started.local_addr(),
                    tls,
                    "remote agents listener serving"
                );
                control.set_info("remote_listen", started.local_addr().to_string());
                Some(started)
            }
            Some(Err((key, why))) => return Err(DaemonError::Remote(format!("{key}: {why}"))),
            Some(Ok(None)) | None => None,
        };
        let remote_stats = remote.as_ref().map(|r| r.stats_handle());
        let udp = match config.remote.as_ref().map(|r| r.udp_config()) {
            Some(Ok(Some(udp_config))) => {
                let started = agentwire_transport::udp::UdpTelemetry::start(
                    udp_config,
                    control.endpoint_registrar(),
                )
                .map_err(|e| DaemonError::Remote(format!("udp telemetry: {e}")))?;
                tracing::info!(listen = %started.local_addr(), "udp telemetry receiving");
                control.set_info("remote_udp_listen", started.local_addr().to_string());
                Some(started)
            }
            Some(Err((key, why))) => return Err(DaemonError::Remote(format!("{key}: {why}"))),
            Some(Ok(None)) | None => None,
        };
        let udp_stats = udp.as_ref().map(|u| u.stats_handle());
        let links = match config.node.as_ref().map(|n| n.links_config()) {
            Some(Ok(Some(links_config))) => {
                let name = links_config.name.clone();
                let peers = links_config.peers.len();
                let started = agentwire_transport::node::NodeLinks::start(
                    links_config,
                    control.endpoint_registrar(),
                )
                .map_err(|e| DaemonError::Links(e.to_string()))?;
                tracing::info!(node = %name, peers, listen = ?started.local_addr(), "node links running");
                control.set_info("node", name);
                if let Some(addr) = started.local_addr() {
                    control.set_info("node_listen", addr.to_string());
                }
                Some(started)
            }
            Some(Err((key, why))) => return Err(DaemonError::Links(format!("{key}: {why}"))),
            Some(Ok(None)) | None => None,
        };
        let links_handle = links.as_ref().map(|l| l.handle());
        let nats = start_nats(config, &control, links_handle.clone())?;
        #[cfg(feature = "nats")]
        let nats_stats = nats.as_ref().map(|n| (n.stats_handle(), n.nodes_handle()));
        let view = ServiceView {
            observer: control.observer(),
            heartbeats,
            router_cpus: cpus.clone(),
            stream: stream.clone(),
            wedge,
        };
        let engines = partitions.status_source();
        let router_cpus_u32: Vec<u32> = cpus.iter().map(|&c| c as u32).collect();
        control.set_status_hook(Box::new(move |report| {
            let (duty, idle) =
                report
                    .counters
                    .iter()
                    .fold((0u64, 0u64), |acc, (k, v)| match k.as_str() {
                        "duty_cycles" => (*v, acc.1),
                        "duty_cycles_idle" => (acc.0, *v),
                        _ => acc,
                    });
            let router = PartitionStatus {
                name: "router".into(),
                priority: 0,
                home_cpus: router_cpus_u32.clone(),
                cpus: router_cpus_u32.clone(),
                busy_permille: idle
                    .saturating_mul(1000)
                    .checked_div(duty)
                    .map_or(0, |idle_permille| {
                        1000u64.saturating_sub(idle_permille) as u32
                    }),
                jobs_completed: 0,
                jobs_queued: 0,
                executors: router_states.iter().map(|s| s.status()).collect(),
            };
            if let Some(stream) = &stream {
                report.counters.extend(stream.counters());
            }
            if let Some(twin) = &twin_stats {
                report.counters.extend(twin.counters());
                report.info.push(("twin_risks".into(), twin.risks_json()));
            }
            if let Some(remote) = &remote_stats {
                report
                    .counters
                    .extend(crate::remote::counters(&remote.snapshot()));
            }
            if let Some(udp) = &udp_stats {
                report
                    .counters
                    .extend(crate::remote::udp_counters(&udp.snapshot()));
            }
            #[cfg(feature = "nats")]
            if let Some((stats, nodes)) = &nats_stats {
                report.counters.extend(
                    stats
                        .snapshot()
                        .into_iter()
                        .map(|(k, v)| (format!("nats.{k}"), v)),
                );
                let seen = nodes.lock().map(|n| n.clone()).unwrap_or_default();
                let seen = serde_json::to_string(&seen).unwrap_or_default();
                report.info.push(("nats_nodes".into(), seen));
            }
            if let Some(links) = &links_handle {
                report.counters.extend(crate::node_links::counters(links));
                // `agentwire links` reads the links from this fact (JSON).
                let reports = serde_json::to_string(&links.links()).unwrap_or_default();
                report.info.push(("links".into(), reports));
            }
            let (mut partitions, moves) = engines();
            partitions.insert(0, router);
            report.partitions = partitions;
            report.core_moves = moves;
        }));
        tracing::info!(
            socket = %control.socket_path().display(),
            router_cpus = %cpu_list,
            idle = ?config.idle,
            ring_capacity_bytes = config.ring_capacity_bytes,
            router_batch_frames = config.router_batch_frames,
            "agentwire serving"
        );
        Ok(Self {
            config: config.clone(),
            control,
            view,
            routers,
            router_cpus: cpus,
            _metrics: metrics,
            plan,
            checks,
            partitions,
            reloads: 0,
            remote,
            udp,
            links,
            nats,
            _mirror: mirror,
            twin,
        })
    }

    /// Applies a re-read configuration: the allow-list, the `[[authorize]]` policy (agents
    /// they no longer admit are removed; see `RouterControl::reload`) and the deferral
    /// deadline, the keys [`applies_on_reload`](crate::config::applies_on_reload) names.
    /// Every other changed key (socket, router CPUs, ring sizes, limits, DLQ, metrics,
    /// sections) is kept as it is until a restart; the result names both, so the caller can
    /// say so.
    ///
    /// ```no_run
    /// # use agentwire_runtime::{config::Config, daemon::Daemon};
    /// # let mut daemon = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// let changes = daemon.reload(&Config::embedded_default());
    /// assert!(changes.applied.is_empty() && changes.needs_restart.is_empty());
    /// ```
    pub fn reload(&mut self, config: &Config) -> crate::config::ReloadChanges {
        self.control.reload(
            config.allow.clone(),
            config.policy.clone(),
            config.defer_deadline,
        );
        let changes = self.config.reload_changes(config);
        self.config.allow = config.allow.clone();
        self.config.policy = config.policy.clone();
        self.config.defer_deadline = config.defer_deadline;
        tracing::info!(
            allow_uids = ?config.allow.uids,
            allow_gids = ?config.allow.gids,
            authorize_rules = config.policy.rules.len(),
            defer_deadline = ?config.defer_deadline,
            "configuration reloaded"
        );
        self.reloads += 1;
        self.control.set_info("reloads", self.reloads.to_string());
        changes
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

    /// The partition plan the daemon applied.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// print!("{}", d.plan().table());
    /// ```
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The start-up checks, as logged at start.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// for check in d.checks() { println!("{check}"); }
    /// ```
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// What a service manager is told (agents, rate, engines, the router shards'
    /// heartbeats), for another thread to hold.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// let view = d.service_view();
    /// std::thread::spawn(move || println!("{}", view.snapshot().line(None)));
    /// ```
    pub fn service_view(&self) -> ServiceView {
        self.view.clone()
    }

    /// The engine partitions' executors (submit jobs, read moves).
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// d.partitions().submit("streaming", Box::new(|| {})).unwrap();
    /// ```
    pub fn partitions(&self) -> &PartitionHost {
        &self.partitions
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
        self.partitions.shutdown();
    }
}

/// Starts one router shard's executor, pinned to `state`'s CPU, thread named
/// `aw-router-<cpu>`, its affinity read back into `state`. `wedge` is the test hook
/// ([`WedgeHook`]) when it names this shard: after the duty cycle in which it fires, the
/// shard runs no more until shutdown.
fn spawn_router(
    core: agentwire_router::RoutingCore,
    state: Arc<ExecutorState>,
    config: &Config,
    wedge: Option<WedgeHook>,
) -> Result<glommio::ExecutorJoinHandle<()>, DaemonError> {
    let idle = config.idle;
    let cpu = state.status().cpu as usize;
    crate::partitions::spawn_pinned(state, config.io_memory_bytes, move || async move {
        let mut core = core;
        let mut idler = Idler::new(idle);
        while !core.should_stop() {
            core.step(&mut idler);
            // None in production: one predictable branch per duty cycle.
            if let Some(hook) = wedge.as_ref().filter(|h| h.fired()) {
                hook.hold(|| core.should_stop());
            }
            glommio::yield_if_needed().await;
        }
        let routed = core.finish();
        // What could not be routed is logged by `finish`, dead-lettered and dropped apart.
        tracing::info!(routed, cpu, "router shard drained and stopped");
    })
    .map_err(|detail| DaemonError::Executor { cpu, detail })
}

/// Starts the twin when `[twin] enabled = true`: its history in `state_dir` (default
/// `twin/` beside the dead-letter queue), sampling the mirror on the twin partition. Without
/// a mirror there is nothing to sample: the daemon refuses to start rather than run a twin
/// that records nothing.
fn start_twin(
    config: &Config,
    control: &RouterControl,
    partitions: &PartitionHost,
    mirror: Option<&crate::mirror::DaemonMirror>,
) -> Result<Option<crate::twin_engine::TwinHandle>, DaemonError> {
    let Some(section) = config.twin.as_ref().filter(|t| t.enabled) else {
        return Ok(None);
    };
    let settings = section
        .checked()
        .map_err(|(key, why)| DaemonError::Twin(format!("{key}: {why}")))?;
    let Some(mirror) = mirror else {
        return Err(DaemonError::Twin(
            "[twin] is enabled but the stats mirror could not be set up (see the error above)"
                .into(),
        ));
    };
    let default_dir = config
        .dlq
        .path
        .parent()
        .map_or_else(|| PathBuf::from("twin"), |d| d.join("twin"));
    let names: Vec<String> = partitions.status().0.into_iter().map(|p| p.name).collect();
    let handle = crate::twin_engine::start(
        &partitions.submitter(),
        control,
        &names,
        &settings,
        &default_dir,
        mirror.path(),
        &crate::mirror::names_path_for(mirror.path()),
    )
    .map_err(DaemonError::Twin)?;
    tracing::info!(
        partition = crate::twin_engine::PARTITION,
        history = %handle.history_dir().display(),
        sample_interval_ms = settings.sample_interval.as_millis() as u64,
        "digital twin sampling the mirror"
    );
    control.set_info("twin_history", handle.history_dir().display().to_string());
    Ok(Some(handle))
}

/// Creates the stats segment beside the socket, gives every router shard its slot and starts
/// the `daemon` slot's thread. A failure is logged once and the daemon serves without a
/// mirror (status info `stats` says why).
fn start_mirror(
    control: &RouterControl,
    cores: &mut [agentwire_router::RoutingCore],
    partitions: &PartitionHost,
    dlq_path: PathBuf,
) -> Option<crate::mirror::DaemonMirror> {
    use crate::mirror::{DaemonMirror, DaemonSources};
    let names: Vec<String> = partitions.status().0.into_iter().map(|p| p.name).collect();
    let made =
        DaemonMirror::create(control.socket_path(), cores.len(), &names).and_then(|mut m| {
            for (shard, core) in cores.iter_mut().enumerate() {
                core.set_stats_slot(m.shard_slot(shard)?)
                    .map_err(|e| crate::mirror::MirrorSetupError(e.to_string()))?;
                core.set_agent_stats_slots(m.agent_slots(shard)?)
                    .map_err(|e| crate::mirror::MirrorSetupError(e.to_string()))?;
            }
            let status = partitions.status_source();
            m.start_daemon_slot(DaemonSources {
                observer: control.observer(),
                partitions: Box::new(move || status().0),
                dlq_path,
            })?;
            Ok(m)
        });
    match made {
        Ok(m) => {
            tracing::info!(path = %m.path().display(), "stats mirror");
            control.set_info("stats", m.path().display().to_string());
            Some(m)
        }
        Err(e) => {
            tracing::error!("{e}; serving without the stats mirror");
            control.set_info("stats", format!("off: {e}"));
            None
        }
    }
}

/// Checks that every executor's affinity, as its thread read it back, is exactly its CPU.
fn check_pinned(
    executors: impl Iterator<Item = agentwire_shm::control::ExecutorStatus>,
) -> Result<(), DaemonError> {
    for e in executors {
        if e.affinity != [e.cpu] {
            let affinity: Vec<usize> = e.affinity.iter().map(|&c| c as usize).collect();
            return Err(DaemonError::Executor {
                cpu: e.cpu as usize,
                detail: format!(
                    "{} read back the affinity {:?}, not cpu {} alone: it is not pinned",
                    e.thread,
                    agentwire_scheduler::machine::format_cpus(&affinity),
                    e.cpu
                ),
            });
        }
    }
    Ok(())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Remote connections close before the router stops (their agents leave it).
        drop(self.remote.take());
        drop(self.udp.take());
        let _ = self.nats.take();
        drop(self.links.take());
        self.shutdown();
        for router in self.routers.drain(..) {
            let _ = router.join();
        }
        self.partitions.shutdown();
        // The partitions take no more jobs: the twin's open buckets are written here.
        if let Some(twin) = self.twin.take() {
            twin.finish();
        }
    }
}

/// The file holding the agent id mark: `<dead-letter queue>.ids`, beside the queue.
///
/// ```
/// let p = agentwire_runtime::daemon::agent_ids_path(std::path::Path::new("/var/lib/agentwire/dlq.log"));
/// assert_eq!(p, std::path::Path::new("/var/lib/agentwire/dlq.log.ids"));
/// ```
pub fn agent_ids_path(dlq: &std::path::Path) -> std::path::PathBuf {
    let mut name = dlq.as_os_str().to_owned();
    name.push(".ids");
    std::path::PathBuf::from(name)
}

/// The NATS bridge when built with the cargo feature `nats`.
#[cfg(feature = "nats")]
type NatsBridge = agentwire_transport::nats::NatsCluster;
/// Nothing without the cargo feature `nats` (a `nats_url` is refused at start).
#[cfg(not(feature = "nats"))]
type NatsBridge = ();

/// Joins the NATS cluster `[node] nats_url` names, if any.
fn start_nats(
    config: &Config,
    control: &agentwire_router::RouterControl,
    links: Option<agentwire_transport::node::LinksHandle>,
) -> Result<Option<NatsBridge>, DaemonError> {
    let settings = match config.node.as_ref().map(|n| n.nats_settings()) {
        Some(Ok(Some(settings))) => settings,
        Some(Err((key, why))) => return Err(DaemonError::Links(format!("{key}: {why}"))),
        Some(Ok(None)) | None => return Ok(None),
    };
    #[cfg(feature = "nats")]
    {
        let mut nats = agentwire_transport::nats::NatsConfig::new(&settings.node, &settings.url);
        nats.bucket = settings.bucket;
        nats.ttl = settings.ttl;
        nats.tls = settings.tls;
        let started = agentwire_transport::nats::NatsCluster::start(
            nats,
            control.endpoint_registrar(),
            links,
        )
        .map_err(|e| DaemonError::Links(format!("node.nats_url: {e}")))?;
        control.set_info("nats", settings.url.clone());
        control.set_info("node", settings.node.clone());
        tracing::info!(url = %settings.url, "joined the NATS cluster");
        Ok(Some(started))
    }
    #[cfg(not(feature = "nats"))]
    {
        let _ = (control, links);
        Err(DaemonError::Links(format!(
            "node.nats_url: {:?} is set, but this agentwire was built without the cargo \
             feature `nats` (cargo build --features nats)",
            settings.url
        )))
    }
}
