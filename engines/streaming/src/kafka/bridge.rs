//! The exactly-once Kafka runner: a [`Pipeline`] and its window operator between a
//! [`KafkaSource`] and a transactional [`KafkaSink`], checkpointed with the engine's
//! [`CheckpointStore`] once per epoch, running the protocol of [`crate::kafka`]:
//!
//! 1. `begin_epoch(e)`; events are polled, run through the stages and the windows, and every
//!    output is sent with its [`OutputId`] `(shard, e, seq)`.
//! 2. At the epoch's end the checkpoint of `e` (the window operator's state, the source's
//!    positions, the counters) is made durable in the [`CheckpointStore`].
//! 3. `commit_epoch(e)` commits the transaction with the source's offsets, tagged with `e`,
//!    inside it ([`OffsetCommit::InTransaction`]).
//!
//! An epoch ends after [`KafkaEpochConfig::epoch_events`] input messages, or
//! [`KafkaEpochConfig::epoch_ms`] after its first message, whichever comes first.
//!
//! **Start.** The sink is made first: its `init_transactions` fences the previous incarnation
//! of the shard and settles its open transaction, so the group's committed epoch read next
//! is final. That epoch ([`KafkaSource::committed_epoch`]) decides which checkpoint is
//! restored ([`restore_epoch`]): the newest, `L`, when the group committed `L`; the one
//! before, when the group committed `L - 1` (a crash between checkpoint and commit); anything
//! else is refused ([`RestoreError`]) rather than guessed. The operator is restored, the
//! source sought to the checkpoint's positions, and epochs go on from the restored one plus
//! one. A replayed epoch whose checkpoint is on disk (`L` after restoring `L - 1`) ends
//! exactly where that checkpoint ended, whatever the triggers say now, so its outputs and
//! their ids are those of the first attempt.
//!
//! **End.** A run ends at the end of its input ([`KafkaEpochConfig::max_events`],
//! [`KafkaEpochConfig::idle_timeout_ms`], [`KafkaEpochConfig::until_caught_up`]): every open
//! window fires, and the flushed state is the last epoch's checkpoint, so a later run never
//! emits those results again (a later event of a flushed window opens a new one). A run told
//! to stop ([`KafkaEpochConfig::stop`]) commits its open epoch and keeps its windows open in
//! the checkpoint. On an error the open transaction is aborted (best effort; the next
//! incarnation's sink aborts it anyway) and the error returned: restarting is the recovery.
//!
//! **Shards.** One run is one shard, on the caller's thread, reading every partition its
//! source owns. Several shards are several runs, each with its own partitions
//! ([`KafkaSourceConfig::partitions`]), its own shard number (in [`KafkaSinkConfig::new`],
//! hence its own `transactional.id`) and its own checkpoint directory; each shard's windows
//! then see only its partitions' keys, so producers must partition by key.
//!
//! **Determinism.** A replay reproduces outputs and their ids exactly when the input order
//! is the same, which Kafka guarantees within a partition: with one partition per run, or
//! when only [`OffsetCommit::InTransaction`] on a real broker is relied on (it never shows
//! an aborted attempt, so a replay need not match it). With several partitions in one run,
//! the interleaving of partitions depends on fetch timing.
//!
//! **What the mock cluster can show.** librdkafka's mock does not store offsets committed in
//! a transaction, so after a restart the group has no committed epoch and a restore past
//! epoch 1 is refused ([`RestoreError::GroupOffsetsMissing`]). With
//! [`OffsetCommit::AfterTransaction`] the offsets are committed by the consumer right after
//! the transaction, which the mock stores: the restore decision can then be exercised there,
//! at the price of at-least-once (see [`OffsetCommit`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod config;
mod restore;

pub use config::{
    KafkaEpochConfig, KafkaProgress, KafkaRunReport, OffsetCommit, StopReason, BATCH_EVENTS_MAX,
};
pub use restore::{restore_epoch, RestoreError};

