//! [`KafkaSink`]: a shard's outputs written to a Kafka topic in one transaction per
//! checkpoint epoch (the protocol is in [`crate::kafka`]'s documentation).

use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::source::TransactionOffsets;

/// How long a full producer queue is polled per round while [`KafkaSink::send`] waits for room.
const QUEUE_FULL_POLL_MS: u64 = 10;

/// How long one `abort_transaction` attempt blocks before the delivery reports are served.
const ABORT_ROUND_MS: u64 = 50;

/// What a [`KafkaSink`] writes and how much it holds. Built with [`KafkaSinkConfig::new`]
/// and the setters; every limit has a default.
///
/// ```
/// use agentwire_streaming::kafka::KafkaSinkConfig;
/// let c = KafkaSinkConfig::new("localhost:9092", "results", "job-1", 3);
/// assert_eq!(c.transactional_id(), "job-1-shard-3");
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    bootstrap_servers: String,
    topic: String,
    name: String,
    shard: u32,
    in_flight_messages_max: u32,
    in_flight_kbytes_max: u32,
    transaction_timeout_ms: u32,
    operation_timeout_ms: u64,
    queue_full_wait_ms: u64,
    extra: Vec<(String, String)>,
}

impl KafkaSinkConfig {
    /// A sink of shard `shard` writing `topic` on the cluster at `bootstrap_servers`; `name`
    /// names the job and must stay the same across restarts (see
    /// [`KafkaSinkConfig::transactional_id`]). Defaults: `in_flight_messages_max = 100000`
    /// (librdkafka's `queue.buffering.max.messages`), `in_flight_kbytes_max = 65536`
    /// (`queue.buffering.max.kbytes`), `transaction_timeout_ms = 60000` (after which the
    /// broker aborts an open transaction by itself), `operation_timeout_ms = 30000` (each
    /// transactional call), `queue_full_wait_ms = 1000` (how long a send waits for room).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "results", "job-1", 0);
    /// assert_eq!(c.topic(), "results");
    /// ```
    pub fn new(bootstrap_servers: &str, topic: &str, name: &str, shard: u32) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: topic.to_owned(),
            name: name.to_owned(),
            shard,
            in_flight_messages_max: 100_000,
            in_flight_kbytes_max: 64 * 1024,
            transaction_timeout_ms: 60_000,
            operation_timeout_ms: 30_000,
            queue_full_wait_ms: 1_000,
            extra: Vec::new(),
        }
    }

    /// The most records, and KiB, queued or in flight before [`KafkaSink::send`] waits.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "t", "job", 0).in_flight_max(10_000, 16 * 1024);
    /// ```
    pub fn in_flight_max(mut self, messages: u32, kbytes: u32) -> Self {
        self.in_flight_messages_max = messages;
        self.in_flight_kbytes_max = kbytes;
        self
    }

    /// The broker-side transaction timeout, in ms: an epoch must commit within it, and a
    /// crashed shard's open transaction is aborted after it even if the shard never restarts.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "t", "job", 0).transaction_timeout_ms(30_000);
    /// ```
    pub fn transaction_timeout_ms(mut self, ms: u32) -> Self {
        self.transaction_timeout_ms = ms;
        self
    }

    /// How long each transactional call may block, and how long a send waits for queue room,
    /// in ms.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "t", "job", 0).timeouts_ms(10_000, 500);
    /// ```
    pub fn timeouts_ms(mut self, operation_timeout_ms: u64, queue_full_wait_ms: u64) -> Self {
        self.operation_timeout_ms = operation_timeout_ms;
        self.queue_full_wait_ms = queue_full_wait_ms;
        self
    }

    /// Sets any other librdkafka producer property (security, compression, linger.ms, ...).
    /// `transactional.id` is set last, from the name and shard, and cannot be overridden.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "t", "job", 0).set("linger.ms", "5");
    /// ```
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The topic written.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// assert_eq!(KafkaSinkConfig::new("b:9092", "t", "job", 0).topic(), "t");
    /// ```
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The shard whose outputs the sink writes (the `shard` of their [`OutputId`](super::OutputId)s).
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// assert_eq!(KafkaSinkConfig::new("b:9092", "t", "job", 3).shard(), 3);
    /// ```
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The broker-side transaction timeout ([`KafkaSinkConfig::transaction_timeout_ms`]
    /// sets it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// let c = KafkaSinkConfig::new("b:9092", "t", "job", 0);
    /// assert_eq!(c.transaction_timeout(), Duration::from_secs(60));
    /// ```
    pub fn transaction_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.transaction_timeout_ms))
    }

    /// `"{name}-shard-{shard}"`: stable across restarts, so a restarted shard's producer
    /// fences its predecessor (a zombie can no longer commit) and aborts the predecessor's open
    /// transaction; distinct per shard, so shards never fence each other.
    ///
    /// ```
    /// use agentwire_streaming::kafka::KafkaSinkConfig;
    /// assert_eq!(KafkaSinkConfig::new("b:9092", "t", "etl", 12).transactional_id(), "etl-shard-12");
    /// ```
    pub fn transactional_id(&self) -> String {
        format!("{}-shard-{}", self.name, self.shard)
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set(
                "queue.buffering.max.messages",
                self.in_flight_messages_max.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                self.in_flight_kbytes_max.to_string(),
            )
            .set(
                "transaction.timeout.ms",
                self.transaction_timeout_ms.to_string(),
            );
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        // Implies enable.idempotence=true and acks=all.
        c.set("transactional.id", self.transactional_id());
        c
    }
}

