//! `agentwire stream run` as a user runs it: the real binary, a pipeline file and a CSV on
//! disk, results read back.

mod common;
use common::{scratch_with_prefix, Scratch};
use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str) -> Scratch {
    scratch_with_prefix("aw-stream-cli", name)
}

fn agentwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .output()
        .expect("run agentwire")
}

/// Runs agentwire, which must succeed, and parses the JSON it prints.
fn agentwire_json(args: &[&str]) -> serde_json::Value {
    let out = agentwire(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const PIPELINE: &str = r#"
[[stage]]
op = "filter"
value_min = 0.0
[window]
kind = "tumbling"
size_ms = 10
quantiles = [0.5]
"#;

/// Keys a and b over two 10 ms windows, a negative value filtered, a malformed row.
const CSV: &str = "key,event_time_ns,value\n\
a,1000000,1\n\
b,2000000,4\n\
a,3000000,-7\n\
a,4000000,oops\n\
a,12000000,5\n\
b,19000000,6\n";

fn setup(name: &str) -> (Scratch, String, String) {
    let dir = scratch(name);
    std::fs::write(dir.join("p.toml"), PIPELINE).unwrap();
    std::fs::write(dir.join("in.csv"), CSV).unwrap();
    let p = dir.join("p.toml").display().to_string();
    let i = dir.join("in.csv").display().to_string();
    (dir, p, i)
}

#[test]
fn run_writes_one_json_object_per_window_and_a_json_summary() {
    let (dir, pipeline, input) = setup("run");
    let output = dir.join("out.jsonl");
    let summary = agentwire_json(&[
        "stream",
        "run",
        &pipeline,
        "--input",
        &input,
        "--output",
        output.to_str().unwrap(),
        "--shards",
        "2",
        "--json",
    ]);
    assert_eq!(summary["events_in"], 5);
    assert_eq!(summary["events_filtered"], 1);
    assert_eq!(summary["malformed"], 1);
    assert_eq!(summary["outputs"], 4);
    assert_eq!(
        summary["malformed_rows"][0],
        "line 5: value = \"oops\": not a number"
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let mut results: Vec<(String, i64, u64, f64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            (
                key,
                v["start_ns"].as_i64().unwrap(),
                v["count"].as_u64().unwrap(),
                v["sum"].as_f64().unwrap(),
            )
        })
        .collect();
    results.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        results,
        vec![
            ("a".into(), 0, 1, 1.0),
            ("a".into(), 10_000_000, 1, 5.0),
            ("b".into(), 0, 1, 4.0),
            ("b".into(), 10_000_000, 1, 6.0),
        ]
    );
}

#[test]
fn run_refuses_to_overwrite_a_file_unless_forced() {
    let (dir, pipeline, input) = setup("force");
    let output = dir.join("precious.txt");
    std::fs::write(&output, "keep me").unwrap();
    let o = output.to_str().unwrap();
    let out = agentwire(&["stream", "run", &pipeline, "--input", &input, "--output", o]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists; pass --force"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me");
    let out = agentwire(&[
        "stream", "run", &pipeline, "--input", &input, "--output", o, "--force",
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 4);
}

#[test]
fn run_names_the_file_and_line_of_a_bad_pipeline() {
    let dir = scratch("bad");
    let p = dir.join("bad.toml");
    std::fs::write(&p, "[window]\nkind = \"tumbling\"\nsize = 5\n").unwrap();
    let out = agentwire(&["stream", "run", p.to_str().unwrap(), "--input", "-"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3: unknown field `size`", p.display())),
        "{stderr}"
    );
}

#[test]
fn chaos_with_sigkills_ends_with_the_output_of_a_run_without_failures() {
    let dir = scratch("chaos");
    let work = dir.join("work");
    let v = agentwire_json(&[
        "stream",
        "chaos",
        "--events",
        "40000",
        "--kills",
        "6",
        "--seed",
        "7",
        "--json",
        "--dir",
        work.to_str().unwrap(),
    ]);
    assert_eq!(v["events"], 40000);
    assert_eq!(v["kills"], 6);
    assert_eq!(v["outputs_equal"], true);
    assert_eq!(
        (v["duplicates"].as_u64(), v["missing"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["outputs"].as_u64().unwrap() > 10_000);
    // --dir is kept, and a second run refuses to reuse it.
    let again = agentwire(&["stream", "chaos", "--dir", work.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

/// A tiny NAB-style corpus: one file of 200 rows, flat then a jump, one window at the jump.
fn tiny_corpus(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("cat")).unwrap();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..200 {
        let value = if i < 150 { 10.0 + (i % 3) as f64 } else { 90.0 };
        csv.push_str(&format!(
            "2020-01-01 {:02}:{:02}:00,{value}\n",
            i / 60,
            i % 60
        ));
    }
    std::fs::write(data.join("cat/f.csv"), csv).unwrap();
    let labels = dir.join("labels.json");
    std::fs::write(
        &labels,
        r#"{"cat/f.csv": [["2020-01-01 02:25:00.000000", "2020-01-01 02:40:00.000000"]]}"#,
    )
    .unwrap();
    (data, labels)
}

#[test]
fn detect_writes_one_scored_row_per_input_row() {
    let dir = scratch("detect");
    let (data, _) = tiny_corpus(&dir);
    let input = data.join("cat/f.csv");
    let output = dir.join("scored.csv");
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    let v = agentwire_json(&["stream", "detect", "--input", i, "--output", o, "--json"]);
    assert_eq!(v["rows"], 200);
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    let scores: Vec<f64> = lines
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(scores.len(), 200);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    // An existing output is refused; an unknown detector is named with the known ones.
    let again = agentwire(&["stream", "detect", "--input", i, "--output", o]);
    assert_eq!(again.status.code(), Some(1));
    let bad = agentwire(&[
        "stream",
        "detect",
        "--input",
        i,
        "--output",
        o,
        "--force",
        "--detector",
        "magic",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("unknown detector \"magic\"; known detectors: null"));
}

#[test]
fn nab_score_of_the_null_detector_is_zero_and_json_has_the_baselines() {
    let dir = scratch("nab");
    let (data, labels) = tiny_corpus(&dir);
    let v = agentwire_json(&[
        "stream",
        "nab-score",
        "--data",
        data.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--detector",
        "null",
        "--json",
    ]);
    assert_eq!(v["score"], 0.0);
    assert_eq!(
        (v["windows"].as_u64(), v["windows_missed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["baselines"][0]["detector"], "windowed-gaussian");
}

#[test]
fn bench_prints_the_engine_path_beside_the_raw_ring() {
    let v = agentwire_json(&[
        "stream",
        "bench",
        "--events",
        "20000",
        "--detector",
        "windowed-gaussian",
        "--json",
    ]);
    assert_eq!(v["events"], 20000);
    for key in ["events_per_s", "baseline_events_per_s", "ratio_to_baseline"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    let (p50, p99) = (
        v["latency_ms"]["p50"].as_f64().unwrap(),
        v["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{v}");
}
