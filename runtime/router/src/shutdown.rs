//! Shutdown of a routing core: stop accepting (CLOSING), drain what was committed, give up
//! on what cannot be routed (dead letters or drops, each nacked, across shards in two
//! barriers), close, and log the dead-lettered and dropped frames apart.

use crate::config::{DRAIN_PASSES_MAX, SHUTDOWN_WAIT};
use crate::duty_cycle::RoutingCore;
use crate::give_up::{GiveUp, GivenUp};
use crate::links::LinkReceiver;
use agentwire_shm::ring::Consumer;
use agentwire_shm::segment::state;
use agentwire_shm::wire::FrameHeader;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl RoutingCore {
    /// Syncs the dead letters appended since the last sync, if any.
    pub(crate) fn flush_dead_letters(&mut self) {
        self.dead_letters.flush_unflushed();
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

    /// At shutdown: marks every served segment closing (agents' sends from then on fail with
    /// `Disconnected`), routes what was committed before ([`RoutingCore::drain`]), gives up
    /// on what could not be routed (dead letters and nacks), then marks every segment
    /// closed. Every frame an agent committed while its segment was active is delivered,
    /// dead-lettered or dropped, and a frame not delivered is nacked. Logs how many frames
    /// were dead-lettered and how many dropped while shutting down, apart. Returns the
    /// frames routed while draining.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-fin-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.finish(), 0);
    /// ```
    pub fn finish(&mut self) -> usize {
        let before = self.given_up_so_far();
        self.begin_closing();
        let mut routed = self.drain();
        let sharded = !self.links_in.is_empty();
        if sharded {
            // Every shard stops taking frames from its agents before any settles: from here
            // on links carry only what was forwarded before, and replies.
            self.shards_barrier();
        }
        routed += self.settle();
        if sharded {
            // Nobody writes a link after this barrier: take the last replies.
            self.shards_barrier();
            self.shutdown_forced = true;
            self.drain_links_to_empty();
        }
        self.dead_letters.flush();
        self.close();
        self.publish_mirror();
        let after = self.given_up_so_far();
        let (dead_lettered, dropped) = (after.0 - before.0, after.1 - before.1);
        // Two counts, never one: a dropped frame was not kept anywhere.
        if dropped > 0 {
            tracing::warn!(
                dead_lettered,
                dropped,
                shard = self.shard,
                "at shutdown, frames the router could not route: dead-lettered (kept in the \
                 dead-letter queue) and dropped (not kept: the queue refused them or there is \
                 none); each sender was nacked where its ring had room"
            );
        } else if dead_lettered > 0 {
            tracing::info!(
                dead_lettered,
                dropped,
                shard = self.shard,
                "at shutdown, frames the router could not route were dead-lettered (kept in \
                 the dead-letter queue) and their senders nacked"
            );
        }
        // SYNC POINT: cores finished. Pairs with the control loop's Acquire load: every
        // segment is marked closed before it drops the connections.
        self.shared.cores_finished.fetch_add(1, Ordering::Release);
        routed
    }

    /// This shard's (frames dead-lettered, frames dropped) so far.
    fn given_up_so_far(&self) -> (u64, u64) {
        let stats = &self.shared.stats[self.shard];
        (
            stats.frames_dead_lettered.load(Ordering::Relaxed),
            stats.frames_dropped.load(Ordering::Relaxed),
        )
    }

    /// Gives up on everything the drain could not route (frames still in senders' lanes, in
    /// deferrals, in links): each is dead-lettered or dropped (counted), and its sender
    /// nacked. A nack waits for room in its sender's ring or link (senders keep reading
    /// until their segment is closed), and a frame for a busy dead-letter queue waits for
    /// it, until every shard is done or [`SHUTDOWN_WAIT`] passes; then what is left is given
    /// up on even if its nack is lost (counted as a dropped reply) or the queue is still
    /// busy (dropped). Returns the records taken from links.
    fn settle(&mut self) -> usize {
        let shared = self.shared.clone();
        let sharded = !self.links_in.is_empty();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut routed = 0;
        loop {
            self.give_up_committed();
            if sharded {
                routed += self.drain_links(true, true);
            }
            self.service_deferrals(true);
            let done = self.deferrals.waiting.is_empty()
                && self
                    .agents
                    .iter_mut()
                    .all(|a| a.tx.iter_mut().all(Consumer::is_empty))
                && self.links_in.iter_mut().all(LinkReceiver::is_empty);
            if !sharded && done {
                break;
            }
            // SYNC POINT: shard settled. Pairs with the Acquire loads of the other shards below.
            shared.settled[self.shard].store(done, Ordering::Release);
            // SYNC POINT: shard settled (the Release stores of every shard above).
            if done && shared.settled.iter().all(|q| q.load(Ordering::Acquire)) {
                break;
            }
            if Instant::now() >= deadline {
                self.shutdown_forced = true;
                self.give_up_committed();
                self.service_deferrals(true);
                break;
            }
            std::thread::yield_now();
        }
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

    /// Marks every served segment [`state::CLOSING`], then a barrier: a sender that did not
    /// see CLOSING after publishing a frame published it before the barrier, so the drain
    /// that follows sees it (Dekker, with the client's publish then load of the state).
    fn begin_closing(&mut self) {
        for agent in &self.agents {
            // SYNC POINT: closing. Pairs with the client's load of the state after its
            // publish (`Agent::confirm`); the barrier below orders it before the drain's
            // loads of the tails.
            let state_word = &agent.segment.control().state.0;
            state_word.store(state::CLOSING, Ordering::Release);
        }
        // Senders on the fenced protocol paid a full fence in their publish: this pairs
        // with it. Senders on the asymmetric protocol paid nothing: the membarrier runs a
        // full barrier on their CPUs.
        std::sync::atomic::fence(Ordering::SeqCst);
        agentwire_shm::doorbell::asymmetric_barrier();
    }

    /// Gives up on every frame still in a served agent's tx lanes: dead-lettered or dropped
    /// (counted), its sender nacked. Returns the frames given up on.
    fn give_up_committed(&mut self) -> usize {
        let Self {
            agents,
            producers,
            dead_letters,
            shared,
            shard,
            shutdown_forced,
            ..
        } = self;
        let stats = &shared.stats[*shard];
        let mut given_up = 0;
        for agent in agents.iter_mut() {
            let (owner, control) = (agent.agent_id, agent.segment.control());
            let remotes = agent.remotes.as_slice();
            for lane in agent.tx.iter_mut() {
                let mut give_up = GiveUp {
                    producers,
                    dead_letters,
                    stats,
                    shutting_down: true,
                    forced: *shutdown_forced,
                };
                let read = lane.read(usize::MAX, |frame| {
                    let Some(header) = FrameHeader::peek(frame) else {
                        return ControlFlow::Continue(());
                    };
                    let claimed = header.source();
                    let source = if remotes.binary_search(&claimed).is_ok() {
                        claimed
                    } else {
                        owner
                    };
                    let given = GivenUp {
                        dest: header.destination(),
                        gone: false,
                        frame,
                        source,
                        correlation: header.correlation(),
                        source_control: Some(control),
                    };
                    let flow = give_up.frame(&given);
                    given_up += usize::from(flow.is_continue());
                    flow
                });
                if let Err(e) = read {
                    tracing::warn!(agent_id = owner, "at shutdown: {e}");
                }
            }
        }
        producers.publish();
        given_up
    }

    /// Waits (at most [`SHUTDOWN_WAIT`]) until every shard reached the same barrier.
    fn shards_barrier(&mut self) {
        self.barriers_passed += 1;
        let shared = self.shared.clone();
        // SYNC POINT: shards finished. Pairs with the Acquire loads below on every shard.
        shared.finished.fetch_add(1, Ordering::AcqRel);
        let everyone = shared.stats.len() * self.barriers_passed;
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        // SYNC POINT: shards finished (the AcqRel adds of every shard).
        while shared.finished.load(Ordering::Acquire) < everyone && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// Takes records from the links until they are empty, giving up on frames that fit
    /// nowhere. Returns the records taken.
    fn drain_links_to_empty(&mut self) -> usize {
        let mut routed = 0;
        loop {
            let taken = self.drain_links(true, true);
            routed += taken;
            if taken == 0 {
                return routed;
            }
        }
    }
}
