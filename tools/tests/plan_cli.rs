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

#[test]
fn kernel_cmdline_isolates_the_partition_cores_of_a_known_machine() {
    // 2 packages x 6 cores x 2 threads; the embedded default plans the router on core 1
    // (pu 1, its sibling 13 idle) and one core per engine, housekeeping on core 0.
    let xml = repo("scheduler/tests/data/hwloc/24em64t-2n6c2t-pci.xml");
    let xml = xml.to_str().unwrap();
    let line = agentwire(&["plan", "--topology", xml, "--kernel-cmdline"]);
    assert!(line.status.success(), "{line:?}");
    assert_eq!(
        String::from_utf8_lossy(&line.stdout),
        "isolcpus=managed_irq,domain,1-5,13-17 nohz_full=1-5,13-17 rcu_nocbs=1-5,13-17 \
         irqaffinity=0,6-12,18-23\n"
    );
    assert!(String::from_utf8_lossy(&line.stderr).contains("GRUB_CMDLINE_LINUX"));
    let j = json(&agentwire(&[
        "plan",
        "--topology",
        xml,
        "--kernel-cmdline",
        "--json",
    ]));
    assert_eq!(j["params"]["isolcpus"], "managed_irq,domain,1-5,13-17");
    assert_eq!(j["params"]["irqaffinity"], "0,6-12,18-23");
    assert_eq!(
        j["isolated_cpus"],
        serde_json::json!([1, 2, 3, 4, 5, 13, 14, 15, 16, 17])
    );
    assert_eq!(j["machine"], xml);
    // The live machine plans too (here: the router's cpu isolated, cpu 0 left to the OS).
    let live = json(&agentwire(&["plan", "--kernel-cmdline", "--json"]));
    assert!(live["cmdline"]
        .as_str()
        .unwrap()
        .starts_with("isolcpus=managed_irq,domain,"));
}

#[test]
fn cpuset_gives_the_os_its_cpus_and_the_daemon_its_own() {
    let xml = repo("scheduler/tests/data/hwloc/24em64t-2n6c2t-pci.xml");
    let xml = xml.to_str().unwrap();
    let j = json(&agentwire(&[
        "plan",
        "--topology",
        xml,
        "--cpuset",
        "--json",
    ]));
    let dropins: Vec<(String, String)> = j["dropins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["contents"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let os = "0,6-12,18-23";
    // The partitions' pus (idle hyper-thread 13 excluded) and housekeeping 0,12.
    let daemon = "0-5,12,14-17";
    assert_eq!(
        dropins,
        [
            ("system.slice", format!("[Slice]\nAllowedCPUs={os}\n")),
            ("user.slice", format!("[Slice]\nAllowedCPUs={os}\n")),
            (
                "agentwire.slice",
                format!("[Slice]\nAllowedCPUs={daemon}\n")
            ),
            (
                "agentwire.service",
                format!("[Service]\nCPUAffinity={daemon}\n")
            ),
        ]
        .map(|(unit, contents)| (
            format!("/etc/systemd/system/{unit}.d/50-agentwire-cpus.conf"),
            contents
        ))
    );
    // The text form: the same files, each under a comment naming its path.
    let text = agentwire(&["plan", "--topology", xml, "--cpuset"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "# /etc/systemd/system/system.slice.d/50-agentwire-cpus.conf\n[Slice]\nAllowedCPUs={os}\n"
        )),
        "{text}"
    );
    // One output at a time.
    let both = agentwire(&["plan", "--kernel-cmdline", "--cpuset"]);
    assert_eq!(both.status.code(), Some(2));
}
