//! What a partition plan asks of the server it runs on: which CPUs the kernel should isolate
//! (`agentwire plan --kernel-cmdline`) and which CPUs each systemd slice may use
//! (`agentwire plan --cpuset`).
//!
//! The split, from the plan:
//! - isolated: every PU a partition was given (router and engines, each core's PUs) and the
//!   router cores' idle hyper-threads, except the housekeeping PUs: there the timer tick, RCU
//!   callbacks, IRQs and other tasks stay away;
//! - the OS's: every other PU (housekeeping, unused PUs, and partition cores the plan shares
//!   with housekeeping): IRQs, kernel threads, other services and agents run there;
//! - the daemon's: the partitions' PUs and the housekeeping PUs (its unpinned threads, the
//!   control loop and the notifier among them, run on the latter).
//!
//! ```ignore
//! let cpus = HostCpus::of(&machine, &plan)?;
//! println!("{}", cpus.kernel_cmdline());   // isolcpus=managed_irq,domain,1-7 nohz_full=1-7 ...
//! for d in cpus.dropins() { print!("{}", d.text()); }
//! ```

use agentwire_scheduler::machine::{format_cpus, Machine};
use agentwire_scheduler::plan::Plan;
use serde_json::json;

/// The plan's CPUs as the server's tuning sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpus {
    /// Every PU of the machine.
    pub all: Vec<usize>,
    /// PUs kept from the OS: partition PUs and idle router hyper-threads, minus housekeeping.
    pub isolated: Vec<usize>,
    /// PUs left to the OS: `all` minus `isolated`.
    pub os: Vec<usize>,
    /// PUs the daemon may run on: its partitions' and the housekeeping PUs.
    pub daemon: Vec<usize>,
}

/// Why a plan gives nothing to tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TuningError {
    /// Every partition shares the housekeeping cores (their list).
    NothingIsolated(String),
    /// No PU would be left to the OS.
    NothingForTheOs,
}

impl std::fmt::Display for TuningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TuningError::NothingIsolated(housekeeping) => write!(
                f,
                "the plan isolates no cpu: every partition shares the housekeeping cpus \
                 {housekeeping} (plan.allow_sharing on a machine with too few cores), so the \
                 kernel command line and the slices would change nothing; give the partitions \
                 cores of their own (fewer partitions or cores asked, or a lower \
                 plan.housekeeping_cores)"
            ),
            TuningError::NothingForTheOs => f.write_str(
                "the plan leaves no cpu to the OS: every cpu is a partition's or an idle \
                 router hyper-thread; keep at least one housekeeping core \
                 (plan.housekeeping_cores = 1)",
            ),
        }
    }
}

impl std::error::Error for TuningError {}

/// One systemd drop-in file: where it goes and its one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    /// The unit it extends (`system.slice`).
    pub unit: &'static str,
    /// Its section (`Slice`, `Service`).
    pub section: &'static str,
    /// The setting's key (`AllowedCPUs`, `CPUAffinity`).
    pub key: &'static str,
    /// The CPU list.
    pub value: String,
}

/// The drop-in files' name, the same in each unit's `.d` directory.
pub const DROPIN_NAME: &str = "50-agentwire-cpus.conf";

impl DropIn {
    /// Its path under /etc/systemd/system.
    pub fn path(&self) -> String {
        format!("/etc/systemd/system/{}.d/{DROPIN_NAME}", self.unit)
    }

    /// Its contents.
    pub fn contents(&self) -> String {
        format!("[{}]\n{}={}\n", self.section, self.key, self.value)
    }
}

