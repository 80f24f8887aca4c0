//! The Kafka source and sink against librdkafka's mock cluster, which runs inside the test
//! process and listens on localhost: decoding and malformed messages, batches, offsets,
//! epochs committed and aborted, and a shard SIGKILLed mid-epoch and replayed.
//!
//! The mock accepts the transactional protocol but does not enforce it (see the
//! `agentwire_streaming::kafka` docs): records of aborted transactions stay visible to
//! read_committed readers, a new producer does not fence an old one with the same
//! transactional.id, and offsets sent to a transaction are not stored. Each test checks the
//! guarantee the mock can show, and pins the mock's gap where a real broker would differ
//! (see [`assert_each_output_once`]), so a librdkafka whose mock closes a gap fails here and
//! the test can be tightened.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentwire_streaming::event::Key;
use agentwire_streaming::kafka::{
    decode_output_id, encode_window_result, window_key_bytes, KafkaSink, KafkaSinkConfig, OutputId,
};
use agentwire_streaming::window::WindowResult;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long any wait on the mock cluster may take before the test fails: a watchdog against
/// hangs, never a synchronisation (every wait ends as soon as its condition holds).
const WATCHDOG: Duration = Duration::from_secs(30);

/// A mock cluster of one broker, alive as long as this value.
struct Mock {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

fn mock(topics: &[(&str, i32)]) -> Mock {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for &(topic, partitions) in topics {
        cluster.create_topic(topic, partitions, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    Mock { cluster, bootstrap }
}

/// Writes `(partition, payload)` records without a transaction and waits for their delivery.
fn produce(bootstrap: &str, topic: &str, records: &[(i32, Option<Vec<u8>>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (partition, payload) in records {
        let mut record = BaseRecord::<(), [u8]>::to(topic).partition(*partition);
        if let Some(p) = payload {
            record = record.payload(p.as_slice());
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(WATCHDOG).expect("flush");
}

/// One record as a read_committed reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    partition: i32,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// Every record of `topic` up to each partition's high watermark, read with
/// isolation.level=read_committed. (The mock writes no transaction markers, so every offset
/// below the high watermark is a record and "read up to offset high - 1" is exact.)
fn read_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut list = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, p, WATCHDOG)
            .expect("watermarks");
        if high > 0 {
            ends.insert(p, high);
        }
    }
    consumer.assign(&list).expect("assign");
    let started = Instant::now();
    let mut seen = Vec::new();
    while !ends.is_empty() {
        assert!(
            started.elapsed() < WATCHDOG,
            "reader stalled; still to read {ends:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("consume");
        seen.push(Seen {
            partition: m.partition(),
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
        if ends.get(&m.partition()) == Some(&(m.offset() + 1)) {
            ends.remove(&m.partition());
        }
    }
    seen
}

fn window_result(key: u64, start_ns: i64) -> WindowResult {
    let v = key as f64;
    WindowResult {
        key: Key::Id(key),
        start_ns,
        end_ns: start_ns + 1_000,
        count: 1,
        sum: v,
        min: v,
        max: v,
        mean: v,
        quantiles: vec![v],
        late: false,
    }
}

/// Sends outputs `seqs` of `epoch` from shard 0; output `seq` is keyed `seq % 4`, so the
/// outputs spread over partitions and a replay sends each to the partition it went to before.
fn send_outputs(sink: &mut KafkaSink, epoch: u64, seqs: std::ops::Range<u64>) {
    let (mut key, mut payload) = (Vec::new(), Vec::new());
    for seq in seqs {
        let r = window_result(seq % 4, seq as i64 * 1_000);
        key.clear();
        payload.clear();
        window_key_bytes(&r.key, &mut key);
        encode_window_result(
            &r,
            OutputId {
                shard: 0,
                epoch,
                seq,
            },
            &mut payload,
        );
        sink.send(&key, &payload).expect("send");
    }
}

/// The ids of `count` outputs of each `(epoch, count)`, sorted.
fn ids_of(epochs: &[(u64, u64)]) -> Vec<OutputId> {
    let mut ids: Vec<OutputId> = epochs
        .iter()
        .flat_map(|&(epoch, count)| {
            (0..count).map(move |seq| OutputId {
                shard: 0,
                epoch,
                seq,
            })
        })
        .collect();
    ids.sort();
    ids
}

/// Checks what a read_committed reader saw: after dropping repeats by [`OutputId`], each
/// committed output exactly once, and no output of an epoch that never committed. The
/// repeats must be exactly `aborted`, the records that reached the broker in transactions
/// that were aborted: a real broker hides them from read_committed readers, so there the
/// reader sees no repeat at all; librdkafka 2.12's mock shows them (its Fetch reports no
/// aborted transactions), and this pins that.
fn assert_each_output_once(seen: &[Seen], committed: &[OutputId], aborted: &[OutputId]) {
    let mut ids: Vec<OutputId> = seen
        .iter()
        .map(|s| decode_output_id(&s.payload).expect("an output payload"))
        .collect();
    ids.sort();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(
        unique, committed,
        "each committed output once, nothing else"
    );
    let mut repeats = ids;
    for id in &unique {
        let at = repeats.binary_search(id).unwrap();
        repeats.remove(at);
    }
    assert_eq!(
        repeats, aborted,
        "the mock shows aborted records to read_committed readers; a real broker would not"
    );
    // Every output is keyed by its window key, so repeats land on the same partition.
    for s in seen {
        let id = decode_output_id(&s.payload).unwrap();
        assert_eq!(s.key, (id.seq % 4).to_string().into_bytes(), "{id}");
    }
}

// One module per part, so `cargo test -p agentwire-streaming --features kafka kafka` selects
// these tests by name.
mod kafka_source {
    use super::*;
    use agentwire_streaming::event::{Attribute, Event};
    use agentwire_streaming::kafka::{
        encode_event, DecodeError, KafkaSource, KafkaSourceConfig, PartitionOffsets, SinkError,
        SourceError, StartFrom,
    };

    fn event(i: usize) -> Event {
        let key = if i % 3 == 0 {
            Key::name(&format!("host-{i}")).unwrap()
        } else {
            Key::Id(i as u64)
        };
        let mut e = Event::new(key, 1_000 * i as i64 - 5_000, i as f64 * 0.5);
        if i % 4 == 0 {
            e.attributes.push(Attribute {
                name: "zone".into(),
                value: format!("z{i}"),
            });
        }
        e
    }

    fn payload(e: &Event) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        encode_event(e, &mut buf).unwrap();
        Some(buf)
    }

    /// Drains the source until `messages` messages (events and malformed) are consumed.
    fn drain(source: &mut KafkaSource, messages: usize, events_max: usize) -> Vec<Event> {
        let started = Instant::now();
        let (mut events, mut consumed) = (Vec::new(), 0);
        while consumed < messages {
            assert!(
                started.elapsed() < WATCHDOG,
                "source stalled at {consumed}/{messages}"
            );
            // Never ask for more than is left: how many messages one batch finds depends on
            // what librdkafka has fetched by then, and a test that stops mid-topic must not
            // read past its stop.
            let batch_max = events_max.min(messages - consumed);
            let got = source
                .poll_batch(&mut events, batch_max, Duration::from_millis(100))
                .unwrap();
            assert!(got.events + got.malformed <= batch_max, "{got:?}");
            consumed += got.events + got.malformed;
        }
        assert_eq!(consumed, messages, "no more than was produced");
        events
    }

    #[test]
    fn decodes_events_in_partition_order_and_skips_malformed_messages_with_a_reason() {
        let m = mock(&[("events", 2)]);
        let mut records: Vec<(i32, Option<Vec<u8>>)> = (0..20)
            .map(|i| ((i % 2) as i32, payload(&event(i))))
            .collect();
        let long_key = format!(
            r#"{{"key":"{}","event_time_ns":0,"value":1}}"#,
            "k".repeat(24)
        );
        let oversized = format!(
            r#"{{"key":1,"event_time_ns":0,"value":1,"attributes":{{"a":"{}"}}}}"#,
            "x".repeat(300)
        );
        // Partition 0 gets the malformed messages at offsets 10..14, after its 10 events.
        records.push((0, Some(b"not json".to_vec())));
        records.push((0, None));
        records.push((0, Some(long_key.into_bytes())));
        records.push((0, Some(oversized.into_bytes())));
        produce(&m.bootstrap, "events", &records);

        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job").payload_bytes_max(256);
        let mut source = KafkaSource::new(config, StartFrom::Committed).unwrap();
        assert_eq!(source.partitions(), &[0, 1]);
        let events = drain(&mut source, records.len(), 4);

        for p in 0..2 {
            let produced: Vec<Event> = (0..20).filter(|i| i % 2 == p).map(event).collect();
            let consumed: Vec<Event> = events
                .iter()
                .filter(|e| produced.contains(e))
                .cloned()
                .collect();
            assert_eq!(consumed, produced, "partition {p} in order");
        }
        assert_eq!(events.len(), 20);
        assert_eq!(source.malformed_count(), 4);
        let malformed: Vec<_> = source.malformed().cloned().collect();
        assert_eq!(
            malformed
                .iter()
                .map(|m| (m.partition, m.offset))
                .collect::<Vec<_>>(),
            [(0, 10), (0, 11), (0, 12), (0, 13)]
        );
        assert!(matches!(&malformed[0].reason, DecodeError::Json(why) if why.contains("line 1")));
        assert_eq!(malformed[1].reason, DecodeError::NoPayload);
        assert!(
            matches!(&malformed[2].reason, DecodeError::Json(why) if why.contains("at most 23 bytes"))
        );
        assert!(matches!(
            malformed[3].reason,
            DecodeError::TooLarge { max_bytes: 256, .. }
        ));
        // Past every message, malformed ones included.
        assert_eq!(
            source.positions(),
            &PartitionOffsets::from([(0, 14), (1, 10)])
        );
    }

    /// Polls until the source is caught up; returns the events read and the ends reported.
    fn poll_until_caught_up(source: &mut KafkaSource) -> (Vec<Event>, usize) {
        let started = Instant::now();
        let (mut events, mut ends) = (Vec::new(), 0);
        while !source.caught_up() {
            assert!(started.elapsed() < WATCHDOG, "never caught up");
            let got = source
                .poll_batch(&mut events, 16, Duration::from_millis(100))
                .unwrap();
            ends += got.ends_reached;
        }
        (events, ends)
    }

    #[test]
    fn is_caught_up_once_every_partition_is_read_to_its_end_and_again_after_news() {
        let m = mock(&[("events", 2)]);
        // Partition 1 stays empty: its end is its start.
        produce(
            &m.bootstrap,
            "events",
            &[(0, payload(&event(0))), (0, payload(&event(1)))],
        );
        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job");
        let mut source = KafkaSource::new(config, StartFrom::Committed).unwrap();
        assert!(!source.caught_up(), "no end seen yet");
        let (events, ends) = poll_until_caught_up(&mut source);
        assert_eq!(
            events,
            [event(0), event(1)],
            "every message comes before its end"
        );
        assert_eq!(ends, 2);

        // A new message, then its partition's end again.
        produce(&m.bootstrap, "events", &[(1, payload(&event(2)))]);
        let started = Instant::now();
        let mut more = Vec::new();
        while more.is_empty() {
            assert!(started.elapsed() < WATCHDOG, "the new message never came");
            source
                .poll_batch(&mut more, 1, Duration::from_millis(100))
                .unwrap();
        }
        assert_eq!(more, [event(2)]);
        assert!(
            !source.caught_up(),
            "partition 1 has news past its last end"
        );
        let (rest, ends) = poll_until_caught_up(&mut source);
        assert!(rest.is_empty());
        assert_eq!(ends, 1);

        // A seek reads again: not caught up until the ends are reached again.
        source.seek(&PartitionOffsets::from([(0, 0)])).unwrap();
        assert!(!source.caught_up());
        let (again, _) = poll_until_caught_up(&mut source);
        assert_eq!(again, [event(0), event(1)]);
    }

    #[test]
    fn keeps_at_most_the_configured_malformed_messages_but_counts_all() {
        let m = mock(&[("events", 1)]);
        let garbage: Vec<_> = (0..5)
            .map(|i| (0, Some(format!("bad {i}").into_bytes())))
            .collect();
        produce(&m.bootstrap, "events", &garbage);
        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job").malformed_kept_max(2);
        let mut source = KafkaSource::new(config, StartFrom::Committed).unwrap();
        assert!(drain(&mut source, 5, 16).is_empty());
        assert_eq!(source.malformed_count(), 5);
        let kept: Vec<i64> = source.malformed().map(|m| m.offset).collect();
        assert_eq!(kept, [3, 4], "the latest, oldest first");
    }

    #[test]
    fn a_new_source_resumes_where_the_group_committed() {
        let m = mock(&[("events", 1)]);
        let records: Vec<_> = (0..10).map(|i| (0, payload(&event(i)))).collect();
        produce(&m.bootstrap, "events", &records);
        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job").partitions([0]);

        let mut first = KafkaSource::new(config.clone(), StartFrom::Committed).unwrap();
        let events = drain(&mut first, 6, 6);
        assert_eq!(events, (0..6).map(event).collect::<Vec<_>>());
        let checkpoint = first.positions().clone();
        assert_eq!(checkpoint, PartitionOffsets::from([(0, 6)]));
        first.commit_offsets(&checkpoint, 1).unwrap();
        drop(first);

        let mut restarted = KafkaSource::new(config, StartFrom::Committed).unwrap();
        assert_eq!(restarted.committed_offsets().unwrap(), checkpoint);
        assert_eq!(restarted.committed_epoch().unwrap(), Some(1));
        let rest = drain(&mut restarted, 4, 16);
        assert_eq!(rest, (6..10).map(event).collect::<Vec<_>>());
    }

    #[test]
    fn restores_checkpoint_positions_by_seeking() {
        let m = mock(&[("events", 2)]);
        let records: Vec<_> = (0..8)
            .map(|i| ((i % 2) as i32, payload(&event(i))))
            .collect();
        produce(&m.bootstrap, "events", &records);
        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job");

        // Restore: partition 0 from offset 3 (its 4th event), partition 1 from its start.
        let checkpoint = PartitionOffsets::from([(0, 3)]);
        let mut source = KafkaSource::new(config, StartFrom::Offsets(checkpoint)).unwrap();
        let events = drain(&mut source, 1 + 4, 16);
        let mut expected: Vec<Event> = [6, 1, 3, 5, 7].into_iter().map(event).collect();
        let mut got = events.clone();
        let by_time = |e: &Event| e.event_time_ns;
        expected.sort_by_key(by_time);
        got.sort_by_key(by_time);
        assert_eq!(got, expected);

        // Seek partition 1 back to offset 2 and read its last two events again.
        source.seek(&PartitionOffsets::from([(1, 2)])).unwrap();
        assert_eq!(drain(&mut source, 2, 16), [event(5), event(7)]);
        assert_eq!(
            source.positions(),
            &PartitionOffsets::from([(0, 4), (1, 4)])
        );

        let err = source.seek(&PartitionOffsets::from([(9, 0)])).unwrap_err();
        assert!(
            matches!(err, SourceError::NotOwned { partition: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn offsets_committed_in_the_sink_transaction_restore_through_the_checkpoint() {
        let m = mock(&[("events", 1), ("results", 2)]);
        let records: Vec<_> = (0..10).map(|i| (0, payload(&event(i)))).collect();
        produce(&m.bootstrap, "events", &records);
        let config = KafkaSourceConfig::new(&m.bootstrap, "events", "job");

        // Epoch 1: consume 7 events, emit one output per event, checkpoint, commit both.
        let mut source = KafkaSource::new(config.clone(), StartFrom::Committed).unwrap();
        let mut sink =
            KafkaSink::new(KafkaSinkConfig::new(&m.bootstrap, "results", "job", 0)).unwrap();
        sink.begin_epoch(1).unwrap();
        let consumed = drain(&mut source, 7, 7);
        send_outputs(&mut sink, 1, 0..consumed.len() as u64);
        let checkpoint = source.positions().clone();
        assert_eq!(checkpoint, PartitionOffsets::from([(0, 7)]));
        let stale = source.transaction_offsets(&checkpoint, 2).unwrap();
        let err = sink.commit_epoch(1, Some(&stale)).unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::OffsetsEpochMismatch {
                    epoch: 1,
                    tagged: 2
                }
            ),
            "{err}"
        );
        let offsets = source.transaction_offsets(&checkpoint, 1).unwrap();
        assert_eq!(offsets.offsets().collect::<Vec<_>>(), [(0, 7)]);
        sink.commit_epoch(1, Some(&offsets)).unwrap();
        assert_eq!(sink.last_committed_epoch(), Some(1));
        drop((source, sink));

        // The restarted shard restores its checkpoint and resumes at event 7.
        let mut restored = KafkaSource::new(config, StartFrom::Offsets(checkpoint)).unwrap();
        assert_eq!(
            drain(&mut restored, 3, 16),
            (7..10).map(event).collect::<Vec<_>>()
        );
        assert_each_output_once(
            &read_committed(&m.bootstrap, "results", 2),
            &ids_of(&[(1, 7)]),
            &[],
        );
        // On a real broker the group's committed offset is now 7, where a source starting
        // from StartFrom::Committed resumes; the mock's TxnOffsetCommit stores nothing.
        assert_eq!(
            restored.committed_offsets().unwrap(),
            PartitionOffsets::new(),
            "the mock does not store transactional offsets; a real broker would hold {{0: 7}}"
        );
        assert_eq!(
            restored.committed_epoch().unwrap(),
            None,
            "a real broker: Some(1)"
        );
    }
}

mod kafka_sink {
    use super::*;
    use agentwire_streaming::kafka::{SinkError, TxnErrorKind};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    fn sink(mock: &Mock) -> KafkaSink {
        KafkaSink::new(KafkaSinkConfig::new(&mock.bootstrap, "results", "job", 0)).unwrap()
    }

    #[test]
    fn a_read_committed_reader_sees_exactly_the_committed_epochs() {
        let m = mock(&[("results", 2)]);
        let mut sink = sink(&m);
        sink.begin_epoch(1).unwrap();
        send_outputs(&mut sink, 1, 0..3);
        assert_eq!(sink.sent_in_epoch(), 3);
        sink.commit_epoch(1, None).unwrap();
        sink.begin_epoch(2).unwrap();
        send_outputs(&mut sink, 2, 0..5);
        sink.commit_epoch(2, None).unwrap();
        assert_eq!(
            (sink.open_epoch(), sink.last_committed_epoch()),
            (None, Some(2))
        );

        let seen = read_committed(&m.bootstrap, "results", 2);
        assert_eq!(seen.len(), 8);
        assert_each_output_once(&seen, &ids_of(&[(1, 3), (2, 5)]), &[]);
        let value: serde_json::Value = serde_json::from_slice(&seen[0].payload).unwrap();
        assert_eq!(value["quantiles"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn refuses_epochs_out_of_order() {
        let m = mock(&[("results", 1)]);
        let mut sink = sink(&m);
        let err = sink.send(b"k", b"v").unwrap_err();
        assert!(
            matches!(err, SinkError::NoOpenEpoch { op: "send" }),
            "{err}"
        );
        sink.abort_epoch().unwrap(); // nothing open: nothing to do
        sink.begin_epoch(1).unwrap();
        let err = sink.begin_epoch(2).unwrap_err();
        assert!(
            matches!(err, SinkError::EpochOpen { open: 1, epoch: 2 }),
            "{err}"
        );
        let err = sink.commit_epoch(2, None).unwrap_err();
        assert!(
            matches!(err, SinkError::EpochMismatch { open: 1, epoch: 2 }),
            "{err}"
        );
        sink.commit_epoch(1, None).unwrap();
        let err = sink.begin_epoch(1).unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::EpochNotAfter {
                    epoch: 1,
                    last_committed: 1
                }
            ),
            "{err}"
        );
        sink.begin_epoch(2).unwrap();
    }

    #[test]
    fn an_aborted_epoch_replays_and_commits() {
        let m = mock(&[("results", 2)]);
        let mut sink = sink(&m);
        sink.begin_epoch(1).unwrap();
        send_outputs(&mut sink, 1, 0..3);
        sink.commit_epoch(1, None).unwrap();
        // Epoch 2's first attempt reaches the broker, then is aborted and replayed whole.
        sink.begin_epoch(2).unwrap();
        send_outputs(&mut sink, 2, 0..2);
        sink.flush().unwrap();
        sink.abort_epoch().unwrap();
        assert_eq!(sink.open_epoch(), None);
        sink.begin_epoch(2).unwrap();
        send_outputs(&mut sink, 2, 0..4);
        sink.commit_epoch(2, None).unwrap();

        let seen = read_committed(&m.bootstrap, "results", 2);
        assert_each_output_once(&seen, &ids_of(&[(1, 3), (2, 4)]), &ids_of(&[(2, 2)]));
    }

    #[test]
    fn send_gives_up_with_queue_full_when_no_broker_drains_the_queue() {
        let m = mock(&[("results", 1)]);
        let config = KafkaSinkConfig::new(&m.bootstrap, "results", "job", 0)
            .in_flight_max(2, 1024)
            .timeouts_ms(5_000, 0);
        let mut sink = KafkaSink::new(config).unwrap();
        sink.begin_epoch(1).unwrap();
        m.cluster.broker_down(-1).unwrap();
        sink.send(b"k", b"1").unwrap();
        sink.send(b"k", b"2").unwrap();
        let err = sink.send(b"k", b"3").unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::QueueFull {
                    in_flight: 2,
                    waited_ms: 0
                }
            ),
            "{err}"
        );
        assert_eq!(sink.sent_in_epoch(), 2);
    }

    /// Set in the child process this test starts: the zombie shard.
    const CHILD_ENV: &str = "AW_KAFKA_CHILD";
    const BOOTSTRAP_ENV: &str = "AW_KAFKA_BOOTSTRAP";
    const READY: &str = "AW_KAFKA_CHILD_READY";
    /// This test's name as the test harness knows it, for `--exact`.
    const SIGKILL_TEST: &str =
        "kafka_sink::a_shard_sigkilled_mid_epoch_has_its_epoch_replayed_once_per_output";
    /// Outputs the zombie writes of epoch 2 before it is killed, and outputs of the full epoch.
    const ZOMBIE_SENT: u64 = 3;
    const EPOCH_2_OUTPUTS: u64 = 6;

    /// The zombie: a restart of shard 0 that writes part of epoch 2, makes sure the records
    /// reached the broker, says so, and waits to be killed (it exits without committing if
    /// the parent goes away first).
    fn zombie_shard(bootstrap: &str) {
        let mut sink =
            KafkaSink::new(KafkaSinkConfig::new(bootstrap, "results", "job", 0)).unwrap();
        sink.begin_epoch(2).unwrap();
        send_outputs(&mut sink, 2, 0..ZOMBIE_SENT);
        sink.flush().unwrap();
        println!("{READY}");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(3);
    }

    #[test]
    fn a_shard_sigkilled_mid_epoch_has_its_epoch_replayed_once_per_output() {
        if let Ok(bootstrap) = std::env::var(BOOTSTRAP_ENV) {
            if std::env::var_os(CHILD_ENV).is_some() {
                return zombie_shard(&bootstrap);
            }
        }
        let m = mock(&[("results", 2)]);
        // The shard's first life commits epoch 1 and stops cleanly.
        let mut first = sink(&m);
        first.begin_epoch(1).unwrap();
        send_outputs(&mut first, 1, 0..4);
        first.commit_epoch(1, None).unwrap();
        drop(first);

        // Its second life, in another process, is SIGKILLed with epoch 2 open.
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", SIGKILL_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "zombie")
            .env(BOOTSTRAP_ENV, &m.bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                // With one test thread, libtest prints "test NAME ... " before the test runs,
                // so the marker may share its line.
                if line.map(|l| l.ends_with(READY)).unwrap_or(true) {
                    let _ = ready_tx.send(());
                    return;
                }
            }
        });
        let ready = ready_rx.recv_timeout(WATCHDOG);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        ready.expect("the child wrote part of epoch 2");
        assert_eq!(status.signal(), Some(9), "{status}");

        // Its third life restores the checkpoint of epoch 1 and replays epoch 2 whole.
        let mut third = sink(&m);
        third.begin_epoch(2).unwrap();
        send_outputs(&mut third, 2, 0..EPOCH_2_OUTPUTS);
        third.commit_epoch(2, None).unwrap();

        let seen = read_committed(&m.bootstrap, "results", 2);
        assert_each_output_once(
            &seen,
            &ids_of(&[(1, 4), (2, EPOCH_2_OUTPUTS)]),
            &ids_of(&[(2, ZOMBIE_SENT)]),
        );
    }

    #[test]
    fn init_without_a_reachable_broker_is_a_retriable_transaction_error() {
        // A sink of a cluster that never answers cannot register its transactional.id.
        let config = KafkaSinkConfig::new("127.0.0.1:1", "results", "job", 0).timeouts_ms(200, 0);
        let err = KafkaSink::new(config).err().expect("no broker");
        match err {
            SinkError::Transaction { kind, .. } => {
                assert_eq!(kind, TxnErrorKind::Retriable, "{err}")
            }
            other => panic!("expected a transaction error, got {other}"),
        }
    }
}
