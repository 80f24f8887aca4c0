//! [`RouterControl`]: starts a router (socket, shards, links, the control loop) and is the
//! control side's handle on it.

use crate::commands::command_queue;
use crate::config::{
    deadline_ns, lane_batch_frames, RouterConfig, LINK_BUDGET_BYTES_MAX, ROUTER_BATCH_FRAMES_LIMIT,
    ROUTER_SHARDS_MAX,
};
use crate::control_loop::ControlLoop;
use crate::duty_cycle::RoutingCore;
use crate::endpoint::{Endpoint, EndpointError, EndpointKind};
use crate::links::{LinkReceiver, LinkSender};
use crate::policy::Policy;
use crate::registry::Registry;
use crate::server::{AllowList, ControlListener};
use crate::shared::{bump, Shared};
use crate::stats::RouterStats;
use crate::status::RouterObserver;
use crate::wake::ShardWake;
use agentwire_shm::control::{ControlError, Registration, StatusReport};
use agentwire_shm::doorbell::Doorbell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Commands queued for one routing core at most: every agent's `Add` and `Remove` can be
/// in flight at once when a core is slow to take them; the control loop keeps a removal
/// that does not fit and retries it, and refuses an agent whose `Add` does not fit.
pub const COMMANDS_QUEUED_MAX: usize = 8192;

/// Adds what the embedding daemon knows to a status report (see
/// [`RouterControl::set_status_hook`]).
pub type StatusHook = Box<dyn Fn(&mut StatusReport) + Send + Sync>;

/// A running router's control side: the control loop (one thread serving every
/// connection), the registry and the counters. Dropping it shuts the router down and joins the
/// control loop; the data side is the [`RoutingCore`] returned with it.
pub struct RouterControl {
    pub(crate) socket: PathBuf,
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RouterControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterControl")
            .field("socket", &self.socket)
            .finish()
    }
}

impl RouterControl {
    /// Binds the socket (refusing one another router serves), starts the control loop and
    /// returns the routing core for the caller to drive.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// let p = std::env::temp_dir().join(format!("aw-doc-rc-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.agent_count(), 0);
    /// ```
    pub fn start(config: RouterConfig) -> Result<(Self, RoutingCore), ControlError> {
        let (control, mut cores) = Self::start_sharded(RouterConfig {
            shards: 1,
            ..config
        })?;
        let core = cores.pop().expect("one shard");
        Ok((control, core))
    }

    /// [`RouterControl::start`] with `config.shards` routing cores, one per shard, for the
    /// caller to run on a core each. Shards reach each other's agents through [`links`].
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// let p = std::env::temp_dir().join(format!("aw-doc-rcs-{}.sock", std::process::id()));
    /// let (_control, cores) = RouterControl::start_sharded(RouterConfig { shards: 2, ..RouterConfig::new(p) }).unwrap();
    /// assert_eq!(cores.len(), 2);
    /// ```
    pub fn start_sharded(config: RouterConfig) -> Result<(Self, Vec<RoutingCore>), ControlError> {
        let shards = config.shards.clamp(1, ROUTER_SHARDS_MAX);
        let listener = ControlListener::bind(&config.socket, config.allow.clone())?
            .with_versions(config.versions.0, config.versions.1);
        let shared = Arc::new(Shared {
            reloaded: Mutex::new(None),
            defer_deadline_ns: AtomicU64::new(deadline_ns(config.defer_deadline)),
            info: Mutex::new(Vec::new()),
            status_hook: Mutex::new(None),
            started: std::time::Instant::now(),
            registry: Mutex::new(Registry {
                policy: Arc::new(config.policy.clone()),
                ..Registry::default()
            }),
            generation: AtomicU64::new(0),
            stats: (0..shards).map(|_| RouterStats::default()).collect(),
            quiet: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            settled: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            finished: std::sync::atomic::AtomicUsize::new(0),
            cores_started: std::sync::atomic::AtomicUsize::new(0),
            cores_finished: std::sync::atomic::AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            control_wake: Doorbell::new().map_err(ControlError::Io)?,
            endpoint_requests: Mutex::new(Vec::new()),
            removals_requested: Mutex::new(Vec::new()),
            wakes: (0..shards)
                .map(|_| ShardWake::new().map(Arc::new))
                .collect::<Result<_, _>>()
                .map_err(ControlError::Io)?,
            beats: crate::heartbeat::beats(shards),
        });
        let plan = LinkPlan::new(&config, shards);
        // links_out[i][j]: shard i's sender to shard j; links_in[j]: (i, receiver).
        let mut links_out: Vec<Vec<Option<LinkSender>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        let mut links_in: Vec<Vec<LinkReceiver>> = (0..shards).map(|_| Vec::new()).collect();
        for (i, outs) in links_out.iter_mut().enumerate() {
            for (j, out) in outs.iter_mut().enumerate() {
                if i != j {
                    let (tx, rx) = crate::links::link(plan.capacity_bytes, plan.budget_bytes)
                        .map_err(|e| ControlError::Io(std::io::Error::other(e.to_string())))?;
                    *out = Some(tx.waking(shared.wakes[j].clone()));
                    links_in[j].push(rx);
                }
            }
        }
        let mut cmd_txs = Vec::with_capacity(shards);
        let mut cores = Vec::with_capacity(shards);
        for (shard, (outs, ins)) in links_out.into_iter().zip(links_in).enumerate() {
            let (cmd_tx, cmd_rx) = command_queue(COMMANDS_QUEUED_MAX, shared.wakes[shard].clone());
            cmd_txs.push(cmd_tx);
            let mut core = RoutingCore::new(shared.clone(), cmd_rx, shard);
            core.producers.links = outs;
            core.links_in = ins;
            core.deferrals.capacity_bytes = config.defer_capacity_bytes;
            core.deferrals.reserve_bytes = plan.reserve_bytes;
            core.batch_frames = config.batch_frames.clamp(1, ROUTER_BATCH_FRAMES_LIMIT);
            core.lane_budget = lane_batch_frames(core.batch_frames);
            core.deferrals.slow.drop =
                config.slow_subscriber == crate::config::SlowSubscriber::Drop;
            core.deferrals.slow.evict_copies = config.slow_subscriber_evict_copies;
            cores.push(core);
        }
        let control = {
            let config = RouterConfig {
                shards,
                ..config.clone()
            };
            let first_id = config.first_agent_id.max(1);
            let control_loop =
                ControlLoop::new(listener, shared.clone(), cmd_txs, config, first_id)
                    .map_err(ControlError::Io)?;
            std::thread::Builder::new()
                .name("aw-control".into())
                .spawn(move || control_loop.run())
                .map_err(ControlError::Io)?
        };
        let router = Self {
            socket: config.socket.clone(),
            shared,
            control: Some(control),
        };
        // Dead letters whose source is below this were sent in an earlier run (ids never
        // repeat when the daemon persists them): `dlq replay` reads it here.
        router.set_info("agent_ids_from", config.first_agent_id.max(1).to_string());
        Ok((router, cores))
    }

