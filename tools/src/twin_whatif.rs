//! `agentwire twin whatif` and `agentwire twin whatif-bench`: what-if simulation of the
//! daemon (`agentwire_twin::whatif`). The model is calibrated from two reads of the live
//! mirror (`--window-ms` apart) and the daemon's config, or loaded from a saved model
//! (`--model`, written by `--save-model`); scenarios change it; a simulator predicts the
//! baseline and the scenario side by side. The bench times both simulators and SimPy
//! (`scripts/whatif_simpy.py`) on the same model.

use crate::twin_cmd::bad;
use agentwire_runtime::config::Config;
use agentwire_twin::mirror::Mirror;
use agentwire_twin::whatif::{
    calibrate, flow, packet, router_service_time, CalibrateOptions, DaemonSettings, Model, Outcome,
    Rebalance, Scenario, TIME_MAX_NS,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

/// Where the model comes from and what it leaves out (shared by whatif and plan).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ModelSource {
    /// The daemon's control socket (its mirror is beside it).
    #[arg(long, env = "AGENTWIRE_SOCKET")]
    pub(crate) socket: Option<PathBuf>,
    /// The daemon's config, for ring, deferral, batch and rebalancing settings [default:
    /// the embedded default].
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Calibrate over this many milliseconds of the live mirror (1 to 600000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub(crate) window_ms: u64,
    /// Instead of the live mirror: a model saved with --save-model (JSON).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Producer/consumer pairs the traffic is split over evenly [default: one flow per agent
    /// that sent in the window, at its own rate, from the agents' mirror slots].
    #[arg(long, conflicts_with = "model")]
    pub(crate) flows: Option<usize>,
    /// Router time per frame in ns [default: measured from the shards' timed busy duty
    /// cycles (16 or more in the window), else from their busy ratio (an upper bound; 10,000
    /// frames or more), else 25].
    #[arg(long, conflicts_with = "model")]
    pub(crate) service_ns: Option<f64>,
    /// A saturated router core's time per frame in ns (`cargo bench --bench routed --
    /// drain`: 1e9 / frames a second): where the measured time per frame goes as a scenario
    /// raises the load per router core (docs/twin.md) [default: 25].
    #[arg(long, conflicts_with_all = ["model", "service_ns"], value_parser = positive_ns)]
    pub(crate) saturated_ns: Option<f64>,
    /// Consumer time per frame in ns [default: 100].
    #[arg(long, conflicts_with = "model")]
    pub(crate) consumer_ns: Option<f64>,
    /// Latency outside the queues (ring polls, wake-ups) in ns [default: 0, or from
    /// --load-report].
    #[arg(long, conflicts_with = "load_report")]
    pub(crate) hop_ns: Option<f64>,
    /// An `agentwire load --json` report taken in the calibration window: the hop is its
    /// p50 less the model's own p50 (at the model's rate).
    #[arg(long)]
    pub(crate) load_report: Option<PathBuf>,
}

/// What `twin whatif` was asked.
#[derive(clap::Args, Debug)]
pub(crate) struct WhatifArgs {
    #[command(flatten)]
    pub(crate) source: ModelSource,
    /// A change to simulate, KEY=VALUE (repeat for several): load=K, router_cores=N|+N|-N,
    /// agents=+N, priority_mix=A,B,C,D, ring_frames=N, deferral_frames=N,
    /// partition.NAME=N|+N|-N.
    #[arg(long = "scenario", value_name = "KEY=VALUE")]
    pub(crate) scenarios: Vec<String>,
    /// Simulated seconds.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) seconds: f64,
    /// flow (fluid queues in 100 ms steps: hours in milliseconds) or packet (every frame
    /// as discrete events: exact, cost per frame).
    #[arg(long, default_value = "flow")]
    pub(crate) simulator: String,
    /// The packet simulator's random seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Write the calibrated model (before the scenarios) to this file as JSON.
    #[arg(long)]
    pub(crate) save_model: Option<PathBuf>,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The daemon settings of `config` (the embedded default without one).
pub(crate) fn daemon_settings(config: Option<&Path>) -> Result<DaemonSettings, BoxError> {
    let c = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    Ok(DaemonSettings {
        ring_capacity_bytes: c.ring_capacity_bytes as u64,
        defer_capacity_bytes: c.defer_capacity_bytes as u64,
        defer_deadline_ms: c.defer_deadline.map_or(0, |d| d.as_millis() as u64),
        batch_frames: c.router_batch_frames as u32,
        rebalance: Rebalance {
            enabled: c.rebalance.enabled,
            high_water: c.rebalance.high_water,
            low_water: c.rebalance.low_water,
        },
        priorities: c
            .plan
            .partitions
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), u32::from(spec.priority?))))
            .collect(),
    })
}

