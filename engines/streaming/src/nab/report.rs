//! Scoring a detector's output over the corpus: one threshold, per-file breakdown, normalised.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::sweep::{best_threshold, outcome_at, scorable_rows, SweepRow};
use super::{Corpus, NabError, Profile, STANDARD};
use crate::detect::by_name;

/// One file's part of a [`Report`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileReport {
    /// Path relative to the data directory.
    pub relative_path: String,
    /// Rows in the file.
    pub rows: usize,
    /// Leading rows that are not scored.
    pub probationary_rows: usize,
    /// Labelled windows in the file.
    pub windows: usize,
    /// The file's raw score at the corpus threshold.
    pub raw: f64,
    /// Windows with a detection.
    pub tp_windows: u64,
    /// Windows missed (wholly probationary windows are neither).
    pub fn_windows: u64,
    /// Detections outside every window.
    pub fp_rows: u64,
}

/// A detector's NAB result on a corpus, standard profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The detector's name.
    pub detector: String,
    /// The profile's weights.
    pub profile: Profile,
    /// `100 * (raw - null) / (perfect - null)`: 0 for the null detector, 100 for a perfect one.
    pub score_normalised: f64,
    /// Total raw score at the chosen threshold.
    pub raw: f64,
    /// Raw score of a detector that never fires (the baseline).
    pub null: f64,
    /// Raw score of a detector that fires on the first row of every window and nowhere else.
    pub perfect: f64,
    /// The corpus-wide threshold (1.1 means "never fire" was best).
    pub threshold: f64,
    /// Windows with a detection.
    pub tp_windows: u64,
    /// Windows missed.
    pub fn_windows: u64,
    /// Detections outside every window.
    pub fp_rows: u64,
    /// Labelled windows in the corpus.
    pub windows: u64,
    /// Rows in the corpus.
    pub rows: u64,
    /// Detector cost, when [`score_detector`] ran it: wall time per row (not deterministic).
    pub detect_ns_per_row: Option<f64>,
    /// Per-file breakdown, in corpus order.
    pub files: Vec<FileReport>,
}

impl Corpus {
    /// Scores per-file detector output against this corpus. `scores` maps each file's relative
    /// path to one score in [0, 1] per row.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use agentwire_streaming::nab::{Corpus, DataFile, WindowRows};
    /// let file = DataFile { relative_path: "f.csv".into(), timestamps_ns: (0..20).collect(),
    ///     values: vec![0.0; 20], windows: vec![WindowRows { first_index: 10, last_index: 11 }] };
    /// let corpus = Corpus { files: vec![file] };
    /// let mut perfect = vec![0.0; 20];
    /// perfect[10] = 1.0;
    /// let report = corpus.score("perfect", &BTreeMap::from([("f.csv".to_string(), perfect)])).unwrap();
    /// assert_eq!(report.score_normalised, 100.0);
    /// ```
    pub fn score(
        &self,
        detector: &str,
        scores: &BTreeMap<String, Vec<f64>>,
    ) -> Result<Report, NabError> {
        let profile = STANDARD;
        let per_file_rows: Vec<_> = self
            .files
            .iter()
            .map(|f| scorable_rows(f, &profile))
            .collect();
        let mut sweep = Vec::with_capacity(per_file_rows.iter().map(Vec::len).sum());
        let mut window_base = 0;
        for (file, rows) in self.files.iter().zip(&per_file_rows) {
            let file_scores = checked_scores(file, scores)?;
            sweep.extend(rows.iter().map(|r| SweepRow {
                score: file_scores[r.index],
                window: r.window.map(|k| window_base + k),
                weighted: r.weighted,
            }));
            window_base += file.windows.len();
        }
        let (threshold, _) = best_threshold(sweep, window_base, &profile);

        let mut report = Report {
            detector: detector.to_owned(),
            profile,
            score_normalised: 0.0,
            raw: 0.0,
            null: 0.0,
            perfect: profile.tp_weight * window_base as f64,
            threshold,
            tp_windows: 0,
            fn_windows: 0,
            fp_rows: 0,
            windows: window_base as u64,
            rows: self.rows() as u64,
            detect_ns_per_row: None,
            files: Vec::with_capacity(self.files.len()),
        };
        for (file, rows) in self.files.iter().zip(&per_file_rows) {
            let o = outcome_at(
                file,
                rows,
                &scores[&file.relative_path],
                threshold,
                &profile,
            );
            report.raw += o.raw;
            report.null -= profile.fn_weight * o.scorable_windows as f64;
            report.tp_windows += o.tp_windows;
            report.fn_windows += o.fn_windows;
            report.fp_rows += o.fp_rows;
            report.files.push(FileReport {
                relative_path: file.relative_path.clone(),
                rows: file.timestamps_ns.len(),
                probationary_rows: file.probationary_rows(),
                windows: file.windows.len(),
                raw: o.raw,
                tp_windows: o.tp_windows,
                fn_windows: o.fn_windows,
                fp_rows: o.fp_rows,
            });
        }
        report.score_normalised =
            100.0 * (report.raw - report.null) / (report.perfect - report.null);
        Ok(report)
    }
}

