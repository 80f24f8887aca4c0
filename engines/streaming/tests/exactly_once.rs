//! Exactly-once runs over a real log, real checkpoint files and a real sink file: stops and
//! restores at every epoch, replays after outputs were already written, rescaling, and
//! malformed records. (SIGKILL at random points is `agentwire stream chaos`, tested in the
//! tools crate.)

use std::path::Path;

use agentwire_streaming::codec::encode;
use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::exactly_once::checkpoint::CheckpointStore;
use agentwire_streaming::exactly_once::runner::{
    run_epochs, EpochConfig, ExactlyOnceError, RunReport,
};
use agentwire_streaming::exactly_once::sink::DedupSink;
use agentwire_streaming::log::{Log, LogConfig};
use agentwire_streaming::pipeline::Pipeline;
use agentwire_streaming::window::{WindowKind, WindowSpec};

const EVENTS: u64 = 3_000;

fn pipeline() -> Pipeline {
    let mut spec = WindowSpec::new(WindowKind::Sliding {
        size_ns: 40,
        slide_ns: 20,
    });
    spec.out_of_orderness_ns = 5;
    spec.allowed_lateness_ns = 10;
    spec.quantiles = vec![0.5];
    spec.late_side_output = true;
    Pipeline::new(spec).filter(|e| e.value != 13.0)
}

/// A deterministic input with out-of-order and late events, and a few malformed records.
fn write_input(dir: &Path) {
    let (mut log, _) = Log::open(LogConfig::new(dir)).unwrap();
    let mut records = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..EVENTS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let back = (state % 60) as i64; // up to 60 behind: some late, some too late
        let mut bytes = Vec::new();
        if i % 500 == 7 {
            bytes.extend_from_slice(b"not an event");
        } else {
            let e = Event::new(Key::Id(state % 7), i as i64 - back, (state % 20) as f64);
            encode(&e, &mut bytes);
        }
        records.push(bytes);
    }
    for chunk in records.chunks(100) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        log.append_batch(0, &refs).unwrap();
    }
}

fn config(shards: usize, stop_after_epoch: Option<u64>) -> EpochConfig {
    EpochConfig {
        shards,
        round_records: 64,
        epoch_rounds: 3,
        partition: 0,
        stop_after_epoch,
    }
}

fn run(dir: &Path, name: &str, config: &EpochConfig) -> Result<RunReport, ExactlyOnceError> {
    let (mut log, _) = Log::open(LogConfig::new(dir.join("input"))).unwrap();
    let store = CheckpointStore::open(&dir.join(format!("{name}.ckpt"))).unwrap();
    let (mut sink, _) = DedupSink::open(&dir.join(format!("{name}.jsonl"))).unwrap();
    run_epochs(
        &pipeline(),
        &mut log,
        &store,
        &mut sink,
        config,
        &mut |_| {},
    )
}

/// The sink's lines, sorted: each shard's lines come in order, but how the shards'
/// lines interleave depends on thread timing.
fn lines(dir: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The outputs without their ids, sorted (for runs whose shard count differs).
fn contents(dir: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = lines(dir, name)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["output"].to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn stopping_and_restoring_at_every_epoch_gives_the_clean_output() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("input"));
    let clean = run(dir.path(), "clean", &config(2, None)).unwrap();
    assert!(clean.finished);
    assert_eq!(clean.events_in, EVENTS);
    assert_eq!(clean.records_malformed, 6);
    assert!(
        clean.windows.late_events_dropped > 0,
        "the input has too-late events"
    );
    assert!(clean.events_filtered > 0);
    let epochs = clean.committed_epoch;
    assert_eq!(epochs, EVENTS.div_ceil(64 * 3));
    for epoch in 1..=epochs {
        let r = run(dir.path(), "stepped", &config(2, Some(epoch))).unwrap();
        assert_eq!(
            (r.restored_epoch, r.committed_epoch),
            ((epoch > 1).then_some(epoch - 1), epoch)
        );
        assert_eq!(r.outputs_skipped, 0);
    }
    let last = run(dir.path(), "stepped", &config(2, None)).unwrap();
    assert!(last.finished);
    assert_eq!(last.events_in, EVENTS);
    assert_same(&lines(dir.path(), "stepped"), &lines(dir.path(), "clean"));
}

