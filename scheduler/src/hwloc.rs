//! Reads a [`Machine`] through hwloc (hwlocality): the live machine, or an hwloc XML export
//! (`lstopo machine.xml` on the machine you want to plan for).

use crate::machine::{Core, CoreKind, Device, DeviceKind, Machine, NumaNode};
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::{OSDeviceType, ObjectType};
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::{BuildFlags, TypeFilter};
use hwlocality::Topology;
use std::path::Path;

/// Why a topology could not be read.
///
/// ```
/// let e = agentwire_scheduler::hwloc::load(Some(std::path::Path::new("/nonexistent.xml"))).unwrap_err();
/// assert!(e.to_string().contains("/nonexistent.xml"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// hwloc refused the XML file.
    #[error("cannot read hwloc topology {path}: {reason} (export one with `lstopo FILE.xml`)")]
    Xml {
        /// The file.
        path: String,
        /// hwloc's complaint.
        reason: String,
    },
    /// hwloc could not discover the live machine.
    #[error("hwloc could not discover this machine: {0}")]
    Discovery(String),
}

/// Loads the live machine (`None`) or an hwloc XML export, with I/O devices (GPUs, NICs,
/// disks) hwloc considers important.
///
/// ```
/// let m = agentwire_scheduler::hwloc::load(None).unwrap();
/// assert!(!m.cores.is_empty());
/// ```
pub fn load(xml: Option<&Path>) -> Result<Machine, TopologyError> {
    load_with(xml, false)
}

/// Loads the live machine with every PU and NUMA node the kernel has, including those this
/// process's cgroup cpuset leaves out (hwloc drops them by default). What a server is tuned
/// for is the whole machine, while the shell that asks may already be confined to the
/// cores left to the OS (`agentwire plan --kernel-cmdline`, `--cpuset`).
///
/// ```
/// let whole = agentwire_scheduler::hwloc::load_whole_system().unwrap();
/// assert!(whole.pu_count() >= agentwire_scheduler::hwloc::load(None).unwrap().pu_count());
/// ```
pub fn load_whole_system() -> Result<Machine, TopologyError> {
    load_with(None, true)
}

fn load_with(xml: Option<&Path>, include_disallowed: bool) -> Result<Machine, TopologyError> {
    let xml_error = |reason: String| TopologyError::Xml {
        path: xml.map(|p| p.display().to_string()).unwrap_or_default(),
        reason,
    };
    let mut builder = Topology::builder();
    if let Some(path) = xml {
        if !path.is_file() {
            return Err(xml_error("no such file".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| xml_error(e.to_string()))?;
        builder = builder
            .from_xml(&xml_for_hwloc2(&text))
            .map_err(|e| xml_error(e.to_string()))?;
    }
    let mut builder = builder
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| TopologyError::Discovery(e.to_string()))?;
    if include_disallowed {
        builder = builder
            .with_flags(BuildFlags::INCLUDE_DISALLOWED)
            .map_err(|e| TopologyError::Discovery(e.to_string()))?;
    }
    let topology = builder.build().map_err(|e| match xml {
        Some(_) => xml_error(e.to_string()),
        None => TopologyError::Discovery(e.to_string()),
    })?;
    let source = xml.map_or_else(|| "live".to_string(), |p| p.display().to_string());
    Ok(machine_of(&topology, source))
}

fn pus_of(set: &CpuSet) -> Vec<usize> {
    set.iter_set().map(usize::from).collect()
}

fn machine_of(topology: &Topology, source: String) -> Machine {
    let packages = topology
        .objects_with_type(ObjectType::Package)
        .count()
        .max(1);
    let numa_objects: Vec<&TopologyObject> =
        topology.objects_with_type(ObjectType::NUMANode).collect();
    let mut numa_nodes: Vec<NumaNode> = numa_objects
        .iter()
        .map(|n| NumaNode {
            os_index: n.os_index().unwrap_or(0) as u32,
            memory_bytes: n.total_memory(),
        })
        .collect();
    numa_nodes.sort_by_key(|n| n.os_index);
    let numa_distances = distances(topology, &numa_nodes);
    let performance = performance_set(topology);
    let node_of_pu = |pu: usize| -> Option<u32> {
        numa_objects
            .iter()
            .find(|n| n.cpuset().is_some_and(|s| s.is_set(pu)))
            .and_then(|n| n.os_index())
            .map(|i| i as u32)
    };
    let package_of = |o: &TopologyObject| {
        o.first_ancestor_with_type(ObjectType::Package)
            .map_or(0, TopologyObject::logical_index)
    };
    let kind_of = |pus: &[usize]| match &performance {
        Some(p) if !pus.iter().any(|&pu| p.is_set(pu)) => CoreKind::Efficiency,
        _ => CoreKind::Performance,
    };
    // A machine whose export has no Core level (some VMs, some fake topologies): every PU
    // is a core of its own.
    let core_type = if topology.objects_with_type(ObjectType::Core).len() > 0 {
        ObjectType::Core
    } else {
        ObjectType::PU
    };
    let cores = topology
        .objects_with_type(core_type)
        .enumerate()
        .filter_map(|(index, o)| {
            let pus = pus_of(&o.cpuset()?.clone_target());
            let first = *pus.first()?;
            Some(Core {
                index,
                kind: kind_of(&pus),
                numa_node: node_of_pu(first),
                package: package_of(o),
                pus,
            })
        })
        .collect();
    let devices = topology
        .objects_with_type(ObjectType::OSDevice)
        .filter_map(|o| {
            let Some(ObjectAttributes::OSDevice(attr)) = o.attributes() else {
                return None;
            };
            let kind = match attr.device_type() {
                OSDeviceType::GPU | OSDeviceType::CoProcessor => DeviceKind::Gpu,
                OSDeviceType::Network | OSDeviceType::OpenFabrics => DeviceKind::Network,
                OSDeviceType::Storage => DeviceKind::Storage,
                _ => DeviceKind::Other,
            };
            let numa_node = o
                .first_non_io_ancestor()
                .and_then(|a| a.nodeset())
                .and_then(|s| s.first_set())
                .map(|i| usize::from(i) as u32);
            Some(Device {
                kind,
                name: o
                    .name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into()),
                numa_node,
                source: "hwloc".into(),
            })
        })
        .collect();
    let mut machine = Machine {
        source,
        packages,
        numa_nodes,
        numa_distances,
        cores,
        devices: Vec::new(),
    };
    machine.add_devices(devices);
    machine
}

