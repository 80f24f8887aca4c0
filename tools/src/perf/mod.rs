//! `agentwire perf`: perf-event counters of the running daemon, per partition, per thread
//! and per partition core; and `agentwire perf record`, which wraps `perf record` on a
//! partition's threads.
//!
//! The daemon's threads are found from its status (pid, partitions and their executors'
//! thread names, `aw-<partition>-<cpu>`) and `/proc/<pid>/task/*/comm`. Threads that belong
//! to no partition (the main thread, `aw-accept`, `aw-rebalance`, glommio's helpers) are
//! reported as the partition `other`.

pub mod counters;

use counters::{CounterSet, Target, Values, COUNTERS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

/// Name under which threads outside every partition are reported.
pub const OTHER_PARTITION: &str = "other";

/// One daemon thread.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonThread {
    /// Thread name (`comm`).
    pub thread: String,
    /// Kernel thread id.
    pub tid: i32,
    /// The CPU it is pinned to (partition executors), none for the other threads.
    pub cpu: Option<u32>,
}

/// A partition and the daemon threads that run it.
#[derive(Debug, Clone)]
pub struct PartitionThreads {
    /// Partition name (`router`, `streaming`, ..., or `other`).
    pub name: String,
    /// CPUs it runs on now.
    pub cpus: Vec<u32>,
    /// Its threads.
    pub threads: Vec<DaemonThread>,
}

/// The daemon's process id and its threads by partition (those `partition` selects).
pub fn discover(
    socket: &Path,
    partition: Option<&str>,
) -> Result<(u32, Vec<PartitionThreads>), BoxError> {
    let status = started_status(socket)?;
    let pid = status.pid;
    let tasks = thread_names(pid)?;
    let mut claimed = std::collections::BTreeSet::new();
    let mut partitions: Vec<PartitionThreads> = status
        .partitions
        .iter()
        .map(|p| {
            let threads = p
                .executors
                .iter()
                .filter_map(|e| {
                    let comm = comm_of(&e.thread);
                    let (tid, _) = tasks.iter().find(|(_, name)| *name == comm)?;
                    claimed.insert(*tid);
                    Some(DaemonThread {
                        thread: e.thread.clone(),
                        tid: *tid,
                        cpu: Some(e.cpu),
                    })
                })
                .collect();
            PartitionThreads {
                name: p.name.clone(),
                cpus: p.cpus.clone(),
                threads,
            }
        })
        .collect();
    partitions.push(PartitionThreads {
        name: OTHER_PARTITION.to_string(),
        cpus: Vec::new(),
        threads: tasks
            .iter()
            .filter(|(tid, _)| !claimed.contains(tid))
            .map(|(tid, name)| DaemonThread {
                thread: name.clone(),
                tid: *tid,
                cpu: None,
            })
            .collect(),
    });
    if let Some(wanted) = partition {
        let names: Vec<String> = partitions.iter().map(|p| p.name.clone()).collect();
        partitions.retain(|p| p.name == wanted);
        if partitions.is_empty() {
            return Err(format!(
                "the daemon has no partition {wanted:?}; it has: {}",
                names.join(", ")
            )
            .into());
        }
    }
    Ok((pid, partitions))
}

