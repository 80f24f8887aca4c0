//! [`KafkaSource`]: events from a Kafka topic's partitions, in bounded batches, with the
//! offsets consumed so far for the engine's checkpoint.
//!
//! The source owns an explicit set of partitions (`assign`, not a group subscription): the
//! shard's checkpoint records an offset per partition, and a group rebalance would move
//! partitions between shards behind the checkpoint's back. The consumer group (`group.id`)
//! is still used, for the committed offsets (where a fresh start begins, and what lag
//! monitoring reads) and for the group metadata a transactional offset commit needs.
//!
//! Offsets follow Kafka's convention: a position is the offset of the **next** message to
//! read (the last one consumed plus one), and that is what is committed and sought.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::codec::{decode_event, DecodeError};
use crate::event::Event;

/// The next offset to read, per partition of the source's topic.
pub type PartitionOffsets = BTreeMap<i32, i64>;

/// How a committed offset's metadata names the checkpoint epoch it was committed with.
const EPOCH_METADATA_PREFIX: &str = "agentwire-epoch=";

/// What a [`KafkaSource`] reads and how much it holds. Built with [`KafkaSourceConfig::new`]
/// and the setters; every limit has a default.
///
/// ```
/// use agentwire_streaming::kafka::KafkaSourceConfig;
/// let c = KafkaSourceConfig::new("localhost:9092", "events", "agentwire-job-1")
///     .partitions([0, 1])
///     .payload_bytes_max(4096);
/// assert_eq!(c.topic(), "events");
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    bootstrap_servers: String,
    topic: String,
    group_id: String,
    partitions: Vec<i32>,
    payload_bytes_max: usize,
    malformed_kept_max: usize,
    fetch_queue_kbytes_max: u32,
    metadata_timeout_ms: u64,
    commit_timeout_ms: u64,
    extra: Vec<(String, String)>,
}

impl KafkaSourceConfig {
    /// A source of `topic` on the cluster at `bootstrap_servers`, committing as consumer group
    /// `group_id`. Defaults: every partition of the topic, `payload_bytes_max = 65536`,
    /// `malformed_kept_max = 64`, `fetch_queue_kbytes_max = 16384` (KiB prefetched per
    /// partition, librdkafka's `queued.max.messages.kbytes`), `metadata_timeout_ms = 10000`,
    /// `commit_timeout_ms = 10000`.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b1:9092,b2:9092", "events", "g");
    /// assert_eq!(c.group_id(), "g");
    /// ```
    pub fn new(bootstrap_servers: &str, topic: &str, group_id: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: topic.to_owned(),
            group_id: group_id.to_owned(),
            partitions: Vec::new(),
            payload_bytes_max: 64 * 1024,
            malformed_kept_max: 64,
            fetch_queue_kbytes_max: 16 * 1024,
            metadata_timeout_ms: 10_000,
            commit_timeout_ms: 10_000,
            extra: Vec::new(),
        }
    }

    /// The partitions this source owns; empty (the default) means every partition of the topic.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").partitions([2, 0]);
    /// ```
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = i32>) -> Self {
        self.partitions = partitions.into_iter().collect();
        self.partitions.sort_unstable();
        self.partitions.dedup();
        self
    }

    /// The largest payload decoded; a larger message is malformed ([`DecodeError::TooLarge`]).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").payload_bytes_max(1024);
    /// ```
    pub fn payload_bytes_max(mut self, bytes: usize) -> Self {
        self.payload_bytes_max = bytes;
        self
    }

    /// How many malformed messages are kept, with their reasons, for [`KafkaSource::malformed`]
    /// (the oldest is dropped first; every one is counted).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").malformed_kept_max(8);
    /// ```
    pub fn malformed_kept_max(mut self, count: usize) -> Self {
        self.malformed_kept_max = count;
        self
    }

    /// KiB of messages librdkafka prefetches per partition (`queued.max.messages.kbytes`).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").fetch_queue_kbytes_max(1024);
    /// ```
    pub fn fetch_queue_kbytes_max(mut self, kbytes: u32) -> Self {
        self.fetch_queue_kbytes_max = kbytes;
        self
    }

    /// How long a metadata request, a commit or a committed-offsets query may take, in ms.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").timeouts_ms(5_000, 5_000);
    /// ```
    pub fn timeouts_ms(mut self, metadata_timeout_ms: u64, commit_timeout_ms: u64) -> Self {
        self.metadata_timeout_ms = metadata_timeout_ms;
        self.commit_timeout_ms = commit_timeout_ms;
        self
    }

    /// Sets any other librdkafka consumer property (security, client.id, ...). The properties
    /// the exactly-once contract depends on are set last and cannot be overridden:
    /// `enable.auto.commit=false`, `enable.auto.offset.store=false`,
    /// `isolation.level=read_committed`, and `enable.partition.eof=true` (for
    /// [`KafkaSource::caught_up`]).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// let c = KafkaSourceConfig::new("b:9092", "t", "g").set("client.id", "shard-0");
    /// ```
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The topic read.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// assert_eq!(KafkaSourceConfig::new("b:9092", "t", "g").topic(), "t");
    /// ```
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group offsets are committed for.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSourceConfig;
    /// assert_eq!(KafkaSourceConfig::new("b:9092", "t", "g").group_id(), "g");
    /// ```
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            // A partition with no committed offset starts at its beginning: nothing is skipped.
            .set("auto.offset.reset", "earliest")
            .set(
                "queued.max.messages.kbytes",
                self.fetch_queue_kbytes_max.to_string(),
            );
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        // Offsets move only with a checkpoint, and only committed outputs are inputs.
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // The end of a partition is reported, so a run can stop once it has caught up.
            .set("enable.partition.eof", "true");
        c
    }
}

