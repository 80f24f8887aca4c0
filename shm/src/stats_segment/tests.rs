use super::*;

fn pair(layout: StatsLayout) -> (StatsSegment, StatsReader) {
    let seg = StatsSegment::create_memfd("test", layout).unwrap();
    let reader = StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap();
    (seg, reader)
}

fn slot_word(seg: &StatsSegment, slot: usize, word: usize) -> &AtomicU64 {
    let offset = seg.layout.slot_offset(slot) + 8 * word;
    assert!(offset + 8 <= seg.len_bytes());
    // SAFETY: inside the mapping (asserted), 8-aligned; test-only hand-crafted states.
    unsafe { &*(seg.mapping.map.as_ptr().add(offset) as *const AtomicU64) }
}

#[test]
fn layout_offsets_match_the_documented_contract() {
    let l = StatsLayout::new(3, 32);
    assert_eq!(l.slot_bytes(), 384);
    assert_eq!(l.slot_offset(0), 128);
    assert_eq!(l.slot_offset(2), 128 + 2 * 384);
    for n in 1..=STATS_COUNTERS_PER_SLOT_MAX {
        let l = StatsLayout::new(1, n);
        assert_eq!(l.slot_bytes() % STATS_SLOT_ALIGN_BYTES, 0);
        assert!(l.slot_bytes() >= 8 * (n as usize + 1));
    }
}

#[test]
fn a_writer_left_mid_update_makes_the_reader_busy_not_hung() {
    let (seg, reader) = pair(StatsLayout::new(2, 4));
    let reader = reader.with_retries_max(100);
    let mut w = seg.writer(0).unwrap();
    w.add(0, 1);
    // What a writer killed between begin and end leaves: an odd sequence.
    slot_word(&seg, 0, 0).store(3, Ordering::Relaxed);
    let mut out = [0; 4];
    assert_eq!(
        reader.snapshot(0, &mut out),
        Err(SnapshotError::Busy {
            slot: 0,
            retries: 100,
            sequence: 3
        })
    );
    // The other slot is unaffected; snapshot_all reports one busy slot, zeroed.
    let (mut all, mut seqs) = ([7; 8], [None; 2]);
    assert_eq!(reader.snapshot_all(&mut all, &mut seqs), Ok(1));
    assert_eq!(seqs, [None, Some(0)]);
    assert_eq!(all, [0; 8]);
}

#[test]
fn a_new_writer_recovers_a_slot_left_odd() {
    let (seg, reader) = pair(StatsLayout::new(1, 2));
    let mut w = seg.writer(0).unwrap();
    w.update(|c| c.copy_from_slice(&[5, 6]));
    drop(w);
    slot_word(&seg, 0, 0).store(3, Ordering::Relaxed);
    let mut w = seg.writer(0).unwrap();
    assert_eq!(w.sequence(), 4);
    assert_eq!(w.counters(), &[5, 6]);
    let mut out = [0; 2];
    assert_eq!(reader.snapshot(0, &mut out), Ok(4));
    w.add(1, 1);
    assert_eq!(reader.snapshot(0, &mut out), Ok(6));
    assert_eq!(out, [5, 7]);
}

#[test]
fn a_panicking_update_leaves_the_slot_readable() {
    let (seg, reader) = pair(StatsLayout::new(1, 2));
    let mut w = seg.writer(0).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.update(|c| {
            c[0] = 1;
            panic!("mid-update");
        })
    }));
    assert!(r.is_err());
    let mut out = [9; 2];
    assert_eq!(reader.snapshot(0, &mut out), Ok(0));
    assert_eq!(out, [0, 0]);
}

#[test]
fn snapshot_rejects_bad_slot_and_buffer() {
    let (_seg, reader) = pair(StatsLayout::new(2, 4));
    assert_eq!(
        reader.snapshot(2, &mut [0; 4]),
        Err(SnapshotError::SlotOutOfRange {
            slot: 2,
            slot_count: 2
        })
    );
    assert!(matches!(
        reader.snapshot_all(&mut [0; 8], &mut [None; 1]),
        Err(SnapshotError::BufferLength {
            expected: 2,
            found: 1
        })
    ));
}

#[test]
fn open_names_each_bad_header_field() {
    let corrupt = |f: &dyn Fn(&StatsHeader)| {
        let (seg, _) = pair(StatsLayout::new(2, 8));
        f(seg.header());
        StatsReader::open_fd(seg.try_clone_fd().unwrap()).unwrap_err()
    };
    let e = corrupt(&|h| h.magic.store(0, Ordering::Relaxed));
    assert!(matches!(e, StatsSegmentError::BadMagic { found: 0 }), "{e}");
    let e = corrupt(&|h| h.layout_version.store(7, Ordering::Relaxed));
    assert!(
        matches!(e, StatsSegmentError::VersionMismatch { found: 7 }),
        "{e}"
    );
    let e = corrupt(&|h| h.slot_count.store(0, Ordering::Relaxed));
    assert!(e.to_string().contains("slot_count is 0"), "{e}");
    let e = corrupt(&|h| h.counters_per_slot.store(u32::MAX, Ordering::Relaxed));
    assert!(e.to_string().contains("counters_per_slot"), "{e}");
    let e = corrupt(&|h| h.slot_count.store(100, Ordering::Relaxed));
    assert!(e.to_string().contains("segment_bytes"), "{e}");
    let e = corrupt(&|h| h.slot_bytes.store(64, Ordering::Relaxed));
    assert!(
        e.to_string().contains("slot_bytes is 64, expected 128"),
        "{e}"
    );
    let e = corrupt(&|h| h.slots_offset.store(0, Ordering::Relaxed));
    assert!(e.to_string().contains("slots_offset"), "{e}");
    let e = corrupt(&|h| h.header_bytes.store(80, Ordering::Relaxed));
    assert!(e.to_string().contains("header_bytes"), "{e}");
}
