//! Real processes over one segment: a writer in another process, SIGKILL mid-stream.

use agentwire_shm::ring::{Consumer, Producer};
use agentwire_shm::segment::{HugePages, Segment, SegmentConfig};
use rustix::fd::AsRawFd;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_agentwire-shm-peer");

/// Spawns the peer writing checked frames into the segment's tx ring.
fn spawn_writer(seg: &Segment, count: u64) -> Child {
    let fd = seg.try_clone_fd().unwrap();
    // Let the child inherit this descriptor.
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).unwrap();
    let mut child = Command::new(PEER)
        .args([
            "ring-writer",
            &fd.as_raw_fd().to_string(),
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(fd);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Checks one frame written by the peer; returns its sequence number.
fn check_frame(f: &[u8]) -> u64 {
    agentwire_shm::pattern::read_checked(f).unwrap_or_else(|e| panic!("{e}"))
}

fn segment() -> Segment {
    Segment::create(
        &SegmentConfig::new(1)
            .with_capacity(64 * 1024, 4096)
            .huge_pages(HugePages::Never),
    )
    .unwrap()
}

#[test]
fn two_processes_move_frames_in_order_over_one_segment() {
    let seg = segment();
    let frames = 200_000u64;
    let mut child = spawn_writer(&seg, frames);
    let mut rx = Consumer::new(seg.tx_memory(), None);
    let mut expected = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while expected < frames {
        rx.read(64, |f| {
            assert_eq!(check_frame(f), expected, "lost, duplicated or reordered");
            expected += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(Instant::now() < deadline, "watchdog: stuck at {expected}");
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigkill_of_writer_mid_stream_never_wedges_or_tears() {
    let seg = segment();
    let mut child = spawn_writer(&seg, 0);
    let mut rx = Consumer::new(seg.tx_memory(), None);
    let mut expected = 0u64;
    // Read a while, then kill the writer at an arbitrary point, likely mid-frame.
    let deadline = Instant::now() + Duration::from_secs(60);
    while expected < 50_000 {
        rx.read(64, |f| {
            assert_eq!(check_frame(f), expected);
            expected += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(Instant::now() < deadline, "watchdog");
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    child.wait().unwrap();
    // Everything committed before the kill is intact; nothing torn appears.
    while rx
        .read(64, |f| {
            assert_eq!(check_frame(f), expected);
            expected += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        > 0
    {}
    // The ring is not wedged: a replacement producer continues from the published tail.
    let mut tx = Producer::new(seg.tx_memory(), None);
    let resume_from = expected;
    for seq in resume_from..resume_from + 1000 {
        let len = 16 + (seq.wrapping_mul(7919) % 900) as usize;
        let mut claim = tx.claim(len).unwrap();
        let buf = claim.bytes_mut();
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        for (i, b) in buf[16..].iter_mut().enumerate() {
            *b = (seq as usize).wrapping_add(i) as u8;
        }
        claim.commit();
        rx.read(64, |f| {
            assert_eq!(check_frame(f), expected);
            expected += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    }
}
