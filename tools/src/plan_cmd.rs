//! `agentwire topology` and `agentwire plan`: the machine as hwloc sees it (live, with the
//! device probes and this process's affinity mask, or from an XML export), and the
//! partition plan a config makes of it, with the start-up checks on the live machine; with
//! `--kernel-cmdline` or `--cpuset`, what the plan asks of the server ([`crate::host_tuning`]).

use crate::host_tuning::HostCpus;
use crate::BoxError;
use agentwire_runtime::config::Config;
use agentwire_runtime::planning;
use agentwire_scheduler::hwloc;
use agentwire_scheduler::machine::{format_cpus, Machine};
use agentwire_scheduler::plan::plan as make_plan;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The live machine as the daemon would plan on it (probes run, lines on stderr), or an
/// XML export as it is.
fn machine(topology: Option<&Path>) -> Result<Machine, BoxError> {
    match topology {
        Some(path) => Ok(hwloc::load(Some(path))?),
        None => {
            let (m, lines) = planning::live_machine();
            for line in lines {
                eprintln!("{line}");
            }
            Ok(m)
        }
    }
}

/// Prints the machine: cores by kind per NUMA node, distances, devices.
pub fn topology(topology: Option<PathBuf>, as_json: bool) -> Result<(), BoxError> {
    let m = machine(topology.as_deref())?;
    if as_json {
        outln!("{}", serde_json::to_string(&m)?)?;
    } else {
        out!("{}", m.summary())?;
    }
    Ok(())
}

/// The daemon configuration a plan is made for: the file, or the embedded default.
fn config(path: Option<&Path>) -> Result<Config, BoxError> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    })
}

/// What `agentwire plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOutput {
    /// The plan (and on the live machine the start-up checks).
    Plan,
    /// The kernel command line that isolates the plan's cores.
    KernelCmdline,
    /// The systemd slice drop-ins that keep other services off the daemon's cores.
    Cpuset,
}

/// Prints the plan as a table or JSON, and for the live machine the start-up checks; a plan
/// that cannot be made is an error naming what to change.
pub fn plan(
    config_path: Option<PathBuf>,
    topology: Option<PathBuf>,
    as_json: bool,
    output: PlanOutput,
) -> Result<(), BoxError> {
    if output != PlanOutput::Plan {
        return tuning(config_path, topology, as_json, output);
    }
    let m = machine(topology.as_deref())?;
    let c = config(config_path.as_deref())?;
    if topology.is_none() {
        // As the daemon would: a CPU this process may not use is named with its line.
        c.check_cpus(&planning::allowed_cpus())?;
    }
    let p = make_plan(&m, &c.plan_config())?;
    // Checks read this machine's kernel settings: they mean nothing for an XML export.
    let checks = if topology.is_none() {
        planning::startup_checks(&c, &p)
    } else {
        Vec::new()
    };
    if as_json {
        let mut value = serde_json::to_value(&p)?;
        value["checks"] = json!(checks);
        value["executors"] = json!(planning::executor_count(&p));
        outln!("{value}")?;
    } else {
        outln!("plan for machine {}", m.source)?;
        out!("{}", p.table())?;
        for check in &checks {
            outln!("{check}")?;
        }
    }
    Ok(())
}

/// `--kernel-cmdline` and `--cpuset`: the plan made on the whole machine (every online cpu,
/// also those this shell may not use: on a tuned server it runs on the OS's cpus only), and
/// what it asks of the kernel or of systemd's slices.
fn tuning(
    config_path: Option<PathBuf>,
    topology: Option<PathBuf>,
    as_json: bool,
    output: PlanOutput,
) -> Result<(), BoxError> {
    let m = match topology.as_deref() {
        Some(path) => hwloc::load(Some(path))?,
        None => {
            let (m, lines) = planning::whole_machine();
            for line in lines {
                eprintln!("{line}");
            }
            m
        }
    };
    let c = config(config_path.as_deref())?;
    let p = make_plan(&m, &c.plan_config())?;
    let cpus = HostCpus::of(&m, &p)?;
    let (isolated, os, daemon) = (
        format_cpus(&cpus.isolated),
        format_cpus(&cpus.os),
        format_cpus(&cpus.daemon),
    );
    match (output, as_json) {
        (PlanOutput::KernelCmdline, true) => outln!("{}", cpus.kernel_json(&m.source))?,
        (PlanOutput::KernelCmdline, false) => {
            outln!("{}", cpus.kernel_cmdline())?;
            eprintln!(
                "isolated (partition cores and idle router hyper-threads): {isolated}; left to \
                 the OS: {os}. Add the line to GRUB_CMDLINE_LINUX in /etc/default/grub, run \
                 update-grub and reboot; then give the daemon its cpus with `agentwire plan \
                 --cpuset` (docs/tuning.md)."
            );
        }
        (_, true) => outln!("{}", cpus.cpuset_json(&m.source))?,
        (_, false) => {
            outln!(
                "# systemd drop-ins for the plan on machine {}: the OS's cpus {os}, the \
                 daemon's {daemon}.",
                m.source
            )?;
            outln!(
                "# Write each file below, then `systemctl daemon-reload` and `systemctl restart \
                 agentwire`"
            )?;
            outln!("# (AllowedCPUs= needs cgroup v2 and systemd 244 or later).")?;
            for d in cpus.dropins() {
                out!("\n# {}\n{}", d.path(), d.contents())?;
            }
        }
    }
    Ok(())
}