/// Where a new [`KafkaSource`] starts reading.
///
/// ```
/// use agentwire_streaming::kafka::{PartitionOffsets, StartFrom};
/// let restore = StartFrom::Offsets(PartitionOffsets::from([(0, 42)]));
/// assert!(matches!(restore, StartFrom::Offsets(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The group's committed offsets; a partition without one starts at its beginning.
    Committed,
    /// Given offsets (a checkpoint's); the partitions not listed start as for `Committed`.
    Offsets(PartitionOffsets),
}

/// A message that was not an event: where it was and why. It is skipped, and the source's
/// position moves past it like past any other message.
///
/// ```
/// use agentwire_streaming::kafka::{DecodeError, MalformedMessage};
/// let m = MalformedMessage { partition: 0, offset: 7, reason: DecodeError::NoPayload };
/// assert_eq!(m.to_string(), "partition 0 offset 7: the message has no payload");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition {partition} offset {offset}: {reason}")]
pub struct MalformedMessage {
    /// The message's partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it is not an event.
    pub reason: DecodeError,
}

/// What one [`KafkaSource::poll_batch`] did.
///
/// ```
/// use agentwire_streaming::kafka::PollOutcome;
/// let o = PollOutcome::default();
/// assert_eq!(o.events + o.malformed + o.ends_reached, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Events appended to the caller's buffer.
    pub events: usize,
    /// Messages skipped as malformed.
    pub malformed: usize,
    /// Partitions whose end (the last stable offset) the batch reached; see
    /// [`KafkaSource::caught_up`].
    pub ends_reached: usize,
}

