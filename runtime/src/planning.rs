//! What the daemon plans on and checks at start: the live machine as this process may use
//! it (hwloc, the device probes, the affinity mask), the partition plan of the config, and
//! the start-up checks.
//!
//! ```no_run
//! use agentwire_runtime::{config::Config, planning};
//! let config = Config::embedded_default();
//! let (machine, lines) = planning::live_machine();
//! let plan = agentwire_scheduler::plan::plan(&machine, &config.plan_config())?;
//! for check in planning::startup_checks(&config, &plan) { println!("{check}"); }
//! # Ok::<(), agentwire_scheduler::plan::PlanError>(())
//! ```

use crate::config::Config;
use agentwire_scheduler::checks::{run_checks, Check, CheckInput, SystemFiles};
use agentwire_scheduler::machine::{format_cpus, Machine};
use agentwire_scheduler::plan::Plan;
use agentwire_scheduler::probe::{apply_probes, DeviceProbe};

/// Locked memory an executor needs beyond its io_memory (io_uring rings and bookkeeping),
/// in bytes.
pub const EXECUTOR_MEMLOCK_OVERHEAD_BYTES: u64 = 512 * 1024;

/// CPUs this process may run on.
///
/// ```
/// assert!(!agentwire_runtime::planning::allowed_cpus().is_empty());
/// ```
pub fn allowed_cpus() -> Vec<usize> {
    affinity_mask().unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    })
}

/// The calling thread's affinity mask as the kernel reports it (sched_getaffinity), or
/// `None` when it cannot be read.
///
/// ```
/// assert!(!agentwire_runtime::planning::affinity_mask().unwrap().is_empty());
/// ```
pub fn affinity_mask() -> Option<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    Some(
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
    )
}

