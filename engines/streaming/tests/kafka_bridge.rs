//! The exactly-once Kafka runner (`kafka::bridge`) against librdkafka's mock cluster: a clean
//! run's outputs against a reference run of the same pipeline, the restore decided by the
//! consumer group's committed epoch, a planned stop and its continuation, and the refusals.
//!
//! What the mock can and cannot show (see `agentwire_streaming::kafka`): it does not store
//! offsets committed inside a transaction, so every test that restarts a run commits the
//! offsets with the consumer after the transaction (`OffsetCommit::AfterTransaction`), which
//! the mock stores; with them in the transaction, a restart on the mock is refused, and a
//! test pins that. It writes no transaction markers, so a reader sees the records of aborted
//! transactions; the SIGKILL test is `tools/tests/stream_kafka.rs`, through the CLI.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
use agentwire_streaming::kafka::bridge::{
    run_kafka_epochs, KafkaBridgeError, KafkaEpochConfig, KafkaProgress, KafkaRunReport,
    OffsetCommit, RestoreError, StopReason,
};
use agentwire_streaming::kafka::testing::{split_repeats, MockKafka, WrittenOutput};
use agentwire_streaming::kafka::{
    decode_event, encode_event, encode_output, output_key_bytes, KafkaSinkConfig, KafkaSource,
    KafkaSourceConfig, OutputId, PartitionOffsets, StartFrom,
};
use agentwire_streaming::pipeline::Pipeline;
use agentwire_streaming::window::{Output, WindowKind, WindowOperator, WindowSpec};

/// A watchdog on every wait for the mock cluster, never a synchronisation.
const WATCHDOG: Duration = Duration::from_secs(30);
/// Input messages per epoch.
const EPOCH_EVENTS: u64 = 100;
/// Far beyond any test's run: epochs are cut by count only, so they fall on the same
/// messages in every run.
const EPOCH_MS: u64 = 50_000;
const MS: i64 = 1_000_000;

/// Message `i` of the input: an event of key `i % 5` at about `i` ms (up to 1.4 ms out of
/// order), value `i % 17` (0 is filtered out); every 150th is 40 ms late (a late event on the
/// side output); every 97th is not JSON, and every 211th has no payload (both malformed).
fn message(i: usize) -> Option<Vec<u8>> {
    if i % 97 == 50 {
        return Some(b"not an event".to_vec());
    }
    if i % 211 == 100 {
        return None;
    }
    let mut t = i as i64 * MS - (i as i64 % 3) * 700_000;
    if i % 150 == 75 {
        t -= 40 * MS;
    }
    let mut buf = Vec::new();
    let event = Event::new(Key::Id(i as u64 % 5), t, (i % 17) as f64);
    encode_event(&event, &mut buf).unwrap();
    Some(buf)
}

fn messages(range: std::ops::Range<usize>) -> Vec<Option<Vec<u8>>> {
    range.map(message).collect()
}

fn spec() -> WindowSpec {
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 * MS });
    spec.out_of_orderness_ns = 2 * MS;
    spec.quantiles = vec![0.5];
    spec.late_side_output = true;
    spec
}

fn pipeline() -> Pipeline {
    Pipeline::new(spec()).filter(|e| e.value >= 1.0)
}

/// One output as written: its id, Kafka key and payload.
type Out = WrittenOutput;

/// What the runner must write for `input` read from the start in one run: one operator over
/// the events in order, message `i`'s outputs in epoch `i / EPOCH_EVENTS + 1`, the flushed
/// windows in epoch `len / EPOCH_EVENTS + 1` (the epoch after the last full one when the
/// input ends on an epoch's last message), numbered from 0 in each epoch.
fn reference(input: &[Option<Vec<u8>>]) -> Vec<Out> {
    let pipeline = pipeline();
    let mut op = WindowOperator::new(spec()).unwrap();
    let mut outputs: Vec<(u64, Output)> = Vec::new();
    for (i, payload) in input.iter().enumerate() {
        let epoch = i as u64 / EPOCH_EVENTS + 1;
        if let Ok(mut event) = decode_event(payload.as_deref()) {
            if pipeline.prepare(&mut event) {
                op.push(&event, &mut |o| outputs.push((epoch, o)));
            }
        }
    }
    let last = input.len() as u64 / EPOCH_EVENTS + 1;
    op.finish(&mut |o| outputs.push((last, o)));
    let mut seqs: BTreeMap<u64, u64> = BTreeMap::new();
    outputs
        .into_iter()
        .map(|(epoch, output)| {
            let seq = seqs.entry(epoch).or_default();
            let id = OutputId {
                shard: 0,
                epoch,
                seq: *seq,
            };
            *seq += 1;
            let (mut key, mut payload) = (Vec::new(), Vec::new());
            output_key_bytes(&output, &mut key);
            encode_output(&output, id, &mut payload);
            Out { id, key, payload }
        })
        .collect()
}

