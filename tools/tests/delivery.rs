//! Delivery semantics of a real `agentwire serve` process: a full destination stalls only
//! its own flows, then backpressure, then the dead-letter queue, then `agentwire dlq replay`
//! delivers; the metrics endpoint, `agentwire routes`, SIGHUP reload, 100 agents at once.

use agentwire_shm::client::{decode_nack, query_status, Agent, ClientError};
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::FrameKind;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{cli_json, http_get, scratch, Served, AGENTWIRE};

const WATCHDOG: Duration = Duration::from_secs(30);

/// Writes `toml` to `config` and starts a daemon on it, listening at `socket`.
fn serve_with_config(config: &std::path::Path, socket: &std::path::Path, toml: &str) -> Served {
    std::fs::write(config, toml).unwrap();
    Served::start(socket, &["--config", config.to_str().unwrap()])
}

fn counter(socket: &std::path::Path, name: &str) -> u64 {
    query_status(socket)
        .unwrap()
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Drains `agent`'s rx ring, counting DestinationFull nacks.
fn count_full_nacks(agent: &mut Agent) -> u64 {
    let mut nacks = 0;
    while let Some(msg) = agent.try_recv().unwrap() {
        if msg.header().kind() == FrameKind::Nack {
            let body = decode_nack(msg.payload()).expect("nack body");
            assert_eq!(body.reason, NackReason::DestinationFull as u32, "{body:?}");
            assert!(body.detail.contains("dead-lettered as record"), "{body:?}");
            nacks += 1;
        }
    }
    nacks
}

#[test]
fn full_destination_stalls_only_its_flows_then_dead_letters_then_replay_delivers() {
    let dir = scratch("slow");
    let config = dir.join("agentwire.toml");
    // Small rings so a few dozen frames fill them; a short deadline so the test is quick.
    let socket = dir.join("agentwire.sock");
    let served = serve_with_config(
        &config,
        &socket,
        "ring_capacity_bytes = 4096\ndefer_capacity_bytes = 4096\ndefer_deadline_ms = 300\n",
    );
    let dlq = dir.join("dlq.log");
    let connect = |name: &str| {
        Agent::builder(name)
            .socket(&socket)
            .send_timeout(Duration::from_millis(20))
            .connect()
            .unwrap()
    };
    let mut slow = connect("slow"); // reads nothing until told
    let mut other = connect("other");
    let mut sender = connect("sender");
    // An 8-byte payload makes a 64-byte ring record: 64 fit the slow agent's rx ring, about
    // 50 its deferral, 64 the sender's tx ring.
    const FRAMES: u64 = 300;
    // Phase 1: more than the slow agent's ring holds, less than ring + deferral. They all
    // fit once the router has moved them, but 80 is more than the sender's own ring: a send
    // may wait longer than its 20 ms timeout for the router to run when the machine is
    // loaded (seen with a parallel test suite on 2 cores), so backpressure here only means
    // "not yet" (the watchdog bounds it).
    let mut seq = 0u64;
    let deadline = Instant::now() + WATCHDOG;
    while seq < 80 {
        match sender.send(slow.id(), &seq.to_le_bytes()) {
            Ok(()) => seq += 1,
            Err(ClientError::Backpressure(_)) => {
                assert!(Instant::now() < deadline, "watchdog: phase 1 never fit");
            }
            Err(e) => panic!("{e}"),
        }
    }
    while counter(&socket, "deferred_now") == 0 {
        assert!(Instant::now() < deadline, "watchdog: nothing deferred");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The same sender's frames to another destination are not stuck behind them.
    for i in 0..10u64 {
        sender.send(other.id(), &i.to_le_bytes()).unwrap();
        let msg = other.recv(Some(WATCHDOG)).unwrap().expect("watchdog");
        assert_eq!(msg.payload(), i.to_le_bytes());
    }
    // Phase 2: keep sending to the slow agent: the sender feels backpressure, deferred
    // frames expire into the dead-letter queue and the sender is nacked for each.
    let mut backpressure = 0u64;
    let mut nacks = 0u64;
    while seq < FRAMES {
        match sender.send(slow.id(), &seq.to_le_bytes()) {
            Ok(()) => seq += 1,
            Err(ClientError::Backpressure(_)) => backpressure += 1,
            Err(e) => panic!("{e}"),
        }
        nacks += count_full_nacks(&mut sender);
        assert!(Instant::now() < deadline, "watchdog: sending stalled");
    }
    assert!(backpressure > 0, "the sender never felt backpressure");
    // Everything not in the slow agent's ring ends up dead-lettered, and nacked.
    let deadline = Instant::now() + WATCHDOG;
    // A nack that finds the sender's own rx ring full is dropped and counted (the frame
    // itself is safe in the queue; the sender's control block counts every rejection).
    while counter(&socket, "deferred_now") > 0
        || nacks + counter(&socket, "replies_dropped") < counter(&socket, "frames_dead_lettered")
    {
        nacks += count_full_nacks(&mut sender);
        assert!(
            Instant::now() < deadline,
            "watchdog: deferred frames never expired: {:?}, {nacks} nacks seen",
            query_status(&socket).unwrap().counters
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let dead = counter(&socket, "frames_dead_lettered");
    assert_eq!(nacks + counter(&socket, "replies_dropped"), dead);
    assert!(nacks > 0 && dead > 0);
    let listed = Command::new(AGENTWIRE)
        .args(["dlq", "list", "--json", "--dlq"])
        .arg(&dlq)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["records"].as_array().unwrap().len() as u64, dead);
    assert_eq!(listed["records"][0]["reason_name"], "DestinationFull");
    // The daemon keeps the uid the sender connected as with each record.
    assert_eq!(
        listed["records"][0]["source_uid"],
        rustix::process::getuid().as_raw()
    );
    // The slow agent wakes up and reads what reached its ring, in order...
    let mut got = Vec::new();
    while let Some(msg) = slow.try_recv().unwrap() {
        got.push(u64::from_le_bytes(msg.payload().try_into().unwrap()));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert_eq!(
        got.len() as u64 + dead,
        FRAMES,
        "ring + dead letters = all sent"
    );
    // ...and `dlq replay` delivers the rest through the daemon while it keeps reading.
    let replay = Command::new(AGENTWIRE)
        .args(["dlq", "replay", "--json", "--dlq"])
        .arg(&dlq)
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while (got.len() as u64) < FRAMES {
        if let Some(msg) = slow.recv(Some(Duration::from_millis(50))).unwrap() {
            got.push(u64::from_le_bytes(msg.payload().try_into().unwrap()));
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: replay delivered {} of {FRAMES}",
            got.len()
        );
    }
    let out = replay.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["replayed"].as_u64(), report["remaining"].as_u64()),
        (Some(dead), Some(0))
    );
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len() as u64, FRAMES, "no duplicates");
    assert_eq!(unique, (0..FRAMES).collect(), "none lost");
    assert!(served.terminate().status.success());
}

#[test]
fn shutdown_dead_letters_what_still_waits() {
    let dir = scratch("shutdown-dlq");
    let config = dir.join("agentwire.toml");
    // No deadline: frames would wait forever; the shutdown must not lose them.
    let socket = dir.join("agentwire.sock");
    let served = serve_with_config(
        &config,
        &socket,
        "ring_capacity_bytes = 4096\ndefer_capacity_bytes = 4096\ndefer_deadline_ms = 0\n",
    );
    let slow = Agent::builder("slow").socket(&socket).connect().unwrap();
    let mut sender = Agent::builder("sender").socket(&socket).connect().unwrap();
    for i in 0..90u64 {
        sender.send(slow.id(), &i.to_le_bytes()).unwrap();
    }
    let deadline = Instant::now() + WATCHDOG;
    while counter(&socket, "deferred_now") == 0 {
        assert!(Instant::now() < deadline, "watchdog: nothing deferred");
        std::thread::sleep(Duration::from_millis(5));
    }
    let waiting = counter(&socket, "deferred_now");
    assert!(served.terminate().status.success());
    let listed = Command::new(AGENTWIRE)
        .args(["dlq", "list", "--json", "--dlq"])
        .arg(dir.join("dlq.log"))
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["records"].as_array().unwrap().len() as u64, waiting);
}

