//! `agentwire stream kafka`: a pipeline between Kafka topics, exactly once, through the
//! streaming engine's Kafka runner (`agentwire_streaming::kafka::bridge`): events from the
//! input topic, window results (with their output id) to the output topic, one Kafka
//! transaction per epoch tied to the checkpoint in `--checkpoints`.
//!
//! Built with the tools crate's `kafka` feature (which builds librdkafka); without it the
//! command says so.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

type BoxError = Box<dyn std::error::Error>;

/// Where the source's offsets are committed (`--offset-commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OffsetCommitArg {
    /// Inside each epoch's transaction: exactly-once on a real broker.
    InTransaction,
    /// By the consumer right after each transaction: at-least-once (a crash between the two
    /// repeats an epoch's outputs with the same ids); for clusters that do not store offsets
    /// committed in a transaction, such as librdkafka's mock.
    AfterTransaction,
}

/// What `stream kafka` was asked.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct KafkaArgs {
    /// The cluster's bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: String,
    /// The topic events are read from: one JSON object per message,
    /// {"key": 7 or "name", "event_time_ns": ..., "value": ..., "attributes": {...}}.
    #[arg(long, value_name = "TOPIC")]
    pub input_topic: String,
    /// The topic results are written to: one JSON object per window result, with its output
    /// id (shard, epoch, seq), keyed by the window's key.
    #[arg(long, value_name = "TOPIC")]
    pub output_topic: String,
    /// The consumer group: its committed offsets, tagged with their epoch, say which
    /// checkpoint a restart restores. One group per job.
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The checkpoint directory (created if missing): window state and source offsets, one
    /// checkpoint per epoch. Keep it with the job: a restart restores from it.
    #[arg(long, value_name = "DIR")]
    pub checkpoints: PathBuf,
    /// The pipeline: stages, then windows (the `stream run` format; its [input], [output]
    /// and shards do not apply) [default: one-second tumbling windows per key].
    #[arg(long, value_name = "PIPELINE.toml")]
    pub pipeline: Option<PathBuf>,
    /// The job's name in the producer's transactional.id, which is ID-shard-N: the same
    /// across restarts, so a restart fences the previous process [default: the group].
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// This process's shard number, N in the transactional.id and in output ids (run one
    /// process per shard, each with its own --partitions and --checkpoints).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub shard: u32,
    /// The input partitions this process reads (comma-separated) [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Input messages per epoch (one transaction and one checkpoint each).
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub epoch_events: u64,
    /// The most an epoch lasts from its first message, in ms: results become visible to
    /// read_committed consumers when their epoch commits. Below the producer's
    /// transaction.timeout.ms (60000 unless set with --producer-property).
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub epoch_ms: u64,
    /// Where the input offsets are committed.
    #[arg(long, value_enum, default_value = "in-transaction")]
    pub offset_commit: OffsetCommitArg,
    /// Stop after this many input messages (every window is then flushed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: Option<u64>,
    /// Stop once no message came for this long, in ms (every window is then flushed).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: Option<u64>,
    /// Stop once every input partition is read to its end (every window is then flushed):
    /// process what the topic holds, then exit.
    #[arg(long)]
    pub until_end: bool,
    /// How long each Kafka operation (metadata, transaction steps, offset commits) may block,
    /// in ms.
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// A librdkafka consumer property, e.g. security.protocol=SASL_SSL (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub consumer_property: Vec<(String, String)>,
    /// A librdkafka producer property, e.g. compression.type=lz4 (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub producer_property: Vec<(String, String)>,
    /// Print progress on stderr as JSON lines and a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Exactly once: each epoch (--epoch-events messages, or --epoch-ms from its first message) is