fn checked_scores<'a>(
    file: &super::DataFile,
    scores: &'a BTreeMap<String, Vec<f64>>,
) -> Result<&'a [f64], NabError> {
    let bad = |reason: String| NabError::BadScores {
        file: file.relative_path.clone(),
        reason,
    };
    let s = scores
        .get(&file.relative_path)
        .ok_or_else(|| bad("no scores given for this file".to_owned()))?;
    if s.len() != file.timestamps_ns.len() {
        return Err(bad(format!(
            "{} scores for {} rows",
            s.len(),
            file.timestamps_ns.len()
        )));
    }
    if let Some((i, v)) = s
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(bad(format!("score {v} of row {i} is outside [0, 1]")));
    }
    Ok(s)
}

/// Loads the corpus (`data_dir` with the windows of `labels_file`) and scores `scores`, per-file
/// detector output keyed by path relative to `data_dir`.
///
/// ```
/// use std::collections::BTreeMap;
/// use agentwire_streaming::nab::score_corpus;
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("f.csv"), "timestamp,value\n2014-01-01 00:00:00,1\n").unwrap();
/// std::fs::write(dir.path().join("labels.json"), r#"{"f.csv": []}"#).unwrap();
/// let scores = BTreeMap::from([("f.csv".to_string(), vec![0.5])]);
/// let r = score_corpus(dir.path(), &dir.path().join("labels.json"), "null", &scores).unwrap();
/// assert_eq!(r.raw, 0.0); // no windows, and "never fire" is the best threshold
/// ```
pub fn score_corpus(
    data_dir: &Path,
    labels_file: &Path,
    detector: &str,
    scores: &BTreeMap<String, Vec<f64>>,
) -> Result<Report, NabError> {
    Corpus::load(data_dir, labels_file)?.score(detector, scores)
}

/// Runs the detector named `detector` over every file of the corpus (a fresh detector per
/// file, rows in order) and scores its output. The report carries the detector's wall time
/// per row.
///
/// ```no_run
/// use std::path::Path;
/// use agentwire_streaming::nab::score_detector;
/// let dir = Path::new("/work/shared/data/nab");
/// let r = score_detector(&dir.join("data"), &dir.join("combined_windows.json"), "windowed-gaussian").unwrap();
/// println!("{:.1} (null baseline 0.0)", r.score_normalised);
/// ```
pub fn score_detector(
    data_dir: &Path,
    labels_file: &Path,
    detector: &str,
) -> Result<Report, NabError> {
    let corpus = Corpus::load(data_dir, labels_file)?;
    by_name(detector)?; // a bad name fails before any work
    let mut scores = BTreeMap::new();
    let mut elapsed_ns: u128 = 0;
    for file in &corpus.files {
        let mut d = by_name(detector)?;
        let mut out = Vec::with_capacity(file.values.len());
        let start = Instant::now();
        for (&t, &v) in file.timestamps_ns.iter().zip(&file.values) {
            out.push(d.score(t, v));
        }
        elapsed_ns += start.elapsed().as_nanos();
        scores.insert(file.relative_path.clone(), out);
    }
    let mut report = corpus.score(detector, &scores)?;
    report.detect_ns_per_row = Some(elapsed_ns as f64 / corpus.rows().max(1) as f64);
    Ok(report)
}
