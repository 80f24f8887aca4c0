//! The Kafka bridge (cargo feature `kafka`): a [`KafkaSource`] of events and a transactional
//! [`KafkaSink`] of outputs, both tied to the engine's checkpoints.
//!
//! - [`codec`]: the payload formats (JSON events in, JSON window results out).
//! - [`source`]: events from a topic's partitions, in bounded batches, with offsets.
//! - [`sink`]: outputs written in one Kafka transaction per checkpoint epoch.
//! - [`bridge`]: the runner that ties them to the engine's checkpoints: a pipeline and its
//!   windows from the source to the sink, epoch by epoch, with the protocol below
//!   ([`run_kafka_epochs`]; `agentwire stream kafka` on the command line).
//! - [`testing`]: librdkafka's in-process mock cluster, for tests.
//!
//! # Exactly-once protocol
//!
//! Each shard checkpoints its state together with its input offsets at epoch boundaries, and
//! every output carries its [`OutputId`] (shard, epoch, seq). Per shard, one epoch is:
//!
//! 1. [`KafkaSink::begin_epoch`]`(e)` opens a Kafka transaction.
//! 2. Events from [`KafkaSource::poll_batch`] are processed; each output is
//!    [`KafkaSink::send`]; the records are written to the brokers but stay invisible to
//!    `read_committed` consumers.
//! 3. At the epoch boundary the shard persists its checkpoint: state and
//!    [`KafkaSource::positions`].
//! 4. [`KafkaSink::commit_epoch`]`(e, Some(offsets))` commits the transaction, with the
//!    source offsets added to it ([`KafkaSource::transaction_offsets`], tagged with `e`): the
//!    epoch's outputs and the group's offsets become visible together, or not at all.
//!
//! A crash in 1–3 leaves epoch `e`'s transaction open. The restarted shard makes a new sink
//! with the same `transactional.id` ([`KafkaSinkConfig::transactional_id`]), whose
//! `init_transactions` fences the old producer (a zombie's later writes and commit fail)
//! and aborts the open transaction, so its records are never visible to `read_committed`
//! readers; the broker also aborts it by itself after `transaction_timeout_ms`. The shard
//! restores the checkpoint of epoch `e - 1`, seeks the source to the offsets in it
//! ([`StartFrom::Offsets`] or [`KafkaSource::seek`]) and replays epoch `e`.
//!
//! A crash between 3 and 4 leaves checkpoint `e` durable while the transaction's outcome is
//! unknown to the shard. Kafka decides it: the offsets committed in the transaction carry
//! their epoch in the commit metadata, so [`KafkaSource::committed_epoch`] returns `Some(e)`
//! exactly when epoch `e` committed. The shard restores checkpoint `e` then, and otherwise
//! checkpoint `e - 1` and replays `e` as above. So an epoch's checkpoint counts only once
//! its transaction has committed, and a replay of an epoch reproduces its outputs and their
//! [`OutputId`]s (the engine is deterministic from a checkpoint).
//!
//! Without a transaction ([`KafkaSource::commit_offsets`] with the checkpoint, and a
//! non-transactional producer), outputs are at-least-once; a reader can then drop repeats by
//! [`OutputId`], which a replay reproduces.
//!
//! # Testing against librdkafka's mock cluster
//!
//! The tests run against `rdkafka::mocking::MockCluster` (librdkafka 2.12.1). It accepts the
//! whole transactional protocol (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn) but does not enforce it: its Fetch reports the high watermark as
//! the last stable offset and no aborted transactions, EndTxn writes no commit or abort
//! markers, TxnOffsetCommit does not store the offsets, and an InitProducerId for a known
//! `transactional.id` makes a new producer id instead of bumping the old one's epoch (no
//! fencing). The tests state which guarantee they check on the mock and which only a real
//! broker can show. Because the mock keeps no transactional offsets, a restart of the runner
//! there finds no committed epoch and is refused; the restart tests commit the offsets with
//! the consumer right after each transaction instead ([`OffsetCommit::AfterTransaction`]),
//! which the mock stores.

pub mod bridge;
pub mod codec;
pub mod sink;
pub mod source;
pub mod testing;

/// The `rdkafka` crate this module is built on, re-exported so callers name the same version:
/// for client properties and errors, and for `rdkafka::mocking::MockCluster` in tests.
///
/// ```
/// use agentwire_streaming::kafka::rdkafka::config::ClientConfig;
/// let mut c = ClientConfig::new();
/// c.set("bootstrap.servers", "localhost:9092");
/// ```
pub use rdkafka;

pub use bridge::{
    restore_epoch, run_kafka_epochs, KafkaBridgeError, KafkaEpochConfig, KafkaProgress,
    KafkaRunReport, OffsetCommit, RestoreError, StopReason,
};
pub use codec::{
    decode_event, decode_output_id, encode_event, encode_output, encode_window_result,
    output_key_bytes, window_key_bytes, DecodeError, EncodeError, OutputId, EVENT_ATTRIBUTES_MAX,
};
pub use sink::{KafkaSink, KafkaSinkConfig, SinkError, TxnErrorKind, TxnOp};
pub use source::{
    KafkaSource, KafkaSourceConfig, MalformedMessage, PartitionOffsets, PollOutcome, SourceError,
    StartFrom, TransactionOffsets,
};
