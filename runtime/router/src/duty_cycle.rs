//! [`RoutingCore`]: the data side of one shard and its duty cycle.

use crate::commands::{CommandReceiver, NewAgent, RouterCmd};
use crate::config::{
    BUSY_SAMPLE_PASSES, HEARTBEAT_PASSES, LANE_BATCH_FRAMES, ROUTER_BATCH_FRAMES_DEFAULT,
};
use crate::deferral::Deferral;
use crate::deferred::Deferrals;
use crate::give_up::DeadLetters;
use crate::lanes::lane_order;
use crate::links::LinkReceiver;
use crate::outbox::Outboxes;
use crate::route::{route_frame, Deadline, RouteContext};
use crate::shared::Shared;
use crate::sink::DeadLetterSink;
use crate::stats::{batch_bucket, count};
use crate::table::{rebuild_table, RoutingTable};
use agentwire_shm::idle::{IdleStrategy, Idler};
use agentwire_shm::ring::Consumer;
use agentwire_shm::segment::{state, Segment, TX_LANES};
use agentwire_shm::wire::FrameHeader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct DataAgent {
    pub(crate) agent_id: u32,
    /// Tx lanes, index = priority class.
    pub(crate) tx: Vec<Consumer>,
    pub(crate) segment: Segment,
    /// The agent left: nothing more is delivered to it, but frames it committed before
    /// leaving are still routed (they were accepted) before its segment is reclaimed.
    pub(crate) leaving: bool,
    /// Its ring failed validation: dropped at the end of this duty cycle.
    pub(crate) corrupt: bool,
    /// For a gateway endpoint: the remote agents behind it, sorted. Its frames keep the
    /// source they carry when it is one of these; any other source is stamped with the
    /// gateway's own id, like every agent's.
    pub(crate) remotes: Vec<u32>,
    /// What was taken from its tx rings, for its mirror slot.
    pub(crate) counters: crate::agent_mirror::AgentCounters,
    /// Its name as mirror slot words ([`crate::agent_mirror::pack_name`]).
    pub(crate) name: [u64; crate::agent_mirror::NAME_WORDS],
    /// The mirror slot lent to it, if any ([`crate::agent_mirror`]).
    pub(crate) mirror_slot: Option<u32>,
    /// Frames were taken from it since its slot's last publish.
    pub(crate) mirror_dirty: bool,
}

/// The data side of a router: every agent's tx consumer and rx producer, the routing tables,
/// and one duty cycle ([`RoutingCore::do_work`]). It lives on one thread or executor.
pub struct RoutingCore {
    pub(crate) shared: Arc<Shared>,
    /// This core's shard index.
    pub(crate) shard: usize,
    /// Links from every other shard.
    pub(crate) links_in: Vec<LinkReceiver>,
    pub(crate) cmds: CommandReceiver,
    pub(crate) agents: Vec<DataAgent>,
    pub(crate) producers: Outboxes,
    pub(crate) deferrals: Deferrals,
    pub(crate) table: RoutingTable,
    pub(crate) seen_generation: u64,
    pub(crate) needs_refresh: bool,
    pub(crate) passes: u64,
    /// The dead-letter sink, if any, with its sync and backoff state.
    pub(crate) dead_letters: DeadLetters,
    pub(crate) defer_deadline_ns: Option<u64>,
    /// Lane scheduler state: smooth weighted round robin counters, and which classes had
    /// frames left over (blocked or out of budget) in the last duty cycle.
    pub(crate) lane_current: [i64; TX_LANES],
    pub(crate) lane_backlog: [bool; TX_LANES],
    /// Frames per read ([`RouterConfig::batch_frames`]).
    pub(crate) batch_frames: usize,
    /// Frames per class per agent per duty cycle ([`lane_batch_frames`]).
    pub(crate) lane_budget: [usize; TX_LANES],
    /// One bit per copy of the frame being placed (see `route::Placement`), sized at table
    /// rebuild for the largest fan-out.
    pub(crate) direct_bits: Vec<u64>,
    /// Shutdown barriers this core passed (see `shutdown`).
    pub(crate) barriers_passed: usize,
    /// Past the shutdown's time bound: frames are given up on even when their sender's nack
    /// cannot be placed (it is counted as a dropped reply).
    pub(crate) shutdown_forced: bool,
    /// Agents dropped for a corrupt ring: a peer can make its rings corrupt and register
    /// again as often as it likes, so the line is rate-limited (`rings_corrupt` counts all).
    pub(crate) corrupt_log: crate::gate::RefusalLog,
    /// This shard's slot of the stats segment, if the daemon gave it one ([`crate::mirror`]).
    pub(crate) mirror: Option<agentwire_shm::stats_segment::SlotWriter>,
    /// When the mirror was last published, and whether the shard worked since.
    pub(crate) mirror_state: crate::mirror::MirrorSchedule,
    /// Slots this shard lends its agents ([`crate::agent_mirror`]).
    pub(crate) agent_slots: crate::agent_mirror::AgentSlots,
}

