//! Test peer for agentwire-shm's cross-process ring tests: a separate process that writes
//! checked frames to a segment's tx ring. Not an operator tool (agent peers for router
//! tests are `agentwire-router-peer`).
//!
//! ```text
//! agentwire-shm-peer ring-writer FD COUNT             write COUNT checked frames (0: until killed)
//! ```

use agentwire_shm::pattern::{checked_len, fill_checked};
use agentwire_shm::ring::{ClaimError, Producer};
use agentwire_shm::segment::Segment;
use rustix::fd::{FromRawFd, OwnedFd};

fn usage() -> ! {
    eprintln!("usage: agentwire-shm-peer ring-writer FD COUNT");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let number = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|_| usage()) };
    match arg(0).as_str() {
        "ring-writer" => {
            let fd = i32::try_from(number(1)).unwrap_or_else(|_| usage());
            let count = number(2);
            // SAFETY: the parent passed this descriptor to us open and without CLOEXEC; we
            // take sole ownership of it here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let segment = Segment::open(fd).expect("open segment");
            let mut tx = Producer::new(segment.tx_memory(), None);
            let mut seq = 0u64;
            println!("ready");
            while count == 0 || seq < count {
                match tx.claim(checked_len(seq)) {
                    Ok(mut claim) => {
                        fill_checked(seq, claim.bytes_mut());
                        claim.commit();
                        seq += 1;
                    }
                    Err(ClaimError::Full { .. }) => core::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        _ => usage(),
    }
}
