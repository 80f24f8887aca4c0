//! `agentwire tune`: short load trials over the router's batch size, idle strategy and ring
//! size. Each trial starts a daemon of its own on a config with the trial's settings (the
//! user's config, or the embedded default, with three keys replaced), drives it with
//! `agentwire load`'s producers and consumers, counts the router threads with perf events
//! meanwhile, and stops it. The trials print as a table; the best settings are written as a
//! config snippet.

use crate::load::{self, LoadOptions, LoadReport, SpawnedDaemon};
use crate::perf;
use agentwire_shm::idle::IdleStrategy;
use serde::Serialize;
use std::path::PathBuf;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What makes one trial better than another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Most messages per second (ties: lower p99).
    Throughput,
    /// Lowest p99 latency (ties: more messages per second).
    P99,
}

/// Everything `agentwire tune` takes.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Router batch sizes to try (`router_batch_frames`).
    pub batch_frames: Vec<usize>,
    /// Idle strategies to try (`idle`).
    pub idle: Vec<String>,
    /// Ring capacities to try (`ring_capacity_bytes`).
    pub ring_bytes: Vec<usize>,
    /// The config the trials start from [default: the embedded default].
    pub base_config: Option<PathBuf>,
    /// The load of each trial (its socket and `spawn_daemon` are set per trial).
    pub load: LoadOptions,
    /// What to maximise.
    pub objective: Objective,
    /// Where the best settings are written.
    pub output: PathBuf,
    /// Runs per trial; the run of median throughput counts.
    pub repeat: usize,
}

/// Router counters over one trial (perf events on the router threads).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouterCounters {
    /// Context switches of the router threads.
    pub context_switches: Option<u64>,
    /// Router threads' task clock over the interval (1.0: one CPU busy throughout).
    pub cpu_utilization: Option<f64>,
    /// Instructions per cycle (null without a hardware PMU).
    pub ipc: Option<f64>,
    /// Cache misses (null without a hardware PMU).
    pub cache_misses: Option<u64>,
}

/// One trial: its settings and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// `router_batch_frames`.
    pub batch_frames: usize,
    /// `idle`.
    pub idle: String,
    /// `ring_capacity_bytes`.
    pub ring_capacity_bytes: usize,
    /// The load report (null when the trial failed).
    pub load: Option<LoadReport>,
    /// Router counters during the measured part.
    pub router: RouterCounters,
    /// Why the trial failed or was disqualified (losses), if it was.
    pub error: Option<String>,
}

impl Trial {
    fn score(&self, objective: Objective) -> Option<(f64, f64)> {
        let r = self.load.as_ref().filter(|_| self.error.is_none())?;
        let p99 = r.latency_ns.p99 as f64;
        Some(match objective {
            Objective::Throughput => (r.msgs_per_s, -p99),
            Objective::P99 => (-p99, r.msgs_per_s),
        })
    }

    fn snippet_lines(&self) -> String {
        format!(
            "router_batch_frames = {}\nidle = \"{}\"\nring_capacity_bytes = {}\n",
            self.batch_frames, self.idle, self.ring_capacity_bytes
        )
    }
}

/// What `agentwire tune --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// What was maximised.
    pub objective: Objective,
    /// Every trial, in the order run.
    pub trials: Vec<Trial>,
    /// Index of the best trial in `trials`.
    pub best: usize,
    /// The config snippet written to `output`.
    pub snippet: String,
    /// Where the snippet was written.
    pub output: PathBuf,
}

/// Parses a comma-separated list with `parse` (for the grid options).
pub fn parse_list<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let items: Result<Vec<T>, String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err("give at least one value".into());
    }
    Ok(items)
}

/// The base config with one trial's three settings in place.
fn trial_config(base: &toml::Table, trial: &Trial) -> String {
    let mut table = base.clone();
    table.insert(
        "router_batch_frames".into(),
        toml::Value::Integer(trial.batch_frames as i64),
    );
    table.insert("idle".into(), toml::Value::String(trial.idle.clone()));
    table.insert(
        "ring_capacity_bytes".into(),
        toml::Value::Integer(trial.ring_capacity_bytes as i64),
    );
    toml::to_string(&table).expect("a TOML table serialises")
}

