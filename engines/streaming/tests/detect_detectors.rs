//! Detector behaviour common to every registered detector, and the CSV helper's errors.

use agentwire_streaming::detect::{by_name, detect_csv, DetectCsvError, DEFAULT, NAMES};
use proptest::prelude::*;

proptest! {
    #[test]
    fn every_detector_scores_in_unit_interval(values in prop::collection::vec(-1e9f64..1e9, 1..1500)) {
        for name in NAMES {
            let mut d = by_name(name).unwrap();
            for (i, v) in values.iter().enumerate() {
                let s = d.score(i as i64 * 300_000_000_000, *v);
                prop_assert!((0.0..=1.0).contains(&s), "{name}: {s}");
            }
        }
    }
}

#[test]
fn scores_depend_only_on_earlier_rows() {
    // The same prefix gives the same scores whatever follows.
    let a: Vec<f64> = (0..3000).map(|i| ((i * 13) % 29) as f64).collect();
    let mut b = a.clone();
    for v in &mut b[2000..] {
        *v *= 50.0;
    }
    for name in NAMES {
        let (mut da, mut db) = (by_name(name).unwrap(), by_name(name).unwrap());
        for i in 0..2000 {
            assert_eq!(
                da.score(i as i64, a[i]),
                db.score(i as i64, b[i]),
                "{name} row {i}"
            );
        }
    }
}

#[test]
fn default_detector_flags_a_level_shift() {
    let wave = |i: i64| ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin();
    let mut d = by_name(DEFAULT).unwrap();
    let mut settled_max = 0.0f64;
    for i in 0..4000 {
        let s = d.score(i, wave(i));
        if i >= 2000 {
            settled_max = settled_max.max(s);
        }
    }
    let shifted_max = (4000..4050)
        .map(|i| d.score(i, 10.0 + wave(i)))
        .fold(0.0, f64::max);
    assert!(
        shifted_max > settled_max,
        "shifted {shifted_max} settled {settled_max}"
    );
}

#[test]
fn unknown_detector_names_the_known_ones() {
    let err = by_name("htm").err().unwrap();
    for name in NAMES {
        assert!(err.to_string().contains(name));
    }
}

#[test]
fn detect_csv_writes_one_row_per_input_row() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.csv"), dir.path().join("out.csv"));
    let mut text = String::from("timestamp,value\n");
    for i in 0..100 {
        text.push_str(&format!(
            "2014-04-01 {:02}:{:02}:00,{}\n",
            i / 60,
            i % 60,
            i % 7
        ));
    }
    std::fs::write(&input, text).unwrap();
    let summary = detect_csv(&input, &output, DEFAULT).unwrap();
    assert_eq!(summary.rows, 100);
    let out = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    assert!(lines[1].starts_with("2014-04-01 00:00:00,0,"));
}

#[test]
fn detect_csv_names_file_and_line_of_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.csv"), dir.path().join("out.csv"));
    std::fs::write(
        &input,
        "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n",
    )
    .unwrap();
    let err = detect_csv(&input, &output, "windowed-gaussian").unwrap_err();
    assert!(
        matches!(err, DetectCsvError::BadRow { line: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("in.csv:3"), "{err}");
    std::fs::write(&input, "timestamp,value\n01/04/2014,1\n").unwrap();
    let err = detect_csv(&input, &output, "windowed-gaussian").unwrap_err();
    assert!(err.to_string().contains(":2: bad timestamp"), "{err}");
}

#[test]
fn detect_csv_rejects_an_unknown_detector() {
    let dir = tempfile::tempdir().unwrap();
    let err = detect_csv(
        &dir.path().join("in.csv"),
        &dir.path().join("out.csv"),
        "nope",
    )
    .unwrap_err();
    assert!(matches!(err, DetectCsvError::UnknownDetector(_)));
}
