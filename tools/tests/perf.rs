//! `agentwire perf` against a real daemon: the JSON shape, per-partition threads and cores,
//! counters this VM lacks reported as unavailable with a reason while the software counters
//! count, `--partition` selection, and `perf record` on a partition's threads.

use std::process::{Command, Output};

mod common;
use common::{cli_json, scratch, Served, AGENTWIRE};

fn agentwire(args: &[&str]) -> Output {
    Command::new(AGENTWIRE).args(args).output().unwrap()
}

#[test]
fn perf_json_has_every_partition_and_falls_back_where_counters_are_missing() {
    let dir = scratch("perf-json");
    let socket = dir.join("agentwire.sock");
    let served = Served::start(&socket, &[]);
    let r = cli_json(&["perf", "--duration", "0.5"], &socket);
    for key in [
        "pid",
        "duration_s",
        "scope",
        "counters",
        "unavailable",
        "partitions",
    ] {
        assert!(r.get(key).is_some(), "{key} missing: {r}");
    }
    assert_eq!(r["pid"].as_u64(), Some(served.child.id() as u64));
    assert!(r["duration_s"].as_f64().unwrap() >= 0.5);
    let names: Vec<&str> = r["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for wanted in [
        "instructions",
        "cycles",
        "cache_references",
        "cache_misses",
        "branch_misses",
        "context_switches",
        "page_faults",
        "task_clock_ns",
    ] {
        assert!(names.contains(&wanted), "{wanted} not counted: {names:?}");
    }
    let partitions = r["partitions"].as_array().unwrap();
    let router = partitions
        .iter()
        .find(|p| p["name"] == "router")
        .expect("router partition");
    assert!(partitions.iter().any(|p| p["name"] == "other"));
    let thread = &router["threads"][0];
    assert!(thread["target"].as_str().unwrap().starts_with("aw-router-"));
    assert!(thread["tid"].as_u64().is_some());
    assert!(!router["cores"].as_array().unwrap().is_empty());
    // A thread's task clock always counts (its own thread, same user); every missing
    // counter of every thread, core and total has its reason beside it. (Core counters need
    // root or perf_event_paranoid <= 0: elsewhere they are all null, each with the reason.)
    for p in partitions {
        for t in p["threads"].as_array().unwrap() {
            assert!(t["values"]["task_clock_ns"].as_u64().is_some(), "{t}");
        }
    }
    for m in partitions.iter().flat_map(|p| {
        p["threads"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["cores"].as_array().unwrap())
            .chain([&p["total"]])
    }) {
        for name in &names {
            let v = &m["values"][*name];
            assert!(
                v.is_u64()
                    || m["unavailable"][*name]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                "{name} is neither counted nor explained: {m}"
            );
            if v.is_null() {
                assert!(r["unavailable"][*name].is_string(), "top-level reason: {r}");
            }
        }
        if m["values"]["instructions"].is_null() {
            assert!(m["ipc"].is_null());
        }
    }
    let util = thread["cpu_utilization"].as_f64().unwrap();
    assert!((0.0..=1.5).contains(&util), "{util}");
    served.terminate();
}

#[test]
fn perf_selects_one_partition_and_names_the_ones_that_exist() {
    let dir = scratch("perf-partition");
    let socket = dir.join("agentwire.sock");
    let _served = Served::start(&socket, &[]);
    let r = cli_json(
        &["perf", "--duration", "0.2", "--partition", "router"],
        &socket,
    );
    let partitions = r["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 1);
    assert_eq!(partitions[0]["name"], "router");

    let out = agentwire(&[
        "perf",
        "--duration",
        "0.2",
        "--partition",
        "nope",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no partition \"nope\"") && err.contains("router, streaming"),
        "{err}"
    );
    // The table names what is unavailable and why.
    let out = agentwire(&[
        "perf",
        "--duration",
        "0.2",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("aw-router-") && table.contains("task-ms"),
        "{table}"
    );
}

#[test]
fn perf_without_a_daemon_says_how_to_start_one() {
    let dir = scratch("perf-none");
    let out = agentwire(&["perf", "--socket", dir.join("none.sock").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agentwire serve"), "{err}");
}

#[test]
fn perf_record_samples_the_router_threads() {
    let dir = scratch("perf-record");
    let socket = dir.join("agentwire.sock");
    let _served = Served::start(&socket, &[]);
    let data = dir.join("router.data");
    let perf_works = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let out = agentwire(&[
        "perf",
        "record",
        "--partition",
        "router",
        "--duration",
        "0.5",
        "--socket",
        socket.to_str().unwrap(),
        "--",
        "-e",
        "cpu-clock",
        "-o",
        data.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("perf record -t "), "{err}");
    if perf_works {
        assert!(out.status.success(), "{err}");
        assert!(std::fs::metadata(&data).unwrap().len() > 0);
    } else {
        // scripts/setup.sh installs linux-perf; without it the error says so.
        assert!(!out.status.success() && err.contains("linux-perf"), "{err}");
    }
    let missing = Command::new(AGENTWIRE)
        .args(["perf", "record", "--duration", "0.1", "--socket"])
        .arg(&socket)
        .env("AGENTWIRE_PERF", dir.join("no-such-perf"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("AGENTWIRE_PERF"));
}
