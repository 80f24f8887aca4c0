//! What a service manager is told about the running daemon: a [`ServiceView`] that another
//! thread holds (the `agentwire serve` notifier speaks systemd's notify protocol with it):
//! a one-line summary ([`ServiceSnapshot`]: agents, frames taken in, engines running), the
//! router shards' heartbeats for the watchdog ([`agentwire_router::heartbeat`]), and the
//! test-only hook that wedges one router shard ([`WedgeHook`]).
//!
//! ```no_run
//! use agentwire_runtime::{config::Config, daemon::Daemon};
//! let daemon = Daemon::start(&Config::embedded_default(), "/tmp/aw.sock".into())?;
//! let view = daemon.service_view();
//! println!("{}", view.snapshot().line(None));
//! # Ok::<(), agentwire_runtime::daemon::DaemonError>(())
//! ```

use crate::stream_engine::StreamHandle;
use agentwire_router::heartbeat::ShardHeartbeats;
use agentwire_router::RouterObserver;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The environment variable that arms [`WedgeHook`]: the index of the router shard to wedge.
/// Test-only: read once at start; unset in production, where nothing can wedge a shard.
pub const WEDGE_ENV: &str = "AGENTWIRE_TEST_WEDGE_ROUTER_SHARD";

/// A test hook that makes one router shard stop running duty cycles, as a shard stuck in a
/// loop or a blocking call would, so that a test sees the watchdog withheld. It exists only
/// when [`WEDGE_ENV`] names a shard when the daemon starts (agents cannot set a daemon's
/// environment); `agentwire serve` then fires it on SIGUSR2. The wedged shard still obeys
/// shutdown, so the daemon stops cleanly.
///
/// ```
/// use agentwire_runtime::service::WedgeHook;
/// let hook = WedgeHook::new(0);
/// assert!(!hook.fired() && !hook.wedged());
/// hook.fire();
/// assert!(hook.fired());
/// ```
#[derive(Debug, Clone)]
pub struct WedgeHook {
    shard: usize,
    /// Set by [`WedgeHook::fire`]; the shard's loop looks at it after each duty cycle.
    fired: Arc<AtomicBool>,
    /// Set by the shard once it stopped running duty cycles.
    wedged: Arc<AtomicBool>,
}

impl WedgeHook {
    /// A hook for `shard`, not fired.
    ///
    /// ```
    /// assert_eq!(agentwire_runtime::service::WedgeHook::new(1).shard(), 1);
    /// ```
    pub fn new(shard: usize) -> Self {
        Self {
            shard,
            fired: Arc::default(),
            wedged: Arc::default(),
        }
    }

    /// The hook [`WEDGE_ENV`] asks for, if it names one of `shards` shards; a value that is
    /// not a shard index is logged and ignored.
    ///
    /// ```
    /// // Unset in a normal environment.
    /// assert!(agentwire_runtime::service::WedgeHook::from_env(1).is_none());
    /// ```
    pub fn from_env(shards: usize) -> Option<Self> {
        let value = std::env::var(WEDGE_ENV).ok()?;
        match value.trim().parse::<usize>() {
            Ok(shard) if shard < shards => {
                tracing::warn!(
                    shard,
                    "test hook armed ({WEDGE_ENV}): SIGUSR2 wedges router shard {shard}"
                );
                Some(Self::new(shard))
            }
            _ => {
                tracing::error!(
                    "{WEDGE_ENV}={value:?} names no router shard (0 to {}); ignored",
                    shards.saturating_sub(1)
                );
                None
            }
        }
    }

    /// The shard it wedges.
    ///
    /// ```
    /// assert_eq!(agentwire_runtime::service::WedgeHook::new(0).shard(), 0);
    /// ```
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Wedges the shard after its current duty cycle.
    ///
    /// ```
    /// let hook = agentwire_runtime::service::WedgeHook::new(0);
    /// hook.fire();
    /// assert!(hook.fired());
    /// ```
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Relaxed);
    }

    /// Whether [`WedgeHook::fire`] was called (the shard's loop polls this).
    ///
    /// ```
    /// assert!(!agentwire_runtime::service::WedgeHook::new(0).fired());
    /// ```
    #[inline]
    pub fn fired(&self) -> bool {
        // Relaxed: a flag that only ever goes from false to true, publishing nothing.
        self.fired.load(Ordering::Relaxed)
    }

    /// Whether the shard stopped running duty cycles: its last heartbeat was stored before
    /// this turned true, so a heartbeat read after this returns true never moves again.
    ///
    /// ```
    /// assert!(!agentwire_runtime::service::WedgeHook::new(0).wedged());
    /// ```
    pub fn wedged(&self) -> bool {
        // SYNC POINT: test wedge (the Release store in `hold`).
        self.wedged.load(Ordering::Acquire)
    }

    /// The shard's side: stops running duty cycles (sleeping in short steps, so the
    /// executor's thread is as stuck as a blocking call would leave it) until `should_stop`
    /// says the daemon stops.
    pub(crate) fn hold(&self, should_stop: impl Fn() -> bool) {
        tracing::warn!(shard = self.shard, "test hook: router shard wedged");
        // SYNC POINT: test wedge. Orders the shard's last heartbeat before the flag; pairs
        // with the Acquire load in `wedged`.
        self.wedged.store(true, Ordering::Release);
        while !should_stop() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The daemon as its service manager sees it, held by another thread
/// ([`crate::daemon::Daemon::service_view`]).
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub(crate) observer: RouterObserver,
    pub(crate) heartbeats: ShardHeartbeats,
    pub(crate) router_cpus: Vec<usize>,
    pub(crate) stream: Option<StreamHandle>,
    pub(crate) wedge: Option<WedgeHook>,
}

