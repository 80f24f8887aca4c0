//! The dead-letter queue against real files: restarts, torn tails, corruption, bounds,
//! partial drains.

use agentwire_runtime::dlq::{
    DeadLetterQueue, DlqConfig, DlqError, Handoff, FILE_HEADER_BYTES, FILE_VERSION,
    RECORD_HEADER_BYTES,
};
use agentwire_runtime::dlq_quota::Holder;
use proptest::prelude::*;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

fn fresh_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("aw-dlq-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.log", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&path);
    path
}

fn frame(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

#[test]
fn records_survive_reopen_and_sequences_continue() {
    let path = fresh_path("reopen");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    for i in 0..10 {
        assert_eq!(dlq.append(3, &frame(i, 100)).unwrap(), i + 1);
    }
    dlq.sync().unwrap();
    drop(dlq);
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert_eq!(dlq.recovery().records, 10);
    assert_eq!(dlq.recovery().truncated_bytes, 0);
    let letters = dlq.read_all().unwrap();
    assert_eq!(letters.len(), 10);
    for (i, l) in letters.iter().enumerate() {
        assert_eq!(
            (l.sequence, l.reason, &l.frame),
            (i as u64 + 1, 3, &frame(i as u64, 100))
        );
    }
    assert_eq!(dlq.append(3, b"next").unwrap(), 11);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Cut the file anywhere: every record wholly before the cut is kept, the rest is cut
    /// off and reported, and appends continue after the last kept record.
    #[test]
    fn torn_tail_is_truncated_to_the_last_whole_record(lens in proptest::collection::vec(0usize..300, 1..20), cut_back in 1u64..400) {
        let path = fresh_path("torn");
        let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
        let mut ends = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            dlq.append(1, &frame(i as u64, len)).unwrap();
            ends.push(dlq.bytes());
        }
        drop(dlq);
        let full = ends[ends.len() - 1];
        let cut = full.saturating_sub(cut_back).max(FILE_HEADER_BYTES);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let kept = ends.iter().filter(|&&e| e <= cut).count();
        let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
        prop_assert_eq!(dlq.len(), kept as u64);
        let boundary = if kept == 0 { FILE_HEADER_BYTES } else { ends[kept - 1] };
        prop_assert_eq!(dlq.recovery().truncated_bytes, cut - boundary);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), boundary);
        for (i, l) in dlq.read_all().unwrap().iter().enumerate() {
            prop_assert_eq!(&l.frame, &frame(i as u64, lens[i]));
        }
        prop_assert_eq!(dlq.append(1, b"after").unwrap(), kept as u64 + 1);
    }
}

#[test]
fn corrupt_record_truncates_from_it_and_names_the_reason() {
    let path = fresh_path("corrupt");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    for i in 0..5 {
        dlq.append(2, &frame(i, 64)).unwrap();
    }
    drop(dlq);
    // Flip a payload byte of the third record.
    let third_payload =
        FILE_HEADER_BYTES + 2 * (RECORD_HEADER_BYTES + 64) + RECORD_HEADER_BYTES + 10;
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(third_payload)).unwrap();
    file.write_all(&[0xff]).unwrap();
    drop(file);
    let dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert_eq!(dlq.len(), 2);
    assert_eq!(
        dlq.recovery().truncated_bytes,
        3 * (RECORD_HEADER_BYTES + 64)
    );
    assert!(
        dlq.recovery()
            .reason
            .as_deref()
            .unwrap()
            .contains("checksum"),
        "{:?}",
        dlq.recovery()
    );
}

#[test]
fn bounds_refuse_appends_and_say_which() {
    let path = fresh_path("bounds");
    let mut config = DlqConfig::new(&path);
    config.records_max = 3;
    let mut dlq = DeadLetterQueue::open(config).unwrap();
    for i in 0..3 {
        dlq.append(1, &frame(i, 10)).unwrap();
    }
    let err = dlq.append(1, b"one too many").unwrap_err();
    assert!(
        matches!(
            err,
            DlqError::Full {
                records: 3,
                records_max: 3,
                ..
            }
        ),
        "{err}"
    );
    let path = fresh_path("bytes");
    let mut config = DlqConfig::new(&path);
    config.bytes_max = FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 100;
    let mut dlq = DeadLetterQueue::open(config).unwrap();
    dlq.append(1, &[0; 100]).unwrap();
    assert!(matches!(dlq.append(1, &[0; 1]), Err(DlqError::Full { .. })));
    assert_eq!(dlq.len(), 1, "a refused append stores nothing");
}

