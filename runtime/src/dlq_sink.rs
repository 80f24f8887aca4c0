//! [`DlqSink`]: the router's dead-letter sink in the daemon, the persisted queue
//! ([`crate::dlq`]). Each router shard appends through its own handle on one file (the
//! file's lock orders them).
//!
//! How each refusal reaches the router ([`SinkRefusal`]): the queue's lock held by `agentwire
//! dlq replay` or `purge` is `Busy` (the router keeps the frame and offers it again after a
//! backoff); the sender's or its uid's quota is `OverQuota`, the queue's bounds `Full`, an oversized frame
//! `TooLarge` and an I/O error `Failed` (logged here): for those the router drops the frame,
//! counts it and nacks its sender.
//!
//! ```
//! use agentwire_router::DeadLetterSink;
//! use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
//! use agentwire_runtime::dlq_sink::DlqSink;
//! use agentwire_shm::control::NackReason;
//! let path = std::env::temp_dir().join(format!("aw-dlq-sink-doc-{}.log", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//! let mut sink = DlqSink::new(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
//! assert_eq!(sink.accept(NackReason::DestinationFull, b"a frame"), Ok(1));
//! sink.flush();
//! ```

use crate::dlq::{DeadLetterQueue, DlqError};
use agentwire_router::sink::SinkRefusal;
use agentwire_router::DeadLetterSink;
use agentwire_shm::control::NackReason;

/// The persisted dead-letter queue as a router shard's sink. `try_append` never waits: while
/// `agentwire dlq replay` holds the queue's lock, the router keeps the frame and retries.
///
/// ```
/// # use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
/// # let path = std::env::temp_dir().join(format!("aw-dlq-sink-new-{}.log", std::process::id()));
/// let sink = agentwire_runtime::dlq_sink::DlqSink::new(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
/// assert_eq!(sink.queue().path(), path.as_path());
/// ```
#[derive(Debug)]
pub struct DlqSink {
    dlq: DeadLetterQueue,
}

impl DlqSink {
    /// A sink appending to `dlq`.
    ///
    /// ```
    /// # use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-sink-new2-{}.log", std::process::id()));
    /// let _sink = agentwire_runtime::dlq_sink::DlqSink::new(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
    /// ```
    pub fn new(dlq: DeadLetterQueue) -> Self {
        Self { dlq }
    }

    /// The queue it appends to.
    ///
    /// ```
    /// # use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-sink-q-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let sink = agentwire_runtime::dlq_sink::DlqSink::new(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
    /// assert!(sink.queue().is_empty());
    /// ```
    pub fn queue(&self) -> &DeadLetterQueue {
        &self.dlq
    }
}

impl DeadLetterSink for DlqSink {
    fn accept(&mut self, reason: NackReason, frame: &[u8]) -> Result<u64, SinkRefusal> {
        self.accept_from(reason, frame, None)
    }

    fn accept_from(
        &mut self,
        reason: NackReason,
        frame: &[u8],
        owner_uid: Option<u32>,
    ) -> Result<u64, SinkRefusal> {
        self.dlq
            .try_append_from(reason as u32, frame, owner_uid)
            .map_err(|e| match e {
                DlqError::Busy { .. } => SinkRefusal::Busy,
                DlqError::SenderQuota(_) => SinkRefusal::OverQuota,
                DlqError::Full { .. } => SinkRefusal::Full,
                DlqError::FrameTooLarge { .. } => SinkRefusal::TooLarge,
                other => {
                    tracing::error!("dead-letter queue: {other}");
                    SinkRefusal::Failed
                }
            })
    }

    fn flush(&mut self) {
        if let Err(e) = self.dlq.sync() {
            tracing::error!("dead-letter queue: {e}");
        }
    }
}
