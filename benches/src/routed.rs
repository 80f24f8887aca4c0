//! Driving agentwire's daemon from a bench: a daemon started in this process with its router
//! pinned and spinning, and one load-generator thread that plays both ends of a flow (a
//! sender and a receiver agent, or a client and a server), as a 2-core machine requires.
//! Every frame's sequence number (or correlation id) is checked.
//!
//! ```no_run
//! let (_daemon, socket) = agentwire_benches::routed::start_daemon("doc", 1);
//! let (mut a, mut b) = (agentwire_benches::routed::connect(&socket, "a"), agentwire_benches::routed::connect(&socket, "b"));
//! let rate = agentwire_benches::routed::routed_throughput(&mut a, &mut b, 1000);
//! assert!(rate > 0.0);
//! ```

use agentwire_runtime::config::Config;
use agentwire_runtime::daemon::Daemon;
use agentwire_shm::client::{Agent, SendOptions};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Payload bytes of every routed bench message.
pub const PAYLOAD_BYTES: usize = 64;
/// Frames per `send_batch`.
pub const BATCH_FRAMES: usize = 32;
/// Frames in flight (sent, not yet received), so one thread can drive both ends without the
/// sender blocking on a ring the router cannot drain into a full receiver.
pub const WINDOW_FRAMES: u64 = 4096;

/// Starts the daemon in this process (embedded default config, router pinned to
/// `router_cpu` and spinning, no metrics) on a fresh socket named after `name`.
pub fn start_daemon(name: &str, router_cpu: usize) -> (Daemon, PathBuf) {
    let socket = std::env::temp_dir()
        .join(format!("aw-bench-{name}-{}", std::process::id()))
        .join("agentwire.sock");
    let mut config = Config::embedded_default();
    config.router_cpu = Some(router_cpu);
    config.idle = IdleStrategy::Spin;
    config.metrics = false;
    config.dlq.path = socket.with_file_name("dlq.log");
    let daemon = Daemon::start(&config, socket.clone()).expect("daemon");
    (daemon, socket)
}

/// A busy-polling agent named `name` on `socket`.
pub fn connect(socket: &Path, name: &str) -> Agent {
    Agent::builder(name)
        .socket(socket)
        .idle(IdleStrategy::Spin)
        .connect()
        .expect("connect")
}

/// Takes what has arrived, checking each frame carries the next sequence number.
pub fn receive_in_order(receiver: &mut Agent, received: &mut u64) {
    receiver
        .recv_batch(256, |_, payload| {
            let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            assert_eq!(seq, *received, "lost, duplicated or reordered");
            *received += 1;
        })
        .expect("recv");
}

/// Sends the next batch (at most [`BATCH_FRAMES`], none past `messages`) of frames numbered
/// from `sent`, in one publish; returns how many went.
fn send_next_batch(
    sender: &mut Agent,
    to: u32,
    payloads: &mut [[u8; PAYLOAD_BYTES]],
    sent: u64,
    messages: u64,
) -> u64 {
    let n = (messages - sent).min(payloads.len() as u64) as usize;
    for (i, p) in payloads[..n].iter_mut().enumerate() {
        p[..8].copy_from_slice(&(sent + i as u64).to_le_bytes());
    }
    sender
        .send_batch(to, payloads[..n].iter().map(|p| &p[..]))
        .expect("send") as u64
}

/// Sends `messages` 64-byte frames from `sender` to `receiver` (batches of 32, at most
/// [`WINDOW_FRAMES`] in flight), checking order; returns messages per second.
pub fn routed_throughput(sender: &mut Agent, receiver: &mut Agent, messages: u64) -> f64 {
    let to = receiver.id();
    let mut payloads = vec![[0u8; PAYLOAD_BYTES]; BATCH_FRAMES];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while received < messages {
        if sent < messages && sent - received < WINDOW_FRAMES {
            sent += send_next_batch(sender, to, &mut payloads, sent, messages);
        }
        receive_in_order(receiver, &mut received);
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

/// [`routed_throughput`] with a load thread per end: this thread sends (pinned to
/// `sender_cpu`), a second thread pinned to `receiver_cpu` receives and checks order, at most
/// [`WINDOW_FRAMES`] in flight. Returns messages per second. On a machine with a third core
/// (router on one, each end on its own) it measures the router end to end without the one
/// load thread as the bound; with both ends on one CPU it still runs, time-sliced.
///
/// ```no_run
/// let (_daemon, socket) = agentwire_benches::routed::start_daemon("doc-split", 1);
/// let (mut a, mut b) = (agentwire_benches::routed::connect(&socket, "a"), agentwire_benches::routed::connect(&socket, "b"));
/// let rate = agentwire_benches::routed::routed_throughput_split(&mut a, &mut b, 1000, 0, 2);
/// assert!(rate > 0.0);
/// ```
pub fn routed_throughput_split(
    sender: &mut Agent,
    receiver: &mut Agent,
    messages: u64,
    sender_cpu: usize,
    receiver_cpu: usize,
) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let to = receiver.id();
    // SYNC POINT: received (the receiver's count, read by the sender for its window).
    let received_total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::pin_to_cpu(receiver_cpu);
            let mut received = 0u64;
            while received < messages {
                receive_in_order(receiver, &mut received);
                received_total.store(received, Ordering::Release);
            }
        });
        crate::pin_to_cpu(sender_cpu);
        let mut payloads = vec![[0u8; PAYLOAD_BYTES]; BATCH_FRAMES];
        let mut sent = 0u64;
        while sent < messages {
            if sent - received_total.load(Ordering::Acquire) >= WINDOW_FRAMES {
                // Both ends may share a CPU (fewer than three cores): let the receiver run.
                std::thread::yield_now();
                continue;
            }
            sent += send_next_batch(sender, to, &mut payloads, sent, messages);
        }
    });
    messages as f64 / start.elapsed().as_secs_f64()
}

/// Times `round_trips` request/response round trips from `client` to `server` (this thread
/// plays the server too); returns the round-trip times in ns.
pub fn routed_round_trips(
    client: &mut Agent,
    server: &mut Agent,
    round_trips: u64,
) -> Histogram<u64> {
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
