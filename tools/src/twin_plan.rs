//! `agentwire twin plan`: capacity planning. The forecast peak of the router's traffic and
//! of each engine partition's load over the next hours (the twin's history, hourly peaks,
//! the M4-hourly ensemble), the fewest router cores whose simulated latency meets every
//! SLA at that peak (`agentwire_twin::whatif::flow`), the fewest cores that keep each
//! engine partition under the rebalancing high water, printed as a unified diff against
//! the current config (`patch` applies it; `agentwire plan` plans the result).
//!
//! Exit codes: 0 planned (the diff may be empty), 1 no mirror or history to plan from,
//! 2 bad input, 3 no router size up to --router-cores-max meets the SLA.

use crate::twin_cmd::bad;
use crate::twin_whatif::{describe, load_model, ModelSource};
use agentwire_runtime::config::{Config, DEFAULT_CONFIG_TOML};
use agentwire_twin::forecast::{Forecaster, Method};
use agentwire_twin::history::{History, HistoryConfig};
use agentwire_twin::whatif::{flow, Model, Outcome, Percentiles, Scenario};
use serde_json::json;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error>;

/// Exit status when no router size meets the SLA.
pub(crate) const EXIT_SLA_UNMET: u8 = 3;

/// No router size meets the SLA (exit [`EXIT_SLA_UNMET`]).
#[derive(Debug)]
pub(crate) struct SlaUnmet(pub String);

impl std::fmt::Display for SlaUnmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SlaUnmet {}

/// What `twin plan` was asked.
#[derive(clap::Args, Debug)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) source: ModelSource,
    /// A latency objective at the peak: p50, p90, p99 or p999, '<', a time with its unit
    /// (ns, us, ms, s), e.g. 'p99<1ms' (repeat for several).
    #[arg(long = "sla", value_name = "PCT<TIME", required = true)]
    pub(crate) slas: Vec<String>,
    /// Plan for the highest forecast in this much of the future (e.g. 24h, 90m; up to
    /// 48h).
    #[arg(long, default_value = "24h")]
    pub(crate) at_forecast_peak: String,
    /// Plan for the forecast's upper 95% bound instead of its point forecast.
    #[arg(long)]
    pub(crate) upper: bool,
    /// Instead of a forecast: the peak as a multiple of the current load.
    #[arg(long)]
    pub(crate) peak_load: Option<f64>,
    /// The twin's history directory [default: the config's twin.state_dir, else `twin/`
    /// beside its dead-letter queue]. It is copied and read; never changed.
    #[arg(long)]
    pub(crate) history: Option<PathBuf>,
    /// The most router cores to consider (1 to 1024).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) router_cores_max: u32,
    /// Check the planned config against this hwloc XML export instead of this machine.
    #[arg(long)]
    pub(crate) topology: Option<PathBuf>,
    /// Also write the planned config here (an existing file is refused without --force).
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Overwrite --output if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Print exactly one JSON object (the diff in its `diff` field).
    #[arg(long)]
    pub(crate) json: bool,
}

/// A latency objective: this percentile below this many ns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sla {
    /// 0.5, 0.9, 0.99 or 0.999.
    pub(crate) quantile: f64,
    /// The bound, ns.
    pub(crate) below_ns: f64,
}

