//! The signals the twin keeps in its history, derived from successive reads of the mirror
//! ([`crate::mirror`]): rates from the router shards' monotonic counters (per second over the
//! interval between two reads), the router's busy ratio from its duty cycles, and gauges as
//! they stand.
//!
//! | signal | from |
//! |---|---|
//! | `router.frames_in_per_s` | Σ shards `frames_in`, per second |
//! | `router.frames_delivered_per_s` | Σ shards `frames_delivered`, per second |
//! | `router.frames_rejected_per_s` | Σ shards `frames_rejected`, per second |
//! | `router.frames_dead_lettered_per_s` | Σ shards `frames_dead_lettered`, per second |
//! | `router.busy_permille` | 1000 − 1000 × Σ `duty_cycles_idle` / Σ `duty_cycles`, over the interval |
//! | `router.busy_time_permille` | the shards' busy time over their wall time, over the interval: Σ `busy_ns_sampled` / Σ `busy_passes_sampled` (the mean timed busy pass) × the busy duty cycles, over the interval × shards; at most 1000, and only when a busy pass was timed |
//! | `router.deferred_now` | Σ shards `deferred_now` |
//! | `router.tx_occupancy_max_permille` | max over shards |
//! | `router.rx_occupancy_max_permille` | max over shards |
//! | `daemon.agents`, `daemon.dlq_bytes` | the `daemon` slot |
//! | `partition.<name>.busy_permille`, `partition.<name>.cpus` | the `daemon` slot |
//!
//! ```
//! use agentwire_twin::mirror::{MirrorState, SlotState};
//! use agentwire_twin::signals::Sampler;
//! let shard = |frames: u64| SlotState { name: "router.shard0".into(), sequence: Some(2),
//!     counters: vec![("frames_in".into(), frames)] };
//! let state = |frames| MirrorState { creator_pid: 1, creator_running: true, slots: vec![shard(frames)] };
//! let mut sampler = Sampler::default();
//! assert!(sampler.sample(&state(100), 1_000).iter().all(|(n, _)| !n.ends_with("_per_s")));
//! let second = sampler.sample(&state(600), 1_500);
//! assert!(second.contains(&("router.frames_in_per_s".to_string(), 1000.0)));
//! ```

use crate::mirror::MirrorState;

/// Router counters turned into per-second rates: (counter, signal).
const RATES: [(&str, &str); 4] = [
    ("frames_in", "router.frames_in_per_s"),
    ("frames_delivered", "router.frames_delivered_per_s"),
    ("frames_rejected", "router.frames_rejected_per_s"),
    ("frames_dead_lettered", "router.frames_dead_lettered_per_s"),
];

/// Router gauges taken as the maximum over shards: (counter, signal).
const MAX_GAUGES: [(&str, &str); 2] = [
    (
        "tx_occupancy_max_permille",
        "router.tx_occupancy_max_permille",
    ),
    (
        "rx_occupancy_max_permille",
        "router.rx_occupancy_max_permille",
    ),
];

/// Turns successive mirror reads into named signal values. Keeps the previous read (its
/// router totals) to compute rates; a counter that went backwards (the daemon restarted
/// under the same socket) restarts the rates instead of producing a negative one.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Time (ms) and the router totals of `RATES` then of `CYCLES`.
    previous: Option<(u64, [u64; TOTALS])>,
}

/// Router duty-cycle counters kept after `RATES`, in this order.
const CYCLES: [&str; 4] = [
    "duty_cycles",
    "duty_cycles_idle",
    "busy_ns_sampled",
    "busy_passes_sampled",
];

/// Router totals a sampler keeps.
const TOTALS: usize = RATES.len() + CYCLES.len();

fn router_totals(state: &MirrorState) -> [u64; TOTALS] {
    let mut out = [0; TOTALS];
    let names = RATES.iter().map(|(counter, _)| *counter).chain(CYCLES);
    for (o, counter) in out.iter_mut().zip(names) {
        *o = state.total("router.", counter);
    }
    out
}

/// The busy share of the shards' time, in permille, from the counters' growth over
/// `secs`: the mean timed busy pass times the busy passes (None without a timed one).
fn busy_time_permille(grown: &[u64; TOTALS], secs: f64, shards: usize) -> Option<f64> {
    let [duty, idle, ns, timed] = [0, 1, 2, 3].map(|i| grown[RATES.len() + i]);
    if timed == 0 || shards == 0 {
        return None;
    }
    let busy_ns = ns as f64 / timed as f64 * duty.saturating_sub(idle) as f64;
    Some((busy_ns / (secs * 1e9 * shards as f64) * 1000.0).min(1000.0))
}

