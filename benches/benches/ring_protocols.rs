//! How should a consumer learn of a new record when messages come one at a time? Issue 16's
//! hypothesis, measured before the ring is changed: agentwire's consumer learns of new frames
//! from the producer's shared tail index, so with one message per publish the tail's cache
//! line crosses between the cores for every message (the producer stores it, the consumer
//! loads it, the producer's next store must take it back), on top of the record's own lines;
//! Aeron's reader instead polls a length word inside the record, written last with a release
//! store, so only the record's lines move.
//!
//! Three single-producer/single-consumer rings of 64-byte messages (72-byte records, a
//! 64 KiB data area, a padding record at wrap), one message per publish, producer on cpu 0
//! and consumer on cpu 1, both busy-polling, every message's sequence number checked:
//! - `tail index`: the published tail is the only signal (agentwire's protocol, minimal);
//! - `length word`: the record's length word is the signal; the producer zeroes the next
//!   record's length word before it publishes this one, so a consumer never reads a stale
//!   length from an earlier lap (the tail is not shared at all);
//! - `agentwire ring`: the real `agentwire_shm::ring` (tail protocol, with its cached
//!   positions and prefetch), `try_push` then `read(1)`, as the baseline for both.
//!
//! Run: `cargo bench -p agentwire-benches --bench ring_protocols` (`cargo test --benches`
//! runs a short smoke version). Threads, not processes: cache lines move the same way.

use agentwire_benches::pin_to_cpu;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

const CAPACITY_BYTES: usize = 64 * 1024;
const PAYLOAD_BYTES: usize = 64;
const RECORD_BYTES: usize = 8 + PAYLOAD_BYTES;
const RECORD_DATA: u32 = 1;
const RECORD_PADDING: u32 = 2;
/// The positions' block: tail at 0, head at 128, data from 256.
const DATA_OFFSET_BYTES: usize = 256;

/// One ring's memory: the tail and head words on lines of their own, then the data.
struct RingMem {
    map: memmap2::MmapMut,
}

// SAFETY: the memory is shared by the two threads only through the atomics below and the
// protocols' publish/consume ordering.
unsafe impl Sync for RingMem {}

impl RingMem {
    fn new() -> Self {
        let map = memmap2::MmapMut::map_anon(DATA_OFFSET_BYTES + CAPACITY_BYTES).expect("map");
        Self { map }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: offsets 0 and 128 are 8-aligned inside the page-aligned map, which lives as
        // long as `self`; the word is only accessed atomically.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    fn tail(&self) -> &AtomicU64 {
        self.word64(0)
    }

    fn head(&self) -> &AtomicU64 {
        self.word64(128)
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts inside the map.
        unsafe { self.map.as_ptr().add(DATA_OFFSET_BYTES) as *mut u8 }
    }

    /// The header word at `index` (0: length, 1: record type).
    fn header_word(&self, index: usize, word: usize) -> &AtomicU32 {
        debug_assert!(index % 8 == 0 && index + 8 <= CAPACITY_BYTES);
        // SAFETY: `index` is 8-aligned with 8 bytes to the end of the data area; the word is
        // only accessed atomically by both sides.
        unsafe { &*(self.data().add(index + 4 * word) as *const AtomicU32) }
    }

    fn write_payload(&self, index: usize, seq: u64) {
        let mut payload = [0x5au8; PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        // SAFETY: the record lies inside the data area and the producer owns it until it
        // publishes it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.data().add(index + 8),
                PAYLOAD_BYTES,
            )
        };
    }

    fn read_seq(&self, index: usize) -> u64 {
        let mut seq = [0u8; 8];
        // SAFETY: a published record inside the data area; the producer does not reuse it
        // before the consumer's head passes it.
        unsafe { core::ptr::copy_nonoverlapping(self.data().add(index + 8), seq.as_mut_ptr(), 8) };
        u64::from_le_bytes(seq)
    }
}

/// The producer's view: where it writes, and the last head it saw.
#[derive(Default)]
struct Cursor {
    tail: u64,
    cached_head: u64,
}

impl Cursor {
    /// Where the next record goes: its index, and the bytes to the end of the data area when
    /// it must wrap behind a padding record there. Waits for room for both plus `extra`.
    fn next_slot(&mut self, mem: &RingMem, extra: usize) -> (usize, Option<usize>) {
        let index = (self.tail as usize) % CAPACITY_BYTES;
        let to_end = CAPACITY_BYTES - index;
        let wraps = RECORD_BYTES > to_end;
        self.wait_room(mem, RECORD_BYTES + extra + if wraps { to_end } else { 0 });
        (index, wraps.then_some(to_end))
    }

    /// Waits for `need` free bytes (the consumer's head reloaded only when short).
    fn wait_room(&mut self, mem: &RingMem, need: usize) {
        while self.tail + need as u64 - self.cached_head > CAPACITY_BYTES as u64 {
            // SYNC POINT: head (pairs with the consumer's release after it read a record).
            self.cached_head = mem.head().load(Ordering::Acquire);
            core::hint::spin_loop();
        }
    }
}

/// Consumes the published record of `length` at `head` (a padding record is skipped):
/// checks its sequence number against `expected` and releases the head.
fn consume(mem: &RingMem, head: &mut u64, length: u64, expected: &mut u64, protocol: &str) {
    let index = (*head as usize) % CAPACITY_BYTES;
    if mem.header_word(index, 1).load(Ordering::Relaxed) == RECORD_PADDING {
        *head += length;
        return;
    }
    assert_eq!(mem.read_seq(index), *expected, "{protocol}: order");
    *expected += 1;
    *head += length;
    // SYNC POINT: head (pairs with the producer's acquire in `wait_room`).
    mem.head().store(*head, Ordering::Release);
}