#[test]
fn metrics_endpoint_serves_per_core_counters() {
    let dir = scratch("metrics");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let mut a = Agent::builder("a")
        .socket(&served.socket)
        .connect()
        .unwrap();
    let mut b = Agent::builder("b")
        .socket(&served.socket)
        .connect()
        .unwrap();
    for _ in 0..100 {
        a.send(b.id(), b"x").unwrap();
    }
    for _ in 0..100 {
        b.recv(Some(WATCHDOG)).unwrap().expect("watchdog");
    }
    let status = cli_json(&["status"], &served.socket);
    let url = status["info"]["metrics"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (code, body) = http_get(&url);
    assert_eq!(code, 200);
    let delivered = body
        .lines()
        .find(|l| l.starts_with("agentwire_frames_delivered_total{core="))
        .unwrap_or_else(|| panic!("no delivered counter in\n{body}"));
    let value: u64 = delivered.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 100, "{delivered}");
    for series in [
        "agentwire_agents{core=",
        "agentwire_duty_cycles_idle_total{core=",
        "agentwire_router_batches_total{core=",
        "agentwire_agent_rx_occupied_bytes{agent=",
        "agentwire_deferred_frames{core=",
        "agentwire_nacks_destination_full_total{core=",
        "agentwire_partition_busy_ratio{partition=\"streaming\"}",
        "agentwire_partition_cpus{partition=\"router\"} 1",
        "agentwire_agent_nacks_total{agent=",
    ] {
        assert!(body.contains(series), "{series} missing from\n{body}");
    }
    // Per agent, from the stats segment's agent slots (the shard publishes on its own
    // schedule: scrape until it shows all 100 frames).
    let (sent, got) = (
        format!(
            "agentwire_agent_frames_in_total{{agent=\"{}\",name=\"a\"}} 100",
            a.id()
        ),
        format!(
            "agentwire_agent_frames_out_total{{agent=\"{}\",name=\"b\"}} 100",
            b.id()
        ),
    );
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        let (_, body) = http_get(&url);
        if body.lines().any(|l| l == sent) && body.lines().any(|l| l == got) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: no {sent} and {got} in\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(status["idle_ratio"].as_f64().is_some());
    let (code, _) = http_get(&url.replace("/metrics", "/other"));
    assert_eq!(code, 404);
}

