//! What a simulation predicts: throughput, latency percentiles, dead letters, utilisation.

use serde::Serialize;

/// Latency percentiles, ns.
///
/// ```
/// let p = agentwire_twin::whatif::Percentiles { p50_ns: 1.0, p90_ns: 2.0, p99_ns: 3.0, p999_ns: 4.0 };
/// assert!(p.p99_ns > p.p50_ns);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// Median.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// 99.9th percentile.
    pub p999_ns: f64,
}

/// An engine partition after the scenario and the rebalancing policy.
///
/// ```
/// let p = agentwire_twin::whatif::PartitionOutcome { name: "twin".into(), cpus: 1, utilisation: 0.1 };
/// assert_eq!(p.cpus, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionOutcome {
    /// The partition.
    pub name: String,
    /// Its cores.
    pub cpus: u32,
    /// Busy ratio on them (above 1: overloaded).
    pub utilisation: f64,
}

/// A simulation's prediction.
///
/// ```
/// let o = agentwire_twin::whatif::Outcome::default();
/// assert_eq!(o.throughput_per_s, 0.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Outcome {
    /// Which simulator: `packet` (discrete events, frame by frame) or `flow` (fluid steps
    /// with queueing formulas).
    pub simulator: &'static str,
    /// Simulated seconds measured (after the warm-up).
    pub simulated_s: f64,
    /// Frames a second the producers offered.
    pub offered_per_s: f64,
    /// Frames a second consumers received.
    pub throughput_per_s: f64,
    /// Latency from a frame's intended send to its consumer having read it.
    pub latency: Percentiles,
    /// Frames a second that waited in a deferral.
    pub deferred_per_s: f64,
    /// Frames a second sent to the dead-letter queue (deferral deadline passed).
    pub dead_lettered_per_s: f64,
    /// Frames still waiting in producers' lanes at the end (growing: the router is
    /// overloaded).
    pub backlog_frames: f64,
    /// Packet simulator: arrivals refused because their producer's lane held
    /// [`super::packet::LANE_FRAMES_MAX`] frames (a stalled producer; not simulated further).
    pub producer_stalled_frames: f64,
    /// Busy ratio of each router core.
    pub router_utilisation: Vec<f64>,
    /// Busy ratio of the busiest consumer.
    pub consumer_utilisation_max: f64,
    /// Engine partitions.
    pub partitions: Vec<PartitionOutcome>,
    /// Events simulated (packet simulator; the flow simulator counts steps).
    pub events: u64,
}
