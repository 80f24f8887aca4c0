//! NAB scoring on tiny corpora whose scores are worked out by hand here.

use std::collections::BTreeMap;
use std::path::Path;

use agentwire_streaming::nab::sweep::{outcome_at, scorable_rows};
use agentwire_streaming::nab::{score_corpus, Corpus, NabError, STANDARD};

/// 40 rows a minute apart from 2014-04-01 00:00; `windows` as row index pairs.
fn write_corpus(dir: &Path, windows: &[(usize, usize)]) -> std::path::PathBuf {
    write_corpus_rows(dir, 40, windows)
}

fn write_corpus_rows(dir: &Path, rows: usize, windows: &[(usize, usize)]) -> std::path::PathBuf {
    let ts = |i: usize| format!("2014-04-01 {:02}:{:02}:00", i / 60, i % 60);
    let mut csv = String::from("timestamp,value\n");
    for i in 0..rows {
        csv.push_str(&format!("{},{}\n", ts(i), i));
    }
    std::fs::create_dir_all(dir.join("cat")).unwrap();
    std::fs::write(dir.join("cat/f.csv"), csv).unwrap();
    let w: Vec<String> = windows
        .iter()
        .map(|(a, b)| format!("[\"{}.000000\", \"{}.000000\"]", ts(*a), ts(*b)))
        .collect();
    let labels = dir.join("labels.json");
    std::fs::write(&labels, format!("{{\"cat/f.csv\": [{}]}}", w.join(", "))).unwrap();
    labels
}

/// NAB's scaled sigmoid, written out for the hand computation.
fn s(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

/// Window A = rows 10..=14 (5 rows), window B = rows 30..=33 (missed). Probation: floor(0.15*40)
/// = 6 rows. Row 3 fires in probation (ignored); row 8 is a false positive with no window
/// before it; rows 12 and 13 fire in A; row 17 is a false positive 3 rows after A
/// (y = 3/(5-1) = 0.75); row 27 is 13 rows after A (y = 3.25 > 3, so -1).
fn hand_scores() -> Vec<f64> {
    let mut v = vec![0.0; 40];
    v[3] = 0.9;
    v[8] = 0.6;
    v[12] = 0.5;
    v[13] = 0.9;
    v[17] = 0.7;
    v[27] = 0.8;
    v
}

#[test]
fn hand_case_at_a_low_threshold_counts_each_part() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(10, 14), (30, 33)]);
    let corpus = Corpus::load(dir.path(), &labels).unwrap();
    let file = &corpus.files[0];
    let rows = scorable_rows(file, &STANDARD);
    let o = outcome_at(file, &rows, &hand_scores(), 0.5, &STANDARD);
    // A: earliest detection row 12, y = -(14 - 12 + 1)/5 = -0.6; row 13 adds nothing.
    let window_a = s(-0.6) / s(-1.0);
    let fp_before = -0.11;
    let fp_near = 0.11 * s(0.75);
    let fp_far = -0.11;
    let miss_b = -1.0;
    let want = window_a + fp_before + fp_near + fp_far + miss_b;
    assert!((o.raw - want).abs() < 1e-12, "{} vs {}", o.raw, want);
    assert_eq!((o.tp_windows, o.fn_windows, o.fp_rows), (1, 1, 3));
}

#[test]
fn hand_case_corpus_threshold_is_the_best_sweep_point() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(10, 14), (30, 33)]);
    let scores = BTreeMap::from([("cat/f.csv".to_string(), hand_scores())]);
    let r = score_corpus(dir.path(), &labels, "hand", &scores).unwrap();
    // Candidates, by hand (A hit at row 13 is y = -2/5 = -0.4):
    //   1.1: -2;  0.9: s(-0.4)/s(-1) - 1 = -0.228;  0.8: -0.338;  0.7: -0.443;  0.6: -0.553;
    //   0.5: s(-0.6)/s(-1) - 1 - 0.11 + 0.11 s(0.75) - 0.11 = -0.408;  0.0: worse (27 more FPs).
    let raw = s(-0.4) / s(-1.0) - 1.0;
    assert_eq!(r.threshold, 0.9);
    assert!((r.raw - raw).abs() < 1e-12);
    assert_eq!((r.null, r.perfect), (-2.0, 2.0));
    assert!((r.score_normalised - 100.0 * (raw + 2.0) / 4.0).abs() < 1e-9);
    assert_eq!((r.tp_windows, r.fn_windows, r.fp_rows), (1, 1, 0));
    assert_eq!(r.files[0].probationary_rows, 6);
}

