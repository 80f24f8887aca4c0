//! Partition planning: each partition (router, streaming, nas, twin, fusion, or any other
//! name) asks for cores by kind and count, optionally on a NUMA node, on named CPUs, and for
//! accelerators or shares of them; [`plan`] maps the asks to concrete cores and PUs of a
//! [`Machine`] or says, in words a person can act on, why it cannot.
//!
//! Rules, in order:
//! 1. Named CPUs (`cpus = [...]`) are taken as given; a CPU the machine lacks, or one named
//!    by two partitions, is refused (unless `plan.allow_sharing`).
//! 2. Housekeeping: the first `plan.housekeeping_cores` cores from core 0 are left to the OS.
//! 3. Accelerators first: each partition asking for a GPU or NPU (or a share of one) gets
//!    the device with the most share left, NUMA-near its requested node; the device's node
//!    then becomes the partition's preferred node for cores.
//! 4. Cores, partition by partition (router first, then streaming, nas, twin, fusion, then
//!    the rest by name), ask by ask (performance, efficiency, any; `any` takes efficiency
//!    cores first, to keep performance cores for the partitions that ask for them): all of
//!    an ask on one NUMA node where one has room (the preferred node, then the nearest by
//!    distance), else spread from the nearest nodes outward. Lowest core index first.
//! 5. With too few free cores, `plan.allow_sharing` lets a partition share cores already
//!    planned (engine partitions' cores first, then housekeeping cores, router cores only
//!    when nothing else exists), and the plan says so in one line; without it the plan is
//!    refused with what was asked, what the machine has, who holds the rest, and what to
//!    change.
//! 6. A router core's other hyper-threads are left idle (`plan.router_siblings_idle`,
//!    default true): a busy-polling router shares no core with anything.
//!
//! ```
//! use agentwire_scheduler::machine::MachineBuilder;
//! use agentwire_scheduler::plan::{plan, PlanConfig};
//! let machine = MachineBuilder::new("8 cores").cores(0, 8, 2).build();
//! let config = PlanConfig::from_toml("[partitions.router]\nperformance = 2\n[partitions.streaming]\nany = 4\n").unwrap();
//! let p = plan(&machine, &config).unwrap();
//! assert_eq!(p.partition("router").unwrap().executor_pus(), vec![2, 4]);
//! assert_eq!(p.idle_siblings, vec![3, 5]);
//! ```

use crate::machine::{format_cpus, Core, CoreKind, DeviceKind, Machine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Partitions in planning order; any other name comes after them, by name.
pub const PARTITION_ORDER: [&str; 5] = ["router", "streaming", "nas", "twin", "fusion"];

/// What one partition asks for (a `[partitions.NAME]` table).
///
/// ```
/// let spec: agentwire_scheduler::plan::PartitionSpec = toml::from_str("performance = 2\nnpu = 0.5").unwrap();
/// assert_eq!(spec.performance, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Performance cores.
    #[serde(default)]
    pub performance: usize,
    /// Efficiency cores.
    #[serde(default)]
    pub efficiency: usize,
    /// Cores of any kind.
    #[serde(default)]
    pub any: usize,
    /// Only cores on this NUMA node (OS index).
    #[serde(default)]
    pub numa: Option<u32>,
    /// Exactly these CPUs (OS numbers), in addition to the counts.
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// A GPU, or a share of one (0 < share <= 1).
    #[serde(default)]
    pub gpu: Option<f64>,
    /// An NPU, or a share of one (0 < share <= 1).
    #[serde(default)]
    pub npu: Option<f64>,
    /// Rebalancing priority: a busy partition borrows idle cores only from partitions of
    /// lower priority (engines 1 by default; the router neither lends nor borrows).
    #[serde(default)]
    pub priority: Option<u8>,
}

impl PartitionSpec {
    fn cores_asked(&self) -> usize {
        self.performance + self.efficiency + self.any
    }
}