/// A failed source operation, with librdkafka's error.
///
/// ```
/// use agentwire_streaming::kafka::SourceError;
/// let e = SourceError::NoGroupMetadata;
/// assert!(e.to_string().contains("group"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created (a bad property, most often).
    #[error("creating the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    /// The topic's partitions could not be listed.
    #[error("reading the metadata of topic {topic}: {source}")]
    Metadata {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The topic has no partitions (it does not exist, and auto-creation is off).
    #[error("topic {topic} has no partitions")]
    NoPartitions {
        /// The topic.
        topic: String,
    },
    /// A partition this source does not own was named.
    #[error("partition {partition} is not one of this source's partitions {owned:?}")]
    NotOwned {
        /// The partition named.
        partition: i32,
        /// The partitions the source owns.
        owned: Vec<i32>,
    },
    /// Assigning (or re-assigning, to seek) the partitions failed.
    #[error("assigning partitions: {0}")]
    Assign(#[source] KafkaError),
    /// The consumer reported an error while fetching; the events decoded before it stay in
    /// the caller's buffer and in [`KafkaSource::positions`].
    #[error("consuming: {0}")]
    Consume(#[source] KafkaError),
    /// Committing or reading committed offsets failed.
    #[error("committing offsets: {0}")]
    Commit(#[source] KafkaError),
    /// The consumer has no group metadata (it has no `group.id`).
    #[error("the consumer has no group metadata; a transactional offset commit needs a group")]
    NoGroupMetadata,
}

/// The offsets to commit inside a sink's transaction, tagged with their checkpoint epoch and
/// with the consumer group they belong to; made by [`KafkaSource::transaction_offsets`] and
/// given to [`KafkaSink::commit_epoch`](super::KafkaSink::commit_epoch).
///
/// ```no_run
/// use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
/// let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
/// let offsets = source.transaction_offsets(source.positions(), 7)?;
/// assert_eq!(offsets.epoch(), 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TransactionOffsets {
    pub(super) group: ConsumerGroupMetadata,
    pub(super) list: TopicPartitionList,
    epoch: u64,
}

impl TransactionOffsets {
    /// The checkpoint epoch these offsets belong to.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// assert_eq!(source.transaction_offsets(source.positions(), 3)?.epoch(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The (partition, next offset) pairs to commit.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// for (partition, offset) in source.transaction_offsets(source.positions(), 1)?.offsets() {
    ///     println!("{partition} -> {offset}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.list
            .elements()
            .into_iter()
            .filter_map(|e| e.offset().to_raw().map(|o| (e.partition(), o)))
    }
}

/// Events from a Kafka topic: bounded batches, offsets per partition for the checkpoint,
/// seek on restore, offsets committed with the checkpoint.
///
/// ```no_run
/// use std::time::Duration;
/// use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
/// let config = KafkaSourceConfig::new("localhost:9092", "events", "job-1").partitions([0]);
/// let mut source = KafkaSource::new(config, StartFrom::Committed)?;
/// let mut events = Vec::with_capacity(1024);
/// let got = source.poll_batch(&mut events, 1024, Duration::from_millis(100))?;
/// println!("{} events, {} malformed; next offsets {:?}", got.events, got.malformed, source.positions());
/// source.commit_offsets(&source.positions().clone(), 1)?; // with epoch 1's checkpoint
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    config: KafkaSourceConfig,
    owned: Vec<i32>,
    positions: PartitionOffsets,
    /// Partitions read to their end, with no message since (librdkafka's partition EOF).
    at_end: BTreeSet<i32>,
    malformed_count: u64,
    malformed: VecDeque<MalformedMessage>,
}

