//! A hostile agent in its own process, for the router's security tests: it connects like
//! any allowed agent, then attacks the daemon through everything it shares with it (the
//! segment, the doorbells). Not an operator tool.
//!
//! ```text
//! agentwire-hostile-agent SOCKET NAME ATTACK
//!   header      scribble over the segment header (capacities 3, rx offset 2^40, sizes 0)
//!   punch-hole  fallocate(PUNCH_HOLE) over the whole segment: every page reads as zeros
//!   bells       clear O_NONBLOCK on its doorbells, write 2^64-2 into them, park its rx ring
//!   rx-head     publish an rx head far past anything the daemon wrote
//!   tx-tail     publish a tx tail three capacities past the head
//!   kind-flip   keep rewriting the kind of its committed frames to Ack (to the agent
//!               named by the line it reads first on stdin, as an id)
//!   scribble    the campaign: random words over every shared byte, its doorbells and its
//!               control socket flooded, frames to random ids; connects again whenever
//!               the daemon removes it; prints `ops N` and `reconnects N` at the end
//! ```
//!
//! It prints `id N` once connected and `attacked` once the attack is in place, then keeps
//! sending frames to itself (so the daemon writes its rx ring and rings its bells; not after
//! `tx-tail` or `punch-hole`, whose next publish would put a true tail back) until stdin
//! closes. It prints `closed` if the daemon marks its segment closed, and exits 0.

use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::segment::{state, TX_LANE_DEFAULT};
use rustix::fd::OwnedFd;
use rustix::mm::{MapFlags, ProtFlags};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Byte offsets in the segment header and ring control block (docs/wire.md).
const TX_CAPACITY_AT: usize = 48;
const RX_OFFSET_AT: usize = 56;
const RX_CAPACITY_AT: usize = 64;
const SEGMENT_BYTES_AT: usize = 16;
const TX_OFFSET_BYTES: usize = 8192;
const CONTROL_STATE_AT: usize = 4096 + 256;
const HEAD_AT: usize = 128;
const PARKED_AT: usize = 256;
const RING_CONTROL_BYTES: usize = 384;
const PAGE_BYTES: usize = 4096;

fn usage() -> ! {
    eprintln!(
        "usage: agentwire-hostile-agent SOCKET NAME \
         header|punch-hole|bells|rx-head|tx-tail|kind-flip|scribble"
    );
    std::process::exit(2)
}

/// This process's descriptors whose link target starts with `prefix` (`/memfd:agentwire`,
/// `pipe:`, `anon_inode:[eventfd]`), opened again by number.
fn own_fds(prefix: &str) -> Vec<OwnedFd> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with(prefix) {
            continue;
        }
        // Not stdin, stdout or stderr (pipes from the test too).
        let Ok(number @ 3..) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the number names an open descriptor of this process; a duplicate is
        // taken at once so the original stays owned by whoever owns it.
        let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(number) };
        if let Ok(fd) = borrowed.try_clone_to_owned() {
            found.push(fd);
        }
    }
    found
}

/// The whole segment, mapped shared by this process a second time.
struct RawSegment {
    base: *mut u8,
    bytes: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is only accessed through atomics, from any thread.
unsafe impl Send for RawSegment {}
// SAFETY: as above: every access through a shared reference is an atomic.
unsafe impl Sync for RawSegment {}

impl Drop for RawSegment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `bytes`, no longer used.
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.bytes) };
    }
}

impl RawSegment {
    fn map() -> Self {
        let fd = own_fds("/memfd:agentwire")
            .into_iter()
            .next()
            .expect("the segment's memfd");
        let bytes = rustix::fs::fstat(&fd).expect("fstat").st_size as usize;
        // SAFETY: a fresh shared mapping of the whole file; nothing else in this process
        // assumes anything about the addresses it gets.
        let base = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap the segment") as *mut u8;
        Self { base, bytes, fd }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        assert!(at + 8 <= self.bytes && at % 8 == 0);
        // SAFETY: inside the mapping (checked), 8-aligned (the mapping is page-aligned).
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= self.bytes && at % 4 == 0);
        // SAFETY: as in `word64`.
        unsafe { &*(self.base.add(at) as *const AtomicU32) }
    }
}

/// The attack in place; what the sending loop does besides sending.
enum Running {
    Plain,
    KindFlip,
}