impl HostCpus {
    /// The split of `plan` on `machine` (see the module docs).
    pub fn of(machine: &Machine, plan: &Plan) -> Result<Self, TuningError> {
        let mut all: Vec<usize> = machine
            .cores
            .iter()
            .flat_map(|c| c.pus.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        let housekeeping = &plan.housekeeping;
        let partition_pus: Vec<usize> = plan
            .partitions
            .iter()
            .flat_map(|p| p.cores.iter().flat_map(|c| c.pus.iter().copied()))
            .collect();
        let isolated = sorted(
            partition_pus
                .iter()
                .chain(&plan.idle_siblings)
                .copied()
                .filter(|pu| !housekeeping.contains(pu)),
        );
        let os: Vec<usize> = all
            .iter()
            .copied()
            .filter(|pu| !isolated.contains(pu))
            .collect();
        if isolated.is_empty() {
            return Err(TuningError::NothingIsolated(format_cpus(housekeeping)));
        }
        if os.is_empty() {
            return Err(TuningError::NothingForTheOs);
        }
        let daemon = sorted(partition_pus.iter().chain(housekeeping).copied());
        Ok(Self {
            all,
            isolated,
            os,
            daemon,
        })
    }

    /// The kernel parameters, in order: isolcpus (with `managed_irq` and `domain`: no
    /// managed interrupts and no scheduler load balancing there), nohz_full (no timer tick
    /// while one task runs), rcu_nocbs (RCU callbacks run elsewhere), irqaffinity (the
    /// default IRQ affinity: the OS's cpus).
    pub fn kernel_params(&self) -> Vec<(&'static str, String)> {
        let isolated = format_cpus(&self.isolated);
        vec![
            ("isolcpus", format!("managed_irq,domain,{isolated}")),
            ("nohz_full", isolated.clone()),
            ("rcu_nocbs", isolated),
            ("irqaffinity", format_cpus(&self.os)),
        ]
    }

    /// `isolcpus=managed_irq,domain,1-7 nohz_full=1-7 rcu_nocbs=1-7 irqaffinity=0`.
    pub fn kernel_cmdline(&self) -> String {
        self.kernel_params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The slice drop-ins: system.slice and user.slice on the OS's cpus, agentwire.slice
    /// and the daemon's own affinity on the daemon's (`CPUAffinity=` too, because with
    /// isolcpus the kernel starts every process, systemd included, on the housekeeping cpus
    /// only, and the daemon plans on the cpus its affinity mask allows).
    pub fn dropins(&self) -> Vec<DropIn> {
        let (os, daemon) = (format_cpus(&self.os), format_cpus(&self.daemon));
        let slice = |unit, value: &String| DropIn {
            unit,
            section: "Slice",
            key: "AllowedCPUs",
            value: value.clone(),
        };
        vec![
            slice("system.slice", &os),
            slice("user.slice", &os),
            slice("agentwire.slice", &daemon),
            DropIn {
                unit: "agentwire.service",
                section: "Service",
                key: "CPUAffinity",
                value: daemon,
            },
        ]
    }

    /// `--kernel-cmdline --json`.
    pub fn kernel_json(&self, machine: &str) -> serde_json::Value {
        let params: serde_json::Map<String, serde_json::Value> = self
            .kernel_params()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "machine": machine,
            "cmdline": self.kernel_cmdline(),
            "params": params,
            "isolated_cpus": self.isolated,
            "os_cpus": self.os,
        })
    }

    /// `--cpuset --json`.
    pub fn cpuset_json(&self, machine: &str) -> serde_json::Value {
        let dropins: Vec<serde_json::Value> = self
            .dropins()
            .iter()
            .map(|d| {
                json!({"unit": d.unit, "path": d.path(), "section": d.section, "key": d.key,
                       "value": d.value, "contents": d.contents()})
            })
            .collect();
        json!({
            "machine": machine,
            "os_cpus": self.os,
            "daemon_cpus": self.daemon,
            "isolated_cpus": self.isolated,
            "dropins": dropins,
        })
    }
}

