//! A [`Model`] calibrated from two reads of the live mirror: the flows' rates from the
//! agents' own slots (one flow per agent that sent; the router shards' totals where agents
//! are not mirrored one by one), the per-frame service time from the shards' timed duty
//! cycles ([`router_service_time`]), the partitions' cores and load from the daemon slot;
//! capacities from the daemon's settings.

use super::model::{Flow, Model, PartitionLoad, Rebalance, FLOWS_MAX};
use super::service_curve::ServiceCurve;
use crate::mirror::{AgentState, MirrorState};
use agentwire_router::deferral::DEFERRAL_PREFIX_BYTES;
use agentwire_shm::ring::{RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES};

/// Fewer frames than this in the window: the service time is not measured (the busy ratio
/// of an idle router says nothing about a frame's cost) and the default is used.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::FRAMES_TO_MEASURE_SERVICE, 10_000);
/// ```
pub const FRAMES_TO_MEASURE_SERVICE: u64 = 10_000;

/// Fewer timed busy duty cycles than this in the window (the shards time one pass in
/// `agentwire_router::config::BUSY_SAMPLE_PASSES`): the service time is not taken from
/// them.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::SAMPLED_PASSES_TO_MEASURE_SERVICE, 16);
/// ```
pub const SAMPLED_PASSES_TO_MEASURE_SERVICE: u64 = 16;

/// Where a calibrated router service time came from.
///
/// ```
/// use agentwire_twin::whatif::ServiceSource;
/// assert!(ServiceSource::TimedPasses { passes: 100 }.to_string().contains("100 timed"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceSource {
    /// The shards' timed busy duty cycles: their wall time over the frames they handled.
    TimedPasses {
        /// Timed busy passes in the window.
        passes: u64,
    },
    /// The busy ratio of duty cycles times the window over the frames: an upper bound (a
    /// busy pass and an idle pass count the same; from a daemon without timed passes).
    DutyCycles,
    /// Too little traffic in the window to measure.
    NotMeasured,
}

impl std::fmt::Display for ServiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TimedPasses { passes } => write!(f, "from {passes} timed busy duty cycles"),
            Self::DutyCycles => f.write_str("from the duty cycles' busy ratio (an upper bound)"),
            Self::NotMeasured => f.write_str("not measured (too little traffic in the window)"),
        }
    }
}

/// The router's time per frame measured between two reads of the mirror, `elapsed_ns`
/// apart, with where it came from: the timed busy duty cycles when the window holds at
/// least [`SAMPLED_PASSES_TO_MEASURE_SERVICE`] of them, else the duty cycles' busy ratio
/// when it routed at least [`FRAMES_TO_MEASURE_SERVICE`] frames, else none.
///
/// ```
/// use agentwire_twin::mirror::{MirrorState, SlotState};
/// use agentwire_twin::whatif::{router_service_time, ServiceSource};
/// let read = |passes: u64| MirrorState { creator_pid: 1, creator_running: true, slots: vec![
///     SlotState { name: "router.shard0".into(), sequence: Some(2), counters: vec![
///         ("busy_ns_sampled".into(), passes * 900), ("busy_passes_sampled".into(), passes),
///         ("busy_frames_sampled".into(), passes * 3)] }] };
/// let (ns, source) = router_service_time(&read(0), &read(100), 1_000_000_000).unwrap();
/// // 100 timed passes of 900 ns, 3 frames each.
/// assert_eq!(ns, Some(300.0));
/// assert_eq!(source, ServiceSource::TimedPasses { passes: 100 });
/// ```
pub fn router_service_time(
    before: &MirrorState,
    after: &MirrorState,
    elapsed_ns: u64,
) -> Result<(Option<f64>, ServiceSource), CalibrationError> {
    let delta = |counter: &str| router_delta(before, after, counter);
    let sampled_passes = delta("busy_passes_sampled")?;
    let sampled_frames = delta("busy_frames_sampled")?;
    if sampled_passes >= SAMPLED_PASSES_TO_MEASURE_SERVICE && sampled_frames > 0 {
        let ns = delta("busy_ns_sampled")? as f64 / sampled_frames as f64;
        return Ok((
            Some(ns),
            ServiceSource::TimedPasses {
                passes: sampled_passes,
            },
        ));
    }
    let frames = delta("frames_in")?;
    let cycles = delta("duty_cycles")?;
    let idle = delta("duty_cycles_idle")?;
    let busy = if cycles > 0 {
        1.0 - idle.min(cycles) as f64 / cycles as f64
    } else {
        0.0
    };
    let router_cores = router_cores(after);
    if frames >= FRAMES_TO_MEASURE_SERVICE && busy > 0.0 && router_cores > 0 {
        let ns = busy * elapsed_ns as f64 * f64::from(router_cores) / frames as f64;
        return Ok((Some(ns), ServiceSource::DutyCycles));
    }
    Ok((None, ServiceSource::NotMeasured))
}

