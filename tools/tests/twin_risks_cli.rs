//! `agentwire twin risks` as a user runs it: the real binary on CSV files written into a
//! temporary directory of its own (removed at the end).

use std::path::Path;
use std::process::{Command, Output};

fn agentwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .output()
        .expect("run agentwire")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `timestamp,value` rows of `f(t)` for `t` in `0..n`.
fn write_series(file: &Path, n: usize, f: impl Fn(usize) -> f64) {
    let mut csv = String::from("timestamp,value\n");
    for t in 0..n {
        csv.push_str(&format!("{t},{}\n", f(t)));
    }
    std::fs::write(file, csv).unwrap();
}

/// A deterministic wiggle in [-1, 1).
fn wiggle(t: usize) -> f64 {
    ((t * 7919 % 101) as f64 / 50.5) - 1.0
}

#[test]
fn rising_series_predicts_a_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("occupancy.csv");
    // 20 + 0.5 t: at t = 199 it is near 120; 140 is reached about 41 steps later.
    write_series(&input, 200, |t| 20.0 + 0.5 * t as f64 + wiggle(t));
    let args = [
        "twin",
        "risks",
        "--input",
        path(&input),
        "--threshold",
        "140",
        "--horizon",
        "48",
        "--season",
        "1",
        "--method",
        "holt",
    ];
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = agentwire(&with_json);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["direction"], "above");
    assert_eq!(report["alert"], true);
    assert!(report["probability"].as_f64().unwrap() > 0.9);
    let mid = report["first_crossing"]["p50"].as_u64().unwrap();
    let (lo, hi) = (
        report["first_crossing"]["p05"].as_u64().unwrap(),
        report["first_crossing"]["p95"].as_u64().unwrap(),
    );
    assert!(lo <= 41 && 41 <= hi && (36..=46).contains(&mid), "{report}");
    let steps: Vec<u64> = report["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 6, 12, 24, 48]);
    // The text report says the same.
    let out = agentwire(&args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("first crossing: step") && text.contains("ALERT"),
        "{text}"
    );

    // Below a floor it is far from: no alert, still exit 0.
    let out = agentwire(&[
        "twin",
        "risks",
        "--input",
        path(&input),
        "--threshold",
        "-50",
        "--below",
        "--horizon",
        "10",
        "--season",
        "1",
        "--method",
        "holt",
        "--json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["alert"], false);
    assert!(report["probability"].as_f64().unwrap() < 0.01);
    assert!(report["first_crossing"]["p50"].is_null());
    dir.close().unwrap();
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    let out = agentwire(&[
        "twin",
        "risks",
        "--input",
        path(&missing),
        "--threshold",
        "1",
        "--horizon",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    // Too short for the default method, and an unknown method.
    let short = dir.path().join("short.csv");
    write_series(&short, 5, |t| t as f64);
    for extra in [&[][..], &["--method", "arima"][..]] {
        let mut args = vec![
            "twin",
            "risks",
            "--input",
            path(&short),
            "--threshold",
            "1",
            "--horizon",
            "4",
        ];
        args.extend_from_slice(extra);
        assert_eq!(agentwire(&args).status.code(), Some(2), "{extra:?}");
    }
    dir.close().unwrap();
}
