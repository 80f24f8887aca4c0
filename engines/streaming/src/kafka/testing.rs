//! Test helpers over librdkafka's in-process mock cluster (`rdkafka::mocking::MockCluster`):
//! a cluster with topics, records written to it, and every record of a topic read back. The
//! mock listens on localhost, so a child process can use it too, through
//! [`MockKafka::bootstrap_servers`], for as long as the [`MockKafka`] lives.
//!
//! What the mock does not do (transaction markers, fencing, transactional offset commits) is
//! in [`crate::kafka`]'s documentation.
//!
//! ```
//! use std::time::Duration;
//! use agentwire_streaming::kafka::testing::MockKafka;
//! let kafka = MockKafka::new(&[("events", 2)]).unwrap();
//! kafka.produce("events", &[(0, Some(b"a".as_slice())), (1, Some(b"b".as_slice()))], Duration::from_secs(30)).unwrap();
//! let records = kafka.read_to_end("events", Duration::from_secs(30)).unwrap();
//! assert_eq!(records.len(), 2);
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{decode_output_id, OutputId};

/// How long one poll of [`MockKafka::read_to_end`] waits before it checks its deadline.
const READ_POLL_MS: u64 = 100;

/// A mock cluster of one broker, alive as long as this value.
///
/// ```
/// use agentwire_streaming::kafka::testing::MockKafka;
/// let kafka = MockKafka::new(&[("results", 4)]).unwrap();
/// assert!(kafka.bootstrap_servers().contains("127.0.0.1"));
/// ```
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

/// A record as read back: where it is, its key and its payload (empty when absent).
///
/// ```
/// use agentwire_streaming::kafka::testing::Record;
/// let r = Record { partition: 0, offset: 3, key: b"7".to_vec(), payload: b"{}".to_vec() };
/// assert_eq!(r.offset, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Vec<u8>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A helper's failure: librdkafka's error, or its deadline passed.
///
/// ```
/// use agentwire_streaming::kafka::testing::MockError;
/// let e = MockError::Deadline { what: "read results".into(), done: 3 };
/// assert_eq!(e.to_string(), "read results: the deadline passed after 3 records");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// librdkafka's error.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The error.
        source: KafkaError,
    },
    /// The deadline passed first.
    #[error("{what}: the deadline passed after {done} records")]
    Deadline {
        /// What was being done.
        what: String,
        /// Records done by then.
        done: usize,
    },
    /// A record of an output topic carries no output id.
    #[error("{topic} partition {partition} offset {offset} is not an output: {why}")]
    NotAnOutput {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why it does not decode.
        why: String,
    },
}

/// One output as written to an output topic: its id, Kafka key and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenOutput {
    /// The output's (shard, epoch, seq), decoded from its payload.
    pub id: OutputId,
    /// The record's key.
    pub key: Vec<u8>,
    /// The record's payload.
    pub payload: Vec<u8>,
}

/// `outputs` (sorted by id, as [`MockKafka::read_outputs`] gives them) without repeats, and
/// the repeats. A replay reproduces an output exactly, so a repeat that differs from the
/// output it repeats is an error: its id.
///
/// ```
/// use agentwire_streaming::kafka::testing::{split_repeats, WrittenOutput};
/// use agentwire_streaming::kafka::OutputId;
/// let o = WrittenOutput { id: OutputId { shard: 0, epoch: 1, seq: 0 }, key: vec![], payload: b"x".to_vec() };
/// let (unique, repeats) = split_repeats(vec![o.clone(), o.clone()]).unwrap();
/// assert_eq!((unique.len(), repeats.len()), (1, 1));
/// let other = WrittenOutput { payload: b"y".to_vec(), ..o.clone() };
/// assert_eq!(split_repeats(vec![o.clone(), other]).unwrap_err(), o.id);
/// ```
pub fn split_repeats(
    outputs: Vec<WrittenOutput>,
) -> Result<(Vec<WrittenOutput>, Vec<WrittenOutput>), OutputId> {
    let (mut unique, mut repeats) = (Vec::<WrittenOutput>::new(), Vec::new());
    for o in outputs {
        match unique.last() {
            Some(last) if last.id == o.id => {
                if *last != o {
                    return Err(o.id);
                }
                repeats.push(o);
            }
            _ => unique.push(o),
        }
    }
    Ok((unique, repeats))
}

