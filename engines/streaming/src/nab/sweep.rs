//! Per-row weighted scores, the corpus-wide threshold sweep, and scoring at one threshold.

use super::{DataFile, Profile};

/// Score at or above which NAB starts its sweep: no row is a detection.
pub const THRESHOLD_NEVER: f64 = 1.1;

/// NAB's scaled sigmoid: `2 / (1 + exp(5y)) - 1`, and `-1` for `y > 3`.
///
/// ```
/// use agentwire_streaming::nab::sweep::scaled_sigmoid;
/// assert!((scaled_sigmoid(-1.0) - 0.986_614_298).abs() < 1e-9);
/// assert_eq!(scaled_sigmoid(0.0), 0.0);
/// assert_eq!(scaled_sigmoid(3.5), -1.0);
/// ```
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// A row after the probationary period: what a detection on it is worth, and its window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScorableRow {
    /// Row index in its file.
    pub index: usize,
    /// Index of the window holding the row (into the file's windows), if any.
    pub window: Option<usize>,
    /// Weighted score of a detection here: a true positive's if in a window, else a false
    /// positive's (negative).
    pub weighted: f64,
}

/// The scorable rows of `file` under `profile`, in row order (NAB's `calcSweepScore`, less
/// the probationary rows).
///
/// ```
/// use agentwire_streaming::nab::{sweep::scorable_rows, DataFile, WindowRows, STANDARD};
/// let file = DataFile { relative_path: "f".into(), timestamps_ns: (0..20).collect(),
///     values: vec![0.0; 20], windows: vec![WindowRows { first_index: 10, last_index: 11 }] };
/// let rows = scorable_rows(&file, &STANDARD);
/// assert_eq!(rows[0].index, 3); // floor(0.15 * 20) probationary rows
/// assert_eq!(rows[7].window, Some(0));
/// assert_eq!(rows[7].weighted, 1.0); // the window's first row is worth tp exactly
/// ```
pub fn scorable_rows(file: &DataFile, profile: &Profile) -> Vec<ScorableRow> {
    let rows = file.timestamps_ns.len();
    let probation = file.probationary_rows();
    let tp_max = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(rows.saturating_sub(probation));
    let mut next_window = 0;
    let mut current: Option<usize> = None;
    let mut previous: Option<usize> = None;
    for i in 0..rows {
        if current.is_none()
            && file
                .windows
                .get(next_window)
                .is_some_and(|w| w.first_index == i)
        {
            current = Some(next_window);
            next_window += 1;
        }
        let weighted = match (current, previous) {
            (Some(k), _) => {
                let w = file.windows[k];
                let y = -((w.last_index - i + 1) as f64) / w.rows() as f64;
                scaled_sigmoid(y) * profile.tp_weight / tp_max
            }
            (None, None) => -profile.fp_weight,
            (None, Some(k)) => {
                let w = file.windows[k];
                // NAB divides by (width - 1); a one-row window would divide by zero there.
                // Here that gives +inf, i.e. "far past the window": -fp.
                let y = (i - w.last_index) as f64 / (w.rows() as f64 - 1.0);
                scaled_sigmoid(y) * profile.fp_weight
            }
        };
        if i >= probation {
            out.push(ScorableRow {
                index: i,
                window: current,
                weighted,
            });
        }
        if let Some(k) = current {
            if file.windows[k].last_index == i {
                previous = Some(k);
                current = None;
            }
        }
    }
    out
}

/// One file's outcome at a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileOutcome {
    /// The file's raw score.
    pub raw: f64,
    /// Windows with a detection.
    pub tp_windows: u64,
    /// Windows with a scorable row and no detection.
    pub fn_windows: u64,
    /// Detections outside every window.
    pub fp_rows: u64,
    /// Windows with at least one scorable row (the null detector misses exactly these).
    pub scorable_windows: u64,
}

