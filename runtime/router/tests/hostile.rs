//! The router against a hostile agent (an allowed agent is still untrusted): each test runs a
//! real router in this process and an attacking agent in its own process
//! (`agentwire-hostile-agent`), then checks that the router stays up and answers status,
//! that honest agents keep exchanging every frame, and that the attacker is contained or
//! removed. Each attack took the daemon down, hung a router shard or fooled an agent before
//! its fix.

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::pattern::{checked_len, fill_checked, read_checked};
use agentwire_shm::wire::FrameKind;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
/// How long any one test may take before the watchdog fails it: a hung router shard must
/// fail the test, not hang the suite.
const TEST_WATCHDOG: Duration = Duration::from_secs(60);

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("aw-hostile-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

fn router(name: &str) -> TestRouter {
    TestRouter::start(TestRouterConfig::new(socket(name))).unwrap()
}

fn agent(r: &TestRouter, name: &str) -> Agent {
    Agent::builder(name)
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap()
}

/// Fails the whole test binary if not disarmed (dropped) within [`TEST_WATCHDOG`]: what a
/// hung router shard would otherwise do to the suite is wait forever.
struct Watchdog(Option<Sender<()>>);

fn watchdog(what: &'static str) -> Watchdog {
    let (disarm, armed) = channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(TEST_WATCHDOG) {
            // Straight to the stream: the harness's capture would swallow it at exit.
            let _ = writeln!(
                std::io::stderr(),
                "watchdog: {what} did not finish within {TEST_WATCHDOG:?}"
            );
            std::process::exit(101);
        }
    });
    Watchdog(Some(disarm))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// The attacking agent's process.
struct Hostile {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    id: u32,
}

impl Hostile {
    /// Starts `attack` and waits until the attacker says it is connected (and, unless it
    /// needs a target first, that the attack is in place).
    fn spawn(r: &TestRouter, attack: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentwire-hostile-agent"))
            .arg(r.socket_path())
            .arg("hostile")
            .arg(attack)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut hostile = Self { child, out, id: 0 };
        hostile.id = hostile.line("id ").parse().unwrap();
        if attack != "kind-flip" {
            hostile.line("attacked");
        }
        hostile
    }

    /// The next stdout line, which must start with `prefix`; what follows it.
    fn line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("attacker: expected {prefix:?}, got {line:?}"))
            .to_string()
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
    }

    /// Closes its stdin (it stops) and reaps it.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success(), "the attacker failed");
    }
}

/// Two fresh honest agents exchange `frames` checked frames; every one arrives, in order.
fn honest_exchange(r: &TestRouter, tag: &str, frames: u64) {
    let mut a = agent(r, &format!("honest-a-{tag}"));
    let mut b = agent(r, &format!("honest-b-{tag}"));
    let len = checked_len(64);
    let mut payload = vec![0u8; len];
    let mut received = 0u64;
    for seq in 0..frames {
        fill_checked(seq, &mut payload);
        loop {
            match a.send(b.id(), &payload) {
                Ok(()) => break,
                Err(ClientError::Claim(_)) => {
                    received += drain(&mut b, received);
                }
                Err(e) => panic!("honest send {seq}: {e}"),
            }
        }
        received += drain(&mut b, received);
    }
    while received < frames {
        let m = b
            .recv(WAIT)
            .unwrap()
            .expect("an honest frame never arrived");
        assert_eq!(read_checked(m.payload()).unwrap(), received);
        received += 1;
    }
}

/// Takes what `b` has now, checking sequence numbers from `next`; returns how many.
fn drain(b: &mut Agent, next: u64) -> u64 {
    let mut n = 0;
    while let Some(m) = b.try_recv().unwrap() {
        assert_eq!(
            read_checked(m.payload()).unwrap(),
            next + n,
            "lost or reordered"
        );
        n += 1;
    }
    n
}

/// The router answers a status query and lists `name` or not.
fn status_lists(r: &TestRouter, name: &str) -> bool {
    let report = agentwire_shm::client::query_status(r.socket_path()).expect("status");
    report.agents.iter().any(|a| a.name == name)
}

