//! `agentwire twin plan`: on four days of a daily cycle in a real history directory, the
//! plan sizes the router so the simulated p99 meets the SLA at the forecast peak (one core
//! would not), sizes a partition from its own forecast peak, prints a unified diff that
//! `patch` applies to the config and `agentwire plan` then plans; bad input and an unmet
//! SLA have their exit codes.

use agentwire_twin::history::{History, HistoryConfig};
use agentwire_twin::whatif::{Flow, Model, PartitionLoad};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{scratch, AGENTWIRE};

const TOPOLOGY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scheduler/tests/data/hwloc/16amd64-4distances.xml"
);

/// Four days, one point a minute: router traffic 10,000 ± 5,000 frames/s and the streaming
/// partition 400 ± 300 permille busy, both peaking once a day.
fn write_history(dir: &Path) {
    let mut h = History::open(dir, HistoryConfig::default()).unwrap();
    let start_ms = 1_700_000_000_000u64 / 86_400_000 * 86_400_000;
    for minute in 0..4 * 1440u64 {
        let phase = 2.0 * std::f64::consts::PI * minute as f64 / 1440.0;
        let t = start_ms + minute * 60_000;
        h.append(
            "router.frames_in_per_s",
            t,
            10_000.0 + 5_000.0 * phase.sin(),
        )
        .unwrap();
        h.append(
            "partition.streaming.busy_permille",
            t,
            400.0 + 300.0 * phase.sin(),
        )
        .unwrap();
    }
    h.flush().unwrap();
}

/// Four flows on a router whose frames cost 64 µs: one core at the ~15,000 frames/s peak
/// is 96% busy (p99 in the milliseconds), two are 48% busy (p99 ~0.6 ms).
fn write_model(path: &Path) {
    let model = Model {
        flows: vec![Flow::new(2_500.0); 4],
        router_service_ns: 64_000.0,
        consumer_service_ns: 100.0,
        partitions: vec![
            PartitionLoad {
                name: "streaming".into(),
                cpus: 2,
                busy_cores: 0.8,
                priority: 1,
            },
            PartitionLoad {
                name: "nas".into(),
                cpus: 1,
                busy_cores: 0.1,
                priority: 1,
            },
        ],
        ..Model::example()
    };
    std::fs::write(path, serde_json::to_string(&model).unwrap()).unwrap();
}

fn agentwire(args: &[&str]) -> Output {
    Command::new(AGENTWIRE).args(args).output().unwrap()
}

#[test]
fn the_plan_meets_the_sla_at_the_forecast_peak_and_its_diff_plans() {
    let dir = scratch("twin-plan");
    let history = dir.join("history");
    write_history(&history);
    let model = dir.join("model.json");
    write_model(&model);
    let config = dir.join("agentwire.toml");
    let out = agentwire(&["config", "default"]);
    std::fs::write(&config, &out.stdout).unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let args = [
        "twin",
        "plan",
        "--model",
        model.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--topology",
        TOPOLOGY,
        "--sla",
        "p99<1ms",
        "--at-forecast-peak",
        "24h",
    ];
    let json_out = agentwire(&[&args[..], &["--json"]].concat());
    assert!(
        json_out.status.success(),
        "{}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let peak = v["router_peak_per_s"].as_f64().unwrap();
    assert!(
        (13_500.0..16_500.0).contains(&peak),
        "forecast peak {peak}: {v}"
    );
    let cores = |name: &str| {
        v["cores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["partition"] == name)
            .and_then(|c| c["cores"].as_u64())
    };
    assert_eq!(cores("router"), Some(2), "{v}");
    assert_eq!(v["router_tried"][0]["meets"], false, "{v}");
    assert!(
        v["router_outcome"]["latency"]["p99_ns"].as_f64().unwrap() < 1e6,
        "{v}"
    );
    // Streaming peaks at ~700 permille of 2 cores: 1.4 busy cores need 2 under 0.85.
    assert_eq!(cores("streaming"), Some(2), "{v}");
    assert_eq!(cores("nas"), Some(1), "{v}");
    assert_eq!(v["fits"], true, "{v}");

    // The text form prints the diff alone on stdout; patch applies it; plan plans it.
    let out = agentwire(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(diff.starts_with("--- "), "{diff}");
    assert_eq!(diff, v["diff"].as_str().unwrap());
    let mut patch = Command::new("patch")
        .args(["--quiet", "--force"])
        .arg(&config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    patch
        .stdin
        .take()
        .unwrap()
        .write_all(diff.as_bytes())
        .unwrap();
    assert!(patch.wait().unwrap().success());
    let patched = std::fs::read_to_string(&config).unwrap();
    assert_ne!(patched, original);
    let planned: toml::Table = toml::from_str(&patched).unwrap();
    assert_eq!(planned["partitions"]["router"]["any"].as_integer(), Some(2));
    let out = agentwire(&[
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--topology",
        TOPOLOGY,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Planned again on the patched config: nothing left to change.
    let again = agentwire(&args);
    assert!(again.status.success());
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn a_peak_multiple_an_unmet_sla_and_bad_input_have_their_exit_codes() {
    let dir = scratch("twin-plan-codes");
    let model = dir.join("model.json");
    write_model(&model);
    let base = [
        "twin",
        "plan",
        "--model",
        model.to_str().unwrap(),
        "--topology",
        TOPOLOGY,
    ];
    // Four times today's load: 40,000 frames/s of 64 µs frames need all four flows' cores.
    let out = agentwire(
        &[
            &base[..],
            &["--peak-load", "4", "--sla", "p99<5ms", "--json"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cores"][0]["cores"], 4, "{v}");
    // A microsecond p99 with 64 µs frames: no router size meets it.
    let out = agentwire(&[&base[..], &["--peak-load", "1", "--sla", "p99<1us"]].concat());
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no router size"));
    let bad_inputs: [&[&str]; 3] = [
        &["--sla", "p99<1"],
        &["--sla", "q99<1ms"],
        &["--sla", "p99<1ms", "--at-forecast-peak", "9d"],
    ];
    for bad in bad_inputs {
        let out = agentwire(&[&base[..], &["--peak-load", "1"], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    // A config that is not TOML is bad input.
    let config = dir.join("broken.toml");
    std::fs::write(&config, "[partitions\n").unwrap();
    let out = agentwire(
        &[
            &base[..],
            &[
                "--peak-load",
                "1",
                "--sla",
                "p99<1ms",
                "--config",
                config.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // No history where one is looked for.
    let out = agentwire(
        &[
            &base[..],
            &[
                "--sla",
                "p99<1ms",
                "--history",
                dir.join("none").to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no twin history"));
}
