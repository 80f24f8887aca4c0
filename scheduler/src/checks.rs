//! Start-up checks: how well the machine is set up for the plan. Each check is one line
//! that says what was found and, when it is not as it should be, the fix. They read the
//! kernel's files under a root directory (`/` on a real machine; a test points it at a
//! directory of its own), so every outcome is testable.
//!
//! - `isolation`: partition cores (not housekeeping) absent from `isolcpus` / `nohz_full`;
//! - `governor`: CPU frequency governor of partition cores not `performance`;
//! - `hugepages`: no hugepages reserved, and whether transparent huge pages are on;
//! - `memlock`: RLIMIT_MEMLOCK below what the planned executors lock.
//!
//! ```
//! use agentwire_scheduler::checks::{run_checks, CheckInput, SystemFiles};
//! let checks = run_checks(&SystemFiles::live(), &CheckInput {
//!     partition_cpus: vec![1],
//!     executors: 2,
//!     memlock_per_executor_bytes: 640 * 1024,
//!     memlock_limit_bytes: None,
//!     memlock_exempt: false,
//! });
//! assert_eq!(checks.len(), 4);
//! ```

use crate::machine::{format_cpus, parse_cpus};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How a check came out.
///
/// ```
/// assert_eq!(agentwire_scheduler::checks::CheckLevel::Advice.to_string(), "advice");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckLevel {
    /// As it should be.
    Ok,
    /// Works, but latency or throughput will suffer; the line says what to change.
    Advice,
    /// The daemon cannot run as planned; the line says what to change.
    Problem,
}

impl std::fmt::Display for CheckLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckLevel::Ok => "ok",
            CheckLevel::Advice => "advice",
            CheckLevel::Problem => "problem",
        })
    }
}

/// One check's outcome.
///
/// ```
/// # use agentwire_scheduler::checks::*;
/// let c = Check { name: "governor", level: CheckLevel::Ok, line: "performance".into() };
/// assert_eq!(c.to_string(), "check governor: ok: performance");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `isolation`, `governor`, `hugepages` or `memlock`.
    pub name: &'static str,
    /// The outcome.
    pub level: CheckLevel,
    /// What was found, and the fix when there is one.
    pub line: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "check {}: {}: {}", self.name, self.level, self.line)
    }
}

/// Where the kernel's files are read from.
///
/// ```
/// let f = agentwire_scheduler::checks::SystemFiles::under("/tmp/fake-root");
/// assert!(f.path("proc/meminfo").starts_with("/tmp/fake-root"));
/// ```
#[derive(Debug, Clone)]
pub struct SystemFiles {
    root: PathBuf,
}

impl SystemFiles {
    /// The running machine's files (`/sys`, `/proc`).
    ///
    /// ```
    /// assert!(agentwire_scheduler::checks::SystemFiles::live().path("proc/meminfo").exists());
    /// ```
    pub fn live() -> Self {
        Self::under("/")
    }

    /// Files under another root (tests).
    ///
    /// ```
    /// let _ = agentwire_scheduler::checks::SystemFiles::under("/tmp");
    /// ```
    pub fn under(root: impl AsRef<Path>) -> Self {
        Self {
            root: root.as_ref().to_path_buf(),
        }
    }

    /// A path under the root.
    ///
    /// ```
    /// let f = agentwire_scheduler::checks::SystemFiles::live();
    /// assert_eq!(f.path("sys"), std::path::PathBuf::from("/sys"));
    /// ```
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn read(&self, relative: &str) -> Option<String> {
        std::fs::read_to_string(self.path(relative)).ok()
    }
}

