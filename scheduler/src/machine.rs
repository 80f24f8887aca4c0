//! The machine as the planner sees it: cores with their hardware threads (PUs), core kinds,
//! NUMA nodes with distances, and accelerators. Built from hwloc ([`crate::hwloc`]) for the
//! live machine or an XML export, or by hand ([`MachineBuilder`]) for synthetic machines.

use serde::Serialize;

/// What a core is for, from hwloc's CPU kinds: the highest-performance kind is
/// `Performance`; every other kind is `Efficiency`. A machine with one kind has only
/// performance cores.
///
/// ```
/// use agentwire_scheduler::machine::CoreKind;
/// assert_eq!(CoreKind::Performance.to_string(), "performance");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoreKind {
    /// The most powerful kind (P-cores).
    Performance,
    /// Any less powerful, more power-efficient kind (E-cores).
    Efficiency,
}

impl std::fmt::Display for CoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoreKind::Performance => "performance",
            CoreKind::Efficiency => "efficiency",
        })
    }
}

/// One physical core.
///
/// ```
/// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
/// assert_eq!(m.cores[1].pus, vec![1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Core {
    /// Index in [`Machine::cores`] (hwloc's logical index).
    pub index: usize,
    /// Its hardware threads, OS CPU numbers (the first runs the core's executor).
    pub pus: Vec<usize>,
    /// Its kind.
    pub kind: CoreKind,
    /// Its NUMA node (OS index), if the machine reports one.
    pub numa_node: Option<u32>,
    /// Its package (socket), logical index.
    pub package: usize,
}

/// One NUMA node.
///
/// ```
/// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
/// assert_eq!(m.numa_nodes[0].os_index, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// The OS's node number.
    pub os_index: u32,
    /// Local memory, bytes (0 when unknown).
    pub memory_bytes: u64,
}

/// What an accelerator or device is.
///
/// ```
/// use agentwire_scheduler::machine::DeviceKind;
/// assert_eq!(DeviceKind::Npu.to_string(), "npu");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A GPU (hwloc GPU or co-processor OS device, or a CUDA device).
    Gpu,
    /// A neural processing unit (from the accelerator probe hook).
    Npu,
    /// A network interface or fabric device.
    Network,
    /// A block or storage device.
    Storage,
    /// Anything else hwloc reports.
    Other,
}

impl DeviceKind {
    /// Whether partitions can ask for it (`gpu = ...`, `npu = ...`).
    ///
    /// ```
    /// assert!(agentwire_scheduler::machine::DeviceKind::Gpu.is_accelerator());
    /// ```
    pub fn is_accelerator(self) -> bool {
        matches!(self, DeviceKind::Gpu | DeviceKind::Npu)
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Npu => "npu",
            DeviceKind::Network => "network",
            DeviceKind::Storage => "storage",
            DeviceKind::Other => "other",
        })
    }
}

/// A device the machine has.
///
/// ```
/// use agentwire_scheduler::machine::{DeviceKind, MachineBuilder};
/// let m = MachineBuilder::new("box").cores(0, 2, 1).device(DeviceKind::Gpu, "cuda0", Some(0)).build();
/// assert_eq!(m.accelerators(DeviceKind::Gpu).count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Its kind.
    pub kind: DeviceKind,
    /// Its name ("card0", "cuda0", "NPU", "eth0").
    pub name: String,
    /// The NUMA node it is attached to, when known.
    pub numa_node: Option<u32>,
    /// Who reported it ("hwloc", "cuda", "openvino", "synthetic").
    pub source: String,
}

/// A machine: cores, NUMA nodes, distances, devices.
///
/// ```
/// use agentwire_scheduler::machine::{CoreKind, MachineBuilder};
/// let m = MachineBuilder::new("hybrid").cores(0, 8, 2).efficiency_cores(0, 16).build();
/// assert_eq!(m.count(CoreKind::Performance), 8);
/// assert_eq!(m.count(CoreKind::Efficiency), 16);
/// assert_eq!(m.pu_count(), 32);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Where it came from ("live", an XML path, or a synthetic name).
    pub source: String,
    /// Packages (sockets).
    pub packages: usize,
    /// NUMA nodes, in OS index order.
    pub numa_nodes: Vec<NumaNode>,
    /// Relative NUMA distances (row and column in `numa_nodes` order; 10 = local), when the
    /// machine reports them.
    pub numa_distances: Option<Vec<Vec<u64>>>,
    /// Cores in logical order.
    pub cores: Vec<Core>,
    /// Devices: accelerators first, then I/O devices hwloc reports.
    pub devices: Vec<Device>,
}

