//! `agentwire stream ...`: the streaming engine from the command line.
//!
//! `stream run PIPELINE.toml` runs a pipeline declared in TOML over a CSV input and writes
//! one JSON object per window result (and per too-late event, with the side output on).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use agentwire_streaming::output_json::output_json;
use agentwire_streaming::pipeline::file::PipelineFile;
use agentwire_streaming::pipeline::input::CsvEvents;
use agentwire_streaming::pipeline::sharded::run_sharded;
use serde_json::json;

type BoxError = Box<dyn std::error::Error>;

/// What `stream run` was asked.
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Replaces the file's `[input] path`.
    pub input: Option<PathBuf>,
    /// Replaces the file's `[output] path`.
    pub output: Option<PathBuf>,
    /// Replaces the file's `shards`.
    pub shards: Option<usize>,
    /// Overwrite an existing output file.
    pub force: bool,
    /// A JSON summary on stdout.
    pub json: bool,
}

/// Opens `path` for writing results: `-` is stdout; an existing file is refused unless
/// `force` (a command never destroys a file it did not create without being told).
pub fn create_output(path: &Path, force: bool) -> Result<Box<dyn Write>, BoxError> {
    if path == Path::new("-") {
        return Ok(Box::new(StdoutWriter));
    }
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let file = options.open(path).map_err(|e| -> BoxError {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; pass --force to overwrite it", path.display()).into()
        } else {
            format!("cannot create {}: {e}", path.display()).into()
        }
    })?;
    Ok(Box::new(BufWriter::new(file)))
}

