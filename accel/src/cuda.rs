//! NVIDIA GPUs through the CUDA driver API (cudarc with dynamic loading): no CUDA toolkit is
//! needed to build, and a machine without a driver gets one clear line instead of a panic
//! (cudarc panics when asked for a function of a library it could not load, so the
//! library's presence is checked first).
//!
//! Each GPU is reported as `cudaN` with its name and PCI address; its NUMA node comes from
//! `/sys/bus/pci/devices/<address>/numa_node`, so the planner gives GPU partitions
//! NUMA-near cores.
//!
//! ```
//! use agentwire_scheduler::probe::DeviceProbe;
//! match agentwire_accel::cuda::CudaProbe.probe() {
//!     Ok(gpus) => println!("{} NVIDIA GPU(s)", gpus.len()),
//!     Err(why) => println!("no CUDA: {why}"),
//! }
//! ```

use agentwire_scheduler::machine::{Device, DeviceKind};
use agentwire_scheduler::probe::DeviceProbe;
use cudarc::driver::{result, sys};

/// Lists NVIDIA GPUs when a CUDA driver is installed.
///
/// ```
/// use agentwire_scheduler::probe::DeviceProbe;
/// assert_eq!(agentwire_accel::cuda::CudaProbe.name(), "cuda");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaProbe;

/// Whether the CUDA driver library (libcuda) can be loaded.
///
/// ```
/// let _ = agentwire_accel::cuda::driver_present();
/// ```
pub fn driver_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the candidate library names; it calls
    // no CUDA function and touches no device.
    unsafe { sys::is_culib_present() }
}

/// The NUMA node of a PCI device from sysfs (`-1` or a missing file: none).
///
/// ```
/// assert_eq!(agentwire_accel::cuda::pci_numa_node("ffff:ff:1f.7"), None);
/// ```
pub fn pci_numa_node(address: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/sys/bus/pci/devices/{address}/numa_node")).ok()?;
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

fn attribute(dev: sys::CUdevice, attrib: sys::CUdevice_attribute) -> Option<i32> {
    // SAFETY: `dev` came from cuDeviceGet for an ordinal below cuDeviceGetCount, as
    // get_attribute requires.
    unsafe { result::device::get_attribute(dev, attrib) }.ok()
}

impl DeviceProbe for CudaProbe {
    fn name(&self) -> &str {
        "cuda"
    }

    fn probe(&self) -> Result<Vec<Device>, String> {
        if !driver_present() {
            return Err("libcuda not found (no NVIDIA driver installed)".into());
        }
        result::init().map_err(|e| format!("cuInit failed: {e}"))?;
        let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e}"))?;
        let mut gpus = Vec::with_capacity(count.max(0) as usize);
        for ordinal in 0..count {
            let dev =
                result::device::get(ordinal).map_err(|e| format!("cuDeviceGet({ordinal}): {e}"))?;
            let model = result::device::get_name(dev).unwrap_or_else(|_| "unknown".into());
            use sys::CUdevice_attribute as A;
            let pci = match (
                attribute(dev, A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
                attribute(dev, A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
                attribute(dev, A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
            ) {
                (Some(domain), Some(bus), Some(device)) => {
                    Some(format!("{domain:04x}:{bus:02x}:{device:02x}.0"))
                }
                _ => None,
            };
            gpus.push(Device {
                kind: DeviceKind::Gpu,
                name: format!("cuda{ordinal}"),
                numa_node: pci.as_deref().and_then(pci_numa_node),
                source: match &pci {
                    Some(address) => format!("cudarc: {model} at {address}"),
                    None => format!("cudarc: {model}"),
                },
            });
        }
        Ok(gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reports_gpus_or_says_why_not_and_never_panics() {
        match CudaProbe.probe() {
            Ok(gpus) => {
                assert!(driver_present());
                for (i, gpu) in gpus.iter().enumerate() {
                    assert_eq!(gpu.name, format!("cuda{i}"));
                    assert_eq!(gpu.kind, DeviceKind::Gpu);
                    assert!(gpu.source.starts_with("cudarc: "), "{}", gpu.source);
                }
            }
            Err(why) => {
                // This VM: no driver, one clear reason.
                if !driver_present() {
                    assert_eq!(why, "libcuda not found (no NVIDIA driver installed)");
                }
            }
        }
    }

    #[test]
    fn pci_numa_node_reads_sysfs_and_rejects_minus_one() {
        assert_eq!(pci_numa_node("not-a-device"), None);
        // Any PCI device this machine has: its node is a number or none (-1), never a panic.
        if let Ok(entries) = std::fs::read_dir("/sys/bus/pci/devices") {
            for e in entries.flatten() {
                let _ = pci_numa_node(e.file_name().to_str().unwrap());
            }
        }
    }
}
