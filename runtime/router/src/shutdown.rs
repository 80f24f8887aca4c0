//! Shutdown of a routing core: drain what is committed, dead-letter what waits, close.

use crate::config::{DRAIN_PASSES_MAX, SHUTDOWN_WAIT};
use crate::duty_cycle::RoutingCore;
use crate::links::LinkReceiver;
use agentwire_shm::segment::state;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl RoutingCore {
    /// Syncs the dead letters appended since the last sync, if any.
    pub(crate) fn flush_dead_letters(&mut self) {
        if self.dead_letters_unflushed {
            self.dead_letters_unflushed = false;
            if let Some(sink) = self.dead_letters.as_mut() {
                sink.flush();
            }
        }
    }

    /// Marks every served segment closed (agents see it and reconnect).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-cl-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.close();
    /// ```
    pub fn close(&mut self) {
        for agent in &self.agents {
            // SYNC POINT: segment state. Pairs with the client's Acquire load of the state.
            agent
                .segment
                .control()
                .state
                .0
                .store(state::CLOSED, Ordering::Release);
        }
    }

    /// At shutdown: routes what is already committed ([`RoutingCore::drain`]), then marks
    /// every segment closed. Returns the frames routed while draining.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-fin-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.finish(), 0);
    /// ```
    pub fn finish(&mut self) -> usize {
        let mut routed = self.drain();
        if !self.links_in.is_empty() {
            // Every shard stops routing before any takes its last look at its links, so
            // nothing forwarded is left behind in one.
            let shared = self.shared.clone();
            // SYNC POINT: shards finished. Pairs with the Acquire loads below on every shard.
            shared.finished.fetch_add(1, Ordering::AcqRel);
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            // SYNC POINT: shards finished (the AcqRel adds of every shard).
            while shared.finished.load(Ordering::Acquire) < shared.stats.len()
                && Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            loop {
                let taken = self.drain_links(true);
                routed += taken;
                if taken == 0 {
                    break;
                }
            }
        }
        // What still waits for a full destination goes to the dead-letter sink (or is
        // dropped and counted without one), so the shutdown loses nothing it could keep.
        let given_up = self.service_deferrals(true);
        if given_up > 0 {
            tracing::info!(
                given_up,
                "frames still deferred at shutdown were dead-lettered"
            );
        }
        if let Some(sink) = self.dead_letters.as_mut() {
            sink.flush();
        }
        self.close();
        routed
    }

    /// At shutdown: routes what is already committed in the tx rings, for at most
    /// [`DRAIN_PASSES_MAX`] duty cycles (a destination that stays full cannot hold the
    /// shutdown hostage). Returns the frames routed.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-dr-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.drain(), 0);
    /// ```
    pub fn drain(&mut self) -> usize {
        let shared = self.shared.clone();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut routed = 0;
        let mut passes = 0;
        while passes < DRAIN_PASSES_MAX {
            let work = self.do_work();
            routed += work;
            if work > 0 {
                passes += 1;
                // SYNC POINT: shard quiet. Pairs with the Acquire loads of the other shards below.
                shared.quiet[self.shard].store(false, Ordering::Release);
                continue;
            }
            let links_empty = self.links_in.iter_mut().all(LinkReceiver::is_empty);
            // SYNC POINT: shard quiet.
            shared.quiet[self.shard].store(links_empty, Ordering::Release);
            // Other shards may still forward frames here: quiet only when all are.
            // SYNC POINT: shard quiet (the Release stores of every shard above).
            if links_empty && shared.quiet.iter().all(|q| q.load(Ordering::Acquire)) {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::yield_now();
        }
        routed
    }
}