use super::codec::{encode_output, output_key_bytes, OutputId};
use super::sink::{KafkaSink, KafkaSinkConfig, SinkError, TxnErrorKind};
use super::source::{KafkaSource, KafkaSourceConfig, SourceError, StartFrom};
use crate::event::Event;
use crate::exactly_once::checkpoint::{CheckpointError, CheckpointStore, Manifest};
use crate::pipeline::Pipeline;
use crate::window::{Output, SnapshotError, SpecError, WindowOperator};
use restore::{ReplayEnd, ShardState, STATE_MAGIC};

/// How many times a commit that failed with a retriable error is tried in all.
const COMMIT_ATTEMPTS_MAX: u32 = 3;
/// Why a run stopped with an error.
///
/// ```
/// use agentwire_streaming::kafka::bridge::KafkaBridgeError;
/// let e = KafkaBridgeError::Config { setting: "epoch_events", value: 0, why: "must be 1 or more" };
/// assert_eq!(e.to_string(), "epoch_events = 0: must be 1 or more");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum KafkaBridgeError {
    /// The Kafka source.
    #[error("Kafka source: {0}")]
    Source(#[from] SourceError),
    /// The Kafka sink.
    #[error("Kafka sink: {0}")]
    Sink(#[from] SinkError),
    /// Checkpoint files.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The restore decision.
    #[error("cannot restore: {0}")]
    Restore(#[from] RestoreError),
    /// The window spec.
    #[error("window: {0}")]
    Spec(#[from] SpecError),
    /// A checkpoint's window state does not fit the pipeline's window spec.
    #[error("restoring the windows: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A checkpoint that is not this job's, or is not whole.
    #[error("checkpoint epoch {epoch}: {why}")]
    Checkpointed {
        /// The epoch.
        epoch: u64,
        /// What is wrong.
        why: String,
    },
    /// A setting out of range.
    #[error("{setting} = {value}: {why}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: u64,
        /// The range.
        why: &'static str,
    },
}

/// Counters over the job's life, kept in each checkpoint's manifest.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    messages: u64,
    filtered: u64,
    malformed: u64,
}

/// Runs `pipeline` from the Kafka source `source` to the transactional sink `sink`, one
/// transaction per epoch, with each epoch's checkpoint in `store` (see the module docs for
/// the protocol, the restore and the end). `progress` hears of the start, of every commit,
/// and of each catch-up.
///
/// ```no_run
/// use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
/// use agentwire_streaming::kafka::bridge::{run_kafka_epochs, KafkaEpochConfig};
/// use agentwire_streaming::kafka::{KafkaSinkConfig, KafkaSourceConfig};
/// use agentwire_streaming::pipeline::Pipeline;
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1_000_000_000 }));
/// let source = KafkaSourceConfig::new("localhost:9092", "events", "job-1");
/// let sink = KafkaSinkConfig::new("localhost:9092", "results", "job-1", 0);
/// let store = CheckpointStore::open(std::path::Path::new("/var/lib/job-1/checkpoints"))?;
/// let config = KafkaEpochConfig { until_caught_up: true, ..KafkaEpochConfig::default() };
/// let report = run_kafka_epochs(&pipeline, source, sink, &store, &config, &mut |p| eprintln!("{p:?}"))?;
/// println!("{} messages, {} outputs, epoch {:?}", report.messages_in, report.outputs, report.committed_epoch);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_kafka_epochs(
    pipeline: &Pipeline,
    source: KafkaSourceConfig,
    sink: KafkaSinkConfig,
    store: &CheckpointStore,
    config: &KafkaEpochConfig,
    progress: &mut dyn FnMut(&KafkaProgress),
) -> Result<KafkaRunReport, KafkaBridgeError> {
    check_config(config, &sink)?;
    // The window spec is checked before any connection is made.
    let op = WindowOperator::new(pipeline.window().clone())?;
    let topic = source.topic().to_owned();
    let shard = sink.shard();
    // The sink first: its init_transactions fences the shard's previous incarnation and
    // settles the transaction it left open, so the committed epoch read below is final.
    let sink = KafkaSink::new(sink)?;
    let source = KafkaSource::new(source, StartFrom::Committed)?;
    let mut run = Run {
        pipeline,
        config,
        store,
        topic,
        source,
        op,
        out: Emitter {
            sink,
            shard,
            epoch: 0,
            seq: 0,
            key: Vec::new(),
            payload: Vec::new(),
            failed: None,
        },
        totals: Totals::default(),
        batch: Vec::with_capacity(config.batch_events_max),
        report: KafkaRunReport::default(),
    };
    let result = run.run_all(progress);
    if result.is_err() {
        // Best effort: the next incarnation's sink (or the broker's transaction timeout)
        // aborts it anyway.
        let _ = run.out.sink.abort_epoch();
    }
    result?;
    run.report.positions = run.source.positions().clone();
    run.report.windows = run.op.stats();
    Ok(run.report)
}