one Kafka transaction. Its results are written inside it; at its end the checkpoint (window
state and input offsets) is written to --checkpoints, then the transaction commits with the
input offsets inside it. A restart (after a crash, a SIGKILL, a deploy) fences the previous
process, reads the epoch the group last committed, restores that epoch's checkpoint, and
replays from its offsets: read_committed consumers of --output-topic see every result once.
Every result carries its output id (shard, epoch, seq), the same when replayed, so readers
that do not read committed can drop repeats by it.

Stopping: SIGTERM or Ctrl-C commits the open epoch and exits, windows kept open in the
checkpoint for the next run. --max-events, --idle-timeout-ms and --until-end end the input:
every open window fires first.

Progress goes to stderr: the restore, a commit line at most once a second, and each time the
input is caught up. The summary (--json: one JSON object on stdout) says what was restored,
read, written and committed.

Example:
  agentwire stream kafka --brokers localhost:9092 --input-topic events \\
      --output-topic results --group job-1 --checkpoints /var/lib/job-1 \\
      --pipeline pipeline.toml";

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `agentwire stream kafka` in a build without the `kafka` feature.
#[cfg(not(feature = "kafka"))]
pub fn kafka(_args: Box<KafkaArgs>) -> Result<(), BoxError> {
    Err(
        "this agentwire was built without Kafka support; build it with \
         `cargo build --release -p agentwire-tools --features kafka`"
            .into(),
    )
}