/// How far a router counter, summed over the shards, moved between two reads.
fn router_delta(
    before: &MirrorState,
    after: &MirrorState,
    counter: &str,
) -> Result<u64, CalibrationError> {
    after
        .total("router.", counter)
        .checked_sub(before.total("router.", counter))
        .ok_or_else(|| {
            CalibrationError(format!(
                "router counter {counter} went backwards (the daemon restarted?)"
            ))
        })
}

/// Router shards in a read of the mirror.
fn router_cores(state: &MirrorState) -> u32 {
    state.router_shards().count() as u32
}

/// The daemon's settings the model needs (from its config).
///
/// ```
/// let s = agentwire_twin::whatif::DaemonSettings::default();
/// assert_eq!(s.ring_capacity_bytes, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// `ring_capacity_bytes`.
    pub ring_capacity_bytes: u64,
    /// `defer_capacity_bytes`.
    pub defer_capacity_bytes: u64,
    /// `defer_deadline_ms`.
    pub defer_deadline_ms: u64,
    /// `router_batch_frames`.
    pub batch_frames: u32,
    /// `[rebalance]`.
    pub rebalance: Rebalance,
    /// Each partition's rebalancing priority (absent: 1).
    pub priorities: Vec<(String, u32)>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            ring_capacity_bytes: 1 << 20,
            defer_capacity_bytes: 256 * 1024,
            defer_deadline_ms: 1000,
            batch_frames: 32,
            rebalance: Rebalance::default(),
            priorities: vec![],
        }
    }
}

/// What the mirror does not show.
///
/// ```
/// let o = agentwire_twin::whatif::CalibrateOptions::default();
/// assert!(o.flows.is_none() && o.router_service_ns.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrateOptions {
    /// Producer/consumer pairs, each at an equal share of the measured rate. Default: one
    /// flow per agent that sent in the window, at its own rate, from the agents' mirror
    /// slots (frames from agents without a slot become flows at an equal share, one per two
    /// such agents); without agent slots (a daemon that has none), half the agents, at
    /// least one.
    pub flows: Option<usize>,
    /// Router time per frame, ns (default: measured, see [`router_service_time`], else
    /// `router_service_ns_default`).
    pub router_service_ns: Option<f64>,
    /// The fallback router time per frame, ns.
    pub router_service_ns_default: f64,
    /// A saturated router core's time per frame, ns: where the model's time per frame goes
    /// as a scenario raises the load, from the time measured by timed duty cycles (see
    /// [`super::ServiceCurve`]).
    pub router_saturated_ns: f64,
    /// Consumer time per frame, ns.
    pub consumer_service_ns: f64,
    /// Latency outside the queues, ns.
    pub hop_ns: f64,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            flows: None,
            router_service_ns: None,
            // The router core alone routes ~48M frames a second (BENCHMARKS.md): ~21 ns.
            router_service_ns_default: 25.0,
            router_saturated_ns: 25.0,
            consumer_service_ns: 100.0,
            hop_ns: 0.0,
        }
    }
}

/// A mirror pair that cannot calibrate a model.
///
/// ```
/// let e = agentwire_twin::whatif::CalibrationError("no router shard".into());
/// assert_eq!(e.to_string(), "cannot calibrate: no router shard");
/// ```
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("cannot calibrate: {0}")]
pub struct CalibrationError(pub String);