/// Waits (10 s watchdog) until the attacker's agent is gone from the registry.
fn wait_removed(r: &TestRouter, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_lists(r, name) {
        assert!(Instant::now() < deadline, "watchdog: {name} never removed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the attacker saw its segment closed and the router removed it, counted as a
/// corrupt ring.
fn removed_for_a_corrupt_ring(r: &TestRouter, hostile: &mut Hostile) {
    hostile.line("closed");
    wait_removed(r, "hostile");
    assert!(r.stats().rings_corrupt.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_scribbled_segment_header_never_reaches_the_router() {
    let _w = watchdog("header");
    let r = router("header");
    let hostile = Hostile::spawn(&r, "header");
    // Before the fix the liveness check and table rebuilds re-read the header: capacity 3
    // panicked the control thread (and poisoned the registry lock), offset 2^40 faulted.
    std::thread::sleep(Duration::from_millis(600)); // two liveness checks (250 ms apart)
    honest_exchange(&r, "header", 2_000);
    assert!(
        status_lists(&r, "hostile"),
        "a header scribble alone is contained"
    );
    hostile.stop();
    honest_exchange(&r, "header-after", 100);
    r.stop();
}

#[test]
fn a_punched_hole_reads_as_a_corrupt_ring_and_its_agent_is_removed() {
    let _w = watchdog("punch-hole");
    let r = router("punch");
    let mut hostile = Hostile::spawn(&r, "punch-hole");
    removed_for_a_corrupt_ring(&r, &mut hostile);
    honest_exchange(&r, "punch", 2_000);
    hostile.stop();
    r.stop();
}

#[test]
fn an_agent_cannot_make_a_doorbell_block_the_router() {
    let _w = watchdog("bells");
    let r = router("bells");
    let hostile = Hostile::spawn(&r, "bells");
    // The attacker keeps publishing to itself with its park flag up: the router rings its
    // rx bell on every publish. Before the fix (eventfds whose O_NONBLOCK the agent cleared,
    // counter at 2^64 - 2) the router shard blocked in write() and this exchange stalled.
    honest_exchange(&r, "bells", 5_000);
    assert!(status_lists(&r, "hostile"));
    hostile.stop();
    // And the router stops: a shard stuck in the kernel could not.
    r.stop();
}

#[test]
fn an_rx_head_out_of_range_removes_its_agent() {
    let _w = watchdog("rx-head");
    let r = router("rxhead");
    let mut hostile = Hostile::spawn(&r, "rx-head");
    removed_for_a_corrupt_ring(&r, &mut hostile);
    honest_exchange(&r, "rxhead", 2_000);
    hostile.stop();
    r.stop();
}

#[test]
fn a_corrupt_tx_ring_removes_its_agent_fully() {
    let _w = watchdog("tx-tail");
    let r = router("txtail");
    let mut watcher = agent(&r, "watcher");
    let mut hostile = Hostile::spawn(&r, "tx-tail");
    // Gone from the registry (status), and its id no longer routes.
    removed_for_a_corrupt_ring(&r, &mut hostile);
    let sent = watcher.send(hostile.id, b"anyone there?");
    if sent.is_ok() {
        let m = watcher.recv(WAIT).unwrap().expect("a nack");
        assert_eq!(
            m.header().kind(),
            FrameKind::Nack,
            "routed to a removed agent"
        );
    }
    honest_exchange(&r, "txtail", 2_000);
    hostile.stop();
    r.stop();
}

#[test]
fn a_frame_rewritten_after_validation_arrives_as_validated() {
    let _w = watchdog("kind-flip");
    let r = router("kindflip");
    let mut victim = agent(&r, "victim");
    let mut hostile = Hostile::spawn(&r, "kind-flip");
    hostile.tell(&victim.id().to_string());
    hostile.line("attacked");
    // The attacker rewrites the kind of its committed frames to Ack, racing the router's
    // read. Whatever the victim gets from it was validated as sent: never an ack or nack.
    let mut from_attacker = 0u64;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(m) = victim.recv(Some(Duration::from_millis(50))).unwrap() {
            if m.header().source() == hostile.id {
                from_attacker += 1;
                assert_eq!(
                    m.header().kind(),
                    FrameKind::Send,
                    "a forged kind got through"
                );
            }
        }
    }
    assert!(from_attacker > 0, "the attacker's frames never arrived");
    hostile.stop();
    r.stop();
}

#[test]
fn a_forged_response_is_never_taken_for_the_reply() {
    let _w = watchdog("forged response");
    let r = router("forged");
    let mut victim = agent(&r, "victim");
    let mut forger = agent(&r, "forger");
    let mut server = agent(&r, "server");
    let (victim_id, server_id) = (victim.id(), server.id());
    // Before the fix correlation ids counted up from 1: these were taken for the reply.
    for correlation_id in 1..=64u64 {
        let options = agentwire_shm::client::SendOptions {
            correlation_id,
            ..Default::default()
        };
        forger
            .send_with(FrameKind::Response, victim_id, b"forged", options)
            .unwrap();
    }
    let serving = std::thread::spawn(move || {
        let request = server.recv(WAIT).unwrap().expect("the request").to_owned();
        server.respond(request.header(), b"genuine").unwrap();
        server
    });
    let reply = victim
        .request(server_id, b"ask", Duration::from_secs(10))
        .unwrap();
    assert_eq!(reply.payload(), b"genuine");
    assert_eq!(reply.header().source(), server_id);
    drop(serving.join().unwrap());
    r.stop();
}

#[test]
fn control_requests_are_bounded_and_status_survives_them() {
    use agentwire_router::limits::{TOPICS_PER_AGENT_MAX, TOPIC_NAME_BYTES_MAX};
    let _w = watchdog("control limits");
    let r = router("limits");
    let mut greedy = agent(&r, "greedy");
    let mut refused = 0;
    // Before the fix every string made a topic for good, and two 60 KB names broke status.
    for k in 0..(TOPICS_PER_AGENT_MAX + 200) {
        match greedy.topic_id(&format!("topic-{k}")) {
            Ok(_) => {}
            Err(ClientError::Protocol(detail)) => {
                assert!(detail.contains("topics"), "{detail}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 200, "the agent's topic limit");
    for _ in 0..2 {
        let long = "t".repeat(60 * 1024);
        assert!(
            greedy.subscribe(&long).is_err(),
            "a 60 KB topic name was taken"
        );
    }
    assert!(greedy
        .subscribe(&"t".repeat(TOPIC_NAME_BYTES_MAX + 1))
        .is_err());
    assert!(r.stats().control_requests_refused.load(Ordering::Relaxed) >= 203);
    // Status still answers, whole, in pages.
    let report = agentwire_shm::client::query_status(r.socket_path()).expect("status");
    assert_eq!(report.routes.len(), report.routes_total as usize);
    assert_eq!(report.routes_total as usize, TOPICS_PER_AGENT_MAX);
    // Resolving and discovering change no routing: no table rebuild per request.
    let rebuilds = r.stats().table_rebuilds.load(Ordering::Relaxed);
    for _ in 0..500 {
        greedy.topic_id("topic-1").unwrap();
        greedy.discover("ocr", ">=1").unwrap();
        greedy.unsubscribe("never-subscribed").unwrap();
    }
    honest_exchange(&r, "limits", 100);
    let after = r.stats().table_rebuilds.load(Ordering::Relaxed);
    assert!(
        after - rebuilds < 20,
        "{} rebuilds for 1,500 requests",
        after - rebuilds
    );
    // Its topics are freed when it leaves.
    drop(greedy);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = agentwire_shm::client::query_status(r.socket_path()).expect("status");
        if report.routes_total == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: {} topics left",
            report.routes_total
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    r.stop();
}

/// Publishes `frames` checked frames to `topic`, taking what `readers` have whenever the
/// publisher's lane is full (a reader that never reads is simply not listed); returns what
/// each reader got, checked in order.
fn publish_through(
    publisher: &mut Agent,
    topic: &str,
    frames: u64,
    readers: &mut [&mut Agent],
    stall_allowed: bool,
) -> Vec<u64> {
    let len = checked_len(64);
    let mut payload = vec![0u8; len];
    let mut got = vec![0u64; readers.len()];
    let take = |readers: &mut [&mut Agent], got: &mut [u64]| {
        for (reader, n) in readers.iter_mut().zip(got.iter_mut()) {
            *n += drain(reader, *n);
        }
    };
    for seq in 0..frames {
        fill_checked(seq, &mut payload);
        loop {
            match publisher.publish(topic, &payload) {
                Ok(()) => break,
                Err(ClientError::Claim(_)) => take(readers, &mut got),
                Err(ClientError::Backpressure(_)) if stall_allowed => take(readers, &mut got),
                Err(e) => panic!("publish {seq}: {e}"),
            }
        }
        if seq % 64 == 0 {
            take(readers, &mut got);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.iter().any(|&n| n < frames) && Instant::now() < deadline {
        take(readers, &mut got);
    }
    got
}

#[test]
fn a_silent_subscriber_does_not_stall_its_publisher_or_the_other_subscribers() {
    let _w = watchdog("slow subscriber");
    let r = router("slowsub");
    let mut publisher = agent(&r, "publisher");
    let mut honest = agent(&r, "honest");
    let mut silent = agent(&r, "silent");
    honest.subscribe("news").unwrap();
    silent.subscribe("news").unwrap();
    // Far more than the silent subscriber's ring and deferral hold. Before the drop policy
    // every copy or none was placed: the publisher stalled once the silent one was full.
    let frames = 100_000;
    let got = publish_through(&mut publisher, "news", frames, &mut [&mut honest], false);
    assert_eq!(got, vec![frames], "the honest subscriber lost frames");
    let dropped = r.stats().subscriber_copies_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0 && dropped < frames, "{dropped} copies dropped");
    // What the silent one was kept (in its ring and its deferral) arrives intact and in
    // order once it reads: every copy was delivered or counted dropped.
    let mut kept = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while kept + dropped < frames {
        assert!(
            Instant::now() < deadline,
            "watchdog: {kept} kept, {dropped} dropped"
        );
        kept += drain(&mut silent, kept);
    }
    assert_eq!(
        kept + dropped,
        frames,
        "a copy both kept and counted dropped"
    );
    assert!(status_lists(&r, "silent"), "eviction is off by default");
    r.stop();
}

#[test]
fn a_subscriber_that_stays_behind_is_evicted_when_configured() {
    let _w = watchdog("eviction");
    let mut config = TestRouterConfig::new(socket("evict"));
    config.slow_subscriber_evict_copies = 1_000;
    let r = TestRouter::start(config).unwrap();
    let mut publisher = agent(&r, "publisher");
    let mut honest = agent(&r, "honest");
    let mut silent = agent(&r, "silent");
    honest.subscribe("news").unwrap();
    silent.subscribe("news").unwrap();
    let got = publish_through(&mut publisher, "news", 50_000, &mut [&mut honest], false);
    assert_eq!(got, vec![50_000]);
    wait_removed(&r, "silent");
    assert_eq!(r.stats().subscribers_evicted.load(Ordering::Relaxed), 1);
    assert!(status_lists(&r, "honest"));
    r.stop();
}

#[test]
fn backpressure_policy_keeps_every_copy() {
    let _w = watchdog("backpressure");
    let mut config = TestRouterConfig::new(socket("backpressure"));
    config.slow_subscriber = agentwire_router::config::SlowSubscriber::Backpressure;
    let r = TestRouter::start(config).unwrap();
    let mut publisher = agent(&r, "publisher");
    let mut a = agent(&r, "a");
    let mut late = agent(&r, "late");
    a.subscribe("news").unwrap();
    late.subscribe("news").unwrap();
    // The late subscriber reads only when the publisher is stuck: nothing is dropped.
    let frames = 20_000;
    let got = publish_through(
        &mut publisher,
        "news",
        frames,
        &mut [&mut a, &mut late],
        true,
    );
    assert_eq!(got, vec![frames, frames]);
    assert_eq!(
        r.stats().subscriber_copies_dropped.load(Ordering::Relaxed),
        0
    );
    r.stop();
}

/// This process's resident memory in KiB (VmRSS).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What a campaign measured.
struct CampaignReport {
    hostile_ops: u64,
    reconnects: u64,
    honest_frames: u64,
    honest_seconds: f64,
    rss_growth_kib: u64,
}

/// `hostiles` scribbling agents (`agentwire-hostile-agent ... scribble`) for `duration`
/// while two honest agents exchange a conserved flow of checked frames; then every hostile
/// process stops. Asserts the router stayed up and answered status throughout, the honest
/// flow lost, duplicated and reordered nothing, every hostile agent is gone afterwards, and
/// memory stayed bounded.
fn campaign(name: &str, hostiles: usize, duration: Duration) -> CampaignReport {
    let r = router(name);
    let rss_before = rss_kib();
    let mut attackers: Vec<std::process::Child> = (0..hostiles)
        .map(|k| {
            Command::new(env!("CARGO_BIN_EXE_agentwire-hostile-agent"))
                .arg(r.socket_path())
                .arg(format!("hostile-{k}"))
                .arg("scribble")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut sender = agent(&r, "honest-sender");
    let mut receiver = agent(&r, "honest-receiver");
    let (from, to) = (sender.id(), receiver.id());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sending = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut payload = vec![0u8; checked_len(64)];
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fill_checked(seq, &mut payload);
                match sender.send(to, &payload) {
                    Ok(()) => {
                        seq += 1;
                        sent.store(seq, Ordering::Relaxed);
                    }
                    Err(ClientError::Claim(_)) | Err(ClientError::Backpressure(_)) => {}
                    Err(e) => panic!("honest send {seq}: {e}"),
                }
            }
            sender
        })
    };
    let started = Instant::now();
    let mut received = 0u64;
    let mut next_status = Instant::now();
    let take = |receiver: &mut Agent, received: &mut u64| {
        while let Some(m) = receiver.try_recv().unwrap() {
            // Attackers send to random ids, the honest receiver's among them.
            if m.header().source() == from {
                assert_eq!(read_checked(m.payload()).unwrap(), *received, "honest flow");
                *received += 1;
            }
        }
    };
    while started.elapsed() < duration {
        take(&mut receiver, &mut received);
        if Instant::now() >= next_status {
            agentwire_shm::client::query_status(r.socket_path()).expect("status under attack");
            next_status = Instant::now() + Duration::from_millis(200);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _sender = sending.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while received < total {
        assert!(
            Instant::now() < deadline,
            "watchdog: {received} of {total} honest frames"
        );
        take(&mut receiver, &mut received);
    }
    let honest_seconds = started.elapsed().as_secs_f64();
    let (mut hostile_ops, mut reconnects) = (0, 0);
    for child in &mut attackers {
        drop(child.stdin.take());
    }
    for mut child in attackers {
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let _ = child.wait();
        for line in out.lines() {
            if let Some(n) = line.strip_prefix("ops ") {
                hostile_ops += n.parse::<u64>().unwrap();
            }
            if let Some(n) = line.strip_prefix("reconnects ") {
                reconnects += n.parse::<u64>().unwrap();
            }
        }
    }
    // Every attacker is gone (its process exited), and the router still serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = agentwire_shm::client::query_status(r.socket_path()).expect("status");
        if !report.agents.iter().any(|a| a.name.starts_with("hostile-")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: hostile agents still registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    honest_exchange(&r, name, 1_000);
    let rss_growth_kib = rss_kib().saturating_sub(rss_before);
    assert!(
        rss_growth_kib < 512 * 1024,
        "router process grew {rss_growth_kib} KiB under attack"
    );
    r.stop();
    CampaignReport {
        hostile_ops,
        reconnects,
        honest_frames: total,
        honest_seconds,
        rss_growth_kib,
    }
}

#[test]
fn a_hostile_campaign_leaves_the_router_up_and_the_honest_flow_whole() {
    let _w = watchdog("campaign");
    let report = campaign("campaign", 3, Duration::from_secs(3));
    assert!(
        report.hostile_ops > 10_000,
        "{} hostile operations",
        report.hostile_ops
    );
    assert!(report.honest_frames > 0);
}

/// The long run for the benchmark record: `cargo test --release -p agentwire-router --test
/// hostile -- --ignored --nocapture long_hostile_campaign` (AW_CAMPAIGN_S seconds, default
/// 60; AW_CAMPAIGN_AGENTS attackers, default 4). Prints the operations tried and the honest
/// flow's rate; its rate alone is measured first, the same way, for the ratio.
#[test]
#[ignore]
fn long_hostile_campaign() {
    let seconds = std::env::var("AW_CAMPAIGN_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let agents = std::env::var("AW_CAMPAIGN_AGENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4usize);
    let quiet = campaign("campaign-quiet", 0, Duration::from_secs(seconds.min(10)));
    let loud = campaign("campaign-long", agents, Duration::from_secs(seconds));
    let rate = |r: &CampaignReport| r.honest_frames as f64 / r.honest_seconds;
    println!(
        "campaign: {agents} hostile agents, {seconds} s: {} hostile operations, {} reconnects; \
         honest flow {:.2} M frames/s under attack, {:.2} M/s alone (ratio {:.2}); \
         RSS growth {} KiB",
        loud.hostile_ops,
        loud.reconnects,
        rate(&loud) / 1e6,
        rate(&quiet) / 1e6,
        rate(&loud) / rate(&quiet),
        loud.rss_growth_kib
    );
}