#[test]
fn null_detector_scores_exactly_zero() {
    // Long enough that firing on every row costs more than the windows earn, as on NAB.
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus_rows(dir.path(), 600, &[(200, 219), (400, 419)]);
    let scores = BTreeMap::from([("cat/f.csv".to_string(), vec![0.5; 600])]);
    let r = score_corpus(dir.path(), &labels, "null", &scores).unwrap();
    assert_eq!(r.score_normalised, 0.0);
    assert_eq!(r.threshold, 1.1);
    assert_eq!(r.raw, r.null);
}

#[test]
fn a_constant_detector_fires_everywhere_when_that_pays() {
    // The 40-row case: 2 windows earn +2, and the 24 false positives cost less than the 2
    // misses. NAB's sweep picks the constant as threshold, so NAB's own null detector would
    // score above 0 here; the baseline is "never fires", not "the constant detector".
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(10, 14), (30, 33)]);
    let scores = BTreeMap::from([("cat/f.csv".to_string(), vec![0.5; 40])]);
    let r = score_corpus(dir.path(), &labels, "constant", &scores).unwrap();
    assert_eq!(r.threshold, 0.5);
    assert!(r.score_normalised > 0.0);
    assert_eq!(r.null, -2.0);
}

#[test]
fn perfect_detector_scores_exactly_one_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(10, 14), (30, 33)]);
    let mut v = vec![0.0; 40];
    v[10] = 1.0;
    v[30] = 1.0;
    let r = score_corpus(
        dir.path(),
        &labels,
        "perfect",
        &BTreeMap::from([("cat/f.csv".to_string(), v)]),
    )
    .unwrap();
    assert_eq!(r.score_normalised, 100.0);
    assert_eq!(r.raw, 2.0);
}

#[test]
fn a_wholly_probationary_window_is_not_charged() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(1, 4), (30, 33)]);
    let r = score_corpus(
        dir.path(),
        &labels,
        "null",
        &BTreeMap::from([("cat/f.csv".to_string(), vec![0.0; 40])]),
    )
    .unwrap();
    // NAB: the null detector misses only window 2; perfect still counts both windows.
    assert_eq!((r.null, r.perfect, r.fn_windows), (-1.0, 2.0, 1));
}

#[test]
fn rejects_a_window_bound_that_is_no_row() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path(), &[]);
    let labels = dir.path().join("bad.json");
    std::fs::write(
        &labels,
        r#"{"cat/f.csv": [["2014-04-01 00:07:30.000000", "2014-04-01 00:10:00.000000"]]}"#,
    )
    .unwrap();
    let err = Corpus::load(dir.path(), &labels).unwrap_err();
    assert!(matches!(err, NabError::BadWindow { .. }), "{err}");
    assert!(err.to_string().contains("cat/f.csv"));
}

#[test]
fn rejects_scores_that_do_not_fit_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write_corpus(dir.path(), &[(10, 14)]);
    let short = BTreeMap::from([("cat/f.csv".to_string(), vec![0.0; 39])]);
    assert!(matches!(
        score_corpus(dir.path(), &labels, "x", &short),
        Err(NabError::BadScores { .. })
    ));
    let mut v = vec![0.0; 40];
    v[20] = 1.5;
    let out_of_range = BTreeMap::from([("cat/f.csv".to_string(), v)]);
    assert!(matches!(
        score_corpus(dir.path(), &labels, "x", &out_of_range),
        Err(NabError::BadScores { .. })
    ));
}