/// Calibrates a model from `before` and `after`, read `elapsed_ns` apart.
///
/// ```
/// use agentwire_twin::mirror::{MirrorState, SlotState};
/// use agentwire_twin::whatif::{calibrate, CalibrateOptions, DaemonSettings};
/// let read = |frames: u64, idle: u64| MirrorState { creator_pid: 1, creator_running: true, slots: vec![
///     SlotState { name: "router.shard0".into(), sequence: Some(2), counters: vec![
///         ("frames_in".into(), frames), ("bytes_in".into(), frames * 64),
///         ("duty_cycles".into(), 2 * frames), ("duty_cycles_idle".into(), idle)] },
///     SlotState { name: "daemon".into(), sequence: Some(2), counters: vec![("agents".into(), 2)] }] };
/// let m = calibrate(&read(0, 0), &read(100_000, 150_000), 1_000_000_000,
///     &DaemonSettings::default(), &CalibrateOptions::default()).unwrap();
/// assert_eq!(m.flows.len(), 1);
/// assert_eq!(m.offered_per_s(), 100_000.0);
/// // A quarter of the cycles were busy over 1 s for 100,000 frames: 2,500 ns a frame.
/// assert_eq!(m.router_service_ns, 2_500.0);
/// // 64-byte frames (header included) are 72-byte ring records.
/// assert_eq!(m.ring_frames, (1 << 20) / 72);
/// ```
pub fn calibrate(
    before: &MirrorState,
    after: &MirrorState,
    elapsed_ns: u64,
    settings: &DaemonSettings,
    options: &CalibrateOptions,
) -> Result<Model, CalibrationError> {
    if elapsed_ns == 0 {
        return Err(CalibrationError(
            "the two reads are at the same time".into(),
        ));
    }
    let delta = |counter: &str| router_delta(before, after, counter);
    let frames = delta("frames_in")?;
    let bytes = delta("bytes_in")?;
    let router_cores = router_cores(after);
    if router_cores == 0 {
        return Err(CalibrationError("the mirror has no router shard".into()));
    }
    let secs = elapsed_ns as f64 / 1e9;
    let agents = after.get("daemon", "agents").unwrap_or(0) as usize;
    let rates = match options.flows {
        Some(n) => equal_rates(frames, secs, n.max(1)),
        None => agent_rates(before, after, frames, secs)
            .unwrap_or_else(|| equal_rates(frames, secs, (agents / 2).max(1))),
    };
    if rates.len() > FLOWS_MAX {
        return Err(CalibrationError(format!("at most {FLOWS_MAX} flows")));
    }
    let (router_service_ns, service_curve) = match options.router_service_ns {
        Some(ns) => (ns, None),
        None => match router_service_time(before, after, elapsed_ns)? {
            (Some(ns), ServiceSource::TimedPasses { .. }) => {
                let curve = ServiceCurve {
                    measured_per_s: frames as f64 / secs / f64::from(router_cores),
                    measured_ns: ns,
                    saturated_ns: options.router_saturated_ns,
                };
                (ns, Some(curve).filter(ServiceCurve::is_valid))
            }
            (Some(ns), _) => (ns, None),
            (None, _) => (options.router_service_ns_default, None),
        },
    };
    // The mean frame (its wire header included) as a ring record and as a deferral entry.
    let frame = if frames > 0 {
        bytes as f64 / frames as f64
    } else {
        112.0
    };
    // A frame's own length (`bytes_in`) includes its wire header; a ring record adds its
    // record header, a deferral entry its prefix too.
    let align = |b: f64| (b / RECORD_ALIGN_BYTES as f64).ceil() * RECORD_ALIGN_BYTES as f64;
    let record_bytes = align(frame + RECORD_HEADER_BYTES as f64);
    let deferred_bytes = align(frame + (DEFERRAL_PREFIX_BYTES + RECORD_HEADER_BYTES) as f64);
    let priority = |name: &str| {
        settings
            .priorities
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1, |(_, p)| *p)
    };
    let partitions = partitions_of(after)
        .into_iter()
        .filter(|(name, _, _)| name != "router")
        .map(|(name, cpus, busy_permille)| PartitionLoad {
            priority: priority(&name),
            busy_cores: busy_permille / 1000.0 * f64::from(cpus),
            name,
            cpus,
        })
        .collect();
    Ok(Model {
        flows: rates.into_iter().map(Flow::new).collect(),
        router_cores,
        router_service_ns,
        service_cv: 1.0,
        batch_frames: settings.batch_frames.max(1),
        consumer_service_ns: options.consumer_service_ns,
        hop_ns: options.hop_ns,
        ring_frames: ((settings.ring_capacity_bytes as f64 / record_bytes) as u32).max(1),
        deferral_frames: (settings.defer_capacity_bytes as f64 / deferred_bytes) as u32,
        defer_deadline_ns: settings.defer_deadline_ms.saturating_mul(1_000_000),
        partitions,
        rebalance: settings.rebalance,
        service_curve,
    })
}

