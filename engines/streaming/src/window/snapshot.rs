//! A window operator's whole state as bytes, for checkpoints: the open windows with their
//! aggregates and sketches, the largest event time seen (the watermark), and the counters.
//! Restoring gives an operator that behaves exactly as the one snapshotted: the same
//! outputs, in the same order, for the same further input (see
//! [`WindowOperator::snapshot`](super::WindowOperator::snapshot)).

use serde::{Deserialize, Serialize};

use super::accumulator::Accumulator;
use super::{SpecError, WindowSpec, WindowStats};
use crate::event::Key;

/// One open window, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredWindow {
    pub(crate) key: Key,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    pub(crate) fired: bool,
    pub(crate) acc: Accumulator,
}

/// A window operator's state (see [`WindowOperator::snapshot`](super::WindowOperator::snapshot)).
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::window::{OperatorSnapshot, WindowKind, WindowOperator, WindowSpec};
/// let spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
/// let mut op = WindowOperator::new(spec.clone()).unwrap();
/// op.push(&Event::new(Key::Id(1), 3, 2.0), &mut |_| {});
/// let bytes = op.snapshot().to_bytes();
/// let mut back = WindowOperator::restore(spec, OperatorSnapshot::from_bytes(&bytes).unwrap()).unwrap();
/// let mut out = Vec::new();
/// back.finish(&mut |o| out.push(o));
/// assert_eq!(out.len(), 1);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    pub(crate) max_event_time_ns: Option<i64>,
    pub(crate) stats: WindowStats,
    /// In (key, start) order, so equal states give equal bytes.
    pub(crate) windows: Vec<StoredWindow>,
}

/// Bytes that are not a snapshot, or a snapshot that does not fit the spec.
///
/// ```
/// use agentwire_streaming::window::OperatorSnapshot;
/// assert!(OperatorSnapshot::from_bytes(&[1, 2, 3]).is_err());
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not decode.
    #[error("not a window snapshot: {0}")]
    Decode(#[from] postcard::Error),
    /// The spec is invalid.
    #[error("window spec: {0}")]
    Spec(#[from] SpecError),
    /// More windows than the spec allows, or a window with an end before its start.
    #[error("the snapshot does not fit the spec: {why}")]
    Mismatch {
        /// What does not fit.
        why: String,
    },
}

impl OperatorSnapshot {
    /// The snapshot as bytes (postcard).
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 })).unwrap();
    /// assert!(!op.snapshot().to_bytes().is_empty());
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a snapshot always serialises")
    }

    /// A snapshot from [`to_bytes`](Self::to_bytes) output.
    ///
    /// ```
    /// use agentwire_streaming::window::{OperatorSnapshot, WindowKind, WindowOperator, WindowSpec};
    /// let op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 })).unwrap();
    /// assert!(OperatorSnapshot::from_bytes(&op.snapshot().to_bytes()).is_ok());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Ok(postcard::from_bytes(bytes)?)
    }

    /// Windows open in the snapshot.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 })).unwrap();
    /// assert_eq!(op.snapshot().windows_open(), 0);
    /// ```
    pub fn windows_open(&self) -> usize {
        self.windows.len()
    }

    /// Moves the windows of `snapshots` (one per old shard, taken at the same barrier) to
    /// `shards` new ones by `shard_of` each key: the keys and their state move, nothing is
    /// lost. At a barrier every shard has seen the input's progress, so all share one
    /// watermark; the counters are added up in the new shard 0.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::pipeline::sharded::shard_of;
    /// use agentwire_streaming::window::{OperatorSnapshot, WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// for key in 0..8 {
    ///     op.push(&Event::new(Key::Id(key), 1, 1.0), &mut |_| {});
    /// }
    /// let three = OperatorSnapshot::reshard(vec![op.snapshot()], 3, shard_of);
    /// assert_eq!(three.iter().map(|s| s.windows_open()).sum::<usize>(), 8);
    /// ```
    pub fn reshard(
        snapshots: Vec<OperatorSnapshot>,
        shards: usize,
        shard_of: fn(&Key, usize) -> usize,
    ) -> Vec<OperatorSnapshot> {
        let shards = shards.max(1);
        let max_event_time_ns = snapshots.iter().filter_map(|s| s.max_event_time_ns).max();
        let mut out: Vec<OperatorSnapshot> = (0..shards)
            .map(|_| OperatorSnapshot {
                max_event_time_ns,
                stats: WindowStats::default(),
                windows: Vec::new(),
            })
            .collect();
        for snapshot in snapshots {
            // windows_open is recounted on restore.
            let s = WindowStats {
                windows_open: 0,
                ..snapshot.stats
            };
            out[0].stats.add(&s);
            for w in snapshot.windows {
                out[shard_of(&w.key, shards)].windows.push(w);
            }
        }
        for s in &mut out {
            s.windows.sort_by_key(|w| (w.key, w.start_ns));
        }
        out
    }

    pub(crate) fn check(&self, spec: &WindowSpec) -> Result<(), SnapshotError> {
        if self.windows.len() > spec.open_windows_max {
            let why = format!(
                "{} windows open, the spec allows {}",
                self.windows.len(),
                spec.open_windows_max
            );
            return Err(SnapshotError::Mismatch { why });
        }
        if let Some(w) = self.windows.iter().find(|w| w.end_ns <= w.start_ns) {
            let why = format!("window [{}, {}) of key {}", w.start_ns, w.end_ns, w.key);
            return Err(SnapshotError::Mismatch { why });
        }
        Ok(())
    }
}
