//! The queueing model of the daemon the what-if simulators run: flows of frames from
//! producers through the router shards to consumers, with the capacities and policies that
//! shape them, and the engine partitions' load.

use super::service_curve::ServiceCurve;
use serde::{Deserialize, Serialize};

/// Priority classes of a frame (tx lanes of an agent), as on the wire.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::CLASSES, 4);
/// ```
pub const CLASSES: usize = agentwire_shm::segment::TX_LANES;

/// The most flows a model may have.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::FLOWS_MAX, 100_000);
/// ```
pub const FLOWS_MAX: usize = 100_000;

/// The most router cores a model may have.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::ROUTER_CORES_MAX, 1024);
/// ```
pub const ROUTER_CORES_MAX: u32 = 1024;

/// The largest time a model field may hold (a service time, the hop, the deadline), ns: an
/// hour.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::TIME_MAX_NS, 3.6e12);
/// ```
pub const TIME_MAX_NS: f64 = 3.6e12;

/// The highest rate a flow may have, frames per second.
///
/// ```
/// assert_eq!(agentwire_twin::whatif::RATE_MAX_PER_S, 1e10);
/// ```
pub const RATE_MAX_PER_S: f64 = 1e10;

/// One producer's traffic to its own consumer, split over the priority classes.
///
/// ```
/// let f = agentwire_twin::whatif::Flow::new(1000.0);
/// assert_eq!(f.rate_per_s(), 1000.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// Frames per second in each priority class.
    pub class_rates_per_s: [f64; CLASSES],
}

impl Flow {
    /// A flow of `rate_per_s` frames a second, all in class 1 (the default send).
    ///
    /// ```
    /// let f = agentwire_twin::whatif::Flow::new(10.0);
    /// assert_eq!(f.class_rates_per_s[1], 10.0);
    /// ```
    pub fn new(rate_per_s: f64) -> Self {
        let mut class_rates_per_s = [0.0; CLASSES];
        class_rates_per_s[1] = rate_per_s;
        Self { class_rates_per_s }
    }

    /// Frames per second over every class.
    ///
    /// ```
    /// let f = agentwire_twin::whatif::Flow { class_rates_per_s: [1.0, 2.0, 0.0, 3.0] };
    /// assert_eq!(f.rate_per_s(), 6.0);
    /// ```
    pub fn rate_per_s(&self) -> f64 {
        self.class_rates_per_s.iter().sum()
    }
}

/// An engine partition's load: the cores it has and how many of them its jobs keep busy.
///
/// ```
/// let p = agentwire_twin::whatif::PartitionLoad { name: "twin".into(), cpus: 2, busy_cores: 0.5, priority: 1 };
/// assert_eq!(p.utilisation(), 0.25);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionLoad {
    /// The partition's name (`streaming`, `twin`, ...).
    pub name: String,
    /// Cores it has.
    pub cpus: u32,
    /// Cores' worth of work its jobs do (busy ratio × cpus).
    pub busy_cores: f64,
    /// Rebalancing priority: a busier partition borrows from lower priorities.
    pub priority: u32,
}

impl PartitionLoad {
    /// Busy ratio on its cores (above 1: more work than its cores do; jobs queue up).
    ///
    /// ```
    /// let p = agentwire_twin::whatif::PartitionLoad { name: "nas".into(), cpus: 0, busy_cores: 0.0, priority: 1 };
    /// assert_eq!(p.utilisation(), 0.0);
    /// ```
    pub fn utilisation(&self) -> f64 {
        if self.cpus == 0 {
            if self.busy_cores > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        } else {
            self.busy_cores / f64::from(self.cpus)
        }
    }
}

/// The rebalancing policy between engine partitions (the daemon's `[rebalance]`).
///
/// ```
/// let r = agentwire_twin::whatif::Rebalance::default();
/// assert!(r.enabled && r.high_water > r.low_water);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rebalance {
    /// Whether partitions lend and borrow cores.
    pub enabled: bool,
    /// A partition busier than this borrows a core.
    pub high_water: f64,
    /// A partition busy below this (after lending) may lend one.
    pub low_water: f64,
}