/// Planner options (the `[plan]` table).
///
/// ```
/// let o = agentwire_scheduler::plan::PlanOptions::default();
/// assert!(!o.allow_sharing && o.router_siblings_idle);
/// assert_eq!(o.housekeeping_cores, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanOptions {
    /// Let partitions share cores when there are too few (said in one line of the plan).
    pub allow_sharing: bool,
    /// Cores left to the OS, counted from core 0.
    pub housekeeping_cores: usize,
    /// Leave a router core's other hyper-threads idle.
    pub router_siblings_idle: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            allow_sharing: false,
            housekeeping_cores: 1,
            router_siblings_idle: true,
        }
    }
}

/// A whole planning request: options and partitions.
///
/// ```
/// let c = agentwire_scheduler::plan::PlanConfig::from_toml("[partitions.router]\nany = 1").unwrap();
/// assert_eq!(c.partitions.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct PlanConfig {
    /// `[plan]`.
    #[serde(default)]
    pub plan: PlanOptions,
    /// `[partitions.NAME]`.
    #[serde(default)]
    pub partitions: BTreeMap<String, PartitionSpec>,
}

impl PlanConfig {
    /// Parses the `[plan]` and `[partitions.*]` tables of a TOML document (other top-level
    /// keys are left to their owners).
    ///
    /// ```
    /// use agentwire_scheduler::plan::PlanConfig;
    /// assert!(PlanConfig::from_toml("[partitions.router]\nperformace = 1").unwrap_err().contains("performace"));
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            plan: PlanOptions,
            #[serde(default)]
            partitions: BTreeMap<String, PartitionSpec>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self {
            plan: doc.plan,
            partitions: doc.partitions,
        })
    }

    /// The embedded default for any machine: one core each for the router and the four
    /// engines, sharing allowed, so a 2-core VM plans (with one line saying what shares).
    ///
    /// ```
    /// let c = agentwire_scheduler::plan::PlanConfig::embedded_default();
    /// assert!(c.plan.allow_sharing);
    /// assert_eq!(c.partitions.len(), 5);
    /// ```
    pub fn embedded_default() -> Self {
        let one = |priority| PartitionSpec {
            any: 1,
            priority: Some(priority),
            ..Default::default()
        };
        Self {
            plan: PlanOptions {
                allow_sharing: true,
                ..Default::default()
            },
            partitions: PARTITION_ORDER
                .iter()
                .map(|name| (name.to_string(), one(u8::from(*name != "router"))))
                .collect(),
        }
    }

    /// Partition names in planning order.
    fn ordered(&self) -> Vec<(&str, &PartitionSpec)> {
        let mut out: Vec<(&str, &PartitionSpec)> = PARTITION_ORDER
            .iter()
            .filter_map(|n| self.partitions.get_key_value(*n))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        out.extend(
            self.partitions
                .iter()
                .filter(|(k, _)| !PARTITION_ORDER.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v)),
        );
        out
    }
}

/// One core given to a partition.
///
/// ```
/// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
/// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
/// assert_eq!(p.partition("router").unwrap().cores[0].pu, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedCore {
    /// The core's index in [`Machine::cores`].
    pub core: usize,
    /// The PU its executor is pinned to.
    pub pu: usize,
    /// Every PU of the core the partition may use (the router's: only `pu`).
    pub pus: Vec<usize>,
    /// The core's kind.
    pub kind: CoreKind,
    /// Its NUMA node.
    pub numa_node: Option<u32>,
    /// Shared with another partition or with housekeeping.
    pub shared: bool,
}