impl MockKafka {
    /// Every record of the output topic `topic` as an output, sorted by output id, repeats
    /// kept ([`split_repeats`] separates them).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[("results", 1)]).unwrap();
    /// assert!(kafka.read_outputs("results", Duration::from_secs(30)).unwrap().is_empty());
    /// ```
    pub fn read_outputs(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<WrittenOutput>, MockError> {
        let mut outputs = self
            .read_to_end(topic, timeout)?
            .into_iter()
            .map(|r| match decode_output_id(&r.payload) {
                Ok(id) => Ok(WrittenOutput {
                    id,
                    key: r.key,
                    payload: r.payload,
                }),
                Err(e) => Err(MockError::NotAnOutput {
                    topic: topic.to_string(),
                    partition: r.partition,
                    offset: r.offset,
                    why: e.to_string(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        outputs.sort_by_key(|o| o.id);
        Ok(outputs)
    }

    /// Starts a one-broker mock cluster with `topics` as (name, partitions).
    ///
    /// ```
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[("a", 1), ("b", 3)]).unwrap();
    /// ```
    pub fn new(topics: &[(&str, i32)]) -> Result<Self, MockError> {
        let kafka = |what: &str| {
            let what = what.to_owned();
            move |source| MockError::Kafka { what, source }
        };
        let cluster = MockCluster::new(1).map_err(kafka("start the mock cluster"))?;
        for &(topic, partitions) in topics {
            cluster
                .create_topic(topic, partitions, 1)
                .map_err(kafka(&format!("create topic {topic}")))?;
        }
        let bootstrap = cluster.bootstrap_servers();
        Ok(Self { cluster, bootstrap })
    }

    /// The cluster's `bootstrap.servers`, for clients in this process or a child.
    ///
    /// ```
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[]).unwrap();
    /// println!("brokers at {}", kafka.bootstrap_servers());
    /// ```
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster itself (to take a broker down, inject request errors, ...).
    ///
    /// ```
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[]).unwrap();
    /// kafka.cluster().broker_down(-1).unwrap();
    /// ```
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Writes `(partition, payload)` records to `topic` without a transaction and waits up to
    /// `timeout` for their delivery.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[("events", 1)]).unwrap();
    /// kafka.produce("events", &[(0, None)], Duration::from_secs(30)).unwrap(); // a tombstone
    /// ```
    pub fn produce(
        &self,
        topic: &str,
        records: &[(i32, Option<&[u8]>)],
        timeout: Duration,
    ) -> Result<(), MockError> {
        let what = format!("produce to {topic}");
        let kafka = |source| MockError::Kafka {
            what: what.clone(),
            source,
        };
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(kafka)?;
        for &(partition, payload) in records {
            let mut record = BaseRecord::<(), [u8]>::to(topic).partition(partition);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            producer.send(record).map_err(|(e, _)| kafka(e))?;
        }
        producer.flush(timeout).map_err(kafka)
    }

    /// Every record of `topic` below each partition's high watermark, partition by
    /// partition in offset order, read with `isolation.level=read_committed`, within
    /// `timeout`. (The mock writes no transaction markers, so every offset below the high
    /// watermark is a record, and records of aborted transactions are among them.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentwire_streaming::kafka::testing::MockKafka;
    /// let kafka = MockKafka::new(&[("empty", 2)]).unwrap();
    /// assert!(kafka.read_to_end("empty", Duration::from_secs(30)).unwrap().is_empty());
    /// ```
    pub fn read_to_end(&self, topic: &str, timeout: Duration) -> Result<Vec<Record>, MockError> {
        let what = format!("read {topic}");
        let kafka = |source| MockError::Kafka {
            what: what.clone(),
            source,
        };
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "agentwire-mock-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(kafka)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(kafka)?;
            let (_, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(kafka)?;
            if high > 0 {
                ends.insert(p, high);
            }
        }
        consumer.assign(&list).map_err(kafka)?;
        let mut records = Vec::new();
        while !ends.is_empty() {
            if Instant::now() >= deadline {
                return Err(MockError::Deadline {
                    what,
                    done: records.len(),
                });
            }
            let Some(m) = consumer.poll(Duration::from_millis(READ_POLL_MS)) else {
                continue;
            };
            let m = m.map_err(kafka)?;
            records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
            if ends.get(&m.partition()) == Some(&(m.offset() + 1)) {
                ends.remove(&m.partition());
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        Ok(records)
    }
}
