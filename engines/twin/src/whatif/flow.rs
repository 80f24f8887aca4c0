//! The flow simulator: the [`Model`] as fluid queues in time steps, for hours of traffic
//! in milliseconds. Each step moves each flow's frames (rate × step) through its shard's
//! backlog (capacity step / service time), its consumer's ring and deferral (backpressure
//! when both are full, dead letters past the deadline), and gives the step's latency
//! distribution from queueing formulas: the backlogs' waits, plus an M/G/1 wait at the
//! shard (Pollaczek-Khinchine mean, exponential tail: `P(W > t) = ρ·exp(−tρ/E[W])`) and the
//! consumer's mean wait. Percentiles come from the mixture of every step's distribution,
//! weighted by the frames it delivered. Checked against the packet simulator
//! ([`super::packet`]) in the tests.

use super::model::{Model, ModelError};
use super::outcome::{Outcome, Percentiles};
use std::collections::HashMap;

/// Default step, ms.
pub const STEP_MS_DEFAULT: f64 = 100.0;

/// One step's latency distribution for one flow: `base_ns` plus, with probability `rho`,
/// an exponential time of mean `tail_ns` (the shard's wait and the random part of its
/// service).
#[derive(Clone, Copy)]
struct Piece {
    base_ns: f64,
    rho: f64,
    tail_ns: f64,
}

impl Piece {
    fn below(&self, t_ns: f64) -> f64 {
        if t_ns < self.base_ns {
            0.0
        } else if self.tail_ns <= 0.0 {
            1.0
        } else {
            1.0 - self.rho * (-(t_ns - self.base_ns) / self.tail_ns).exp()
        }
    }

    /// A key equal for pieces within 0.1% of each other, so steady steps merge.
    fn key(&self) -> (i64, i64, i64) {
        let log = |v: f64| ((v.max(1e-3)).ln() * 1000.0).round() as i64;
        (
            log(self.base_ns),
            (self.rho * 1e4).round() as i64,
            log(self.tail_ns),
        )
    }
}

/// Distinct step distributions kept exactly; beyond them, new ones merge by their base
/// (1% buckets), which bounds the mixture at this plus a few thousand pieces.
const PIECES_MAX: usize = 100_000;

/// The weighted mixture of step distributions.
#[derive(Default)]
struct Mixture {
    pieces: HashMap<(i64, i64, i64), (Piece, f64)>,
    /// Past [`PIECES_MAX`]: pieces merged by base, their `rho` and `tail_ns` averaged by weight.
    merged: HashMap<i64, (Piece, f64)>,
    weight: f64,
}

impl Mixture {
    fn add(&mut self, piece: Piece, weight: f64) {
        if weight <= 0.0 {
            return;
        }
        self.weight += weight;
        let key = piece.key();
        if self.pieces.len() < PIECES_MAX || self.pieces.contains_key(&key) {
            self.pieces
                .entry(key)
                .and_modify(|(_, w)| *w += weight)
                .or_insert((piece, weight));
            return;
        }
        let (p, w) = self
            .merged
            .entry(((piece.base_ns.max(1e-3)).ln() * 100.0).round() as i64)
            .or_insert((piece, 0.0));
        let total = *w + weight;
        p.rho = (p.rho * *w + piece.rho * weight) / total;
        p.tail_ns = (p.tail_ns * *w + piece.tail_ns * weight) / total;
        *w = total;
    }

    fn cdf(&self, t_ns: f64) -> f64 {
        self.pieces
            .values()
            .chain(self.merged.values())
            .map(|(p, w)| w * p.below(t_ns))
            .sum::<f64>()
            / self.weight
    }

