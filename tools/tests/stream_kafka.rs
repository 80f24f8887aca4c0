//! `agentwire stream kafka` as a user runs it: the real binary against librdkafka's mock
//! cluster, which runs in this test process and listens on localhost, so the binary (a child
//! process) reaches it through its bootstrap servers for as long as the test holds it.
//!
//! What these tests show, and what only a real broker can: the mock writes no transaction
//! markers (a reader sees the records of an aborted transaction), does not fence a producer
//! by its transactional.id, and does not store offsets committed inside a transaction. So
//! the jobs that restart here commit their offsets after each transaction
//! (`--offset-commit after-transaction`), which the mock stores; the test then shows that a
//! SIGKILL mid-epoch and a restart leave, after dropping repeats by output id, exactly the
//! clean run's records, byte for byte, and that the repeats are exactly the records the
//! killed process wrote in its open epoch. That a read_committed consumer never sees those
//! repeats (they belong to a transaction the restart aborts) is the broker's part, which the
//! mock cannot show.

use std::process::Command;

fn agentwire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .output()
        .expect("run agentwire")
}

#[test]
fn help_teaches_the_protocol_the_flags_and_an_example() {
    let out = agentwire(&["stream", "kafka", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--brokers <HOST:PORT>",
        "--checkpoints <DIR>",
        "--transactional-id <ID>",
        "--epoch-events <N>",
        "after-transaction",
        "Exactly once: each epoch",
        "SIGTERM",
        "Example:",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[cfg(not(feature = "kafka"))]
#[test]
fn a_build_without_the_kafka_feature_says_how_to_get_it() {
    let out = agentwire(&[
        "stream",
        "kafka",
        "--brokers",
        "b:9092",
        "--input-topic",
        "i",
        "--output-topic",
        "o",
        "--group",
        "g",
        "--checkpoints",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features kafka"), "{err}");
}

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use agentwire_streaming::event::{Event, Key};
    use agentwire_streaming::kafka::encode_event;
    use agentwire_streaming::kafka::testing::{split_repeats, MockKafka, WrittenOutput};
    use serde_json::Value;

    use super::agentwire;

    /// A watchdog on every wait, never a synchronisation.
    const WATCHDOG: Duration = Duration::from_secs(60);
    /// Input messages of the whole input, and of the part the killed process reads.
    const MESSAGES: usize = 600;
    const FIRST_PART: usize = 250;
    const MS: i64 = 1_000_000;

    const PIPELINE: &str = r#"
[[stage]]
op = "filter"
value_min = 1.0
[window]
kind = "tumbling"
size_ms = 10
out_of_orderness_ms = 2
quantiles = [0.5]
late_side_output = true
"#;

    /// Message `i`: key `i % 5`, about `i` ms (up to 1.4 ms out of order), value `i % 17`
    /// (0 is filtered out), every 150th 40 ms late, every 97th not JSON.
    fn message(i: usize) -> Vec<u8> {
        if i % 97 == 50 {
            return b"not an event".to_vec();
        }
        let mut t = i as i64 * MS - (i as i64 % 3) * 700_000;
        if i % 150 == 75 {
            t -= 40 * MS;
        }
        let mut buf = Vec::new();
        let event = Event::new(Key::Id(i as u64 % 5), t, (i % 17) as f64);
        encode_event(&event, &mut buf).unwrap();
        buf
    }

    fn produce(kafka: &MockKafka, topic: &str, range: std::ops::Range<usize>) {
        let payloads: Vec<Vec<u8>> = range.map(message).collect();
        let records: Vec<(i32, Option<&[u8]>)> =
            payloads.iter().map(|p| (0, Some(p.as_slice()))).collect();
        kafka.produce(topic, &records, WATCHDOG).unwrap();
    }

    /// `stream kafka` arguments for one job: its group, checkpoints and topics.
    fn job_args(
        kafka: &MockKafka,
        dir: &Path,
        job: &str,
        input: &str,
        output: &str,
    ) -> Vec<String> {
        let pipeline = dir.join("pipeline.toml");
        std::fs::write(&pipeline, PIPELINE).unwrap();
        [
            "stream",
            "kafka",
            "--brokers",
            kafka.bootstrap_servers(),
            "--input-topic",
            input,
            "--output-topic",
            output,
            "--group",
            job,
            "--checkpoints",
            &dir.join(job).display().to_string(),
            "--pipeline",
            &pipeline.display().to_string(),
            "--epoch-events",
            "100",
            // Epochs by count only, so they fall on the same messages in every run.
            "--epoch-ms",
            "50000",
            "--offset-commit",
            "after-transaction",
            "--json",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Runs to the end of the input; returns the JSON summary.
    fn run_to_end(args: &[String]) -> Value {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--until-end");
        let out = agentwire(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts a job that runs until stopped, and waits for its progress to report it caught
    /// up after `messages` messages; returns the child and that report.
    fn start_until_caught_up(args: &[String], messages: usize) -> (Child, Value) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentwire"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["progress"] == "caught_up" && v["messages_in"] == messages {
                    let _ = tx.send(v);
                }
            }
        });
        match rx.recv_timeout(WATCHDOG) {
            Ok(caught_up) => (child, caught_up),
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no caught-up report ({e}); stdout: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    /// One record of an output topic.
    type Out = WrittenOutput;

    /// Every record of `topic`, sorted by output id, repeats kept.
    fn outputs(kafka: &MockKafka, topic: &str) -> Vec<Out> {
        kafka.read_outputs(topic, WATCHDOG).unwrap()
    }

    /// The records without repeats, and the repeats (each byte for byte its original).
    fn dedup(outs: Vec<Out>) -> (Vec<Out>, Vec<Out>) {
        split_repeats(outs).unwrap_or_else(|id| panic!("a repeat of {id} differs"))
    }

    /// The clean run: the whole input in one run of the job `clean`.
    fn clean_run(kafka: &MockKafka, dir: &Path) -> Vec<Out> {
        produce(kafka, "events-clean", 0..MESSAGES);
        let args = job_args(kafka, dir, "clean", "events-clean", "results-clean");
        let summary = run_to_end(&args);
        assert_eq!(summary["stopped"], "caught up");
        assert_eq!(summary["messages_in"], MESSAGES);
        assert_eq!(
            summary["malformed"],
            (0..MESSAGES).filter(|i| i % 97 == 50).count()
        );
        // Six full epochs, and the windows flushed in a seventh.
        assert_eq!(summary["committed_epoch"], 7);
        assert_eq!(summary["windows_flushed"], true);
        assert_eq!(summary["transactional_id"], "clean-shard-0");
        let clean = outputs(kafka, "results-clean");
        let (unique, repeats) = dedup(clean.clone());
        assert!(repeats.is_empty(), "a clean run repeats nothing");
        assert_eq!(summary["outputs"], unique.len());
        assert!(clean.iter().any(|o| o.id.epoch == 7));
        clean
    }

    fn mock() -> MockKafka {
        MockKafka::new(&[
            ("events-clean", 1),
            ("events", 1),
            ("results-clean", 2),
            ("results", 2),
        ])
        .unwrap()
    }

    #[test]
    fn a_job_sigkilled_mid_epoch_and_restarted_writes_the_clean_runs_records_plus_its_aborted_epoch(
    ) {
        let kafka = mock();
        let dir = tempfile::tempdir().unwrap();
        let clean = clean_run(&kafka, dir.path());

        // The job reads the first 250 messages: epochs 1 and 2 commit, epoch 3 is open with
        // 50 messages, and its records reach the broker (a caught-up job flushes them).
        produce(&kafka, "events", 0..FIRST_PART);
        let args = job_args(&kafka, dir.path(), "crash", "events", "results");
        let (mut child, caught_up) = start_until_caught_up(&args, FIRST_PART);
        child.kill().unwrap(); // SIGKILL, mid-epoch
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
        assert_eq!(caught_up["open_epoch"], 3);
        let sent = caught_up["outputs_sent"].as_u64().unwrap();
        assert!(sent > 0, "the killed epoch wrote records: {caught_up}");

        // The rest of the input arrives; the restart restores epoch 2, which the group
        // committed, replays epoch 3 and goes on to the end.
        produce(&kafka, "events", FIRST_PART..MESSAGES);
        let summary = run_to_end(&args);
        assert_eq!(
            (&summary["group_epoch"], &summary["restored_epoch"]),
            (&Value::from(2), &Value::from(2))
        );
        assert_eq!(summary["messages_in"], MESSAGES - 200);
        assert_eq!(summary["committed_epoch"], 7);

        let (unique, repeats) = dedup(outputs(&kafka, "results"));
        assert_eq!(unique, clean, "by output id, the clean run's records");
        let aborted: Vec<Out> = clean
            .iter()
            .filter(|o| o.id.epoch == 3 && o.id.seq < sent)
            .cloned()
            .collect();
        assert_eq!(
            repeats, aborted,
            "the repeats are the killed epoch's records; a real broker hides them from read_committed readers"
        );
    }

    #[test]
    fn sigterm_commits_the_open_epoch_keeps_the_windows_and_the_restart_continues_them() {
        let kafka = mock();
        let dir = tempfile::tempdir().unwrap();
        let clean = clean_run(&kafka, dir.path());

        produce(&kafka, "events", 0..FIRST_PART);
        let args = job_args(&kafka, dir.path(), "stop", "events", "results");
        let (child, _) = start_until_caught_up(&args, FIRST_PART);
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stopped: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stopped["stopped"], "stopped");
        assert_eq!(stopped["windows_flushed"], false);
        assert_eq!(
            (&stopped["messages_in"], &stopped["committed_epoch"]),
            (&Value::from(FIRST_PART), &Value::from(3))
        );

        produce(&kafka, "events", FIRST_PART..MESSAGES);
        let rest = run_to_end(&args);
        assert_eq!(rest["restored_epoch"], 3);
        assert_eq!(rest["messages_in"], MESSAGES - FIRST_PART);
        // Epoch 3 ended early, so later epochs fall on other messages and the ids differ; the
        // results, in order, are the clean run's: the restored windows went on.
        let results = |outs: Vec<Out>| -> Vec<(Vec<u8>, Value)> {
            outs.into_iter()
                .map(|o| {
                    let mut v: Value = serde_json::from_slice(&o.payload).unwrap();
                    for id in ["shard", "epoch", "seq"] {
                        v.as_object_mut().unwrap().remove(id);
                    }
                    (o.key, v)
                })
                .collect()
        };
        let got = outputs(&kafka, "results");
        assert_eq!(
            dedup(got.clone()).1,
            Vec::new(),
            "a clean stop repeats nothing"
        );
        assert_eq!(results(got), results(clean));
    }

    #[test]
    fn refuses_a_pipeline_with_several_shards_and_names_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("p.toml");
        std::fs::write(&pipeline, format!("shards = 2\n{PIPELINE}")).unwrap();
        let out = agentwire(&[
            "stream",
            "kafka",
            "--brokers",
            "127.0.0.1:1",
            "--input-topic",
            "i",
            "--output-topic",
            "o",
            "--group",
            "g",
            "--checkpoints",
            &dir.path().join("ck").display().to_string(),
            "--pipeline",
            &pipeline.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("shards = 2") && err.contains("--partitions"),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_cluster_is_named_with_the_timeout_that_expired() {
        let dir = tempfile::tempdir().unwrap();
        let out = agentwire(&[
            "stream",
            "kafka",
            "--brokers",
            "127.0.0.1:1",
            "--input-topic",
            "i",
            "--output-topic",
            "o",
            "--group",
            "g",
            "--checkpoints",
            &dir.path().join("ck").display().to_string(),
            "--timeout-ms",
            "300",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("could not register transactional.id g-shard-0 with the cluster at 127.0.0.1:1 within --timeout-ms 300"),
            "{err}"
        );
    }
}