/// The PUs of the most powerful CPU kind, or `None` when the machine has one kind (or hwloc
/// knows none): then every core counts as a performance core. Kinds come ordered from most
/// power-efficient to most powerful when hwloc knows their efficiency; when it does not,
/// the kind with the highest `FrequencyMaxMHz` is taken as the performance kind.
fn performance_set(topology: &Topology) -> Option<CpuSet> {
    let kinds: Vec<_> = topology.cpu_kinds().ok()?.collect();
    if kinds.len() < 2 {
        return None;
    }
    if kinds.iter().all(|k| k.efficiency.is_some()) {
        return kinds.last().map(|k| k.cpuset.clone());
    }
    let frequency = |k: &hwlocality::cpu::kind::CpuKind<'_>| {
        k.infos
            .iter()
            .find(|i| i.name().to_bytes() == b"FrequencyMaxMHz")
            .and_then(|i| i.value().to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    kinds
        .iter()
        .max_by_key(|k| frequency(k))
        .map(|k| k.cpuset.clone())
}

fn distances(topology: &Topology, nodes: &[NumaNode]) -> Option<Vec<Vec<u64>>> {
    if nodes.len() < 2 {
        return None;
    }
    let all = topology
        .distances_with_type(None, ObjectType::NUMANode)
        .ok()?;
    let matrix = all.first()?;
    let order: Vec<Option<usize>> = matrix
        .objects()
        .map(|o| {
            let os = o?.os_index()? as u32;
            nodes.iter().position(|n| n.os_index == os)
        })
        .collect();
    let mut out = vec![vec![0u64; nodes.len()]; nodes.len()];
    for ((i, j), d) in matrix.enumerate_distances() {
        if let (Some(Some(a)), Some(Some(b))) = (order.get(i), order.get(j)) {
            out[*a][*b] = d;
        }
    }
    Some(out)
}

/// hwloc 3.x writes `<topology version="3.0">` and OS device types as bit flags; the hwloc
/// 2.x library Debian ships refuses the version and reads the types as its own enum. For a
/// 3.x export (hwloc's own test topologies are), this rewrites both so hwloc 2.x reads it:
/// the version to 2.0 and each device type to its 2.x value (the most specific bit wins:
/// GPU, co-processor, OpenFabrics, network, DMA, storage). 2.x exports pass unchanged.
///
/// ```
/// use agentwire_scheduler::hwloc::xml_for_hwloc2;
/// let v3 = r#"<topology version="3.0"><object type="OSDev" osdev_type="16"/></topology>"#;
/// assert_eq!(xml_for_hwloc2(v3), r#"<topology version="2.0"><object type="OSDev" osdev_type="2"/></topology>"#);
/// ```
pub fn xml_for_hwloc2(text: &str) -> String {
    const V3: &str = "<topology version=\"3.";
    let Some(at) = text.find(V3) else {
        return text.to_string();
    };
    let version_end = text[at + V3.len()..]
        .find('"')
        .map_or(text.len(), |i| at + V3.len() + i);
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..at]);
    out.push_str("<topology version=\"2.0");
    let mut rest = &text[version_end..];
    const KEY: &str = "osdev_type=\"";
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        let bits: u64 = rest[..end].trim().parse().unwrap_or(0);
        // hwloc 3: STORAGE 1, MEMORY 2, GPU 4, COPROC 8, NETWORK 16, OPENFABRICS 32, DMA 64.
        // hwloc 2: BLOCK 0, GPU 1, NETWORK 2, OPENFABRICS 3, DMA 4, COPROC 5.
        let v2 = [(4, 1), (8, 5), (32, 3), (16, 2), (64, 4)]
            .iter()
            .find(|(bit, _)| bits & bit != 0)
            .map_or(0, |(_, v)| *v);
        out.push_str(&v2.to_string());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