#[test]
fn no_metrics_flag_turns_the_endpoint_off() {
    let dir = scratch("nometrics");
    let served = Served::start(&dir.join("agentwire.sock"), &["--no-metrics"]);
    let status = cli_json(&["status"], &served.socket);
    assert!(status["info"]["metrics"]
        .as_str()
        .unwrap()
        .starts_with("off"));
}

#[test]
fn routes_lists_topics_and_capability_routes() {
    let dir = scratch("routes");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    let sub = Agent::builder("sub")
        .socket(&served.socket)
        .topic("prices")
        .capability("pricer", "1.4.0")
        .connect()
        .unwrap();
    let mut client = Agent::builder("client")
        .socket(&served.socket)
        .connect()
        .unwrap();
    client.anycast("pricer", "^1.2", b"quote?").unwrap();
    let routes = cli_json(&["routes"], &served.socket);
    let routes = routes["routes"].as_array().unwrap();
    let topic = routes.iter().find(|r| r["kind"] == "topic").unwrap();
    assert_eq!(topic["name"], "prices");
    assert_eq!(topic["agents"][0].as_u64(), Some(u64::from(sub.id())));
    let cap = routes.iter().find(|r| r["kind"] == "capability").unwrap();
    assert_eq!(
        (cap["name"].as_str(), cap["requirement"].as_str()),
        (Some("pricer"), Some("^1.2"))
    );
    assert_eq!(cap["agents"][0].as_u64(), Some(u64::from(sub.id())));
    let text = Command::new(AGENTWIRE)
        .args(["routes", "--socket"])
        .arg(&served.socket)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("prices"));
}

