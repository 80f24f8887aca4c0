//! `agentwire stream chaos`: the exactly-once claim, tested with real SIGKILLs.
//!
//! It writes `--events` generated events (seeded, with out-of-order, late and too-late
//! ones) into a durable log, runs a fixed windowed pipeline over it in a child process
//! (`stream chaos-worker`) with checkpoints and a de-duplicating sink, kills that child with
//! SIGKILL at `--kills` random points of its progress (after a random delay of up to half a
//! millisecond, so a kill lands anywhere: mid-round, mid-checkpoint, mid-write), restarts it
//! each time from its checkpoints, runs the same input once more without failures, and
//! compares the two sinks.
//!
//! The worker prints `progress OFFSET` after each round and `done` at the end, then waits
//! for its stdin to close before it exits, so a kill aimed at its last round still finds it
//! alive.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use agentwire_streaming::codec::encode;
use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
use agentwire_streaming::exactly_once::runner::{run_epochs, EpochConfig};
use agentwire_streaming::exactly_once::sink::DedupSink;
use agentwire_streaming::log::{FsyncPolicy, Log, LogConfig};
use agentwire_streaming::pipeline::Pipeline;
use agentwire_streaming::window::{WindowKind, WindowSpec};
use serde_json::json;

type BoxError = Box<dyn std::error::Error>;

/// Keys of the generated input.
const KEYS: u64 = 64;
/// Event time between consecutive events, ns.
const STEP_NS: i64 = 10;
/// The most an event's time lags behind its position, ns (past the lateness: some are
/// dropped as too late).
const JITTER_NS: u64 = 400;
/// Records per log batch when writing the input.
const INPUT_BATCH: usize = 1_024;
/// The longest a kill waits after its progress target, µs.
const KILL_DELAY_US_MAX: u64 = 500;

/// What `stream chaos` was asked.
pub struct ChaosArgs {
    /// Events generated.
    pub events: u64,
    /// SIGKILLs.
    pub kills: u32,
    /// Seed of the input and the kill points.
    pub seed: u64,
    /// Shard threads of the worker.
    pub shards: usize,
    /// Work directory (default: a new one under the temp dir, removed at the end).
    pub dir: Option<PathBuf>,
    /// One JSON object on stdout.
    pub json: bool,
}

/// The fixed pipeline both runs use.
fn pipeline() -> Pipeline {
    let mut spec = WindowSpec::new(WindowKind::Sliding {
        size_ns: 4_000,
        slide_ns: 1_000,
    });
    spec.out_of_orderness_ns = 100;
    spec.allowed_lateness_ns = 200;
    spec.quantiles = vec![0.5, 0.99];
    spec.late_side_output = true;
    Pipeline::new(spec)
}

fn epoch_config(shards: usize) -> EpochConfig {
    EpochConfig {
        shards,
        round_records: 1_024,
        epoch_rounds: 4,
        ..EpochConfig::default()
    }
}

fn input_log(dir: &Path) -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::new(dir.join("input"))
    }
}

/// Writes the generated input.
fn write_input(dir: &Path, events: u64, seed: u64) -> Result<(), BoxError> {
    let (mut log, _) = Log::open(input_log(dir))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut records: Vec<Vec<u8>> = Vec::with_capacity(INPUT_BATCH);
    for i in 0..events {
        let t = i as i64 * STEP_NS - rng.u64(0..=JITTER_NS) as i64;
        let value = rng.u32(0..1_000) as f64 / 10.0;
        let mut bytes = Vec::new();
        encode(&Event::new(Key::Id(rng.u64(0..KEYS)), t, value), &mut bytes);
        records.push(bytes);
        if records.len() == INPUT_BATCH || i + 1 == events {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            log.append_batch(0, &refs)?;
            records.clear();
        }
    }
    log.sync_now()?;
    Ok(())
}

/// `stream chaos-worker`: one incarnation of a run.
pub fn worker(dir: &Path, name: &str, shards: usize) -> Result<(), BoxError> {
    let (mut log, _) = Log::open(input_log(dir))?;
    let store = CheckpointStore::open(&dir.join(format!("{name}.ckpt")))?;
    let (mut sink, _) = DedupSink::open(&dir.join(format!("{name}.jsonl")))?;
    let mut stdout = std::io::stdout();
    let report = run_epochs(
        &pipeline(),
        &mut log,
        &store,
        &mut sink,
        &epoch_config(shards),
        &mut |p| {
            // The parent reads this to aim its kills; a parent gone is an end anyway.
            let _ = writeln!(stdout, "progress {}", p.input_offset);
            let _ = stdout.flush();
        },
    )?;
    let summary = json!({
        "restored_epoch": report.restored_epoch, "committed_epoch": report.committed_epoch,
        "outputs_written": report.outputs_written, "outputs_skipped": report.outputs_skipped,
    });
    writeln!(stdout, "done {summary}")?;
    stdout.flush()?;
    // Stay alive until the parent is done aiming at this incarnation.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    Ok(())
}

