//! The NATS path against plain NATS publish/subscribe through the same server, in one run
//! on loopback (a nats-server started by the bench; scripts/setup.sh installs it).
//!
//! Rows (64-byte payloads):
//! - `plain NATS (async-nats)`: one client publishes `N` messages on a subject another
//!   client subscribes to: messages per second at the subscriber; then a requester and a
//!   responder ping-pong one message at a time: round trip p50/p99. The floor.
//! - `agentwire over NATS`: two nodes (two routers) joined to the same server; an agent on
//!   node `a` publishes `N` messages on a topic an agent on node `b` subscribes to
//!   (`a`'s router, its NATS bridge, the server, `b`'s bridge and router): messages per
//!   second at the subscriber; then the agent on `a` sends to the one on `b` through its
//!   proxy and `b` answers, one at a time: round trip p50/p99.
//!
//! Run: `cargo bench -p agentwire-benches --bench nats` (`cargo test --benches` runs a
//! smoke version with few messages).

use agentwire_benches::rows::RateRow;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_transport::nats::{NatsCluster, NatsConfig};
use agentwire_transport::nats_server::NatsServer;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 64;
/// Publishes in flight in the agentwire row.
const WINDOW: usize = 256;

fn plain_nats(url: &str, messages: usize, round_trips: usize) -> RateRow {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let publisher = async_nats::connect(url).await.expect("publisher");
        let subscriber = async_nats::connect(url).await.expect("subscriber");
        let mut sub = subscriber.subscribe("bench.flow").await.expect("subscribe");
        subscriber.flush().await.expect("flush");
        let msg = bytes::Bytes::from(vec![7u8; PAYLOAD_BYTES]);
        let counting = tokio::spawn(async move {
            let start = Instant::now();
            let mut got = 0;
            while got < messages {
                if sub.next().await.is_none() {
                    break;
                }
                got += 1;
            }
            (got, start.elapsed())
        });
        for _ in 0..messages {
            publisher
                .publish("bench.flow", msg.clone())
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
        let (got, elapsed) = counting.await.expect("subscriber task");
        assert_eq!(got, messages, "plain NATS lost messages on loopback");
        let msgs_per_s = messages as f64 / elapsed.as_secs_f64();
        // Ping-pong: a responder echoes on the reply subject.
        let responder = async_nats::connect(url).await.expect("responder");
        let mut requests = responder.subscribe("bench.echo").await.expect("subscribe");
        responder.flush().await.expect("flush");
        let echo = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = responder.publish(reply, request.payload).await;
                }
            }
        });
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..round_trips {
            let t = Instant::now();
            publisher
                .request("bench.echo", msg.clone())
                .await
                .expect("request");
            h.record(t.elapsed().as_nanos() as u64).expect("record");
        }
        echo.abort();
        RateRow {
            name: "plain NATS (async-nats)",
            msgs_per_s,
            p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        }
    })
}