/// Stdout through [`crate::out`], so a closed pipe ends the command quietly.
struct StdoutWriter;

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::out::write_fmt(format_args!("{}", String::from_utf8_lossy(buf)))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// `agentwire stream run`.
pub fn run(args: RunArgs) -> Result<(), BoxError> {
    let mut file = PipelineFile::load(&args.pipeline)?;
    if let Some(shards) = args.shards {
        file.shards = shards;
    }
    let pipeline = file.to_pipeline()?;
    let origin = args.pipeline.display();
    let input = args
        .input
        .or_else(|| file.input.as_ref().map(|s| s.path.clone()))
        .ok_or_else(|| format!("{origin}: no input: give --input FILE or [input] path"))?;
    let output = args
        .output
        .or_else(|| file.output.as_ref().map(|s| s.path.clone()))
        .unwrap_or_else(|| PathBuf::from("-"));
    if args.json && output == Path::new("-") {
        return Err(
            "--json prints the summary on stdout: give the results a file (--output FILE)".into(),
        );
    }
    let reader: Box<dyn std::io::Read + Send> = if input == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        let f = std::fs::File::open(&input)
            .map_err(|e| format!("cannot open {}: {e}", input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let events = CsvEvents::new(reader).map_err(|e| format!("{}: {e}", input.display()))?;
    let report = events.report();
    let mut writer = create_output(&output, args.force)?;
    let quantiles = pipeline.window().quantiles.clone();
    let started = Instant::now();
    let mut write_error: Option<std::io::Error> = None;
    // Once the output cannot be written (a reader gone: `stream run ... | head`), reading the
    // rest of the input is wasted, and with stdin as input it might never end: stop reading.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = stop.clone();
    let events = events.take_while(move |_| !reading.load(std::sync::atomic::Ordering::Relaxed));
    let stats = run_sharded(&pipeline, file.shards, events, &mut |_, o| {
        if write_error.is_some() {
            return;
        }
        let line = output_json(&o, &quantiles);
        if let Err(e) = writeln!(writer, "{line}") {
            write_error = Some(e);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    if let Some(e) = write_error {
        return Err(Box::new(e));
    }
    writer.flush()?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let windows = stats.windows();
    let summary = json!({
        "pipeline": args.pipeline, "input": input, "output": output,
        "shards": file.shards, "rows": report.rows(), "malformed": report.malformed(),
        "events_in": stats.events_in, "events_filtered": stats.events_filtered,
        "windows_fired": windows.windows_fired, "late_firings": windows.late_firings,
        "late_events_dropped": windows.late_events_dropped,
        "events_refused_window_limit": windows.events_refused_window_limit,
        "outputs": stats.outputs, "elapsed_s": elapsed_s,
        "events_per_s": stats.events_in as f64 / elapsed_s.max(1e-9),
        "malformed_rows": report.messages(),
    });
    if args.json {
        outln!("{summary}")?;
        return Ok(());
    }
    let mut err = std::io::stderr();
    for message in report.messages() {
        let _ = writeln!(
            err,
            "agentwire stream run: {}: skipped {message}",
            input.display()
        );
    }
    let _ = writeln!(
        err,
        "agentwire stream run: {} events ({} filtered, {} malformed rows, {} too late) -> {} results in {:.3} s on {} shard(s)",
        stats.events_in,
        stats.events_filtered,
        report.malformed(),
        windows.late_events_dropped,
        stats.outputs,
        elapsed_s,
        file.shards,
    );
    Ok(())
}

/// `agentwire stream detect`: scores every row of a NAB-style CSV.
pub fn detect(
    input: &Path,
    output: &Path,
    detector: &str,
    force: bool,
    json: bool,
) -> Result<(), BoxError> {
    agentwire_streaming::detect::by_name(detector)?;
    if output.exists() && !force {
        return Err(format!("{} exists; pass --force to overwrite it", output.display()).into());
    }
    let started = Instant::now();
    let summary = agentwire_streaming::detect::detect_csv(input, output, detector)?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let ns_per_row = elapsed_s * 1e9 / (summary.rows.max(1) as f64);
    if json {
        outln!(
            "{}",
            json!({
                "input": input, "output": output, "detector": summary.detector,
                "rows": summary.rows, "score_max": summary.score_max,
                "elapsed_s": elapsed_s, "ns_per_row": ns_per_row,
            })
        )?;
    } else {
        outln!(
            "{} rows of {} scored by {} into {} ({:.0} ns per row, read and write included)",
            summary.rows,
            input.display(),
            summary.detector,
            output.display(),
            ns_per_row
        )?;
    }
    Ok(())
}

/// `agentwire stream nab-score`: NAB's standard-profile score of a detector on a corpus,
/// beside the null detector's (the baseline, 0 by construction) and the windowed Gaussian's.
pub fn nab_score(data: &Path, labels: &Path, detector: &str, json: bool) -> Result<(), BoxError> {
    use agentwire_streaming::nab::score_detector;
    agentwire_streaming::detect::by_name(detector)?;
    let mut names = vec![detector.to_string()];
    for baseline in ["windowed-gaussian", "null"] {
        if detector != baseline {
            names.push(baseline.to_string());
        }
    }
    let mut reports = Vec::with_capacity(names.len());
    for name in &names {
        if !json {
            let _ = writeln!(
                std::io::stderr(),
                "agentwire stream nab-score: running {name}..."
            );
        }
        reports.push(score_detector(data, labels, name)?);
    }
    if json {
        let main = &reports[0];
        outln!(
            "{}",
            json!({
                "detector": main.detector, "profile": main.profile.name,
                "score": main.score_normalised, "threshold": main.threshold,
                "windows": main.windows, "windows_detected": main.tp_windows,
                "windows_missed": main.fn_windows, "false_positive_rows": main.fp_rows,
                "rows": main.rows, "ns_per_row": main.detect_ns_per_row,
                "baselines": reports[1..].iter().map(|r| json!({
                    "detector": r.detector, "score": r.score_normalised,
                })).collect::<Vec<_>>(),
                "files": main.files,
            })
        )?;
        return Ok(());
    }
    outln!(
        "NAB standard profile, {} files, {} windows, {} rows ({})",
        reports[0].files.len(),
        reports[0].windows,
        reports[0].rows,
        data.display()
    )?;
    outln!(
        "{:<22} {:>8} {:>10} {:>9} {:>7} {:>9} {:>9}",
        "detector",
        "score",
        "threshold",
        "detected",
        "missed",
        "fp rows",
        "ns/row"
    )?;
    for r in &reports {
        outln!(
            "{:<22} {:>8.2} {:>10.4} {:>9} {:>7} {:>9} {:>9.0}",
            r.detector,
            r.score_normalised,
            r.threshold,
            r.tp_windows,
            r.fn_windows,
            r.fp_rows,
            r.detect_ns_per_row.unwrap_or(f64::NAN)
        )?;
    }
    Ok(())
}

/// `agentwire stream status`: the daemon's streaming engine, from its status report.
pub fn status(q: &crate::serve_cmd::QueryArgs) -> Result<(), BoxError> {
    let (socket, report) = crate::serve_cmd::fetch_status(q)?;
    let stream: Vec<(&str, u64)> = report
        .counters
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("stream.").map(|k| (k, *v)))
        .collect();
    if stream.is_empty() {
        return Err(format!(
            "the daemon at {} runs no streaming engine (set [streaming] enabled = true in its config)",
            socket.display()
        )
        .into());
    }
    if q.json {
        let map: serde_json::Map<String, serde_json::Value> = stream
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        outln!("{}", json!({ "socket": socket, "streaming": map }))?;
        return Ok(());
    }
    outln!("streaming engine of the daemon at {}", socket.display())?;
    for (k, v) in stream {
        outln!("  {k:<18} {v}")?;
    }
    Ok(())
}
