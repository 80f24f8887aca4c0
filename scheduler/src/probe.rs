//! Device probes: accelerators that hwloc's I/O discovery does not name as such. The
//! accelerator crate supplies them (NVIDIA GPUs through cudarc when a driver is present;
//! NPUs through OpenVINO's device list, filled by the accel issue); the daemon and
//! `agentwire topology` run them on the live machine and add what they find.
//!
//! A probe that finds nothing, or cannot run (no driver, no runtime), is not an error: the
//! machine simply has no such device, and the report line says why in one line.
//!
//! ```
//! use agentwire_scheduler::machine::{Device, DeviceKind, MachineBuilder};
//! use agentwire_scheduler::probe::{apply_probes, DeviceProbe};
//! struct FakeNpu;
//! impl DeviceProbe for FakeNpu {
//!     fn name(&self) -> &str { "fake-npu" }
//!     fn probe(&self) -> Result<Vec<Device>, String> {
//!         Ok(vec![Device { kind: DeviceKind::Npu, name: "NPU".into(), numa_node: Some(0), source: "fake-npu".into() }])
//!     }
//! }
//! let mut m = MachineBuilder::new("vm").cores(0, 2, 1).build();
//! let lines = apply_probes(&mut m, &[&FakeNpu]);
//! assert_eq!(m.accelerators(DeviceKind::Npu).count(), 1);
//! assert!(lines[0].contains("1 device"));
//! ```

use crate::machine::{Device, Machine};

/// A source of devices.
///
/// ```
/// # use agentwire_scheduler::{machine::Device, probe::DeviceProbe};
/// struct Nothing;
/// impl DeviceProbe for Nothing {
///     fn name(&self) -> &str { "nothing" }
///     fn probe(&self) -> Result<Vec<Device>, String> { Err("no runtime installed".into()) }
/// }
/// assert!(Nothing.probe().is_err());
/// ```
pub trait DeviceProbe: Send + Sync {
    /// Short name for the report (`cuda`, `openvino`).
    fn name(&self) -> &str;
    /// The devices found, or why the probe could not look (no driver, no runtime).
    fn probe(&self) -> Result<Vec<Device>, String>;
}

/// Runs each probe and adds its devices to `machine` (a device whose name the machine
/// already lists, e.g. from hwloc, is not added twice). Returns one line per probe.
///
/// ```
/// # use agentwire_scheduler::{machine::MachineBuilder, probe::apply_probes};
/// let mut m = MachineBuilder::new("vm").cores(0, 1, 1).build();
/// assert!(apply_probes(&mut m, &[]).is_empty());
/// ```
pub fn apply_probes(machine: &mut Machine, probes: &[&dyn DeviceProbe]) -> Vec<String> {
    let mut lines = Vec::with_capacity(probes.len());
    for probe in probes {
        match probe.probe() {
            Ok(found) => {
                let fresh: Vec<Device> = found
                    .into_iter()
                    .filter(|d| !machine.devices.iter().any(|m| m.name == d.name))
                    .collect();
                let names: Vec<String> = fresh
                    .iter()
                    .map(|d| format!("{} {} ({})", d.kind, d.name, d.source))
                    .collect();
                lines.push(if fresh.is_empty() {
                    format!("device probe {}: no devices", probe.name())
                } else {
                    format!(
                        "device probe {}: {} device(s): {}",
                        probe.name(),
                        fresh.len(),
                        names.join(", ")
                    )
                });
                machine.add_devices(fresh);
            }
            Err(why) => lines.push(format!("device probe {}: unavailable: {why}", probe.name())),
        }
    }
    lines
}