impl Sla {
    /// Parses `p99<1ms`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (pct, bound) = t
            .split_once('<')
            .ok_or_else(|| format!("SLA '{text}': expected e.g. p99<1ms"))?;
        let quantile = match pct {
            "p50" => 0.5,
            "p90" => 0.9,
            "p99" => 0.99,
            "p999" | "p99.9" => 0.999,
            _ => {
                return Err(format!(
                    "SLA '{text}': percentile '{pct}' is not p50, p90, p99 or p999"
                ))
            }
        };
        let split = bound
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("SLA '{text}': '{bound}' has no unit (ns, us, ms, s)"))?;
        let (number, unit) = bound.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("SLA '{text}': '{number}' is not a number"))?;
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            _ => {
                return Err(format!(
                    "SLA '{text}': unit '{unit}' is not ns, us, ms or s"
                ))
            }
        };
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("SLA '{text}': the bound must be above 0"));
        }
        Ok(Sla {
            quantile,
            below_ns: value * scale,
        })
    }

    fn of(&self, p: &Percentiles) -> f64 {
        match self.quantile {
            q if q <= 0.5 => p.p50_ns,
            q if q <= 0.9 => p.p90_ns,
            q if q <= 0.99 => p.p99_ns,
            _ => p.p999_ns,
        }
    }

    fn name(&self) -> &'static str {
        match self.quantile {
            q if q <= 0.5 => "p50",
            q if q <= 0.9 => "p90",
            q if q <= 0.99 => "p99",
            _ => "p999",
        }
    }
}

/// Parses `24h`, `90m`, `3600s` into whole hours (rounded up), 1 to 48.
pub(crate) fn parse_hours(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.len()
        - t.chars()
            .rev()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("--at-forecast-peak '{text}': expected e.g. 24h"))?;
    let hours = match unit {
        "h" => value,
        "m" => value / 60.0,
        "s" => value / 3600.0,
        "d" => value * 24.0,
        _ => {
            return Err(format!(
                "--at-forecast-peak '{text}': unit '{unit}' is not s, m, h or d"
            ))
        }
    };
    let whole = hours.ceil();
    if !(1.0..=48.0).contains(&whole) {
        return Err(format!("--at-forecast-peak '{text}': from 1 to 48 hours"));
    }
    Ok(whole as usize)
}

/// One series' value now and its forecast peak, in the series' unit (frames/s, busy cores).
#[derive(Debug, Clone, Copy)]
struct Peak {
    now_value: f64,
    peak_value: f64,
    hours_of_history: usize,
    hours_filled: usize,
}

/// Hourly peaks (the highest 1-minute value of each hour) of per-minute `points` (start ms,
/// value; oldest first): a first or last hour the points do not cover from its first to its
/// last minute is left out, an hour with no point takes the previous hour's peak (counted).
/// Returns the peaks, the hours filled, and the mean of the last five points.
fn hourly_series(points: &[(u64, f64)]) -> (Vec<f64>, usize, f64) {
    const HOUR_MS: u64 = 3_600_000;
    const MINUTE_MS: u64 = 60_000;
    let tail = &points[points.len().saturating_sub(5)..];
    let now = tail.iter().map(|(_, v)| v).sum::<f64>() / tail.len().max(1) as f64;
    let (Some(&(first, _)), Some(&(last, _))) = (points.first(), points.last()) else {
        return (vec![], 0, now);
    };
    let first_hour = first.div_ceil(HOUR_MS);
    let end_hour = (last + MINUTE_MS) / HOUR_MS; // hours before this are complete
    if end_hour <= first_hour {
        return (vec![], 0, now);
    }
    let mut peaks: Vec<Option<f64>> = vec![None; (end_hour - first_hour) as usize];
    for &(t, v) in points {
        let hour = t / HOUR_MS;
        if (first_hour..end_hour).contains(&hour) {
            let slot = &mut peaks[(hour - first_hour) as usize];
            *slot = Some(slot.map_or(v, |p: f64| p.max(v)));
        }
    }
    let mut filled = 0;
    let mut out = Vec::with_capacity(peaks.len());
    for p in peaks {
        match (p, out.last().copied()) {
            (Some(v), _) => out.push(v),
            (None, Some(previous)) => {
                filled += 1;
                out.push(previous);
            }
            (None, None) => {}
        }
    }
    (out, filled, now)
}