    /// The `q` quantile by bisection (relative precision 1e-6).
    fn quantile(&self, q: f64) -> f64 {
        if self.weight <= 0.0 {
            return 0.0;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        while self.cdf(hi) < q && hi < 1e15 {
            hi *= 2.0;
        }
        while hi - lo > hi * 1e-6 {
            let mid = 0.5 * (lo + hi);
            if self.cdf(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// The most flow-steps (steps × flows) one run may compute: a few seconds of work.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::flow::FLOW_STEPS_MAX, 1e9);
/// ```
pub const FLOW_STEPS_MAX: f64 = 1e9;

/// Refuses a run above [`FLOW_STEPS_MAX`] flow-steps or with a step outside 1 ms to 1 h.
///
/// ```
/// use agentwire_twin::whatif::{flow, Model};
/// assert!(flow::check_size(&Model::example(), 30.0 * 86_400.0, 100.0).is_ok());
/// assert!(flow::check_size(&Model::example(), 1e12, 100.0).is_err());
/// ```
pub fn check_size(model: &Model, seconds: f64, step_ms: f64) -> Result<(), ModelError> {
    if !(1.0..=3.6e6).contains(&step_ms) {
        return Err(ModelError(
            "the flow step must be from 1 ms to an hour".into(),
        ));
    }
    let work = seconds / (step_ms / 1000.0) * model.flows.len() as f64;
    if seconds.is_finite() && seconds > 0.0 && work <= FLOW_STEPS_MAX {
        Ok(())
    } else {
        Err(ModelError(format!(
            "{seconds} s in {step_ms} ms steps over {} flows is more than the flow simulator runs ({FLOW_STEPS_MAX:.0e} flow-steps)",
            model.flows.len()
        )))
    }
}

/// Simulates `model` for `seconds` in steps of `step_ms`, every flow's rate times
/// `load_at(t_s)` at simulated time `t_s` (1.0: the model as it is).
///
/// ```
/// use agentwire_twin::whatif::{flow, Model};
/// let out = flow::simulate(&Model::example(), 3600.0, 100.0, &|_| 1.0);
/// assert!((out.throughput_per_s / 40_000.0 - 1.0).abs() < 1e-6);
/// assert!((out.router_utilisation[0] - 0.08).abs() < 1e-6);
/// ```
pub fn simulate(
    model: &Model,
    seconds: f64,
    step_ms: f64,
    load_at: &dyn Fn(f64) -> f64,
) -> Outcome {
    let step_s = (step_ms / 1000.0).max(1e-6);
    let steps = (seconds / step_s).ceil().max(1.0) as u64;
    let shards = model.router_cores.max(1) as usize;
    let s_ns = model.router_service_ns;
    let c_ns = model.consumer_service_ns.max(1e-3);
    let ring = f64::from(model.ring_frames);
    let room_max = ring + f64::from(model.deferral_frames);
    let deferral = f64::from(model.deferral_frames);
    let deadline_s = model.defer_deadline_ns as f64 / 1e9;
    // The router expires a deferral's head once it has waited the deadline. When the
    // consumer cannot drain a full deferral within the deadline, frames expire, and the
    // deferral takes in at most `deferral / deadline` frames a second: the consumer's reads
    // plus the expiries (the rest backs up in the producers' lanes).
    let expiring = deadline_s > 0.0 && deferral * c_ns / 1e9 > deadline_s;
    let expiry_per_step = if expiring {
        (deferral / deadline_s - 1e9 / c_ns).max(0.0) * step_s
    } else {
        0.0
    };
    let deadline_ns = if deadline_s > 0.0 {
        deadline_s * 1e9
    } else {
        f64::INFINITY
    };
    let flows = model.flows.len();
    let mut backlog = vec![0.0f64; flows];
    let mut consumer_queue = vec![0.0f64; flows];
    let mut router_busy_ns = vec![0.0f64; shards];
    let mut consumer_busy_max = 0.0f64;
    let (mut delivered, mut deferred, mut dead) = (0.0, 0.0, 0.0);
    let mut mixture = Mixture::default();
    let mut shard_rate = vec![0.0f64; shards];
    let mut shard_backlog = vec![0.0f64; shards];
    for step in 0..steps {
        let scale = load_at(step as f64 * step_s).max(0.0);
        shard_rate.iter_mut().for_each(|r| *r = 0.0);
        shard_backlog.iter_mut().for_each(|b| *b = 0.0);
        for (f, flow) in model.flows.iter().enumerate() {
            let rate = flow.rate_per_s() * scale;
            shard_rate[model.shard_of(f)] += rate;
            backlog[f] += rate * step_s;
            shard_backlog[model.shard_of(f)] += backlog[f];
        }
        for (sh, busy) in router_busy_ns.iter_mut().enumerate() {
            let capacity = step_s * 1e9 / s_ns;
            let total = shard_backlog[sh];
            // Served in proportion to each flow's backlog, within its consumer's room.
            let share = if total > 0.0 {
                (capacity / total).min(1.0)
            } else {
                0.0
            };
            let rho = (shard_rate[sh] * s_ns / 1e9).min(0.999);
            let cv = model.service_cv;
            let wait_mean_ns = rho / (1.0 - rho) * s_ns * (1.0 + cv * cv) / 2.0;
            // The random part: the wait plus the service's exponential share (s × cv),
            // positive with probability rho (constant service) to 1 (exponential), its
            // mean kept: exact for M/M/1, P-K's mean and tail for M/D/1.
            let random_p = (rho + (1.0 - rho) * cv).max(1e-9);
            let random_mean_ns = wait_mean_ns + s_ns * cv;
            // What the shard could not route this step waits for it first.
            let backlog_wait_ns = (total - capacity).max(0.0) * s_ns;
            let mut served_total = 0.0;
            for f in (sh..flows).step_by(shards) {
                // The consumer reads what it holds plus what comes, at its speed; what
                // the ring and deferral cannot hold by the end of the step stays behind.
                let can_read = step_s * 1e9 / c_ns;
                let room = (room_max - consumer_queue[f] + can_read + expiry_per_step).max(0.0);
                let served = (backlog[f] * share).min(room);
                backlog[f] -= served;
                served_total += served;
                let read = (consumer_queue[f] + served).min(can_read);
                let queued_before = consumer_queue[f];
                consumer_queue[f] += served - read;
                deferred += served.min((consumer_queue[f] - ring).max(0.0));
                let expired = (consumer_queue[f] - room_max).max(0.0);
                consumer_queue[f] -= expired;
                dead += expired;
                delivered += read;
                consumer_busy_max = consumer_busy_max.max(read * c_ns / (step_s * 1e9));
                let flow_rate = model.flows[f].rate_per_s() * scale;
                // M/D/1's mean wait; a saturated consumer's wait is its fluid queue.
                let rho_c = flow_rate * c_ns / 1e9;
                let consumer_wait_ns = if rho_c < 1.0 {
                    rho_c.min(0.999) / (1.0 - rho_c.min(0.999)) * c_ns / 2.0
                } else {
                    0.0
                };
                let piece = Piece {
                    base_ns: model.hop_ns
                        + s_ns * (1.0 - cv)
                        + backlog_wait_ns
                        + c_ns
                        + queued_before.min(ring) * c_ns
                        + ((queued_before - ring).max(0.0) * c_ns).min(deadline_ns)
                        + consumer_wait_ns,
                    rho: random_p,
                    tail_ns: random_mean_ns / random_p,
                };
                mixture.add(piece, read);
            }
            *busy += served_total * s_ns;
        }
    }
    let total_s = steps as f64 * step_s;
    Outcome {
        simulator: "flow",
        simulated_s: total_s,
        offered_per_s: model.offered_per_s(),
        throughput_per_s: delivered / total_s,
        latency: Percentiles {
            p50_ns: mixture.quantile(0.5),
            p90_ns: mixture.quantile(0.9),
            p99_ns: mixture.quantile(0.99),
            p999_ns: mixture.quantile(0.999),
        },
        deferred_per_s: deferred / total_s,
        dead_lettered_per_s: dead / total_s,
        backlog_frames: backlog.iter().sum(),
        producer_stalled_frames: 0.0,
        router_utilisation: router_busy_ns
            .iter()
            .map(|b| (b / (total_s * 1e9)).min(1.0))
            .collect(),
        consumer_utilisation_max: consumer_busy_max.min(1.0),
        partitions: super::partition_outcomes(model),
        events: steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatif::{packet, Flow};

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a / b - 1.0).abs() <= tolerance
    }

    #[test]
    fn agrees_with_the_packet_simulator_across_loads() {
        for (rate, cores) in [
            (100_000.0, 1),
            (300_000.0, 1),
            (400_000.0, 1),
            (700_000.0, 2),
        ] {
            let mut m = Model::example();
            m.router_cores = cores;
            m.hop_ns = 5_000.0;
            m.flows = vec![Flow::new(rate / 2.0), Flow::new(rate / 2.0)];
            let p = packet::simulate(&m, 1.0, 11);
            let f = simulate(&m, 1.0, 100.0, &|_| 1.0);
            assert!(
                close(f.throughput_per_s, p.throughput_per_s, 0.02),
                "{f:?}\n{p:?}"
            );
            assert!(
                close(f.latency.p50_ns, p.latency.p50_ns, 0.10),
                "{rate}: {f:?}\n{p:?}"
            );
            // The shard's batched turns between flows are not first come, first served:
            // the packet simulator's tail is longer than M/G/1's near saturation.
            assert!(
                close(f.latency.p99_ns, p.latency.p99_ns, 0.25),
                "{rate}: {f:?}\n{p:?}"
            );
        }
    }

    #[test]
    fn overload_grows_the_backlog_and_latency() {
        let mut m = Model::example();
        m.flows = vec![Flow::new(600_000.0)];
        let out = simulate(&m, 10.0, 100.0, &|_| 1.0);
        assert!(close(out.throughput_per_s, 500_000.0, 0.01), "{out:?}");
        assert!(close(out.backlog_frames, 1_000_000.0, 0.01), "{out:?}");
        assert!(out.latency.p99_ns > 1e9, "{out:?}");
    }

    #[test]
    fn a_slow_consumer_dead_letters_what_it_cannot_read() {
        let m = crate::whatif::test_models::slow_consumer();
        let f = simulate(&m, 2.0, 100.0, &|_| 1.0);
        let p = packet::simulate(&m, 2.0, 3);
        assert!(close(f.throughput_per_s, 5_000.0, 0.02), "{f:?}");
        assert!(
            close(f.dead_lettered_per_s, p.dead_lettered_per_s, 0.05),
            "{f:?}\n{p:?}"
        );
        assert!(
            close(f.latency.p50_ns, p.latency.p50_ns, 0.05),
            "{f:?}\n{p:?}"
        );
    }

    #[test]
    fn a_flooded_deferral_takes_in_what_expires_and_backs_the_rest_up() {
        // 1M frames a second at a consumer reading 5,000: the deferral of 64 frames with a
        // 1 ms deadline takes in 64,000 a second (5,000 read, 59,000 expire); the rest waits
        // in the producer's lane.
        let mut m = crate::whatif::test_models::slow_consumer();
        m.flows = vec![Flow::new(1_000_000.0)];
        let f = simulate(&m, 0.5, 100.0, &|_| 1.0);
        let p = packet::simulate(&m, 0.5, 3);
        assert!(close(f.throughput_per_s, 5_000.0, 0.02), "{f:?}");
        assert!(close(f.dead_lettered_per_s, 59_000.0, 0.05), "{f:?}");
        assert!(
            close(p.dead_lettered_per_s, f.dead_lettered_per_s, 0.10),
            "{f:?}\n{p:?}"
        );
        assert!(
            close(p.throughput_per_s, f.throughput_per_s, 0.05),
            "{f:?}\n{p:?}"
        );
        assert!(f.backlog_frames > 400_000.0, "{f:?}");
    }

    #[test]
    fn a_load_profile_scales_the_rate_over_time() {
        let m = Model::example();
        let out = simulate(&m, 100.0, 100.0, &|t| if t < 50.0 { 0.5 } else { 1.5 });
        assert!(close(out.throughput_per_s, 40_000.0, 1e-6), "{out:?}");
    }
}
