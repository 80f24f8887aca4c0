//! What a run is told and what it tells: its epochs and end ([`KafkaEpochConfig`],
//! [`OffsetCommit`]), its progress ([`KafkaProgress`]) and its report ([`KafkaRunReport`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::kafka::source::PartitionOffsets;
use crate::window::WindowStats;

/// The most messages one poll takes ([`KafkaEpochConfig::batch_events_max`]).
///
/// ```
/// use agentwire_streaming::kafka::bridge::{KafkaEpochConfig, BATCH_EVENTS_MAX};
/// assert!(KafkaEpochConfig::default().batch_events_max <= BATCH_EVENTS_MAX);
/// ```
pub const BATCH_EVENTS_MAX: usize = 1 << 16;
/// Where a run commits its source's offsets.
///
/// ```
/// use agentwire_streaming::kafka::bridge::OffsetCommit;
/// assert_eq!(OffsetCommit::default(), OffsetCommit::InTransaction);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OffsetCommit {
    /// Inside each epoch's transaction (`send_offsets_to_transaction`): outputs and offsets
    /// become visible together or not at all. Exactly-once on a broker that stores
    /// transactional offset commits (every real one).
    #[default]
    InTransaction,
    /// With the consumer, right after the transaction commits. A crash between the two
    /// replays an epoch whose outputs are already visible: at-least-once, and a reader drops
    /// the repeats by [`OutputId`](crate::kafka::OutputId) (a replay reproduces them; see the module's notes on
    /// determinism). For clusters that do not store transactional offset commits, such as
    /// librdkafka's mock.
    AfterTransaction,
}

/// How a run cuts its input into epochs, and when it ends.
///
/// ```
/// use agentwire_streaming::kafka::bridge::KafkaEpochConfig;
/// let c = KafkaEpochConfig { epoch_events: 1_000, max_events: Some(10_000), ..KafkaEpochConfig::default() };
/// assert_eq!((c.epoch_ms, c.batch_events_max), (100, 1_024));
/// ```
#[derive(Debug, Clone)]
pub struct KafkaEpochConfig {
    /// Input messages per epoch, malformed ones included (default 10000): an epoch ends at
    /// the first of this and `epoch_ms`. Cut by count alone, epochs fall on the same
    /// messages in every run.
    pub epoch_events: u64,
    /// The most time an epoch lasts from its first message, in ms (default 100, Kafka
    /// Streams' exactly-once commit interval). Outputs become visible to read_committed
    /// readers when their epoch commits, so this bounds their latency; it must be below the
    /// sink's transaction timeout.
    pub epoch_ms: u64,
    /// The most messages one poll takes (default 1024, at most [`BATCH_EVENTS_MAX`]).
    pub batch_events_max: usize,
    /// How long one poll waits for a first message, in ms (default 100, at least 1); the
    /// time triggers and the stop flag are checked between polls.
    pub poll_timeout_ms: u64,
    /// Where the source's offsets are committed (default [`OffsetCommit::InTransaction`]).
    pub offset_commit: OffsetCommit,
    /// End after this many input messages in this run, replayed ones included (default:
    /// no limit).
    pub max_events: Option<u64>,
    /// End once no message came for this long, in ms (default: wait forever).
    pub idle_timeout_ms: Option<u64>,
    /// End once every partition is read to its end ([`KafkaSource::caught_up`](crate::kafka::KafkaSource::caught_up)): a batch run
    /// over what the topic holds (default false).
    pub until_caught_up: bool,
    /// Set to stop: the open epoch is committed, its windows stay open in the checkpoint
    /// (default: none). A replayed epoch runs to its recorded end first.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for KafkaEpochConfig {
    fn default() -> Self {
        Self {
            epoch_events: 10_000,
            epoch_ms: 100,
            batch_events_max: 1_024,
            poll_timeout_ms: 100,
            offset_commit: OffsetCommit::InTransaction,
            max_events: None,
            idle_timeout_ms: None,
            until_caught_up: false,
            stop: None,
        }
    }
}

