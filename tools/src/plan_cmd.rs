//! `agentwire topology` and `agentwire plan`: the machine as hwloc sees it (live or from an
//! XML export), and the partition plan a config makes of it.

use crate::BoxError;
use agentwire_scheduler::hwloc;
use agentwire_scheduler::machine::Machine;
use agentwire_scheduler::plan::{plan as make_plan, PlanConfig};
use std::path::{Path, PathBuf};

fn machine(topology: Option<&Path>) -> Result<Machine, BoxError> {
    Ok(hwloc::load(topology)?)
}

/// Prints the machine: cores by kind per NUMA node, distances, devices.
pub fn topology(topology: Option<PathBuf>, as_json: bool) -> Result<(), BoxError> {
    let m = machine(topology.as_deref())?;
    if as_json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        print!("{}", m.summary());
    }
    Ok(())
}

/// The `[plan]` and `[partitions.*]` tables of a config file, or the embedded default when
/// there is no file or it names no partitions.
pub fn plan_config(config: Option<&Path>) -> Result<PlanConfig, BoxError> {
    let Some(path) = config else {
        return Ok(PlanConfig::embedded_default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let parsed =
        PlanConfig::from_toml(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    if parsed.partitions.is_empty() {
        return Ok(PlanConfig::embedded_default());
    }
    Ok(parsed)
}

/// Prints the plan as a table or JSON; a plan that cannot be made is an error naming what
/// to change.
pub fn plan(
    config: Option<PathBuf>,
    topology: Option<PathBuf>,
    as_json: bool,
) -> Result<(), BoxError> {
    let m = machine(topology.as_deref())?;
    let c = plan_config(config.as_deref())?;
    let p = make_plan(&m, &c)?;
    if as_json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!("plan for machine {}", m.source);
        print!("{}", p.table());
    }
    Ok(())
}