impl KafkaSource {
    /// Connects, lists the partitions (when the config names none) and assigns them, starting
    /// as `start` says.
    ///
    /// ```no_run
    /// use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, PartitionOffsets, StartFrom};
    /// let checkpoint = PartitionOffsets::from([(0, 1_000), (1, 980)]);
    /// let config = KafkaSourceConfig::new("localhost:9092", "events", "job-1").partitions([0, 1]);
    /// let source = KafkaSource::new(config, StartFrom::Offsets(checkpoint))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(config: KafkaSourceConfig, start: StartFrom) -> Result<Self, SourceError> {
        let consumer: BaseConsumer<SourceContext> = config
            .client_config()
            .create_with_context(SourceContext)
            .map_err(SourceError::Create)?;
        let owned = if config.partitions.is_empty() {
            topic_partitions(&consumer, &config)?
        } else {
            config.partitions.clone()
        };
        let mut source = Self {
            consumer,
            config,
            owned,
            positions: PartitionOffsets::new(),
            at_end: BTreeSet::new(),
            malformed_count: 0,
            malformed: VecDeque::new(),
        };
        match start {
            StartFrom::Committed => source.assign()?,
            StartFrom::Offsets(offsets) => source.seek(&offsets)?,
        }
        Ok(source)
    }

    /// The partitions this source reads, ascending.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// assert!(!source.partitions().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partitions(&self) -> &[i32] {
        &self.owned
    }

    /// Takes at most `events_max` messages, appending their events to `out`. Waits at most
    /// `timeout` for the first message, then takes only what is already fetched, so a batch
    /// never waits twice. Malformed messages are skipped, counted and kept (see
    /// [`KafkaSource::malformed`]); they count against `events_max` too. A partition's end,
    /// when reached, is counted in [`PollOutcome::ends_reached`], not against `events_max`.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let mut source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let mut out = Vec::new();
    /// let got = source.poll_batch(&mut out, 256, Duration::from_millis(50))?;
    /// assert_eq!(got.events, out.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_batch(
        &mut self,
        out: &mut Vec<Event>,
        events_max: usize,
        timeout: Duration,
    ) -> Result<PollOutcome, SourceError> {
        let mut outcome = PollOutcome::default();
        // Malformed messages count against the batch too, so a topic of garbage still
        // returns in bounded time.
        let mut wait = timeout;
        while outcome.events + outcome.malformed < events_max {
            let Some(message) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match message {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(partition)) => {
                    // Every message before the end was returned before it (one queue).
                    self.at_end.insert(partition);
                    outcome.ends_reached += 1;
                    continue;
                }
                Err(e) => return Err(SourceError::Consume(e)),
            };
            let (partition, offset) = (message.partition(), message.offset());
            self.at_end.remove(&partition);
            let decoded = match message.payload() {
                Some(p) if p.len() > self.config.payload_bytes_max => Err(DecodeError::TooLarge {
                    len_bytes: p.len(),
                    max_bytes: self.config.payload_bytes_max,
                }),
                payload => decode_event(payload),
            };
            self.positions.insert(partition, offset + 1);
            match decoded {
                Ok(event) => {
                    out.push(event);
                    outcome.events += 1;
                }
                Err(reason) => {
                    outcome.malformed += 1;
                    self.keep_malformed(MalformedMessage {
                        partition,
                        offset,
                        reason,
                    });
                }
            }
        }
        Ok(outcome)
    }

    /// The next offset to read per partition: past every message a batch has returned or
    /// skipped, and where [`KafkaSource::seek`] or `StartFrom::Offsets` put it. A partition
    /// appears once it has been read or sought. This is what a checkpoint records.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let checkpoint_offsets = source.positions().clone();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn positions(&self) -> &PartitionOffsets {
        &self.positions
    }

    /// Whether every partition of the source has been read to its end: each reported its
    /// end (the last stable offset, the high watermark when no transaction is open) and no
    /// message came after. It turns false again when a message arrives or after a seek; a
    /// source that never reached an end is not caught up, so an empty topic becomes caught
    /// up only after a poll.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let mut source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let mut events = Vec::new();
    /// while !source.caught_up() {
    ///     source.poll_batch(&mut events, 1024, Duration::from_millis(100))?;
    /// }
    /// println!("read everything the topic held: {} events", events.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn caught_up(&self) -> bool {
        self.owned.iter().all(|p| self.at_end.contains(p))
    }

    /// Moves the listed partitions to the given next offsets (a restore from a checkpoint);
    /// the others keep their positions. Messages already fetched past those offsets are
    /// discarded.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, PartitionOffsets, StartFrom};
    /// # let mut source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// source.seek(&PartitionOffsets::from([(0, 0)]))?; // read partition 0 again from its start
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seek(&mut self, offsets: &PartitionOffsets) -> Result<(), SourceError> {
        if let Some(&partition) = offsets
            .keys()
            .find(|p| self.owned.binary_search(p).is_err())
        {
            return Err(SourceError::NotOwned {
                partition,
                owned: self.owned.clone(),
            });
        }
        self.positions.extend(offsets);
        // Re-assigning with explicit offsets, rather than `seek`, works before the first fetch
        // of a partition too (librdkafka refuses a seek on a partition not yet fetching).
        self.assign()
    }

    /// Commits `offsets`, tagged with their checkpoint `epoch`, for the consumer group and
    /// waits for the broker: the non-transactional way to store a checkpoint's offsets
    /// (at-least-once outputs).
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// source.commit_offsets(&source.positions().clone(), 4)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_offsets(
        &self,
        offsets: &PartitionOffsets,
        epoch: u64,
    ) -> Result<(), SourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = self.offset_list(offsets, epoch)?;
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(SourceError::Commit)
    }

    /// The group's committed offsets for this source's partitions (those that have one).
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let committed = source.committed_offsets()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn committed_offsets(&self) -> Result<PartitionOffsets, SourceError> {
        let committed = self.committed_list()?;
        Ok(committed
            .elements()
            .into_iter()
            .filter_map(|e| {
                e.offset()
                    .to_raw()
                    .filter(|o| *o >= 0)
                    .map(|o| (e.partition(), o))
            })
            .collect())
    }

    /// The checkpoint epoch of the group's latest offset commit made through this module
    /// ([`KafkaSource::commit_offsets`] or a sink transaction), if any. After a crash between
    /// persisting checkpoint `e` and committing epoch `e`'s transaction, this says whether
    /// the transaction committed: restore checkpoint `e` if it returns `Some(e)`, else the
    /// checkpoint before it, and replay `e`.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let restore_epoch = source.committed_epoch()?.unwrap_or(0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn committed_epoch(&self) -> Result<Option<u64>, SourceError> {
        let committed = self.committed_list()?;
        Ok(committed
            .elements()
            .into_iter()
            .filter_map(|e| {
                e.metadata()
                    .strip_prefix(EPOCH_METADATA_PREFIX)?
                    .parse()
                    .ok()
            })
            .max())
    }

    /// `offsets`, tagged with their checkpoint `epoch`, with this consumer's group metadata,
    /// for a sink's transaction: they are committed if and only if the transaction commits.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// let offsets = source.transaction_offsets(source.positions(), 7)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transaction_offsets(
        &self,
        offsets: &PartitionOffsets,
        epoch: u64,
    ) -> Result<TransactionOffsets, SourceError> {
        let group = self
            .consumer
            .group_metadata()
            .ok_or(SourceError::NoGroupMetadata)?;
        Ok(TransactionOffsets {
            group,
            list: self.offset_list(offsets, epoch)?,
            epoch,
        })
    }

    /// Every malformed message skipped since the source was made.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// assert!(source.malformed_count() >= source.malformed().count() as u64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn malformed_count(&self) -> u64 {
        self.malformed_count
    }

    /// The latest malformed messages (at most `malformed_kept_max`), oldest first.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// for m in source.malformed() {
    ///     eprintln!("skipped {m}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn malformed(&self) -> impl Iterator<Item = &MalformedMessage> + '_ {
        self.malformed.iter()
    }

    fn keep_malformed(&mut self, m: MalformedMessage) {
        self.malformed_count += 1;
        if self.config.malformed_kept_max == 0 {
            return;
        }
        if self.malformed.len() == self.config.malformed_kept_max {
            self.malformed.pop_front();
        }
        self.malformed.push_back(m);
    }

    /// Assigns every owned partition: at its position if it has one, else at the group's
    /// committed offset (`auto.offset.reset` when there is none).
    fn assign(&mut self) -> Result<(), SourceError> {
        // A new assignment fetches every partition afresh, and librdkafka reports each end
        // again once reached.
        self.at_end.clear();
        let mut list = TopicPartitionList::with_capacity(self.owned.len());
        for &p in &self.owned {
            let offset = self
                .positions
                .get(&p)
                .map_or(Offset::Stored, |&o| Offset::Offset(o));
            list.add_partition_offset(&self.config.topic, p, offset)
                .map_err(SourceError::Assign)?;
        }
        self.consumer.assign(&list).map_err(SourceError::Assign)
    }

    /// This source's partitions, for a committed-offsets query.
    fn committed_list(&self) -> Result<TopicPartitionList, SourceError> {
        let mut list = TopicPartitionList::with_capacity(self.owned.len());
        for &p in &self.owned {
            list.add_partition(&self.config.topic, p);
        }
        self.consumer
            .committed_offsets(list, Duration::from_millis(self.config.commit_timeout_ms))
            .map_err(SourceError::Commit)
    }

    /// `offsets` as a list to commit, each tagged with `epoch` in its metadata.
    fn offset_list(
        &self,
        offsets: &PartitionOffsets,
        epoch: u64,
    ) -> Result<TopicPartitionList, SourceError> {
        let metadata = format!("{EPOCH_METADATA_PREFIX}{epoch}");
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for (&p, &o) in offsets {
            if self.owned.binary_search(&p).is_err() {
                return Err(SourceError::NotOwned {
                    partition: p,
                    owned: self.owned.clone(),
                });
            }
            list.add_partition(&self.config.topic, p)
                .set_metadata(&metadata);
            list.set_partition_offset(&self.config.topic, p, Offset::Offset(o))
                .map_err(SourceError::Commit)?;
        }
        Ok(list)
    }
}

/// The consumer's context: librdkafka's defaults, except that the end of a partition, which
/// [`KafkaSource::poll_batch`] takes as news (see [`KafkaSource::caught_up`]), is not logged
/// as an error.
struct SourceContext;

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka's error event for a partition's end reaches the context as a global
        // error before poll returns it as `PartitionEOF`.
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            DefaultClientContext.error(error, reason);
        }
    }
}

impl ConsumerContext for SourceContext {}

/// The topic's partitions, ascending, from the cluster's metadata.
fn topic_partitions(
    consumer: &BaseConsumer<SourceContext>,
    config: &KafkaSourceConfig,
) -> Result<Vec<i32>, SourceError> {
    let metadata_error = |source| SourceError::Metadata {
        topic: config.topic.clone(),
        source,
    };
    let metadata = consumer
        .fetch_metadata(
            Some(&config.topic),
            Duration::from_millis(config.metadata_timeout_ms),
        )
        .map_err(metadata_error)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == config.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(SourceError::NoPartitions {
            topic: config.topic.clone(),
        });
    }
    partitions.sort_unstable();
    Ok(partitions)
}
