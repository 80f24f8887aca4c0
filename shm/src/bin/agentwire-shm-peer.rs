//! Test peer for agentwire-shm's cross-process tests: a separate process that writes to a
//! segment's ring, or connects to a router as an agent. Not an operator tool.
//!
//! ```text
//! agentwire-shm-peer ring-writer FD COUNT      write COUNT checked frames (0: until killed)
//! agentwire-shm-peer agent-recv SOCKET NAME COUNT
//! agentwire-shm-peer agent-send SOCKET NAME DEST_ID COUNT   (COUNT 0: until killed)
//! agentwire-shm-peer agent-recv-prefix SOCKET NAME           receive until 2 s of silence
//! ```

use agentwire_shm::client::Agent;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::ring::{ClaimError, Producer};
use agentwire_shm::segment::Segment;
use rustix::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// Length of the checked frame carrying sequence number `seq`.
fn frame_len(seq: u64) -> usize {
    16 + (seq.wrapping_mul(7919) % 900) as usize
}

/// Fills a checked frame: seq, length, then a byte pattern derived from both.
fn fill(seq: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&seq.to_le_bytes());
    let len_bytes = out.len() as u64;
    out[8..16].copy_from_slice(&len_bytes.to_le_bytes());
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_add(i) as u8;
    }
}

fn usage() -> ! {
    eprintln!("usage: agentwire-shm-peer ring-writer FD COUNT | agent-recv SOCKET NAME COUNT | agent-send SOCKET NAME DEST COUNT");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    match arg(0).as_str() {
        "ring-writer" => {
            let fd: i32 = arg(1).parse().unwrap_or_else(|_| usage());
            let count: u64 = arg(2).parse().unwrap_or_else(|_| usage());
            // SAFETY: the parent passed this descriptor to us open and without CLOEXEC; we
            // take sole ownership of it here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let segment = Segment::open(fd).expect("open segment");
            let mut tx = Producer::new(segment.tx_memory(), None);
            let mut seq = 0u64;
            println!("ready");
            while count == 0 || seq < count {
                let len = frame_len(seq);
                match tx.claim(len) {
                    Ok(mut claim) => {
                        fill(seq, claim.bytes_mut());
                        claim.commit();
                        seq += 1;
                    }
                    Err(ClaimError::Full { .. }) => core::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        "agent-recv" => {
            let mut agent = Agent::builder(&arg(2))
                .socket(arg(1))
                .idle(IdleStrategy::Spin)
                .connect()
                .expect("connect");
            let count: u64 = arg(3).parse().unwrap_or_else(|_| usage());
            println!("id {}", agent.id());
            let mut expected = 0u64;
            while expected < count {
                let msg = agent
                    .recv(Some(Duration::from_secs(30)))
                    .expect("recv")
                    .expect("timed out");
                let seq = u64::from_le_bytes(msg.payload()[..8].try_into().expect("8 bytes"));
                assert_eq!(seq, expected, "frames lost, duplicated or reordered");
                let mut check = vec![0u8; msg.payload().len()];
                fill(seq, &mut check);
                assert_eq!(
                    msg.payload(),
                    &check[..],
                    "torn or corrupted payload at {seq}"
                );
                expected += 1;
            }
            println!("ok {expected}");
        }
        "agent-send" => {
            let mut agent = Agent::builder(&arg(2))
                .socket(arg(1))
                .idle(IdleStrategy::Spin)
                .connect()
                .expect("connect");
            let dest: u32 = arg(3).parse().unwrap_or_else(|_| usage());
            let count: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            let mut buf = vec![0u8; 1024];
            println!("id {}", agent.id());
            let mut seq = 0u64;
            while count == 0 || seq < count {
                let len = frame_len(seq).min(buf.len());
                fill(seq, &mut buf[..len]);
                agent.send(dest, &buf[..len]).expect("send");
                seq += 1;
            }
            println!("sent {count}");
        }
        "agent-recv-prefix" => {
            let mut agent = Agent::builder(&arg(2))
                .socket(arg(1))
                .idle(IdleStrategy::Spin)
                .connect()
                .expect("connect");
            println!("id {}", agent.id());
            let mut expected = 0u64;
            while let Some(msg) = agent.recv(Some(Duration::from_secs(2))).expect("recv") {
                let seq = u64::from_le_bytes(msg.payload()[..8].try_into().expect("8 bytes"));
                assert_eq!(seq, expected, "frames lost, duplicated or reordered");
                let mut check = vec![0u8; msg.payload().len()];
                fill(seq, &mut check);
                assert_eq!(
                    msg.payload(),
                    &check[..],
                    "torn or corrupted payload at {seq}"
                );
                expected += 1;
            }
            println!("ok {expected}");
        }
        _ => usage(),
    }
}
