//! The Numenta Anomaly Benchmark's scorer, standard profile (Lavin and Ahmad 2015; the logic
//! of NAB's `nab/sweeper.py` and `nab/runner.py`, re-derived here, not copied).
//!
//! - [`corpus`]: loads the data files and `combined_windows.json`, resolves each window to row
//!   indices, and gives each file its probationary period.
//! - [`sweep`]: the scaled sigmoid and the per-row weighted scores (what a detection on that
//!   row would be worth), the corpus-wide threshold sweep, and scoring at one threshold.
//! - [`report`]: [`score_corpus`] and [`score_detector`], which return a [`Report`].
//!
//! The rules, as NAB applies them:
//! - A row is a detection when its score is `>=` the threshold. One threshold per detector for
//!   the whole corpus: every distinct score is tried, and the one with the largest total raw
//!   score wins (the highest such threshold on a tie; 1.1, "never fire", is also a candidate).
//! - The first `min(floor(0.15 * rows), 0.15 * 5000)` rows of a file are probationary: they
//!   are neither detections nor misses, and a window whose rows are all probationary is not
//!   counted as missed.
//! - `scaled_sigmoid(y) = 2 / (1 + exp(5y)) - 1`, and `-1` for `y > 3`.
//! - In a window of `w` rows ending at row `e`, row `i` has `y = -(e - i + 1) / w`; the window
//!   scores `tp * scaled_sigmoid(y) / scaled_sigmoid(-1)` for its earliest detection (later ones
//!   add nothing), or `-fn` if it has none.
//! - A detection outside every window scores `fp * scaled_sigmoid(|i - e'| / (w' - 1))` against
//!   the preceding window (`e'`, `w'`), or `-fp` if no window precedes it.
//! - Normalised score `= 100 * (raw - null) / (perfect - null)`, with `null` the raw score of a
//!   detector that never fires and `perfect = tp * (number of windows)` (as NAB's runner does).

pub mod corpus;
pub mod report;
pub mod sweep;

pub use corpus::{Corpus, DataFile, WindowRows};
pub use report::{score_corpus, score_detector, FileReport, Report};

use std::path::PathBuf;

/// NAB's standard application profile.
///
/// ```
/// use agentwire_streaming::nab::STANDARD;
/// assert_eq!((STANDARD.tp_weight, STANDARD.fp_weight, STANDARD.fn_weight), (1.0, 0.11, 1.0));
/// ```
pub const STANDARD: Profile = Profile {
    name: "standard",
    tp_weight: 1.0,
    fp_weight: 0.11,
    fn_weight: 1.0,
};

/// The weights of one NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Profile {
    /// The profile's name in NAB.
    pub name: &'static str,
    /// Weight of a window's earliest detection.
    pub tp_weight: f64,
    /// Weight of a detection outside every window.
    pub fp_weight: f64,
    /// Cost of a window without a detection.
    pub fn_weight: f64,
}

/// Why the corpus could not be loaded or scored. Each variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The labels file is not the expected JSON (`{"cat/file.csv": [[start, end], ...]}`).
    #[error("{path}: {source}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A data row is not `timestamp,value`.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A window is malformed: a bound that is no row's timestamp, or windows out of order.
    #[error("{file}: window [{start}, {end}]: {reason}")]
    BadWindow {
        /// The data file, relative to the data directory.
        file: String,
        /// The window's start as written in the labels.
        start: String,
        /// The window's end as written in the labels.
        end: String,
        /// What is wrong.
        reason: String,
    },
    /// The scores given for a file do not fit it.
    #[error("{file}: {reason}")]
    BadScores {
        /// The data file, relative to the data directory.
        file: String,
        /// What is wrong (missing, wrong count, a score outside [0, 1]).
        reason: String,
    },
    /// The detector name is not registered.
    #[error(transparent)]
    UnknownDetector(#[from] crate::detect::UnknownDetector),
}