/// A time in ns above 0 and at most an hour.
fn positive_ns(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= TIME_MAX_NS => Ok(v),
        _ => Err(format!("{text}: a time in ns above 0 and at most an hour")),
    }
}

/// The model: loaded, or calibrated from the live mirror (progress on stderr).
pub(crate) fn load_model(source: &ModelSource) -> Result<Model, BoxError> {
    let mut model = match &source.model {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str::<Model>(&text)
                .map_err(|e| bad(format!("{} is not a saved model: {e}", path.display())))?
        }
        None => calibrate_live(source)?,
    };
    if let Some(hop) = source.hop_ns {
        model.hop_ns = hop;
    }
    model.validate().map_err(|e| bad(e.to_string()))?;
    if let Some(report) = &source.load_report {
        model.hop_ns = hop_from_report(&model, report)?;
        model.validate().map_err(|e| bad(e.to_string()))?;
    }
    Ok(model)
}

fn calibrate_live(source: &ModelSource) -> Result<Model, BoxError> {
    let socket = source
        .socket
        .clone()
        .unwrap_or_else(agentwire_shm::client::default_socket_path);
    let stats = agentwire_runtime::mirror::stats_path(&socket);
    let names = agentwire_runtime::mirror::names_path_for(&stats);
    let mut mirror = Mirror::open(&stats, &names).map_err(|e| {
        format!(
            "{e} (is a daemon serving {}? `agentwire status` says; or give --model)",
            socket.display()
        )
    })?;
    let window = Duration::from_millis(source.window_ms.max(1));
    eprintln!(
        "twin whatif: calibrating from {} over {} ms",
        stats.display(),
        window.as_millis()
    );
    let start = Instant::now();
    let before = mirror.read()?;
    std::thread::sleep(window);
    let after = mirror.read()?;
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let settings = daemon_settings(source.config.as_deref())?;
    let defaults = CalibrateOptions::default();
    let options = CalibrateOptions {
        flows: source.flows,
        router_service_ns: source.service_ns,
        router_saturated_ns: source.saturated_ns.unwrap_or(defaults.router_saturated_ns),
        consumer_service_ns: source.consumer_ns.unwrap_or(defaults.consumer_service_ns),
        ..defaults
    };
    if source.service_ns.is_none() {
        match router_service_time(&before, &after, elapsed_ns)? {
            (Some(ns), how) => eprintln!("twin whatif: router time {ns:.0} ns a frame, {how}"),
            (None, how) => eprintln!(
                "twin whatif: router time {how}: using {:.0} ns a frame (give --service-ns)",
                options.router_service_ns_default
            ),
        }
    }
    Ok(calibrate(&before, &after, elapsed_ns, &settings, &options)?)
}

/// The hop that makes the model's p50 (at the model's rate) equal the report's p50.
fn hop_from_report(model: &Model, path: &Path) -> Result<f64, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?;
    let p50 = report["latency_ns"]["p50"].as_f64().ok_or_else(|| {
        bad(format!(
            "{} has no latency_ns.p50 (an `agentwire load --json` report?)",
            path.display()
        ))
    })?;
    let mut bare = model.clone();
    bare.hop_ns = 0.0;
    let own = simulate(&bare, "flow", 10.0, 1)?;
    Ok((p50 - own.latency.p50_ns).max(0.0))
}

/// Parses every scenario, naming the first bad one.
pub(crate) fn parse_scenarios(texts: &[String]) -> Result<Vec<Scenario>, BoxError> {
    texts
        .iter()
        .map(|t| t.parse::<Scenario>().map_err(|e| bad(e.to_string())))
        .collect()
}