/// `n` flows sharing `frames` over `secs` equally (at most [`FLOWS_MAX`] + 1 made: the
/// caller refuses more).
fn equal_rates(frames: u64, secs: f64, n: usize) -> Vec<f64> {
    vec![frames as f64 / secs / n as f64; n.min(FLOWS_MAX + 1)]
}

/// One rate per agent whose mirror slot shows frames taken from it in the window (an agent
/// that registered inside the window counts from its registration), then the frames no slot
/// accounts for (agents without a slot, agents gone before `after`) as
/// `max(1, agents_unmirrored / 2)` flows at an equal share. `None` when no agent has a slot
/// in `after` (a daemon without agent slots): the caller falls back to the shards' total.
fn agent_rates(
    before: &MirrorState,
    after: &MirrorState,
    frames: u64,
    secs: f64,
) -> Option<Vec<f64>> {
    let now = after.agents();
    if now.is_empty() {
        return None;
    }
    let then = before.agents();
    let lends = |a: &AgentState| a.get("slot_lends");
    let sent = |a: &AgentState| {
        let frames_in = a.get("frames_in").unwrap_or(0);
        let earlier = then
            .iter()
            .find(|b| b.slot == a.slot && b.agent_id == a.agent_id && lends(b) == lends(a))
            .map_or(0, |b| b.get("frames_in").unwrap_or(0));
        frames_in.saturating_sub(earlier)
    };
    let per_agent: Vec<u64> = now.iter().map(sent).filter(|&n| n > 0).collect();
    let accounted: u64 = per_agent.iter().sum();
    let mut rates: Vec<f64> = per_agent.iter().map(|&n| n as f64 / secs).collect();
    let rest = frames.saturating_sub(accounted);
    if rest > 0 {
        let unmirrored = after.total("router.", "agents_unmirrored") as usize;
        rates.extend(equal_rates(rest, secs, (unmirrored / 2).max(1)));
    }
    if rates.is_empty() {
        rates.push(0.0); // nobody sent: one idle flow, as the shards' total would give
    }
    Some(rates)
}

