//! Wake latency through parked router shards: sparse messages (one every 2 ms), so the
//! router parks between them and every message must wake it. One-way latency from the send
//! to the receiver's hand, for
//! - a spinning router, one shard (the baseline: no wake at all on the router side);
//! - a parked router, one shard (the sender's doorbell wakes it);
//! - two parked shards, sender and receiver on different shards (the sending shard wakes
//!   the receiving one through its doorbell when it publishes the link).
//!
//! Agents use the default idle strategy (spin, then park on their doorbell); routers park
//! for at most 1 ms (`park_timeout_ns`, the default), so a wake that is not delivered shows
//! as a latency spread over that millisecond. Every message is checked in order.
//!
//! Run: `cargo bench -p agentwire-benches --bench wake` (`cargo test --benches` runs a short
//! smoke version).

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{query_status, Agent};
use agentwire_shm::idle::IdleStrategy;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Time between two sends: long enough for every router to park.
const GAP: Duration = Duration::from_millis(2);
/// Longest a router parks at a time (the default idle strategy's bound).
const PARK_TIMEOUT_NS: u64 = 1_000_000;

struct Case {
    name: &'static str,
    idle: IdleStrategy,
    shards: usize,
}

fn measure(case: &Case, index: usize, messages: u64) -> Histogram<u64> {
    let socket = std::env::temp_dir()
        .join(format!("aw-bench-wake-{}-{index}", std::process::id()))
        .join("agentwire.sock");
    let mut config = TestRouterConfig::new(socket);
    config.idle = case.idle;
    config.shards = case.shards;
    let router = TestRouter::start(config).expect("router");
    let connect = |name: &str| {
        Agent::builder(name)
            .socket(router.socket_path())
            .idle(IdleStrategy::default())
            .connect()
            .expect("connect")
    };
    let mut sender = connect("wake-sender");
    let receiver = connect("wake-receiver");
    let to = receiver.id();
    if case.shards > 1 {
        let report = query_status(router.socket_path()).expect("status");
        let shard = |id: u32| {
            report
                .agents
                .iter()
                .find(|a| a.agent_id == id)
                .map(|a| a.shard)
        };
        assert_ne!(
            shard(sender.id()),
            shard(to),
            "sender and receiver on different shards"
        );
    }
    let epoch = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut receiver = receiver;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("hist");
        for seq in 0..messages {
            let m = receiver
                .recv(Some(Duration::from_secs(5)))
                .expect("recv")
                .expect("a message within 5 s");
            let (got, sent_ns) = (
                u64::from_le_bytes(m.payload()[..8].try_into().expect("8")),
                u64::from_le_bytes(m.payload()[8..16].try_into().expect("8")),
            );
            assert_eq!(got, seq, "lost or reordered");
            let now_ns = epoch.elapsed().as_nanos() as u64;
            hist.record(now_ns.saturating_sub(sent_ns).max(1))
                .expect("in range");
        }
        hist
    });
    for seq in 0..messages {
        std::thread::sleep(GAP);
        let mut payload = [0u8; 64];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        payload[8..16].copy_from_slice(&sent_ns.to_le_bytes());
        sender.send(to, &payload).expect("send");
    }
    reader.join().expect("reader")
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, runs) = if full { (1000, 3) } else { (20, 1) };
    let park = IdleStrategy::Park {
        park_timeout_ns: PARK_TIMEOUT_NS,
    };
    let cases = [
        Case {
            name: "spinning router, 1 shard (baseline)",
            idle: IdleStrategy::Spin,
            shards: 1,
        },
        Case {
            name: "parked router, 1 shard",
            idle: park,
            shards: 1,
        },
        Case {
            name: "parked routers, 2 shards, across",
            idle: park,
            shards: 2,
        },
    ];
    println!(
        "wake: 64-byte messages every {} ms, {messages} per run, {runs} run(s) per case, routers park <= {} ms, agents spin then park",
        GAP.as_millis(),
        PARK_TIMEOUT_NS / 1_000_000
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}   p50 / baseline p50 (per run)",
        "case", "p50 us", "p90 us", "p99 us"
    );
    // Runs alternate between the cases so drifts of the VM hit them alike.
    let mut results: Vec<Vec<Histogram<u64>>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (index, (case, out)) in cases.iter().zip(results.iter_mut()).enumerate() {
            out.push(measure(case, index, messages));
        }
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    for (case, hists) in cases.iter().zip(&results) {
        let ratios: Vec<String> = hists
            .iter()
            .zip(&results[0])
            .map(|(h, base)| format!("{:.2}", us(h, 0.5) / us(base, 0.5)))
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("hist");
        for h in hists {
            all.add(h).expect("same bounds");
        }
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>10.1}   {}",
            case.name,
            us(&all, 0.5),
            us(&all, 0.9),
            us(&all, 0.99),
            ratios.join(" ")
        );
    }
}