fn sorted(pus: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = pus.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentwire_scheduler::checks::{run_checks, CheckInput, CheckLevel, SystemFiles};
    use agentwire_scheduler::machine::MachineBuilder;
    use agentwire_scheduler::plan::{plan, PlanConfig};

    /// 8 cores, 2 threads each (PUs 2c, 2c+1): router 1 core, streaming 2, nas 1.
    fn eight_core_plan() -> (Machine, Plan) {
        let machine = MachineBuilder::new("8c2t").cores(0, 8, 2).build();
        let config = PlanConfig::from_toml(
            "[partitions.router]\nany = 1\n[partitions.streaming]\nany = 2\n\
             [partitions.nas]\nany = 1\n",
        )
        .unwrap();
        let p = plan(&machine, &config).unwrap();
        (machine, p)
    }

    #[test]
    fn isolates_partitions_and_idle_siblings_and_leaves_the_rest_to_the_os() {
        let (machine, p) = eight_core_plan();
        assert_eq!(p.housekeeping, vec![0, 1]);
        let cpus = HostCpus::of(&machine, &p).unwrap();
        let router = p.partition("router").unwrap().executor_pus();
        assert_eq!(router, vec![2]);
        assert_eq!(p.idle_siblings, vec![3]);
        // Router core 1 (2 and its idle sibling 3), streaming cores 2-3, nas core 4.
        assert_eq!(cpus.isolated, (2..=9).collect::<Vec<_>>());
        assert_eq!(cpus.os, vec![0, 1, 10, 11, 12, 13, 14, 15]);
        assert_eq!(cpus.daemon, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            cpus.kernel_cmdline(),
            "isolcpus=managed_irq,domain,2-9 nohz_full=2-9 rcu_nocbs=2-9 \
             irqaffinity=0-1,10-15"
        );
    }

    #[test]
    fn the_daemons_isolation_check_passes_once_the_line_is_applied() {
        let (machine, p) = eight_core_plan();
        let cpus = HostCpus::of(&machine, &p).unwrap();
        let root = std::env::temp_dir().join(format!("aw-tuning-{}", std::process::id()));
        let sys = root.join("sys/devices/system/cpu");
        std::fs::create_dir_all(&sys).unwrap();
        // What the kernel shows after booting with the line.
        std::fs::write(sys.join("isolated"), format_cpus(&cpus.isolated)).unwrap();
        std::fs::write(sys.join("nohz_full"), format_cpus(&cpus.isolated)).unwrap();
        let mut partition_cpus: Vec<usize> = p
            .partitions
            .iter()
            .flat_map(|q| q.executor_pus())
            .filter(|c| !p.housekeeping.contains(c))
            .collect();
        partition_cpus.sort_unstable();
        let checks = run_checks(
            &SystemFiles::under(&root),
            &CheckInput {
                partition_cpus,
                executors: 4,
                memlock_per_executor_bytes: 1,
                memlock_limit_bytes: None,
                memlock_exempt: false,
            },
        );
        let isolation = checks.iter().find(|c| c.name == "isolation").unwrap();
        assert_eq!(isolation.level, CheckLevel::Ok, "{isolation}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn slices_keep_the_os_off_the_daemons_cpus() {
        let (machine, p) = eight_core_plan();
        let dropins = HostCpus::of(&machine, &p).unwrap().dropins();
        let text: Vec<(String, String)> =
            dropins.iter().map(|d| (d.path(), d.contents())).collect();
        assert_eq!(
            text,
            [
                (
                    "/etc/systemd/system/system.slice.d/50-agentwire-cpus.conf",
                    "[Slice]\nAllowedCPUs=0-1,10-15\n"
                ),
                (
                    "/etc/systemd/system/user.slice.d/50-agentwire-cpus.conf",
                    "[Slice]\nAllowedCPUs=0-1,10-15\n"
                ),
                (
                    "/etc/systemd/system/agentwire.slice.d/50-agentwire-cpus.conf",
                    "[Slice]\nAllowedCPUs=0-2,4-9\n"
                ),
                (
                    "/etc/systemd/system/agentwire.service.d/50-agentwire-cpus.conf",
                    "[Service]\nCPUAffinity=0-2,4-9\n"
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn a_plan_that_shares_every_core_with_housekeeping_isolates_nothing() {
        let machine = MachineBuilder::new("1c").cores(0, 1, 1).build();
        let p = plan(&machine, &PlanConfig::embedded_default()).unwrap();
        let e = HostCpus::of(&machine, &p).unwrap_err().to_string();
        assert!(e.contains("isolates no cpu"), "{e}");
    }

    #[test]
    fn a_plan_without_housekeeping_leaves_nothing_to_the_os() {
        let machine = MachineBuilder::new("2c").cores(0, 2, 1).build();
        let config =
            PlanConfig::from_toml("[plan]\nhousekeeping_cores = 0\n[partitions.router]\nany = 2\n")
                .unwrap();
        let p = plan(&machine, &config).unwrap();
        let e = HostCpus::of(&machine, &p).unwrap_err();
        assert!(matches!(e, TuningError::NothingForTheOs), "{e}");
    }
}