fn check_config(config: &KafkaEpochConfig, sink: &KafkaSinkConfig) -> Result<(), KafkaBridgeError> {
    let bad = |setting, value, why| {
        Err(KafkaBridgeError::Config {
            setting,
            value,
            why,
        })
    };
    if config.epoch_events == 0 {
        return bad("epoch_events", 0, "must be 1 or more");
    }
    let txn_timeout_ms = sink.transaction_timeout().as_millis() as u64;
    if config.epoch_ms == 0 || config.epoch_ms >= txn_timeout_ms {
        return bad(
            "epoch_ms",
            config.epoch_ms,
            "must be at least 1 and below the sink's transaction timeout \
             (the broker aborts a transaction open longer)",
        );
    }
    if !(1..=BATCH_EVENTS_MAX).contains(&config.batch_events_max) {
        return bad(
            "batch_events_max",
            config.batch_events_max as u64,
            "must be 1 to 65536",
        );
    }
    if config.poll_timeout_ms == 0 {
        return bad("poll_timeout_ms", 0, "must be 1 or more (0 would spin)");
    }
    if config.max_events == Some(0) {
        return bad("max_events", 0, "must be 1 or more");
    }
    if config.idle_timeout_ms == Some(0) {
        return bad("idle_timeout_ms", 0, "must be 1 or more");
    }
    Ok(())
}

/// Outputs of the open epoch, numbered and sent; the first send error is kept for the
/// caller, since the window operator's output callback cannot return one.
struct Emitter {
    sink: KafkaSink,
    shard: u32,
    epoch: u64,
    seq: u64,
    key: Vec<u8>,
    payload: Vec<u8>,
    failed: Option<SinkError>,
}

impl Emitter {
    fn emit(&mut self, output: Output) {
        if self.failed.is_some() {
            return;
        }
        let id = OutputId {
            shard: self.shard,
            epoch: self.epoch,
            seq: self.seq,
        };
        self.key.clear();
        self.payload.clear();
        output_key_bytes(&output, &mut self.key);
        encode_output(&output, id, &mut self.payload);
        match self.sink.send(&self.key, &self.payload) {
            Ok(()) => self.seq += 1,
            Err(e) => self.failed = Some(e),
        }
    }

    fn check(&mut self) -> Result<(), SinkError> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

/// How an epoch ended.
struct EpochEnd {
    /// Every window fired in it (the end of the input).
    finished: bool,
    /// The run ends with it.
    stop: Option<StopReason>,
}

/// One run's state.
struct Run<'a> {
    pipeline: &'a Pipeline,
    config: &'a KafkaEpochConfig,
    store: &'a CheckpointStore,
    topic: String,
    source: KafkaSource,
    op: WindowOperator,
    out: Emitter,
    totals: Totals,
    batch: Vec<Event>,
    report: KafkaRunReport,
}

