//! `agentwire load` as a user runs it: a daemon it starts itself, the JSON shape, losses
//! detected by sequence numbers (a deliberately dropped message) and the exit status they
//! give, open-loop latency that includes a deliberate stall, every pattern, the raw-ring
//! baseline, bad options, a daemon that goes away mid-run, and a run the daemon refuses.

use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
use agentwire_shm::client::query_status;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cli_json, scratch, Served, AGENTWIRE};

/// `agentwire load`'s exit status when messages were lost or duplicated (no --allow-loss).
const EXIT_DELIVERY_FAILED: i32 = 3;

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .arg("load")
        .args(args)
        .output()
        .expect("run agentwire load")
}

/// The one JSON object on stdout (the whole of stdout) of a run that exits 0.
fn report(args: &[&str]) -> serde_json::Value {
    let out = load(args);
    assert!(
        out.status.success(),
        "agentwire load {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not exactly one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_json_report_has_the_documented_shape_and_counts() {
    let r = report(&[
        "--spawn-daemon",
        "--count",
        "50000",
        "--warmup",
        "0.2",
        "--json",
    ]);
    for key in [
        "mode",
        "pattern",
        "msg_size",
        "sent",
        "delivered",
        "lost",
        "duplicated",
        "late",
        "msgs_per_s",
        "bytes_per_s",
        "latency_ns",
    ] {
        assert!(r.get(key).is_some(), "{key} missing: {r}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            r["latency_ns"][key].as_u64().is_some(),
            "latency_ns.{key}: {r}"
        );
    }
    assert_eq!(
        (r["mode"].as_str(), r["pattern"].as_str()),
        (Some("closed"), Some("unicast"))
    );
    assert_eq!(r["msg_size"], 64);
    assert_eq!(
        (r["sent"].as_u64(), r["delivered"].as_u64()),
        (Some(50_000), Some(50_000))
    );
    assert_eq!(
        (r["lost"].as_u64(), r["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0);
    let l = &r["latency_ns"];
    assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
    assert_eq!(r["target"], "daemon");
}

#[test]
fn a_deliberately_dropped_message_is_counted_as_lost() {
    // Every 1000th message is skipped by the producer but counted as sent: 20 of 20,500 (the
    // last one dropped is followed by more, so its gap shows at once).
    let lossy = [
        "--spawn-daemon",
        "--count",
        "20500",
        "--warmup",
        "0",
        "--drop-every",
        "1000",
        "--json",
    ];
    // A loss fails the run, and the report still says what was lost.
    let out = load(&lossy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_DELIVERY_FAILED),
        "a lossy run must not exit 0: {stderr}"
    );
    assert!(
        stderr.contains("20 lost") && stderr.contains("--allow-loss"),
        "{stderr}"
    );
    assert_eq!(json_of(&out)["lost"], 20);
    // --allow-loss: the same run reports the loss and exits 0.
    let r = report(&[&lossy[..], &["--allow-loss"]].concat());
    assert_eq!(r["lost"], 20, "{r}");
    assert_eq!(r["delivered"], 20_480, "{r}");
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["late"], 0);
    // The same hook over the bare ring.
    let r = report(&[
        "--baseline",
        "raw-ring",
        "--count",
        "20500",
        "--warmup",
        "0",
        "--drop-every",
        "1000",
        "--allow-loss",
        "--json",
    ]);
    assert_eq!(
        (r["lost"].as_u64(), r["target"].as_str()),
        (Some(20), Some("raw-ring")),
        "{r}"
    );
}

#[test]
fn open_loop_latency_includes_a_deliberate_stall() {
    // 20,000 msg/s for 20,000 messages; producer 0 stalls 200 ms halfway. The messages
    // scheduled during the stall are timed from their intended send time, so the stall
    // shows in the tail instead of vanishing (no coordinated omission).
    let r = report(&[
        "--spawn-daemon",
        "--mode",
        "open",
        "--rate",
        "20000",
        "--count",
        "20000",
        "--warmup",
        "0",
        "--stall-ms",
        "200",
        "--json",
    ]);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["lost"], 0, "{r}");
    let max = r["latency_ns"]["max"].as_u64().unwrap();
    let p99 = r["latency_ns"]["p99"].as_u64().unwrap();
    assert!(
        max >= 190_000_000,
        "max {max} ns should include the 200 ms stall: {r}"
    );
    assert!(
        p99 >= 50_000_000,
        "~20% of messages waited behind the stall: p99 {p99}: {r}"
    );
}

/// Two producers and two consumers, a priority mix, 10,000 messages.
const MIXED: &[&str] = &[
    "--producers",
    "2",
    "--consumers",
    "2",
    "--priority-mix",
    "0:1,3:3",
    "--count",
    "10000",
];

/// Runs every pattern (fan-out to 3, anycast over 2, request/response, two producers and
/// consumers with a priority mix) with `base` options and checks each delivered exactly
/// what it should through `target`, with nothing lost or duplicated.
fn check_every_pattern(base: &[&str], target: &str) {
    for (extra, sent, delivered) in [
        (
            &["--pattern", "fanout", "--consumers", "3", "--count", "5000"][..],
            5000,
            15_000,
        ),
        (
            &[
                "--pattern",
                "anycast",
                "--consumers",
                "2",
                "--count",
                "5000",
            ][..],
            5000,
            5000,
        ),
        (&["--pattern", "reqresp", "--count", "2000"][..], 2000, 2000),
        (MIXED, 10_000, 10_000),
    ] {
        let r = report(&[base, extra].concat());
        assert_eq!(r["target"], target, "{r}");
        assert_eq!(
            (
                r["sent"].as_u64(),
                r["delivered"].as_u64(),
                r["lost"].as_u64(),
                r["duplicated"].as_u64()
            ),
            (Some(sent), Some(delivered), Some(0), Some(0)),
            "{extra:?}: {r}"
        );
        assert!(r["latency_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn every_pattern_delivers_what_it_should() {
    check_every_pattern(&["--spawn-daemon", "--warmup", "0", "--json"], "daemon");
}

#[test]
fn the_raw_ring_baseline_runs_every_pattern() {
    let base = ["--baseline", "raw-ring", "--warmup", "0", "--json"];
    check_every_pattern(&base, "raw-ring");
    let run = |extra: &[&str]| report(&[&base[..], extra].concat());
    // A dropped message in a fan-out is lost once per subscriber.
    let r = run(&[
        "--pattern",
        "fanout",
        "--consumers",
        "2",
        "--count",
        "3500",
        "--drop-every",
        "1000",
        "--allow-loss",
    ]);
    assert_eq!(r["lost"], 6, "{r}");
}

#[test]
fn bad_options_say_what_to_change() {
    let cases: [(&[&str], &str); 7] = [
        (&["--msg-size", "8", "--spawn-daemon"], "at least 24 bytes"),
        (&["--pin", "2-1", "--spawn-daemon"], "a list like 0,2-3"),
        (
            &["--pin", "4095", "--spawn-daemon"],
            "not among the cpus this process may use",
        ),
        (
            &["--baseline", "raw-ring", "--pin", "0"],
            "no daemon cores to keep off",
        ),
        (&["--mode", "open", "--spawn-daemon"], "--rate"),
        (
            &["--baseline", "raw-ring", "--consumers", "0"],
            "at least 1",
        ),
        (&["--socket", "/nonexistent/aw.sock"], "--spawn-daemon"),
    ];
    for (args, needle) in cases {
        let out = load(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// `--pin`: by default the agent threads keep off the daemon's router CPU when another CPU
/// is left (the report names where they ran); `none` leaves them to the kernel; a list is
/// used as given.
#[test]
fn agent_threads_keep_off_the_router_cpu_unless_told_otherwise() {
    let allowed = agentwire_runtime::planning::allowed_cpus();
    let run = |pin: &str| {
        report(&[
            "--spawn-daemon",
            "--count",
            "2000",
            "--warmup",
            "0",
            "--pin",
            pin,
            "--json",
        ])
    };
    let auto = run("auto");
    assert_eq!(auto["lost"], 0, "{auto}");
    if allowed.len() >= 2 {
        // The embedded default gives the router one of these CPUs: the agents get the rest.
        let cpus: Vec<u64> = auto["agent_cpus"]
            .as_array()
            .unwrap_or_else(|| panic!("agent_cpus: {auto}"))
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(cpus.len(), allowed.len() - 1, "{auto}");
        assert!(cpus.iter().all(|&c| allowed.contains(&(c as usize))));
    } else {
        assert!(auto["agent_cpus"].is_null(), "nothing to keep off: {auto}");
    }
    let unpinned = run("none");
    assert!(unpinned["agent_cpus"].is_null(), "{unpinned}");
    let first = allowed[0].to_string();
    let listed = run(&first);
    assert_eq!(listed["agent_cpus"], serde_json::json!([allowed[0]]));
    assert_eq!(listed["delivered"], 2000, "{listed}");
}

/// Waits for `child` to exit, failing the test (watchdog) if it is still running after
/// `limit`; returns its status and stderr.
fn exit_within(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("watchdog: agentwire load still running {limit:?} after the daemon went away: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// The daemon's router counter `name`.
fn counter(socket: &std::path::Path, name: &str) -> u64 {
    query_status(socket)
        .unwrap()
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

#[test]
fn a_daemon_that_goes_away_mid_run_ends_the_run_with_an_error() {
    // Closed loop (producers find their ring full and see the daemon gone) and a slow open
    // loop (producers never fill a ring: the consumers see it).
    for (name, mode) in [
        ("gone-closed", &["--mode", "closed"][..]),
        ("gone-open", &["--mode", "open", "--rate", "1000"][..]),
    ] {
        let dir = scratch(name);
        let served = Served::start(&dir.join("agentwire.sock"), &[]);
        let child = Command::new(AGENTWIRE)
            .args(["load", "--duration", "600", "--warmup", "0", "--socket"])
            .arg(&served.socket)
            .args(mode)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Mid-run: the router has delivered the run's first messages.
        let deadline = Instant::now() + Duration::from_secs(20);
        while counter(&served.socket, "frames_delivered") == 0 {
            assert!(
                Instant::now() < deadline,
                "watchdog: the load never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(served); // SIGKILL
        let (status, stderr) = exit_within(child, Duration::from_secs(10));
        assert!(!status.success(), "{name}: {status}: {stderr}");
        assert_ne!(status.code(), Some(101), "{name}: panicked: {stderr}");
        assert!(
            stderr.contains("agentwire: error: the run stopped")
                && stderr.contains("disconnected from the daemon"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn a_run_the_daemon_refuses_sends_nothing() {
    // Room for 3 agents; the run needs 4: it must fail before any producer sends, so
    // nothing is routed and nothing is dead-lettered.
    let dir = scratch("refused");
    let config = dir.join("agentwire.toml");
    std::fs::write(&config, "agents_max = 3\n").unwrap();
    let served = Served::start(
        &dir.join("agentwire.sock"),
        &["--config", config.to_str().unwrap()],
    );
    let out = Command::new(AGENTWIRE)
        .args(["load", "--producers", "2", "--consumers", "2", "--count"])
        .args(["1000000", "--warmup", "0", "--socket"])
        .arg(&served.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 agents max") && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    let status = cli_json(&["status"], &served.socket);
    assert_eq!(status["counters"]["frames_in"], 0, "{status}");
    let stopped = served.terminate();
    assert!(stopped.status.success());
    let dlq = DeadLetterQueue::open(DlqConfig::new(dir.join("dlq.log"))).unwrap();
    assert_eq!(dlq.len(), 0, "dead letters from a refused run");
}