fn base_table(options: &TuneOptions) -> Result<toml::Table, BoxError> {
    let Some(path) = &options.base_config else {
        return Ok(toml::Table::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Refuse a bad base config before the first trial, with the daemon's own error.
    agentwire_runtime::config::Config::parse(&text, &path.display().to_string())?;
    Ok(text.parse::<toml::Table>()?)
}

fn validate(options: &TuneOptions) -> Result<(), BoxError> {
    for idle in &options.idle {
        idle.parse::<IdleStrategy>()
            .map_err(|e| format!("--idle {idle}: {e}"))?;
    }
    for &ring in &options.ring_bytes {
        agentwire_shm::ring::check_capacity(ring).map_err(|_| {
            format!("--ring {ring}: ring sizes are powers of two from 1024 to 1073741824")
        })?;
    }
    for &batch in &options.batch_frames {
        if !(1..=agentwire_router::ROUTER_BATCH_FRAMES_LIMIT).contains(&batch) {
            return Err(format!(
                "--batch {batch}: 1 to {}",
                agentwire_router::ROUTER_BATCH_FRAMES_LIMIT
            )
            .into());
        }
    }
    if options.load.msg_size > options.ring_bytes.iter().min().copied().unwrap_or(0) / 4 {
        return Err("--msg-size must fit a quarter of the smallest --ring".into());
    }
    Ok(())
}

/// Runs one trial `options.repeat` times and keeps the run of median throughput.
fn run_trial(base: &toml::Table, options: &TuneOptions, trial: &mut Trial) -> Result<(), BoxError> {
    let mut runs = Vec::with_capacity(options.repeat);
    for _ in 0..options.repeat.max(1) {
        runs.push(run_once(base, options, trial)?);
    }
    runs.sort_by(|a, b| a.0.msgs_per_s.total_cmp(&b.0.msgs_per_s));
    let (report, router) = runs.swap_remove(runs.len() / 2);
    trial.router = router;
    if report.lost > 0 || report.duplicated > 0 {
        trial.error = Some(format!(
            "{} lost, {} duplicated: disqualified",
            report.lost, report.duplicated
        ));
    }
    trial.load = Some(report);
    Ok(())
}

/// One run of a trial: a daemon on the trial's config, the load, router counters meanwhile.
fn run_once(
    base: &toml::Table,
    options: &TuneOptions,
    trial: &Trial,
) -> Result<(LoadReport, RouterCounters), BoxError> {
    let dir = std::env::temp_dir().join(format!("aw-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("trial.toml");
    std::fs::write(&config, trial_config(base, trial))?;
    let (_daemon, socket) = SpawnedDaemon::start(Some(&config))?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut load_options = options.load.clone();
    load_options.socket = Some(socket.clone());
    load_options.spawn_daemon = false;
    load_options.json = true; // no progress lines from inside a trial
    let (warmup, duration) = (load_options.warmup, load_options.duration);
    let counting = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        perf::measure(&socket, Some("router"), duration, false).map_err(|e| e.to_string())
    });
    let report = load::run_routed(&load_options)?;
    let counted = counting.join().expect("perf thread")?;
    let total = &counted.partitions[0].total;
    let router = RouterCounters {
        context_switches: total.values.get("context_switches"),
        cpu_utilization: total.cpu_utilization,
        ipc: total.ipc,
        cache_misses: total.values.get("cache_misses"),
    };
    Ok((report, router))
}

/// Runs every trial of the grid, prints the table (or JSON) and writes the best settings.
pub fn run(options: TuneOptions) -> Result<(), BoxError> {
    validate(&options)?;
    let base = base_table(&options)?;
    let mut trials = Vec::new();
    for &batch_frames in &options.batch_frames {
        for idle in &options.idle {
            for &ring_capacity_bytes in &options.ring_bytes {
                trials.push(Trial {
                    batch_frames,
                    idle: idle.clone(),
                    ring_capacity_bytes,
                    load: None,
                    router: RouterCounters::default(),
                    error: None,
                });
            }
        }
    }
    let total = trials.len();
    for (i, trial) in trials.iter_mut().enumerate() {
        if let Err(e) = run_trial(&base, &options, trial) {
            trial.error = Some(e.to_string());
        }
        eprintln!(
            "agentwire tune: trial {}/{total}: {}",
            i + 1,
            trial_line(trial)
        );
    }
    let best = (0..trials.len())
        .filter_map(|i| Some((i, trials[i].score(options.objective)?)))
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map(|(i, _)| i)
        .ok_or("every trial failed; see the lines above")?;
    let snippet = snippet(&options, &trials[best], total);
    std::fs::write(&options.output, &snippet)
        .map_err(|e| format!("cannot write {}: {e}", options.output.display()))?;
    let report = TuneReport {
        objective: options.objective,
        trials,
        best,
        snippet,
        output: options.output.clone(),
    };
    if options.load.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        out!("{}", table(&report))?;
    }
    Ok(())
}

fn trial_line(t: &Trial) -> String {
    let settings = format!(
        "batch {:>4}  {:<15} ring {:>8}",
        t.batch_frames, t.idle, t.ring_capacity_bytes
    );
    match (&t.load, &t.error) {
        (Some(r), error) => format!(
            "{settings}  {:>8.3} M msg/s  p50 {:>8} ns  p99 {:>9} ns{}",
            r.msgs_per_s / 1e6,
            r.latency_ns.p50,
            r.latency_ns.p99,
            error.as_ref().map_or(String::new(), |e| format!("  ({e})"))
        ),
        (None, error) => format!("{settings}  failed: {}", error.as_deref().unwrap_or("?")),
    }
}

fn snippet(options: &TuneOptions, best: &Trial, trials: usize) -> String {
    let l = &options.load;
    let mut text = format!(
        "# agentwire tune: best of {trials} trials by {}, each {} loop {} with {} B messages, \
         {} producer(s), {} consumer(s), {:.1} s measured.\n",
        match options.objective {
            Objective::Throughput => "throughput",
            Objective::P99 => "p99 latency",
        },
        load::mode_name(l.mode),
        load::pattern_name(l.pattern),
        l.msg_size,
        l.producers,
        l.consumers,
        l.duration.as_secs_f64()
    );
    if let Some(r) = &best.load {
        text.push_str(&format!(
            "# measured: {:.3} M msg/s, p50 {} ns, p99 {} ns. Put these keys in the daemon's config.\n",
            r.msgs_per_s / 1e6,
            r.latency_ns.p50,
            r.latency_ns.p99
        ));
    }
    text.push_str(&best.snippet_lines());
    text
}

fn table(report: &TuneReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:>2} {:>6} {:<15} {:>9} {:>10} {:>9} {:>10} {:>7} {:>8} {:>5}\n",
        "", "batch", "idle", "ring", "M msg/s", "p50 ns", "p99 ns", "ctx-sw", "rtr util", "ipc"
    );
    for (i, t) in report.trials.iter().enumerate() {
        let mark = if i == report.best { "*" } else { "" };
        let (rate, p50, p99) = t.load.as_ref().map_or(
            ("failed".to_string(), "-".to_string(), "-".to_string()),
            |r| {
                (
                    format!("{:.3}", r.msgs_per_s / 1e6),
                    r.latency_ns.p50.to_string(),
                    r.latency_ns.p99.to_string(),
                )
            },
        );
        let _ = writeln!(
            out,
            "{mark:>2} {:>6} {:<15} {:>9} {rate:>10} {p50:>9} {p99:>10} {:>7} {:>8} {:>5}{}",
            t.batch_frames,
            t.idle,
            t.ring_capacity_bytes,
            t.router
                .context_switches
                .map_or("n/a".into(), |c| c.to_string()),
            t.router
                .cpu_utilization
                .map_or("n/a".into(), |u| format!("{:.0}%", u * 100.0)),
            t.router.ipc.map_or("n/a".into(), |i| format!("{i:.2}")),
            t.error.as_ref().map_or(String::new(), |e| format!("  {e}"))
        );
    }
    let _ = write!(
        out,
        "\nbest settings written to {}:\n{}",
        report.output.display(),
        report.snippet
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_config_replaces_only_the_three_keys() {
        let base: toml::Table = "agents_max = 7\nidle = \"park\"\n".parse().unwrap();
        let trial = Trial {
            batch_frames: 16,
            idle: "spin".into(),
            ring_capacity_bytes: 65536,
            load: None,
            router: RouterCounters::default(),
            error: None,
        };
        let text = trial_config(&base, &trial);
        let config = agentwire_runtime::config::Config::parse(&text, "trial").unwrap();
        assert_eq!(config.agents_max, 7);
        assert_eq!(config.idle, IdleStrategy::Spin);
        assert_eq!(config.router_batch_frames, 16);
        assert_eq!(config.ring_capacity_bytes, 65536);
        // The snippet itself is a valid config.
        agentwire_runtime::config::Config::parse(&trial.snippet_lines(), "snippet").unwrap();
    }

    #[test]
    fn lists_parse_and_refuse_empty_or_bad_items() {
        let n = |s: &str| s.parse::<usize>().map_err(|e| e.to_string());
        assert_eq!(parse_list("8, 32,128", n).unwrap(), [8, 32, 128]);
        assert!(parse_list(",", n).is_err());
        assert!(parse_list("8,x", n).is_err());
    }
}