/// Runs `simulator` on `model`.
pub(crate) fn simulate(
    model: &Model,
    simulator: &str,
    seconds: f64,
    seed: u64,
) -> Result<Outcome, BoxError> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(bad("--seconds must be above 0"));
    }
    model.validate().map_err(|e| bad(e.to_string()))?;
    match simulator {
        "flow" => {
            flow::check_size(model, seconds, flow::STEP_MS_DEFAULT)
                .map_err(|e| bad(e.to_string()))?;
            Ok(flow::simulate(
                model,
                seconds,
                flow::STEP_MS_DEFAULT,
                &|_| 1.0,
            ))
        }
        "packet" => {
            packet::check_size(model, seconds).map_err(|e| bad(e.to_string()))?;
            Ok(packet::simulate(model, seconds, seed))
        }
        other => Err(bad(format!("unknown simulator '{other}' (flow or packet)"))),
    }
}

/// Runs `twin whatif`.
pub(crate) fn whatif(args: WhatifArgs) -> Result<(), BoxError> {
    let scenarios = parse_scenarios(&args.scenarios)?;
    let model = load_model(&args.source)?;
    if let Some(path) = &args.save_model {
        std::fs::write(path, serde_json::to_string_pretty(&model)? + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("twin whatif: model saved to {}", path.display());
    }
    let mut changed = model.clone();
    for s in &scenarios {
        s.apply(&mut changed).map_err(|e| bad(e.to_string()))?;
    }
    changed
        .validate()
        .map_err(|e| bad(format!("after the scenarios: {e}")))?;
    let mix = scenarios
        .iter()
        .any(|s| matches!(s, Scenario::PriorityMix(_)));
    if args.simulator == "flow" && mix {
        eprintln!(
            "twin whatif: the flow simulator does not tell priority classes apart; --simulator packet shows a priority mix"
        );
    }
    let start = Instant::now();
    let baseline = simulate(&model, &args.simulator, args.seconds, args.seed)?;
    let predicted = simulate(&changed, &args.simulator, args.seconds, args.seed)?;
    let wall_s = start.elapsed().as_secs_f64() / 2.0;
    if args.json {
        outln!(
            "{}",
            json!({
                "model": model,
                "scenarios": args.scenarios,
                "scenario_model": changed,
                "baseline": baseline,
                "predicted": predicted,
                "wall_s_per_run": wall_s,
                "times_real_time": baseline.simulated_s / wall_s.max(1e-9),
            })
        )?;
        return Ok(());
    }
    outln!("model: {}", describe(&model))?;
    if scenarios.is_empty() {
        outln!("scenario: none (the model as calibrated)")?;
    } else {
        outln!("scenario: {}", args.scenarios.join(" "))?;
    }
    print_side_by_side(&baseline, &predicted)?;
    outln!(
        "simulated {} s ({}) in {:.1} ms a run: {:.0}x real time",
        args.seconds,
        args.simulator,
        wall_s * 1e3,
        baseline.simulated_s / wall_s.max(1e-9)
    )?;
    Ok(())
}

/// One line about a model.
pub(crate) fn describe(m: &Model) -> String {
    format!(
        "{} flows, {:.0} frames/s offered; {} router core(s) at {:.0} ns a frame; consumers {:.0} ns a frame; ring {} frames, deferral {} frames; hop {:.1} µs",
        m.flows.len(),
        m.offered_per_s(),
        m.router_cores,
        m.router_service_ns,
        m.consumer_service_ns,
        m.ring_frames,
        m.deferral_frames,
        m.hop_ns / 1e3
    ) + &m.service_curve.map_or(String::new(), |c| {
        format!(
            " (router time measured at {:.0} frames/s a core; it follows the load toward {:.0} ns saturated)",
            c.measured_per_s, c.saturated_ns
        )
    })
}

fn print_side_by_side(a: &Outcome, b: &Outcome) -> Result<(), BoxError> {
    let busiest = |o: &Outcome| o.router_utilisation.iter().copied().fold(0.0, f64::max);
    let rows: [(&str, f64, f64); 10] = [
        ("throughput /s", a.throughput_per_s, b.throughput_per_s),
        (
            "latency p50 µs",
            a.latency.p50_ns / 1e3,
            b.latency.p50_ns / 1e3,
        ),
        (
            "latency p90 µs",
            a.latency.p90_ns / 1e3,
            b.latency.p90_ns / 1e3,
        ),
        (
            "latency p99 µs",
            a.latency.p99_ns / 1e3,
            b.latency.p99_ns / 1e3,
        ),
        (
            "latency p99.9 µs",
            a.latency.p999_ns / 1e3,
            b.latency.p999_ns / 1e3,
        ),
        ("deferred /s", a.deferred_per_s, b.deferred_per_s),
        (
            "dead letters /s",
            a.dead_lettered_per_s,
            b.dead_lettered_per_s,
        ),
        ("backlog at end, frames", a.backlog_frames, b.backlog_frames),
        (
            "busiest router core %",
            busiest(a) * 100.0,
            busiest(b) * 100.0,
        ),
        (
            "busiest consumer %",
            a.consumer_utilisation_max * 100.0,
            b.consumer_utilisation_max * 100.0,
        ),
    ];
    outln!("{:<26} {:>14} {:>14}", "", "baseline", "predicted")?;
    for (name, x, y) in rows {
        outln!("{name:<26} {x:>14.1} {y:>14.1}")?;
    }
    for (p, q) in a.partitions.iter().zip(&b.partitions) {
        outln!(
            "{:<26} {:>14} {:>14}",
            format!("partition {} cpus, busy%", p.name),
            format!("{}, {:.0}", p.cpus, p.utilisation * 100.0),
            format!("{}, {:.0}", q.cpus, q.utilisation * 100.0)
        )?;
    }
    Ok(())
}

/// What `twin whatif-bench` was asked.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// A saved model [default: the example model, two flows of 20,000 frames/s].
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Simulated seconds for the flow simulator.
    #[arg(long, default_value_t = 3600.0)]
    pub(crate) flow_seconds: f64,
    /// Simulated seconds for the packet simulator and SimPy (the same for both).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) packet_seconds: f64,
    /// The Python with SimPy [default: .venv/bin/python when present, else python3].
    #[arg(long)]
    pub(crate) python: Option<PathBuf>,
    /// Skip SimPy.
    #[arg(long)]
    pub(crate) no_simpy: bool,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `twin whatif-bench`: each simulator's speed as a multiple of real time, and SimPy's
/// on the same packet model in the same run.
pub(crate) fn bench(args: BenchArgs) -> Result<(), BoxError> {
    let model = match &args.model {
        Some(path) => load_model(&ModelSource {
            socket: None,
            config: None,
            window_ms: 0,
            model: Some(path.clone()),
            flows: None,
            service_ns: None,
            saturated_ns: None,
            consumer_ns: None,
            hop_ns: None,
            load_report: None,
        })?,
        None => Model::example(),
    };
    let timed = |simulator: &str, seconds: f64| -> Result<(Outcome, f64), BoxError> {
        eprintln!("twin whatif-bench: {simulator} simulator, {seconds} s");
        let start = Instant::now();
        let out = simulate(&model, simulator, seconds, 1)?;
        Ok((out, start.elapsed().as_secs_f64()))
    };
    let (flow_out, flow_wall) = timed("flow", args.flow_seconds)?;
    let (packet_out, packet_wall) = timed("packet", args.packet_seconds)?;
    let simpy = if args.no_simpy {
        None
    } else {
        // SimPy runs about two orders of magnitude slower than the packet simulator.
        let frames = model.offered_per_s() * args.packet_seconds;
        if frames > SIMPY_FRAMES_MAX {
            return Err(bad(format!(
                "{frames:.0} frames would take SimPy too long (at most {SIMPY_FRAMES_MAX:.0}); fewer --packet-seconds, or --no-simpy"
            )));
        }
        eprintln!("twin whatif-bench: SimPy, {} s", args.packet_seconds);
        Some(run_simpy(
            &model,
            args.packet_seconds,
            args.python.as_deref(),
        )?)
    };
    let simpy_wall = simpy.as_ref().and_then(|v| v["wall_s"].as_f64());
    let x = |simulated: f64, wall: f64| simulated / wall.max(1e-9);
    if args.json {
        outln!(
            "{}",
            json!({
                "model": model,
                "flow": { "outcome": flow_out, "wall_s": flow_wall,
                          "times_real_time": x(flow_out.simulated_s, flow_wall) },
                "packet": { "outcome": packet_out, "wall_s": packet_wall,
                            "times_real_time": x(args.packet_seconds, packet_wall),
                            "events_per_s": packet_out.events as f64 / packet_wall.max(1e-9) },
                "simpy": simpy.as_ref().map(|v| json!({ "outcome": v, "wall_s": simpy_wall,
                            "times_real_time": simpy_wall.map(|w| x(args.packet_seconds, w)) })),
                "packet_vs_simpy_speed": simpy_wall.map(|w| w / packet_wall.max(1e-9)),
            })
        )?;
        return Ok(());
    }
    outln!("model: {}", describe(&model))?;
    outln!(
        "{:<8} {:>11} {:>10} {:>14} {:>12} {:>10} {:>10}",
        "sim",
        "simulated s",
        "wall ms",
        "x real time",
        "thru /s",
        "p50 µs",
        "p99 µs"
    )?;
    let row = |name: &str, simulated: f64, wall: f64, o: (f64, f64, f64)| {
        outln!(
            "{name:<8} {simulated:>11.1} {:>10.1} {:>14.1} {:>12.0} {:>10.2} {:>10.2}",
            wall * 1e3,
            x(simulated, wall),
            o.0,
            o.1 / 1e3,
            o.2 / 1e3
        )
    };
    let triple = |o: &Outcome| (o.throughput_per_s, o.latency.p50_ns, o.latency.p99_ns);
    row("flow", flow_out.simulated_s, flow_wall, triple(&flow_out))?;
    row(
        "packet",
        args.packet_seconds,
        packet_wall,
        triple(&packet_out),
    )?;
    if let (Some(v), Some(w)) = (&simpy, simpy_wall) {
        let l = &v["latency"];
        let get = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
        row(
            "simpy",
            args.packet_seconds,
            w,
            (
                get(&v["throughput_per_s"]),
                get(&l["p50_ns"]),
                get(&l["p99_ns"]),
            ),
        )?;
        outln!(
            "packet simulator vs SimPy: {:.0}x faster",
            w / packet_wall.max(1e-9)
        )?;
    }
    Ok(())
}

/// The most frames the bench asks SimPy to simulate (about a minute of its time here).
const SIMPY_FRAMES_MAX: f64 = 2e6;

/// The SimPy implementation of the packet model, relative to a checkout's root.
const SIMPY_SCRIPT: &str = "scripts/whatif_simpy.py";

/// Runs `scripts/whatif_simpy.py` on `model` and returns its JSON.
fn run_simpy(
    model: &Model,
    seconds: f64,
    python: Option<&Path>,
) -> Result<serde_json::Value, BoxError> {
    // From a checkout: the working directory's scripts/, else the one this was built from.
    let root = if Path::new(SIMPY_SCRIPT).exists() {
        PathBuf::from(".")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    };
    let script = root.join(SIMPY_SCRIPT);
    let python = python.map(Path::to_path_buf).unwrap_or_else(|| {
        let venv = root.join(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    });
    // A new file of this run's own (never one planted under its name), removed on drop.
    let mut model_file = tempfile::Builder::new()
        .prefix("agentwire-whatif-")
        .suffix(".json")
        .tempfile()?;
    {
        use std::io::Write;
        model_file.write_all(serde_json::to_string(model)?.as_bytes())?;
        model_file.flush()?;
    }
    let model_path = model_file.path();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(model_path)
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--seed")
        .arg("1")
        .output();
    drop(model_file);
    let out = out.map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {} (--no-simpy skips it)",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("SimPy's output is not JSON: {e}"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_gives_the_documented_settings() {
        let s = daemon_settings(None).unwrap();
        assert_eq!(s.ring_capacity_bytes, 1 << 20);
        assert_eq!(s.defer_deadline_ms, 1000);
        assert_eq!(s.batch_frames, 32);
        assert!(s.rebalance.enabled);
    }

    #[test]
    fn a_bad_scenario_is_bad_input() {
        let e = parse_scenarios(&["load=x".to_string()]).unwrap_err();
        assert!(e.is::<crate::twin_cmd::BadInput>(), "{e}");
    }
}