/// An accelerator (or a share of one) given to a partition.
///
/// ```
/// # use agentwire_scheduler::{machine::{DeviceKind, MachineBuilder}, plan::*};
/// let m = MachineBuilder::new("g").cores(0, 4, 1).device(DeviceKind::Gpu, "cuda0", Some(0)).build();
/// let c = PlanConfig::from_toml("[partitions.twin]\nany = 1\ngpu = 0.5").unwrap();
/// assert_eq!(plan(&m, &c).unwrap().partition("twin").unwrap().accelerators[0].share, 0.5);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceleratorShare {
    /// GPU or NPU.
    pub kind: DeviceKind,
    /// The device's name.
    pub name: String,
    /// The share given (1 = the whole device).
    pub share: f64,
    /// The device's NUMA node.
    pub numa_node: Option<u32>,
}

/// One partition's place on the machine.
///
/// ```
/// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
/// let p = plan(&MachineBuilder::new("vm").cores(0, 4, 1).build(), &PlanConfig::embedded_default()).unwrap();
/// assert_eq!(p.partition("streaming").unwrap().cores.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedPartition {
    /// Its name.
    pub name: String,
    /// Its cores.
    pub cores: Vec<PlannedCore>,
    /// Its accelerators.
    pub accelerators: Vec<AcceleratorShare>,
    /// Rebalancing priority (a busy partition borrows from lower ones).
    pub priority: u8,
}

impl PlannedPartition {
    /// The PUs its executors are pinned to, one per core.
    ///
    /// ```
    /// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
    /// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
    /// assert_eq!(p.partition("router").unwrap().executor_pus(), vec![1]);
    /// ```
    pub fn executor_pus(&self) -> Vec<usize> {
        self.cores.iter().map(|c| c.pu).collect()
    }

