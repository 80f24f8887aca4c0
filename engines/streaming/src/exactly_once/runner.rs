//! The exactly-once run: a pipeline over one partition of the durable log, sharded by key,
//! with aligned checkpoints every epoch and a de-duplicating sink.
//!
//! Threads: a feeder reads the log in rounds of [`EpochConfig::round_records`] records,
//! decodes, runs the stages and splits events by key; one thread per shard owns its window
//! operator; the caller's thread is the coordinator (sink writes, commits, progress).
//!
//! After every [`EpochConfig::epoch_rounds`] rounds the feeder sends a barrier for epoch
//! `e` to every shard, behind the round. A shard that meets the barrier has taken in
//! exactly the input up to it: it writes its snapshot for `e` and acknowledges, and its
//! outputs from then on belong to epoch `e + 1`, numbered from 0. The coordinator commits
//! `e` (sink synced, then the manifest with the input offset written) once every shard has
//! acknowledged; the acknowledgements travel behind each shard's outputs, so every output of
//! epochs up to `e` is in the sink by then.
//!
//! At the end of the input every shard flushes its open windows and checkpoints the flushed
//! state as the last epoch, so a restart, or more input appended later, never emits those
//! results again (a late event for a flushed window opens a new one).
//!
//! A restart restores the newest committed epoch and reads on from its offset. Rounds are
//! counted in log records from the start of the log, so the rounds, the watermark broadcast
//! with them, and therefore every output and its (shard, epoch, sequence) come out as in a
//! run that never stopped; the sink skips the ones it already holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::checkpoint::{CheckpointError, CheckpointStore, Manifest};
use super::sink::{DedupSink, OutputId, SinkError};
use crate::codec;
use crate::event::{time_in_range, Event};
use crate::log::{Log, LogError};
use crate::output_json::output_json;
use crate::pipeline::sharded::{shard_of, SHARDS_MAX};
use crate::pipeline::Pipeline;
use crate::window::{
    OperatorSnapshot, Output, SnapshotError, SpecError, WindowOperator, WindowStats,
};

/// Rounds queued per shard.
const SHARD_QUEUE_MAX: usize = 8;
/// Messages queued towards the coordinator.
const COORDINATOR_QUEUE_MAX: usize = 4_096;
/// The most records per round.
pub const ROUND_RECORDS_MAX: usize = 1 << 20;

/// How a run is cut into rounds and epochs.
///
/// ```
/// use agentwire_streaming::exactly_once::runner::EpochConfig;
/// let c = EpochConfig::default();
/// assert_eq!((c.shards, c.round_records, c.epoch_rounds), (1, 1024, 8));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochConfig {
    /// Shard threads (1 to 256; a restore with another count moves the keys' state).
    pub shards: usize,
    /// Log records per round (the watermark reaches every shard once per round).
    pub round_records: usize,
    /// Rounds per epoch (a checkpoint every `round_records * epoch_rounds` records).
    pub epoch_rounds: usize,
    /// The log partition read.
    pub partition: u32,
    /// Stop cleanly once this epoch is committed, without the end-of-input results (a
    /// planned stop, e.g. before a restart with another shard count).
    pub stop_after_epoch: Option<u64>,
}

impl Default for EpochConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            round_records: 1_024,
            epoch_rounds: 8,
            partition: 0,
            stop_after_epoch: None,
        }
    }
}

/// How far a run is, reported after each round and each commit.
///
/// ```
/// use agentwire_streaming::exactly_once::runner::Progress;
/// let p = Progress { input_offset: 10, committed_epoch: 0 };
/// assert_eq!(p.input_offset, 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The next log offset the feeder reads.
    pub input_offset: u64,
    /// The newest committed epoch (0: none yet).
    pub committed_epoch: u64,
}

