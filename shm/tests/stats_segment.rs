//! The stats segment's seqlock: snapshots never torn (threads and processes), a writer dead
//! mid-update reported busy rather than hanging a reader, hostile or short files refused with
//! a named error, and a model check of writes against snapshots.

use agentwire_shm::stats_segment::{
    SlotWriter, SnapshotError, StatsLayout, StatsReader, StatsSegment, StatsSegmentError,
    STATS_SLOTS_OFFSET,
};
use proptest::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HAMMER_TIME: Duration = Duration::from_millis(500);
const WATCHDOG: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "AW_STATS_SEGMENT_CHILD_PATH";
const COUNTERS: u32 = 32;
const WRITER_SLOT: usize = 1;

fn temp_path(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("aw-stats-{tag}-{}-{nanos}", std::process::id()))
}

/// One update of the invariant every snapshot must satisfy: counter `i` is `k * (i + 1)`,
/// where `k` is the update's number (so also `k == sequence / 2`).
fn write_invariant(w: &mut SlotWriter, k: u64) {
    w.update(|c| {
        for (i, v) in c.iter_mut().enumerate() {
            *v = k.wrapping_mul(i as u64 + 1);
        }
    });
}

/// Checks one snapshot; returns its update number.
fn check_invariant(counters: &[u64], sequence: u64) -> u64 {
    let k = counters[0];
    assert_eq!(sequence % 2, 0, "a snapshot's sequence is even");
    assert_eq!(
        k,
        sequence / 2,
        "counters from update {k}, sequence {sequence}"
    );
    for (i, v) in counters.iter().enumerate() {
        assert_eq!(
            *v,
            k.wrapping_mul(i as u64 + 1),
            "torn at counter {i}: {counters:?}"
        );
    }
    k
}

/// Reads `slot` until `until`, checking every snapshot; returns (consistent, busy) counts.
fn read_and_check(reader: &StatsReader, slot: usize, until: Instant) -> (u64, u64) {
    let mut out = vec![0; reader.layout().counters_per_slot as usize];
    let (mut ok, mut busy, mut last_k) = (0, 0, 0);
    while Instant::now() < until {
        match reader.snapshot(slot, &mut out) {
            Ok(sequence) => {
                let k = check_invariant(&out, sequence);
                assert!(k >= last_k, "went back from update {last_k} to {k}");
                last_k = k;
                ok += 1;
            }
            Err(SnapshotError::Busy { .. }) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    (ok, busy)
}

#[test]
fn snapshots_are_never_torn_between_threads() {
    let seg = StatsSegment::create_memfd("torn", StatsLayout::new(3, COUNTERS)).unwrap();
    let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    let mut writer = seg.writer(WRITER_SLOT).unwrap();
    let stop = AtomicBool::new(false);
    let until = Instant::now() + HAMMER_TIME;
    std::thread::scope(|s| {
        let writes = s.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                write_invariant(&mut writer, k);
            }
            k
        });
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| read_and_check(&reader, WRITER_SLOT, until)))
            .collect();
        // Join the readers before unwrapping: a reader that found a torn snapshot panics,
        // and the writer must still be stopped or the scope would wait on it forever.
        let counts: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let updates = writes.join().unwrap();
        assert!(updates > 0);
        for count in counts {
            let (ok, busy) = count.unwrap_or_else(|p| std::panic::resume_unwind(p));
            assert!(
                ok > 0,
                "no consistent snapshot in {HAMMER_TIME:?} ({busy} busy)"
            );
        }
    });
    // The slots next to the hammered one were never touched.
    let (mut all, mut seqs) = (vec![0; 3 * COUNTERS as usize], [None; 3]);
    assert_eq!(reader.snapshot_all(&mut all, &mut seqs), Ok(0));
    assert_eq!((seqs[0], seqs[2]), (Some(0), Some(0)));
    let per = COUNTERS as usize;
    assert!(all[..per].iter().chain(&all[2 * per..]).all(|&v| v == 0));
    check_invariant(&all[per..2 * per], seqs[1].unwrap());
}

/// Not a test on its own: the writer process of
/// `snapshots_are_never_torn_across_processes`, which runs this binary again with
/// `CHILD_ENV` set. Without it, it returns at once.
#[test]
fn child_writer_entry() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seg = StatsSegment::create_file(PathBuf::from(path).as_path(), layout_2x32()).unwrap();
    let mut writer = seg.writer(WRITER_SLOT).unwrap();
    // Runs until the parent kills it; the bound only stops an orphan.
    let until = Instant::now() + WATCHDOG;
    let mut k = 0;
    while Instant::now() < until {
        for _ in 0..1024 {
            k += 1;
            write_invariant(&mut writer, k);
        }
    }
}

fn layout_2x32() -> StatsLayout {
    StatsLayout::new(2, COUNTERS)
}

