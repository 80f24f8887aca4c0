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
    let stats = run_sharded(&pipeline, file.shards, events, &mut |_, o| {
        if write_error.is_some() {
            return;
        }
        let line = output_json(&o, &quantiles);
        if let Err(e) = writeln!(writer, "{line}") {
            write_error = Some(e);
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
