//! Detector behaviour common to every registered detector, and the CSV helper's errors.

use agentwire_streaming::detect::cad_ose::CadOse;
use agentwire_streaming::detect::{by_name, detect_csv, DetectCsvError, Detector, DEFAULT, NAMES};
use proptest::prelude::*;

/// Rows of random noise given to `cad-ose` in the shared property test. CAD OSE stores about
/// 16 contexts per row of noise and its cost per row grows with them, too slow for 256 debug
/// cases of 1500 rows; the longer noisy runs are in `cad_ose_scores_in_unit_interval`.
const CAD_OSE_NOISE_ROWS_MAX: usize = 300;

proptest! {
    #[test]
    fn every_detector_scores_in_unit_interval(values in prop::collection::vec(-1e9f64..1e9, 1..1500)) {
        for name in NAMES {
            let mut d = by_name(name).unwrap();
            let rows = if *name == "cad-ose" { CAD_OSE_NOISE_ROWS_MAX } else { values.len() };
            for (i, v) in values.iter().take(rows).enumerate() {
                let s = d.score(i as i64 * 300_000_000_000, *v);
                prop_assert!((0.0..=1.0).contains(&s), "{name}: {s}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn cad_ose_scores_in_unit_interval(
        values in prop::collection::vec(prop_oneof![
            8 => -1e9f64..1e9,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(f64::MAX),
            1 => Just(-f64::MAX),
        ], 1..1500)
    ) {
        // A small memory, so the noise also fills it and the relearning path runs.
        let mut d = CadOse::with_contexts_max(512);
        for (i, v) in values.iter().enumerate() {
            let s = d.score(i as i64, *v);
            prop_assert!((0.0..=1.0).contains(&s), "row {i}: {s}");
            prop_assert!(d.contexts() <= 512);
        }
    }
}

#[test]
fn cad_ose_scores_a_spike_in_a_flat_series_highest() {
    let mut d = by_name("cad-ose").unwrap();
    let flat_max = (0..1000).map(|i| d.score(i, 5.0)).fold(0.0, f64::max);
    let spike = d.score(1000, 50.0);
    assert_eq!(flat_max, 0.0, "a constant is always predicted");
    assert!(spike >= 0.5, "spike scored {spike}");
    let after_max = (1001..1100).map(|i| d.score(i, 5.0)).fold(0.0, f64::max);
    assert!(spike > after_max, "spike {spike}, after {after_max}");
}

#[test]
fn cad_ose_takes_nan_infinities_and_constants() {
    let mut d = by_name("cad-ose").unwrap();
    for i in 0..400 {
        let v = match i % 7 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            _ => 1.0,
        };
        let s = d.score(i, v);
        assert!((0.0..=1.0).contains(&s), "row {i}: {s}");
    }
    let mut constant = by_name("cad-ose").unwrap();
    assert!((0..400).all(|i| constant.score(i, -3.25) == 0.0));
}

#[test]
fn cad_ose_memory_stays_bounded_over_a_million_rows() {
    // Mostly a daily-like cycle (cheap: few contexts), with a burst of pseudo-random values
    // every 10,000 rows that keeps adding contexts until the memory fills and relearns.
    let contexts_max = 64;
    let mut d = CadOse::with_contexts_max(contexts_max);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut peak = 0;
    for i in 0..1_000_000i64 {
        let v = if i % 10_000 < 50 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64
        } else {
            (i % 288) as f64
        };
        let s = d.score(i, v);
        assert!((0.0..=1.0).contains(&s));
        peak = peak.max(d.contexts());
    }
    assert!(peak <= contexts_max, "peak {peak}");
    assert!(
        peak > contexts_max / 2,
        "the bursts should fill the memory: peak {peak}"
    );
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
