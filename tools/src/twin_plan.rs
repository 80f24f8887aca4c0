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
pub const EXIT_SLA_UNMET: u8 = 3;

/// No router size meets the SLA (exit [`EXIT_SLA_UNMET`]).
#[derive(Debug)]
pub struct SlaUnmet(pub String);

impl std::fmt::Display for SlaUnmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SlaUnmet {}

/// What `twin plan` was asked.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// A latency objective at the peak: p50, p90, p99 or p999, '<', a time with its unit
    /// (ns, us, ms, s), e.g. 'p99<1ms' (repeat for several).
    #[arg(long = "sla", value_name = "PCT<TIME", required = true)]
    pub slas: Vec<String>,
    /// Plan for the highest forecast in this much of the future (e.g. 24h, 90m; up to
    /// 48h).
    #[arg(long, default_value = "24h")]
    pub at_forecast_peak: String,
    /// Plan for the forecast's upper 95% bound instead of its point forecast.
    #[arg(long)]
    pub upper: bool,
    /// Instead of a forecast: the peak as a multiple of the current load.
    #[arg(long)]
    pub peak_load: Option<f64>,
    /// The twin's history directory [default: the config's twin.state_dir, else `twin/`
    /// beside its dead-letter queue]. It is copied and read; never changed.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// The most router cores to consider.
    #[arg(long, default_value_t = 64)]
    pub router_cores_max: u32,
    /// Check the planned config against this hwloc XML export instead of this machine.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Also write the planned config here (an existing file is refused without --force).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Overwrite --output if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print exactly one JSON object (the diff in its `diff` field).
    #[arg(long)]
    pub json: bool,
}

/// A latency objective: this percentile below this many ns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sla {
    /// 0.5, 0.9, 0.99 or 0.999.
    pub quantile: f64,
    /// The bound, ns.
    pub below_ns: f64,
}