fn attack(name: &str, seg: &RawSegment) -> Running {
    let rx_offset = seg.word64(RX_OFFSET_AT).load(Ordering::Relaxed) as usize;
    let tx_capacity = seg.word64(TX_CAPACITY_AT).load(Ordering::Relaxed) as usize;
    let lane_stride = (RING_CONTROL_BYTES + tx_capacity).div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let tx_default = TX_OFFSET_BYTES + TX_LANE_DEFAULT * lane_stride;
    match name {
        "header" => {
            seg.word64(RX_CAPACITY_AT).store(3, Ordering::Relaxed);
            seg.word64(TX_CAPACITY_AT).store(3, Ordering::Relaxed);
            seg.word64(RX_OFFSET_AT).store(1 << 40, Ordering::Relaxed);
            seg.word64(SEGMENT_BYTES_AT).store(0, Ordering::Relaxed);
        }
        "punch-hole" => {
            use rustix::fs::FallocateFlags;
            rustix::fs::fallocate(
                &seg.fd,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                0,
                seg.bytes as u64,
            )
            .expect("punch a hole in the sealed memfd");
        }
        "bells" => {
            let mut bells = own_fds("pipe:");
            bells.extend(own_fds("anon_inode:[eventfd]"));
            for bell in &bells {
                // Shared open file descriptions: these would reach the daemon's own flags.
                let _ = rustix::fs::fcntl_setfl(bell, rustix::fs::OFlags::empty());
                let _ = rustix::io::write(bell, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes());
            }
            // Asks the daemon to ring the rx bell on every publish.
            seg.word32(rx_offset + PARKED_AT).store(1, Ordering::SeqCst);
        }
        "rx-head" => {
            seg.word64(rx_offset + HEAD_AT)
                .store(1 << 40, Ordering::Release);
        }
        "tx-tail" => {
            let head = seg.word64(tx_default + HEAD_AT).load(Ordering::Acquire);
            seg.word64(tx_default)
                .store(head + 3 * tx_capacity as u64, Ordering::Release);
        }
        "kind-flip" => return Running::KindFlip,
        _ => usage(),
    }
    Running::Plain
}

/// Rewrites the kind byte of every record in the default tx lane to Ack, over and over.
fn flip_kinds(seg: &RawSegment, stop: &AtomicBool) {
    let tx_capacity = seg.word64(TX_CAPACITY_AT).load(Ordering::Relaxed) as usize;
    let lane_stride = (RING_CONTROL_BYTES + tx_capacity).div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let data = TX_OFFSET_BYTES + TX_LANE_DEFAULT * lane_stride + RING_CONTROL_BYTES;
    let ack = agentwire_shm::wire::FrameKind::Ack as u8;
    while !stop.load(Ordering::Relaxed) {
        // Records start at 8-byte boundaries; a frame's kind byte is at offset 6 of its
        // header, which follows the 8-byte record header.
        for at in (data..data + tx_capacity).step_by(8) {
            let record_type = seg.word32(at + 4).load(Ordering::Relaxed);
            if record_type == 1 {
                let word = seg.word64(at + 8);
                let bytes = word.load(Ordering::Relaxed).to_le_bytes();
                let mut flipped = bytes;
                flipped[6] = ack;
                word.store(u64::from_le_bytes(flipped), Ordering::Relaxed);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, name, attack_name] = args.as_slice() else {
        usage()
    };
    if attack_name == "scribble" {
        let stop = stop_when_stdin_closes();
        println!("attacked");
        scribble(socket, name, &stop);
        return;
    }
    let mut agent = Agent::builder(name)
        .socket(socket)
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap_or_else(|e| {
            eprintln!("connect: {e}");
            std::process::exit(1)
        });
    println!("id {}", agent.id());
    let mut target = agent.id();
    if attack_name == "kind-flip" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).expect("stdin");
        target = line.trim().parse().unwrap_or_else(|_| usage());
    }
    // Some honest traffic first, so the daemon's positions in both rings are past zero (a
    // zeroed ring then reads as a tail behind the head).
    for _ in 0..10 {
        agent.send(agent.id(), b"warm-up").expect("warm-up send");
        let got = agent
            .recv(Some(std::time::Duration::from_secs(10)))
            .expect("warm-up receive");
        assert!(got.is_some(), "warm-up frame never came back");
    }
    let seg = RawSegment::map();
    let running = attack(attack_name, &seg);
    println!("attacked");

    let stop = stop_when_stdin_closes();
    let seg = Arc::new(seg);
    let flipper = matches!(running, Running::KindFlip).then(|| {
        let (stop, seg) = (stop.clone(), seg.clone());
        std::thread::spawn(move || flip_kinds(&seg, &stop))
    });
    let payload = [0x5a_u8; 2048];
    // Reading its rx ring would publish a true head over the bogus one; sending would publish
    // a true tail over a bogus or zeroed one.
    let reads_rx = attack_name != "rx-head";
    let sends = !matches!(attack_name.as_str(), "tx-tail" | "punch-hole");
    let mut closed = false;
    while !stop.load(Ordering::Relaxed) {
        // Refusals (a full ring, a closed segment) are expected under attack.
        if sends {
            let _: Result<(), ClientError> = agent.send(target, &payload);
        }
        if reads_rx {
            let _ = agent.try_recv();
        }
        if !closed && seg.word32(CONTROL_STATE_AT).load(Ordering::Acquire) == state::CLOSED {
            closed = true;
            println!("closed");
        }
        std::thread::yield_now();
    }
    if let Some(flipper) = flipper {
        let _ = flipper.join();
    }
}