/// The per-minute points of `series` (1-minute tier, up to 14 days back from `newest_ms`).
fn minute_points(h: &History, series: &str, newest_ms: u64) -> Result<Vec<(u64, f64)>, BoxError> {
    const DAY_MS: u64 = 86_400_000;
    let from = newest_ms.saturating_sub(14 * DAY_MS);
    Ok(h.query(series, 1, from, newest_ms + 1)?
        .iter()
        .map(|b| (b.start_ms, b.mean()))
        .collect())
}

/// A partition's busy cores a minute: its busy permille × its cpus that minute (the cpus
/// series, else `cpus_now`).
fn busy_core_points(
    h: &History,
    partition: &str,
    newest_ms: u64,
    cpus_now: u32,
) -> Result<Vec<(u64, f64)>, BoxError> {
    let busy = minute_points(
        h,
        &format!("partition.{partition}.busy_permille"),
        newest_ms,
    )?;
    let cpus: std::collections::HashMap<u64, f64> =
        minute_points(h, &format!("partition.{partition}.cpus"), newest_ms)?
            .into_iter()
            .collect();
    Ok(busy
        .into_iter()
        .map(|(t, permille)| {
            let c = cpus.get(&t).copied().unwrap_or(f64::from(cpus_now));
            (t, permille / 1000.0 * c)
        })
        .collect())
}

/// The forecast peak within `hours` of the hourly peaks of `points`; `None` below 3 hours.
fn forecast_peak(
    points: &[(u64, f64)],
    hours: usize,
    upper: bool,
) -> Result<Option<Peak>, BoxError> {
    let (hourly, hours_filled, now_value) = hourly_series(points);
    if hourly.len() < 3 {
        return Ok(None);
    }
    // Two days or more: the M4-hourly ensemble with its daily season (when its members have
    // the history they need); less: a damped trend.
    let ensemble = (hourly.len() >= 48)
        .then(|| {
            Forecaster::new(Method::Ensemble)
                .season(24)
                .forecast(&hourly, hours)
                .ok()
        })
        .flatten();
    let f = match ensemble {
        Some(f) => f,
        None => Forecaster::new(Method::Damped).forecast(&hourly, hours)?,
    };
    let path = if upper { &f.hi } else { &f.point };
    let peak_value = path.iter().copied().fold(0.0, f64::max);
    Ok(Some(Peak {
        now_value,
        peak_value,
        hours_of_history: hourly.len(),
        hours_filled,
    }))
}

/// Opens the history at `from` read-only: the daemon may be writing it, and nothing there
/// is changed ([`History::open_read_only`]).
fn open_history(from: &Path) -> Result<History, BoxError> {
    if !from.is_dir() {
        return Err(format!(
            "no twin history at {} (enable [twin] in the daemon's config, give --history, or plan for --peak-load K)",
            from.display()
        )
        .into());
    }
    Ok(History::open_read_only(from, HistoryConfig::default())
        .map_err(|e| format!("twin history {}: {e}", from.display()))?)
}

/// The history directory the daemon of `config` keeps.
fn default_history_dir(config: &Config) -> PathBuf {
    if let Some(dir) = config.twin.as_ref().and_then(|t| t.state_dir.clone()) {
        return dir;
    }
    config
        .dlq
        .path
        .parent()
        .map_or_else(|| PathBuf::from("twin"), |d| d.join("twin"))
}

/// The router size chosen and how each size tried did.
struct RouterPlan {
    cores: u32,
    outcome: Outcome,
    tried: Vec<(u32, Outcome)>,
}

/// A size that leaves more than this many seconds of traffic waiting at the end of its
/// run is overloaded.
const BACKLOG_MAX_S: f64 = 0.01;

/// Whether a simulated size meets every SLA: frames delivered, none dead-lettered, no core
/// saturated, no backlog left, every percentile under its bound.
fn meets(out: &Outcome, slas: &[Sla]) -> bool {
    let delivering = out.throughput_per_s > 0.0 && out.dead_lettered_per_s == 0.0;
    let overloaded = out.router_utilisation.iter().any(|u| *u >= 0.999)
        || out.backlog_frames > out.throughput_per_s * BACKLOG_MAX_S;
    delivering && !overloaded && slas.iter().all(|s| s.of(&out.latency) < s.below_ns)
}