/// The transactional step that failed.
///
/// ```
/// use agentwire_streaming::kafka::TxnOp;
/// assert_eq!(TxnOp::Commit.to_string(), "commit_transaction");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOp {
    /// `init_transactions`, when the sink is made.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Waiting for the open epoch's records to be acknowledged.
    Flush,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TxnOp::Init => "init_transactions",
            TxnOp::Begin => "begin_transaction",
            TxnOp::Flush => "flush",
            TxnOp::SendOffsets => "send_offsets_to_transaction",
            TxnOp::Commit => "commit_transaction",
            TxnOp::Abort => "abort_transaction",
        })
    }
}

/// What a failed transactional step leaves the caller to do.
///
/// ```
/// use agentwire_streaming::kafka::TxnErrorKind;
/// let next = |k| match k {
///     TxnErrorKind::Retriable => "call it again",
///     TxnErrorKind::Abortable => "abort_epoch, then replay the epoch",
///     TxnErrorKind::Fatal => "drop the sink, restore the shard from its checkpoint",
/// };
/// assert_eq!(next(TxnErrorKind::Fatal), "drop the sink, restore the shard from its checkpoint");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnErrorKind {
    /// Timed out or a transient broker condition; the same call may be repeated.
    Retriable,
    /// The epoch's transaction cannot commit; [`KafkaSink::abort_epoch`] and replay it.
    Abortable,
    /// The producer is unusable (fenced by a newer instance of this shard, or an unknown
    /// state); every later call fails with [`SinkError::Failed`].
    Fatal,
}