/// The daemon's status once it has started its partitions (a daemon that has only just
/// bound its socket reports none yet; this waits for them, at most 10 s).
fn started_status(socket: &Path) -> Result<agentwire_shm::control::StatusReport, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = agentwire_shm::client::query_status(socket).map_err(|e| {
            format!(
                "no daemon answers at {} ({e}); start one with `agentwire serve` or pass --socket",
                socket.display()
            )
        })?;
        if !status.partitions.is_empty() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err("the daemon reports no partitions 10 s after it answered".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A thread name as the kernel keeps it (at most 15 bytes).
fn comm_of(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Every thread of `pid` with its name, by tid.
fn thread_names(pid: u32) -> Result<Vec<(i32, String)>, BoxError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?
    {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            out.push((tid, comm.trim_end().to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// Options of `agentwire perf`.
#[derive(Debug, Clone)]
pub struct PerfOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Only this partition.
    pub partition: Option<String>,
    /// How long to count.
    pub duration: Duration,
    /// Print one JSON object.
    pub json: bool,
}

/// One measured thread or core.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Thread name, or `cpu N` for a core.
    pub target: String,
    /// Thread id (threads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<i32>,
    /// The CPU (a core, or the CPU a thread is pinned to).
    pub cpu: Option<u32>,
    /// Counts by counter name; null where unavailable.
    pub values: Values,
    /// Instructions per cycle (null without hardware counters).
    pub ipc: Option<f64>,
    /// Task clock over the interval: 1.0 is one CPU busy the whole time.
    pub cpu_utilization: Option<f64>,
    /// Why each null counter of this target is null (absent when every counter counted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<&'static str, String>,
}

impl Measured {
    fn new(
        target: String,
        tid: Option<i32>,
        cpu: Option<u32>,
        values: Values,
        interval: Duration,
    ) -> Self {
        let cpu_utilization = values
            .get("task_clock_ns")
            .map(|ns| ns as f64 / interval.as_nanos().max(1) as f64);
        Self {
            target,
            tid,
            cpu,
            ipc: values.ipc(),
            values,
            cpu_utilization,
            unavailable: BTreeMap::new(),
        }
    }

    /// Keeps the reasons `set` gave for the counters it could not open.
    fn with_reasons(mut self, set: &CounterSet) -> Self {
        self.unavailable.extend(
            set.unavailable()
                .map(|(name, reason)| (name, reason.to_string())),
        );
        self
    }
}

/// One partition's counts.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Partition name.
    pub name: String,
    /// CPUs it runs on.
    pub cpus: Vec<u32>,
    /// Per thread.
    pub threads: Vec<Measured>,
    /// Per core: every task while it ran on that CPU (the partition's threads and whatever
    /// else shares the core).
    pub cores: Vec<Measured>,
    /// The sum over its threads.
    pub total: Measured,
}

/// What `agentwire perf --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// Daemon process id.
    pub pid: u32,
    /// Counted seconds.
    pub duration_s: f64,
    /// `user+kernel`, or `user` where the kernel may not be counted.
    pub scope: &'static str,
    /// Counter names, in column order.
    pub counters: Vec<&'static str>,
    /// Counters that could not be counted for at least one target, with the kernel's reason
    /// (first seen; each target's own reasons are under its `unavailable`).
    pub unavailable: BTreeMap<&'static str, String>,
    /// Per partition.
    pub partitions: Vec<PartitionReport>,
}

/// Counts the daemon's partition threads and cores for `interval`.
pub fn measure(
    socket: &Path,
    partition: Option<&str>,
    interval: Duration,
    progress: bool,
) -> Result<PerfReport, BoxError> {
    let (pid, partitions) = discover(socket, partition)?;
    let paranoid = counters::paranoid_level();
    let kernel = counters::include_kernel(paranoid);
    let mut unavailable = BTreeMap::new();
    let mut open = |target| {
        let set = CounterSet::open(target, kernel, paranoid);
        for (name, reason) in set.unavailable() {
            unavailable
                .entry(name)
                .or_insert_with(|| reason.to_string());
        }
        set
    };
    let mut sets: Vec<(Vec<CounterSet>, Vec<CounterSet>)> = partitions
        .iter()
        .map(|p| {
            let threads = p
                .threads
                .iter()
                .map(|t| open(Target::Thread(t.tid)))
                .collect();
            let cores = p
                .cpus
                .iter()
                .map(|&c| open(Target::Cpu(c as usize)))
                .collect();
            (threads, cores)
        })
        .collect();
    let stat_before = cpu_times();
    let started = Instant::now();
    let end = started + interval;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        if progress {
            eprint!(
                "\ragentwire perf: counting, {:.0} s left ",
                left.as_secs_f64()
            );
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
    if progress {
        eprint!("\r{:40}\r", "");
    }
    let elapsed = started.elapsed();
    let stat_after = cpu_times();
    let reports = partitions
        .iter()
        .zip(&mut sets)
        .map(|(p, (thread_sets, core_sets))| {
            let mut total = Values::default();
            let mut total_reasons = BTreeMap::new();
            let threads: Vec<Measured> = p
                .threads
                .iter()
                .zip(thread_sets.iter_mut())
                .map(|(t, set)| {
                    let values = set.read();
                    total.add(&values);
                    let m = Measured::new(t.thread.clone(), Some(t.tid), t.cpu, values, elapsed)
                        .with_reasons(set);
                    total_reasons.extend(m.unavailable.clone());
                    m
                })
                .collect();
            let cores = p
                .cpus
                .iter()
                .zip(core_sets.iter_mut())
                .map(|(&cpu, set)| {
                    let values = set.read();
                    let mut core =
                        Measured::new(format!("cpu {cpu}"), None, Some(cpu), values, elapsed)
                            .with_reasons(set);
                    // A CPU's task clock is wall time; its busy share comes from /proc/stat.
                    core.cpu_utilization = busy_share(&stat_before, &stat_after, cpu);
                    core
                })
                .collect();
            PartitionReport {
                name: p.name.clone(),
                cpus: p.cpus.clone(),
                threads,
                cores,
                total: Measured {
                    unavailable: total_reasons,
                    ..Measured::new("total".into(), None, None, total, elapsed)
                },
            }
        })
        .collect();
    Ok(PerfReport {
        pid,
        duration_s: elapsed.as_secs_f64(),
        scope: if kernel { "user+kernel" } else { "user" },
        counters: COUNTERS.iter().map(|c| c.name).collect(),
        unavailable,
        partitions: reports,
    })
}

/// Per CPU: (busy, total) jiffies from `/proc/stat` (busy: everything but idle and iowait).
fn cpu_times() -> BTreeMap<u32, (u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_cpu_times(&text)
}

fn parse_cpu_times(text: &str) -> BTreeMap<u32, (u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((cpu, (total - idle, total)))
        })
        .collect()
}