#[test]
fn snapshots_are_never_torn_across_processes() {
    let path = temp_path("xproc");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer_entry", "--test-threads=1", "-q"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _remove = RemoveOnDrop(path.clone());
    // The child renames the file into place only once it is initialised, so any open that
    // finds it finds a whole segment.
    let deadline = Instant::now() + WATCHDOG;
    let reader = loop {
        match StatsReader::open_path(&path) {
            Ok(r) => break r,
            Err(StatsSegmentError::Io { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "watchdog: no segment from the child"
                );
                assert!(child.0.try_wait().unwrap().is_none(), "child exited early");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("a half-made segment was visible: {e}"),
        }
    };
    assert_eq!(reader.creator_pid(), child.0.id());
    assert_eq!(reader.layout(), layout_2x32());
    let (ok, busy) = read_and_check(&reader, WRITER_SLOT, Instant::now() + HAMMER_TIME);
    assert!(ok > 0, "no consistent snapshot ({busy} busy)");
    let mut out = [0; COUNTERS as usize];
    let first = reader.snapshot(WRITER_SLOT, &mut out);
    // Killed at an arbitrary point, likely mid-update: afterwards every read is either the
    // last whole update or busy, and returns.
    drop(child);
    for _ in 0..100 {
        match reader.snapshot(WRITER_SLOT, &mut out) {
            Ok(sequence) => {
                check_invariant(&out, sequence);
            }
            Err(e) => assert!(matches!(e, SnapshotError::Busy { .. }), "{e}"),
        }
    }
    assert!(first.is_ok() || matches!(first, Err(SnapshotError::Busy { .. })));
}

/// Kills and reaps the child however the test ends, so a failed check never leaves it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a test's segment file however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `bytes` at `offset` of the segment's file, as a dead or hostile writer would leave
/// them.
fn scribble(seg: &StatsSegment, offset: u64, bytes: &[u8]) {
    File::from(seg.try_clone_fd().unwrap())
        .write_at(bytes, offset)
        .unwrap();
}

#[test]
fn a_writer_killed_mid_update_makes_readers_busy_never_hung() {
    let path = temp_path("dead");
    let seg = StatsSegment::create_file(&path, layout_2x32()).unwrap();
    let mut writer = seg.writer(WRITER_SLOT).unwrap();
    write_invariant(&mut writer, 1);
    // A writer killed between its odd and even stores leaves the sequence odd, here with the
    // first counter of the next update already written.
    let slot_at = (STATS_SLOTS_OFFSET + WRITER_SLOT * layout_2x32().slot_bytes()) as u64;
    scribble(&seg, slot_at, &3u64.to_le_bytes());
    scribble(&seg, slot_at + 8, &2u64.to_le_bytes());
    let (done_tx, done_rx) = mpsc::channel();
    let reader_path = path.clone();
    std::thread::spawn(move || {
        let reader = StatsReader::open_path(&reader_path).unwrap();
        let mut out = [0; COUNTERS as usize];
        let bounded = reader.snapshot(WRITER_SLOT, &mut out);
        let short = reader.with_retries_max(10).snapshot(WRITER_SLOT, &mut out);
        done_tx.send((bounded, short)).unwrap();
    });
    let (bounded, short) = done_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: a reader hung on a dead writer's slot");
    assert!(
        matches!(
            bounded,
            Err(SnapshotError::Busy {
                slot: WRITER_SLOT,
                sequence: 3,
                ..
            })
        ),
        "{bounded:?}"
    );
    assert_eq!(
        short,
        Err(SnapshotError::Busy {
            slot: WRITER_SLOT,
            retries: 10,
            sequence: 3
        })
    );
    // The other slot still reads.
    let reader = StatsReader::open_path(&path).unwrap();
    assert_eq!(reader.snapshot(0, &mut [0; COUNTERS as usize]), Ok(0));
    std::fs::remove_file(&path).unwrap();
}

fn file_with(tag: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_path(tag);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_bytes(tag: &str, bytes: &[u8]) -> Result<StatsReader, StatsSegmentError> {
    let path = file_with(tag, bytes);
    let opened = StatsReader::open_path(&path);
    std::fs::remove_file(&path).unwrap();
    opened
}

fn segment_bytes(layout: StatsLayout) -> Vec<u8> {
    let seg = StatsSegment::create_memfd("image", layout).unwrap();
    let mut bytes = vec![0; seg.len_bytes()];
    File::from(seg.try_clone_fd().unwrap())
        .read_exact_at(&mut bytes, 0)
        .unwrap();
    bytes
}

#[test]
fn short_truncated_or_foreign_files_are_refused_with_a_named_error() {
    let good = segment_bytes(layout_2x32());
    assert!(open_bytes("good", &good).is_ok());

    for len in [0, 1, 63, 127] {
        let e = open_bytes("short", &good[..len]).unwrap_err();
        assert!(
            matches!(e, StatsSegmentError::TooShort { expected_bytes: 128, found_bytes } if found_bytes == len as u64),
            "{e}"
        );
    }
    // A whole header whose slots were cut off.
    let e = open_bytes("truncated", &good[..1000]).unwrap_err();
    assert!(
        matches!(
            e,
            StatsSegmentError::TooShort {
                expected_bytes: 4096,
                found_bytes: 1000
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("1000 bytes"), "{e}");

    let e = open_bytes("zeros", &[0; 4096]).unwrap_err();
    assert!(matches!(e, StatsSegmentError::BadMagic { found: 0 }), "{e}");
    let e = open_bytes("text", &[b'x'; 4096]).unwrap_err();
    assert!(matches!(e, StatsSegmentError::BadMagic { .. }), "{e}");

    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4096]);
    let e = open_bytes("longer", &longer).unwrap_err();
    assert!(
        e.to_string().contains("file size is 8192, expected 4096"),
        "{e}"
    );

    let mut huge = good.clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = open_bytes("huge", &huge).unwrap_err();
    assert!(
        matches!(
            e,
            StatsSegmentError::OutOfRange {
                field: "slot_count",
                found: u32::MAX,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn every_header_byte_but_the_reserved_word_is_checked() {
    let layout = StatsLayout::new(3, 8);
    let good = segment_bytes(layout);
    for at in 0..64 {
        // xor 1 turns slot_count 3 into 2, which still fits the same page: only the
        // checksum catches that one.
        let mut bytes = good.clone();
        bytes[at] ^= 1;
        let opened = open_bytes("every", &bytes);
        if (56..64).contains(&at) {
            assert_eq!(opened.unwrap().layout(), layout);
        } else {
            assert!(opened.is_err(), "byte {at} changed and was accepted");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add { slot: usize, index: usize, n: u64 },
    Set { slot: usize, values: Vec<u64> },
}

fn op(slots: usize, counters: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..slots, 0..counters, any::<u64>()).prop_map(|(slot, index, n)| Op::Add {
            slot,
            index,
            n
        }),
        (0..slots, proptest::collection::vec(any::<u64>(), counters))
            .prop_map(|(slot, values)| Op::Set { slot, values }),
    ]
}

fn layout_and_ops() -> impl Strategy<Value = (StatsLayout, Vec<Op>)> {
    (1u32..5, 1u32..40).prop_flat_map(|(slots, counters)| {
        (
            Just(StatsLayout::new(slots, counters)),
            proptest::collection::vec(op(slots as usize, counters as usize), 0..60),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_match_a_model_of_the_writes((layout, ops) in layout_and_ops()) {
        let seg = StatsSegment::create_memfd("model", layout).unwrap();
        let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
        let (slots, per) = (layout.slot_count as usize, layout.counters_per_slot as usize);
        let mut writers: Vec<SlotWriter> = (0..slots).map(|s| seg.writer(s).unwrap()).collect();
        let mut model = vec![vec![0u64; per]; slots];
        let mut updates = vec![0u64; slots];
        let mut out = vec![0; per];
        for op in ops {
            let slot = match op {
                Op::Add { slot, index, n } => {
                    writers[slot].add(index, n);
                    model[slot][index] = model[slot][index].wrapping_add(n);
                    slot
                }
                Op::Set { slot, values } => {
                    writers[slot].update(|c| c.copy_from_slice(&values));
                    model[slot] = values;
                    slot
                }
            };
            updates[slot] += 1;
            prop_assert_eq!(reader.snapshot(slot, &mut out), Ok(2 * updates[slot]));
            prop_assert_eq!(&out, &model[slot]);
        }
        let (mut all, mut seqs) = (vec![0; slots * per], vec![None; slots]);
        prop_assert_eq!(reader.snapshot_all(&mut all, &mut seqs), Ok(0));
        prop_assert_eq!(all, model.concat());
        prop_assert_eq!(seqs, updates.iter().map(|u| Some(2 * u)).collect::<Vec<_>>());
    }

    /// Any single corrupted header byte is refused, never a panic, unless it is in the
    /// reserved word at 56..64; an accepted segment has the creator's layout.
    #[test]
    fn a_corrupt_header_byte_is_refused_or_harmless(at in 0usize..64, xor in 1u8..=255) {
        let layout = StatsLayout::new(3, 8);
        let mut bytes = segment_bytes(layout);
        bytes[at] ^= xor;
        match open_bytes("fuzz", &bytes) {
            Ok(reader) => {
                prop_assert!((56..64).contains(&at), "byte {} changed and was accepted", at);
                prop_assert_eq!(reader.layout(), layout);
            }
            Err(e) => prop_assert!(!(56..64).contains(&at), "harmless byte {} refused: {}", at, e),
        }
    }
}