/// Restricts the calling thread to `cpus` (threads it spawns afterwards inherit the mask);
/// returns false when the kernel refuses (no CPU of the list is online and allowed).
///
/// ```
/// let mask = agentwire_runtime::planning::affinity_mask().unwrap();
/// assert!(agentwire_runtime::planning::set_affinity(&mask));
/// assert!(!agentwire_runtime::planning::set_affinity(&[]));
/// ```
pub fn set_affinity(cpus: &[usize]) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus
        .iter()
        .filter(|&&c| c < rustix::thread::CpuSet::MAX_CPU)
    {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// The live machine as this process may use it: hwloc's view (a flat machine of the
/// allowed CPUs when hwloc fails), the devices the accelerator probes find, cut to this
/// process's affinity mask. Returns one line per thing worth logging (probe results, a
/// restricted mask, an hwloc failure).
///
/// ```
/// let (m, _lines) = agentwire_runtime::planning::live_machine();
/// assert!(!m.cores.is_empty());
/// ```
pub fn live_machine() -> (Machine, Vec<String>) {
    let allowed = allowed_cpus();
    let mut lines = Vec::new();
    let mut machine = match agentwire_scheduler::hwloc::load(None) {
        Ok(m) => m,
        Err(e) => {
            lines.push(format!(
                "{e}; planning on a flat machine of this process's cpus {}",
                format_cpus(&allowed)
            ));
            Machine::flat("live (flat: hwloc failed)", &allowed)
        }
    };
    let probes = agentwire_accel::probes();
    let probes: Vec<&dyn DeviceProbe> = probes.iter().map(|p| p.as_ref()).collect();
    lines.extend(apply_probes(&mut machine, &probes));
    let removed = machine.restrict_to(&allowed);
    if !removed.is_empty() {
        lines.push(format!(
            "planning on cpus {} (this process's affinity mask); cpus {} left out",
            format_cpus(&allowed),
            format_cpus(&removed)
        ));
        machine.source = format!("{} (cpus {})", machine.source, format_cpus(&allowed));
    }
    (machine, lines)
}

/// The whole live machine, for tuning it: every online PU and NUMA node, including those
/// this process's affinity mask and cgroup cpuset leave out (on a tuned server a shell runs
/// on the cores left to the OS), with the devices the accelerator probes find. Returns one
/// line per thing worth logging, as [`live_machine`] does.
///
/// ```
/// let (whole, _lines) = agentwire_runtime::planning::whole_machine();
/// assert!(whole.pu_count() >= agentwire_runtime::planning::live_machine().0.pu_count());
/// ```
pub fn whole_machine() -> (Machine, Vec<String>) {
    let mut lines = Vec::new();
    let mut machine = match agentwire_scheduler::hwloc::load_whole_system() {
        Ok(m) => m,
        Err(e) => {
            let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
                .ok()
                .and_then(|t| agentwire_scheduler::machine::parse_cpus(&t))
                .filter(|cpus| !cpus.is_empty())
                .unwrap_or_else(allowed_cpus);
            lines.push(format!(
                "{e}; planning on a flat machine of the online cpus {}",
                format_cpus(&online)
            ));
            Machine::flat("live (flat: hwloc failed)", &online)
        }
    };
    let probes = agentwire_accel::probes();
    let probes: Vec<&dyn DeviceProbe> = probes.iter().map(|p| p.as_ref()).collect();
    lines.extend(apply_probes(&mut machine, &probes));
    (machine, lines)
}

/// Executors the plan starts: one per router core and one per engine partition core.
///
/// ```
/// use agentwire_scheduler::{machine::Machine, plan::{plan, PlanConfig}};
/// let p = plan(&Machine::flat("vm", &[0, 1]), &PlanConfig::embedded_default()).unwrap();
/// assert_eq!(agentwire_runtime::planning::executor_count(&p), 5);
/// ```
pub fn executor_count(plan: &Plan) -> usize {
    plan.partitions.iter().map(|p| p.cores.len()).sum()
}

/// The start-up checks for `plan` on this machine and process (see
/// [`agentwire_scheduler::checks`]).
///
/// ```no_run
/// # use agentwire_runtime::{config::Config, planning};
/// # let config = Config::embedded_default();
/// # let (machine, _) = planning::live_machine();
/// # let plan = agentwire_scheduler::plan::plan(&machine, &config.plan_config()).unwrap();
/// assert_eq!(planning::startup_checks(&config, &plan).len(), 4);
/// ```
pub fn startup_checks(config: &Config, plan: &Plan) -> Vec<Check> {
    run_checks(&SystemFiles::live(), &check_input(config, plan))
}

/// What the checks need from the plan and this process: partition CPUs outside
/// housekeeping, the executors and what each locks, RLIMIT_MEMLOCK, and whether it applies
/// (not to root). The daemon's memlock preflight reads the same figures.
///
/// ```
/// # use agentwire_runtime::{config::Config, planning};
/// # use agentwire_scheduler::{machine::Machine, plan::{plan, PlanConfig}};
/// let p = plan(&Machine::flat("vm", &[0, 1]), &PlanConfig::embedded_default()).unwrap();
/// let input = planning::check_input(&Config::embedded_default(), &p);
/// assert_eq!((input.partition_cpus, input.executors), (vec![1], 5));
/// ```
pub fn check_input(config: &Config, plan: &Plan) -> CheckInput {
    let mut partition_cpus: Vec<usize> = plan
        .partitions
        .iter()
        .flat_map(|p| p.executor_pus())
        .filter(|c| !plan.housekeeping.contains(c))
        .collect();
    partition_cpus.sort_unstable();
    partition_cpus.dedup();
    CheckInput {
        partition_cpus,
        executors: executor_count(plan),
        memlock_per_executor_bytes: config.io_memory_bytes as u64 + EXECUTOR_MEMLOCK_OVERHEAD_BYTES,
        memlock_limit_bytes: rustix::process::getrlimit(rustix::process::Resource::Memlock).current,
        memlock_exempt: rustix::process::geteuid().is_root(),
    }
}