/// Every record of `topic` as an output, sorted by id (repeats kept).
fn outputs(kafka: &MockKafka, topic: &str) -> Vec<Out> {
    kafka.read_outputs(topic, WATCHDOG).unwrap()
}

/// `outs` without repeats, and the repeats; every repeat must be byte for byte the output
/// it repeats (a replay reproduces an output exactly).
fn dedup(outs: Vec<Out>) -> (Vec<Out>, Vec<Out>) {
    split_repeats(outs).unwrap_or_else(|id| panic!("a repeat of {id} differs"))
}

fn produce(kafka: &MockKafka, topic: &str, input: &[Option<Vec<u8>>]) {
    let records: Vec<(i32, Option<&[u8]>)> = input.iter().map(|p| (0, p.as_deref())).collect();
    kafka.produce(topic, &records, WATCHDOG).unwrap();
}

/// The input topic `events` (one partition: a replay reads it in the same order) and the
/// output topic `results` (two partitions, keyed by window key).
fn cluster(input: &[Option<Vec<u8>>]) -> MockKafka {
    let kafka = MockKafka::new(&[("events", 1), ("results", 2)]).unwrap();
    produce(&kafka, "events", input);
    kafka
}

struct Job<'a> {
    kafka: &'a MockKafka,
    store: CheckpointStore,
    offset_commit: OffsetCommit,
    group: &'static str,
}

impl<'a> Job<'a> {
    fn new(kafka: &'a MockKafka, dir: &std::path::Path, offset_commit: OffsetCommit) -> Self {
        Self {
            kafka,
            store: CheckpointStore::open(&dir.join("checkpoints")).unwrap(),
            offset_commit,
            group: "job",
        }
    }

    fn config(&self) -> KafkaEpochConfig {
        KafkaEpochConfig {
            epoch_events: EPOCH_EVENTS,
            epoch_ms: EPOCH_MS,
            offset_commit: self.offset_commit,
            until_caught_up: true,
            ..KafkaEpochConfig::default()
        }
    }

    fn source(&self, topic: &str) -> KafkaSourceConfig {
        KafkaSourceConfig::new(self.kafka.bootstrap_servers(), topic, self.group)
    }

    fn run_with(
        &self,
        topic: &str,
        config: &KafkaEpochConfig,
        progress: &mut dyn FnMut(&KafkaProgress),
    ) -> Result<KafkaRunReport, KafkaBridgeError> {
        let sink = KafkaSinkConfig::new(self.kafka.bootstrap_servers(), "results", "job", 0);
        run_kafka_epochs(
            &pipeline(),
            self.source(topic),
            sink,
            &self.store,
            config,
            progress,
        )
    }

    fn run(&self) -> Result<KafkaRunReport, KafkaBridgeError> {
        self.run_with("events", &self.config(), &mut |_| {})
    }

    /// Commits `offsets` for the job's group, tagged `epoch`, as a run would have.
    fn commit_group(&self, offsets: PartitionOffsets, epoch: u64) {
        let source = KafkaSource::new(self.source("events"), StartFrom::Committed).unwrap();
        source.commit_offsets(&offsets, epoch).unwrap();
        assert_eq!(source.committed_epoch().unwrap(), Some(epoch));
    }
}

