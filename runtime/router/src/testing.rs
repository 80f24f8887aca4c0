//! A minimal in-process router for tests and demos: the shared routing core ([`crate::RoutingCore`]) driven
//! by one plain thread with [`agentwire_shm::idle::IdleStrategy`] spin-then-park. The daemon
//! (runtime/, issue 3) drives the same core from pinned executors; use this one where a test
//! needs a router inside the test process.
//!
//! ```
//! use agentwire_shm::client::Agent;
//! use agentwire_router::testing::{TestRouter, TestRouterConfig};
//! let dir = std::env::temp_dir().join(format!("aw-doc-router-{}", std::process::id()));
//! let router = TestRouter::start(TestRouterConfig::new(dir.join("r.sock"))).unwrap();
//! let mut a = Agent::builder("a").socket(router.socket_path()).connect().unwrap();
//! let mut b = Agent::builder("b").socket(router.socket_path()).connect().unwrap();
//! a.send(b.id(), b"hi").unwrap();
//! let msg = b.recv(Some(std::time::Duration::from_secs(5))).unwrap().unwrap();
//! assert_eq!(msg.payload(), b"hi");
//! ```

use crate::sink::DeadLetterSink;
use crate::RouterControl;
pub use crate::{RouterConfig as TestRouterConfig, RouterStats, ROUTER_BATCH_FRAMES_DEFAULT};
use agentwire_shm::control::ControlError;
use std::path::Path;
use std::thread::JoinHandle;

/// The running test router. Dropping it stops it.
#[derive(Debug)]
pub struct TestRouter {
    control: RouterControl,
    /// One thread per shard.
    routers: Vec<JoinHandle<()>>,
}

impl TestRouter {
    /// Binds the socket and starts the accept and routing threads.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// let p = std::env::temp_dir().join(format!("aw-doc-start-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// r.stop();
    /// ```
    pub fn start(config: TestRouterConfig) -> Result<Self, ControlError> {
        Self::start_inner(config, None)
    }

    /// Like [`TestRouter::start`], with a dead-letter sink on every shard: `sink_for_shard`
    /// is called once per shard, shard 0 first (the daemon gives each shard its own handle
    /// on one queue file). Frames past [`TestRouterConfig::defer_deadline`] and what is
    /// left at shutdown go to the sinks.
    ///
    /// ```
    /// use agentwire_router::sink::{DeadLetterSink, SinkRefusal};
    /// use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// use agentwire_shm::control::NackReason;
    /// struct Discard;
    /// impl DeadLetterSink for Discard {
    ///     fn accept(&mut self, _: NackReason, _: &[u8]) -> Result<u64, SinkRefusal> {
    ///         Ok(1)
    ///     }
    /// }
    /// let p = std::env::temp_dir().join(format!("aw-doc-sink-{}.sock", std::process::id()));
    /// let r = TestRouter::start_with_dead_letters(TestRouterConfig::new(p), |_| Box::new(Discard))
    ///     .unwrap();
    /// r.stop();
    /// ```
    pub fn start_with_dead_letters(
        config: TestRouterConfig,
        sink_for_shard: impl FnMut(usize) -> Box<dyn DeadLetterSink>,
    ) -> Result<Self, ControlError> {
        Self::start_inner(config, Some(Box::new(sink_for_shard)))
    }

    #[allow(clippy::type_complexity)]
    fn start_inner(
        config: TestRouterConfig,
        mut sink_for_shard: Option<Box<dyn FnMut(usize) -> Box<dyn DeadLetterSink> + '_>>,
    ) -> Result<Self, ControlError> {
        let idle = config.idle;
        let (control, cores) = RouterControl::start_sharded(config)?;
        let mut routers = Vec::new();
        for (shard, mut core) in cores.into_iter().enumerate() {
            if let Some(make) = sink_for_shard.as_mut() {
                core.set_dead_letters(make(shard));
            }
            let router = std::thread::Builder::new()
                .name(format!("aw-test-router-{shard}"))
                .spawn(move || core.run(idle))
                .map_err(ControlError::Io)?;
            routers.push(router);
        }
        Ok(Self { control, routers })
    }

    /// The socket agents connect to.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-sp-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig::new(p.clone())).unwrap();
    /// assert_eq!(r.socket_path(), p.as_path());
    /// ```
    pub fn socket_path(&self) -> &Path {
        self.control.socket_path()
    }

    /// The router's counters.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-st-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// assert_eq!(r.stats().frames_delivered.load(std::sync::atomic::Ordering::Relaxed), 0);
    /// ```
    pub fn stats(&self) -> &RouterStats {
        self.control.stats()
    }

    /// One shard's counters (`None` past the last shard).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-sst-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig { shards: 2, ..TestRouterConfig::new(p) }).unwrap();
    /// assert!(r.shard_stats(1).is_some());
    /// ```
    pub fn shard_stats(&self, shard: usize) -> Option<&RouterStats> {
        self.control.shard_stats(shard)
    }

    /// Live agents.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ag-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// assert_eq!(r.agent_count(), 0);
    /// ```
    pub fn agent_count(&self) -> usize {
        self.control.agent_count()
    }

    /// Stops the router: marks every segment closed, closes every control connection, joins
    /// the threads and removes the socket.
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-stop-{}.sock", std::process::id()));
    /// TestRouter::start(TestRouterConfig::new(p)).unwrap().stop();
    /// ```
    pub fn stop(self) {}

    /// The router's control handle (endpoints, reload, status).
    ///
    /// ```
    /// # use agentwire_router::testing::{TestRouter, TestRouterConfig};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ctl-{}.sock", std::process::id()));
    /// let r = TestRouter::start(TestRouterConfig::new(p)).unwrap();
    /// assert_eq!(r.control().agent_count(), 0);
    /// ```
    pub fn control(&self) -> &RouterControl {
        &self.control
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.control.shutdown();
        for router in self.routers.drain(..) {
            let _ = router.join();
        }
        // `control` drops next: joins the accept thread, which joins the control threads
        // and removes the socket.
    }
}