fn node(name: &str, url: &str) -> (TestRouter, NatsCluster) {
    let socket =
        std::env::temp_dir().join(format!("aw-bench-nats-{name}-{}.sock", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(socket)).expect("router");
    let cluster = NatsCluster::start(
        NatsConfig::new(name, url),
        router.control().endpoint_registrar(),
        None,
    )
    .expect("joined NATS");
    (router, cluster)
}

fn agentwire_nats(url: &str, messages: usize, round_trips: usize) -> RateRow {
    let (a, a_nats) = node("a", url);
    let (b, b_nats) = node("b", url);
    let mut a1 = Agent::builder("a1")
        .socket(a.socket_path())
        .capability("bench-a", "1.0.0")
        .connect()
        .expect("agent on a");
    let mut b1 = Agent::builder("b1")
        .socket(b.socket_path())
        .capability("bench-b", "1.0.0")
        .topic("flow")
        .connect()
        .expect("agent on b");
    let deadline = Instant::now() + Duration::from_secs(20);
    let b1_on_a = loop {
        if let Some(found) = a1.discover("bench-b", "*").expect("discover").first() {
            break found.agent_id;
        }
        assert!(Instant::now() < deadline, "b1 never offered on a");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Publishes cross once b's subscription reached a (probe until one arrives).
    loop {
        a1.publish("flow", b"probe").expect("publish");
        if b1
            .recv(Some(Duration::from_millis(20)))
            .expect("recv")
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no publish crossed");
    }
    while b1
        .recv(Some(Duration::from_millis(200)))
        .expect("recv")
        .is_some()
    {}
    let msg = [7u8; PAYLOAD_BYTES];
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let receiver = std::thread::spawn(move || {
        let mut got = 0;
        while got < messages {
            match b1.recv(Some(Duration::from_secs(5))).expect("recv") {
                Some(_) => {
                    got += 1;
                    counter.store(got, Ordering::Relaxed);
                }
                None => break,
            }
        }
        (b1, got)
    });
    // At most WINDOW publishes ahead of the subscriber (an unpaced publisher overruns the
    // bridge's gateway ring and the router drops copies for a slow subscriber, by design).
    let start = Instant::now();
    let mut sent = 0;
    let mut stalled_since = Instant::now();
    while sent < messages {
        let got = received.load(Ordering::Relaxed);
        if sent - got < WINDOW {
            a1.publish("flow", &msg).expect("publish");
            sent += 1;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > Duration::from_secs(5) {
            break; // a lost message never frees its window slot
        } else {
            std::hint::spin_loop();
        }
    }
    let (mut b1, got) = receiver.join().expect("receiver");
    let elapsed = start.elapsed();
    let msgs_per_s = got as f64 / elapsed.as_secs_f64();
    if got < messages {
        let pick = |stats: Vec<(&'static str, u64)>, names: &[&str]| -> String {
            stats
                .into_iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let router = |r: &TestRouter| {
            let names = [
                "frames_deferred",
                "subscriber_copies_dropped",
                "frames_dropped",
                "frames_dead_lettered",
            ];
            pick(
                r.control()
                    .stats()
                    .snapshot()
                    .iter()
                    .map(|(n, v)| (names.iter().copied().find(|x| x == n).unwrap_or(""), *v))
                    .collect(),
                &names,
            )
        };
        println!(
            "agentwire over NATS: {got} of {messages} publishes arrived (core NATS is \
             at-most-once). a: {} | {}; b: {} | {}",
            pick(
                a_nats.stats_handle().snapshot(),
                &["publishes_out", "publish_errors"]
            ),
            router(&a),
            pick(
                b_nats.stats_handle().snapshot(),
                &[
                    "messages_in",
                    "frames_dropped_full",
                    "frames_unknown_source"
                ]
            ),
            router(&b),
        );
    }
    // Ping-pong: a1 to b1's proxy, b1 answers its source.
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..round_trips {
        let t = Instant::now();
        a1.send(b1_on_a, &msg).expect("send");
        let source = b1
            .recv(Some(Duration::from_secs(5)))
            .expect("recv")
            .expect("the request")
            .header()
            .source();
        b1.send(source, &msg).expect("answer");
        a1.recv(Some(Duration::from_secs(5)))
            .expect("recv")
            .expect("the answer");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    RateRow {
        name: "agentwire over NATS",
        msgs_per_s,
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (messages, round_trips) = if full { (200_000, 5_000) } else { (2_000, 100) };
    let messages = std::env::var("AW_NATS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(messages);
    let server = match NatsServer::start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("nats bench: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "NATS on loopback ({}), {PAYLOAD_BYTES}-byte payloads, {messages} messages then \
         {round_trips} round trips one at a time",
        server.url()
    );
    let plain = plain_nats(server.url(), messages, round_trips);
    println!("{}", plain.line(plain.msgs_per_s, "plain NATS"));
    let ours = agentwire_nats(server.url(), messages, round_trips);
    println!("{}", ours.line(plain.msgs_per_s, "plain NATS"));
}
