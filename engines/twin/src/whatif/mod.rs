//! What-if simulation: a queueing [`Model`] of the daemon ([`model`]), calibrated from the
//! live mirror ([`calibrate`]) or loaded from a saved snapshot (the model as JSON), changed
//! by [`Scenario`]s, and run by two simulators that predict throughput, latency
//! percentiles, deferrals, dead letters and utilisation ([`Outcome`]):
//!
//! - [`packet`]: discrete events, frame by frame; exact for the model, cost per frame.
//! - [`flow`]: fluid queues in time steps with queueing formulas; hours in milliseconds.
//!
//! ```
//! use agentwire_twin::whatif::{flow, Model, Scenario};
//! let mut m = Model::example();
//! let base = flow::simulate(&m, 60.0, 100.0, &|_| 1.0);
//! "load=5".parse::<Scenario>().unwrap().apply(&mut m).unwrap();
//! let five = flow::simulate(&m, 60.0, 100.0, &|_| 1.0);
//! assert!(five.latency.p99_ns > base.latency.p99_ns);
//! ```

mod calibrate;
pub mod flow;
mod model;
mod outcome;
pub mod packet;
mod scenario;
mod service_curve;

pub use calibrate::{
    calibrate, router_service_time, CalibrateOptions, CalibrationError, DaemonSettings,
    ServiceSource, FRAMES_TO_MEASURE_SERVICE, SAMPLED_PASSES_TO_MEASURE_SERVICE,
};
pub use model::{
    Flow, Model, ModelError, PartitionLoad, Rebalance, CLASSES, FLOWS_MAX, RATE_MAX_PER_S,
    ROUTER_CORES_MAX, TIME_MAX_NS,
};
pub use outcome::{Outcome, PartitionOutcome, Percentiles};
pub use scenario::{rebalance, Count, Scenario, ScenarioError};
pub use service_curve::ServiceCurve;

/// The partitions of `model` as an outcome reports them.
fn partition_outcomes(model: &Model) -> Vec<PartitionOutcome> {
    model
        .partitions
        .iter()
        .map(|p| PartitionOutcome {
            name: p.name.clone(),
            cpus: p.cpus,
            utilisation: p.utilisation(),
        })
        .collect()
}

/// Models the simulators' tests share.
#[cfg(test)]
pub(crate) mod test_models {
    use super::{Flow, Model};

    /// 10,000 frames a second to a consumer that reads 5,000 (200 µs a frame), with a ring
    /// and a deferral of 64 frames and a 1 ms deadline: half the frames are dead-lettered.
    pub(crate) fn slow_consumer() -> Model {
        Model {
            flows: vec![Flow::new(10_000.0)],
            router_service_ns: 1_000.0,
            consumer_service_ns: 200_000.0,
            ring_frames: 64,
            deferral_frames: 64,
            defer_deadline_ns: 1_000_000,
            ..Model::example()
        }
    }
}