/// A flag set once stdin closes (the test's way of saying stop), from a thread that reads
/// and discards it.
fn stop_when_stdin_closes() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = stop.clone();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .is_ok_and(|n| n > 0)
        {}
        watcher.store(true, Ordering::Relaxed);
    });
    stop
}

/// A small xorshift generator: the campaign needs cheap varied bytes, not good randomness.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The campaign: until stdin closes, scribbles random words over every shared byte it can
/// reach (header, control block, each ring's control words and records), floods its
/// doorbells and its control socket (valid requests and garbage), and sends frames; when
/// the daemon removes it, connects again. Prints `ops N` (hostile operations tried) and
/// `reconnects N` at the end.
fn scribble(socket: &str, name: &str, stop: &AtomicBool) {
    let mut rng = Xorshift(u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut ops, mut reconnects) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut agent) = Agent::builder(name)
            .socket(socket)
            .idle(IdleStrategy::Spin)
            .connect()
        else {
            // Refused (a limit, the daemon busy removing us): try again shortly.
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        };
        let seg = RawSegment::map();
        let bells = own_fds("pipe:");
        let sockets = own_fds("socket:");
        let rx_offset = seg.word64(RX_OFFSET_AT).load(Ordering::Relaxed) as usize;
        // Where the interesting words are: header, control block, ring control blocks.
        let hot: [usize; 4] = [0, 4096, TX_OFFSET_BYTES, rx_offset.min(seg.bytes - 8)];
        while !stop.load(Ordering::Relaxed) {
            if seg.word32(CONTROL_STATE_AT).load(Ordering::Acquire) == state::CLOSED {
                break; // removed: connect again
            }
            for _ in 0..64 {
                let r = rng.next();
                let at = if r & 3 == 0 {
                    (hot[(r >> 2) as usize % hot.len()] + ((r >> 8) as usize % 512)) & !7
                } else {
                    ((r >> 8) as usize % seg.bytes) & !7
                };
                seg.word64(at.min(seg.bytes - 8))
                    .store(rng.next(), Ordering::Relaxed);
                ops += 1;
            }
            let r = rng.next();
            match r % 8 {
                0 => {
                    for bell in &bells {
                        let _ = rustix::io::write(bell, &r.to_ne_bytes());
                    }
                }
                1 => {
                    let _ = agent.subscribe(&format!("t{}", r % 4096));
                }
                2 => {
                    let _ = agent.topic_id(&format!("x{}", r % 100_000));
                }
                3 => {
                    for s in &sockets {
                        let _ = rustix::io::write(s, &r.to_le_bytes());
                    }
                }
                _ => {
                    let to = (r >> 8) as u32 % 64;
                    let _: Result<(), ClientError> = agent.send(to, &r.to_le_bytes());
                }
            }
            ops += 1;
        }
        drop(agent);
        reconnects += 1;
    }
    println!("ops {ops}");
    println!("reconnects {reconnects}");
}