impl Run<'_> {
    fn run_all(
        &mut self,
        progress: &mut dyn FnMut(&KafkaProgress),
    ) -> Result<(), KafkaBridgeError> {
        let (restored, mut replay) = self.restore()?;
        self.report.restored_epoch = (restored > 0).then_some(restored);
        self.report.committed_epoch = self.report.restored_epoch;
        progress(&KafkaProgress::Started {
            restored_epoch: self.report.restored_epoch,
            group_epoch: self.report.group_epoch,
            positions: self.source.positions().clone(),
            replay_until_messages: replay.map(|r| r.messages_total),
        });
        let mut epoch = restored + 1;
        loop {
            let end = self.run_epoch(epoch, replay.take(), progress)?;
            let outputs = self.out.seq;
            self.checkpoint(epoch, end.finished)?;
            self.commit(epoch)?;
            self.report.committed_epoch = Some(epoch);
            self.report.epochs_committed += 1;
            self.report.outputs += outputs;
            progress(&KafkaProgress::Committed {
                epoch,
                messages_in: self.report.messages_in,
                outputs,
                positions: self.source.positions().clone(),
            });
            if let Some(reason) = end.stop {
                self.report.stopped = Some(reason);
                self.report.windows_flushed = end.finished;
                return Ok(());
            }
            epoch += 1;
        }
    }

    /// Runs epoch `epoch`: reads, processes and sends until one of its triggers or the end of
    /// the input; every window fires at the end of the input.
    ///
    /// The count trigger is checked before the end of the input, and both before each poll:
    /// an input that ends on an epoch's last message flushes its windows in the next epoch
    /// (which takes no message), however the end was learnt, so epochs cut by count fall on
    /// the same messages, and the flushed results in the same epoch, in every run.
    fn run_epoch(
        &mut self,
        epoch: u64,
        replay: Option<ReplayEnd>,
        progress: &mut dyn FnMut(&KafkaProgress),
    ) -> Result<EpochEnd, KafkaBridgeError> {
        self.out.sink.begin_epoch(epoch)?;
        self.out.epoch = epoch;
        self.out.seq = 0;
        let epoch_ms = Duration::from_millis(self.config.epoch_ms);
        let mut epoch_messages = 0u64;
        let mut epoch_started: Option<Instant> = None;
        let mut last_message = Instant::now();
        let mut reported_caught_up = false;
        let end = loop {
            if let Some(r) = replay {
                // A replayed epoch ends where its checkpoint did, and nowhere else.
                if self.totals.messages >= r.messages_total {
                    break EpochEnd {
                        finished: r.finished,
                        stop: r.finished.then_some(StopReason::ReplayedEnd),
                    };
                }
            } else if epoch_messages >= self.config.epoch_events
                || epoch_started.is_some_and(|t| t.elapsed() >= epoch_ms)
            {
                break EpochEnd {
                    finished: false,
                    stop: None,
                };
            } else if let Some(stop) = self.input_ended(last_message) {
                break EpochEnd {
                    finished: stop != StopReason::Stopped,
                    stop: Some(stop),
                };
            }
            let taken = self.poll_and_process(self.batch_size(epoch_messages, replay))?;
            if taken > 0 {
                epoch_messages += taken;
                last_message = Instant::now();
                epoch_started.get_or_insert(last_message);
                reported_caught_up = false;
            }
            if replay.is_none() && self.source.caught_up() && !reported_caught_up {
                self.caught_up(epoch, progress)?;
                reported_caught_up = true;
            }
        };
        if end.finished {
            let out = &mut self.out;
            self.op.finish(&mut |o| out.emit(o));
            self.out.check()?;
        }
        Ok(end)
    }

    /// How many messages the next poll may take (at least one): never past the epoch's
    /// count, the run's `max_events`, or a replay's recorded end.
    fn batch_size(&self, epoch_messages: u64, replay: Option<ReplayEnd>) -> usize {
        let left = match replay {
            Some(r) => r.messages_total - self.totals.messages,
            None => {
                let epoch_left = self.config.epoch_events - epoch_messages;
                let run_left = self
                    .config
                    .max_events
                    .map_or(u64::MAX, |max| max.saturating_sub(self.report.messages_in));
                epoch_left.min(run_left)
            }
        };
        debug_assert!(left > 0, "the epoch or the run should have ended");
        left.min(self.config.batch_events_max as u64) as usize
    }

    /// Polls at most `want` messages and runs their events through the stages and the
    /// windows, sending the outputs; returns the messages taken.
    fn poll_and_process(&mut self, want: usize) -> Result<u64, KafkaBridgeError> {
        let timeout = Duration::from_millis(self.config.poll_timeout_ms);
        let got = self.source.poll_batch(&mut self.batch, want, timeout)?;
        let out = &mut self.out;
        for event in self.batch.iter_mut() {
            if self.pipeline.prepare(event) {
                self.op.push(event, &mut |o| out.emit(o));
            } else {
                self.totals.filtered += 1;
                self.report.events_filtered += 1;
            }
        }
        self.batch.clear();
        self.out.check()?;
        let taken = (got.events + got.malformed) as u64;
        self.totals.messages += taken;
        self.totals.malformed += got.malformed as u64;
        self.report.messages_in += taken;
        self.report.malformed += got.malformed as u64;
        Ok(taken)
    }

    /// Whether the input has ended (or the run was told to stop), and why.
    fn input_ended(&self, last_message: Instant) -> Option<StopReason> {
        let c = self.config;
        if c.max_events
            .is_some_and(|max| self.report.messages_in >= max)
        {
            Some(StopReason::MaxEvents)
        } else if c.until_caught_up && self.source.caught_up() {
            Some(StopReason::CaughtUp)
        } else if c
            .idle_timeout_ms
            .is_some_and(|ms| last_message.elapsed() >= Duration::from_millis(ms))
        {
            Some(StopReason::Idle)
        } else if c.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            // Relaxed: the flag carries no data; a stop seen one poll later is as good.
            Some(StopReason::Stopped)
        } else {
            None
        }
    }

    /// Caught up: the open epoch's records are acknowledged, then reported.
    fn caught_up(
        &mut self,
        epoch: u64,
        progress: &mut dyn FnMut(&KafkaProgress),
    ) -> Result<(), KafkaBridgeError> {
        if self.out.sink.sent_in_epoch() > 0 {
            self.out.sink.flush()?;
        }
        progress(&KafkaProgress::CaughtUp {
            open_epoch: epoch,
            messages_in: self.report.messages_in,
            outputs_sent: self.out.seq,
            positions: self.source.positions().clone(),
        });
        Ok(())
    }

    /// Step 3 of the protocol: epoch `epoch`'s checkpoint, durable before its commit.
    fn checkpoint(&mut self, epoch: u64, finished: bool) -> Result<(), KafkaBridgeError> {
        let operator = self.op.snapshot();
        let source_max_ns = operator.max_event_time_ns;
        let state = ShardState {
            magic: STATE_MAGIC,
            topic: self.topic.clone(),
            positions: self.source.positions().clone(),
            finished,
            operator,
        };
        let bytes = postcard::to_stdvec(&state).expect("a shard state always serialises");
        self.store.write_shard(epoch, 0, &bytes)?;
        self.store.commit(&Manifest {
            epoch,
            shards: 1,
            // Kafka positions are per partition, in the shard state; the manifest's offset
            // counts the input messages over the job's life.
            input_offset: self.totals.messages,
            source_max_ns,
            events_in: self.totals.messages,
            events_filtered: self.totals.filtered,
            records_malformed: self.totals.malformed,
        })?;
        Ok(())
    }

    /// Step 4: commits epoch `epoch`'s transaction with the source's offsets, inside it or
    /// right after it. A retriable failure is tried again, at most [`COMMIT_ATTEMPTS_MAX`]
    /// times in all.
    fn commit(&mut self, epoch: u64) -> Result<(), KafkaBridgeError> {
        let positions = self.source.positions();
        let offsets = match self.config.offset_commit {
            OffsetCommit::InTransaction => Some(self.source.transaction_offsets(positions, epoch)?),
            OffsetCommit::AfterTransaction => None,
        };
        let mut attempt = 1;
        loop {
            match self.out.sink.commit_epoch(epoch, offsets.as_ref()) {
                Err(SinkError::Transaction {
                    kind: TxnErrorKind::Retriable,
                    ..
                }) if attempt < COMMIT_ATTEMPTS_MAX => attempt += 1,
                result => break result?,
            }
        }
        if self.config.offset_commit == OffsetCommit::AfterTransaction {
            self.source.commit_offsets(positions, epoch)?;
        }
        Ok(())
    }
}
