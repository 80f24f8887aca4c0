//! `agentwire twin risks`: the probability that a series crosses a threshold within the next
//! steps (`agentwire_twin::risk`), from a CSV `value` column; with `--live`, the running
//! daemon's twin's last assessment of every watched signal (the status fact `twin_risks`).
//!
//! Exit codes: 0 done (whether or not the probability passes `--level`), 2 bad input (a
//! missing or malformed file, an unknown method, a history too short, a bad threshold, level
//! or horizon), 1 anything else.

use std::path::PathBuf;

use agentwire_twin::forecast::{ForecastError, Forecaster, Method};
use agentwire_twin::risk::{Direction, RiskError, Watch};
use serde_json::json;

use crate::twin_cmd::BadInput;

type BoxError = Box<dyn std::error::Error>;

fn bad(message: impl Into<String>) -> BoxError {
    Box::new(BadInput(message.into()))
}

/// The steps the report lists (those within the horizon, and the horizon itself).
const REPORT_STEPS: [usize; 5] = [1, 6, 12, 24, 48];

/// What `twin risks` was asked.
pub struct RisksArgs {
    /// The CSV with a `value` column.
    pub input: PathBuf,
    /// The threshold.
    pub threshold: f64,
    /// Failure is at or below the threshold (else at or above).
    pub below: bool,
    /// Steps to look ahead.
    pub horizon: usize,
    /// The seasonal period.
    pub season: usize,
    /// The forecasting method's name.
    pub method: String,
    /// The probability that raises an alert, in (0, 1].
    pub level: f64,
    /// One JSON object on stdout.
    pub json: bool,
}

/// `agentwire twin risks`.
pub fn risks(args: RisksArgs) -> Result<(), BoxError> {
    let method = Method::from_name(&args.method).map_err(|e| bad(e.to_string()))?;
    if !(args.level > 0.0 && args.level <= 1.0) {
        return Err(bad(format!(
            "--level is a probability in (0, 1], not {}",
            args.level
        )));
    }
    if !args.input.exists() {
        return Err(bad(format!("{}: no such file", args.input.display())));
    }
    let values =
        agentwire_twin::series_csv::read_values(&args.input).map_err(|e| bad(e.to_string()))?;
    let direction = if args.below {
        Direction::Below
    } else {
        Direction::Above
    };
    let forecaster = Forecaster::new(method).season(args.season);
    let report = Watch::new(args.threshold, direction)
        .horizon(args.horizon)
        .assess(&forecaster, &values)
        .map_err(|e| match e {
            RiskError::Forecast(ForecastError::TooShort { .. }) => bad(format!(
                "{}: {e} (a shorter --season or another --method may need fewer)",
                args.input.display()
            )),
            e => bad(format!("{}: {e}", args.input.display())),
        })?;
    let mut steps: Vec<usize> = REPORT_STEPS
        .iter()
        .copied()
        .filter(|s| *s < args.horizon)
        .collect();
    steps.push(args.horizon);
    let probability = report.probability(args.horizon);
    let alert = probability >= args.level;
    let [lo, mid, hi] = report.first_crossing();
    if args.json {
        outln!(
            "{}",
            json!({
                "input": args.input, "method": method.name(), "season": args.season,
                "history": values.len(), "last": report.last, "threshold": args.threshold,
                "direction": direction.name(), "horizon": args.horizon,
                "already_past": report.already_past, "paths": report.paths,
                "probabilities": steps.iter().map(|s| json!({
                    "step": s, "probability": report.probability(*s),
                })).collect::<Vec<_>>(),
                "probability": probability,
                "first_crossing": {"p05": lo, "p50": mid, "p95": hi},
                "level": args.level, "alert": alert,
            })
        )?;
        return Ok(());
    }
    outln!(
        "risk of {} crossing {} {} within {} steps ({}, season {}, {} values, last {}):",
        args.input.display(),
        direction.name(),
        args.threshold,
        args.horizon,
        method.name(),
        args.season,
        values.len(),
        report.last
    )?;
    outln!("{:>6}  {:>10}", "step", "P(crossed)")?;
    for s in &steps {
        outln!("{s:>6}  {:>10.3}", report.probability(*s))?;
    }
    let step = |s: Option<usize>| s.map_or_else(|| format!(">{}", args.horizon), |s| s.to_string());
    if report.already_past {
        outln!("first crossing: already past (the last value)")?;
    } else if mid.is_some() {
        outln!(
            "first crossing: step {} (90% interval {} to {})",
            step(mid),
            step(lo),
            step(hi)
        )?;
    } else {
        outln!(
            "first crossing: not expected within {} steps (5% point: {})",
            args.horizon,
            step(lo)
        )?;
    }
    outln!(
        "P(crossed within {}) = {:.3} {} level {}: {}",
        args.horizon,
        probability,
        if alert { ">=" } else { "<" },
        args.level,
        if alert { "ALERT" } else { "ok" }
    )?;
    Ok(())
}

/// `agentwire twin risks --live`: the daemon's twin's last assessment of every watch, read
/// from its status report. Exit 1 when no daemon answers or it runs no twin.
pub fn live(socket: Option<PathBuf>, json: bool) -> Result<(), BoxError> {
    let query = crate::serve_cmd::QueryArgs {
        socket,
        daemon_uid: Vec::new(),
        json,
    };
    let (socket, report) = crate::serve_cmd::fetch_status(&query)?;
    let Some((_, text)) = report.info.iter().find(|(k, _)| k == "twin_risks") else {
        return Err(format!(
            "the daemon at {} runs no twin (set [twin] enabled = true; docs/config.md)",
            socket.display()
        )
        .into());
    };
    let risks: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("the daemon's twin_risks fact is not JSON: {e}"))?;
    if json {
        outln!("{}", json!({ "socket": socket, "risks": risks }))?;
        return Ok(());
    }
    if risks.is_empty() {
        outln!("no watch assessed yet (each needs 4 buckets of history, then waits for risk_interval_ms)")?;
        return Ok(());
    }
    outln!(
        "{:<40} {:>10} {:>6} {:>10} {:>11} {:>9} {:>8}  verdict",
        "signal",
        "threshold",
        "dir",
        "last",
        "P(crossed)",
        "crossing",
        "horizon"
    )?;
    for r in &risks {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
        let step = r["crossing_step"]
            .as_u64()
            .map_or("-".to_string(), |s| s.to_string());
        let horizon = format!(
            "{}x{}s",
            r["horizon_steps"].as_u64().unwrap_or(0),
            r["step_ms"].as_u64().unwrap_or(0) / 1000
        );
        let verdict = if r["alert"].as_bool() == Some(true) {
            "ALERT"
        } else {
            "ok"
        };
        outln!(
            "{:<40} {:>10} {:>6} {:>10} {:>11} {:>9} {:>8}  {verdict}",
            text("signal"),
            num("threshold"),
            text("direction"),
            num("last"),
            num("probability"),
            step,
            horizon
        )?;
    }
    Ok(())
}