/// What a run reports while it runs.
///
/// ```
/// use agentwire_streaming::kafka::bridge::KafkaProgress;
/// use agentwire_streaming::kafka::PartitionOffsets;
/// let p = KafkaProgress::Committed { epoch: 3, messages_in: 300, outputs: 12, positions: PartitionOffsets::from([(0, 300)]) };
/// assert!(matches!(p, KafkaProgress::Committed { epoch: 3, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaProgress {
    /// Restored (or started fresh) and about to read.
    Started {
        /// The epoch restored; `None`: a fresh start.
        restored_epoch: Option<u64>,
        /// The epoch the consumer group had committed.
        group_epoch: Option<u64>,
        /// Where the source starts (partitions not listed: the group's committed offset, or
        /// their beginning).
        positions: PartitionOffsets,
        /// When the first epoch replays one whose checkpoint is on disk: the input messages,
        /// counted over the job's life, at which it ends.
        replay_until_messages: Option<u64>,
    },
    /// An epoch committed: its outputs are visible to read_committed readers.
    Committed {
        /// The epoch.
        epoch: u64,
        /// Input messages this run has taken so far.
        messages_in: u64,
        /// Outputs of the epoch.
        outputs: u64,
        /// The source's positions committed with it.
        positions: PartitionOffsets,
    },
    /// Every partition is read to its end and the open epoch's records are acknowledged by
    /// the brokers (still invisible to read_committed readers until the epoch commits).
    /// Reported once each time the run catches up.
    CaughtUp {
        /// The open epoch.
        open_epoch: u64,
        /// Input messages this run has taken so far.
        messages_in: u64,
        /// Outputs sent in the open epoch.
        outputs_sent: u64,
        /// The source's positions.
        positions: PartitionOffsets,
    },
}

/// Why a run ended.
///
/// ```
/// use agentwire_streaming::kafka::bridge::StopReason;
/// assert_eq!(StopReason::CaughtUp.to_string(), "caught up");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`KafkaEpochConfig::max_events`] messages were taken.
    MaxEvents,
    /// No message for [`KafkaEpochConfig::idle_timeout_ms`].
    Idle,
    /// Every partition was read to its end ([`KafkaEpochConfig::until_caught_up`]).
    CaughtUp,
    /// The stop flag was set.
    Stopped,
    /// The replayed epoch was the last one of an earlier run, which ended there; this run
    /// ends with it, as that one did.
    ReplayedEnd,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxEvents => "max events",
            StopReason::Idle => "idle",
            StopReason::CaughtUp => "caught up",
            StopReason::Stopped => "stopped",
            StopReason::ReplayedEnd => "replayed end",
        })
    }
}

/// What a run did.
///
/// ```
/// use agentwire_streaming::kafka::bridge::KafkaRunReport;
/// assert_eq!(KafkaRunReport::default().epochs_committed, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRunReport {
    /// The epoch restored at the start; `None`: a fresh start.
    pub restored_epoch: Option<u64>,
    /// The epoch the consumer group had committed at the start.
    pub group_epoch: Option<u64>,
    /// The last epoch committed (by this run or, if none, the restored one).
    pub committed_epoch: Option<u64>,
    /// Epochs this run committed.
    pub epochs_committed: u64,
    /// Input messages this run took (events and malformed ones), replayed ones included.
    pub messages_in: u64,
    /// Of them, events a filter dropped.
    pub events_filtered: u64,
    /// Of them, messages that were not events.
    pub malformed: u64,
    /// Outputs this run sent (and committed).
    pub outputs: u64,
    /// Why the run ended; `None` only in a report not yet finished.
    pub stopped: Option<StopReason>,
    /// True when the run ended its input: every open window fired.
    pub windows_flushed: bool,
    /// The source's positions at the end.
    pub positions: PartitionOffsets,
    /// The window operator's counters, over the job's life.
    pub windows: WindowStats,
}