/// A failed sink operation.
///
/// ```
/// use agentwire_streaming::kafka::SinkError;
/// let e = SinkError::NoOpenEpoch { op: "send" };
/// assert_eq!(e.to_string(), "send needs an open epoch; call begin_epoch first");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The producer could not be created (a bad property, most often).
    #[error("creating the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    /// An operation that needs an open epoch was called with none open.
    #[error("{op} needs an open epoch; call begin_epoch first")]
    NoOpenEpoch {
        /// The operation.
        op: &'static str,
    },
    /// `begin_epoch` while another epoch is open.
    #[error("epoch {open} is still open; commit or abort it before beginning epoch {epoch}")]
    EpochOpen {
        /// The open epoch.
        open: u64,
        /// The epoch asked for.
        epoch: u64,
    },
    /// `begin_epoch` with an epoch not after the last one committed by this sink.
    #[error("epoch {epoch} is not after the last committed epoch {last_committed}")]
    EpochNotAfter {
        /// The epoch asked for.
        epoch: u64,
        /// The last committed epoch.
        last_committed: u64,
    },
    /// `commit_epoch` named an epoch other than the open one.
    #[error("commit of epoch {epoch}, but epoch {open} is the open one")]
    EpochMismatch {
        /// The open epoch.
        open: u64,
        /// The epoch named.
        epoch: u64,
    },
    /// `commit_epoch` was given source offsets tagged with another epoch.
    #[error("commit of epoch {epoch} with source offsets of epoch {tagged}")]
    OffsetsEpochMismatch {
        /// The epoch committed.
        epoch: u64,
        /// The epoch the offsets were made for.
        tagged: u64,
    },
    /// The producer queue stayed full for `queue_full_wait_ms`; the record was not sent.
    #[error(
        "the producer queue is full ({in_flight} records in flight) after waiting {waited_ms} ms"
    )]
    QueueFull {
        /// Records queued or in flight.
        in_flight: i32,
        /// How long the send waited.
        waited_ms: u64,
    },
    /// The record was refused before it was queued (too large, for example); the epoch is
    /// unaffected.
    #[error("sending a record: {0}")]
    Send(#[source] KafkaError),
    /// A transactional step failed; `kind` says what to do next.
    #[error("{op} failed ({kind:?}): {source}")]
    Transaction {
        /// The step.
        op: TxnOp,
        /// What the failure leaves the caller to do.
        kind: TxnErrorKind,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// An earlier fatal error made the producer unusable.
    #[error("the sink's producer failed fatally earlier; make a new sink")]
    Failed,
}

/// A shard's transactional writer: one Kafka transaction per checkpoint epoch.
///
/// ```no_run
/// use agentwire_streaming::event::Key;
/// use agentwire_streaming::kafka::{encode_window_result, window_key_bytes, KafkaSink, KafkaSinkConfig, OutputId};
/// use agentwire_streaming::window::WindowResult;
/// let mut sink = KafkaSink::new(KafkaSinkConfig::new("localhost:9092", "results", "job-1", 0))?;
/// let r = WindowResult { key: Key::Id(7), start_ns: 0, end_ns: 1_000, count: 1, sum: 1.0,
///     min: 1.0, max: 1.0, mean: 1.0, quantiles: vec![], late: false };
/// let (mut key, mut payload) = (Vec::new(), Vec::new());
/// sink.begin_epoch(1)?;
/// window_key_bytes(&r.key, &mut key);
/// encode_window_result(&r, OutputId { shard: 0, epoch: 1, seq: 0 }, &mut payload);
/// sink.send(&key, &payload)?;
/// sink.commit_epoch(1, None)?; // visible to read_committed consumers from here on
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KafkaSink {
    producer: BaseProducer,
    config: KafkaSinkConfig,
    open_epoch: Option<u64>,
    last_committed_epoch: Option<u64>,
    sent_in_epoch: u64,
    failed: bool,
}

impl KafkaSink {
    /// Creates the transactional producer and registers its `transactional.id` with the
    /// cluster (`init_transactions`), which fences any earlier producer of this shard and
    /// aborts the transaction it left open.
    ///
    /// ```no_run
    /// use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// let sink = KafkaSink::new(KafkaSinkConfig::new("localhost:9092", "results", "job-1", 0))?;
    /// assert_eq!(sink.open_epoch(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(config: KafkaSinkConfig) -> Result<Self, SinkError> {
        let producer: BaseProducer = config.client_config().create().map_err(SinkError::Create)?;
        let mut sink = Self {
            producer,
            config,
            open_epoch: None,
            last_committed_epoch: None,
            sent_in_epoch: 0,
            failed: false,
        };
        let timeout = sink.operation_timeout();
        let result = sink.producer.init_transactions(timeout);
        sink.check(TxnOp::Init, result)?;
        Ok(sink)
    }

    /// The sink's configuration.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// println!("{}", sink.config().transactional_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &KafkaSinkConfig {
        &self.config
    }

    /// The epoch whose transaction is open, if any.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(5)?;
    /// assert_eq!(sink.open_epoch(), Some(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_epoch(&self) -> Option<u64> {
        self.open_epoch
    }

    /// The last epoch this sink committed, if any.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(5)?;
    /// sink.commit_epoch(5, None)?;
    /// assert_eq!(sink.last_committed_epoch(), Some(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_committed_epoch(&self) -> Option<u64> {
        self.last_committed_epoch
    }

    /// Records sent in the open epoch (0 when none is open).
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(1)?;
    /// sink.send(b"k", b"v")?;
    /// assert_eq!(sink.sent_in_epoch(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sent_in_epoch(&self) -> u64 {
        self.sent_in_epoch
    }

    /// Opens `epoch`'s transaction. Epochs a sink commits only go up; a restarted shard makes
    /// a new sink and begins at the epoch after its checkpoint.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(1)?;
    /// assert!(sink.begin_epoch(2).is_err()); // epoch 1 is still open
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_epoch(&mut self, epoch: u64) -> Result<(), SinkError> {
        self.usable()?;
        if let Some(open) = self.open_epoch {
            return Err(SinkError::EpochOpen { open, epoch });
        }
        if let Some(last_committed) = self.last_committed_epoch.filter(|&c| c >= epoch) {
            return Err(SinkError::EpochNotAfter {
                epoch,
                last_committed,
            });
        }
        let result = self.producer.begin_transaction();
        self.check(TxnOp::Begin, result)?;
        self.open_epoch = Some(epoch);
        self.sent_in_epoch = 0;
        Ok(())
    }

    /// Queues one record (Kafka message key and value) in the open epoch's transaction. When
    /// `in_flight_max` records are already queued it serves delivery reports for up to
    /// `queue_full_wait_ms`, then gives up with [`SinkError::QueueFull`].
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(1)?;
    /// sink.send(b"db-1", br#"{"shard":0,"epoch":1,"seq":0}"#)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<(), SinkError> {
        self.usable()?;
        if self.open_epoch.is_none() {
            return Err(SinkError::NoOpenEpoch { op: "send" });
        }
        let started = Instant::now();
        let wait = Duration::from_millis(self.config.queue_full_wait_ms);
        loop {
            let record = BaseRecord::to(&self.config.topic).key(key).payload(payload);
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if started.elapsed() >= wait {
                        return Err(SinkError::QueueFull {
                            in_flight: self.producer.in_flight_count(),
                            waited_ms: self.config.queue_full_wait_ms,
                        });
                    }
                    self.producer
                        .poll(Duration::from_millis(QUEUE_FULL_POLL_MS));
                }
                Err((e, _)) => return Err(SinkError::Send(e)),
            }
        }
        // Serve delivery reports as they come, so the queue drains without a poller thread.
        self.producer.poll(Duration::ZERO);
        self.sent_in_epoch += 1;
        Ok(())
    }

    /// Waits until every record of the open epoch is acknowledged by its broker. They are
    /// still invisible to read_committed consumers: that takes [`KafkaSink::commit_epoch`].
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(1)?;
    /// sink.send(b"k", b"v")?;
    /// sink.flush()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.usable()?;
        if self.open_epoch.is_none() {
            return Err(SinkError::NoOpenEpoch { op: "flush" });
        }
        let result = self.producer.flush(self.operation_timeout());
        self.check(TxnOp::Flush, result)
    }

    /// Commits the open epoch, `epoch`: its records become visible to read_committed consumers,
    /// and `offsets` (the source positions of the epoch's checkpoint), when given, are
    /// committed for their consumer group in the same transaction. Call it when the shard's
    /// checkpoint for `epoch` is durable. A [`TxnErrorKind::Retriable`] failure may be retried
    /// with the same arguments.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, StartFrom};
    /// # let source = KafkaSource::new(KafkaSourceConfig::new("b:9092", "in", "g"), StartFrom::Committed)?;
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(7)?;
    /// // ... send the epoch's outputs, persist the checkpoint with source.positions() ...
    /// let offsets = source.transaction_offsets(source.positions(), 7)?;
    /// sink.commit_epoch(7, Some(&offsets))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_epoch(
        &mut self,
        epoch: u64,
        offsets: Option<&TransactionOffsets>,
    ) -> Result<(), SinkError> {
        self.usable()?;
        match self.open_epoch {
            None => return Err(SinkError::NoOpenEpoch { op: "commit_epoch" }),
            Some(open) if open != epoch => return Err(SinkError::EpochMismatch { open, epoch }),
            Some(_) => {}
        }
        if let Some(tagged) = offsets
            .map(TransactionOffsets::epoch)
            .filter(|&t| t != epoch)
        {
            return Err(SinkError::OffsetsEpochMismatch { epoch, tagged });
        }
        let timeout = self.operation_timeout();
        if let Some(o) = offsets {
            let result = self
                .producer
                .send_offsets_to_transaction(&o.list, &o.group, timeout);
            self.check(TxnOp::SendOffsets, result)?;
        }
        let result = self.producer.commit_transaction(timeout);
        self.check(TxnOp::Commit, result)?;
        self.open_epoch = None;
        self.last_committed_epoch = Some(epoch);
        self.sent_in_epoch = 0;
        Ok(())
    }

    /// Aborts the open epoch's transaction: none of its records become visible. Then the epoch
    /// can be replayed from the checkpoint. Nothing to do when no epoch is open.
    ///
    /// ```no_run
    /// # use agentwire_streaming::kafka::{KafkaSink, KafkaSinkConfig};
    /// # let mut sink = KafkaSink::new(KafkaSinkConfig::new("b:9092", "t", "job", 0))?;
    /// sink.begin_epoch(3)?;
    /// sink.send(b"k", b"v")?;
    /// sink.abort_epoch()?;
    /// sink.begin_epoch(3)?; // replay
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort_epoch(&mut self) -> Result<(), SinkError> {
        self.usable()?;
        if self.open_epoch.is_none() {
            return Ok(());
        }
        // librdkafka's abort purges the queued records, then waits for the delivery reports of
        // those in flight, and this producer receives them on its event queue, which only a
        // poll serves: so abort in short rounds and poll between them, until the deadline.
        // (Purging here instead would leave a gap in the idempotent sequence numbers, which
        // fails the next epoch's commit with "skipped sequence numbers".)
        let deadline = Instant::now() + self.operation_timeout();
        let round = Duration::from_millis(ABORT_ROUND_MS);
        loop {
            match self.producer.abort_transaction(round) {
                Ok(()) => break,
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && Instant::now() < deadline =>
                {
                    self.producer.poll(round);
                }
                Err(e) => return self.check(TxnOp::Abort, Err(e)),
            }
        }
        self.open_epoch = None;
        self.sent_in_epoch = 0;
        Ok(())
    }

    fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.config.operation_timeout_ms)
    }

    fn usable(&self) -> Result<(), SinkError> {
        if self.failed {
            Err(SinkError::Failed)
        } else {
            Ok(())
        }
    }

    /// Maps a transactional step's result, marking the sink failed on a fatal error.
    fn check(&mut self, op: TxnOp, result: Result<(), KafkaError>) -> Result<(), SinkError> {
        let Err(source) = result else {
            return Ok(());
        };
        let kind = classify(&source);
        if kind == TxnErrorKind::Fatal {
            self.failed = true;
        }
        Err(SinkError::Transaction { op, kind, source })
    }
}

/// What an error from a transactional call leaves the caller to do, as librdkafka flags it.
/// A flush that timed out can be repeated; anything unflagged is treated as fatal, since the
/// transaction's state is then unknown and only a new producer (which fences this one and
/// aborts its transaction) makes it known again.
fn classify(error: &KafkaError) -> TxnErrorKind {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnErrorKind::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnErrorKind::Abortable,
        KafkaError::Transaction(e) if e.is_retriable() => TxnErrorKind::Retriable,
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => TxnErrorKind::Retriable,
        _ => TxnErrorKind::Fatal,
    }
}