#[test]
fn a_replay_after_outputs_were_written_past_the_checkpoint_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("input"));
    run(dir.path(), "clean", &config(2, None)).unwrap();
    // Checkpoint at epoch 4, then the whole run on into the sink: as if the process had
    // died after writing everything but before committing the later epochs.
    run(dir.path(), "crashed", &config(2, Some(4))).unwrap();
    let at_epoch_4 = dir.path().join("epoch4.ckpt");
    copy_dir(&dir.path().join("crashed.ckpt"), &at_epoch_4);
    let ahead = run(dir.path(), "crashed", &config(2, None)).unwrap();
    std::fs::remove_dir_all(dir.path().join("crashed.ckpt")).unwrap();
    std::fs::rename(&at_epoch_4, dir.path().join("crashed.ckpt")).unwrap();
    let replay = run(dir.path(), "crashed", &config(2, None)).unwrap();
    assert_eq!(replay.restored_epoch, Some(4));
    assert_eq!(replay.outputs_written, 0);
    assert_eq!(replay.outputs_skipped, ahead.outputs_written);
    assert_same(&lines(dir.path(), "crashed"), &lines(dir.path(), "clean"));
}

#[test]
fn a_restore_with_more_or_fewer_shards_moves_the_keys_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("input"));
    run(dir.path(), "clean", &config(2, None)).unwrap();
    run(dir.path(), "scaled", &config(2, Some(3))).unwrap();
    run(dir.path(), "scaled", &config(3, Some(7))).unwrap();
    run(dir.path(), "scaled", &config(1, Some(9))).unwrap();
    let r = run(dir.path(), "scaled", &config(4, None)).unwrap();
    assert!(r.finished);
    assert_same(
        &contents(dir.path(), "scaled"),
        &contents(dir.path(), "clean"),
    );
}

#[test]
fn changing_the_shard_count_with_outputs_past_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("input"));
    run(dir.path(), "x", &config(2, Some(2))).unwrap();
    let at_epoch_2 = dir.path().join("e2.ckpt");
    copy_dir(&dir.path().join("x.ckpt"), &at_epoch_2);
    run(dir.path(), "x", &config(2, None)).unwrap();
    std::fs::remove_dir_all(dir.path().join("x.ckpt")).unwrap();
    std::fs::rename(&at_epoch_2, dir.path().join("x.ckpt")).unwrap();
    let e = run(dir.path(), "x", &config(3, None)).unwrap_err();
    assert!(
        matches!(
            e,
            ExactlyOnceError::Rescale {
                checkpoint: 2,
                now: 3,
                epoch: 2
            }
        ),
        "{e}"
    );
    // The same count is fine, and ends where a clean run does.
    run(dir.path(), "x", &config(2, None)).unwrap();
    run(dir.path(), "clean", &config(2, None)).unwrap();
    assert_same(&lines(dir.path(), "x"), &lines(dir.path(), "clean"));
}

/// Equal line lists, or a short report of where they part.
fn assert_same(got: &[String], expected: &[String]) {
    if let Some(i) = (0..got.len().min(expected.len())).find(|&i| got[i] != expected[i]) {
        panic!(
            "line {i} differs:\n  got      {}\n  expected {}",
            got[i], expected[i]
        );
    }
    assert_eq!(got.len(), expected.len(), "same lines, different counts");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn input_appended_after_a_finished_run_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let append = |from: u64, to: u64| {
        let (mut log, _) = Log::open(LogConfig::new(dir.path().join("input"))).unwrap();
        let records: Vec<Vec<u8>> = (from..to)
            .map(|i| {
                let mut bytes = Vec::new();
                encode(&Event::new(Key::Id(i % 2), i as i64, 1.0), &mut bytes);
                bytes
            })
            .collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        log.append_batch(0, &refs).unwrap();
    };
    let run_tumbling = || {
        let (mut log, _) = Log::open(LogConfig::new(dir.path().join("input"))).unwrap();
        let store = CheckpointStore::open(&dir.path().join("t.ckpt")).unwrap();
        let (mut sink, _) = DedupSink::open(&dir.path().join("t.jsonl")).unwrap();
        let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }));
        run_epochs(
            &pipeline,
            &mut log,
            &store,
            &mut sink,
            &config(2, None),
            &mut |_| {},
        )
        .unwrap()
    };
    append(0, 150);
    let first = run_tumbling();
    assert!(first.finished);
    // Nothing new: a restart writes nothing.
    assert_eq!(run_tumbling().outputs_written, 0);
    append(150, 400);
    let second = run_tumbling();
    assert!(second.outputs_written > 0);
    // Every event is in exactly one window result: no window emitted twice.
    let total: u64 = lines(dir.path(), "t")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["output"]["count"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 400);
}
