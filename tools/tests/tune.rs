//! `agentwire tune` as a user runs it: real daemons, one per trial, the JSON shape, the best
//! trial's settings written as a snippet the daemon accepts, and bad grids refused.

use std::process::{Command, Output};

mod common;
use common::{scratch, AGENTWIRE};

fn tune(args: &[&str]) -> Output {
    Command::new(AGENTWIRE)
        .arg("tune")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tune_runs_every_trial_and_writes_the_best_settings() {
    let dir = scratch("tune");
    let output = dir.join("tuned.toml");
    let out = tune(&[
        "--batch",
        "4,64",
        "--idle",
        "spin",
        "--ring",
        "65536",
        "--trial-s",
        "0.3",
        "--warmup",
        "0.1",
        "--json",
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("trial 2/2"), "progress lines: {err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    for (t, batch) in trials.iter().zip([4, 64]) {
        assert_eq!(t["batch_frames"], batch);
        assert_eq!(t["idle"], "spin");
        assert_eq!(t["ring_capacity_bytes"], 65536);
        assert!(t["error"].is_null(), "{t}");
        assert!(t["load"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{t}");
        assert_eq!(t["load"]["lost"], 0);
        assert!(t["load"]["latency_ns"]["p99"].as_u64().is_some());
        // The router threads' task clock counts for any user; context switches are counted
        // in the kernel, which only root (or perf_event_paranoid <= 1) may count.
        assert!(t["router"]["cpu_utilization"].as_f64().is_some(), "{t}");
        if rustix::process::geteuid().is_root() {
            assert!(t["router"]["context_switches"].as_u64().is_some(), "{t}");
        }
    }
    let best = r["best"].as_u64().unwrap() as usize;
    let best_rate = trials[best]["load"]["msgs_per_s"].as_f64().unwrap();
    assert!(trials
        .iter()
        .all(|t| t["load"]["msgs_per_s"].as_f64().unwrap() <= best_rate));
    let snippet = std::fs::read_to_string(&output).unwrap();
    assert_eq!(r["snippet"].as_str().unwrap(), snippet);
    assert!(
        snippet.contains(&format!(
            "router_batch_frames = {}",
            trials[best]["batch_frames"]
        )),
        "{snippet}"
    );
    // The daemon accepts the snippet as its config.
    let plan = Command::new(AGENTWIRE)
        .args(["plan", "--json", "--config"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

#[test]
fn tune_refuses_a_bad_grid_before_any_trial() {
    for (args, wanted) in [
        (&["--idle", "nap"][..], "--idle nap"),
        (&["--ring", "5000"][..], "--ring 5000"),
        (&["--batch", "0"][..], "--batch 0"),
        (&["--batch", "8,x"][..], "not a whole number"),
    ] {
        let out = tune(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(wanted), "{args:?}: {err}");
        assert!(!err.contains("trial 1/"), "{args:?} ran a trial: {err}");
    }
}