#[test]
fn partial_drain_keeps_exactly_the_undelivered_records_across_restart() {
    let path = fresh_path("drain");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    for i in 0..6 {
        dlq.append(3, &frame(i, 20)).unwrap();
    }
    let mut seen = Vec::new();
    let (delivered, err) = dlq
        .drain(|l| {
            if l.sequence == 4 {
                return Err("destination still full");
            }
            seen.push(l.sequence);
            Ok(Handoff::Next)
        })
        .unwrap();
    assert_eq!((delivered, err), (3, Some("destination still full")));
    assert_eq!(seen, [1, 2, 3]);
    drop(dlq);
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    let rest: Vec<u64> = dlq.read_all().unwrap().iter().map(|l| l.sequence).collect();
    assert_eq!(
        rest,
        [4, 5, 6],
        "undelivered records keep their sequence numbers"
    );
    assert_eq!(dlq.append(3, b"new").unwrap(), 7);
    let (delivered, err) = dlq.drain(|_| Ok::<_, ()>(Handoff::Next)).unwrap();
    assert_eq!((delivered, err), (4, None));
    assert!(dlq.is_empty());
}

#[test]
fn purge_empties_and_sequences_do_not_restart() {
    let path = fresh_path("purge");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    dlq.append(1, b"a").unwrap();
    dlq.append(1, b"b").unwrap();
    assert_eq!(dlq.purge().unwrap(), 2);
    drop(dlq);
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert!(dlq.is_empty());
    assert_eq!(
        dlq.append(1, b"c").unwrap(),
        3,
        "sequence numbers are never reused"
    );
}

#[test]
fn foreign_and_future_files_are_refused_not_overwritten() {
    let path = fresh_path("foreign");
    std::fs::write(&path, b"this is someone's precious text file, not a queue").unwrap();
    let err = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap_err();
    assert!(matches!(err, DlqError::NotADlq { .. }), "{err}");
    assert!(
        std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is someone's"),
        "left untouched"
    );

    let path = fresh_path("future");
    drop(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(8)).unwrap();
    file.write_all(&9u32.to_le_bytes()).unwrap();
    drop(file);
    let err = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[test]
fn a_daemon_handle_and_a_replay_handle_share_one_queue() {
    // The daemon keeps its queue open and appends; `dlq replay` opens the same file, drains
    // it (rename into place) while the daemon appends more. Nothing is lost or delivered
    // twice, and sequence numbers stay unique.
    let path = fresh_path("shared");
    let mut daemon = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    for i in 0..3 {
        daemon.try_append(3, &frame(i, 16)).unwrap();
    }
    let mut replay = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert_eq!(replay.len(), 3);
    let mut delivered = Vec::new();
    let (n, err) = replay
        .drain(|l| {
            delivered.push(l.sequence);
            if l.sequence == 2 {
                // The daemon dead-letters more while the replay delivers.
                daemon.try_append(3, &frame(9, 16)).unwrap();
            }
            Ok::<_, ()>(Handoff::Next)
        })
        .unwrap();
    assert_eq!((n, err), (3, None));
    assert_eq!(delivered, [1, 2, 3]);
    // The daemon's handle follows the file that was renamed into place.
    assert_eq!(daemon.try_append(3, &frame(10, 16)).unwrap(), 5);
    let left: Vec<u64> = DeadLetterQueue::open(DlqConfig::new(&path))
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|l| l.sequence)
        .collect();
    assert_eq!(left, [4, 5]);
}