/// Scores one file at `threshold`: a row with `scores[index] >= threshold` is a detection.
///
/// ```
/// use agentwire_streaming::nab::{sweep::{outcome_at, scorable_rows}, DataFile, WindowRows, STANDARD};
/// let file = DataFile { relative_path: "f".into(), timestamps_ns: (0..20).collect(),
///     values: vec![0.0; 20], windows: vec![WindowRows { first_index: 10, last_index: 11 }] };
/// let rows = scorable_rows(&file, &STANDARD);
/// let mut scores = vec![0.0; 20];
/// scores[10] = 1.0;
/// let o = outcome_at(&file, &rows, &scores, 0.5, &STANDARD);
/// assert_eq!((o.raw, o.tp_windows, o.fn_windows, o.fp_rows), (1.0, 1, 0, 0));
/// ```
pub fn outcome_at(
    file: &DataFile,
    rows: &[ScorableRow],
    scores: &[f64],
    threshold: f64,
    profile: &Profile,
) -> FileOutcome {
    let mut best: Vec<Option<f64>> = vec![None; file.windows.len()];
    let mut scorable = vec![false; file.windows.len()];
    let mut outcome = FileOutcome::default();
    let mut fp_sum = 0.0;
    for row in rows {
        if let Some(k) = row.window {
            scorable[k] = true;
        }
        if scores[row.index] < threshold {
            continue;
        }
        match row.window {
            // Rows come in order, so the first detection of a window is its best one.
            Some(k) => {
                best[k].get_or_insert(row.weighted);
            }
            None => {
                fp_sum += row.weighted;
                outcome.fp_rows += 1;
            }
        }
    }
    let mut window_sum = 0.0;
    for (b, s) in best.iter().zip(&scorable) {
        if !*s {
            continue;
        }
        outcome.scorable_windows += 1;
        match b {
            Some(v) => {
                window_sum += v;
                outcome.tp_windows += 1;
            }
            None => {
                window_sum -= profile.fn_weight;
                outcome.fn_windows += 1;
            }
        }
    }
    outcome.raw = window_sum + fp_sum;
    outcome
}

/// A scorable row of the whole corpus, for the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepRow {
    /// The detector's score of the row.
    pub score: f64,
    /// Corpus-wide window index, if the row is in a window.
    pub window: Option<usize>,
    /// As [`ScorableRow::weighted`].
    pub weighted: f64,
}

/// The threshold with the largest total raw score over `rows` (NAB's `calcScoreByThreshold`
/// followed by taking the best): every distinct score is tried, from [`THRESHOLD_NEVER`]
/// down; a tie keeps the higher threshold. Returns `(threshold, raw)`.
///
/// `window_count` is the number of corpus-wide windows; windows with no row in `rows` are not
/// charged (they are wholly probationary).
///
/// ```
/// use agentwire_streaming::nab::{sweep::{best_threshold, SweepRow}, STANDARD};
/// let rows = [
///     SweepRow { score: 0.9, window: Some(0), weighted: 1.0 },
///     SweepRow { score: 0.7, window: None, weighted: -0.11 },
/// ];
/// assert_eq!(best_threshold(rows.to_vec(), 1, &STANDARD), (0.9, 1.0));
/// ```
pub fn best_threshold(
    mut rows: Vec<SweepRow>,
    window_count: usize,
    profile: &Profile,
) -> (f64, f64) {
    rows.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut best: Vec<Option<f64>> = vec![None; window_count];
    let mut charged = vec![false; window_count];
    for r in &rows {
        if let Some(k) = r.window {
            charged[k] = true;
        }
    }
    let mut undetected = charged.iter().filter(|c| **c).count() as f64;
    let mut detected_sum = 0.0;
    let mut fp_sum = 0.0;
    let total = |detected_sum: f64, fp_sum: f64, undetected: f64| {
        fp_sum + detected_sum - profile.fn_weight * undetected
    };
    let mut current = THRESHOLD_NEVER;
    let mut winner = (current, total(detected_sum, fp_sum, undetected));
    for r in &rows {
        if r.score != current {
            let t = total(detected_sum, fp_sum, undetected);
            if t > winner.1 {
                winner = (current, t);
            }
            current = r.score;
        }
        match r.window {
            None => fp_sum += r.weighted,
            Some(k) => match best[k] {
                None => {
                    best[k] = Some(r.weighted);
                    detected_sum += r.weighted;
                    undetected -= 1.0;
                }
                Some(v) if r.weighted > v => {
                    best[k] = Some(r.weighted);
                    detected_sum += r.weighted - v;
                }
                Some(_) => {}
            },
        }
    }
    let t = total(detected_sum, fp_sum, undetected);
    if t > winner.1 {
        winner = (current, t);
    }
    winner
}