/// Busy share of `cpu` between two `/proc/stat` readings.
fn busy_share(
    before: &BTreeMap<u32, (u64, u64)>,
    after: &BTreeMap<u32, (u64, u64)>,
    cpu: u32,
) -> Option<f64> {
    let (b0, t0) = before.get(&cpu)?;
    let (b1, t1) = after.get(&cpu)?;
    let total = t1.checked_sub(*t0).filter(|&t| t > 0)?;
    Some(b1.saturating_sub(*b0) as f64 / total as f64)
}

/// Runs `agentwire perf` and prints the table or the JSON object.
pub fn run(options: PerfOptions) -> Result<(), BoxError> {
    let progress = !options.json && std::io::stderr().is_terminal();
    let report = measure(
        &options.socket,
        options.partition.as_deref(),
        options.duration,
        progress,
    )?;
    if options.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        out!("{}", table(&report))?;
    }
    Ok(())
}

fn cell(value: Option<u64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn table(report: &PerfReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "agentwire perf: daemon pid {}, {:.1} s, {}\n",
        report.pid, report.duration_s, report.scope
    );
    let mut header = format!(
        "{:<10} {:<16} {:>4} {:>6} {:>5}",
        "partition", "target", "cpu", "util", "ipc"
    );
    for spec in COUNTERS {
        let _ = write!(header, " {:>12}", spec.column);
    }
    out.push_str(&header);
    out.push('\n');
    for p in &report.partitions {
        for m in p.threads.iter().chain(&p.cores).chain([&p.total]) {
            let _ = write!(
                out,
                "{:<10} {:<16} {:>4} {:>6} {:>5}",
                p.name,
                m.target,
                m.cpu.map_or("-".into(), |c| c.to_string()),
                m.cpu_utilization
                    .map_or("n/a".into(), |u| format!("{:.0}%", u * 100.0)),
                m.ipc.map_or("n/a".into(), |i| format!("{i:.2}"))
            );
            for spec in COUNTERS {
                let v = m.values.get(spec.name);
                let text = if spec.name == "task_clock_ns" {
                    v.map_or("n/a".into(), |ns| format!("{:.1}", ns as f64 / 1e6))
                } else {
                    cell(v)
                };
                let _ = write!(out, " {text:>12}");
            }
            out.push('\n');
        }
    }
    for (name, reason) in &report.unavailable {
        let _ = writeln!(out, "unavailable: {name}: {reason}");
    }
    out
}

