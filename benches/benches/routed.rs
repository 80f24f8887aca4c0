//! Routed throughput and request/response latency through the daemon's router (issue 3's
//! benchmark until `agentwire load` exists): the daemon runs in this process with its router
//! pinned to cpu 1 and busy-polling; one load-generator thread pinned to cpu 0 drives both
//! ends of the flow (a sender agent and a receiver agent), as a 2-core machine requires. The
//! bare 64-byte-slot ring, cross-thread, is measured in the same run as the physical-limit
//! proxy. 64-byte payloads; every frame's sequence number is checked.
//!
//! Run: `cargo bench -p agentwire-benches --bench routed` (`cargo test --benches` runs a
//! short smoke version).

use agentwire_benches::{pin_to_cpu, RawRing};
use agentwire_runtime::config::Config;
use agentwire_runtime::daemon::Daemon;
use agentwire_shm::client::{Agent, SendOptions};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use hdrhistogram::Histogram;
use std::time::Instant;

const PAYLOAD_BYTES: usize = 64;
const BATCH_FRAMES: usize = 32;
/// Frames in flight (sent, not yet received), so one thread can drive both ends without the
/// sender blocking on a ring the router cannot drain into a full receiver.
const WINDOW_FRAMES: u64 = 4096;

fn routed_throughput(sender: &mut Agent, receiver: &mut Agent, messages: u64) -> f64 {
    let to = receiver.id();
    let mut payloads = vec![[0u8; PAYLOAD_BYTES]; BATCH_FRAMES];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while received < messages {
        if sent < messages && sent - received < WINDOW_FRAMES {
            let n = (messages - sent).min(BATCH_FRAMES as u64) as usize;
            for (i, p) in payloads[..n].iter_mut().enumerate() {
                p[..8].copy_from_slice(&(sent + i as u64).to_le_bytes());
            }
            sent += sender
                .send_batch(to, payloads[..n].iter().map(|p| &p[..]))
                .expect("send") as u64;
        }
        receiver
            .recv_batch(256, |_, payload| {
                let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                assert_eq!(seq, received, "lost, duplicated or reordered");
                received += 1;
            })
            .expect("recv");
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

fn routed_round_trips(client: &mut Agent, server: &mut Agent, round_trips: u64) -> Histogram<u64> {
    let server_id = server.id();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let payload = [7u8; PAYLOAD_BYTES];
    for i in 0..round_trips {
        let start = Instant::now();
        client
            .send_with(
                FrameKind::Request,
                server_id,
                &payload,
                SendOptions {
                    correlation_id: i + 1,
                    ..Default::default()
                },
            )
            .expect("request");
        // The same thread plays the server: wait for the request, answer it.
        let request = loop {
            if let Some(m) = server.try_recv().expect("recv") {
                break m.to_owned();
            }
        };
        server
            .respond(request.header(), request.payload())
            .expect("respond");
        loop {
            if let Some(m) = client.try_recv().expect("recv") {
                assert_eq!(
                    m.header().correlation(),
                    i + 1,
                    "response to the wrong request"
                );
                break;
            }
        }
        hist.record(start.elapsed().as_nanos() as u64)
            .expect("in range");
    }
    hist
}

fn raw_ring_throughput(messages: u64) -> f64 {
    let ring = RawRing::new(1 << 14);
    let consumer = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            pin_to_cpu(1);
            let mut rx = ring.consumer();
            let mut expected = 0u64;
            while expected < messages {
                rx.pop_batch(32, |slot| {
                    assert_eq!(
                        u64::from_le_bytes(slot[..8].try_into().expect("8")),
                        expected
                    );
                    expected += 1;
                });
            }
        });
        let start = Instant::now();
        let mut tx = ring.producer();
        let mut seq = 0u64;
        while seq < messages {
            let n = 32.min(messages - seq);
            let base = seq;
            if tx.push_batch(n, |slot, i| {
                slot[..8].copy_from_slice(&(base + i).to_le_bytes())
            }) {
                seq += n;
            }
        }
        handle.join().expect("consumer");
        start.elapsed()
    });
    messages as f64 / consumer.as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, round_trips, runs) = if full {
        (10_000_000, 200_000, 5)
    } else {
        (20_000, 1_000, 1)
    };
    let socket = std::env::temp_dir()
        .join(format!("aw-bench-routed-{}", std::process::id()))
        .join("agentwire.sock");
    let mut config = Config::embedded_default();
    config.router_cpu = Some(1);
    config.idle = IdleStrategy::Spin;
    config.metrics = false;
    config.dlq.path = socket.with_file_name("dlq.log");
    let daemon = Daemon::start(&config, socket.clone()).expect("daemon");
    pin_to_cpu(0);
    let connect = |name: &str| {
        Agent::builder(name)
            .socket(&socket)
            .idle(IdleStrategy::Spin)
            .connect()
            .expect("connect")
    };
    let (mut sender, mut receiver) = (connect("bench-sender"), connect("bench-receiver"));
    println!("routed: 64-byte payloads, daemon router pinned to cpu 1 (spin), load generator on cpu 0 driving both ends");
    println!("{runs} runs; throughput {messages} messages per run (window {WINDOW_FRAMES}, batch {BATCH_FRAMES}); {round_trips} round trips per run");
    let mut routed = Vec::new();
    let mut raw = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut p999 = Vec::new();
    for _ in 0..runs {
        raw.push(raw_ring_throughput(messages));
        routed.push(routed_throughput(&mut sender, &mut receiver, messages));
        let h = routed_round_trips(&mut sender, &mut receiver, round_trips);
        p50.push(h.value_at_quantile(0.5));
        p99.push(h.value_at_quantile(0.99));
        p999.push(h.value_at_quantile(0.999));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medu = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (routed_med, raw_med) = (med(&mut routed), med(&mut raw));
    println!("{:<44} {:>12}   spread", "measure", "median");
    println!(
        "{:<44} {:>10.2} M/s   {:.2}..{:.2}",
        "bare 64 B-slot ring, cross-thread (baseline)",
        raw_med / 1e6,
        raw[0] / 1e6,
        raw[raw.len() - 1] / 1e6
    );
    println!(
        "{:<44} {:>10.2} M/s   {:.2}..{:.2}",
        "routed through one router core",
        routed_med / 1e6,
        routed[0] / 1e6,
        routed[routed.len() - 1] / 1e6
    );
    println!("{:<44} {:>12.3}", "routed / bare", routed_med / raw_med);
    println!(
        "{:<44} {:>9} ns   p99 {} ns, p99.9 {} ns",
        "request/response round trip p50",
        medu(&mut p50),
        medu(&mut p99),
        medu(&mut p999)
    );
    drop((sender, receiver));
    daemon.join();
}