/// Producer and consumer of the tail-index protocol.
fn tail_protocol(mem: &RingMem, messages: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(0);
            let mut c = Cursor::default();
            for seq in 0..messages {
                let (mut index, wrap) = c.next_slot(mem, 0);
                if let Some(to_end) = wrap {
                    mem.header_word(index, 0)
                        .store(to_end as u32, Ordering::Relaxed);
                    mem.header_word(index, 1)
                        .store(RECORD_PADDING, Ordering::Relaxed);
                    c.tail += to_end as u64;
                    index = 0;
                }
                mem.write_payload(index, seq);
                mem.header_word(index, 0)
                    .store(RECORD_BYTES as u32, Ordering::Relaxed);
                mem.header_word(index, 1)
                    .store(RECORD_DATA, Ordering::Relaxed);
                c.tail += RECORD_BYTES as u64;
                // SYNC POINT: tail (pairs with the consumer's acquire; every record below it
                // is written).
                mem.tail().store(c.tail, Ordering::Release);
            }
        });
        s.spawn(|| {
            pin_to_cpu(1);
            let (mut head, mut cached_tail, mut expected) = (0u64, 0u64, 0u64);
            while expected < messages {
                if head == cached_tail {
                    // SYNC POINT: tail (pairs with the producer's release).
                    cached_tail = mem.tail().load(Ordering::Acquire);
                    if head == cached_tail {
                        core::hint::spin_loop();
                        continue;
                    }
                }
                let index = (head as usize) % CAPACITY_BYTES;
                let length = mem.header_word(index, 0).load(Ordering::Relaxed) as u64;
                consume(mem, &mut head, length, &mut expected, "tail protocol");
            }
        });
    });
    start.elapsed()
}

/// Producer and consumer of the length-word protocol.
fn length_word_protocol(mem: &RingMem, messages: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(0);
            let mut c = Cursor::default();
            // Publishes a record of `length` at `index`: the next record's length word is
            // zeroed first, then this one's is stored last, with release.
            let publish = |index: usize, length: usize, kind: u32| {
                let next = (index + length) % CAPACITY_BYTES;
                mem.header_word(next, 0).store(0, Ordering::Relaxed);
                mem.header_word(index, 1).store(kind, Ordering::Relaxed);
                // SYNC POINT: length word (pairs with the consumer's acquire of it).
                mem.header_word(index, 0)
                    .store(length as u32, Ordering::Release);
            };
            for seq in 0..messages {
                // Room for the record and the next record's length word.
                let (mut index, wrap) = c.next_slot(mem, 8);
                if let Some(to_end) = wrap {
                    publish(index, to_end, RECORD_PADDING);
                    c.tail += to_end as u64;
                    index = 0;
                }
                mem.write_payload(index, seq);
                publish(index, RECORD_BYTES, RECORD_DATA);
                c.tail += RECORD_BYTES as u64;
            }
        });
        s.spawn(|| {
            pin_to_cpu(1);
            let (mut head, mut expected) = (0u64, 0u64);
            while expected < messages {
                let index = (head as usize) % CAPACITY_BYTES;
                // SYNC POINT: length word (pairs with the producer's release in `publish`).
                let length = mem.header_word(index, 0).load(Ordering::Acquire) as u64;
                if length == 0 {
                    core::hint::spin_loop();
                    continue;
                }
                consume(
                    mem,
                    &mut head,
                    length,
                    &mut expected,
                    "length-word protocol",
                );
            }
        });
    });
    start.elapsed()
}

/// The real agentwire ring, one message per publish.
fn agentwire_ring(messages: u64) -> Duration {
    let (mut tx, mut rx) =
        agentwire_shm::ring::ring_pair(CAPACITY_BYTES, false).expect("ring pair");
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            pin_to_cpu(0);
            let mut payload = [0x5au8; PAYLOAD_BYTES];
            for seq in 0..messages {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                while tx.try_push(&payload).is_err() {
                    core::hint::spin_loop();
                }
            }
        });
        s.spawn(move || {
            pin_to_cpu(1);
            let mut expected = 0u64;
            while expected < messages {
                rx.read(1, |frame| {
                    let seq = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
                    assert_eq!(seq, expected, "agentwire ring: order");
                    expected += 1;
                    ControlFlow::Continue(())
                })
                .expect("ring");
            }
        });
    });
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, runs) = if full { (20_000_000, 7) } else { (200_000, 1) };
    let rate = |d: Duration| messages as f64 / d.as_secs_f64() / 1e6;
    let (mut tail, mut word, mut ring) = (Vec::new(), Vec::new(), Vec::new());
    // Alternating, so a change of the guest's state touches every variant alike.
    for _ in 0..runs {
        tail.push(rate(tail_protocol(&RingMem::new(), messages)));
        word.push(rate(length_word_protocol(&RingMem::new(), messages)));
        ring.push(rate(agentwire_ring(messages)));
    }
    println!(
        "ring_protocols: 64-byte messages, 1 per publish, producer cpu 0, consumer cpu 1, busy-polling"
    );
    println!("{runs} run(s) of {messages} messages, alternating; medians (and every run)");
    let base = median(ring.clone());
    for (name, rates) in [
        ("agentwire ring (baseline)", &ring),
        ("tail index, minimal", &tail),
        ("length word, minimal", &word),
    ] {
        let all: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{name:<28} {:>7.2} M msg/s  {:>6.3} of the agentwire ring  [{}]",
            median(rates.clone()),
            median(rates.clone()) / base,
            all.join(" ")
        );
    }
}