impl std::fmt::Debug for RoutingCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingCore")
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl RoutingCore {
    pub(crate) fn new(shared: Arc<Shared>, cmds: CommandReceiver, shard: usize) -> Self {
        Self {
            shared,
            shard,
            links_in: Vec::new(),
            cmds,
            agents: Vec::new(),
            producers: Outboxes {
                // Made now, not on the first nack of a duty cycle.
                nack_encoder: Some(Box::default()),
                ..Outboxes::default()
            },
            deferrals: Deferrals::default(),
            table: RoutingTable::default(),
            seen_generation: u64::MAX,
            needs_refresh: false,
            passes: 0,
            dead_letters: DeadLetters::default(),
            defer_deadline_ns: None,
            lane_current: [0; TX_LANES],
            lane_backlog: [false; TX_LANES],
            batch_frames: ROUTER_BATCH_FRAMES_DEFAULT,
            lane_budget: LANE_BATCH_FRAMES,
            direct_bits: vec![0; 1],
            barriers_passed: 0,
            shutdown_forced: false,
            corrupt_log: Default::default(),
            mirror: None,
            mirror_state: Default::default(),
            agent_slots: Default::default(),
        }
    }

    /// Gives the core a dead-letter sink: deferred frames past the configured deadline (and
    /// frames still deferred at shutdown) go there and their senders are nacked with
    /// `DestinationFull`; a frame the sink refuses for good (sender's quota, full) is dropped,
    /// counted and nacked `DeadLetterRefused` (see [`crate::sink::SinkRefusal`]). Without a
    /// sink deferred frames wait for as long as it takes.
    ///
    /// ```
    /// # use agentwire_router::{DeadLetterSink, RouterConfig, RouterControl};
    /// # use agentwire_shm::control::NackReason;
    /// struct Drop_;
    /// impl DeadLetterSink for Drop_ {
    ///     fn accept(&mut self, _: NackReason, _: &[u8]) -> Result<u64, agentwire_router::sink::SinkRefusal> { Ok(0) }
    /// }
    /// # let p = std::env::temp_dir().join(format!("aw-doc-sdl-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// core.set_dead_letters(Box::new(Drop_));
    /// ```
    pub fn set_dead_letters(&mut self, sink: Box<dyn DeadLetterSink>) {
        self.dead_letters.set(sink, self.shared.clone());
    }

    /// Whether the control side asked the router to stop.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ss-{}.sock", std::process::id()));
    /// let (_control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert!(!core.should_stop());
    /// ```
    pub fn should_stop(&self) -> bool {
        // SYNC POINT: shutdown (the Release store in `RouterControl::shutdown`).
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Agents whose rings this core serves (including departing ones still being drained).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-ac-{}.sock", std::process::id()));
    /// let (_control, core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.agents_served(), 0);
    /// ```
    pub fn agents_served(&self) -> usize {
        self.agents.len()
    }

    /// Applies queued registrations and departures; true if there were any. The routing
    /// table is built from the registry *and* the set of rings this core holds, so a change
    /// here must rebuild it even when the registry generation was already seen (an agent's
    /// registry entry can be seen before its Add command arrives).
    pub(crate) fn take_commands(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.cmds.try_recv() {
                Some(RouterCmd::Add(new)) => {
                    let NewAgent {
                        agent_id,
                        congested,
                        tx,
                        rx,
                        segment,
                        deferral,
                        name,
                    } = *new;
                    let mirror_slot = self.agent_slots.lend();
                    self.producers.insert(agent_id, rx);
                    self.producers.set_mirror_slot(agent_id, mirror_slot);
                    if let Some(deferral) = deferral {
                        self.deferrals.insert(agent_id, deferral);
                    }
                    self.deferrals.congested.insert(agent_id, congested);
                    self.agents.push(DataAgent {
                        agent_id,
                        tx,
                        segment,
                        leaving: false,
                        corrupt: false,
                        remotes: Vec::new(),
                        counters: Default::default(),
                        name,
                        mirror_slot,
                        mirror_dirty: true,
                    });
                }
                Some(RouterCmd::Remove { agent_id }) => {
                    self.producers.remove(agent_id);
                    self.deferrals.slow.behind.remove(&agent_id);
                    self.deferrals.congested.remove(&agent_id);
                    // Frames still waiting for it are given up on at the next service.
                    if self
                        .deferrals
                        .by_destination
                        .get(&agent_id)
                        .is_some_and(Deferral::is_empty)
                    {
                        self.deferrals.by_destination.remove(&agent_id);
                    }
                    if let Some(agent) = self.agents.iter_mut().find(|a| a.agent_id == agent_id) {
                        agent.leaving = true;
                        // SYNC POINT: segment state. Pairs with the client's Acquire load of the state.
                        agent
                            .segment
                            .control()
                            .state
                            .0
                            .store(state::CLOSED, Ordering::Release);
                    }
                }
                None => return changed,
            }
            changed = true;
        }
    }

    /// One duty cycle: take in registrations and departures, refresh tables if the registry
    /// changed, route up to [`RouterConfig::batch_frames`] frames from every agent, reclaim
    /// drained departed agents. Returns the frames handled (at least 1 while a frame waits
    /// for a table refresh, so the caller does not idle).
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-dw-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.do_work(), 0);
    /// ```
    pub fn do_work(&mut self) -> usize {
        // One pass in BUSY_SAMPLE_PASSES is timed whole, whatever it finds: the samples
        // are then a fair draw of the busy passes (see `RouterStats::busy_ns_sampled`).
        if (self.passes + 1) % BUSY_SAMPLE_PASSES != 0 {
            return self.pass() + usize::from(self.needs_refresh);
        }
        let (wakes_before, wake_ns_before) = (self.producers.wakes, self.producers.wake_ns);
        let started = Instant::now();
        let frames = self.pass();
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wakes = self.producers.wakes - wakes_before;
        let wake_ns = self.producers.wake_ns - wake_ns_before;
        let stats = &self.shared.stats[self.shard];
        if frames > 0 {
            count(&stats.busy_ns_sampled, ns);
            count(&stats.busy_passes_sampled, 1);
            count(&stats.busy_frames_sampled, frames as u64);
            count(&stats.busy_wake_ns_sampled, wake_ns);
            count(&stats.busy_wakes_sampled, wakes);
        } else {
            count(&stats.idle_ns_sampled, ns);
            count(&stats.idle_passes_sampled, 1);
        }
        frames + usize::from(self.needs_refresh)
    }

    /// One duty cycle (see [`RoutingCore::do_work`], which times some of them); returns
    /// the frames it handled.
    fn pass(&mut self) -> usize {
        if self.passes == 0 {
            self.shared.cores_started.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh_tables();
        // A frame naming an unknown destination may have been written right after its
        // destination registered, before this core took the registration in. Such a frame
        // waits for one pass that re-reads commands and tables, and is nacked only if the
        // destination is still unknown then.
        let fresh = self.needs_refresh;
        self.needs_refresh = false;
        self.passes += 1;
        // Busy or idle, every duty cycle tells a service watchdog this shard is alive.
        self.shared.beats[self.shard].beat(self.passes);
        let beat = self.passes % HEARTBEAT_PASSES == 0;
        // Frames already waiting go first: they are older than anything in the tx rings.
        let mut work = self.service_deferrals(false);
        if !self.links_in.is_empty() {
            work += self.drain_links(fresh, false);
        }
        if beat {
            self.beat();
        }
        work += self.serve_lanes(fresh);
        self.reclaim_departed();
        let stats = &self.shared.stats[self.shard];
        let deferred_now = self.deferrals.frames_now as u64;
        if stats.deferred_now.load(Ordering::Relaxed) != deferred_now {
            stats.deferred_now.store(deferred_now, Ordering::Relaxed);
        }
        if stats.agents_woken.load(Ordering::Relaxed) != self.producers.wakes {
            stats
                .agents_woken
                .store(self.producers.wakes, Ordering::Relaxed);
        }
        count(&stats.duty_cycles, 1);
        if work == 0 {
            count(&stats.duty_cycles_idle, 1);
        }
        if beat {
            self.flush_dead_letters();
        }
        self.maybe_publish_mirror(work);
        work
    }

    /// Takes in registrations and departures, and rebuilds the tables if they or the
    /// registry changed.
    fn refresh_tables(&mut self) {
        let commands_taken = self.take_commands();
        // SYNC POINT: registry generation (the Release store in `shared::bump`): the
        // registry changes made before the bump are seen by the rebuild below.
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.seen_generation || commands_taken {
            self.seen_generation = generation;
            let refusal_log = self
                .table
                .send_rights
                .as_mut()
                .map(|r| std::mem::take(&mut r.log));
            self.table = rebuild_table(&self.shared, &mut self.producers, self.shard);
            if let (Some(log), Some(rights)) = (refusal_log, self.table.send_rights.as_mut()) {
                // Refusals stay rate-limited across rebuilds.
                rights.log = log;
            }
            count(&self.shared.stats[self.shard].table_rebuilds, 1);
            for agent in &mut self.agents {
                agent.remotes = self
                    .table
                    .gateway_remotes
                    .remove(&agent.agent_id)
                    .unwrap_or_default();
            }
            // Room for a bit per copy of the largest fan-out, so routing never grows it.
            let largest = self.table.subscribers.values().map(Vec::len).max();
            let words = largest.unwrap_or(1).div_ceil(64).max(1);
            if self.direct_bits.len() < words {
                self.direct_bits.resize(words, 0);
                self.deferrals.slow.dropped_bits.resize(words, 0);
            }
            self.defer_deadline_ns = match self.shared.defer_deadline_ns.load(Ordering::Relaxed) {
                u64::MAX => None,
                ns => Some(ns),
            };
        }
    }

    /// Bumps every served segment's daemon heartbeat.
    fn beat(&self) {
        for agent in &self.agents {
            // Sole writer: a plain store, not a locked add, and only every HEARTBEAT_PASSES
            // passes (a locked add per agent per pass was on the latency path of every hop).
            let heartbeat = &agent.segment.control().daemon_heartbeat.0;
            heartbeat.store(heartbeat.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// Serves every agent's priority lanes (see [`crate::LANE_WEIGHTS`]): one class after
    /// the other, each agent's lane up to its class budget. The first agent visited rotates
    /// each cycle so no agent is always last in its class. Agents whose ring is found
    /// corrupt are dropped. Returns the frames taken.
    fn serve_lanes(&mut self, fresh: bool) -> usize {
        let agents_len = self.agents.len();
        let first = if agents_len == 0 {
            0
        } else {
            (self.passes as usize) % agents_len
        };
        let order = lane_order(&mut self.lane_current, &self.lane_backlog);
        self.lane_backlog = [false; TX_LANES];
        let mut work = 0;
        let mut corrupt = false;
        for class in order {
            for k in 0..agents_len {
                let index = (first + k) % agents_len;
                match self.serve_lane(index, class, fresh) {
                    Ok(n) => work += n,
                    Err(_) => corrupt = true,
                }
            }
        }
        if corrupt || !self.producers.corrupt_rx.is_empty() {
            self.drop_corrupt();
        }
        if !self.deferrals.slow.evict.is_empty() {
            for agent_id in std::mem::take(&mut self.deferrals.slow.evict) {
                self.shared
                    .request_removal(agent_id, crate::shared::Removal::SlowSubscriber);
            }
        }
        work
    }

    /// Drops every agent one of whose rings failed validation (tx: a bad tail or record;
    /// rx: a head out of range): its segment is marked closed, its rx ring is no longer
    /// written, and the control loop is told to remove it fully (registry, connection).
    #[cold]
    fn drop_corrupt(&mut self) {
        let stats = &self.shared.stats[self.shard];
        for agent_id in std::mem::take(&mut self.producers.corrupt_rx) {
            if let Some(agent) = self.agents.iter_mut().find(|a| a.agent_id == agent_id) {
                if !agent.corrupt {
                    if let Some(unlogged) = self.corrupt_log.due(std::time::Instant::now()) {
                        tracing::warn!(
                            agent_id,
                            unlogged_since_last = unlogged,
                            "dropping agent: its rx ring's head is out of range (logged at \
                             most once every {:?})",
                            crate::gate::REFUSAL_LOG_INTERVAL
                        );
                    }
                    count(&stats.rings_corrupt, 1);
                    agent.corrupt = true;
                }
            }
        }
        let mut dropped = Vec::new();
        for agent in self.agents.iter().filter(|a| a.corrupt) {
            self.producers.remove(agent.agent_id);
            // SYNC POINT: segment state. Pairs with the client's Acquire load of the state.
            agent
                .segment
                .control()
                .state
                .0
                .store(state::CLOSED, Ordering::Release);
            dropped.push(agent.agent_id);
        }
        let slots = &mut self.agent_slots;
        self.agents.retain(|a| {
            if a.corrupt {
                slots.release(a.mirror_slot);
            }
            !a.corrupt
        });
        self.lend_freed_slots();
        for agent_id in dropped {
            self.shared
                .request_removal(agent_id, crate::shared::Removal::CorruptRing);
        }
    }

    /// Serves one agent's lane of one class up to the class budget, in reads of at most
    /// `batch_frames`. Returns the frames taken, or the agent's id when its ring is corrupt
    /// (the agent is marked for removal).
    fn serve_lane(&mut self, index: usize, class: usize, fresh: bool) -> Result<usize, u32> {
        let deadline_after_ns = self
            .defer_deadline_ns
            .filter(|_| self.dead_letters.is_some());
        let stats = &self.shared.stats[self.shard];
        let agent = &mut self.agents[index];
        if agent.corrupt {
            return Ok(0);
        }
        let owner = agent.agent_id;
        let remotes = agent.remotes.as_slice();
        let control = agent.segment.control();
        let mut left = self.lane_budget[class];
        let mut work = 0;
        while left > 0 {
            let budget = left.min(self.batch_frames);
            let mut ctx = RouteContext {
                producers: &mut self.producers,
                deferrals: &mut self.deferrals,
                table: &mut self.table,
                stats,
                fresh,
                needs_refresh: false,
                generation: &self.shared.generation,
                table_generation: self.seen_generation,
                deadline: Deadline::new(deadline_after_ns),
                bytes_in: 0,
                stopped: false,
                direct_bits: &mut self.direct_bits,
            };
            let result = agent.tx[class].read(budget, |frame| {
                // The ring owner is the source, unless a gateway names a remote agent of its.
                let source = match FrameHeader::peek(frame) {
                    Some(h)
                        if !remotes.is_empty() && remotes.binary_search(&h.source()).is_ok() =>
                    {
                        h.source()
                    }
                    _ => owner,
                };
                let flow = route_frame(source, frame, &mut ctx, control);
                ctx.stopped = flow.is_break();
                // A frame kept (`Break`) is read again later: counted once, when taken.
                if flow.is_continue() {
                    ctx.bytes_in += frame.len() as u64;
                }
                flow
            });
            self.needs_refresh |= ctx.needs_refresh;
            let (bytes_in, stopped) = (ctx.bytes_in, ctx.stopped);
            self.producers.publish();
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    if let Some(unlogged) = self.corrupt_log.due(std::time::Instant::now()) {
                        tracing::warn!(
                            agent_id = owner,
                            lane = class,
                            unlogged_since_last = unlogged,
                            "dropping agent: {e} (logged at most once every {:?})",
                            crate::gate::REFUSAL_LOG_INTERVAL
                        );
                    }
                    count(&stats.rings_corrupt, 1);
                    agent.corrupt = true;
                    return Err(owner);
                }
            };
            if n > 0 {
                work += n;
                count(&stats.frames_in, n as u64);
                count(&stats.bytes_in, bytes_in);
                agent.mirror_dirty = true;
                let mine = &mut agent.counters;
                mine.frames_in = mine.frames_in.wrapping_add(n as u64);
                mine.bytes_in = mine.bytes_in.wrapping_add(bytes_in);
                count(&stats.batch_frames[batch_bucket(n)], 1);
            }
            left -= n;
            if stopped || (left == 0 && n == budget) {
                // Frames left behind: this class contends next cycle.
                self.lane_backlog[class] = true;
            }
            if stopped || n < budget {
                break;
            }
        }
        Ok(work)
    }

    /// Reclaims departed agents once their tx rings are drained.
    fn reclaim_departed(&mut self) {
        let before = self.agents.len();
        let slots = &mut self.agent_slots;
        self.agents.retain_mut(|a| {
            let drained = a.leaving && a.tx.iter_mut().all(Consumer::is_empty);
            if drained {
                slots.release(a.mirror_slot);
            }
            !drained
        });
        let removed = (before - self.agents.len()) as u64;
        if removed > 0 {
            self.lend_freed_slots();
        }
        count(&self.shared.stats[self.shard].agents_removed, removed);
    }

    /// Runs duty cycles with `idle` between empty ones until the control side stops the
    /// router, then closes every segment.
    ///
    /// ```no_run
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # let (control, core) = RouterControl::start(RouterConfig::new("/tmp/x.sock".into())).unwrap();
    /// std::thread::spawn(move || core.run(agentwire_shm::idle::IdleStrategy::Spin));
    /// ```
    pub fn run(mut self, idle: IdleStrategy) {
        let mut idler = Idler::new(idle);
        while !self.should_stop() {
            self.step(&mut idler);
        }
        self.finish();
    }

    /// One duty cycle, then idles with `idler` if it did no work. Callers that interleave
    /// other work (the daemon's executor yields between steps) loop on this.
    ///
    /// ```
    /// # use agentwire_router::{RouterConfig, RouterControl};
    /// # use agentwire_shm::idle::{IdleStrategy, Idler};
    /// # let p = std::env::temp_dir().join(format!("aw-doc-step-{}.sock", std::process::id()));
    /// let (_control, mut core) = RouterControl::start(RouterConfig::new(p)).unwrap();
    /// assert_eq!(core.step(&mut Idler::new(IdleStrategy::Spin)), 0);
    /// ```
    pub fn step(&mut self, idler: &mut Idler) -> usize {
        let work = self.do_work();
        if work == 0 {
            self.idle(idler);
        } else {
            idler.reset();
        }
        work
    }
}
