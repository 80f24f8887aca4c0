//! The packet simulator: the [`Model`] frame by frame as discrete events (Poisson
//! arrivals, router shards visiting their flows' lanes by class weight, consumers with
//! rings and deferrals). Exact for the model, and the reference the flow simulator and the
//! SimPy implementation (`scripts/whatif_simpy.py`) are compared with; its cost grows with
//! the frames simulated.

use super::model::{Model, ModelError, CLASSES};
use super::outcome::{Outcome, Percentiles};
use hdrhistogram::Histogram;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Frames a producer lane holds; arrivals beyond it are counted
/// ([`Outcome::producer_stalled_frames`]) and not simulated further, which bounds memory and
/// caps the latency an overloaded run can show.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::packet::LANE_FRAMES_MAX, 65_536);
/// ```
pub const LANE_FRAMES_MAX: usize = 65_536;

/// The most frames one run may simulate (offered rate × seconds): about a minute of work.
///
/// ```
/// use agentwire_twin::whatif::{packet, Model};
/// assert!(packet::check_size(&Model::example(), 10.0).is_ok());
/// assert!(packet::check_size(&Model::example(), 1e6).is_err());
/// ```
pub const FRAMES_MAX: f64 = 2e8;

/// Refuses a run above [`FRAMES_MAX`] frames, naming the flow simulator.
///
/// ```
/// use agentwire_twin::whatif::{packet, Model};
/// let e = packet::check_size(&Model::example(), 1e5).unwrap_err();
/// assert!(e.to_string().contains("flow simulator"));
/// ```
pub fn check_size(model: &Model, seconds: f64) -> Result<(), ModelError> {
    let frames = model.offered_per_s() * seconds;
    if frames.is_finite() && frames <= FRAMES_MAX {
        Ok(())
    } else {
        Err(ModelError(format!(
            "{frames:.3e} frames is more than the packet simulator runs ({FRAMES_MAX:.0e}); use the flow simulator or fewer seconds"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A frame from source (flow × class) `.0`.
    Arrival(u32),
    /// Shard `.0` finished routing its frame.
    Routed(u32),
    /// Consumer `.0` finished reading its frame.
    Read(u32),
}

#[derive(Default)]
struct Shard {
    flows: Vec<usize>,
    /// Position in `flows` and class of the lane being visited.
    cursor: (usize, usize),
    /// Frames left in this lane's visit.
    budget: u32,
    /// The frame being routed: (source, arrival ns).
    current: Option<(usize, u64)>,
    busy_ns: u64,
}

#[derive(Default)]
struct Consumer {
    /// (arrival ns, entered deferral ns or `u64::MAX` when it went straight to the ring).
    queue: VecDeque<(u64, u64)>,
    /// Frames routed to it and not yet queued (reserved room).
    in_flight: usize,
    reading: bool,
    busy_ns: u64,
}

struct Sim<'m> {
    model: &'m Model,
    rng: fastrand::Rng,
    now: u64,
    events: BinaryHeap<Reverse<(u64, Event)>>,
    event_count: u64,
    /// Per source (flow × CLASSES + class): mean gap ns (0: no traffic), the next arrival
    /// to the fraction of a ns, and waiting frames.
    gaps_ns: Vec<f64>,
    next_arrival_ns: Vec<f64>,
    lanes: Vec<VecDeque<u64>>,
    shards: Vec<Shard>,
    consumers: Vec<Consumer>,
    warmup_ns: u64,
    latency: Histogram<u64>,
    delivered: u64,
    deferred: u64,
    dead_lettered: u64,
    stalled: u64,
}

/// Simulates `model` for `seconds` (the first 5% is warm-up, not measured) with random
/// seed `seed`.
///
/// ```
/// use agentwire_twin::whatif::{packet, Model};
/// let out = packet::simulate(&Model::example(), 0.2, 1);
/// assert!((out.throughput_per_s / 40_000.0 - 1.0).abs() < 0.05);
/// assert!(out.latency.p99_ns > out.latency.p50_ns);
/// ```
pub fn simulate(model: &Model, seconds: f64, seed: u64) -> Outcome {
    let mut sim = Sim::new(model, seconds, seed);
    let end_ns = (seconds * 1e9) as u64;
    for source in 0..sim.gaps_ns.len() {
        sim.schedule_arrival(source);
    }
    while let Some(Reverse((at, event))) = sim.events.pop() {
        if at > end_ns {
            break;
        }
        sim.now = at;
        sim.event_count += 1;
        match event {
            Event::Arrival(s) => sim.arrive(s as usize),
            Event::Routed(s) => sim.routed(s as usize),
            Event::Read(c) => sim.read(c as usize),
        }
    }
    sim.outcome(seconds)
}

impl<'m> Sim<'m> {
    fn new(model: &'m Model, seconds: f64, seed: u64) -> Self {
        let shards_n = model.router_cores.max(1) as usize;
        let mut shards: Vec<Shard> = (0..shards_n).map(|_| Shard::default()).collect();
        for f in 0..model.flows.len() {
            shards[model.shard_of(f)].flows.push(f);
        }
        let gaps_ns = model
            .flows
            .iter()
            .flat_map(|f| f.class_rates_per_s)
            .map(|r| if r > 0.0 { 1e9 / r } else { 0.0 })
            .collect::<Vec<_>>();
        Self {
            model,
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            events: BinaryHeap::new(),
            event_count: 0,
            lanes: vec![VecDeque::new(); gaps_ns.len()],
            next_arrival_ns: vec![0.0; gaps_ns.len()],
            gaps_ns,
            shards,
            consumers: (0..model.flows.len())
                .map(|_| Consumer::default())
                .collect(),
            warmup_ns: (seconds * 0.05 * 1e9) as u64,
            // 1 ns to 10^13 ns (about 3 hours) at 3 significant figures.
            latency: Histogram::new_with_bounds(1, 10_000_000_000_000, 3)
                .expect("valid histogram bounds"),
            delivered: 0,
            deferred: 0,
            dead_lettered: 0,
            stalled: 0,
        }
    }

    fn exp_ns(&mut self, mean_ns: f64) -> f64 {
        // Inverse transform; 1 - U is in (0, 1], so the log is finite.
        -mean_ns * (1.0 - self.rng.f64()).ln()
    }

    fn schedule_arrival(&mut self, source: usize) {
        let gap = self.gaps_ns[source];
        if gap > 0.0 {
            // Kept to the fraction of a ns, so gaps below 1 ns still add up to the rate.
            self.next_arrival_ns[source] += self.exp_ns(gap);
            let at = self.next_arrival_ns[source].round() as u64;
            self.events
                .push(Reverse((at, Event::Arrival(source as u32))));
        }
    }

    fn arrive(&mut self, source: usize) {
        if self.lanes[source].len() >= LANE_FRAMES_MAX {
            self.stalled += 1;
        } else {
            self.lanes[source].push_back(self.now);
        }
        self.schedule_arrival(source);
        let shard = self.model.shard_of(source / CLASSES);
        if self.shards[shard].current.is_none() {
            self.start_routing(shard);
        }
    }

    /// Sends the deferral's expired head frames to the dead-letter queue, as the router
    /// does every duty cycle: the frames past the ring (index `ring_frames` on) whose deadline
    /// has passed.
    fn expire_deferred(&mut self, c: usize) {
        let ring = self.model.ring_frames as usize;
        let deadline = self.model.defer_deadline_ns;
        if deadline == 0 {
            return;
        }
        let consumer = &mut self.consumers[c];
        while let Some(&(_, deferred_at)) = consumer.queue.get(ring) {
            if deferred_at == u64::MAX || self.now.saturating_sub(deferred_at) <= deadline {
                break;
            }
            consumer.queue.remove(ring);
            if self.now >= self.warmup_ns {
                self.dead_lettered += 1;
            }
        }
    }

    /// Room in consumer `c` for one more routed frame (ring plus deferral).
    fn has_room(&mut self, c: usize) -> bool {
        self.expire_deferred(c);
        let consumer = &self.consumers[c];
        let capacity = self.model.ring_frames as usize + self.model.deferral_frames as usize;
        consumer.queue.len() + consumer.in_flight < capacity
    }

    /// Picks the shard's next frame: its flows in turn, each lane for its class's share of
    /// the batch, skipping flows whose consumer has no room (their frames wait in the lane).
    fn start_routing(&mut self, shard: usize) {
        let flows_n = self.shards[shard].flows.len();
        if flows_n == 0 {
            return;
        }
        // The router's own lane budgets (2, 1.5, 1 and 0.5 batches, at least one frame).
        let budgets = agentwire_router::lane_batch_frames(self.model.batch_frames as usize)
            .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
        for _ in 0..=flows_n * CLASSES {
            let (pos, class) = self.shards[shard].cursor;
            let flow = self.shards[shard].flows[pos];
            let source = flow * CLASSES + class;
            if self.shards[shard].budget > 0
                && !self.lanes[source].is_empty()
                && self.has_room(flow)
            {
                self.shards[shard].budget -= 1;
                let arrival = self.lanes[source].pop_front().expect("lane not empty");
                self.consumers[flow].in_flight += 1;
                let s = self.model.router_service_ns;
                let cv = self.model.service_cv;
                let service = (s * (1.0 - cv) + self.exp_ns(s * cv)).max(1.0) as u64;
                let sh = &mut self.shards[shard];
                sh.current = Some((source, arrival));
                sh.busy_ns += service;
                self.events
                    .push(Reverse((self.now + service, Event::Routed(shard as u32))));
                return;
            }
            // Next lane (or next flow), with a fresh budget.
            let sh = &mut self.shards[shard];
            sh.cursor = if class + 1 < CLASSES {
                (pos, class + 1)
            } else {
                ((pos + 1) % flows_n, 0)
            };
            sh.budget = budgets[sh.cursor.1];
        }
        self.shards[shard].current = None;
    }

    fn routed(&mut self, shard: usize) {
        let (source, arrival) = self.shards[shard]
            .current
            .take()
            .expect("a routed event has its frame");
        let flow = source / CLASSES;
        let ring = self.model.ring_frames as usize;
        self.expire_deferred(flow);
        let consumer = &mut self.consumers[flow];
        consumer.in_flight -= 1;
        let deferred_at = if consumer.queue.len() >= ring {
            if self.now >= self.warmup_ns {
                self.deferred += 1;
            }
            self.now
        } else {
            u64::MAX
        };
        consumer.queue.push_back((arrival, deferred_at));
        if !consumer.reading {
            self.start_reading(flow);
        }
        self.start_routing(shard);
    }

    fn start_reading(&mut self, c: usize) {
        let service = self.model.consumer_service_ns.max(1.0) as u64;
        let consumer = &mut self.consumers[c];
        if consumer.queue.is_empty() {
            consumer.reading = false;
            return;
        }
        consumer.reading = true;
        consumer.busy_ns += service;
        self.events
            .push(Reverse((self.now + service, Event::Read(c as u32))));
    }

    fn read(&mut self, c: usize) {
        let consumer = &mut self.consumers[c];
        let (arrival, _) = consumer.queue.pop_front().expect("a read has its frame");
        if self.now >= self.warmup_ns {
            self.delivered += 1;
            let latency = (self.now - arrival) as f64 + self.model.hop_ns;
            self.latency.saturating_record(latency.round() as u64);
        }
        self.expire_deferred(c);
        self.start_reading(c);
        // Room freed: a shard that skipped this flow may route again.
        let shard = self.model.shard_of(c);
        if self.shards[shard].current.is_none() {
            self.start_routing(shard);
        }
    }

    fn outcome(&self, seconds: f64) -> Outcome {
        let measured_s = (seconds - self.warmup_ns as f64 / 1e9).max(1e-9);
        let q = |p: f64| self.latency.value_at_quantile(p) as f64;
        let total_ns = seconds * 1e9;
        Outcome {
            simulator: "packet",
            simulated_s: measured_s,
            offered_per_s: self.model.offered_per_s(),
            throughput_per_s: self.delivered as f64 / measured_s,
            latency: Percentiles {
                p50_ns: q(0.5),
                p90_ns: q(0.9),
                p99_ns: q(0.99),
                p999_ns: q(0.999),
            },
            deferred_per_s: self.deferred as f64 / measured_s,
            dead_lettered_per_s: self.dead_lettered as f64 / measured_s,
            backlog_frames: self.lanes.iter().map(VecDeque::len).sum::<usize>() as f64,
            producer_stalled_frames: self.stalled as f64,
            router_utilisation: self
                .shards
                .iter()
                .map(|s| (s.busy_ns as f64 / total_ns).min(1.0))
                .collect(),
            consumer_utilisation_max: self
                .consumers
                .iter()
                .map(|c| (c.busy_ns as f64 / total_ns).min(1.0))
                .fold(0.0, f64::max),
            partitions: super::partition_outcomes(self.model),
            events: self.event_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatif::Flow;

    fn mm1(rate_per_s: f64, service_ns: f64) -> Model {
        Model {
            flows: vec![Flow::new(rate_per_s)],
            router_service_ns: service_ns,
            service_cv: 1.0,
            consumer_service_ns: 1.0,
            ring_frames: 1 << 20,
            deferral_frames: 0,
            ..Model::example()
        }
    }

    #[test]
    fn mm1_sojourn_time_matches_the_formula() {
        // M/M/1 at rho 0.5: the sojourn time is exponential with mean 1/(mu - lambda); its
        // median ln 2 / (mu - lambda) and its 99th percentile ln 100 / (mu - lambda).
        let (lambda, service_ns) = (250_000.0, 2_000.0);
        let out = simulate(&mm1(lambda, service_ns), 4.0, 7);
        let mu = 1e9 / service_ns;
        let mean_ns = 1e9 / (mu - lambda);
        let p50 = std::f64::consts::LN_2 * mean_ns;
        let p99 = 100f64.ln() * mean_ns;
        // The consumer's 1 ns read is part of the measured time.
        assert!(
            (out.latency.p50_ns / p50 - 1.0).abs() < 0.05,
            "{out:?} vs {p50}"
        );
        assert!(
            (out.latency.p99_ns / p99 - 1.0).abs() < 0.05,
            "{out:?} vs {p99}"
        );
        assert!((out.router_utilisation[0] - 0.5).abs() < 0.02, "{out:?}");
        assert!(
            (out.throughput_per_s / lambda - 1.0).abs() < 0.01,
            "{out:?}"
        );
    }

    #[test]
    fn a_slow_consumer_fills_its_deferral_and_dead_letters_past_the_deadline() {
        let m = crate::whatif::test_models::slow_consumer();
        let out = simulate(&m, 2.0, 3);
        assert!(
            (out.throughput_per_s / 5_000.0 - 1.0).abs() < 0.05,
            "{out:?}"
        );
        assert!(out.dead_lettered_per_s > 4_000.0, "{out:?}");
        assert!(out.deferred_per_s >= out.dead_lettered_per_s, "{out:?}");
    }

    #[test]
    fn an_overloaded_router_backs_producers_up_and_a_second_core_clears_it() {
        let mut m = Model::example();
        m.flows = vec![Flow::new(300_000.0), Flow::new(300_000.0)];
        let one = simulate(&m, 0.5, 5);
        assert!(one.throughput_per_s < 520_000.0, "{one:?}");
        assert!(one.backlog_frames > 10_000.0, "{one:?}");
        m.router_cores = 2;
        let two = simulate(&m, 0.5, 5);
        assert!(
            (two.throughput_per_s / 600_000.0 - 1.0).abs() < 0.03,
            "{two:?}"
        );
        assert!(two.backlog_frames < 1_000.0, "{two:?}");
    }

    #[test]
    fn class_weights_share_an_overloaded_shard() {
        // One flow per class 0 and 3 on an overloaded core: class 0 lanes get 2 batches per
        // visit, class 3 half a batch, so class 0 is served 4 times as often.
        let mut m = Model::example();
        m.service_cv = 0.0;
        m.flows = vec![
            Flow {
                class_rates_per_s: [400_000.0, 0.0, 0.0, 0.0],
            },
            Flow {
                class_rates_per_s: [0.0, 0.0, 0.0, 400_000.0],
            },
        ];
        let mut sim = Sim::new(&m, 0.2, 9);
        for s in 0..sim.gaps_ns.len() {
            sim.schedule_arrival(s);
        }
        let mut routed = [0u64; 2];
        while let Some(Reverse((at, e))) = sim.events.pop() {
            if at > 200_000_000 {
                break;
            }
            sim.now = at;
            if let Event::Routed(s) = e {
                let (source, _) = sim.shards[s as usize].current.expect("frame");
                routed[source / CLASSES] += 1;
            }
            match e {
                Event::Arrival(s) => sim.arrive(s as usize),
                Event::Routed(s) => sim.routed(s as usize),
                Event::Read(c) => sim.read(c as usize),
            }
        }
        let ratio = routed[0] as f64 / routed[1] as f64;
        assert!((ratio - 4.0).abs() < 0.1, "{routed:?}");
    }
}