/// What the checks need to know about the plan and the process.
///
/// ```
/// let i = agentwire_scheduler::checks::CheckInput { partition_cpus: vec![1, 2], executors: 3,
///     memlock_per_executor_bytes: 1 << 20, memlock_limit_bytes: Some(8 << 20), memlock_exempt: false };
/// assert_eq!(i.memlock_needed_bytes(), 3 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInput {
    /// CPUs partitions' executors run on, housekeeping CPUs excluded.
    pub partition_cpus: Vec<usize>,
    /// Executors the plan starts (router shards and engine executors).
    pub executors: usize,
    /// Locked memory each executor needs (io_uring memory and rings), bytes.
    pub memlock_per_executor_bytes: u64,
    /// The soft RLIMIT_MEMLOCK (`None`: unlimited).
    pub memlock_limit_bytes: Option<u64>,
    /// The process may lock memory beyond the limit (root / CAP_IPC_LOCK).
    pub memlock_exempt: bool,
}

impl CheckInput {
    /// Locked memory the planned executors need, bytes.
    ///
    /// ```
    /// let i = agentwire_scheduler::checks::CheckInput { partition_cpus: vec![], executors: 2,
    ///     memlock_per_executor_bytes: 10, memlock_limit_bytes: None, memlock_exempt: true };
    /// assert_eq!(i.memlock_needed_bytes(), 20);
    /// ```
    pub fn memlock_needed_bytes(&self) -> u64 {
        self.executors as u64 * self.memlock_per_executor_bytes
    }
}

/// Runs every check; one [`Check`] each, in the order of the module docs.
///
/// ```
/// # use agentwire_scheduler::checks::*;
/// let dir = std::env::temp_dir().join(format!("aw-doc-checks-{}", std::process::id()));
/// let checks = run_checks(&SystemFiles::under(&dir), &CheckInput { partition_cpus: vec![1], executors: 1,
///     memlock_per_executor_bytes: 1024, memlock_limit_bytes: Some(512), memlock_exempt: false });
/// assert_eq!(checks[3].level, CheckLevel::Problem);
/// ```
pub fn run_checks(files: &SystemFiles, input: &CheckInput) -> Vec<Check> {
    vec![
        isolation(files, &input.partition_cpus),
        governor(files, &input.partition_cpus),
        hugepages(files),
        memlock(input),
    ]
}

fn isolation(files: &SystemFiles, cpus: &[usize]) -> Check {
    let list = |file: &str| {
        files
            .read(file)
            .and_then(|t| parse_cpus(&t))
            .unwrap_or_default()
    };
    let isolated = list("sys/devices/system/cpu/isolated");
    let nohz = list("sys/devices/system/cpu/nohz_full");
    let missing: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !isolated.contains(c) || !nohz.contains(c))
        .collect();
    if cpus.is_empty() {
        return Check {
            name: "isolation",
            level: CheckLevel::Ok,
            line: "no partition cores outside housekeeping (every partition shares the housekeeping cores)"
                .into(),
        };
    }
    if missing.is_empty() {
        return Check {
            name: "isolation",
            level: CheckLevel::Ok,
            line: format!(
                "partition cpus {} are in isolcpus and nohz_full",
                format_cpus(cpus)
            ),
        };
    }
    let m = format_cpus(&missing);
    Check {
        name: "isolation",
        level: CheckLevel::Advice,
        line: format!(
            "partition cpus {m} are not in isolcpus/nohz_full (isolated: {}, nohz_full: {}), so \
             timer ticks and other tasks interrupt them; fix: add `isolcpus={m} nohz_full={m} \
             rcu_nocbs={m}` to the kernel command line and reboot (`agentwire plan \
             --kernel-cmdline` prints the whole line for the plan, docs/tuning.md)",
            display_list(&isolated),
            display_list(&nohz)
        ),
    }
}

fn display_list(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "none".into()
    } else {
        format_cpus(cpus)
    }
}

