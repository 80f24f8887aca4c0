//! The persisted dead-letter queue against hostile senders (security issue 15, finding 6):
//! a real router (`TestRouter`) whose shard appends to a real queue file through the
//! daemon's sink ([`DlqSink`]), and real agents. Attackers flood an agent that never reads,
//! so their frames expire into the queue; one sender cannot take more than its quota, an
//! honest sender's dead letters are still kept, the attackers' frames past their quota are
//! dropped, counted and nacked `DeadLetterRefused`, and a purge frees the quota again.
//! Counters and watchdogs, no timing assertions.

use agentwire_router::status::RouterObserver;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
use agentwire_runtime::dlq_sink::DlqSink;
use agentwire_shm::client::{decode_nack, Agent, ClientError};
use agentwire_shm::control::NackReason;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::{FrameHeader, FrameKind};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(30);
const RECORDS_MAX: u64 = 100;
const RECORDS_PER_SENDER_MAX: u64 = 20;
const ATTACKERS: usize = 4;
const ATTACK_FRAMES_EACH: u64 = 100;
const HONEST_FRAMES: u64 = 15;

fn counter(observer: &RouterObserver, name: &str) -> u64 {
    observer
        .counter(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Nacks received so far: (dead-lettered, refused for the sender's quota, other).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Nacks {
    dead_lettered: u64,
    over_quota: u64,
    other: u64,
}

fn take_nacks(agent: &mut Agent, nacks: &mut Nacks) {
    loop {
        let body = match agent.try_recv() {
            Ok(Some(msg)) if msg.header().kind() == FrameKind::Nack => {
                decode_nack(msg.payload()).expect("a nack body")
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(ClientError::Disconnected) => return,
            Err(e) => panic!("{e}"),
        };
        if body.reason == NackReason::DestinationFull as u32
            && body.detail.contains("dead-lettered as record")
        {
            nacks.dead_lettered += 1;
        } else if body.reason == NackReason::DeadLetterRefused as u32
            && body.detail.contains("quota")
        {
            nacks.over_quota += 1;
        } else {
            eprintln!("unexpected nack: {body:?}");
            nacks.other += 1;
        }
    }
}

/// Records in the queue file by sender.
fn records_of(config: &DlqConfig, source: u32) -> u64 {
    let dlq = DeadLetterQueue::open(config.clone()).unwrap();
    let read = dlq
        .read_all()
        .unwrap()
        .iter()
        .filter(|l| FrameHeader::peek(&l.frame).map(|h| h.source()) == Some(source))
        .count() as u64;
    assert_eq!(
        dlq.held_by(source).records,
        read,
        "the quota counts the file"
    );
    read
}

/// A router (one shard, small rings and deferrals, a 10 ms deadline) whose shard appends to
/// the queue of `dlq_config` through the daemon's sink.
fn start_router(dir: &std::path::Path, dlq_config: &DlqConfig) -> TestRouter {
    let sink_config = dlq_config.clone();
    TestRouter::start_with_dead_letters(
        TestRouterConfig {
            ring_capacity_bytes: 4096,
            defer_capacity_bytes: 4096,
            defer_deadline: Some(Duration::from_millis(10)),
            idle: IdleStrategy::Spin,
            ..TestRouterConfig::new(dir.join("agentwire.sock"))
        },
        move |_| {
            Box::new(DlqSink::new(
                DeadLetterQueue::open(sink_config.clone()).unwrap(),
            ))
        },
    )
    .unwrap()
}

#[test]
fn one_sender_cannot_take_more_than_its_quota_and_honest_dead_letters_are_kept() {
    let dir = std::env::temp_dir().join(format!("aw-dlq-quota-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dlq_config = DlqConfig {
        records_max: RECORDS_MAX,
        records_per_sender_max: RECORDS_PER_SENDER_MAX,
        ..DlqConfig::new(dir.join("dlq.log"))
    };
    let router = start_router(&dir, &dlq_config);
    let observer = router.control().observer();
    let connect = |name: &str| {
        Agent::builder(name)
            .socket(router.socket_path())
            .idle(IdleStrategy::Spin)
            .ring_capacity(256 * 1024)
            .send_timeout(Duration::from_secs(10))
            .connect()
            .unwrap()
    };
    // Never reads: its 4 KiB ring fills at once, then its deferral, then frames expire.
    let deaf = Agent::builder("deaf")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let mut attackers: Vec<Agent> = (0..ATTACKERS)
        .map(|i| connect(&format!("attacker-{i}")))
        .collect();
    let mut attacker_nacks = vec![Nacks::default(); ATTACKERS];
    let payload = [0xA5u8; 200];
    for _ in 0..ATTACK_FRAMES_EACH {
        for (attacker, nacks) in attackers.iter_mut().zip(&mut attacker_nacks) {
            attacker.send(deaf.id(), &payload).unwrap();
            take_nacks(attacker, nacks);
        }
    }
    let attack_total = ATTACK_FRAMES_EACH * ATTACKERS as u64;
    let settled = |expected: u64| {
        counter(&observer, "deferred_now") == 0
            && counter(&observer, "frames_delivered")
                + counter(&observer, "frames_dead_lettered")
                + counter(&observer, "frames_dropped")
                == expected
    };
    wait_until(
        "every attacking frame delivered, dead-lettered or dropped",
        || settled(attack_total),
    );
    let delivered = counter(&observer, "frames_delivered");
    // The attackers are done; an honest sender's frames for the same full agent expire too.
    let mut honest = connect("honest");
    for i in 0..HONEST_FRAMES {
        honest.send(deaf.id(), &i.to_le_bytes()).unwrap();
    }
    wait_until("every honest frame dead-lettered", || {
        settled(attack_total + HONEST_FRAMES)
    });
    assert_eq!(
        counter(&observer, "frames_delivered"),
        delivered,
        "the deaf agent's ring was full"
    );

    // The queue: each attacker holds exactly its quota, the honest sender every frame.
    for attacker in &attackers {
        assert_eq!(
            records_of(&dlq_config, attacker.id()),
            RECORDS_PER_SENDER_MAX
        );
    }
    assert_eq!(records_of(&dlq_config, honest.id()), HONEST_FRAMES);

    // Counters: what was not kept was dropped, for the quota, and nacked.
    let kept = RECORDS_PER_SENDER_MAX * ATTACKERS as u64 + HONEST_FRAMES;
    let dropped = attack_total + HONEST_FRAMES - delivered - kept;
    assert_eq!(counter(&observer, "frames_dead_lettered"), kept);
    assert_eq!(counter(&observer, "frames_dropped"), dropped);
    assert_eq!(counter(&observer, "dead_letters_over_quota"), dropped);
    assert_eq!(counter(&observer, "nacks_dead_letter_refused"), dropped);

    // Every sender learns the fate of each frame that was not delivered.
    wait_until("every attacker's nack arrived", || {
        for (attacker, nacks) in attackers.iter_mut().zip(&mut attacker_nacks) {
            take_nacks(attacker, nacks);
        }
        attacker_nacks
            .iter()
            .map(|n| n.dead_lettered + n.over_quota + n.other)
            .sum::<u64>()
            >= attack_total - delivered
    });
    for nacks in &attacker_nacks {
        assert_eq!(nacks.other, 0);
        assert_eq!(nacks.dead_lettered, RECORDS_PER_SENDER_MAX, "{nacks:?}");
    }
    let over_quota: u64 = attacker_nacks.iter().map(|n| n.over_quota).sum();
    assert_eq!(over_quota, dropped);
    let mut honest_nacks = Nacks::default();
    wait_until("every honest nack arrived", || {
        take_nacks(&mut honest, &mut honest_nacks);
        honest_nacks.dead_lettered + honest_nacks.over_quota + honest_nacks.other >= HONEST_FRAMES
    });
    assert_eq!(
        honest_nacks,
        Nacks {
            dead_lettered: HONEST_FRAMES,
            ..Nacks::default()
        }
    );

    // `agentwire dlq purge` (another handle on the file) frees every quota: the router's
    // handle sees the new file at its next append.
    let mut admin = DeadLetterQueue::open(dlq_config.clone()).unwrap();
    assert_eq!(admin.purge().unwrap(), kept);
    let again = 5;
    for _ in 0..again {
        attackers[0].send(deaf.id(), &payload).unwrap();
    }
    wait_until("the attacker's new frames dead-lettered", || {
        settled(attack_total + HONEST_FRAMES + again)
    });
    assert_eq!(records_of(&dlq_config, attackers[0].id()), again);
    assert_eq!(counter(&observer, "frames_dropped"), dropped);
    drop(deaf);
}

/// Records in the queue file by owner uid: (this uid's, without an owner).
fn records_by_owner(config: &DlqConfig, uid: u32) -> (u64, u64) {
    let dlq = DeadLetterQueue::open(config.clone()).unwrap();
    let letters = dlq.read_all().unwrap();
    let mine = letters.iter().filter(|l| l.owner_uid == Some(uid)).count() as u64;
    let none = letters.iter().filter(|l| l.owner_uid.is_none()).count() as u64;
    assert_eq!(
        dlq.held_by_uid(uid).records,
        mine,
        "the quota counts the file"
    );
    (mine, none)
}

#[test]
fn one_user_cannot_get_around_the_quota_by_connecting_again_as_new_agents() {
    const PER_UID_MAX: u64 = 30;
    const ROUNDS: u64 = 4;
    const FRAMES_EACH: u64 = 25;
    let dir = std::env::temp_dir().join(format!("aw-dlq-uid-quota-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dlq_config = DlqConfig {
        records_max: RECORDS_MAX,
        records_per_sender_max: RECORDS_PER_SENDER_MAX,
        records_per_uid_max: PER_UID_MAX,
        ..DlqConfig::new(dir.join("dlq.log"))
    };
    let router = start_router(&dir, &dlq_config);
    let observer = router.control().observer();
    let deaf = Agent::builder("deaf")
        .socket(router.socket_path())
        .connect()
        .unwrap();
    let payload = [0x5Au8; 200];
    let mut ids = Vec::new();
    // Each round a new agent (a new id, a fresh per-agent quota) of the same uid sends its
    // frames and leaves at once: its frames expire after it left, so their uid comes from
    // what the registry remembers of departed agents.
    for round in 0..ROUNDS {
        let mut agent = Agent::builder(&format!("again-{round}"))
            .socket(router.socket_path())
            .idle(IdleStrategy::Spin)
            .ring_capacity(256 * 1024)
            .send_timeout(Duration::from_secs(10))
            .connect()
            .unwrap();
        for _ in 0..FRAMES_EACH {
            agent.send(deaf.id(), &payload).unwrap();
        }
        ids.push(agent.id());
        drop(agent);
    }
    let sent = ROUNDS * FRAMES_EACH;
    wait_until("every frame delivered, dead-lettered or dropped", || {
        counter(&observer, "deferred_now") == 0
            && counter(&observer, "frames_delivered")
                + counter(&observer, "frames_dead_lettered")
                + counter(&observer, "frames_dropped")
                == sent
    });
    let uid = rustix::process::getuid().as_raw();
    let (mine, without_owner) = records_by_owner(&dlq_config, uid);
    assert_eq!(without_owner, 0, "every record names its sender's uid");
    assert_eq!(
        mine, PER_UID_MAX,
        "the uid holds its quota, not the per-agent quota times its agents"
    );
    for id in ids {
        assert!(records_of(&dlq_config, id) <= RECORDS_PER_SENDER_MAX);
    }
    let delivered = counter(&observer, "frames_delivered");
    assert_eq!(counter(&observer, "frames_dead_lettered"), PER_UID_MAX);
    assert_eq!(
        counter(&observer, "dead_letters_over_quota"),
        sent - delivered - PER_UID_MAX
    );
    drop(deaf);
}