fn plan_router(model: &Model, slas: &[Sla], cores_max: u32) -> Result<RouterPlan, BoxError> {
    let mut tried = Vec::new();
    // Shards serve whole flows: more cores than flows change nothing.
    let useful_max = cores_max.min(model.flows.len().max(1) as u32).max(1);
    for cores in 1..=useful_max {
        let mut m = model.clone();
        m.router_cores = cores;
        // The time per frame follows the load per core (when it was measured at one).
        m.follow_load();
        let out = flow::simulate(&m, 60.0, flow::STEP_MS_DEFAULT, &|_| 1.0);
        let ok = meets(&out, slas);
        tried.push((cores, out.clone()));
        if ok {
            return Ok(RouterPlan {
                cores,
                outcome: out,
                tried,
            });
        }
    }
    let most = tried
        .last()
        .map(|(c, o)| {
            format!(
                "{c} cores, the most tried, give p99 {:.0} µs and {:.0} dead letters/s",
                o.latency.p99_ns / 1e3,
                o.dead_lettered_per_s
            )
        })
        .unwrap_or_default();
    Err(Box::new(SlaUnmet(format!(
        "no router size up to {useful_max} cores (at most one per flow) meets {} at the peak ({most}; the model: {})",
        slas.iter()
            .map(|s| format!("{}<{:.0}µs", s.name(), s.below_ns / 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        describe(model)
    ))))
}

/// The planned config text: each partition's table asks for `any = N` cores (kind keys and
/// CPU lists removed); a config that had no partition tables keeps the embedded default's
/// core sharing.
fn planned_text(
    current: &str,
    cores: &[(String, u32)],
    had_partitions: bool,
) -> Result<String, BoxError> {
    let mut doc = current
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| bad(format!("the config is not TOML: {e}")))?;
    if !had_partitions && !doc.contains_key("plan") {
        let mut plan = toml_edit::Table::new();
        plan["allow_sharing"] = toml_edit::value(true);
        doc["plan"] = toml_edit::Item::Table(plan);
    }
    if !doc.contains_key("partitions") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        doc["partitions"] = toml_edit::Item::Table(t);
    }
    let partitions = doc["partitions"]
        .as_table_mut()
        .ok_or_else(|| bad("the config's `partitions` is not a table"))?;
    for (name, n) in cores {
        if !partitions.contains_key(name) {
            partitions[name.as_str()] = toml_edit::Item::Table(toml_edit::Table::new());
        }
        let table = partitions[name.as_str()]
            .as_table_mut()
            .ok_or_else(|| bad(format!("partitions.{name} is not a table")))?;
        for key in ["performance", "efficiency", "cpus"] {
            table.remove(key);
        }
        table["any"] = toml_edit::value(i64::from(*n));
    }
    Ok(doc.to_string())
}

/// The config a plan is made against: parsed, its text, and its name in the diff.
struct CurrentConfig {
    config: Config,
    text: String,
    name: String,
}

fn current_config(path: Option<&Path>) -> Result<CurrentConfig, BoxError> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let name = path.display().to_string();
            CurrentConfig {
                config: Config::parse(&text, &name).map_err(|e| bad(e.to_string()))?,
                text,
                name,
            }
        }
        None => CurrentConfig {
            config: Config::embedded_default(),
            text: DEFAULT_CONFIG_TOML.to_string(),
            name: "embedded-default.toml".to_string(),
        },
    })
}

/// The router's peak traffic (frames/s) and each partition's peak busy cores.
struct Peaks {
    router_per_s: f64,
    partition_busy_cores: Vec<(String, f64)>,
}