/// Every partition in the daemon slot: (name, cpus, busy permille).
fn partitions_of(state: &MirrorState) -> Vec<(String, u32, f64)> {
    let Some(daemon) = state.slots.iter().find(|s| s.name == "daemon") else {
        return vec![];
    };
    daemon
        .counters
        .iter()
        .filter_map(|(name, cpus)| {
            let p = name.strip_prefix("partition.")?.strip_suffix(".cpus")?;
            let busy = daemon
                .get(&format!("partition.{p}.busy_permille"))
                .unwrap_or(0);
            Some((p.to_string(), *cpus as u32, busy as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::SlotState;

    fn shard(frames: u64, unmirrored: u64) -> SlotState {
        SlotState {
            name: "router.shard0".into(),
            sequence: Some(2),
            counters: vec![
                ("frames_in".into(), frames),
                ("bytes_in".into(), frames * 64),
                ("agents_unmirrored".into(), unmirrored),
            ],
        }
    }

    fn agent(slot: usize, id: u64, frames: u64, lends: u64) -> SlotState {
        SlotState {
            name: format!("agent.shard0.{slot}"),
            sequence: Some(2),
            counters: vec![
                ("agent_id".into(), id),
                ("frames_in".into(), frames),
                ("slot_lends".into(), lends),
            ],
        }
    }

    fn read(slots: Vec<SlotState>) -> MirrorState {
        MirrorState {
            creator_pid: 1,
            creator_running: true,
            slots,
        }
    }

    fn rates(before: &MirrorState, after: &MirrorState, options: &CalibrateOptions) -> Vec<f64> {
        let m = calibrate(
            before,
            after,
            2_000_000_000,
            &DaemonSettings::default(),
            options,
        )
        .unwrap();
        let mut r: Vec<f64> = m
            .flows
            .iter()
            .map(|f| f.class_rates_per_s.iter().sum())
            .collect();
        r.sort_by(f64::total_cmp);
        r
    }

    #[test]
    fn each_sending_agent_is_a_flow_at_its_own_rate() {
        let before = read(vec![
            shard(1_000, 0),
            agent(0, 7, 1_000, 1),
            agent(1, 8, 0, 1),
            agent(2, 9, 500, 1),
        ]);
        // Over 2 s: agent 7 sent 2,000, agent 8 nothing, slot 2 changed hands (agent 9 left,
        // agent 10 came and sent 6,000), and 2,000 frames came from agents without a slot.
        let after = read(vec![
            shard(11_000, 4),
            agent(0, 7, 3_000, 1),
            agent(1, 8, 0, 1),
            agent(2, 10, 6_000, 2),
        ]);
        let got = rates(&before, &after, &CalibrateOptions::default());
        assert_eq!(got, vec![500.0, 500.0, 1_000.0, 3_000.0]);
        // Asked for flows: an equal share each, as before.
        let options = CalibrateOptions {
            flows: Some(4),
            ..CalibrateOptions::default()
        };
        assert_eq!(rates(&before, &after, &options), vec![1_250.0; 4]);
    }

    #[test]
    fn without_agent_slots_the_agents_count_sets_the_flows() {
        let daemon = |agents| SlotState {
            name: "daemon".into(),
            sequence: Some(2),
            counters: vec![("agents".into(), agents)],
        };
        let before = read(vec![shard(0, 0), daemon(6)]);
        let after = read(vec![shard(6_000, 0), daemon(6)]);
        let got = rates(&before, &after, &CalibrateOptions::default());
        assert_eq!(got, vec![1_000.0; 3]);
        // Slots, but nobody sent: one idle flow.
        let idle = read(vec![shard(0, 0), agent(0, 7, 0, 1)]);
        assert_eq!(rates(&idle, &idle, &CalibrateOptions::default()), vec![0.0]);
    }

    /// A shard slot with duty cycles (a quarter busy) and `timed` timed busy passes of
    /// 600 ns, 2 frames each.
    fn timed_shard(frames: u64, timed: u64) -> SlotState {
        SlotState {
            name: "router.shard0".into(),
            sequence: Some(2),
            counters: vec![
                ("frames_in".into(), frames),
                ("bytes_in".into(), frames * 64),
                ("duty_cycles".into(), 4 * frames),
                ("duty_cycles_idle".into(), 3 * frames),
                ("busy_ns_sampled".into(), timed * 600),
                ("busy_passes_sampled".into(), timed),
                ("busy_frames_sampled".into(), timed * 2),
            ],
        }
    }

    #[test]
    fn timed_passes_set_the_service_time_when_there_are_enough() {
        let service = |timed: u64, frames: u64| {
            let (before, after) = (
                read(vec![timed_shard(0, 0)]),
                read(vec![timed_shard(frames, timed)]),
            );
            let m = calibrate(
                &before,
                &after,
                1_000_000_000,
                &DaemonSettings::default(),
                &CalibrateOptions::default(),
            )
            .unwrap();
            let (ns, source) = router_service_time(&before, &after, 1_000_000_000).unwrap();
            assert_eq!(ns.unwrap_or(25.0), m.router_service_ns);
            (m.router_service_ns, source)
        };
        let timed = SAMPLED_PASSES_TO_MEASURE_SERVICE;
        assert_eq!(
            service(timed, 100_000),
            (300.0, ServiceSource::TimedPasses { passes: timed })
        );
        // Timed: the model follows the load from there (100,000 frames/s at 300 ns: 3% busy).
        let m = calibrate(
            &read(vec![timed_shard(0, 0)]),
            &read(vec![timed_shard(100_000, timed)]),
            1_000_000_000,
            &DaemonSettings::default(),
            &CalibrateOptions::default(),
        )
        .unwrap();
        let curve = m.service_curve.unwrap();
        assert_eq!(
            (curve.measured_per_s, curve.measured_ns, curve.saturated_ns),
            (100_000.0, 300.0, 25.0)
        );
        // Too few timed passes: the busy ratio's upper bound (a quarter of 1 s over
        // 100,000 frames), then nothing below 10,000 frames.
        assert_eq!(
            service(timed - 1, 100_000),
            (2_500.0, ServiceSource::DutyCycles)
        );
        assert_eq!(service(0, 9_999), (25.0, ServiceSource::NotMeasured));
        // Asked for a service time: taken as given.
        let m = calibrate(
            &read(vec![timed_shard(0, 0)]),
            &read(vec![timed_shard(100_000, timed)]),
            1_000_000_000,
            &DaemonSettings::default(),
            &CalibrateOptions {
                router_service_ns: Some(40.0),
                ..CalibrateOptions::default()
            },
        )
        .unwrap();
        assert_eq!(m.router_service_ns, 40.0);
    }
}