    /// The socket agents connect to.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcsp-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p.clone())).unwrap();
    /// assert_eq!(control.socket_path(), p.as_path());
    /// ```
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// A view of counters and status for other threads.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcob-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let observer = control.observer();
    /// assert_eq!(observer.status().pid, std::process::id());
    /// ```
    pub fn observer(&self) -> RouterObserver {
        RouterObserver {
            shared: self.shared.clone(),
        }
    }

    /// Applies a reloaded configuration (SIGHUP): the allow-list and the authorization
    /// policy, and the deferral deadline for frames deferred from now on. Clients stay
    /// connected unless the new configuration takes away what they hold: the connections of
    /// peers no longer on the allow-list are closed, and agents whose name, capabilities or
    /// subscriptions the new policy refuses are removed (each logged, counted in
    /// `agents_revoked`). Whom agents may send to follows the new policy from the next
    /// table rebuild on.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # use agentwire_router::policy::Policy;
    /// # use agentwire_router::server::AllowList;
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rl-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let deadline = Some(std::time::Duration::from_millis(500));
    /// control.reload(AllowList::current_user(), Policy::open(), deadline);
    /// ```
    pub fn reload(&self, allow: AllowList, policy: Policy, defer_deadline: Option<Duration>) {
        *self.shared.reloaded.lock().expect("reload lock") = Some((allow, policy));
        self.shared.control_wake.ring();
        self.shared
            .defer_deadline_ns
            .store(deadline_ns(defer_deadline), Ordering::Relaxed);
        bump(&self.shared);
    }