fn committed_epochs(progress: &[KafkaProgress]) -> Vec<u64> {
    progress
        .iter()
        .filter_map(|p| match p {
            KafkaProgress::Committed { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clean_run_writes_each_output_once_with_the_reference_results_and_ids() {
    // 1000 messages: ten full epochs, and the windows flushed in an eleventh that takes none.
    let input = messages(0..1_000);
    let expected = reference(&input);
    assert!(expected
        .iter()
        .any(|o| o.payload.starts_with(b"{\"shard\":0,\"epoch\":")
            && o.payload.windows(10).any(|w| w == b"late_event")));
    let malformed = input
        .iter()
        .filter(|p| decode_event(p.as_deref()).is_err())
        .count() as u64;
    for (offset_commit, end) in [
        (OffsetCommit::InTransaction, "caught up"),
        (OffsetCommit::AfterTransaction, "max events"),
    ] {
        let kafka = cluster(&input);
        let dir = tempfile::tempdir().unwrap();
        let job = Job::new(&kafka, dir.path(), offset_commit);
        let mut config = job.config();
        if end == "max events" {
            config.until_caught_up = false;
            config.max_events = Some(input.len() as u64);
        }
        let mut progress = Vec::new();
        let report = job
            .run_with("events", &config, &mut |p| progress.push(p.clone()))
            .unwrap();

        assert_eq!(outputs(&kafka, "results"), expected, "{offset_commit:?}");
        assert_eq!(report.stopped.map(|s| s.to_string()).as_deref(), Some(end));
        assert_eq!(
            (
                report.restored_epoch,
                report.group_epoch,
                report.committed_epoch
            ),
            (None, None, Some(11))
        );
        assert_eq!(
            (
                report.epochs_committed,
                report.messages_in,
                report.malformed
            ),
            (11, 1_000, malformed)
        );
        assert_eq!(report.outputs, expected.len() as u64);
        assert!(report.windows_flushed);
        assert_eq!(report.positions, PartitionOffsets::from([(0, 1_000)]));
        assert!(matches!(
            progress[0],
            KafkaProgress::Started {
                restored_epoch: None,
                ..
            }
        ));
        assert_eq!(committed_epochs(&progress), (1..=11).collect::<Vec<_>>());
        let (manifest, _) = job.store.latest().unwrap().unwrap();
        assert_eq!(
            (
                manifest.epoch,
                manifest.events_in,
                manifest.records_malformed
            ),
            (11, 1_000, malformed)
        );
    }
}

#[test]
fn the_groups_committed_epoch_decides_which_checkpoint_is_restored() {
    // 950 messages: nine full epochs, then epoch 10 with 50 and the flushed windows.
    let input = messages(0..950);
    let expected = reference(&input);
    let kafka = cluster(&input);
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(&kafka, dir.path(), OffsetCommit::AfterTransaction);
    let first = job.run().unwrap();
    assert_eq!(
        (first.committed_epoch, first.stopped),
        (Some(10), Some(StopReason::CaughtUp))
    );
    assert_eq!(outputs(&kafka, "results"), expected);

    // A crash between checkpoint 10 and its commit: the group still holds epoch 9. (Its
    // offsets say 0 here, not 900, to show that the source starts where checkpoint 9 says:
    // the group's commit only tells which epoch committed.)
    job.commit_group(PartitionOffsets::from([(0, 0)]), 9);
    // Epoch 10 replays to the end its checkpoint recorded, whatever this run's end says (20
    // messages), flushes as it did, and the run ends there, as the first did.
    let config = KafkaEpochConfig {
        until_caught_up: false,
        max_events: Some(20),
        ..job.config()
    };
    let replay = job.run_with("events", &config, &mut |_| {}).unwrap();
    assert_eq!(
        (replay.group_epoch, replay.restored_epoch),
        (Some(9), Some(9))
    );
    assert_eq!((replay.messages_in, replay.epochs_committed), (50, 1));
    assert_eq!(
        (replay.committed_epoch, replay.stopped),
        (Some(10), Some(StopReason::ReplayedEnd))
    );
    let (unique, repeats) = dedup(outputs(&kafka, "results"));
    assert_eq!(unique, expected);
    let epoch_10: Vec<Out> = expected
        .iter()
        .filter(|o| o.id.epoch == 10)
        .cloned()
        .collect();
    assert!(!epoch_10.is_empty());
    assert_eq!(
        repeats, epoch_10,
        "exactly epoch 10 again, the same ids and bytes"
    );

    // The group holds epoch 10 now, the newest checkpoint: restored, nothing replayed.
    let resumed = job.run().unwrap();
    assert_eq!(
        (resumed.group_epoch, resumed.restored_epoch),
        (Some(10), Some(10))
    );
    assert_eq!(
        (
            resumed.messages_in,
            resumed.outputs,
            resumed.committed_epoch
        ),
        (0, 0, Some(11))
    );
    assert_eq!(
        outputs(&kafka, "results").len(),
        expected.len() + epoch_10.len()
    );

    // A group epoch that is neither the newest checkpoint's nor the one before is refused.
    job.commit_group(PartitionOffsets::from([(0, 700)]), 8);
    match job.run() {
        Err(KafkaBridgeError::Restore(e)) => assert_eq!(
            e,
            RestoreError::Mismatch {
                group_epoch: 8,
                checkpoint_epoch: 11
            }
        ),
        other => panic!("expected a refused restore, got {other:?}"),
    }
}

#[test]
fn a_stopped_run_keeps_its_windows_open_and_the_next_run_continues_them() {
    let input = messages(0..1_000);
    let expected = reference(&input);
    let kafka = cluster(&input);
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(&kafka, dir.path(), OffsetCommit::AfterTransaction);
    let stop = Arc::new(AtomicBool::new(false));
    let config = KafkaEpochConfig {
        stop: Some(stop.clone()),
        ..job.config()
    };
    // Told to stop once epoch 3 committed: epoch 4 is checked for the stop before it reads,
    // so it commits with no message and every window of the first 300 still open.
    let stopped = job
        .run_with("events", &config, &mut |p| {
            if matches!(p, KafkaProgress::Committed { epoch: 3, .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert_eq!(
        (stopped.stopped, stopped.windows_flushed),
        (Some(StopReason::Stopped), false)
    );
    assert_eq!(
        (stopped.messages_in, stopped.committed_epoch),
        (300, Some(4))
    );

    let rest = job.run().unwrap();
    assert_eq!((rest.restored_epoch, rest.messages_in), (Some(4), 700));
    // The empty epoch 4 shifts the later epochs by one; the results, in order, are the
    // reference's: the restored windows went on as if the run had not stopped.
    let strip = |outs: Vec<Out>| -> Vec<(Vec<u8>, serde_json::Value)> {
        outs.into_iter()
            .map(|o| {
                let mut v: serde_json::Value = serde_json::from_slice(&o.payload).unwrap();
                for id in ["shard", "epoch", "seq"] {
                    v.as_object_mut().unwrap().remove(id);
                }
                (o.key, v)
            })
            .collect()
    };
    let got = outputs(&kafka, "results");
    assert!(got.iter().all(|o| o.id.epoch != 4));
    assert_eq!(strip(got), strip(expected));
}

#[test]
fn a_restart_with_offsets_in_the_transaction_is_refused_on_the_mock() {
    let input = messages(0..250);
    let kafka = cluster(&input);
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(&kafka, dir.path(), OffsetCommit::InTransaction);
    assert_eq!(job.run().unwrap().committed_epoch, Some(3));
    // A real broker stores the offsets sent to the transaction: the group would hold epoch 3
    // and the restart restore it. The mock stores none, so the run cannot tell whether epoch
    // 3 committed, and refuses rather than guess.
    match job.run() {
        Err(KafkaBridgeError::Restore(e)) => {
            assert_eq!(
                e,
                RestoreError::GroupOffsetsMissing {
                    checkpoint_epoch: 3
                }
            );
            assert!(e.to_string().contains("mock cluster does not"), "{e}");
        }
        other => panic!("expected a refused restore, got {other:?}"),
    }
}

#[test]
fn a_crash_before_the_first_commit_replays_epoch_one_and_another_topics_checkpoint_is_refused() {
    let input = messages(0..50);
    let kafka = MockKafka::new(&[("events", 1), ("other", 1), ("results", 2)]).unwrap();
    produce(&kafka, "events", &input);
    produce(&kafka, "other", &input);
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(&kafka, dir.path(), OffsetCommit::AfterTransaction);
    let first = job.run().unwrap();
    assert_eq!((first.committed_epoch, first.messages_in), (Some(1), 50));
    let expected = reference(&input);
    assert_eq!(outputs(&kafka, "results"), expected);

    // As if epoch 1's commit never happened: checkpoint 1 on disk, a group with no epoch.
    // Restoring nothing and replaying epoch 1 to its recorded end is the only choice.
    let uncommitted = Job {
        group: "job-uncommitted",
        ..Job::new(&kafka, dir.path(), OffsetCommit::AfterTransaction)
    };
    let replay = uncommitted.run().unwrap();
    assert_eq!((replay.group_epoch, replay.restored_epoch), (None, None));
    assert_eq!(
        (replay.messages_in, replay.stopped),
        (50, Some(StopReason::ReplayedEnd))
    );
    let (unique, repeats) = dedup(outputs(&kafka, "results"));
    assert_eq!((unique, repeats), (expected.clone(), expected));

    // The same checkpoints for a run of another topic: refused, naming the topic they read.
    let other = Job {
        group: "job-other",
        ..Job::new(&kafka, dir.path(), OffsetCommit::AfterTransaction)
    };
    let err = other
        .run_with("other", &other.config(), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, KafkaBridgeError::Checkpointed { epoch: 1, why } if why.contains("\"events\"")),
        "{err}"
    );
}