#[cfg(feature = "kafka")]
pub use with_kafka::kafka;

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::io::Write;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
    use agentwire_streaming::kafka::bridge::{
        run_kafka_epochs, KafkaBridgeError, KafkaEpochConfig, KafkaProgress, KafkaRunReport,
        OffsetCommit,
    };
    use agentwire_streaming::kafka::{
        KafkaSinkConfig, KafkaSourceConfig, PartitionOffsets, SinkError, TxnOp,
    };
    use agentwire_streaming::pipeline::file::PipelineFile;
    use agentwire_streaming::pipeline::Pipeline;
    use serde_json::{json, Value};

    use super::{BoxError, KafkaArgs, OffsetCommitArg};

    /// The pipeline run without `--pipeline`: one-second tumbling windows per key.
    const DEFAULT_PIPELINE: &str = "[window]\nkind = \"tumbling\"\nsize_ms = 1000\n";
    /// Commit lines on stderr at most this often.
    const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
    /// How long a send waits for room in a full producer queue, in ms.
    const QUEUE_FULL_WAIT_MS: u64 = 1_000;

    /// `agentwire stream kafka`.
    pub fn kafka(args: Box<KafkaArgs>) -> Result<(), BoxError> {
        let pipeline = load_pipeline(&args)?;
        let name = args.transactional_id.as_deref().unwrap_or(&args.group);
        let mut source = KafkaSourceConfig::new(&args.brokers, &args.input_topic, &args.group)
            .partitions(args.partitions.iter().copied())
            .timeouts_ms(args.timeout_ms, args.timeout_ms);
        for (k, v) in &args.consumer_property {
            source = source.set(k, v);
        }
        let mut sink = KafkaSinkConfig::new(&args.brokers, &args.output_topic, name, args.shard)
            .timeouts_ms(args.timeout_ms, QUEUE_FULL_WAIT_MS);
        for (k, v) in &args.producer_property {
            // The runner checks --epoch-ms against the transaction timeout it knows of.
            sink = match k.as_str() {
                "transaction.timeout.ms" => {
                    sink.transaction_timeout_ms(v.parse().map_err(|e| {
                        format!("--producer-property transaction.timeout.ms={v}: {e}")
                    })?)
                }
                _ => sink.set(k, v),
            };
        }
        let transactional_id = sink.transactional_id();
        let store = CheckpointStore::open(&args.checkpoints)?;
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, stop.clone())?;
        }
        let config = KafkaEpochConfig {
            epoch_events: args.epoch_events,
            epoch_ms: args.epoch_ms,
            offset_commit: match args.offset_commit {
                OffsetCommitArg::InTransaction => OffsetCommit::InTransaction,
                OffsetCommitArg::AfterTransaction => OffsetCommit::AfterTransaction,
            },
            max_events: args.max_events,
            idle_timeout_ms: args.idle_timeout_ms,
            until_caught_up: args.until_end,
            stop: Some(stop),
            ..KafkaEpochConfig::default()
        };
        let started = Instant::now();
        let mut reporter = Reporter {
            json: args.json,
            last_commit_line: None,
        };
        let report = run_kafka_epochs(&pipeline, source, sink, &store, &config, &mut |p| {
            reporter.progress(p)
        })
        .map_err(|e| explain(e, &args, &transactional_id))?;
        let elapsed_s = started.elapsed().as_secs_f64();
        summary(&args, &transactional_id, &report, elapsed_s)
    }

    /// The run's error, with what the user can do about the common ones.
    fn explain(e: KafkaBridgeError, args: &KafkaArgs, transactional_id: &str) -> String {
        match &e {
            KafkaBridgeError::Sink(SinkError::Transaction {
                op: TxnOp::Init, ..
            }) => format!(
                "could not register transactional.id {transactional_id} with the cluster at {} \
                 within --timeout-ms {}: is a broker reachable there, and does it allow \
                 transactions? ({e})",
                args.brokers, args.timeout_ms
            ),
            KafkaBridgeError::Config {
                setting: "epoch_ms",
                ..
            } => format!("--epoch-ms: {e}"),
            KafkaBridgeError::Restore(_) | KafkaBridgeError::Checkpointed { .. } => format!(
                "{e} (checkpoints {}, group {})",
                args.checkpoints.display(),
                args.group
            ),
            _ => e.to_string(),
        }
    }

    /// The pipeline of `--pipeline`, or the default; one shard only.
    fn load_pipeline(args: &KafkaArgs) -> Result<Pipeline, BoxError> {
        let Some(path) = &args.pipeline else {
            return Ok(
                PipelineFile::parse(DEFAULT_PIPELINE, "the default pipeline")?.to_pipeline()?,
            );
        };
        let file = PipelineFile::load(path)?;
        if file.shards != 1 {
            return Err(format!(
                "{}: shards = {}, but `stream kafka` runs one shard per process: set shards = 1, \
                 or run one process per shard with --shard and --partitions",
                path.display(),
                file.shards
            )
            .into());
        }
        if (file.input.is_some() || file.output.is_some()) && !args.json {
            let _ = writeln!(
                std::io::stderr(),
                "agentwire stream kafka: {}: [input] and [output] do not apply; \
                 reading {} and writing {}",
                path.display(),
                args.input_topic,
                args.output_topic
            );
        }
        Ok(file.to_pipeline()?)
    }

    struct Reporter {
        json: bool,
        last_commit_line: Option<Instant>,
    }

    impl Reporter {
        fn progress(&mut self, p: &KafkaProgress) {
            let line = match p {
                KafkaProgress::Started {
                    restored_epoch,
                    group_epoch,
                    positions,
                    replay_until_messages,
                } => self.line(
                    json!({
                        "progress": "started", "restored_epoch": restored_epoch,
                        "group_epoch": group_epoch, "positions": offsets_json(positions),
                        "replay_until_messages": replay_until_messages,
                    }),
                    || {
                        let from = match restored_epoch {
                            Some(e) => format!("restored epoch {e}"),
                            None => "a fresh start".into(),
                        };
                        let group = match group_epoch {
                            Some(e) => format!("the group had committed epoch {e}"),
                            None => "the group had committed no epoch".into(),
                        };
                        let replay = replay_until_messages
                            .map(|m| {
                                format!(
                                    "; replaying the next epoch to message {m}, \
                                     where its checkpoint ended"
                                )
                            })
                            .unwrap_or_default();
                        format!(
                            "{from} ({group}); reading from {}{replay}",
                            offsets_text(positions),
                        )
                    },
                ),
                KafkaProgress::Committed {
                    epoch,
                    messages_in,
                    outputs,
                    positions,
                } => {
                    if self
                        .last_commit_line
                        .is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL)
                    {
                        return;
                    }
                    self.last_commit_line = Some(Instant::now());
                    self.line(
                        json!({
                            "progress": "committed", "epoch": epoch, "messages_in": messages_in,
                            "outputs": outputs, "positions": offsets_json(positions),
                        }),
                        || {
                            format!(
                                "epoch {epoch} committed ({outputs} results); \
                                 {messages_in} messages read; offsets {}",
                                offsets_text(positions)
                            )
                        },
                    )
                }
                KafkaProgress::CaughtUp {
                    open_epoch,
                    messages_in,
                    outputs_sent,
                    positions,
                } => self.line(
                    json!({
                        "progress": "caught_up", "open_epoch": open_epoch,
                        "messages_in": messages_in, "outputs_sent": outputs_sent,
                        "positions": offsets_json(positions),
                    }),
                    || {
                        format!(
                            "caught up at {} after {messages_in} messages; \
                             epoch {open_epoch} open with {outputs_sent} results sent",
                            offsets_text(positions)
                        )
                    },
                ),
            };
            // Not eprintln!: a closed stderr must not stop the job.
            let _ = writeln!(std::io::stderr(), "{line}");
        }

        fn line(&self, value: Value, text: impl FnOnce() -> String) -> String {
            if self.json {
                value.to_string()
            } else {
                format!("agentwire stream kafka: {}", text())
            }
        }
    }

    fn offsets_json(offsets: &PartitionOffsets) -> Value {
        offsets
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    fn offsets_text(offsets: &PartitionOffsets) -> String {
        if offsets.is_empty() {
            return "the group's offsets (each partition's start if none)".into();
        }
        let parts: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        format!("partition:offset {}", parts.join(" "))
    }

    fn summary(
        args: &KafkaArgs,
        transactional_id: &str,
        r: &KafkaRunReport,
        elapsed_s: f64,
    ) -> Result<(), BoxError> {
        let stopped = r.stopped.map(|s| s.to_string());
        if args.json {
            outln!(
                "{}",
                json!({
                    "brokers": args.brokers, "input_topic": args.input_topic,
                    "output_topic": args.output_topic, "group": args.group,
                    "transactional_id": transactional_id, "checkpoints": args.checkpoints,
                    "restored_epoch": r.restored_epoch, "group_epoch": r.group_epoch,
                    "committed_epoch": r.committed_epoch, "epochs_committed": r.epochs_committed,
                    "messages_in": r.messages_in, "events_filtered": r.events_filtered,
                    "malformed": r.malformed, "outputs": r.outputs, "stopped": stopped,
                    "windows_flushed": r.windows_flushed, "positions": offsets_json(&r.positions),
                    "windows_fired": r.windows.windows_fired, "late_firings": r.windows.late_firings,
                    "late_events_dropped": r.windows.late_events_dropped,
                    "elapsed_s": elapsed_s,
                    "messages_per_s": r.messages_in as f64 / elapsed_s.max(1e-9),
                })
            )?;
            return Ok(());
        }
        let _ = writeln!(
            std::io::stderr(),
            "agentwire stream kafka: done ({}): {} messages ({} malformed, {} filtered) -> \
             {} results in {} epochs (last committed: {}) in {elapsed_s:.3} s; offsets {}{}",
            stopped.as_deref().unwrap_or("stopped"),
            r.messages_in,
            r.malformed,
            r.events_filtered,
            r.outputs,
            r.epochs_committed,
            r.committed_epoch.map_or("none".into(), |e| e.to_string()),
            offsets_text(&r.positions),
            if r.windows_flushed {
                "; every window flushed"
            } else {
                "; open windows kept in the checkpoint"
            },
        );
        Ok(())
    }
}