fn governor(files: &SystemFiles, cpus: &[usize]) -> Check {
    let mut other: Vec<(usize, String)> = Vec::new();
    let mut without = Vec::new();
    for &cpu in cpus {
        match files.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            Some(g) if g.trim() == "performance" => {}
            Some(g) => other.push((cpu, g.trim().to_string())),
            None => without.push(cpu),
        }
    }
    if !other.is_empty() {
        let cpus: Vec<usize> = other.iter().map(|o| o.0).collect();
        let mut governors: Vec<&str> = other.iter().map(|o| o.1.as_str()).collect();
        governors.sort_unstable();
        governors.dedup();
        return Check {
            name: "governor",
            level: CheckLevel::Advice,
            line: format!(
                "cpus {} run the {} governor, not performance, so clocks drop between bursts; \
                 fix: `cpupower frequency-set -g performance` (or write performance to \
                 /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)",
                format_cpus(&cpus),
                governors.join("/")
            ),
        };
    }
    if !without.is_empty() {
        return Check {
            name: "governor",
            level: CheckLevel::Ok,
            line: format!(
                "cpus {} expose no cpufreq governor (a VM, or firmware-controlled clocks): \
                 nothing to set here; on a VM, pin the vCPUs and set the host's governor",
                format_cpus(&without)
            ),
        };
    }
    Check {
        name: "governor",
        level: CheckLevel::Ok,
        line: if cpus.is_empty() {
            "no partition cores to check".into()
        } else {
            format!("cpus {} run the performance governor", format_cpus(cpus))
        },
    }
}

fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn hugepages(files: &SystemFiles) -> Check {
    let thp = files
        .read("sys/kernel/mm/transparent_hugepage/enabled")
        .and_then(|t| {
            let start = t.find('[')?;
            let end = t[start..].find(']')?;
            Some(t[start + 1..start + end].to_string())
        });
    let meminfo = files.read("proc/meminfo").unwrap_or_default();
    let total = meminfo_value(&meminfo, "HugePages_Total").unwrap_or(0);
    let size_kib = meminfo_value(&meminfo, "Hugepagesize").unwrap_or(2048);
    let thp_text = thp.clone().unwrap_or_else(|| "unavailable".into());
    if total > 0 {
        return Check {
            name: "hugepages",
            level: CheckLevel::Ok,
            line: format!(
                "{total} hugepages of {size_kib} KiB reserved; transparent huge pages: {thp_text}"
            ),
        };
    }
    let thp_on = matches!(thp.as_deref(), Some("always") | Some("madvise"));
    let fix_reserve = "`sysctl vm.nr_hugepages=512` (or hugepages=512 on the kernel command line)";
    Check {
        name: "hugepages",
        level: CheckLevel::Advice,
        line: if thp_on {
            format!(
                "no hugepages reserved (transparent huge pages: {thp_text}), so agent segments \
                 fall back to 4 KiB pages (more TLB misses); fix: reserve some with {fix_reserve}"
            )
        } else {
            format!(
                "no hugepages reserved and transparent huge pages {thp_text}: agent segments \
                 and everything else use 4 KiB pages (more TLB misses); fix: reserve some with \
                 {fix_reserve}, or `echo madvise > /sys/kernel/mm/transparent_hugepage/enabled`"
            )
        },
    }
}

fn memlock(input: &CheckInput) -> Check {
    let needed = input.memlock_needed_bytes();
    let needed_kib = needed.div_ceil(1024);
    let head = format!(
        "{} executor(s) lock {needed_kib} KiB for io_uring",
        input.executors
    );
    match input.memlock_limit_bytes {
        _ if input.memlock_exempt => Check {
            name: "memlock",
            level: CheckLevel::Ok,
            line: format!("{head}; running as root, RLIMIT_MEMLOCK does not apply"),
        },
        None => Check {
            name: "memlock",
            level: CheckLevel::Ok,
            line: format!("{head}; RLIMIT_MEMLOCK is unlimited"),
        },
        Some(limit) if limit >= needed => Check {
            name: "memlock",
            level: CheckLevel::Ok,
            line: format!("{head}; RLIMIT_MEMLOCK is {} KiB", limit / 1024),
        },
        Some(limit) => Check {
            name: "memlock",
            level: CheckLevel::Problem,
            line: format!(
                "{head} but RLIMIT_MEMLOCK is {} KiB; fix: `ulimit -l {needed_kib}` (or \
                 LimitMEMLOCK= in the systemd unit), or lower io_memory_bytes or the partitions' \
                 core counts",
                limit / 1024
            ),
        },
    }
}
