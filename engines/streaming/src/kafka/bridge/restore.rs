//! The restore: which checkpoint a run starts from ([`restore_epoch`]), and the shard state
//! a checkpoint holds.

use serde::{Deserialize, Serialize};

use super::{KafkaBridgeError, Run, Totals};
use crate::exactly_once::checkpoint::Manifest;
use crate::kafka::source::PartitionOffsets;
use crate::window::{OperatorSnapshot, WindowOperator};

/// The first bytes of a shard checkpoint written by this runner (a checkpoint directory of
/// the log runner, or of another format, is refused rather than misread).
pub(super) const STATE_MAGIC: [u8; 8] = *b"awkafka1";

/// Why no checkpoint can be restored: the consumer group's committed epoch and the newest
/// checkpoint do not fit the protocol, so either choice could repeat or lose outputs.
///
/// ```
/// use agentwire_streaming::kafka::bridge::RestoreError;
/// let e = RestoreError::NoCheckpoint { group_epoch: 4 };
/// assert!(e.to_string().starts_with("the consumer group committed epoch 4"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The group committed an epoch, but there is no checkpoint.
    #[error("the consumer group committed epoch {group_epoch}, but the checkpoint directory holds no checkpoint: it is not this job's, or it was lost; give the job's checkpoint directory, or start over with a new consumer group and transactional id")]
    NoCheckpoint {
        /// The group's epoch.
        group_epoch: u64,
    },
    /// A checkpoint past the first epoch exists, but the group has no committed epoch.
    #[error("checkpoint epoch {checkpoint_epoch} exists, but the consumer group holds no offsets committed by this job: they expired (offsets.retention.minutes), the group was reset or is another one, or the cluster does not store offsets committed in transactions (librdkafka's mock cluster does not; use offsets committed after the transaction there); whether epoch {checkpoint_epoch} committed is unknown, so nothing is restored")]
    GroupOffsetsMissing {
        /// The newest checkpoint.
        checkpoint_epoch: u64,
    },
    /// The group's epoch is neither the newest checkpoint's nor the one before.
    #[error("the consumer group committed epoch {group_epoch}, but the newest checkpoint that checks out is epoch {checkpoint_epoch}; a commit always follows its checkpoint, so the group's epoch must be {checkpoint_epoch} or the one before: the checkpoint directory is another job's, or lost or damaged its newest epochs")]
    Mismatch {
        /// The group's epoch.
        group_epoch: u64,
        /// The newest checkpoint.
        checkpoint_epoch: u64,
    },
}

/// The epoch to restore (0: none, start fresh), from the newest checkpoint that checks out
/// and the epoch the consumer group committed: a checkpoint counts once its epoch's
/// transaction has committed, and checkpoint `e` is written only after epoch `e - 1`
/// committed, so the group's epoch is the newest checkpoint's or the one before.
///
/// ```
/// use agentwire_streaming::kafka::bridge::{restore_epoch, RestoreError};
/// assert_eq!(restore_epoch(None, None), Ok(0)); // a new job
/// assert_eq!(restore_epoch(Some(5), Some(5)), Ok(5)); // epoch 5 committed
/// assert_eq!(restore_epoch(Some(5), Some(4)), Ok(4)); // crashed before committing 5
/// assert_eq!(restore_epoch(Some(1), None), Ok(0)); // crashed before committing 1
/// assert_eq!(restore_epoch(Some(5), None), Err(RestoreError::GroupOffsetsMissing { checkpoint_epoch: 5 }));
/// assert_eq!(restore_epoch(Some(5), Some(3)), Err(RestoreError::Mismatch { group_epoch: 3, checkpoint_epoch: 5 }));
/// assert_eq!(restore_epoch(None, Some(2)), Err(RestoreError::NoCheckpoint { group_epoch: 2 }));
/// ```
pub fn restore_epoch(
    checkpoint_epoch: Option<u64>,
    group_epoch: Option<u64>,
) -> Result<u64, RestoreError> {
    // Epochs count from 1; 0 stands for "none" on both sides.
    let checkpoint_epoch = checkpoint_epoch.unwrap_or(0);
    let group_epoch = group_epoch.unwrap_or(0);
    if group_epoch == checkpoint_epoch || group_epoch.checked_add(1) == Some(checkpoint_epoch) {
        Ok(group_epoch)
    } else if checkpoint_epoch == 0 {
        Err(RestoreError::NoCheckpoint { group_epoch })
    } else if group_epoch == 0 {
        Err(RestoreError::GroupOffsetsMissing { checkpoint_epoch })
    } else {
        Err(RestoreError::Mismatch {
            group_epoch,
            checkpoint_epoch,
        })
    }
}