    /// Adds (or replaces) a fact shown in status reports, e.g. the metrics address.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcin-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.set_info("dlq", "/var/lib/agentwire/dlq.log");
    /// let info = control.observer().status().info;
    /// assert!(info.contains(&("dlq".to_string(), "/var/lib/agentwire/dlq.log".to_string())));
    /// ```
    pub fn set_info(&self, key: &str, value: impl Into<String>) {
        let mut info = self.shared.info.lock().expect("info lock");
        let value = value.into();
        match info.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => info.push((key.to_string(), value)),
        }
    }

    /// Sets the function that adds the daemon's own parts (partitions, core moves) to every
    /// status report. It runs on the control thread answering the query, with no router
    /// lock held.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rchook-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.set_status_hook(Box::new(|report| report.core_moves.clear()));
    /// assert!(control.observer().status().core_moves.is_empty());
    /// ```
    pub fn set_status_hook(&self, hook: StatusHook) {
        *self.shared.status_hook.lock().expect("status hook lock") = Some(hook);
    }

    /// The router's counters.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcst-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.stats().frames_delivered.load(std::sync::atomic::Ordering::Relaxed), 0);
    /// ```
    pub fn stats(&self) -> &RouterStats {
        &self.shared.stats[0]
    }

    /// One shard's counters (`None` past the last shard).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcss-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(control.shard_stats(0).is_some() && control.shard_stats(1).is_none());
    /// ```
    pub fn shard_stats(&self, shard: usize) -> Option<&RouterStats> {
        self.shared.stats.get(shard)
    }

    /// Live agents.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcac-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.agent_count(), 0);
    /// ```
    pub fn agent_count(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .agents
            .len()
    }

    /// Every shard's duty-cycle count, for a service watchdog ([`crate::heartbeat`]).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rchb-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(control.heartbeats().counts(), vec![0]);
    /// ```
    pub fn heartbeats(&self) -> crate::heartbeat::ShardHeartbeats {
        crate::heartbeat::ShardHeartbeats {
            shared: self.shared.clone(),
        }
    }

    /// Registers an in-process or gateway endpoint with `identity` (see [`crate::endpoint`]):
    /// the router serves its rings like any agent's. Waits for the control loop's answer
    /// (never call it from the control loop itself, e.g. a status hook).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl, endpoint::EndpointKind};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcep-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let identity = agentwire_shm::control::Registration { name: "engine".into(), features: vec![7], ..Default::default() };
    /// let endpoint = control.register_endpoint(identity, EndpointKind::InProcess).unwrap();
    /// assert_eq!(control.agent_count(), 1);
    /// # drop(endpoint);
    /// ```
    pub fn register_endpoint(
        &self,
        identity: Registration,
        kind: EndpointKind,
    ) -> Result<Endpoint, EndpointError> {
        crate::endpoint::register(&self.shared, identity, kind)
    }

    /// A handle that registers endpoints from any thread (a network transport's executor,
    /// say), for as long as the router runs.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl, endpoint::EndpointKind};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcreg-{}.sock", std::process::id()));
    /// let (control, _core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// let registrar = control.endpoint_registrar();
    /// let identity = agentwire_shm::control::Registration { name: "gw".into(), ..Default::default() };
    /// let gw = std::thread::spawn(move || registrar.register(identity, EndpointKind::Gateway))
    ///     .join().unwrap().unwrap();
    /// assert!(gw.id() > 0);
    /// ```
    pub fn endpoint_registrar(&self) -> crate::endpoint::EndpointRegistrar {
        crate::endpoint::EndpointRegistrar {
            shared: self.shared.clone(),
        }
    }

    /// Asks every thread and the routing core to stop: the core marks every segment closed,
    /// control connections close, the socket is removed.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-rcsd-{}.sock", std::process::id()));
    /// let (control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// control.shutdown();
    /// assert!(core.should_stop());
    /// ```
    pub fn shutdown(&self) {
        // SYNC POINT: shutdown. Pairs with the Acquire loads of the control loop and every
        // routing core (`should_stop`, the park's last poll).
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.control_wake.ring();
        // Parked cores look at the flag now, not a park timeout later.
        for wake in self.shared.wakes.iter() {
            wake.notify();
        }
    }
}

impl Drop for RouterControl {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(control) = self.control.take() {
            let _ = control.join();
        }
    }
}

/// Sizes of the links between shards. A link's ring holds the largest frame a segment ring
/// can carry; its in-flight budget is small enough that every destination's deferral can
/// keep room for what all other shards may have in flight to it, plus one record's wrap.
pub(crate) struct LinkPlan {
    pub(crate) capacity_bytes: usize,
    pub(crate) budget_bytes: usize,
    /// Deferral bytes a shard's own senders leave free for link arrivals.
    pub(crate) reserve_bytes: usize,
}

impl LinkPlan {
    pub(crate) fn new(config: &RouterConfig, shards: usize) -> Self {
        if shards < 2 {
            return Self {
                capacity_bytes: 0,
                budget_bytes: 0,
                reserve_bytes: 0,
            };
        }
        let others = shards - 1;
        let defer = config.defer_capacity_bytes;
        let budget_bytes = if defer == 0 {
            LINK_BUDGET_BYTES_MAX
        } else {
            (defer / (4 * others)).clamp(256, LINK_BUDGET_BYTES_MAX)
        };
        Self {
            capacity_bytes: (config.ring_capacity_bytes * 2).clamp(
                agentwire_shm::ring::RING_CAPACITY_MIN_BYTES,
                agentwire_shm::ring::RING_CAPACITY_MAX_BYTES,
            ),
            budget_bytes,
            // In flight from every other shard, plus the largest deferrable record (a
            // quarter of the deferral) lost to a wrap.
            reserve_bytes: others * budget_bytes + defer / 4,
        }
    }
}