impl Machine {
    /// Cores of a kind.
    ///
    /// ```
    /// use agentwire_scheduler::machine::{CoreKind, MachineBuilder};
    /// assert_eq!(MachineBuilder::new("vm").cores(0, 2, 1).build().count(CoreKind::Efficiency), 0);
    /// ```
    pub fn count(&self, kind: CoreKind) -> usize {
        self.cores.iter().filter(|c| c.kind == kind).count()
    }

    /// Hardware threads in all.
    ///
    /// ```
    /// assert_eq!(agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 2).build().pu_count(), 4);
    /// ```
    pub fn pu_count(&self) -> usize {
        self.cores.iter().map(|c| c.pus.len()).sum()
    }

    /// Whether the machine has more than one core kind.
    ///
    /// ```
    /// assert!(!agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build().is_hybrid());
    /// ```
    pub fn is_hybrid(&self) -> bool {
        self.count(CoreKind::Efficiency) > 0
    }

    /// Devices of one accelerator kind.
    ///
    /// ```
    /// use agentwire_scheduler::machine::{DeviceKind, MachineBuilder};
    /// assert_eq!(MachineBuilder::new("vm").cores(0, 2, 1).build().accelerators(DeviceKind::Npu).count(), 0);
    /// ```
    pub fn accelerators(&self, kind: DeviceKind) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.kind == kind)
    }

    /// The relative distance between two NUMA nodes (OS indexes): from the matrix when
    /// there is one, else 10 for the same node and 20 for different ones (hwloc's
    /// convention).
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
    /// assert_eq!(m.numa_distance(0, 0), 10);
    /// ```
    pub fn numa_distance(&self, a: u32, b: u32) -> u64 {
        let position = |n: u32| self.numa_nodes.iter().position(|x| x.os_index == n);
        if let (Some(m), Some(i), Some(j)) = (&self.numa_distances, position(a), position(b)) {
            if let Some(d) = m.get(i).and_then(|row| row.get(j)) {
                return *d;
            }
        }
        if a == b {
            10
        } else {
            20
        }
    }

    /// Adds devices found by a probe (the accelerator crate's NPU and CUDA probes), keeping
    /// accelerators ahead of I/O devices.
    ///
    /// ```
    /// use agentwire_scheduler::machine::{Device, DeviceKind, MachineBuilder};
    /// let mut m = MachineBuilder::new("vm").cores(0, 2, 1).build();
    /// m.add_devices(vec![Device { kind: DeviceKind::Npu, name: "NPU".into(), numa_node: None, source: "openvino".into() }]);
    /// assert_eq!(m.devices[0].name, "NPU");
    /// ```
    pub fn add_devices(&mut self, devices: Vec<Device>) {
        self.devices.extend(devices);
        self.devices.sort_by_key(|d| !d.kind.is_accelerator());
    }

    /// Keeps only the PUs in `allowed` (this process's affinity mask): cores with none left
    /// are dropped. Returns the PUs removed, so the caller can say the plan is for a part of
    /// the machine.
    ///
    /// ```
    /// let mut m = agentwire_scheduler::machine::MachineBuilder::new("4").cores(0, 2, 2).build();
    /// assert_eq!(m.restrict_to(&[0, 1, 2]), vec![3]);
    /// assert_eq!(m.cores[1].pus, vec![2]);
    /// ```
    pub fn restrict_to(&mut self, allowed: &[usize]) -> Vec<usize> {
        let mut removed = Vec::new();
        for core in &mut self.cores {
            core.pus.retain(|pu| {
                let keep = allowed.contains(pu);
                if !keep {
                    removed.push(*pu);
                }
                keep
            });
        }
        self.cores.retain(|c| !c.pus.is_empty());
        removed.sort_unstable();
        removed
    }

    /// A machine of single-threaded performance cores, one per CPU listed, with no NUMA
    /// information: what the daemon plans on when hwloc cannot read the machine.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::Machine::flat("fallback", &[0, 2, 3]);
    /// assert_eq!(m.cores[1].pus, vec![2]);
    /// ```
    pub fn flat(source: &str, cpus: &[usize]) -> Self {
        Self {
            source: source.to_string(),
            packages: 1,
            numa_nodes: Vec::new(),
            numa_distances: None,
            cores: cpus
                .iter()
                .enumerate()
                .map(|(index, &pu)| Core {
                    index,
                    pus: vec![pu],
                    kind: CoreKind::Performance,
                    numa_node: None,
                    package: 0,
                })
                .collect(),
            devices: Vec::new(),
        }
    }

    /// A human-readable summary: one line for the machine, then one per NUMA node with its
    /// cores by kind, then the devices.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
    /// assert!(m.summary().contains("2 cores"));
    /// ```
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "machine {}: {} package(s), {} NUMA node(s), {} cores ({} performance, {} efficiency), {} PUs",
            self.source,
            self.packages,
            self.numa_nodes.len(),
            self.cores.len(),
            self.count(CoreKind::Performance),
            self.count(CoreKind::Efficiency),
            self.pu_count()
        );
        let _ = writeln!(
            out,
            "{:<6} {:>12}  {:<12} {:>5}  pus",
            "numa", "memory", "kind", "cores"
        );
        let nodes: Vec<Option<u32>> = if self.numa_nodes.is_empty() {
            vec![None]
        } else {
            self.numa_nodes.iter().map(|n| Some(n.os_index)).collect()
        };
        for node in nodes {
            let memory = self
                .numa_nodes
                .iter()
                .find(|n| Some(n.os_index) == node)
                .map_or(0, |n| n.memory_bytes);
            for kind in [CoreKind::Performance, CoreKind::Efficiency] {
                let cores: Vec<&Core> = self
                    .cores
                    .iter()
                    .filter(|c| c.numa_node == node && c.kind == kind)
                    .collect();
                if cores.is_empty() {
                    continue;
                }
                let pus: Vec<usize> = cores.iter().flat_map(|c| c.pus.iter().copied()).collect();
                let _ = writeln!(
                    out,
                    "{:<6} {:>12}  {:<12} {:>5}  {}",
                    node.map_or("-".to_string(), |n| n.to_string()),
                    format_bytes(memory),
                    kind.to_string(),
                    cores.len(),
                    format_cpus(&pus)
                );
            }
        }
        if let Some(matrix) = &self.numa_distances {
            let _ = writeln!(out, "NUMA distances:");
            for row in matrix {
                let cells: Vec<String> = row.iter().map(|d| format!("{d:>4}")).collect();
                let _ = writeln!(out, "  {}", cells.join(""));
            }
        }
        if self.devices.is_empty() {
            let _ = writeln!(out, "devices: none reported");
        }
        for d in &self.devices {
            let _ = writeln!(
                out,
                "device {:<8} {:<12} numa {:<3} (from {})",
                d.kind.to_string(),
                d.name,
                d.numa_node.map_or("-".to_string(), |n| n.to_string()),
                d.source
            );
        }
        out
    }
}