impl Default for Rebalance {
    fn default() -> Self {
        Self {
            enabled: true,
            high_water: 0.85,
            low_water: 0.30,
        }
    }
}

/// The daemon as a network of queues, calibrated from its mirror ([`super::calibrate`]) or
/// loaded from a saved snapshot (JSON), changed by scenarios ([`super::Scenario`]).
///
/// Producers' frames wait in their tx lanes (backpressure: a producer never loses a frame)
/// until their router shard serves them (flow `i` on shard `i mod router_cores`; each shard
/// visits its flows in turn, each lane for its class's budget
/// (`agentwire_router::lane_batch_frames`), a frame costing
/// `router_service_ns` on average with coefficient of variation `service_cv`). A routed
/// frame enters its consumer's rx ring (`ring_frames`); when that is full it waits in the
/// consumer's deferral (`deferral_frames`), whose oldest frame goes to the dead-letter queue
/// once it has waited `defer_deadline_ns` (as the router expires a deferral's head); when
/// the deferral is full too the shard skips that flow and its frames wait in the lane.
/// Consumers take `consumer_service_ns` per frame. Every frame's latency adds `hop_ns`: what
/// the queues do not show (ring polls, wake-ups, copies).
///
/// ```
/// let m = agentwire_twin::whatif::Model::example();
/// assert!(m.validate().is_ok());
/// assert!(m.offered_per_s() > 0.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// One per producer, each to its own consumer.
    pub flows: Vec<Flow>,
    /// Router shards, one core each.
    pub router_cores: u32,
    /// Mean router core time per frame, ns.
    pub router_service_ns: f64,
    /// Coefficient of variation of that time, 0 (constant) to 1 (exponential).
    pub service_cv: f64,
    /// Frames a shard routes from one lane per visit (the daemon's `router_batch_frames`).
    pub batch_frames: u32,
    /// Consumer time per frame, ns.
    pub consumer_service_ns: f64,
    /// Latency outside the queues, ns.
    pub hop_ns: f64,
    /// A consumer's rx ring, in frames.
    pub ring_frames: u32,
    /// A consumer's deferral, in frames (0: none).
    pub deferral_frames: u32,
    /// How long a deferred frame waits before the dead-letter queue, ns (0: forever).
    pub defer_deadline_ns: u64,
    /// The engine partitions.
    pub partitions: Vec<PartitionLoad>,
    /// How partitions lend cores.
    pub rebalance: Rebalance,
    /// How `router_service_ns` follows the load per router core when a scenario changes it
    /// ([`Model::follow_load`]); none (a service time given by hand, or not measured from
    /// timed duty cycles): it stays as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_curve: Option<ServiceCurve>,
}

/// A model that cannot be simulated, and why.
///
/// ```
/// let e = agentwire_twin::whatif::ModelError("router_cores must be at least 1".into());
/// assert_eq!(e.to_string(), "bad model: router_cores must be at least 1");
/// ```
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad model: {0}")]
pub struct ModelError(pub String);

impl Model {
    /// A small model: two flows of 20,000 frames a second on one router core.
    ///
    /// ```
    /// assert_eq!(agentwire_twin::whatif::Model::example().flows.len(), 2);
    /// ```
    pub fn example() -> Self {
        Self {
            flows: vec![Flow::new(20_000.0), Flow::new(20_000.0)],
            router_cores: 1,
            router_service_ns: 2_000.0,
            service_cv: 1.0,
            batch_frames: 32,
            consumer_service_ns: 500.0,
            hop_ns: 0.0,
            ring_frames: 1024,
            deferral_frames: 256,
            defer_deadline_ns: 1_000_000_000,
            partitions: vec![],
            rebalance: Rebalance::default(),
            service_curve: None,
        }
    }

