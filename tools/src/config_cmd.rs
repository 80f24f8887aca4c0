//! `agentwire config check FILE` and `agentwire config default`: validate a daemon
//! configuration as `serve` would load it, every problem at once with file, line and key,
//! then plan it on this machine (or an hwloc export) as `serve` would; print the embedded
//! default.
//!
//! Exit codes, for scripts (an `ExecStartPre=` or a deploy step): 0 the file is valid and
//! plans, 1 it is not (every problem printed), 2 the check could not run (bad arguments, a
//! file or topology that cannot be read).

use crate::BoxError;
use agentwire_runtime::config::{Config, ConfigError, ConfigProblem, DEFAULT_CONFIG_TOML};
use agentwire_runtime::planning;
use agentwire_scheduler::hwloc;
use agentwire_scheduler::plan::{plan as make_plan, Plan, PlanError};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The exit code of a check that found the file invalid.
pub const EXIT_INVALID: u8 = 1;
/// The exit code of a check that could not run.
pub const EXIT_USAGE: u8 = 2;

/// Why `config check` did not succeed: the file is invalid (already reported), or the check
/// could not run (the error says why). `main` turns each into its exit code.
///
/// ```text
/// Err(CheckFailed::Invalid) -> exit 1; Err(CheckFailed::Usage(e)) -> "agentwire: error: {e}", exit 2
/// ```
#[derive(Debug)]
pub enum CheckFailed {
    /// The file has problems; they were printed.
    Invalid,
    /// The check could not run.
    Usage(BoxError),
}

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckFailed::Invalid => f.write_str("the configuration is invalid"),
            CheckFailed::Usage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CheckFailed {}

/// `agentwire config default`: the embedded default, documented key by key.
///
/// ```text
/// agentwire config default > /etc/agentwire/agentwire.toml
/// ```
pub fn default() -> Result<(), BoxError> {
    out!("{DEFAULT_CONFIG_TOML}")?;
    Ok(())
}

/// What a check found.
struct Report {
    problems: Vec<ConfigProblem>,
    /// The plan, when the file is valid and plans.
    plan: Option<Plan>,
    /// The machine planned on ("live" or the export's path).
    machine: String,
    /// The start-up checks of this machine's kernel settings (live only).
    checks: Vec<agentwire_scheduler::checks::Check>,
}

/// `agentwire config check FILE [--topology XML] [--json]`.
///
/// ```text
/// agentwire config check /etc/agentwire/agentwire.toml && systemctl reload agentwire
/// ```
pub fn check(file: &Path, topology: Option<PathBuf>, as_json: bool) -> Result<(), BoxError> {
    let report = run_check(file, topology.as_deref())
        .map_err(|e| -> BoxError { Box::new(CheckFailed::Usage(e)) })?;
    // An error writing the report (stdout's reader gone) travels as it is: `main` ends
    // quietly on a closed pipe.
    print(file, &report, as_json)?;
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Box::new(CheckFailed::Invalid))
    }
}

fn run_check(file: &Path, topology: Option<&Path>) -> Result<Report, BoxError> {
    // The machine first: a topology that cannot be read is a usage error, whatever the file.
    let machine = match topology {
        Some(path) => hwloc::load(Some(path))?,
        // The probes' lines (a GPU runtime missing) say nothing about the file.
        None => planning::live_machine().0,
    };
    let mut report = Report {
        problems: Vec::new(),
        plan: None,
        machine: machine.source.clone(),
        checks: Vec::new(),
    };
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(ConfigError::Invalid { problems, .. }) => {
            report.problems = problems;
            return Ok(report);
        }
        Err(e @ ConfigError::Read { .. }) => return Err(e.into()),
    };
    if topology.is_none() {
        // As the daemon would: a CPU this process may not use is named with its line.
        if let Err(ConfigError::Invalid { problems, .. }) =
            config.check_cpus(&planning::allowed_cpus())
        {
            report.problems = problems;
            return Ok(report);
        }
    }
    match make_plan(&machine, &config.plan_config()) {
        Ok(plan) => {
            if topology.is_none() {
                report.checks = planning::startup_checks(&config, &plan);
            }
            report.plan = Some(plan);
        }
        Err(e) => report.problems.push(plan_problem(&config, &e)),
    }
    Ok(report)
}

/// A plan that cannot be made, as a problem of the key that asked for it: the router's
/// `router_cpus`/`router_cpu` when they name its CPUs, else the partition's table.
fn plan_problem(config: &Config, e: &PlanError) -> ConfigProblem {
    let partition = match e {
        PlanError::Invalid { partition, .. }
        | PlanError::NoSuchCpu { partition, .. }
        | PlanError::NotEnoughCores { partition, .. }
        | PlanError::NoAccelerator { partition, .. } => partition.as_str(),
        PlanError::Overlap { second, .. } => second.as_str(),
    };
    let key = match partition {
        "router" if !config.router_cpus.is_empty() => "router_cpus".to_string(),
        "router" if config.router_cpu.is_some() => "router_cpu".to_string(),
        name => format!("partitions.{name}"),
    };
    ConfigProblem {
        origin: config.source.origin.clone(),
        line: config.source.line(&key),
        detail: format!(": cannot be planned: {e}"),
        key,
    }
}

fn print(file: &Path, report: &Report, as_json: bool) -> std::io::Result<()> {
    if as_json {
        let problems: Vec<serde_json::Value> = report
            .problems
            .iter()
            .map(|p| {
                json!({"file": p.origin, "line": p.line, "key": p.key,
                    "message": p.detail.trim_start_matches(": "), "text": p.to_string()})
            })
            .collect();
        let checks: Vec<serde_json::Value> = report
            .checks
            .iter()
            .map(|c| json!({"name": c.name, "level": c.level, "line": c.line}))
            .collect();
        outln!(
            "{}",
            json!({
                "file": file, "valid": report.problems.is_empty(), "problems": problems,
                "machine": report.machine, "plan": report.plan, "checks": checks,
            })
        )?;
        return Ok(());
    }
    if report.problems.is_empty() {
        outln!(
            "{}: valid; plan on machine {}:",
            file.display(),
            report.machine
        )?;
        if let Some(plan) = &report.plan {
            out!("{}", plan.table())?;
        }
        for check in &report.checks {
            outln!("{check}")?;
        }
        return Ok(());
    }
    // Problems go to stderr, one per line, in the compiler's `file:line: ` form that
    // editors jump to; a closed stderr is not an error worth a panic.
    let mut text = String::new();
    for p in &report.problems {
        text.push_str(&format!("{p}\n"));
    }
    let n = report.problems.len();
    text.push_str(&format!(
        "{}: {n} problem{}\n",
        file.display(),
        if n == 1 { "" } else { "s" }
    ));
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    Ok(())
}
