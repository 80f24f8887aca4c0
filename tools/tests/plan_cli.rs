//! `agentwire topology` and `agentwire plan` as a user runs them: on this machine, on hwloc
//! XML exports of other machines, with the seed allocation matrix.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn agentwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .output()
        .expect("run agentwire")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn topology_reads_this_machine_and_an_export() {
    let live = json(&agentwire(&["topology", "--json"]));
    assert_eq!(live["source"], "live");
    assert!(!live["cores"].as_array().unwrap().is_empty());
    let xml = repo("scheduler/tests/data/hwloc/24em64t-2n6c2t-pci.xml");
    let m = json(&agentwire(&[
        "topology",
        "--json",
        "--topology",
        xml.to_str().unwrap(),
    ]));
    assert_eq!(m["cores"].as_array().unwrap().len(), 12);
    assert_eq!(m["numa_nodes"].as_array().unwrap().len(), 2);
    let table = agentwire(&["topology", "--topology", xml.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("2 NUMA node(s), 12 cores"), "{text}");
    let missing = agentwire(&["topology", "--topology", "/nonexistent.xml"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("lstopo"));
}

#[test]
fn plan_prints_the_embedded_default_and_refuses_the_seed_here() {
    let p = json(&agentwire(&["plan", "--json"]));
    let names: Vec<&str> = p["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["router", "streaming", "nas", "twin", "fusion"]);
    let table = agentwire(&["plan"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("plan for machine live"));
    let seed = repo("examples/seed-allocation.toml");
    let refused = agentwire(&["plan", "--config", seed.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("partition nas asks for a whole GPU"), "{err}");
    let xml = repo("scheduler/tests/data/hwloc/16amd64-4distances.xml");
    let spread = json(&agentwire(&[
        "plan",
        "--json",
        "--topology",
        xml.to_str().unwrap(),
    ]));
    assert_eq!(spread["machine"], xml.to_str().unwrap());
}

#[test]
fn a_config_typo_in_a_partition_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("aw-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("typo.toml");
    std::fs::write(&config, "[partitions.router]\nperformace = 2\n").unwrap();
    let out = agentwire(&["plan", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo.toml:2: partitions.router.performace: unknown field"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plan_on_this_machine_lists_the_start_up_checks_and_router_cpus_apply() {
    let p = json(&agentwire(&["plan", "--json"]));
    let checks: Vec<&str> = p["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["isolation", "governor", "hugepages", "memlock"]);
    assert_eq!(p["executors"], 5);
    let text = agentwire(&["plan"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("check memlock: ok"), "{stdout}");
    // An export is another machine: its kernel settings are unknown, so no checks.
    let xml = repo("scheduler/tests/data/hwloc/16amd64-4distances.xml");
    let other = json(&agentwire(&[
        "plan",
        "--json",
        "--topology",
        xml.to_str().unwrap(),
    ]));
    assert_eq!(other["checks"], serde_json::json!([]));
    // The daemon's router_cpus is the router partition's named CPUs, as `serve` uses it.
    let dir = std::env::temp_dir().join(format!("aw-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("router.toml");
    std::fs::write(&config, "router_cpus = [0]\n").unwrap();
    let p = json(&agentwire(&[
        "plan",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_eq!(p["partitions"][0]["name"], "router");
    assert_eq!(p["partitions"][0]["cores"][0]["pu"], 0);
    // Naming them twice is refused with the place to name them.
    std::fs::write(
        &config,
        "router_cpus = [0]\n[partitions.router]\ncpus = [1]\n",
    )
    .unwrap();
    let out = agentwire(&["plan", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[partitions.router]"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