#[test]
fn try_append_reports_busy_while_another_process_holds_the_lock() {
    let path = fresh_path("busy");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    let mut lock_name = path.clone().into_os_string();
    lock_name.push(".lock");
    let other = std::fs::File::open(&lock_name).unwrap();
    rustix::fs::flock(&other, rustix::fs::FlockOperation::LockExclusive).unwrap();
    match dlq.try_append(3, b"frame") {
        Err(DlqError::Busy { .. }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    rustix::fs::flock(&other, rustix::fs::FlockOperation::Unlock).unwrap();
    assert_eq!(dlq.try_append(3, b"frame").unwrap(), 1);
}

/// A frame sent by `source`, as the router stamps it.
fn frame_from(source: u32, i: u64, payload_len: usize) -> Vec<u8> {
    use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
    let mut f = frame(i, HEADER_BYTES + payload_len);
    FrameHeader::new(FrameKind::Send, source, 99, payload_len as u32).write_to(&mut f);
    f
}

#[test]
fn a_sender_over_its_quota_is_refused_and_its_quota_frees_on_drain_purge_and_reopen() {
    let path = fresh_path("quota");
    let config = DlqConfig {
        records_per_sender_max: 3,
        ..DlqConfig::new(&path)
    };
    let mut dlq = DeadLetterQueue::open(config.clone()).unwrap();
    for i in 0..3 {
        dlq.append(3, &frame_from(1, i, 10)).unwrap();
    }
    match dlq.append(3, &frame_from(1, 3, 10)) {
        Err(DlqError::SenderQuota(over)) => {
            assert_eq!(
                (over.holder, over.held.records, over.records_max),
                (Holder::Agent(1), 3, 3)
            );
        }
        other => panic!("expected SenderQuota, got {other:?}"),
    }
    // Another sender is not affected; the queue is far from full.
    dlq.append(3, &frame_from(2, 4, 10)).unwrap();
    assert_eq!((dlq.held_by(1).records, dlq.held_by(2).records), (3, 1));
    assert_eq!(dlq.len(), 4, "the refused frame was not stored");
    // Rebuilt on open (a restart): still at its quota.
    drop(dlq);
    let mut dlq = DeadLetterQueue::open(config.clone()).unwrap();
    assert_eq!(dlq.held_by(1).records, 3);
    assert!(matches!(
        dlq.append(3, &frame_from(1, 5, 10)),
        Err(DlqError::SenderQuota(_))
    ));
    // A replay handed every record off: the sender's quota is free again.
    let drained = dlq.drain(|_| Ok::<_, ()>(Handoff::Next)).unwrap();
    assert_eq!(drained, (4, None));
    assert_eq!(dlq.held_by(1), Default::default());
    for i in 6..9 {
        dlq.append(3, &frame_from(1, i, 10)).unwrap();
    }
    // Another process (`agentwire dlq purge`) empties it: this handle sees it at its next
    // append and counts again from the file.
    let mut other = DeadLetterQueue::open(config.clone()).unwrap();
    assert_eq!(other.purge().unwrap(), 3);
    dlq.append(3, &frame_from(1, 9, 10)).unwrap();
    assert_eq!(dlq.held_by(1).records, 1);
}

#[test]
fn a_sender_over_its_byte_quota_is_refused() {
    let path = fresh_path("quota-bytes");
    let config = DlqConfig {
        bytes_per_sender_max: 2 * (RECORD_HEADER_BYTES + 100) + 50,
        ..DlqConfig::new(&path)
    };
    let mut dlq = DeadLetterQueue::open(config).unwrap();
    let header = agentwire_shm::wire::HEADER_BYTES;
    dlq.append(3, &frame_from(5, 0, 100 - header)).unwrap();
    dlq.append(3, &frame_from(5, 1, 100 - header)).unwrap();
    assert!(matches!(
        dlq.append(3, &frame_from(5, 2, 100 - header)),
        Err(DlqError::SenderQuota(_))
    ));
    dlq.append(3, &frame_from(6, 3, 100 - header)).unwrap();
    assert_eq!(dlq.held_by(5).bytes, 2 * (RECORD_HEADER_BYTES + 100));
}

#[test]
fn the_agents_of_one_uid_share_its_quota_and_it_is_counted_again_on_open() {
    let path = fresh_path("quota-uid");
    let config = DlqConfig {
        records_per_sender_max: 3,
        records_per_uid_max: 4,
        ..DlqConfig::new(&path)
    };
    let mut dlq = DeadLetterQueue::open(config.clone()).unwrap();
    // Agents 1 and 2 of uid 1000: 3 + 1 records fill the uid's 4.
    for i in 0..3 {
        dlq.append_from(3, &frame_from(1, i, 10), Some(1000))
            .unwrap();
    }
    dlq.append_from(3, &frame_from(2, 3, 10), Some(1000))
        .unwrap();
    match dlq.append_from(3, &frame_from(3, 4, 10), Some(1000)) {
        Err(DlqError::SenderQuota(over)) => {
            assert_eq!(
                (over.holder, over.held.records, over.records_max),
                (Holder::Uid(1000), 4, 4)
            );
        }
        other => panic!("expected the uid's quota, got {other:?}"),
    }
    // Another uid, and a frame without an owner, are not affected.
    dlq.append_from(3, &frame_from(4, 5, 10), Some(1001))
        .unwrap();
    dlq.append(3, &frame_from(5, 6, 10)).unwrap();
    assert_eq!(dlq.held_by_uid(1000).records, 4);
    assert_eq!(dlq.len(), 6);
    let err = dlq
        .append_from(3, &frame_from(6, 7, 10), Some(1000))
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid 1000 holds 4 dead letters"), "{err}");
    // Rebuilt from the file on open: the owners were kept with the records.
    drop(dlq);
    let mut dlq = DeadLetterQueue::open(config).unwrap();
    assert_eq!(dlq.held_by_uid(1000).records, 4);
    assert_eq!(dlq.held_by_uid(1001).records, 1);
    let owners: Vec<Option<u32>> = dlq
        .read_all()
        .unwrap()
        .iter()
        .map(|l| l.owner_uid)
        .collect();
    assert_eq!(
        owners,
        [
            Some(1000),
            Some(1000),
            Some(1000),
            Some(1000),
            Some(1001),
            None
        ]
    );
    assert!(matches!(
        dlq.append_from(3, &frame_from(7, 8, 10), Some(1000)),
        Err(DlqError::SenderQuota(_))
    ));
    // A drain frees the uid's quota with its records.
    dlq.drain(|_| Ok::<_, ()>(Handoff::Next)).unwrap();
    assert_eq!(dlq.held_by_uid(1000).records, 0);
}

/// Writes a queue file of format 1 (records of 32-byte headers, no owner), as the daemon
/// wrote before format 2.
fn write_format_1(path: &std::path::Path, frames: &[&[u8]]) {
    let mut out = Vec::new();
    out.extend_from_slice(b"AWDLQ\0\0\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&7u64.to_le_bytes()); // first sequence
    for (i, frame) in frames.iter().enumerate() {
        let mut header = Vec::new();
        header.extend_from_slice(b"AWDQ");
        header.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        header.extend_from_slice(&(7 + i as u64).to_le_bytes());
        header.extend_from_slice(&123u64.to_le_bytes());
        header.extend_from_slice(&3u32.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(frame);
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_format_1_queue_is_read_and_rewritten_as_format_2() {
    let path = fresh_path("format-1");
    let (a, b) = (frame_from(1, 0, 10), frame_from(2, 1, 20));
    write_format_1(&path, &[&a, &b]);
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    let letters = dlq.read_all().unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!((letters[0].sequence, letters[1].sequence), (7, 8));
    assert_eq!(
        (letters[0].frame.as_slice(), letters[1].frame.as_slice()),
        (&a[..], &b[..])
    );
    assert_eq!((letters[0].reason, letters[0].dead_time_ns), (3, 123));
    assert_eq!((letters[0].owner_uid, letters[1].owner_uid), (None, None));
    assert_eq!(dlq.held_by(1).records, 1);
    // Now format 2 on disk, and appends go on after it.
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(raw[8..12].try_into().unwrap()),
        FILE_VERSION
    );
    assert_eq!(
        dlq.append_from(3, &frame_from(3, 2, 5), Some(1000))
            .unwrap(),
        9
    );
    drop(dlq);
    let dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert_eq!(dlq.len(), 3);
    assert_eq!(dlq.recovery().truncated_bytes, 0);
    assert_eq!(dlq.read_all().unwrap()[2].owner_uid, Some(1000));
}
