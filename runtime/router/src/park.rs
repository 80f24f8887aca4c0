//! Parking an idle routing core on every doorbell that can give it work.

use crate::config::IDLE_SHARD_PARK_MIN;
use crate::duty_cycle::RoutingCore;
use crate::wake::ShardWake;
use agentwire_shm::doorbell::Doorbell;
use agentwire_shm::idle::Idler;
use agentwire_shm::ring::Consumer;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl RoutingCore {
    /// Idles after a duty cycle that did no work: spins while the idle strategy says spin,
    /// then parks on every agent's tx doorbell and this shard's own doorbell at once. Any
    /// agent's send, a record on a link from another shard, a command (a new agent, a
    /// departure) and shutdown each wake it ([`wake`]); the park timeout bounds how late a
    /// deferral deadline and the heartbeat run. A heartbeat watch's nudge
    /// ([`crate::heartbeat`]) is a post too: a nudged shard runs a duty cycle instead of
    /// parking. Dead letters appended since the last sync are
    /// synced before parking. A shard with no agent and nothing deferred parks at once, for
    /// up to its park timeout or [`IDLE_SHARD_PARK_MIN`], whichever is longer, whatever the
    /// strategy.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-id-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.idle(&mut Idler::new(IdleStrategy::Spin));
    /// ```
    pub fn idle(&mut self, idler: &mut Idler) {
        let unoccupied = self.agents.is_empty() && self.deferrals.frames_now == 0;
        let timeout = match idler.park_due() {
            // Nothing to serve and nothing that waits for a deadline: sleep until rung.
            Some(timeout) if unoccupied => timeout.max(IDLE_SHARD_PARK_MIN),
            None if unoccupied => IDLE_SHARD_PARK_MIN,
            Some(timeout) => timeout,
            None => return,
        };
        // The sync runs every HEARTBEAT_PASSES passes; a parking shard may pass slowly.
        self.flush_dead_letters();
        // Likewise the mirror: a parked shard's slot shows everything it did.
        self.publish_mirror();
        // SYNC POINT: shard park (the flag, then the last poll of links and commands).
        self.wake().arm();
        let mut barrier_needed = false;
        for agent in &mut self.agents {
            barrier_needed |= Consumer::arm_park(&mut agent.tx);
        }
        if barrier_needed {
            agentwire_shm::doorbell::asymmetric_barrier();
        }
        // SYNC POINT: shutdown (the Release store in `RouterControl::shutdown`).
        let posted = self.cmds.pending()
            || self.shared.shutdown.load(Ordering::Acquire)
            || self.shared.beats[self.shard].take_nudge()
            || self.links_in.iter_mut().any(|l| !l.is_empty())
            || self.agents.iter().any(|a| Consumer::any_pending(&a.tx));
        if !posted {
            let mut bells: Vec<&Doorbell> = Vec::with_capacity(self.agents.len() + 1);
            bells.push(self.wake().bell());
            bells.extend(
                self.agents
                    .iter()
                    .filter_map(|a| a.tx.first().and_then(|c| c.doorbell())),
            );
            // An agent without a doorbell cannot wake us: look again soon.
            let timeout = if bells.len() < self.agents.len() + 1 {
                timeout.min(Duration::from_micros(50))
            } else {
                timeout
            };
            agentwire_shm::doorbell::wait_any(&bells, timeout);
        }
        self.wake().disarm();
    }

    /// How other threads wake this core when it is parked (links, commands, shutdown).
    pub(crate) fn wake(&self) -> &ShardWake {
        &self.shared.wakes[self.shard]
    }
}
