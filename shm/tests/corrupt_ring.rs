//! Hand-crafted byte states: a hostile or crashed producer never makes the consumer read out
//! of bounds, deliver a torn frame, or spin forever.

use agentwire_shm::ring::{ring_pair, RingControl, RingError, RING_CONTROL_BYTES};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

fn segment() -> Segment {
    Segment::create(
        &SegmentConfig::new(1)
            .with_capacity(4096, 4096)
            .huge_pages(HugePages::Never),
    )
    .unwrap()
}

/// Raw access to the tx ring bytes of a segment, as a hostile agent would have.
fn raw_tx(seg: &Segment) -> (*mut u8, &RingControl) {
    let map = unsafe_map(seg);
    (map, unsafe_control(map))
}

fn unsafe_map(seg: &Segment) -> *mut u8 {
    // Tx lane 0 starts 2 pages in (see segment layout docs).
    let fd = seg.try_clone_fd().unwrap();
    let file = std::fs::File::from(fd);
    // SAFETY: test-only shared mapping of the sealed segment; leaked for the test's life.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let ptr = map.as_ptr() as *mut u8;
    std::mem::forget(map);
    // SAFETY: tx ring offset lies inside the mapping.
    unsafe { ptr.add(8192) }
}

fn unsafe_control<'a>(ring: *mut u8) -> &'a RingControl {
    // SAFETY: the ring control block is at the start of the ring region, 128-aligned.
    unsafe { &*(ring as *const RingControl) }
}

#[test]
fn half_written_record_is_invisible_until_published() {
    let seg = segment();
    let mut rx = agentwire_shm::ring::Consumer::new(seg.tx_lane_memory(0), None);
    let (ring, control) = raw_tx(&seg);
    // Write a record header and half a body, but do not move the tail: a writer killed
    // mid-frame.
    // SAFETY: inside the 4096-byte data area.
    unsafe {
        let data = ring.add(RING_CONTROL_BYTES);
        std::ptr::copy_nonoverlapping(&(8u32 + 100).to_le_bytes() as *const u8, data, 4);
        std::ptr::copy_nonoverlapping(&1u32.to_le_bytes() as *const u8, data.add(4), 4);
        std::ptr::write_bytes(data.add(8), 0xAB, 50);
    }
    assert_eq!(rx.read(8, |_| ControlFlow::Continue(())).unwrap(), 0);
    assert_eq!(control.tail_position.0.load(Ordering::Relaxed), 0);
    // A new producer resumes from the published tail and overwrites the partial bytes.
    let mut tx = agentwire_shm::ring::Producer::new(seg.tx_lane_memory(0), None);
    tx.try_push(b"fresh").unwrap();
    let mut got = Vec::new();
    rx.read(8, |f| {
        got.push(f.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got, vec![b"fresh".to_vec()]);
}

#[test]
fn record_length_past_tail_is_reported_corrupt() {
    let seg = segment();
    let mut rx = agentwire_shm::ring::Consumer::new(seg.tx_lane_memory(0), None);
    let (ring, control) = raw_tx(&seg);
    // SAFETY: inside the data area.
    unsafe {
        let data = ring.add(RING_CONTROL_BYTES);
        std::ptr::copy_nonoverlapping(&5000u32.to_le_bytes() as *const u8, data, 4);
        std::ptr::copy_nonoverlapping(&1u32.to_le_bytes() as *const u8, data.add(4), 4);
    }
    control.tail_position.0.store(16, Ordering::Release);
    let err = rx
        .read(8, |_| panic!("no frame may be delivered"))
        .unwrap_err();
    assert!(
        matches!(err, RingError::Corrupt { position: 0, .. }),
        "{err}"
    );
    // Poisoned: it keeps reporting rather than reading garbage.
    assert!(rx.read(8, |_| ControlFlow::Continue(())).is_err());
}

#[test]
fn tail_beyond_capacity_is_reported_corrupt() {
    let seg = segment();
    let mut rx = agentwire_shm::ring::Consumer::new(seg.tx_lane_memory(0), None);
    let (_ring, control) = raw_tx(&seg);
    control.tail_position.0.store(1 << 40, Ordering::Release);
    assert!(rx.read(8, |_| ControlFlow::Continue(())).is_err());
}

#[test]
fn unknown_record_type_and_bad_padding_are_reported_corrupt() {
    for (len, kind) in [(16u32, 7u32), (24, 2)] {
        let seg = segment();
        let mut rx = agentwire_shm::ring::Consumer::new(seg.tx_lane_memory(0), None);
        let (ring, control) = raw_tx(&seg);
        // SAFETY: inside the data area.
        unsafe {
            let data = ring.add(RING_CONTROL_BYTES);
            std::ptr::copy_nonoverlapping(&len.to_le_bytes() as *const u8, data, 4);
            std::ptr::copy_nonoverlapping(&kind.to_le_bytes() as *const u8, data.add(4), 4);
        }
        control
            .tail_position
            .0
            .store(u64::from(len), Ordering::Release);
        assert!(
            rx.read(8, |_| ControlFlow::Continue(())).is_err(),
            "len {len} kind {kind}"
        );
    }
}

#[test]
fn padding_record_at_wrap_is_skipped() {
    let (mut tx, mut rx) = ring_pair(1024, false).unwrap();
    // 6 records of 160 bytes leave 64 bytes before the end: the next 208-byte record wraps.
    for _ in 0..6 {
        tx.try_push(&[1u8; 150]).unwrap();
    }
    assert_eq!(rx.read(16, |_| ControlFlow::Continue(())).unwrap(), 6);
    tx.try_push(&[2u8; 200]).unwrap();
    let mut got = Vec::new();
    rx.read(16, |f| {
        got.push(f.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got, vec![vec![2u8; 200]]);
}