/// Reads a CPU list as the kernel writes it (`0-3,8,10-11`; empty or `(null)`: none).
///
/// ```
/// assert_eq!(agentwire_scheduler::machine::parse_cpus("0-2,5\n"), Some(vec![0, 1, 2, 5]));
/// assert_eq!(agentwire_scheduler::machine::parse_cpus("(null)"), Some(vec![]));
/// assert_eq!(agentwire_scheduler::machine::parse_cpus("x"), None);
/// ```
pub fn parse_cpus(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() || text == "(null)" {
        return Some(Vec::new());
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// `0-3,8,10-11`: a CPU list as the kernel writes it (cpuset, isolcpus).
///
/// ```
/// assert_eq!(agentwire_scheduler::machine::format_cpus(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
/// ```
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "-".into();
    }
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Builds synthetic machines for tests and what-if plans.
///
/// ```
/// use agentwire_scheduler::machine::MachineBuilder;
/// // 2 sockets × 2 NUMA nodes each × 8 cores × 2 threads.
/// let mut b = MachineBuilder::new("server");
/// for node in 0..4 {
///     b = b.package(node as usize / 2).cores(node, 8, 2);
/// }
/// let m = b.build();
/// assert_eq!((m.packages, m.numa_nodes.len(), m.cores.len(), m.pu_count()), (2, 4, 32, 64));
/// ```
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    machine: Machine,
    package: usize,
}