/// Options of `agentwire perf record`.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Only this partition's threads [default: every partition's threads].
    pub partition: Option<String>,
    /// How long to record when the perf arguments name no command.
    pub duration: Duration,
    /// Arguments passed to `perf record` after `-t TIDS`.
    pub perf_args: Vec<String>,
}

/// The `perf record` command line for these threads: `-t TIDS`, then the user's arguments,
/// then `-- sleep S` unless the arguments already end in a command after `--`.
pub fn record_command(tids: &[i32], perf_args: &[String], duration: Duration) -> Vec<String> {
    let tid_list: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
    let mut args = vec!["record".to_string(), "-t".to_string(), tid_list.join(",")];
    args.extend(perf_args.iter().cloned());
    if !perf_args.iter().any(|a| a == "--") {
        args.extend([
            "--".to_string(),
            "sleep".to_string(),
            format!("{}", duration.as_secs_f64()),
        ]);
    }
    args
}

/// Runs `perf record` on the partition's threads; fails when perf fails.
pub fn record(options: RecordOptions) -> Result<(), BoxError> {
    let (_, partitions) = discover(&options.socket, options.partition.as_deref())?;
    let tids: Vec<i32> = partitions
        .iter()
        .filter(|p| options.partition.is_some() || p.name != OTHER_PARTITION)
        .flat_map(|p| p.threads.iter().map(|t| t.tid))
        .collect();
    if tids.is_empty() {
        return Err("no daemon threads to record in that partition".into());
    }
    let perf = std::env::var("AGENTWIRE_PERF").unwrap_or_else(|_| "perf".to_string());
    let args = record_command(&tids, &options.perf_args, options.duration);
    eprintln!("agentwire perf record: {perf} {}", args.join(" "));
    let status = std::process::Command::new(&perf)
        .args(&args)
        .status()
        .map_err(|e| {
            format!(
                "cannot run {perf:?} ({e}): install perf (Debian: linux-perf, which scripts/setup.sh installs) or set AGENTWIRE_PERF"
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("perf record failed ({status})").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_appends_a_sleep_only_when_no_command_is_given() {
        let d = Duration::from_millis(1500);
        assert_eq!(
            record_command(&[7, 9], &["-g".into()], d),
            ["record", "-t", "7,9", "-g", "--", "sleep", "1.5"]
        );
        let own: Vec<String> = ["-o", "x.data", "--", "sleep", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            record_command(&[7], &own, d),
            ["record", "-t", "7", "-o", "x.data", "--", "sleep", "3"]
        );
    }

    #[test]
    fn proc_stat_gives_each_cpu_its_busy_share() {
        let before = parse_cpu_times("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\n");
        let after = parse_cpu_times("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 40 0 20 140 0 0 0 0 0 0\n");
        assert_eq!(busy_share(&before, &after, 0), Some(0.4));
        assert_eq!(busy_share(&before, &after, 1), None);
    }

    #[test]
    fn thread_names_are_cut_like_the_kernel_cuts_them() {
        assert_eq!(comm_of("aw-streaming-10"), "aw-streaming-10");
        assert_eq!(comm_of("aw-streaming-100"), "aw-streaming-10");
    }
}