struct Incarnation {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

fn spawn(dir: &Path, name: &str, shards: usize) -> Result<Incarnation, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["stream", "chaos-worker", "--dir"])
        .arg(dir)
        .args(["--name", name, "--shards", &shards.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the worker has no stdout")?;
    Ok(Incarnation {
        child,
        lines: BufReader::new(stdout).lines(),
    })
}

/// Reads a worker's lines until `done` (true) or until `stop` says so for a progress
/// offset (false); an error if the worker dies on its own.
fn follow(inc: &mut Incarnation, stop: &mut dyn FnMut(u64) -> bool) -> Result<bool, BoxError> {
    for line in inc.lines.by_ref() {
        let line = line?;
        if let Some(offset) = line.strip_prefix("progress ") {
            if stop(offset.parse()?) {
                return Ok(false);
            }
        } else if line.starts_with("done") {
            return Ok(true);
        }
    }
    let status = inc.child.wait()?;
    Err(format!("the worker stopped without finishing ({status})").into())
}

/// Closes the worker's stdin and waits for its clean exit.
fn release(mut inc: Incarnation) -> Result<(), BoxError> {
    drop(inc.child.stdin.take());
    let status = inc.child.wait()?;
    if !status.success() {
        return Err(format!("the worker failed at exit ({status})").into());
    }
    Ok(())
}

/// A sink's outputs by (shard, epoch, sequence).
type SinkOutputs = BTreeMap<(u64, u64, u64), String>;

/// What a sink holds, and how many lines repeated an id.
fn read_sink(path: &Path) -> Result<(SinkOutputs, u64), BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut outputs = BTreeMap::new();
    let mut duplicates = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = |k: &str| v[k].as_u64().ok_or(format!("a line without {k}: {line}"));
        let key = (id("shard")?, id("epoch")?, id("seq")?);
        if outputs.insert(key, v["output"].to_string()).is_some() {
            duplicates += 1;
        }
    }
    Ok((outputs, duplicates))
}

/// `agentwire stream chaos`.
pub fn chaos(args: ChaosArgs) -> Result<(), BoxError> {
    if args.events == 0 {
        return Err("--events must be at least 1".into());
    }
    let started = Instant::now();
    let (dir, remove_after) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => {
            let d = std::env::temp_dir().join(format!("aw-chaos-{}", std::process::id()));
            (d, true)
        }
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        return Err(format!("{} is not empty; give an empty or new --dir", dir.display()).into());
    }
    std::fs::create_dir_all(&dir)?;
    let result = chaos_in(&args, &dir, started);
    if remove_after {
        // Ours to remove, whatever happened.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn chaos_in(args: &ChaosArgs, dir: &Path, started: Instant) -> Result<(), BoxError> {
    let dir = dir.to_path_buf();
    let say = |text: String| {
        if !args.json {
            let _ = writeln!(std::io::stderr(), "agentwire stream chaos: {text}");
        }
    };
    say(format!(
        "writing {} events to {}",
        args.events,
        dir.display()
    ));
    write_input(&dir, args.events, args.seed)?;

    say("the run without failures".into());
    let mut clean = spawn(&dir, "clean", args.shards)?;
    follow(&mut clean, &mut |_| false)?;
    release(clean)?;

    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut targets: Vec<u64> = (0..args.kills).map(|_| rng.u64(0..args.events)).collect();
    targets.sort_unstable();
    let mut kills = 0u32;
    let mut incarnations = 1u32;
    let mut inc = spawn(&dir, "chaos", args.shards)?;
    loop {
        let next = targets.get(kills as usize).copied();
        let finished = follow(&mut inc, &mut |offset| next.is_some_and(|t| offset >= t))?;
        if finished {
            release(inc)?;
            break;
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..=KILL_DELAY_US_MAX)));
        inc.child.kill()?;
        inc.child.wait()?;
        kills += 1;
        say(format!(
            "SIGKILL {kills}/{} at offset {} or later; restarting from the checkpoints",
            args.kills,
            next.unwrap_or(0)
        ));
        inc = spawn(&dir, "chaos", args.shards)?;
        incarnations += 1;
    }

    let (clean_out, _) = read_sink(&dir.join("clean.jsonl"))?;
    let (chaos_out, duplicates) = read_sink(&dir.join("chaos.jsonl"))?;
    let missing = clean_out
        .keys()
        .filter(|k| !chaos_out.contains_key(k))
        .count();
    let unexpected = chaos_out
        .iter()
        .filter(|(k, v)| clean_out.get(k) != Some(v))
        .count();
    let equal = duplicates == 0 && missing == 0 && unexpected == 0;
    let summary = json!({
        "events": args.events, "kills": kills, "outputs_equal": equal,
        "duplicates": duplicates, "missing": missing, "unexpected": unexpected,
        "outputs": clean_out.len(), "incarnations": incarnations, "shards": args.shards,
        "seed": args.seed, "elapsed_s": started.elapsed().as_secs_f64(),
    });
    if args.json {
        outln!("{summary}")?;
    } else {
        say(format!(
            "{} outputs; after {kills} SIGKILLs: {duplicates} duplicated, {missing} missing, {unexpected} unexpected: {}",
            clean_out.len(),
            if equal { "equal to the run without failures" } else { "NOT EQUAL" }
        ));
    }
    if !equal {
        return Err("the outputs after the kills differ from the run without failures".into());
    }
    Ok(())
}