    /// Its NUMA nodes, deduplicated.
    fn numa_nodes(&self) -> Vec<u32> {
        let mut nodes: Vec<u32> = self.cores.iter().filter_map(|c| c.numa_node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

/// A plan: partitions, housekeeping, idle hyper-threads, and notes (sharing, spreading).
///
/// ```
/// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
/// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
/// assert_eq!(p.housekeeping, vec![0]);
/// assert!(p.notes[0].contains("share"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The machine planned for.
    pub machine: String,
    /// Partitions in planning order.
    pub partitions: Vec<PlannedPartition>,
    /// PUs left to the OS.
    pub housekeeping: Vec<usize>,
    /// Hyper-threads of router cores left idle.
    pub idle_siblings: Vec<usize>,
    /// PUs no partition uses (beyond housekeeping and idle siblings).
    pub unused: Vec<usize>,
    /// One line per compromise: shared cores, partitions spread over NUMA nodes.
    pub notes: Vec<String>,
}

impl Plan {
    /// A partition by name.
    ///
    /// ```
    /// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
    /// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
    /// assert!(p.partition("nope").is_none());
    /// ```
    pub fn partition(&self, name: &str) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// The plan as a table: partition, cores, PUs, kind, NUMA node, accelerators; then
    /// housekeeping, idle siblings and notes.
    ///
    /// ```
    /// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
    /// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
    /// assert!(p.table().lines().next().unwrap().starts_with("partition"));
    /// ```
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>5}  {:<16} {:<24} {:<6} accelerators",
            "partition", "cores", "pus", "kind", "numa"
        );
        for p in &self.partitions {
            let pus: Vec<usize> = p.cores.iter().flat_map(|c| c.pus.iter().copied()).collect();
            let performance = p
                .cores
                .iter()
                .filter(|c| c.kind == CoreKind::Performance)
                .count();
            let efficiency = p.cores.len() - performance;
            let kind = match (performance, efficiency) {
                (_, 0) => format!("{performance} performance"),
                (0, _) => format!("{efficiency} efficiency"),
                _ => format!("{performance} perf + {efficiency} eff"),
            };
            let shared = p.cores.iter().filter(|c| c.shared).count();
            let kind = if shared > 0 {
                format!("{kind} ({shared} shared)")
            } else {
                kind
            };
            let nodes = p.numa_nodes();
            let numa = if nodes.is_empty() {
                "-".to_string()
            } else {
                nodes
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let accelerators: Vec<String> = p
                .accelerators
                .iter()
                .map(|a| {
                    if a.share >= 1.0 {
                        format!("{} {}", a.kind, a.name)
                    } else {
                        format!("{} {} ×{}", a.kind, a.name, a.share)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<12} {:>5}  {:<16} {:<24} {:<6} {}",
                p.name,
                p.cores.len(),
                format_cpus(&pus),
                kind,
                numa,
                if accelerators.is_empty() {
                    "-".to_string()
                } else {
                    accelerators.join(", ")
                }
            );
        }
        let _ = writeln!(
            out,
            "housekeeping pus: {}",
            or_none(&format_cpus(&self.housekeeping))
        );
        let _ = writeln!(
            out,
            "idle router hyper-threads: {}",
            or_none(&format_cpus(&self.idle_siblings))
        );
        let _ = writeln!(out, "unused pus: {}", or_none(&format_cpus(&self.unused)));
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// Why a configuration cannot be planned on a machine: what was asked, what the machine
/// has, and what to change.
///
/// ```
/// # use agentwire_scheduler::{machine::MachineBuilder, plan::{plan, PlanConfig}};
/// let c = PlanConfig::from_toml("[partitions.router]\nperformance = 4").unwrap();
/// let e = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &c).unwrap_err();
/// assert!(e.to_string().contains("router asks for 4 performance cores"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The config itself is wrong (no cores asked, a share out of range).
    #[error("partition {partition}: {problem}")]
    Invalid {
        /// The partition.
        partition: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// A named CPU does not exist on the machine.
    #[error("partition {partition} names cpu {cpu}, but machine {machine} has cpus {has}; name cpus it has or drop `cpus`")]
    NoSuchCpu {
        /// The partition.
        partition: String,
        /// The CPU named.
        cpu: usize,
        /// The machine.
        machine: String,
        /// Its CPUs.
        has: String,
    },
    /// Two partitions name the same CPU.
    #[error("partitions {first} and {second} both name cpu {cpu}; give each its own cpus, or set `allow_sharing = true` under [plan]")]
    Overlap {
        /// The first partition.
        first: String,
        /// The second partition.
        second: String,
        /// The CPU.
        cpu: usize,
    },
    /// Too few cores of a kind are free.
    #[error("partition {partition} asks for {asked} {what}; machine {machine} has {has}, {free} free after {taken}; {fix}")]
    NotEnoughCores {
        /// The partition.
        partition: String,
        /// Cores asked.
        asked: usize,
        /// "performance cores", "efficiency cores on NUMA node 1", ...
        what: String,
        /// The machine.
        machine: String,
        /// What the machine has of that kind.
        has: String,
        /// Free when this partition was planned.
        free: usize,
        /// Who holds the rest.
        taken: String,
        /// What to change.
        fix: String,
    },
    /// No accelerator of a kind with the share asked is left.
    #[error("partition {partition} asks for {what}; machine {machine} has {has}; {fix}")]
    NoAccelerator {
        /// The partition.
        partition: String,
        /// "a GPU", "0.5 of an NPU".
        what: String,
        /// The machine.
        machine: String,
        /// What it has.
        has: String,
        /// What to change.
        fix: String,
    },
}

/// Planning state: who holds each core.
struct Board<'m> {
    machine: &'m Machine,
    /// Partitions (or "housekeeping") holding each core.
    holders: Vec<Vec<String>>,
}

impl Board<'_> {
    fn is_free(&self, core: usize) -> bool {
        self.holders[core].is_empty()
    }

    fn taken_summary(&self) -> String {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &self.holders {
            for name in h {
                *by.entry(name.as_str()).or_default() += 1;
            }
        }
        if by.is_empty() {
            return "nothing".into();
        }
        by.iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Plans `config` on `machine` (see the module docs for the rules).
///
/// ```
/// use agentwire_scheduler::machine::MachineBuilder;
/// use agentwire_scheduler::plan::{plan, PlanConfig};
/// let p = plan(&MachineBuilder::new("vm").cores(0, 2, 1).build(), &PlanConfig::embedded_default()).unwrap();
/// assert_eq!(p.partitions.len(), 5);
/// ```
// A plan is made once at start-up; its error carries the whole explanation.
#[allow(clippy::result_large_err)]
pub fn plan(machine: &Machine, config: &PlanConfig) -> Result<Plan, PlanError> {
    let options = &config.plan;
    let ordered = config.ordered();
    validate(&ordered)?;
    let mut board = Board {
        machine,
        holders: vec![Vec::new(); machine.cores.len()],
    };
    let core_of_pu = |pu: usize| machine.cores.iter().position(|c| c.pus.contains(&pu));
    // 1. Named CPUs.
    let mut named: BTreeMap<usize, &str> = BTreeMap::new();
    let mut planned: Vec<PlannedPartition> = Vec::new();
    for (name, spec) in &ordered {
        let mut cores = Vec::new();
        for &cpu in &spec.cpus {
            let Some(core) = core_of_pu(cpu) else {
                let all: Vec<usize> = machine
                    .cores
                    .iter()
                    .flat_map(|c| c.pus.iter().copied())
                    .collect();
                return Err(PlanError::NoSuchCpu {
                    partition: name.to_string(),
                    cpu,
                    machine: machine.source.clone(),
                    has: format_cpus(&all),
                });
            };
            if let Some(first) = named.insert(cpu, name) {
                if !options.allow_sharing {
                    return Err(PlanError::Overlap {
                        first: first.to_string(),
                        second: name.to_string(),
                        cpu,
                    });
                }
            }
            let c = &machine.cores[core];
            let shared = !board.holders[core].is_empty();
            board.holders[core].push(name.to_string());
            cores.push(PlannedCore {
                core,
                pu: cpu,
                pus: vec![cpu],
                kind: c.kind,
                numa_node: c.numa_node,
                shared,
            });
        }
        planned.push(PlannedPartition {
            name: name.to_string(),
            cores,
            accelerators: Vec::new(),
            priority: spec.priority.unwrap_or(u8::from(*name != "router")),
        });
    }
    // 2. Housekeeping, from core 0 on.
    let mut housekeeping = Vec::new();
    for core in 0..machine.cores.len() {
        if housekeeping.len() >= options.housekeeping_cores {
            break;
        }
        if board.is_free(core) {
            board.holders[core].push("housekeeping".into());
            housekeeping.push(core);
        }
    }
    // 3. Accelerators.
    let mut left: Vec<f64> = machine.devices.iter().map(|_| 1.0).collect();
    let mut preferred: Vec<Option<u32>> = Vec::new();
    for (index, (name, spec)) in ordered.iter().enumerate() {
        let mut node = spec.numa;
        for (kind, share) in [(DeviceKind::Gpu, spec.gpu), (DeviceKind::Npu, spec.npu)] {
            let Some(share) = share else { continue };
            let pick = machine
                .devices
                .iter()
                .enumerate()
                .filter(|(i, d)| d.kind == kind && left[*i] + 1e-9 >= share)
                .min_by_key(|(i, d)| {
                    let distance = match (spec.numa, d.numa_node) {
                        (Some(a), Some(b)) => machine.numa_distance(a, b),
                        _ => 0,
                    };
                    (distance, ((1.0 - left[*i]) * 1000.0) as u64, *i)
                });
            let Some((i, device)) = pick else {
                return Err(no_accelerator(machine, name, kind, share, &left, &planned));
            };
            left[i] -= share;
            node = node.or(device.numa_node);
            planned[index].accelerators.push(AcceleratorShare {
                kind,
                name: device.name.clone(),
                share,
                numa_node: device.numa_node,
            });
        }
        preferred.push(node);
    }
    // 4. and 5. Cores.
    let mut notes = Vec::new();
    let mut shared_lines: Vec<String> = Vec::new();
    for (index, (name, spec)) in ordered.iter().enumerate() {
        let asks = [
            (Some(CoreKind::Performance), spec.performance),
            (Some(CoreKind::Efficiency), spec.efficiency),
            (None, spec.any),
        ];
        for (kind, count) in asks {
            if count == 0 {
                continue;
            }
            let mut node =
                preferred[index].or_else(|| planned[index].cores.first().and_then(|c| c.numa_node));
            let chosen = choose_free(&board, kind, count, spec.numa, &mut node);
            for &core in &chosen {
                board.holders[core].push(name.to_string());
                planned[index]
                    .cores
                    .push(planned_core(machine, core, false));
            }
            let missing = count - chosen.len();
            if missing == 0 {
                continue;
            }
            let shared = if options.allow_sharing {
                choose_shared(&board, kind, missing, name, spec.numa)
            } else {
                Vec::new()
            };
            if shared.len() < missing {
                return Err(not_enough(
                    &board,
                    name,
                    spec,
                    kind,
                    count,
                    chosen.len(),
                    &housekeeping,
                ));
            }
            for &core in &shared {
                let with = board.holders[core].join(" and ");
                shared_lines.push(format!(
                    "{name} shares cpu {} with {with}",
                    machine.cores[core].pus[0]
                ));
                board.holders[core].push(name.to_string());
                planned[index].cores.push(planned_core(machine, core, true));
            }
        }
        let nodes = planned[index].numa_nodes();
        if nodes.len() > 1 {
            notes.push(format!(
                "{name} spans NUMA nodes {} (no single node had {} free cores for it)",
                nodes
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                planned[index].cores.len()
            ));
        }
    }
    if !shared_lines.is_empty() {
        notes.insert(
            0,
            format!(
                "{} cores for {} partitions, so cores are shared (allow_sharing): {}",
                machine.cores.len(),
                planned.len(),
                shared_lines.join("; ")
            ),
        );
    }
    // 6. Router hyper-threads, and what each partition may use.
    let mut idle_siblings = Vec::new();
    if options.router_siblings_idle {
        for p in planned.iter_mut().filter(|p| p.name == "router") {
            for c in &mut p.cores {
                let all = &machine.cores[c.core].pus;
                idle_siblings.extend(all.iter().copied().filter(|&pu| pu != c.pu));
                c.pus = vec![c.pu];
            }
        }
    }
    idle_siblings.sort_unstable();
    let housekeeping_pus: Vec<usize> = housekeeping
        .iter()
        .flat_map(|&c| machine.cores[c].pus.iter().copied())
        .collect();
    let used: std::collections::BTreeSet<usize> = planned
        .iter()
        .flat_map(|p| p.cores.iter().flat_map(|c| c.pus.iter().copied()))
        .chain(housekeeping_pus.iter().copied())
        .chain(idle_siblings.iter().copied())
        .collect();
    let unused = machine
        .cores
        .iter()
        .flat_map(|c| c.pus.iter().copied())
        .filter(|pu| !used.contains(pu))
        .collect();
    Ok(Plan {
        machine: machine.source.clone(),
        partitions: planned,
        housekeeping: housekeeping_pus,
        idle_siblings,
        unused,
        notes,
    })
}

// A plan is made once at start-up; its error carries the whole explanation.
#[allow(clippy::result_large_err)]
fn validate(ordered: &[(&str, &PartitionSpec)]) -> Result<(), PlanError> {
    for (name, spec) in ordered {
        let invalid = |problem: String| PlanError::Invalid {
            partition: name.to_string(),
            problem,
        };
        if spec.cores_asked() == 0 && spec.cpus.is_empty() {
            return Err(invalid(
                "asks for no cores; give it `performance`, `efficiency`, `any` or `cpus`, or remove the table".into(),
            ));
        }
        for (what, share) in [("gpu", spec.gpu), ("npu", spec.npu)] {
            if let Some(s) = share {
                if !(s > 0.0 && s <= 1.0) {
                    return Err(invalid(format!(
                        "`{what} = {s}` is not a share; write 1 for a whole device or a fraction such as 0.5"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn planned_core(machine: &Machine, core: usize, shared: bool) -> PlannedCore {
    let c: &Core = &machine.cores[core];
    PlannedCore {
        core,
        pu: c.pus[0],
        pus: c.pus.clone(),
        kind: c.kind,
        numa_node: c.numa_node,
        shared,
    }
}

fn kind_matches(core: &Core, kind: Option<CoreKind>) -> bool {
    kind.is_none_or(|k| core.kind == k)
}

/// Picks up to `count` free cores of `kind`: all on one node if a node has room (the
/// preferred node first, then by distance from it, then the node with most room), else
/// spread from the best node outward. `only_node` restricts to one node. Sets `node` to the
/// node chosen.
fn choose_free(
    board: &Board<'_>,
    kind: Option<CoreKind>,
    count: usize,
    only_node: Option<u32>,
    node: &mut Option<u32>,
) -> Vec<usize> {
    let machine = board.machine;
    let free_on = |n: Option<u32>| -> Vec<usize> {
        let mut cores: Vec<usize> = machine
            .cores
            .iter()
            .filter(|c| board.is_free(c.index) && kind_matches(c, kind))
            .filter(|c| n.is_none() || c.numa_node == n)
            .map(|c| c.index)
            .collect();
        // `any` takes efficiency cores first.
        if kind.is_none() {
            cores.sort_by_key(|&i| (machine.cores[i].kind == CoreKind::Performance, i));
        }
        cores
    };
    if let Some(n) = only_node {
        *node = Some(n);
        return free_on(Some(n)).into_iter().take(count).collect();
    }
    let mut nodes: Vec<Option<u32>> = machine
        .numa_nodes
        .iter()
        .map(|n| Some(n.os_index))
        .collect();
    if nodes.is_empty() || machine.cores.iter().all(|c| c.numa_node.is_none()) {
        return free_on(None).into_iter().take(count).collect();
    }
    let anchor = *node;
    nodes.sort_by_key(|n| {
        let distance = match (anchor, n) {
            (Some(a), Some(b)) => machine.numa_distance(a, *b),
            _ => 0,
        };
        (distance, usize::MAX - free_on(*n).len(), *n)
    });
    if let Some(n) = nodes.iter().find(|n| free_on(**n).len() >= count) {
        *node = *n;
        return free_on(*n).into_iter().take(count).collect();
    }
    // Spread: the node with the most room first, then the nearest to it.
    let best = nodes
        .iter()
        .copied()
        .max_by_key(|n| (free_on(*n).len(), std::cmp::Reverse(*n)))
        .flatten();
    nodes.sort_by_key(|n| match (best, n) {
        (Some(a), Some(b)) => (machine.numa_distance(a, *b), *b),
        _ => (0, 0),
    });
    *node = best;
    nodes.iter().flat_map(|n| free_on(*n)).take(count).collect()
}

/// Cores to share when too few are free: engine partitions' cores first, then
/// housekeeping's, the router's only when nothing else exists; fewest holders first.
fn choose_shared(
    board: &Board<'_>,
    kind: Option<CoreKind>,
    count: usize,
    name: &str,
    only_node: Option<u32>,
) -> Vec<usize> {
    let machine = board.machine;
    let mut candidates: Vec<usize> = machine
        .cores
        .iter()
        .filter(|c| kind_matches(c, kind))
        .filter(|c| only_node.is_none() || c.numa_node == only_node)
        .filter(|c| !board.holders[c.index].iter().any(|h| h == name))
        .map(|c| c.index)
        .collect();
    let class = |core: usize| {
        let h = &board.holders[core];
        if h.iter().any(|x| x == "router") {
            2
        } else if h.iter().any(|x| x == "housekeeping") {
            1
        } else {
            0
        }
    };
    candidates.sort_by_key(|&c| (class(c), board.holders[c].len(), c));
    candidates.into_iter().take(count).collect()
}

fn what_asked(kind: Option<CoreKind>, count: usize, numa: Option<u32>) -> String {
    let plural = if count == 1 { "core" } else { "cores" };
    let kind = match kind {
        Some(k) => format!("{k} {plural}"),
        None => format!("{plural} of any kind"),
    };
    match numa {
        Some(n) => format!("{kind} on NUMA node {n}"),
        None => kind,
    }
}

fn not_enough(
    board: &Board<'_>,
    name: &str,
    spec: &PartitionSpec,
    kind: Option<CoreKind>,
    asked: usize,
    free: usize,
    housekeeping: &[usize],
) -> PlanError {
    let machine = board.machine;
    let matching = machine
        .cores
        .iter()
        .filter(|c| kind_matches(c, kind))
        .filter(|c| spec.numa.is_none() || c.numa_node == spec.numa)
        .count();
    let has = match kind {
        Some(k) => format!("{matching} {k} cores"),
        None => format!("{matching} cores"),
    };
    let has = match spec.numa {
        Some(n) => format!("{has} on NUMA node {n}"),
        None => has,
    };
    let mut fixes = vec![format!("lower `{name}`'s ask")];
    if kind == Some(CoreKind::Performance) && machine.count(CoreKind::Efficiency) > 0 {
        fixes.push("ask for `efficiency` or `any` cores instead".into());
    }
    if kind == Some(CoreKind::Efficiency) && !machine.is_hybrid() {
        fixes.push("this machine has no efficiency cores: ask for `performance` or `any`".into());
    }
    if spec.numa.is_some() {
        fixes.push("drop `numa`".into());
    }
    if !housekeeping.is_empty() {
        fixes.push("lower `housekeeping_cores`".into());
    }
    fixes.push("or set `allow_sharing = true` under [plan]".into());
    PlanError::NotEnoughCores {
        partition: name.to_string(),
        asked,
        what: what_asked(kind, asked, spec.numa),
        machine: machine.source.clone(),
        has,
        free,
        taken: board.taken_summary(),
        fix: fixes.join(", "),
    }
}

fn no_accelerator(
    machine: &Machine,
    name: &str,
    kind: DeviceKind,
    share: f64,
    left: &[f64],
    planned: &[PlannedPartition],
) -> PlanError {
    let upper = kind.to_string().to_uppercase();
    let what = if share >= 1.0 {
        format!("a whole {upper}")
    } else {
        format!("{share} of an {upper}")
    };
    let devices: Vec<usize> = machine
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.kind == kind)
        .map(|(i, _)| i)
        .collect();
    let has = if devices.is_empty() {
        match kind {
            DeviceKind::Npu => "no NPU (the accelerator probe found none)".to_string(),
            _ => "no GPU (hwloc reports no GPU or co-processor)".to_string(),
        }
    } else {
        let holders: Vec<String> = planned
            .iter()
            .flat_map(|p| p.accelerators.iter().map(move |a| (p, a)))
            .filter(|(_, a)| a.kind == kind)
            .map(|(p, a)| format!("{} {} to {}", a.share, a.name, p.name))
            .collect();
        format!(
            "{} {upper}(s) with {:.2} left in all (given: {})",
            devices.len(),
            devices.iter().map(|&i| left[i]).sum::<f64>(),
            if holders.is_empty() {
                "none".into()
            } else {
                holders.join(", ")
            }
        )
    };
    PlanError::NoAccelerator {
        partition: name.to_string(),
        what,
        machine: machine.source.clone(),
        has,
        fix: format!(
            "drop `{kind}` from [partitions.{name}], ask for a smaller share, or plan on a machine with one (`--topology FILE`)"
        ),
    }
}