impl ServiceView {
    /// Agents, frames taken in so far, and the engines running now.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// assert_eq!(d.service_view().snapshot().agents, 0);
    /// ```
    pub fn snapshot(&self) -> ServiceSnapshot {
        let running = |h: &StreamHandle| {
            h.counters()
                .iter()
                .any(|(k, v)| k == "stream.running" && *v == 1)
        };
        ServiceSnapshot {
            agents: self.observer.agent_count(),
            frames_in: self.observer.counter("frames_in").unwrap_or(0),
            engines_running: self
                .stream
                .as_ref()
                .filter(|h| running(h))
                .map(|_| vec![crate::stream_engine::PARTITION])
                .unwrap_or_default(),
        }
    }

    /// Every router shard's duty-cycle count, for the watchdog.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// let watch = agentwire_router::heartbeat::HeartbeatWatch::new(d.service_view().heartbeats());
    /// ```
    pub fn heartbeats(&self) -> ShardHeartbeats {
        self.heartbeats.clone()
    }

    /// The CPU of each router shard, shard 0 first.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// assert_eq!(d.service_view().router_cpus(), d.router_cpus());
    /// ```
    pub fn router_cpus(&self) -> &[usize] {
        &self.router_cpus
    }

    /// The test hook, when [`WEDGE_ENV`] armed it at start.
    ///
    /// ```no_run
    /// # let d = agentwire_runtime::daemon::Daemon::start(&agentwire_runtime::config::Config::embedded_default(), "/tmp/aw.sock".into()).unwrap();
    /// assert!(d.service_view().wedge_hook().is_none());
    /// ```
    pub fn wedge_hook(&self) -> Option<&WedgeHook> {
        self.wedge.as_ref()
    }
}

/// What the daemon is doing, for one `STATUS=` line.
///
/// ```
/// use agentwire_runtime::service::ServiceSnapshot;
/// let s = ServiceSnapshot { agents: 3, frames_in: 5_000, engines_running: vec!["streaming"] };
/// let before = ServiceSnapshot { frames_in: 1_000, ..s.clone() };
/// let rate = s.rate_since(&before, std::time::Duration::from_secs(2));
/// assert_eq!(s.line(Some(rate)), "serving: 3 agents, 2000 msgs/s, engines running: streaming");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Registered agents and endpoints (an engine's endpoint counts).
    pub agents: usize,
    /// Frames taken from agents' tx rings since start, all shards.
    pub frames_in: u64,
    /// Engines running now (today only `streaming` exists).
    pub engines_running: Vec<&'static str>,
}

impl ServiceSnapshot {
    /// Messages per second from `before` to this snapshot, `elapsed` apart.
    ///
    /// ```
    /// # use agentwire_runtime::service::ServiceSnapshot;
    /// let a = ServiceSnapshot { agents: 0, frames_in: 10, engines_running: vec![] };
    /// assert_eq!(a.rate_since(&a, std::time::Duration::ZERO), 0);
    /// ```
    pub fn rate_since(&self, before: &ServiceSnapshot, elapsed: Duration) -> u64 {
        let frames = self.frames_in.saturating_sub(before.frames_in);
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            (frames as f64 / secs).round() as u64
        } else {
            0
        }
    }

    /// The line, with the rate when one was measured.
    ///
    /// ```
    /// # use agentwire_runtime::service::ServiceSnapshot;
    /// let s = ServiceSnapshot { agents: 1, frames_in: 0, engines_running: vec![] };
    /// assert_eq!(s.line(None), "serving: 1 agent, engines running: none");
    /// ```
    pub fn line(&self, msgs_per_s: Option<u64>) -> String {
        let agents = match self.agents {
            1 => "1 agent".to_string(),
            n => format!("{n} agents"),
        };
        let rate = msgs_per_s.map_or(String::new(), |r| format!(", {r} msgs/s"));
        let engines = if self.engines_running.is_empty() {
            "none".to_string()
        } else {
            self.engines_running.join(", ")
        };
        format!("serving: {agents}{rate}, engines running: {engines}")
    }
}
