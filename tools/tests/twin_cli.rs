//! `agentwire twin forecast` and `agentwire twin m4-eval` as a user runs them: the real
//! binary on files written into a temporary directory (removed at the end).

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

/// An hourly-looking series: a daily shape, a weekend dip, a slow rise, a little wiggle.
fn hourly(t: usize) -> f64 {
    let day = (t % 24) as f64 / 24.0 * std::f64::consts::TAU;
    let weekend = if (t / 24) % 7 >= 5 { 0.85 } else { 1.0 };
    weekend * (100.0 + 0.02 * t as f64 + 20.0 * day.sin()) + 2.0 * ((t * 7 % 13) as f64 / 13.0)
}

#[test]
fn forecast_writes_one_row_per_step_with_ordered_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut csv = String::from("timestamp,value\n");
    for t in 0..24 * 14 {
        csv.push_str(&format!("2024-01-01T{t:05},{}\n", hourly(t)));
    }
    std::fs::write(&input, &csv).unwrap();
    let output = dir.path().join("out.csv");
    let out = agentwire(&[
        "twin",
        "forecast",
        "--input",
        path(&input),
        "--horizon",
        "48",
        "--season",
        "24",
        "--output",
        path(&output),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["method"], "ensemble");
    assert_eq!(summary["history"], 24 * 14);
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,forecast,lo,hi"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|f| f.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 48);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], (i + 1) as f64);
        assert!(r[1..].iter().all(|v| v.is_finite()), "{r:?}");
        assert!(r[2] <= r[1] && r[1] <= r[3], "row {i}: {r:?}");
    }
    // The input is untouched; an existing output is refused without --force.
    assert_eq!(std::fs::read_to_string(&input).unwrap(), csv);
    let again = agentwire(&[
        "twin",
        "forecast",
        "--input",
        path(&input),
        "--horizon",
        "2",
        "--output",
        path(&output),
    ]);
    assert_eq!(again.status.code(), Some(2));
    dir.close().unwrap();
}

#[test]
fn forecast_rejects_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("nan.csv"), "timestamp,value\na,1\nb,2\nc,oops\n").unwrap();
    std::fs::write(d.join("novalue.csv"), "timestamp,reading\na,1\n").unwrap();
    std::fs::write(d.join("short.csv"), "value\n1\n2\n3\n").unwrap();
    let good = "value\n1\n2\n3\n4\n5\n";
    std::fs::write(d.join("good.csv"), good).unwrap();
    let cases: [(&str, &str, &[&str], &str); 5] = [
        ("missing.csv", "o1.csv", &[], "no such file"),
        ("nan.csv", "o2.csv", &[], "nan.csv:4:"),
        ("novalue.csv", "o3.csv", &[], "no `value` column"),
        (
            "short.csv",
            "o4.csv",
            &["--method", "ensemble"],
            "needs a history of at least",
        ),
        (
            "good.csv",
            "good.csv",
            &["--force", "--method", "naive"],
            "is the input file",
        ),
    ];
    for (input, output, extra, message) in cases {
        let (i, o) = (d.join(input), d.join(output));
        let mut args = vec![
            "twin",
            "forecast",
            "--input",
            path(&i),
            "--horizon",
            "4",
            "--output",
            path(&o),
        ];
        args.extend_from_slice(extra);
        let out = agentwire(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {stderr}");
        assert!(stderr.contains(message), "{input}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(d.join("good.csv")).unwrap(), good);
    dir.close().unwrap();
}

#[test]
fn m4_eval_prints_finite_scores_against_naive2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut train, mut test) = (String::new(), String::new());
    for (k, len) in [(1usize, 240usize), (2, 264), (3, 288)] {
        let series = |range: std::ops::Range<usize>| {
            range
                .map(|t| format!("{:.3}", hourly(t + 5 * k) * k as f64))
                .collect::<Vec<_>>()
                .join(",")
        };
        train.push_str(&format!("T{k},{}\n", series(0..len)));
        test.push_str(&format!("T{k},{}\n", series(len..len + 48)));
    }
    std::fs::write(d.join("Hourly-train.csv"), train).unwrap();
    std::fs::write(d.join("Hourly-test.csv"), test).unwrap();
    let out = agentwire(&[
        "twin",
        "m4-eval",
        "--data",
        path(d),
        "--methods",
        "ensemble,theta",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3/3 series"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["series"], 3);
    assert_eq!(report["horizon"], 48);
    let methods = report["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["naive2", "snaive", "ensemble", "theta"]);
    for m in methods {
        for field in ["smape", "mase", "owa", "msis", "coverage"] {
            let v = m[field].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v >= 0.0, "{}: {field} = {v}", m["method"]);
        }
    }
    assert_eq!(methods[0]["owa"].as_f64(), Some(1.0));
    // A directory without M4 files is bad input.
    let empty = tempfile::tempdir().unwrap();
    let out = agentwire(&["twin", "m4-eval", "--data", path(empty.path())]);
    assert_eq!(out.status.code(), Some(2));
    empty.close().unwrap();
    dir.close().unwrap();
}
