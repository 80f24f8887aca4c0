//! `agentwire twin ...`: the digital twin's forecasters from the command line.
//!
//! `twin forecast` forecasts one series read from a CSV `value` column and writes
//! `step,forecast,lo,hi`; `twin m4-eval` scores the forecasters on an M4-layout directory
//! (sMAPE, MASE, OWA against Naive2, beside seasonal naive). Exit codes: 0 done, 2 bad input
//! (a missing or malformed file, an unknown method, a history too short, an output that
//! would overwrite the input), 1 anything else (an output that cannot be written).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use agentwire_twin::forecast::{ForecastError, Forecaster, Method};
use agentwire_twin::m4;
use serde_json::json;

type BoxError = Box<dyn std::error::Error>;

/// The exit code for bad input.
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error in what the command was given (exit [`EXIT_BAD_INPUT`]).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A [`BadInput`] error.
pub(crate) fn bad(message: impl Into<String>) -> BoxError {
    Box::new(BadInput(message.into()))
}

/// What `twin forecast` was asked.
pub struct ForecastArgs {
    /// The CSV with a `value` column.
    pub input: PathBuf,
    /// Steps to forecast.
    pub horizon: usize,
    /// The seasonal period.
    pub season: usize,
    /// The method's name.
    pub method: String,
    /// The intervals' coverage.
    pub level: f64,
    /// Where the forecast goes (`-` for stdout).
    pub output: PathBuf,
    /// Overwrite an existing output file (never the input).
    pub force: bool,
    /// A JSON summary on stdout.
    pub json: bool,
}

/// `agentwire twin forecast`.
pub fn forecast(args: ForecastArgs) -> Result<(), BoxError> {
    let method = Method::from_name(&args.method).map_err(|e| bad(e.to_string()))?;
    if args.json && args.output == Path::new("-") {
        return Err(bad(
            "--json prints the summary on stdout: give the forecast a file (--output FILE)",
        ));
    }
    if !args.input.exists() {
        return Err(bad(format!("{}: no such file", args.input.display())));
    }
    if args.output != Path::new("-") && same_file(&args.input, &args.output) {
        return Err(bad(format!(
            "--output {} is the input file; refusing to overwrite it",
            args.output.display()
        )));
    }
    let values =
        agentwire_twin::series_csv::read_values(&args.input).map_err(|e| bad(e.to_string()))?;
    let started = Instant::now();
    let forecast = Forecaster::new(method)
        .season(args.season)
        .level(args.level)
        .forecast(&values, args.horizon)
        .map_err(|e| match e {
            ForecastError::TooShort { .. } => bad(format!(
                "{}: {e} (a shorter --season or another --method may need fewer)",
                args.input.display()
            )),
            e => bad(format!("{}: {e}", args.input.display())),
        })?;
    let elapsed_s = started.elapsed().as_secs_f64();
    if args.output != Path::new("-") && args.output.exists() && !args.force {
        return Err(bad(format!(
            "{} exists; pass --force to overwrite it",
            args.output.display()
        )));
    }
    let mut writer = crate::stream_cmd::create_output(&args.output, args.force)?;
    agentwire_twin::series_csv::write_forecast(&mut writer, &forecast)?;
    writer.flush()?;
    if args.json {
        outln!(
            "{}",
            json!({
                "input": args.input, "output": args.output, "method": method.name(),
                "horizon": args.horizon, "season": args.season, "history": values.len(),
                "level": args.level, "sigma": forecast.sigma, "elapsed_s": elapsed_s,
            })
        )?;
    } else if args.output != Path::new("-") {
        let _ = writeln!(
            std::io::stderr(),
            "agentwire twin forecast: {} steps by {} from {} values of {} -> {} ({:.1} ms)",
            args.horizon,
            method.name(),
            values.len(),
            args.input.display(),
            args.output.display(),
            elapsed_s * 1e3
        );
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (hard links and `..` included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// What `twin m4-eval` was asked.
pub struct EvalArgs {
    /// The M4-layout directory.
    pub data: PathBuf,
    /// Methods to score beside Naive2 and seasonal naive (empty: all).
    pub methods: Vec<String>,
    /// The seasonal period (and MASE's m).
    pub season: usize,
    /// Score on the last horizon of each training series instead of the test values.
    pub validation: bool,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
    /// One JSON object on stdout.
    pub json: bool,
}

/// `agentwire twin m4-eval`.
pub fn m4_eval(args: EvalArgs) -> Result<(), BoxError> {
    let mut methods = vec![Method::SeasonalNaive];
    if args.methods.is_empty() {
        methods.extend(Method::ALL);
    } else {
        for name in &args.methods {
            methods.push(Method::from_name(name).map_err(|e| bad(e.to_string()))?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    methods.retain(|m| *m != Method::Naive2 && seen.insert(*m));
    if args.season == 0 {
        return Err(bad("--season must be at least 1"));
    }
    let mut set = m4::load_dir(&args.data).map_err(|e| bad(e.to_string()))?;
    if args.validation {
        set = set
            .iter()
            .map(|s| {
                s.holdout().ok_or_else(|| {
                    bad(format!(
                        "series {}: too short to hold out {} values",
                        s.id,
                        s.test.len()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
    }
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let started = Instant::now();
    let step = (set.len() / 10).max(1);
    let report = m4::evaluate(&set, args.season, &methods, threads, |done, total| {
        if done % step == 0 || done == total {
            let _ = writeln!(
                std::io::stderr(),
                "agentwire twin m4-eval: {done}/{total} series"
            );
        }
    })
    .map_err(bad)?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let target = if args.validation {
        "the last horizon of each training series (validation)"
    } else {
        "the test values"
    };
    if args.json {
        outln!(
            "{}",
            json!({
                "data": args.data, "series": report.series, "horizon": report.horizon,
                "season": report.season, "validation": args.validation, "threads": threads,
                "elapsed_s": elapsed_s,
                "methods": report.scores.iter().map(|s| json!({
                    "method": s.method.name(), "smape": s.smape, "mase": s.mase, "owa": s.owa,
                    "msis": s.msis, "coverage": s.coverage, "fallbacks": s.fallbacks,
                })).collect::<Vec<_>>(),
            })
        )?;
        return Ok(());
    }
    outln!(
        "M4 evaluation: {} series of {}, horizon {}, season {}, scored on {target}",
        report.series,
        args.data.display(),
        report.horizon,
        report.season
    )?;
    outln!(
        "{:<10} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9}",
        "method",
        "sMAPE",
        "MASE",
        "OWA",
        "MSIS",
        "cover95",
        "fallbacks"
    )?;
    for s in &report.scores {
        outln!(
            "{:<10} {:>8.3} {:>7.3} {:>7.3} {:>8.3} {:>8.3} {:>9}",
            s.method.name(),
            s.smape,
            s.mase,
            s.owa,
            s.msis,
            s.coverage,
            s.fallbacks
        )?;
    }
    outln!(
        "OWA is against Naive2 on the same series. Published whole-set M4 hourly OWA: seasonal naive 0.627, Theta 1.006, best method 0.440. {:.1} s on {threads} thread(s).",
        elapsed_s
    )?;
    Ok(())
}
