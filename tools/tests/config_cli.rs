//! `agentwire config check` and `agentwire config default` as an operator or a script runs
//! them: every problem of a real file at once, each as `FILE:LINE: KEY`, exit codes a script
//! can trust (0 valid, 1 invalid, 2 could not check), the plan against this machine or an
//! hwloc export.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{scratch, AGENTWIRE};

fn agentwire(args: &[&str]) -> Output {
    Command::new(AGENTWIRE)
        .args(args)
        .output()
        .expect("run agentwire")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn check(file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["config", "check", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    agentwire(&args)
}

/// A file with a problem of every kind, top level and in each section, and the
/// `(line, key)` each one must be reported at.
const BROKEN: &str = "\
# an operator's file with several mistakes
agents_max = 0
ring_capacity_bytes = 5000
idel = \"spin\"
slow_subscriber = \"sometimes\"

[[authorize]]
uids = [1001]
names = [\"a*b\"]
publsh = [\"x\"]

[partitions.nas]
any = \"two\"
cpuz = [1]

[rebalance]
low_water = 0.9
sample_ms = 1

[streaming]
enabled = true
alert_threshold = 2.0
detector = \"psychic\"
[streaming.window]
kind = \"tumbling\"
";

const BROKEN_AT: [(usize, &str); 13] = [
    (2, "agents_max"),
    (3, "ring_capacity_bytes"),
    (4, "idel"),
    (5, "slow_subscriber"),
    (9, "authorize[0].names"),
    (10, "authorize[0].publsh"),
    (13, "partitions.nas.any"),
    (14, "partitions.nas.cpuz"),
    (17, "rebalance.low_water"),
    (18, "rebalance.sample_ms"),
    (22, "streaming.alert_threshold"),
    (23, "streaming.detector"),
    (24, "streaming.window.size_ms"),
];

#[test]
fn every_problem_of_a_file_is_reported_with_file_line_and_key() {
    let dir = scratch("config-broken");
    let file = dir.join("agentwire.toml");
    std::fs::write(&file, BROKEN).unwrap();
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    for (line, key) in BROKEN_AT {
        let at = format!("{}:{line}: {key}", file.display());
        assert!(
            lines.iter().any(|l| l.starts_with(&at)),
            "no problem reported at {at}:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), BROKEN_AT.len() + 1, "{stderr}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("{}: 13 problems", file.display()).as_str())
    );
    assert!(out.stdout.is_empty(), "nothing on stdout when invalid");

    // The same, as one JSON object on stdout.
    let out = check(&file, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problems = report["problems"].as_array().unwrap();
    let found: Vec<(u64, &str)> = problems
        .iter()
        .map(|p| {
            assert_eq!(p["file"], file.display().to_string());
            assert!(!p["message"].as_str().unwrap().is_empty(), "{p}");
            (p["line"].as_u64().unwrap(), p["key"].as_str().unwrap())
        })
        .collect();
    let expected: Vec<(u64, &str)> = BROKEN_AT.iter().map(|(l, k)| (*l as u64, *k)).collect();
    assert_eq!(found, expected);
}

#[test]
fn every_syntax_error_is_reported_and_nothing_past_them() {
    let dir = scratch("config-syntax");
    let file = dir.join("syntax.toml");
    std::fs::write(
        &file,
        "agents_max = 12x\nmetrics_port = 70000\nidle = \"spin\n",
    )
    .unwrap();
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = |line: usize, key: &str| format!("{}:{line}: {key}: TOML syntax", file.display());
    assert!(stderr.contains(&at(1, "agents_max")), "{stderr}");
    assert!(stderr.contains(&at(3, "idle")), "{stderr}");
    // Line 2's value is out of range, but past a syntax error values are not trusted.
    assert!(!stderr.contains(":2:"), "{stderr}");
}

#[test]
fn a_valid_file_plans_here_and_on_an_export() {
    let dir = scratch("config-valid");
    let file = dir.join("ok.toml");
    std::fs::write(&file, "idle = \"spin\"\nagents_max = 100\n").unwrap();
    let out = check(&file, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with(&format!("{}: valid; plan on machine live", file.display())),
        "{stdout}"
    );
    assert!(stdout.contains("router"), "{stdout}");

    // On a 24-PU export a partition may name cpu 20; on this machine it may not (a CI
    // runner has fewer), and the export's plan refuses a CPU it lacks, with its line.
    let xml = repo("scheduler/tests/data/hwloc/24em64t-2n6c2t-pci.xml");
    let xml = xml.to_str().unwrap();
    std::fs::write(&file, "[partitions.router]\ncpus = [20]\n").unwrap();
    let out = check(&file, &["--topology", xml, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["valid"], &report["machine"]),
        (&true.into(), &xml.into())
    );
    assert_eq!(report["plan"]["partitions"][0]["name"], "router");
    assert_eq!(
        report["checks"],
        serde_json::json!([]),
        "no kernel checks for an export"
    );
    std::fs::write(&file, "agents_max = 10\n[partitions.router]\ncpus = [99]\n").unwrap();
    let out = check(&file, &["--topology", xml]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2: partitions.router: cannot be planned: partition router names cpu 99",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_check_that_cannot_run_exits_2() {
    let dir = scratch("config-usage");
    let file = dir.join("ok.toml");
    std::fs::write(&file, "").unwrap();
    let missing = check(&dir.join("missing.toml"), &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.toml"));
    let no_topology = check(&file, &["--topology", "/nonexistent.xml"]);
    assert_eq!(no_topology.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_topology.stderr).contains("lstopo"));
    assert_eq!(agentwire(&["config", "check"]).status.code(), Some(2));
    assert_eq!(agentwire(&["config", "bogus"]).status.code(), Some(2));
}

#[test]
fn the_default_prints_whole_and_checks_valid() {
    let out = agentwire(&["config", "default"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout.clone()).unwrap(),
        agentwire_runtime::config::DEFAULT_CONFIG_TOML
    );
    let dir = scratch("config-default");
    let file = dir.join("default.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    assert!(check(&file, &[]).status.success());
    // A reader that leaves early (`| head -1`) ends it quietly.
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = Command::new(AGENTWIRE)
        .args(["config", "default"])
        .stdout(Stdio::from(writer))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
