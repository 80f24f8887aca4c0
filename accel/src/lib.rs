//! agentwire-accel: compute back ends and accelerator probes.
//!
//! So far: [`cuda::CudaProbe`], which lists NVIDIA GPUs through the CUDA driver API
//! (cudarc, loaded at run time: the crate builds and runs on machines without CUDA) for the
//! scheduler's topology, and [`probes`], the probes the daemon runs at start. The NPU probe
//! (OpenVINO's device list) and the CPU/GPU/NPU back ends arrive with the accelerator issue.
//!
//! ```
//! for probe in agentwire_accel::probes() {
//!     println!("{}: {:?}", probe.name(), probe.probe().map(|d| d.len()));
//! }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cuda;

use agentwire_scheduler::probe::DeviceProbe;

/// Every device probe this build has, for [`agentwire_scheduler::probe::apply_probes`].
///
/// ```
/// assert!(agentwire_accel::probes().iter().any(|p| p.name() == "cuda"));
/// ```
pub fn probes() -> Vec<Box<dyn DeviceProbe>> {
    vec![Box::new(cuda::CudaProbe)]
}