/// One shard's checkpoint: what the shard file of an epoch holds.
#[derive(Serialize, Deserialize)]
pub(super) struct ShardState {
    pub(super) magic: [u8; 8],
    /// The source's topic (a checkpoint is restored only into a run of the same topic).
    pub(super) topic: String,
    /// The source's next offset per partition.
    pub(super) positions: PartitionOffsets,
    /// True when the epoch ended the input: every window fired.
    pub(super) finished: bool,
    pub(super) operator: OperatorSnapshot,
}

/// Where the first epoch of a run ends when it replays an epoch whose checkpoint is on disk.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplayEnd {
    /// Input messages over the job's life at the checkpoint.
    pub(super) messages_total: u64,
    /// Whether that epoch ended its run's input.
    pub(super) finished: bool,
}

impl Run<'_> {
    /// Decides the epoch to restore, restores the operator and the counters, and seeks the
    /// source; returns the epoch and, when the next epoch's checkpoint is on disk, where the
    /// replay of that epoch ends.
    pub(super) fn restore(&mut self) -> Result<(u64, Option<ReplayEnd>), KafkaBridgeError> {
        let latest = self.store.latest()?;
        let group_epoch = self.source.committed_epoch()?;
        self.report.group_epoch = group_epoch;
        let newest = latest.as_ref().map(|(m, _)| m.epoch);
        let epoch = restore_epoch(newest, group_epoch)?;
        let replay = match (&latest, newest) {
            (Some((manifest, states)), Some(n)) if n == epoch + 1 => {
                let state = self.decode(manifest, states)?;
                Some(ReplayEnd {
                    messages_total: manifest.events_in,
                    finished: state.finished,
                })
            }
            _ => None,
        };
        if epoch == 0 {
            // A fresh start: the group's committed offsets, or each partition's beginning.
            return Ok((0, replay));
        }
        let (manifest, states) = match latest.filter(|(m, _)| m.epoch == epoch) {
            Some(found) => found,
            None => self
                .store
                .load(epoch)?
                .ok_or_else(|| KafkaBridgeError::Checkpointed {
                    epoch,
                    why: "the consumer group committed this epoch, but its checkpoint is missing \
                      or damaged"
                        .into(),
                })?,
        };
        let state = self.decode(&manifest, &states)?;
        self.op = WindowOperator::restore(self.pipeline.window().clone(), state.operator)?;
        self.totals = Totals {
            messages: manifest.events_in,
            filtered: manifest.events_filtered,
            malformed: manifest.records_malformed,
        };
        self.source.seek(&state.positions)?;
        Ok((epoch, replay))
    }

    /// An epoch's shard state, checked to be this runner's, of this topic, one shard.
    fn decode(
        &self,
        manifest: &Manifest,
        states: &[Vec<u8>],
    ) -> Result<ShardState, KafkaBridgeError> {
        let refuse = |why: String| KafkaBridgeError::Checkpointed {
            epoch: manifest.epoch,
            why,
        };
        let [bytes] = states else {
            return Err(refuse(format!(
                "{} shards; the Kafka runner writes one per checkpoint directory",
                states.len()
            )));
        };
        let state: ShardState = postcard::from_bytes(bytes)
            .ok()
            .filter(|s: &ShardState| s.magic == STATE_MAGIC)
            .ok_or_else(|| refuse("not a checkpoint of the Kafka runner".into()))?;
        if state.topic != self.topic {
            return Err(refuse(format!(
                "it reads topic {:?}, this run reads {:?}; give each job its own checkpoint \
                 directory",
                state.topic, self.topic
            )));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_the_groups_epoch_when_it_is_the_newest_checkpoint_or_the_one_before() {
        for newest in 1..=4u64 {
            assert_eq!(restore_epoch(Some(newest), Some(newest)), Ok(newest));
            assert_eq!(
                restore_epoch(Some(newest), Some(newest - 1).filter(|&e| e > 0)),
                Ok(newest - 1)
            );
        }
    }

    #[test]
    fn refuses_every_other_pair_rather_than_guess() {
        for newest in 0..=5u64 {
            for group in 0..=6u64 {
                let fits = group == newest || group + 1 == newest;
                let result = restore_epoch(
                    Some(newest).filter(|&e| e > 0),
                    Some(group).filter(|&e| e > 0),
                );
                assert_eq!(
                    result.is_ok(),
                    fits,
                    "checkpoint {newest}, group {group}: {result:?}"
                );
            }
        }
    }
}