impl MachineBuilder {
    /// An empty machine.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("empty").build();
    /// assert!(m.cores.is_empty());
    /// ```
    pub fn new(name: &str) -> Self {
        Self {
            machine: Machine {
                source: name.to_string(),
                packages: 0,
                numa_nodes: Vec::new(),
                numa_distances: None,
                cores: Vec::new(),
                devices: Vec::new(),
            },
            package: 0,
        }
    }

    /// Cores added next belong to this package (logical index).
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("2s").package(1).cores(1, 1, 1).build();
    /// assert_eq!(m.cores[0].package, 1);
    /// ```
    pub fn package(mut self, package: usize) -> Self {
        self.package = package;
        self
    }

    /// Adds `count` performance cores of `threads` PUs each on NUMA node `node`.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
    /// assert_eq!(m.cores.len(), 2);
    /// ```
    pub fn cores(self, node: u32, count: usize, threads: usize) -> Self {
        self.add(node, count, threads, CoreKind::Performance)
    }

    /// Adds `count` single-threaded efficiency cores on NUMA node `node`.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("e").efficiency_cores(0, 4).build();
    /// assert!(m.is_hybrid());
    /// ```
    pub fn efficiency_cores(self, node: u32, count: usize) -> Self {
        self.add(node, count, 1, CoreKind::Efficiency)
    }

    fn add(mut self, node: u32, count: usize, threads: usize, kind: CoreKind) -> Self {
        if !self.machine.numa_nodes.iter().any(|n| n.os_index == node) {
            self.machine.numa_nodes.push(NumaNode {
                os_index: node,
                memory_bytes: 16 << 30,
            });
            self.machine.numa_nodes.sort_by_key(|n| n.os_index);
        }
        self.machine.packages = self.machine.packages.max(self.package + 1);
        let mut next_pu = self.machine.pu_count();
        for _ in 0..count {
            let index = self.machine.cores.len();
            self.machine.cores.push(Core {
                index,
                pus: (next_pu..next_pu + threads.max(1)).collect(),
                kind,
                numa_node: Some(node),
                package: self.package,
            });
            next_pu += threads.max(1);
        }
        self
    }

    /// Sets the NUMA distance matrix (rows in node order).
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("2n").cores(0, 1, 1).cores(1, 1, 1)
    ///     .distances(vec![vec![10, 21], vec![21, 10]]).build();
    /// assert_eq!(m.numa_distance(0, 1), 21);
    /// ```
    pub fn distances(mut self, matrix: Vec<Vec<u64>>) -> Self {
        self.machine.numa_distances = Some(matrix);
        self
    }

    /// Adds a device.
    ///
    /// ```
    /// use agentwire_scheduler::machine::{DeviceKind, MachineBuilder};
    /// let m = MachineBuilder::new("npu").cores(0, 1, 1).device(DeviceKind::Npu, "NPU", None).build();
    /// assert_eq!(m.devices.len(), 1);
    /// ```
    pub fn device(mut self, kind: DeviceKind, name: &str, numa_node: Option<u32>) -> Self {
        self.machine.add_devices(vec![Device {
            kind,
            name: name.to_string(),
            numa_node,
            source: "synthetic".into(),
        }]);
        self
    }

    /// The machine.
    ///
    /// ```
    /// let m = agentwire_scheduler::machine::MachineBuilder::new("vm").cores(0, 2, 1).build();
    /// assert_eq!(m.source, "vm");
    /// ```
    pub fn build(self) -> Machine {
        self.machine
    }
}