    /// Sets `router_service_ns` from `service_curve` (when there is one) for the load per
    /// router core the flows offer now. Scenarios call it after they change the load or the
    /// cores.
    ///
    /// ```
    /// use agentwire_twin::whatif::{Model, ServiceCurve};
    /// let mut m = Model::example(); // 40,000 frames/s on one core
    /// m.service_curve = Some(ServiceCurve { measured_per_s: 20_000.0, measured_ns: 9_000.0, saturated_ns: 25.0 });
    /// m.follow_load();
    /// assert!(m.router_service_ns < 9_000.0 && m.router_service_ns > 25.0);
    /// ```
    pub fn follow_load(&mut self) {
        if let Some(curve) = self.service_curve {
            let per_core = self.offered_per_s() / f64::from(self.router_cores.max(1));
            self.router_service_ns = curve.service_ns_at(per_core);
        }
    }

    /// Frames per second the producers offer.
    ///
    /// ```
    /// assert_eq!(agentwire_twin::whatif::Model::example().offered_per_s(), 40_000.0);
    /// ```
    pub fn offered_per_s(&self) -> f64 {
        self.flows.iter().map(Flow::rate_per_s).sum()
    }

    /// The shard that serves flow `flow`.
    ///
    /// ```
    /// let mut m = agentwire_twin::whatif::Model::example();
    /// m.router_cores = 2;
    /// assert_eq!(m.shard_of(3), 1);
    /// ```
    pub fn shard_of(&self, flow: usize) -> usize {
        flow % self.router_cores.max(1) as usize
    }

    /// Checks every field is in range, naming the first that is not.
    ///
    /// ```
    /// let mut m = agentwire_twin::whatif::Model::example();
    /// m.router_cores = 0;
    /// assert!(m.validate().unwrap_err().to_string().contains("router_cores"));
    /// ```
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str| Err(ModelError(what.to_string()));
        let time_ok = |v: f64| v.is_finite() && (0.0..=TIME_MAX_NS).contains(&v);
        if self.flows.is_empty() || self.flows.len() > FLOWS_MAX {
            return bad(&format!("flows: from 1 to {FLOWS_MAX}"));
        }
        if self.router_cores == 0 || self.router_cores > ROUTER_CORES_MAX {
            return bad(&format!(
                "router_cores must be from 1 to {ROUTER_CORES_MAX}"
            ));
        }
        if !(time_ok(self.router_service_ns) && self.router_service_ns > 0.0) {
            return bad("router_service_ns must be above 0 and at most an hour");
        }
        if !(0.0..=1.0).contains(&self.service_cv) {
            return bad("service_cv must be within 0 to 1");
        }
        if self.batch_frames == 0 || self.batch_frames > 1 << 20 {
            return bad("batch_frames must be from 1 to 1048576");
        }
        if !time_ok(self.consumer_service_ns) || !time_ok(self.hop_ns) {
            return bad("consumer_service_ns and hop_ns must be from 0 to an hour");
        }
        if self.defer_deadline_ns as f64 > TIME_MAX_NS {
            return bad("defer_deadline_ns must be at most an hour");
        }
        if self.ring_frames == 0 || self.ring_frames.checked_add(self.deferral_frames).is_none() {
            return bad(
                "ring_frames must be at least 1, and ring_frames + deferral_frames fit in 32 bits",
            );
        }
        let rates_ok = self.flows.iter().all(|f| {
            f.class_rates_per_s
                .iter()
                .all(|r| r.is_finite() && (0.0..=RATE_MAX_PER_S).contains(r))
        });
        if !rates_ok {
            return bad("flow rates must be from 0 to 1e10 frames a second");
        }
        let partitions_ok = self.partitions.iter().all(|p| {
            p.cpus <= 65_536 && p.busy_cores.is_finite() && (0.0..=65_536.0).contains(&p.busy_cores)
        });
        if !partitions_ok {
            return bad("partition cpus and busy_cores must be from 0 to 65536");
        }
        if self.service_curve.is_some_and(|c| !c.is_valid()) {
            return bad("service_curve: positive times, saturated_ns below measured_ns, and measured_per_s × measured_ns below 1 s");
        }
        let r = &self.rebalance;
        if !(r.low_water >= 0.0 && r.low_water < r.high_water && r.high_water <= 1.0) {
            return bad("rebalance: 0 <= low_water < high_water <= 1");
        }
        Ok(())
    }
}