/// SIGHUP to the daemon, then waits until `applied` says the new config is in force.
fn reload(served: &Served, mut applied: impl FnMut() -> bool) {
    let pid = rustix::process::Pid::from_child(&served.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while !applied() {
        assert!(Instant::now() < deadline, "watchdog: reload never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_allow_list_keeping_the_clients_it_still_admits() {
    let dir = scratch("sighup");
    let config = dir.join("agentwire.toml");
    let socket = dir.join("agentwire.sock");
    let served = serve_with_config(&config, &socket, "defer_deadline_ms = 1000\n");
    let mut kept = Agent::builder("kept").socket(&socket).connect().unwrap();
    let uid = rustix::process::getuid().as_raw();
    // A reload that still admits our uid keeps the client connected and routing.
    std::fs::write(
        &config,
        format!(
            "allow_uids = [{uid}]\ndefer_deadline_ms = 500\nring_capacity_bytes = 8192\n\
             slow_subscriber = \"backpressure\"\n[rebalance]\nsample_ms = 500\n"
        ),
    )
    .unwrap();
    reload(&served, || {
        query_status(&socket)
            .unwrap()
            .info
            .iter()
            .any(|(k, v)| k == "reloads" && v == "1")
    });
    kept.send(kept.id(), b"still here").unwrap();
    assert_eq!(
        kept.recv(Some(WATCHDOG))
            .unwrap()
            .expect("watchdog")
            .payload(),
        b"still here"
    );
    // Only a uid that is not ours may connect from now on: new connections are refused and
    // the client of the uid dropped is removed (and logged; our uid may no longer ask for
    // the status, so the log is what shows it).
    std::fs::write(
        &config,
        format!("allow_uids = [{}]\ndefer_deadline_ms = 500\n", uid + 4242),
    )
    .unwrap();
    reload(&served, || {
        matches!(
            Agent::builder("late").socket(&socket).connect(),
            Err(ClientError::Refused { .. })
        )
    });
    // The status query is a control connection too: refused, and said so.
    let refused = Command::new(AGENTWIRE)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("refused the query") && said.contains("not on the allow-list"),
        "{said}"
    );
    let deadline = Instant::now() + WATCHDOG;
    let gone = loop {
        match kept.recv(Some(Duration::from_millis(50))) {
            Err(ClientError::Disconnected) => break true,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: the client never saw its removal"
        );
    };
    assert!(gone);
    let out = served.terminate();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each reload names what it applied and every changed key it did not. The first file's
    // allow-list is the default's (our uid), so only the deadline changed; the second left
    // the restart-only keys as the daemon started with them, so it names none.
    assert!(
        stderr.contains("SIGHUP: configuration re-read; applied: defer_deadline_ms\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SIGHUP: configuration re-read; applied: allow_uids\n"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("need a restart were not applied").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "need a restart were not applied: ring_capacity_bytes, slow_subscriber, rebalance"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("agent removed on reload: no longer on the allow-list"),
        "{stderr}"
    );
}

#[test]
fn a_hundred_agents_at_once() {
    let dir = scratch("hundred");
    let served = Served::start(&dir.join("agentwire.sock"), &[]);
    const AGENTS: usize = 100;
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            Agent::builder(&format!("agent-{i}"))
                .socket(&served.socket)
                .topic("all")
                .connect()
                .unwrap()
        })
        .collect();
    assert_eq!(query_status(&served.socket).unwrap().agents.len(), AGENTS);
    // Each agent sends to the next (a ring of unicast flows), then one publish reaches all.
    let ids: Vec<u32> = agents.iter().map(Agent::id).collect();
    for (i, agent) in agents.iter_mut().enumerate() {
        agent
            .send(ids[(i + 1) % AGENTS], &(i as u64).to_le_bytes())
            .unwrap();
    }
    agents[0].publish("all", b"to everyone").unwrap();
    for (i, agent) in agents.iter_mut().enumerate() {
        let mut unicast = None;
        let mut broadcast = false;
        while unicast.is_none() || !broadcast {
            let msg = agent.recv(Some(WATCHDOG)).unwrap().expect("watchdog");
            if msg.payload() == b"to everyone" {
                broadcast = true;
            } else {
                unicast = Some(u64::from_le_bytes(msg.payload().try_into().unwrap()));
            }
        }
        assert_eq!(unicast, Some(((i + AGENTS - 1) % AGENTS) as u64));
    }
    let status = cli_json(&["status"], &served.socket);
    assert_eq!(status["agents"], AGENTS);
    assert_eq!(status["counters"]["frames_rejected"], 0);
    drop(agents);
    let deadline = Instant::now() + WATCHDOG;
    while !query_status(&served.socket).unwrap().agents.is_empty() {
        assert!(Instant::now() < deadline, "watchdog: agents not reclaimed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn priority_lanes_under_saturation_favour_urgent_and_never_starve_the_rest() {
    let dir = scratch("lanes");
    let config = dir.join("agentwire.toml");
    // No deadline: the slow consumer's capacity is the contended resource and nothing is
    // dead-lettered. Lanes of ~900 frames stay backlogged across a scheduler time slice
    // (senders and consumer share one core on a 2-core machine).
    let socket = dir.join("agentwire.sock");
    let _served = serve_with_config(
        &config,
        &socket,
        "ring_capacity_bytes = 65536\ndefer_capacity_bytes = 4096\ndefer_deadline_ms = 0\n",
    );
    let mut consumer = Agent::builder("consumer")
        .socket(&socket)
        .connect()
        .unwrap();
    let to = consumer.id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = [0u8, 3u8]
        .into_iter()
        .map(|class| {
            let socket = socket.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut agent = Agent::builder(&format!("class-{class}"))
                    .socket(&socket)
                    .send_timeout(Duration::from_millis(5))
                    .connect()
                    .unwrap();
                let options = agentwire_shm::client::SendOptions {
                    priority: class,
                    ..Default::default()
                };
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut payload = [class; 9];
                    payload[1..].copy_from_slice(&seq.to_le_bytes());
                    match agent.send_with(FrameKind::Send, to, &payload, options) {
                        Ok(()) => seq += 1,
                        Err(ClientError::Backpressure(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                agent
            })
        })
        .collect();
    // Both senders are backlogged once the consumer's ring and deferral are full; from
    // then on the consumer reads slowly and counts what each class got.
    let deadline = Instant::now() + WATCHDOG;
    while counter(&socket, "deferred_now") == 0 {
        assert!(Instant::now() < deadline, "watchdog: never saturated");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = [0u64; 4];
    let mut next_seq = [None::<u64>; 4];
    // What filled the consumer's ring before saturation arrived in plain FIFO order: skip
    // it, then sample.
    const SKIP: u64 = 1_100;
    const SAMPLE: u64 = 2_000;
    let mut read = 0u64;
    while got.iter().sum::<u64>() < SAMPLE {
        let msg = consumer.recv(Some(WATCHDOG)).unwrap().expect("watchdog");
        let class = msg.payload()[0] as usize;
        let seq = u64::from_le_bytes(msg.payload()[1..9].try_into().unwrap());
        if let Some(expected) = next_seq[class] {
            assert_eq!(seq, expected, "class {class} out of order");
        }
        next_seq[class] = Some(seq + 1);
        read += 1;
        if read > SKIP {
            got[class] += 1;
        }
        if read % 16 == 0 {
            std::thread::sleep(Duration::from_micros(500)); // a slow consumer
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Keep reading so the senders' blocked sends return, then let them go.
    let drain_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain_until {
        let _ = consumer.recv(Some(Duration::from_millis(10))).unwrap();
    }
    for s in senders {
        s.join().unwrap();
    }
    let (urgent, low) = (got[0], got[3]);
    eprintln!("class 0: {urgent}, class 3: {low} of {SAMPLE} (policy 8:1 under saturation)");
    assert!(low > SAMPLE / 40, "class 3 starved: {got:?}");
    assert!(urgent > 3 * low, "class 0 not favoured: {got:?}");
}

#[test]
fn two_router_shards_on_two_cores_route_between_their_agents() {
    let dir = scratch("shards");
    let socket = dir.join("agentwire.sock");
    let served = serve_with_config(&dir.join("shards.toml"), &socket, "router_cpus = [0, 1]\n");
    // One executor thread per shard, named by core.
    let pid = served.child.id();
    let thread_names = || -> BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    // The socket answers before every shard's executor thread has started: wait for them
    // (bounded), then check.
    let started = Instant::now();
    let mut names = thread_names();
    while !(names.contains("aw-router-0") && names.contains("aw-router-1"))
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(10));
        names = thread_names();
    }
    assert!(
        names.contains("aw-router-0") && names.contains("aw-router-1"),
        "{names:?}"
    );
    let mut a = Agent::builder("a").socket(&socket).connect().unwrap();
    let mut b = Agent::builder("b").socket(&socket).connect().unwrap();
    let agents = cli_json(&["agents"], &socket);
    let shards: BTreeSet<u64> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(shards.len(), 2, "one agent per shard: {agents}");
    let n = 10_000u64;
    let b_id = b.id();
    let receiver = std::thread::spawn(move || {
        for expected in 0..n {
            let m = b.recv(Some(WATCHDOG)).unwrap().expect("watchdog");
            assert_eq!(m.payload(), expected.to_le_bytes());
        }
        b
    });
    for seq in 0..n {
        a.send(b_id, &seq.to_le_bytes()).unwrap();
    }
    let mut b = receiver.join().unwrap();
    b.send(a.id(), b"back").unwrap();
    assert_eq!(a.recv(Some(WATCHDOG)).unwrap().unwrap().payload(), b"back");
    let status = cli_json(&["status"], &socket);
    assert_eq!(status["shards"].as_array().unwrap().len(), 2, "{status}");
    assert!(counter(&socket, "frames_forwarded") > n);
    // Per-core series for both shards.
    let url = status["info"]["metrics"].as_str().unwrap().to_string();
    let (_, body) = http_get(&url);
    for core in ["0", "1"] {
        let series = format!("agentwire_frames_forwarded_total{{core=\"{core}\"}}");
        assert!(body.contains(&series), "{series} missing from\n{body}");
    }
    let out = served.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
