//! `agentwire twin whatif` against the real thing: a model calibrated from a real daemon's
//! mirror while `agentwire load` drives it predicts the throughput of a second load run at
//! twice the rate within 10%; a hop calibrated from the first run's report reproduces its
//! p50; a saved model reloads; bad scenarios and a missing mirror are clear errors.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{scratch, Served, AGENTWIRE};

fn agentwire(args: &[&str]) -> Output {
    Command::new(AGENTWIRE).args(args).output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn load_args(socket: &Path, rate: u32, seconds: u32) -> Vec<String> {
    [
        "load",
        "--socket",
        socket.to_str().unwrap(),
        "--mode",
        "open",
        "--rate",
        &rate.to_string(),
        "--duration",
        &seconds.to_string(),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

/// The real-daemon test measures rates over a window: nothing else in this binary runs
/// beside it (the bench test keeps a core busy with SimPy).
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn close(predicted: f64, measured: f64) -> f64 {
    (predicted / measured - 1.0).abs()
}

#[test]
fn a_scenario_predicts_a_real_load_run_at_twice_the_rate() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("twin-whatif");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let socket = served.socket.to_str().unwrap().to_string();
    // Run A at 2,000 messages a second; the model is calibrated over 2 s inside it.
    let run_a = Command::new(AGENTWIRE)
        .args(load_args(&served.socket, 2_000, 8))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    served.wait_for_counter("frames_in", 1_000, "load run A routed nothing");
    let model = dir.join("model.json");
    let predicted = json_of(&agentwire(&[
        "twin",
        "whatif",
        "--socket",
        &socket,
        "--window-ms",
        "2000",
        "--flows",
        "1",
        "--scenario",
        "load=2",
        "--save-model",
        model.to_str().unwrap(),
        "--json",
    ]));
    // The router's time per frame came from its timed duty cycles, measured at run A's
    // rate, and follows the load from there.
    let saved: agentwire_twin::whatif::Model =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let curve = saved
        .service_curve
        .expect("a time per frame from timed duty cycles");
    assert_eq!(curve.measured_ns, saved.router_service_ns);
    assert!(
        close(curve.measured_per_s, 2_000.0) < 0.10,
        "{}",
        curve.measured_per_s
    );
    let report_a = json_of(&run_a.wait_with_output().unwrap());
    let report_b = json_of(
        &Command::new(AGENTWIRE)
            .args(load_args(&served.socket, 4_000, 3))
            .output()
            .unwrap(),
    );
    let (rate_a, rate_b) = (
        report_a["msgs_per_s"].as_f64().unwrap(),
        report_b["msgs_per_s"].as_f64().unwrap(),
    );
    let baseline = predicted["baseline"]["throughput_per_s"].as_f64().unwrap();
    let twice = predicted["predicted"]["throughput_per_s"].as_f64().unwrap();
    assert!(
        close(baseline, rate_a) < 0.10,
        "calibrated {baseline}/s, run A {rate_a}/s"
    );
    assert!(
        close(twice, rate_b) < 0.10,
        "predicted {twice}/s, run B {rate_b}/s"
    );

    // The hop from run A's report: the reloaded model's baseline p50 is run A's, and the
    // p50 it predicts for run B is printed (latency on a shared 2-vCPU guest is noise).
    let report_path = dir.join("run-a.json");
    std::fs::write(&report_path, report_a.to_string()).unwrap();
    let with_hop = json_of(&agentwire(&[
        "twin",
        "whatif",
        "--model",
        model.to_str().unwrap(),
        "--load-report",
        report_path.to_str().unwrap(),
        "--scenario",
        "load=2",
        "--json",
    ]));
    let p50_a = report_a["latency_ns"]["p50"].as_f64().unwrap();
    let base_p50 = with_hop["baseline"]["latency"]["p50_ns"].as_f64().unwrap();
    assert!(
        close(base_p50, p50_a) < 0.02,
        "baseline p50 {base_p50} ns, run A {p50_a} ns"
    );
    let p50_b = report_b["latency_ns"]["p50"].as_f64().unwrap();
    let predicted_p50 = with_hop["predicted"]["latency"]["p50_ns"].as_f64().unwrap();
    eprintln!(
        "throughput: predicted {twice:.0}/s, measured {rate_b:.0}/s ({:.1}% off); p50: predicted {predicted_p50:.0} ns, measured {p50_b:.0} ns ({:.1}% off)",
        100.0 * close(twice, rate_b),
        100.0 * close(predicted_p50, p50_b)
    );
}

#[test]
fn bad_input_and_no_mirror_are_clear_errors() {
    let dir = scratch("twin-whatif-bad");
    let model = dir.join("model.json");
    let out = agentwire(&["twin", "whatif", "--model", "/nonexistent/model.json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    std::fs::write(&model, "{\"flows\": 3}").unwrap();
    let out = agentwire(&["twin", "whatif", "--model", model.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a saved model"));
    let out = agentwire(&["twin", "whatif", "--scenario", "load=fast"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("load=fast"));
    // Absurd sizes are refused before any work: cores, agents, a run too long, a model
    // option given with a saved model.
    std::fs::write(
        &model,
        serde_json::to_string(&agentwire_twin::whatif::Model::example()).unwrap(),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    for args in [
        &["--scenario", "router_cores=+4294967295"][..],
        &["--scenario", "agents=+4000000000"],
        &["--scenario", "load=1e308"],
        &["--seconds", "1e12"],
        &["--simulator", "packet", "--seconds", "1e6"],
        &["--flows", "3"],
        &["--saturated-ns", "30"],
    ] {
        let out = agentwire(&[&["twin", "whatif", "--model", m][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = agentwire(&["twin", "whatif", "--saturated-ns", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("above 0"));
    let socket = dir.join("nobody.sock");
    let out = agentwire(&["twin", "whatif", "--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a daemon serving"));
}

#[test]
fn the_bench_times_both_simulators_and_simpy_on_one_model() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    // SimPy is in .venv (scripts/setup.sh); the bench runs it from the checkout.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let mut args = vec![
        "twin",
        "whatif-bench",
        "--flow-seconds",
        "3600",
        "--packet-seconds",
        "0.5",
        "--json",
    ];
    let python_arg = python.to_str().unwrap().to_string();
    if python.exists() {
        args.extend(["--python", &python_arg]);
    } else {
        args.push("--no-simpy");
    }
    let v = json_of(&agentwire(&args));
    let flow = &v["flow"]["outcome"];
    let packet = &v["packet"]["outcome"];
    let thru = |o: &serde_json::Value| o["throughput_per_s"].as_f64().unwrap();
    assert!(close(thru(flow), 40_000.0) < 0.01, "{v}");
    assert!(close(thru(packet), 40_000.0) < 0.05, "{v}");
    assert_eq!(v["flow"]["outcome"]["simulated_s"].as_f64(), Some(3600.0));
    if python.exists() {
        let simpy = &v["simpy"]["outcome"];
        assert!(close(thru(simpy), 40_000.0) < 0.05, "{v}");
        let p50 = |o: &serde_json::Value| o["latency"]["p50_ns"].as_f64().unwrap();
        assert!(close(p50(simpy), p50(packet)) < 0.10, "{v}");
    }
}