/// The peaks: `--peak-load` × today's, or forecast from the history.
fn peaks(
    args: &PlanArgs,
    config: &Config,
    model: &Model,
    hours: usize,
    notes: &mut Vec<String>,
) -> Result<Peaks, BoxError> {
    if let Some(k) = args.peak_load {
        return Ok(Peaks {
            router_per_s: model.offered_per_s() * k,
            partition_busy_cores: model
                .partitions
                .iter()
                .map(|p| (p.name.clone(), p.busy_cores * k))
                .collect(),
        });
    }
    let dir = args
        .history
        .clone()
        .unwrap_or_else(|| default_history_dir(config));
    let history = open_history(&dir)?;
    let newest = history
        .newest_ms()
        .ok_or_else(|| format!("the twin history at {} is empty", dir.display()))?;
    let points = minute_points(&history, "router.frames_in_per_s", newest)?;
    let router = forecast_peak(&points, hours, args.upper)?.ok_or_else(|| {
        format!(
            "the twin history at {} holds under 3 whole hours of router.frames_in_per_s (or plan for --peak-load K)",
            dir.display()
        )
    })?;
    notes.push(format!(
        "router traffic: now {:.0} frames/s, forecast peak {:.0} frames/s within {hours} h ({} hourly peaks of history, {} hours without data filled{})",
        router.now_value,
        router.peak_value,
        router.hours_of_history,
        router.hours_filled,
        if args.upper { ", upper 95% bound" } else { "" }
    ));
    let mut partition_busy_cores = Vec::new();
    for p in &model.partitions {
        let points = busy_core_points(&history, &p.name, newest, p.cpus)?;
        let busy = match forecast_peak(&points, hours, args.upper)? {
            Some(peak) => peak.peak_value,
            None => {
                notes.push(format!(
                    "{}: no history; planned for its current load",
                    p.name
                ));
                p.busy_cores
            }
        };
        partition_busy_cores.push((p.name.clone(), busy));
    }
    Ok(Peaks {
        router_per_s: router.peak_value,
        partition_busy_cores,
    })
}