impl Sla {
    /// Parses `p99<1ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
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
pub fn parse_hours(text: &str) -> Result<usize, String> {
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

/// One series' current value and forecast peak.
#[derive(Debug, Clone, Copy)]
struct Peak {
    now: f64,
    peak: f64,
    hours_of_history: usize,
}

/// Hourly peaks (the highest 1-minute mean of each hour) of `series`, oldest first, and
/// the mean of its last five minutes.
fn hourly_peaks(h: &History, series: &str, newest_ms: u64) -> Result<(Vec<f64>, f64), BoxError> {
    const DAY_MS: u64 = 86_400_000;
    let from = newest_ms.saturating_sub(14 * DAY_MS);
    let buckets = h.query(series, 1, from, newest_ms + 1)?;
    let mut hours: Vec<f64> = Vec::new();
    let mut current_hour = None;
    for b in &buckets {
        let hour = b.start_ms / 3_600_000;
        if current_hour == Some(hour) {
            let last = hours.last_mut().expect("an hour was started");
            *last = last.max(b.mean());
        } else {
            hours.push(b.mean());
            current_hour = Some(hour);
        }
    }
    let tail = &buckets[buckets.len().saturating_sub(5)..];
    let now = tail.iter().map(|b| b.mean()).sum::<f64>() / tail.len().max(1) as f64;
    Ok((hours, now))
}

fn forecast_peak(
    h: &History,
    series: &str,
    newest_ms: u64,
    hours: usize,
    upper: bool,
) -> Result<Option<Peak>, BoxError> {
    let (hourly, now) = hourly_peaks(h, series, newest_ms)?;
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
    let peak = path
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(0.0);
    Ok(Some(Peak {
        now,
        peak,
        hours_of_history: hourly.len(),
    }))
}

/// Copies `from` (the daemon may be writing it) into a fresh directory and opens the copy.
fn open_copy(from: &Path) -> Result<(tempdir::Dir, History), BoxError> {
    if !from.is_dir() {
        return Err(format!(
            "no twin history at {} (enable [twin] in the daemon's config, give --history, or plan for --peak-load K)",
            from.display()
        )
        .into());
    }
    let copy = tempdir::Dir::new()?;
    tempdir::copy_tree(from, copy.path())?;
    let history = History::open(copy.path(), HistoryConfig::default())
        .map_err(|e| format!("twin history {}: {e}", from.display()))?;
    Ok((copy, history))
}

/// A scratch directory removed on drop (no tempfile in the binary's dependencies).
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = std::env::temp_dir().join(format!(
                "agentwire-twin-plan-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&path)?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Copies regular files and directories (links and others skipped).
    pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let target = to.join(entry.file_name());
            if kind.is_dir() {
                std::fs::create_dir(&target)?;
                copy_tree(&entry.path(), &target)?;
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
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

fn meets(out: &Outcome, slas: &[Sla]) -> bool {
    let overloaded = out.router_utilisation.iter().any(|u| *u >= 0.999)
        || out.backlog_frames > out.throughput_per_s * 0.01;
    !overloaded && slas.iter().all(|s| s.of(&out.latency) < s.below_ns)
}

fn plan_router(model: &Model, slas: &[Sla], cores_max: u32) -> Result<RouterPlan, BoxError> {
    let mut tried = Vec::new();
    // Shards serve whole flows: more cores than flows change nothing.
    let useful_max = cores_max.min(model.flows.len().max(1) as u32).max(1);
    for cores in 1..=useful_max {
        let mut m = model.clone();
        m.router_cores = cores;
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
    let best = tried
        .last()
        .map(|(c, o)| format!("{c} cores give p99 {:.0} µs", o.latency.p99_ns / 1e3))
        .unwrap_or_default();
    Err(Box::new(SlaUnmet(format!(
        "no router size up to {useful_max} cores meets {} at the peak ({best}; the model: {})",
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

/// Runs `twin plan`.
pub fn plan(args: PlanArgs) -> Result<(), BoxError> {
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
    let (config, current_text, config_name) = match &args.source.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            (
                Config::parse(&text, &path.display().to_string())?,
                text,
                path.display().to_string(),
            )
        }
        None => (
            Config::embedded_default(),
            DEFAULT_CONFIG_TOML.to_string(),
            "embedded-default.toml".to_string(),
        ),
    };
    let mut model = load_model(&args.source)?;
    let offered = model.offered_per_s();
    if offered <= 0.0 {
        return Err(
            "the model carries no traffic to scale (calibrate under load, or give a saved --model)"
                .into(),
        );
    }

    // The peak: a multiple given, or forecast from the history.
    let mut notes = Vec::new();
    let (router_peak, partition_peaks): (f64, Vec<(String, f64)>) = match args.peak_load {
        Some(k) => (
            offered * k,
            model
                .partitions
                .iter()
                .map(|p| (p.name.clone(), p.busy_cores * k))
                .collect(),
        ),
        None => {
            let dir = args
                .history
                .clone()
                .unwrap_or_else(|| default_history_dir(&config));
            let (_copy, history) = open_copy(&dir)?;
            let newest = history
                .newest_ms()
                .ok_or_else(|| format!("the twin history at {} is empty", dir.display()))?;
            let router = forecast_peak(&history, "router.frames_in_per_s", newest, hours, args.upper)?
                .ok_or_else(|| format!("the twin history at {} holds under 3 hours of router.frames_in_per_s (or plan for --peak-load K)", dir.display()))?;
            notes.push(format!(
                "router traffic: now {:.0} frames/s, forecast peak {:.0} frames/s within {hours} h ({} hourly peaks of history{})",
                router.now, router.peak, router.hours_of_history,
                if args.upper { ", upper 95% bound" } else { "" }
            ));
            let mut parts = Vec::new();
            for p in &model.partitions {
                let series = format!("partition.{}.busy_permille", p.name);
                let peak = forecast_peak(&history, &series, newest, hours, args.upper)?;
                let busy = match peak {
                    Some(pk) => pk.peak / 1000.0 * f64::from(p.cpus),
                    None => {
                        notes.push(format!(
                            "{}: no history; planned for its current load",
                            p.name
                        ));
                        p.busy_cores
                    }
                };
                parts.push((p.name.clone(), busy));
            }
            (router.peak, parts)
        }
    };
    Scenario::Load(router_peak / offered)
        .apply(&mut model)
        .map_err(|e| bad(e.to_string()))?;

    let router = plan_router(&model, &slas, args.router_cores_max.max(1))?;
    let high_water = model.rebalance.high_water.clamp(0.05, 1.0);
    let mut cores: Vec<(String, u32)> = vec![("router".to_string(), router.cores)];
    for (name, busy) in &partition_peaks {
        cores.push((name.clone(), ((busy / high_water).ceil() as u32).max(1)));
    }
    let router_named = !config.router_cpus.is_empty() || config.router_cpu.is_some();
    if router_named {
        notes.push("router: the config names its CPUs (router_cpus); change them by hand".into());
        cores.retain(|(n, _)| n != "router");
    }
    let planned = planned_text(&current_text, &cores, config.partitions_configured)?;
    let diff = similar::TextDiff::from_lines(&current_text, &planned)
        .unified_diff()
        .context_radius(3)
        .header(&config_name, "planned.toml")
        .to_string();
    let fits = check_fits(&planned, args.topology.as_deref());
    if let Some(path) = &args.output {
        if path.exists() && !args.force {
            return Err(bad(format!(
                "{} exists (--force overwrites it)",
                path.display()
            )));
        }
        std::fs::write(path, &planned)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }

    if args.json {
        outln!(
            "{}",
            json!({
                "slas": args.slas,
                "hours": hours,
                "router_peak_per_s": router_peak,
                "load_factor": router_peak / offered,
                "cores": cores.iter().map(|(n, c)| json!({"partition": n, "cores": c})).collect::<Vec<_>>(),
                "router_outcome": router.outcome,
                "router_tried": router.tried.iter().map(|(c, o)| json!({"cores": c, "p99_ns": o.latency.p99_ns, "meets": meets(o, &slas)})).collect::<Vec<_>>(),
                "partition_busy_cores_at_peak": partition_peaks.iter().map(|(n, b)| json!({"partition": n, "busy_cores": b})).collect::<Vec<_>>(),
                "notes": notes,
                "fits": fits.is_ok(),
                "fit_error": fits.as_ref().err(),
                "diff": diff,
            })
        )?;
        return Ok(());
    }
    for n in &notes {
        eprintln!("twin plan: {n}");
    }
    for (c, o) in &router.tried {
        eprintln!(
            "twin plan: router {c} core(s) at the peak: p50 {:.1} µs, p99 {:.1} µs, busiest core {:.0}%{}",
            o.latency.p50_ns / 1e3,
            o.latency.p99_ns / 1e3,
            o.router_utilisation.iter().copied().fold(0.0, f64::max) * 100.0,
            if meets(o, &slas) { " — meets the SLA" } else { "" }
        );
    }
    for (name, busy) in &partition_peaks {
        eprintln!("twin plan: {name}: {busy:.2} busy cores at the peak, high water {high_water}");
    }
    match &fits {
        Ok(()) => eprintln!(
            "twin plan: `agentwire plan` plans the planned config on {}",
            machine_name(args.topology.as_deref())
        ),
        Err(e) => eprintln!(
            "twin plan: the planned config does not plan on {}: {e}",
            machine_name(args.topology.as_deref())
        ),
    }
    if diff.is_empty() {
        eprintln!("twin plan: the current config already asks for these cores");
    }
    out!("{diff}")?;
    Ok(())
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