/// What a run did.
///
/// ```
/// use agentwire_streaming::exactly_once::runner::RunReport;
/// assert_eq!(RunReport::default().outputs_written, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The epoch restored at the start, if any.
    pub restored_epoch: Option<u64>,
    /// The newest epoch committed (0: none).
    pub committed_epoch: u64,
    /// The log offset reached.
    pub input_offset: u64,
    /// Records read, over the whole history of the run (restored counts included).
    pub events_in: u64,
    /// Of them, dropped by a filter.
    pub events_filtered: u64,
    /// Of them, records that did not decode (counted, skipped).
    pub records_malformed: u64,
    /// Outputs this run wrote to the sink.
    pub outputs_written: u64,
    /// Outputs this run found already in the sink (replayed after a restore).
    pub outputs_skipped: u64,
    /// True when the input ended and the end-of-input results were emitted.
    pub finished: bool,
    /// The shards' window counters added up.
    pub windows: WindowStats,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExactlyOnceError {
    /// Checkpoint files.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The sink.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The input log.
    #[error("input log: {0}")]
    Log(#[from] LogError),
    /// A restored snapshot.
    #[error("restoring: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The window spec.
    #[error("window: {0}")]
    Spec(#[from] SpecError),
    /// A setting out of range.
    #[error("{setting} = {value}: {why}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: usize,
        /// The range.
        why: &'static str,
    },
    /// A restore with another shard count while the sink holds outputs past the checkpoint
    /// (their ids would not match the new shards' and could be written twice).
    #[error("the checkpoint has {checkpoint} shards and {now} were asked, but the sink holds outputs past epoch {epoch}: run once more with {checkpoint} shards (or stop with stop_after_epoch) before changing the count")]
    Rescale {
        /// Shards in the checkpoint.
        checkpoint: usize,
        /// Shards asked.
        now: usize,
        /// The committed epoch.
        epoch: u64,
    },
    /// A stage or a shard panicked.
    #[error("a pipeline stage panicked on the {thread} thread")]
    Panicked {
        /// Which thread.
        thread: String,
    },
}

enum ToShard {
    Round {
        events: Vec<Event>,
        source_max_ns: Option<i64>,
    },
    Barrier {
        epoch: u64,
    },
    /// The end of the input: flush every window, then checkpoint as a barrier would.
    Finish {
        epoch: u64,
    },
    Stop,
}

enum ToCoordinator {
    Output {
        shard: usize,
        id: OutputId,
        output: Output,
    },
    Checkpointed {
        epoch: u64,
        result: Result<(), CheckpointError>,
    },
    EpochReady(Manifest),
    RoundRead {
        input_offset: u64,
    },
}

/// Where the feeder starts.
struct Resume {
    epoch: u64,
    manifest: Manifest,
}

/// Runs `pipeline` over `config.partition` of `log`, from the newest checkpoint in `store`
/// if there is one, writing outputs to `sink` exactly once.
///
/// ```
/// use agentwire_streaming::codec::encode;
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::exactly_once::{checkpoint::CheckpointStore, runner::*, sink::DedupSink};
/// use agentwire_streaming::log::{Log, LogConfig};
/// use agentwire_streaming::pipeline::Pipeline;
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let dir = tempfile::tempdir().unwrap();
/// let (mut log, _) = Log::open(LogConfig::new(dir.path().join("log"))).unwrap();
/// let mut buf = Vec::new();
/// let records: Vec<Vec<u8>> = (0..100).map(|i| { buf.clear(); encode(&Event::new(Key::Id(i % 3), i as i64, 1.0), &mut buf); buf.clone() }).collect();
/// let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
/// log.append_batch(0, &refs).unwrap();
/// let store = CheckpointStore::open(&dir.path().join("ckpt")).unwrap();
/// let (mut sink, _) = DedupSink::open(&dir.path().join("out.jsonl")).unwrap();
/// let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }));
/// let config = EpochConfig { shards: 2, round_records: 16, epoch_rounds: 2, ..EpochConfig::default() };
/// let report = run_epochs(&pipeline, &mut log, &store, &mut sink, &config, &mut |_| {}).unwrap();
/// assert!(report.finished);
/// assert_eq!((report.events_in, report.outputs_written), (100, 30)); // 3 keys x 10 windows
/// assert_eq!(report.committed_epoch, 4); // 100 records / (16 x 2), the last one partial
/// ```
pub fn run_epochs(
    pipeline: &Pipeline,
    log: &mut Log,
    store: &CheckpointStore,
    sink: &mut DedupSink,
    config: &EpochConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, ExactlyOnceError> {
    check_config(config)?;
    let shards = config.shards;
    let (operators, resume) = restore(pipeline, log, store, sink, config)?;
    let abort = AtomicBool::new(false);
    let mut report = RunReport {
        restored_epoch: (resume.epoch > 0).then_some(resume.epoch),
        committed_epoch: resume.epoch,
        ..RunReport::default()
    };
    let written_before = sink.written();
    let skipped_before = sink.skipped();
    let quantiles = pipeline.window().quantiles.clone();
    let outcome = std::thread::scope(|scope| -> Result<(), ExactlyOnceError> {
        let (to_coordinator, from_shards) =
            mpsc::sync_channel::<ToCoordinator>(COORDINATOR_QUEUE_MAX);
        let mut to_shards = Vec::with_capacity(shards);
        let mut shard_threads = Vec::with_capacity(shards);
        for (shard, op) in operators.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<ToShard>(SHARD_QUEUE_MAX);
            to_shards.push(tx);
            let out = to_coordinator.clone();
            let first_epoch = resume.epoch + 1;
            let thread = std::thread::Builder::new()
                .name(format!("aw-stream-{shard}"))
                .spawn_scoped(scope, move || {
                    shard_loop(shard, op, first_epoch, rx, out, store)
                })
                .expect("spawn a shard thread");
            shard_threads.push(thread);
        }
        let feeder_out = to_coordinator.clone();
        drop(to_coordinator);
        let abort = &abort;
        let feeder = std::thread::Builder::new()
            .name("aw-stream-feed".into())
            .spawn_scoped(scope, move || {
                feed(pipeline, log, config, resume, to_shards, feeder_out, abort)
            })
            .expect("spawn the feeder thread");
        let coordinated = coordinate(
            from_shards,
            sink,
            store,
            shards,
            &quantiles,
            progress,
            &mut report,
        );
        if coordinated.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let fed = feeder.join().map_err(|_| ExactlyOnceError::Panicked {
            thread: "feeder".into(),
        })?;
        for (shard, thread) in shard_threads.into_iter().enumerate() {
            let stats = thread.join().map_err(|_| ExactlyOnceError::Panicked {
                thread: format!("shard {shard}"),
            })?;
            report.windows.add(&stats);
        }
        coordinated?;
        let fed = fed?;
        report.input_offset = fed.input_offset;
        report.events_in = fed.events_in;
        report.events_filtered = fed.events_filtered;
        report.records_malformed = fed.records_malformed;
        report.finished = fed.finished;
        Ok(())
    });
    outcome?;
    sink.sync()?;
    report.outputs_written = sink.written() - written_before;
    report.outputs_skipped = sink.skipped() - skipped_before;
    Ok(report)
}

fn check_config(config: &EpochConfig) -> Result<(), ExactlyOnceError> {
    let bad = |setting, value, why| {
        Err(ExactlyOnceError::Config {
            setting,
            value,
            why,
        })
    };
    if !(1..=SHARDS_MAX).contains(&config.shards) {
        return bad("shards", config.shards, "must be 1 to 256");
    }
    if !(1..=ROUND_RECORDS_MAX).contains(&config.round_records) {
        return bad(
            "round_records",
            config.round_records,
            "must be 1 to 1048576",
        );
    }
    if config.epoch_rounds == 0 {
        return bad("epoch_rounds", 0, "must be 1 or more");
    }
    Ok(())
}

/// The operators and where to start: the newest checkpoint's, or fresh.
fn restore(
    pipeline: &Pipeline,
    log: &Log,
    store: &CheckpointStore,
    sink: &DedupSink,
    config: &EpochConfig,
) -> Result<(Vec<WindowOperator>, Resume), ExactlyOnceError> {
    let spec = pipeline.window();
    let Some((manifest, states)) = store.latest()? else {
        let input_offset = log.start_offset(config.partition)?;
        let operators = (0..config.shards)
            .map(|_| WindowOperator::new(spec.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = Manifest {
            epoch: 0,
            shards: config.shards as u32,
            input_offset,
            source_max_ns: None,
            events_in: 0,
            events_filtered: 0,
            records_malformed: 0,
        };
        return Ok((operators, Resume { epoch: 0, manifest }));
    };
    let snapshots = states
        .iter()
        .map(|bytes| OperatorSnapshot::from_bytes(bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let snapshots = if snapshots.len() == config.shards {
        snapshots
    } else {
        if sink.holds_past(manifest.epoch) {
            return Err(ExactlyOnceError::Rescale {
                checkpoint: snapshots.len(),
                now: config.shards,
                epoch: manifest.epoch,
            });
        }
        OperatorSnapshot::reshard(snapshots, config.shards, shard_of)
    };
    let operators = snapshots
        .into_iter()
        .map(|s| WindowOperator::restore(spec.clone(), s))
        .collect::<Result<Vec<_>, _>>()?;
    let epoch = manifest.epoch;
    Ok((operators, Resume { epoch, manifest }))
}

fn shard_loop(
    shard: usize,
    mut op: WindowOperator,
    first_epoch: u64,
    rx: mpsc::Receiver<ToShard>,
    out: mpsc::SyncSender<ToCoordinator>,
    store: &CheckpointStore,
) -> WindowStats {
    let mut epoch = first_epoch;
    let mut seq = 0u64;
    let emit = |epoch: u64, seq: &mut u64, output: Output| {
        let id = (epoch, *seq);
        *seq += 1;
        // A send fails only once the coordinator stopped (an error it reports).
        let _ = out.send(ToCoordinator::Output { shard, id, output });
    };
    for message in rx {
        match message {
            ToShard::Round {
                events,
                source_max_ns,
            } => {
                for event in &events {
                    let _ = op.push_held(event, &mut |o| emit(epoch, &mut seq, o));
                }
                if let Some(t) = source_max_ns {
                    op.observe_time(t, &mut |o| emit(epoch, &mut seq, o));
                }
            }
            ToShard::Barrier { epoch: barrier } | ToShard::Finish { epoch: barrier } => {
                debug_assert_eq!(barrier, epoch);
                let finish = matches!(message, ToShard::Finish { .. });
                if finish {
                    op.finish(&mut |o| emit(epoch, &mut seq, o));
                }
                let bytes = op.snapshot().to_bytes();
                let result = store.write_shard(barrier, shard as u32, &bytes);
                let _ = out.send(ToCoordinator::Checkpointed {
                    epoch: barrier,
                    result,
                });
                if finish {
                    break;
                }
                epoch = barrier + 1;
                seq = 0;
            }
            ToShard::Stop => break,
        }
    }
    op.stats()
}

/// What the feeder read.
struct Fed {
    input_offset: u64,
    events_in: u64,
    events_filtered: u64,
    records_malformed: u64,
    finished: bool,
}

fn feed(
    pipeline: &Pipeline,
    log: &mut Log,
    config: &EpochConfig,
    resume: Resume,
    to_shards: Vec<mpsc::SyncSender<ToShard>>,
    out: mpsc::SyncSender<ToCoordinator>,
    abort: &AtomicBool,
) -> Result<Fed, LogError> {
    let shards = to_shards.len();
    let m = resume.manifest;
    let mut fed = Fed {
        input_offset: m.input_offset,
        events_in: m.events_in,
        events_filtered: m.events_filtered,
        records_malformed: m.records_malformed,
        finished: false,
    };
    let mut source_max_ns = m.source_max_ns;
    let mut epoch = resume.epoch + 1;
    let mut rounds_in_epoch = 0usize;
    let mut parts: Vec<Vec<Event>> = (0..shards).map(|_| Vec::new()).collect();
    let send_all = |message: &dyn Fn() -> ToShard| {
        // A shard that is gone has panicked; its join reports it.
        to_shards.iter().all(|tx| tx.send(message()).is_ok())
    };
    loop {
        if abort.load(Ordering::Relaxed) {
            send_all(&|| ToShard::Stop);
            return Ok(fed);
        }
        let mut records = 0usize;
        while records < config.round_records {
            let outcome = log.read(
                config.partition,
                fed.input_offset,
                config.round_records - records,
                &mut |_, _, payload| {
                    fed.events_in += 1;
                    let Ok(mut event) = codec::decode(payload) else {
                        fed.records_malformed += 1;
                        return;
                    };
                    if !pipeline.prepare(&mut event) {
                        fed.events_filtered += 1;
                        return;
                    }
                    let t = event.event_time_ns;
                    // Refused by its shard, and must not move everyone's watermark.
                    if time_in_range(t) {
                        source_max_ns = Some(source_max_ns.map_or(t, |m: i64| m.max(t)));
                    }
                    parts[shard_of(&event.key, shards)].push(event);
                },
            )?;
            if outcome.records_visited == 0 {
                break;
            }
            records += outcome.records_visited;
            fed.input_offset = outcome.next_offset;
        }
        let end = records < config.round_records;
        if records > 0 {
            for (tx, part) in to_shards.iter().zip(parts.iter_mut()) {
                let events = std::mem::take(part);
                let _ = tx.send(ToShard::Round {
                    events,
                    source_max_ns,
                });
            }
            let input_offset = fed.input_offset;
            let _ = out.send(ToCoordinator::RoundRead { input_offset });
            rounds_in_epoch += 1;
        }
        let manifest = |fed: &Fed, epoch| {
            ToCoordinator::EpochReady(Manifest {
                epoch,
                shards: shards as u32,
                input_offset: fed.input_offset,
                source_max_ns,
                events_in: fed.events_in,
                events_filtered: fed.events_filtered,
                records_malformed: fed.records_malformed,
            })
        };
        if end {
            // The windows still open are flushed and the flushed state is checkpointed, so
            // a restart (or more input later) never emits them again.
            send_all(&|| ToShard::Finish { epoch });
            let _ = out.send(manifest(&fed, epoch));
            fed.finished = true;
            return Ok(fed);
        }
        if rounds_in_epoch == config.epoch_rounds {
            send_all(&|| ToShard::Barrier { epoch });
            let _ = out.send(manifest(&fed, epoch));
            if config.stop_after_epoch == Some(epoch) {
                send_all(&|| ToShard::Stop);
                return Ok(fed);
            }
            epoch += 1;
            rounds_in_epoch = 0;
        }
    }
}

/// The coordinator: writes outputs, commits epochs once every shard has checkpointed them.
fn coordinate(
    from_shards: mpsc::Receiver<ToCoordinator>,
    sink: &mut DedupSink,
    store: &CheckpointStore,
    shards: usize,
    quantiles: &[f64],
    progress: &mut dyn FnMut(Progress),
    report: &mut RunReport,
) -> Result<(), ExactlyOnceError> {
    let mut ready: BTreeMap<u64, Manifest> = BTreeMap::new();
    let mut acks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut json = String::new();
    for message in from_shards {
        match message {
            ToCoordinator::Output { shard, id, output } => {
                json.clear();
                use std::fmt::Write;
                let _ = write!(json, "{}", output_json(&output, quantiles));
                sink.write(shard, id, &json)?;
            }
            ToCoordinator::Checkpointed { epoch, result } => {
                result?;
                *acks.entry(epoch).or_default() += 1;
            }
            ToCoordinator::EpochReady(manifest) => {
                ready.insert(manifest.epoch, manifest);
            }
            ToCoordinator::RoundRead { input_offset } => progress(Progress {
                input_offset,
                committed_epoch: report.committed_epoch,
            }),
        }
        while let Some((&epoch, manifest)) = ready.first_key_value() {
            if acks.get(&epoch).copied().unwrap_or(0) < shards {
                break;
            }
            // Outputs first, then the manifest: a committed epoch's outputs are durable.
            sink.sync()?;
            store.commit(manifest)?;
            let input_offset = manifest.input_offset;
            report.committed_epoch = epoch;
            ready.remove(&epoch);
            acks.remove(&epoch);
            progress(Progress {
                input_offset,
                committed_epoch: epoch,
            });
        }
    }
    Ok(())
}