/// Runs `twin plan`.
pub(crate) fn plan(args: PlanArgs) -> Result<(), BoxError> {
    let slas = args
        .slas
        .iter()
        .map(|s| Sla::parse(s).map_err(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let hours = parse_hours(&args.at_forecast_peak).map_err(bad)?;
    if let Some(k) = args.peak_load {
        if !(k.is_finite() && k > 0.0) {
            return Err(bad("--peak-load must be above 0"));
        }
    }
    let current = current_config(args.source.config.as_deref())?;
    let mut model = load_model(&args.source)?;
    let offered = model.offered_per_s();
    if offered <= 0.0 {
        return Err(
            "the model carries no traffic to scale (calibrate under load, or give a saved --model)"
                .into(),
        );
    }
    let mut notes = Vec::new();
    let peaks = peaks(&args, &current.config, &model, hours, &mut notes)?;
    Scenario::Load(peaks.router_per_s / offered)
        .apply(&mut model)
        .map_err(|e| bad(e.to_string()))?;
    model
        .validate()
        .map_err(|e| bad(format!("at the peak: {e}")))?;

    let router = plan_router(&model, &slas, args.router_cores_max.max(1))?;
    // The config's high water when one is given, else the model's.
    let high_water = if args.source.config.is_some() {
        current.config.rebalance.high_water
    } else {
        model.rebalance.high_water
    }
    .clamp(0.05, 1.0);
    let mut cores: Vec<(String, u32)> = vec![("router".to_string(), router.cores)];
    for (name, busy) in &peaks.partition_busy_cores {
        cores.push((name.clone(), ((busy / high_water).ceil() as u32).max(1)));
    }
    let config = &current.config;
    if !config.router_cpus.is_empty() || config.router_cpu.is_some() {
        notes.push("router: the config names its CPUs (router_cpus); change them by hand".into());
        cores.retain(|(n, _)| n != "router");
    }
    let planned = planned_text(&current.text, &cores, config.partitions_configured)?;
    let diff = similar::TextDiff::from_lines(&current.text, &planned)
        .unified_diff()
        .context_radius(3)
        .header(&current.name, "planned.toml")
        .to_string();
    let fits = check_fits(&planned, args.topology.as_deref());
    if let Some(path) = &args.output {
        write_new(path, &planned, args.force)?;
    }
    let report = Report {
        args: &args,
        slas: &slas,
        hours,
        peaks: &peaks,
        load_factor: peaks.router_per_s / offered,
        cores: &cores,
        router: &router,
        high_water,
        notes: &notes,
        fits: &fits,
        diff: &diff,
    };
    if args.json {
        report.json()
    } else {
        report.text()
    }
}

/// Writes `text` to `path`, refusing an existing file without `force`.
fn write_new(path: &Path, text: &str, force: bool) -> Result<(), BoxError> {
    if path.exists() && !force {
        return Err(bad(format!(
            "{} exists (--force overwrites it)",
            path.display()
        )));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// What a plan prints.
struct Report<'a> {
    args: &'a PlanArgs,
    slas: &'a [Sla],
    hours: usize,
    peaks: &'a Peaks,
    load_factor: f64,
    cores: &'a [(String, u32)],
    router: &'a RouterPlan,
    high_water: f64,
    notes: &'a [String],
    fits: &'a Result<(), String>,
    diff: &'a str,
}

impl Report<'_> {
    fn json(&self) -> Result<(), BoxError> {
        outln!(
            "{}",
            json!({
                "slas": self.args.slas,
                "hours": self.hours,
                "router_peak_per_s": self.peaks.router_per_s,
                "load_factor": self.load_factor,
                "cores": self.cores.iter().map(|(n, c)| json!({"partition": n, "cores": c})).collect::<Vec<_>>(),
                "router_outcome": self.router.outcome,
                "router_tried": self.router.tried.iter().map(|(c, o)| json!({"cores": c, "p99_ns": o.latency.p99_ns, "meets": meets(o, self.slas)})).collect::<Vec<_>>(),
                "partition_busy_cores_at_peak": self.peaks.partition_busy_cores.iter().map(|(n, b)| json!({"partition": n, "busy_cores": b})).collect::<Vec<_>>(),
                "high_water": self.high_water,
                "notes": self.notes,
                "fits": self.fits.is_ok(),
                "fit_error": self.fits.as_ref().err(),
                "diff": self.diff,
            })
        )?;
        Ok(())
    }

    fn text(&self) -> Result<(), BoxError> {
        for n in self.notes {
            eprintln!("twin plan: {n}");
        }
        for (c, o) in &self.router.tried {
            eprintln!(
                "twin plan: router {c} core(s) at the peak: p50 {:.1} µs, p99 {:.1} µs, busiest core {:.0}%, dead letters {:.0}/s{}",
                o.latency.p50_ns / 1e3,
                o.latency.p99_ns / 1e3,
                o.router_utilisation.iter().copied().fold(0.0, f64::max) * 100.0,
                o.dead_lettered_per_s,
                if meets(o, self.slas) { " — meets the SLA" } else { "" }
            );
        }
        for (name, busy) in &self.peaks.partition_busy_cores {
            eprintln!(
                "twin plan: {name}: {busy:.2} busy cores at the peak, high water {}",
                self.high_water
            );
        }
        let machine = machine_name(self.args.topology.as_deref());
        match self.fits {
            Ok(()) => {
                eprintln!("twin plan: `agentwire plan` plans the planned config on {machine}")
            }
            Err(e) => eprintln!("twin plan: the planned config does not plan on {machine}: {e}"),
        }
        if self.diff.is_empty() {
            eprintln!("twin plan: the current config already asks for these cores");
        }
        out!("{}", self.diff)?;
        Ok(())
    }
}

fn machine_name(topology: Option<&Path>) -> String {
    topology.map_or_else(|| "this machine".to_string(), |t| t.display().to_string())
}

/// Whether `agentwire plan` makes a plan of `text` on the machine (or the XML export).
fn check_fits(text: &str, topology: Option<&Path>) -> Result<(), String> {
    let config = Config::parse(text, "planned.toml").map_err(|e| e.to_string())?;
    let machine = match topology {
        Some(path) => agentwire_scheduler::hwloc::load(Some(path)).map_err(|e| e.to_string())?,
        None => agentwire_runtime::planning::live_machine().0,
    };
    agentwire_scheduler::plan::plan(&machine, &config.plan_config())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slas_and_horizons_parse_with_their_units() {
        assert_eq!(
            Sla::parse("p99<1ms").unwrap(),
            Sla {
                quantile: 0.99,
                below_ns: 1e6
            }
        );
        assert_eq!(Sla::parse(" p50 < 250us ").unwrap().below_ns, 250_000.0);
        assert!(Sla::parse("p98<1ms").is_err());
        assert!(Sla::parse("p99<1").is_err());
        assert!(Sla::parse("p99>1ms").is_err());
        assert_eq!(parse_hours("24h"), Ok(24));
        assert_eq!(parse_hours("90m"), Ok(2));
        assert_eq!(parse_hours("2d"), Ok(48));
        assert!(parse_hours("3d").is_err());
        assert!(parse_hours("24").is_err());
    }

    #[test]
    fn hourly_peaks_leave_out_partial_edge_hours_and_fill_gaps() {
        const MIN: u64 = 60_000;
        const HOUR: u64 = 3_600_000;
        // From 00:30 to 05:10: hour 0 and hour 5 are partial; hour 2 has no data.
        let points: Vec<(u64, f64)> = (30..310)
            .filter(|m| !(120..180).contains(m))
            .map(|m| (m * MIN, (m / 60) as f64 * 10.0 + (m % 60) as f64 / 100.0))
            .collect();
        let (peaks, filled, now) = hourly_series(&points);
        // Hours 1, 2 (filled from 1), 3, 4: each its highest minute.
        assert_eq!(peaks, vec![10.59, 10.59, 30.59, 40.59]);
        assert_eq!(filled, 1);
        assert!((now - 50.07).abs() < 1e-9, "{now}");
        // A series ending at exactly the last minute of an hour keeps that hour.
        let whole: Vec<(u64, f64)> = (0..120).map(|m| (m * MIN, 1.0)).collect();
        assert_eq!(hourly_series(&whole).0.len(), 2);
        assert!(hourly_series(&[(HOUR + MIN, 1.0)]).0.is_empty());
        assert!(hourly_series(&[]).0.is_empty());
    }

    #[test]
    fn the_planned_text_sets_any_and_keeps_comments_and_other_keys() {
        let current = "# mine\n[partitions.streaming]\nperformance = 3\nnuma = 0 # node\n";
        let planned = planned_text(
            current,
            &[("streaming".into(), 2), ("router".into(), 1)],
            true,
        )
        .unwrap();
        assert!(planned.contains("# mine"), "{planned}");
        assert!(planned.contains("numa = 0 # node"), "{planned}");
        assert!(!planned.contains("performance"), "{planned}");
        let doc: toml::Table = toml::from_str(&planned).unwrap();
        assert_eq!(doc["partitions"]["streaming"]["any"].as_integer(), Some(2));
        assert_eq!(doc["partitions"]["router"]["any"].as_integer(), Some(1));
        assert!(
            doc.get("plan").is_none(),
            "configured partitions keep their plan"
        );
        let from_default = planned_text("", &[("router".into(), 2)], false).unwrap();
        assert!(
            from_default.contains("allow_sharing = true"),
            "{from_default}"
        );
    }
}