impl Sampler {
    /// The signals of `state` read at `now_ms` (any monotonic clock in ms). Rates and the
    /// busy ratio need a previous read at an earlier time, so the first call (and one after
    /// a counter went backwards) has gauges only.
    ///
    /// ```
    /// use agentwire_twin::mirror::MirrorState;
    /// let empty = MirrorState { creator_pid: 1, creator_running: true, slots: vec![] };
    /// let signals = agentwire_twin::signals::Sampler::default().sample(&empty, 0);
    /// assert!(signals.iter().any(|(n, v)| n == "router.deferred_now" && *v == 0.0));
    /// ```
    pub fn sample(&mut self, state: &MirrorState, now_ms: u64) -> Vec<(String, f64)> {
        let mut out = Vec::with_capacity(16);
        let totals = router_totals(state);
        if let Some((then_ms, before)) = self.previous {
            let grew = totals.iter().zip(&before).all(|(now, was)| now >= was);
            if now_ms > then_ms && grew {
                let secs = (now_ms - then_ms) as f64 / 1000.0;
                let mut grown = [0; TOTALS];
                for (g, (now, was)) in grown.iter_mut().zip(totals.iter().zip(&before)) {
                    *g = now - was;
                }
                for (i, (_, signal)) in RATES.iter().enumerate() {
                    out.push((signal.to_string(), grown[i] as f64 / secs));
                }
                let (duty, idle) = (grown[RATES.len()], grown[RATES.len() + 1]);
                if duty > 0 {
                    let busy = 1000.0 - 1000.0 * idle.min(duty) as f64 / duty as f64;
                    out.push(("router.busy_permille".to_string(), busy));
                }
                let shards = state.router_shards().count();
                if let Some(busy) = busy_time_permille(&grown, secs, shards) {
                    out.push(("router.busy_time_permille".to_string(), busy));
                }
            }
        }
        self.previous = Some((now_ms, totals));
        out.push((
            "router.deferred_now".to_string(),
            state.total("router.", "deferred_now") as f64,
        ));
        for (counter, signal) in MAX_GAUGES {
            let max = state
                .router_shards()
                .filter_map(|s| s.get(counter))
                .max()
                .unwrap_or(0);
            out.push((signal.to_string(), max as f64));
        }
        if let Some(daemon) = state.slots.iter().find(|s| s.name == "daemon") {
            for (name, value) in &daemon.counters {
                let keep = matches!(name.as_str(), "agents" | "dlq_bytes")
                    || (name.starts_with("partition.")
                        && (name.ends_with(".busy_permille") || name.ends_with(".cpus")));
                if keep {
                    let signal = if name.starts_with("partition.") {
                        name.clone()
                    } else {
                        format!("daemon.{name}")
                    };
                    out.push((signal, *value as f64));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::SlotState;

    fn shard(name: &str, counters: &[(&str, u64)]) -> SlotState {
        SlotState {
            name: name.into(),
            sequence: Some(2),
            counters: counters.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    fn state(slots: Vec<SlotState>) -> MirrorState {
        MirrorState {
            creator_pid: 1,
            creator_running: true,
            slots,
        }
    }

    #[test]
    fn rates_busy_ratio_and_gauges() {
        let mut s = Sampler::default();
        let read = |frames: u64, duty: u64, idle: u64, rx: u64| {
            state(vec![
                shard(
                    "router.shard0",
                    &[
                        ("frames_in", frames),
                        ("duty_cycles", duty),
                        ("duty_cycles_idle", idle),
                        // Two timed busy passes of 4 ms each per 1000 duty cycles.
                        ("busy_ns_sampled", duty / 1000 * 8_000_000),
                        ("busy_passes_sampled", duty / 1000 * 2),
                        ("rx_occupancy_max_permille", rx),
                    ],
                ),
                shard(
                    "router.shard1",
                    &[("frames_in", frames), ("rx_occupancy_max_permille", 10)],
                ),
                shard(
                    "daemon",
                    &[
                        ("agents", 3),
                        ("uptime_ms", 9),
                        ("partition.twin.busy_permille", 20),
                    ],
                ),
            ])
        };
        s.sample(&read(0, 0, 0, 0), 0);
        let out = s.sample(&read(500, 1000, 250, 700), 2000);
        let get = |n: &str| out.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(
            get("router.frames_in_per_s"),
            Some(500.0),
            "1000 frames over 2 s"
        );
        assert_eq!(get("router.busy_permille"), Some(750.0));
        // 750 busy passes of 4 ms on average: 3 s of the 2 shards' 4 s.
        assert_eq!(get("router.busy_time_permille"), Some(750.0));
        let out = s.sample(&read(500, 1000, 250, 700), 3000);
        assert!(
            out.iter().all(|(n, _)| n != "router.busy_time_permille"),
            "no timed pass in the interval: {out:?}"
        );
        assert_eq!(get("router.rx_occupancy_max_permille"), Some(700.0));
        assert_eq!(get("daemon.agents"), Some(3.0));
        assert_eq!(get("partition.twin.busy_permille"), Some(20.0));
        assert_eq!(get("daemon.uptime_ms"), None, "not a signal");
    }

    #[test]
    fn a_restarted_daemon_restarts_the_rates() {
        let mut s = Sampler::default();
        let read = |f| state(vec![shard("router.shard0", &[("frames_in", f)])]);
        s.sample(&read(1000), 0);
        let out = s.sample(&read(10), 1000);
        assert!(
            out.iter().all(|(n, _)| n != "router.frames_in_per_s"),
            "{out:?}"
        );
        let out = s.sample(&read(110), 2000);
        assert!(out.contains(&("router.frames_in_per_s".to_string(), 100.0)));
    }
}
