//! The authorization policy against agents that ask for more than their identity allows: a
//! name, capability or topic outside their `[[authorize]]` rule is refused at registration
//! (`NotPermitted`, the detail naming it), a subscribe or a publish (topic resolve) outside
//! it is answered with an error, every refusal is counted in `requests_not_permitted`,
//! what the rule allows works, a peer no rule matches gets nothing, and with no rules (the
//! default) everything is allowed. On the data path a frame reaches only what the sender's
//! rule allows (nacked `NotPermitted` and counted in `frames_not_permitted` otherwise, a
//! topic id never resolved included), and a reload removes agents the new allow-list or
//! policy no longer admits. All tests run as one uid, so the policies match the
//! current uid; a second uid is shown, where the tests run as root, by a thread that
//! switches its own credentials before it connects.

use agentwire_router::policy::{Pattern, Policy, Rule};
use agentwire_router::server::AllowList;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError, SendOptions};
use agentwire_shm::control::{NackReason, RefuseReason};
use agentwire_shm::wire::FrameKind;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a frame may take to arrive before a test fails (a watchdog, not a timing).
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("aw-authz-{}-{name}", std::process::id()))
        .join("agentwire.sock")
}

fn me() -> u32 {
    rustix::process::getuid().as_raw()
}

fn patterns(list: &[&str]) -> Vec<Pattern> {
    list.iter().map(|p| Pattern::new(p).unwrap()).collect()
}

/// This uid may register `ocr-*` offering `ocr`, subscribe to `alerts.*` and publish to
/// `sensor.*`; a second rule for another uid (which never matches here) comes first, to show
/// that only the matching rule counts.
fn locked_down() -> Policy {
    Policy {
        rules: vec![
            Rule {
                uids: vec![me().wrapping_add(4242)],
                names: patterns(&["*"]),
                capabilities: patterns(&["*"]),
                subscribe: patterns(&["*"]),
                publish: patterns(&["*"]),
                ..Rule::default()
            },
            Rule {
                uids: vec![me()],
                names: patterns(&["ocr-*"]),
                capabilities: patterns(&["ocr"]),
                subscribe: patterns(&["alerts.*"]),
                publish: patterns(&["sensor.*"]),
                ..Rule::default()
            },
        ],
    }
}

fn start(name: &str, policy: Policy) -> TestRouter {
    TestRouter::start(TestRouterConfig {
        policy,
        ..TestRouterConfig::new(socket(name))
    })
    .unwrap()
}

fn not_permitted(router: &TestRouter) -> u64 {
    router
        .stats()
        .requests_not_permitted
        .load(Ordering::Relaxed)
}

/// The refusal's detail, failing unless the registration was refused `NotPermitted`.
fn refused(result: Result<Agent, ClientError>) -> String {
    match result {
        Err(ClientError::Refused {
            reason: RefuseReason::NotPermitted,
            detail,
        }) => detail,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("admitted"),
    }
}

#[test]
fn a_name_capability_or_topic_outside_the_rule_is_refused_at_registration() {
    let router = start("register", locked_down());
    let path = router.socket_path().to_path_buf();
    let detail = refused(Agent::builder("billing").socket(&path).connect());
    assert!(detail.contains("register the name \"billing\""), "{detail}");
    assert!(
        detail.contains("ocr-*"),
        "the detail says what is allowed: {detail}"
    );
    let detail = refused(
        Agent::builder("ocr-1")
            .capability("ocr", "1.0.0")
            .capability("payments", "1.0.0")
            .socket(&path)
            .connect(),
    );
    assert!(detail.contains("capability \"payments\""), "{detail}");
    let detail = refused(
        Agent::builder("ocr-1")
            .topic("secrets.keys")
            .socket(&path)
            .connect(),
    );
    assert!(
        detail.contains("subscribe to topic \"secrets.keys\""),
        "{detail}"
    );
    assert_eq!(not_permitted(&router), 3);
    assert_eq!(router.agent_count(), 0);
    // What the rule allows is admitted.
    let ok = Agent::builder("ocr-1")
        .capability("ocr", "1.0.0")
        .topic("alerts.fire")
        .socket(&path)
        .connect();
    assert!(ok.is_ok(), "{:?}", ok.err());
    assert_eq!(not_permitted(&router), 3);
}

#[test]
fn subscribe_and_publish_outside_the_rule_are_answered_with_an_error_and_counted() {
    let router = start("topics", locked_down());
    let path = router.socket_path().to_path_buf();
    let mut pub_agent = Agent::builder("ocr-pub").socket(&path).connect().unwrap();
    let mut sub_agent = Agent::builder("ocr-sub").socket(&path).connect().unwrap();
    match sub_agent.subscribe("payments.done") {
        Err(ClientError::Protocol(detail)) => {
            assert!(
                detail.contains("subscribe to topic \"payments.done\""),
                "{detail}"
            )
        }
        other => panic!("subscribe outside the rule: {other:?}"),
    }
    match pub_agent.publish("alerts.fire", b"x") {
        Err(ClientError::Protocol(detail)) => {
            assert!(
                detail.contains("publish to topic \"alerts.fire\""),
                "{detail}"
            )
        }
        other => panic!("publish outside the rule: {other:?}"),
    }
    assert_eq!(not_permitted(&router), 2);
    // Allowed: the subscriber hears what is published to a topic both may use.
    let mut watcher = Agent::builder("ocr-watch").socket(&path).connect().unwrap();
    assert!(watcher.subscribe("alerts.fire").is_ok());
    assert!(pub_agent.topic_id("sensor.temp").is_ok());
    sub_agent.subscribe("alerts.smoke").unwrap();
    assert_eq!(not_permitted(&router), 2);
    // Both agents are still registered after their refusals.
    assert_eq!(router.agent_count(), 3);
}

#[test]
fn a_peer_no_rule_matches_gets_nothing() {
    let other = Policy {
        rules: vec![Rule {
            uids: vec![me().wrapping_add(4242)],
            names: patterns(&["*"]),
            ..Rule::default()
        }],
    };
    let router = start("stranger", other);
    let path = router.socket_path().to_path_buf();
    let detail = refused(Agent::builder("anything").socket(&path).connect());
    assert!(detail.contains("no [[authorize]] rule matches"), "{detail}");
    assert_eq!(not_permitted(&router), 1);
}

#[test]
fn the_open_default_allows_everything() {
    let router = start("open", Policy::open());
    let path = router.socket_path().to_path_buf();
    let mut a = Agent::builder("billing")
        .capability("payments", "1.0.0")
        .topic("secrets.keys")
        .socket(&path)
        .connect()
        .unwrap();
    a.subscribe("anything").unwrap();
    a.topic_id("anything.else").unwrap();
    // Names are not owned without a policy: a second agent may take the same one.
    Agent::builder("billing").socket(&path).connect().unwrap();
    assert_eq!(not_permitted(&router), 0);
}

/// Switches this thread (alone: the raw syscall, not libc's process-wide `setresuid`) to
/// `uid`, so a socket it connects carries that uid in SO_PEERCRED.
fn become_uid(uid: u32) {
    // SAFETY: setresuid takes three integers; the raw syscall changes only this thread's
    // credentials, which die with it.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
}

#[test]
fn with_a_policy_a_name_another_uid_holds_is_refused() {
    if me() != 0 {
        eprintln!("skipped: switching a thread to another uid needs root");
        return;
    }
    let other_uid = 65534;
    let everything = |uid| Rule {
        uids: vec![uid],
        names: patterns(&["*"]),
        ..Rule::default()
    };
    let policy = Policy {
        rules: vec![everything(0), everything(other_uid)],
    };
    let mut config = TestRouterConfig::new(socket("owned"));
    config.policy = policy;
    config.allow.uids.push(other_uid);
    let router = TestRouter::start(config).unwrap();
    let path = router.socket_path().to_path_buf();
    // The other uid must reach the socket: open its directory and the socket to everyone.
    use std::os::unix::fs::PermissionsExt;
    let world = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(path.parent().unwrap(), world.clone()).unwrap();
    std::fs::set_permissions(&path, world).unwrap();
    let _mine = Agent::builder("shared-name")
        .socket(&path)
        .connect()
        .unwrap();
    // A second agent of the same uid may take the name (replicas behind one name).
    let _replica = Agent::builder("shared-name")
        .socket(&path)
        .connect()
        .unwrap();
    let theirs = std::thread::spawn(move || {
        become_uid(other_uid);
        let taken = Agent::builder("shared-name").socket(&path).connect();
        let own = Agent::builder("their-name").socket(&path).connect();
        (taken.map(|_| ()), own.map(|_| ()))
    });
    let (taken, own) = theirs.join().unwrap();
    match taken {
        Err(ClientError::Refused {
            reason: RefuseReason::NotPermitted,
            detail,
        }) => assert!(detail.contains("uid 0 holds that name"), "{detail}"),
        other => panic!("a name another uid holds: {other:?}"),
    }
    assert!(own.is_ok(), "{:?}", own.err());
    assert_eq!(not_permitted(&router), 1);
}

/// The next frame `agent` receives must be a nack `NotPermitted`; its detail.
fn nacked_not_permitted(agent: &mut Agent) -> String {
    let nack = agent.recv(WAIT).unwrap().expect("a nack").to_owned();
    let body = nack.nack_body().expect("a nack");
    assert_eq!(
        body.reason,
        NackReason::NotPermitted as u32,
        "{}",
        body.detail
    );
    body.detail
}

/// The next frame `agent` receives: its payload (failing on a nack or nothing).
fn received(agent: &mut Agent) -> Vec<u8> {
    let msg = agent.recv(WAIT).unwrap().expect("a frame").to_owned();
    assert!(msg.nack_body().is_none(), "{:?}", msg.nack_body());
    msg.payload().to_vec()
}

fn frames_not_permitted(router: &TestRouter) -> u64 {
    router.stats().frames_not_permitted.load(Ordering::Relaxed)
}

/// This uid may register anything, but publish only to `sensor.*` and send only to `db-*`
/// and `ocr-ok`.
fn sends_restricted() -> Policy {
    Policy {
        rules: vec![Rule {
            uids: vec![me()],
            names: patterns(&["*"]),
            capabilities: patterns(&["*"]),
            subscribe: patterns(&["*"]),
            publish: patterns(&["sensor.*"]),
            send: patterns(&["db-*", "ocr-ok"]),
            ..Rule::default()
        }],
    }
}

#[test]
fn a_frame_reaches_only_what_the_senders_rule_allows() {
    let router = start("send", sends_restricted());
    let path = router.socket_path().to_path_buf();
    let connect = |name: &str| Agent::builder(name).socket(&path).connect().unwrap();
    let mut client = connect("client");
    let mut db = connect("db-1");
    let mut secret = Agent::builder("secret")
        .capability("ocr", "1.0.0")
        .socket(&path)
        .connect()
        .unwrap();
    let mut ocr = Agent::builder("ocr-ok")
        .capability("ocr", "1.0.0")
        .socket(&path)
        .connect()
        .unwrap();
    let mut listener = connect("listener");
    listener.subscribe("sensor.temp").unwrap();
    // Unicast: to an agent the rule names, and to one it does not.
    client.send(db.id(), b"to db").unwrap();
    assert_eq!(received(&mut db), b"to db");
    client.send(secret.id(), b"to secret").unwrap();
    let detail = nacked_not_permitted(&mut client);
    assert!(
        detail.contains(&format!("sending to agent {}", secret.id())),
        "{detail}"
    );
    // A publish to a topic id the sender never resolved (the control path would refuse
    // `secrets.keys`): refused on the data path too.
    let secret_topic = secret.subscribe("secrets.keys").unwrap();
    let options = SendOptions::default();
    client
        .send_with(FrameKind::Publish, secret_topic, b"leak", options)
        .unwrap();
    let detail = nacked_not_permitted(&mut client);
    assert!(
        detail.contains(&format!("publishing to topic {secret_topic}")),
        "{detail}"
    );
    // Nothing reached `secret` (both frames were refused before the nacks were written).
    assert!(secret.try_recv().unwrap().is_none());
    client.publish("sensor.temp", b"21.5").unwrap();
    assert_eq!(received(&mut listener), b"21.5");
    // Anycast picks only among the agents the sender may reach.
    for i in 0u8..6 {
        client.anycast("ocr", "^1", &[i]).unwrap();
    }
    for i in 0u8..6 {
        assert_eq!(received(&mut ocr), [i]);
    }
    assert!(secret.try_recv().unwrap().is_none());
    // A service answers only the clients its rule names: `client` is not among `db-1`'s.
    let request = {
        client
            .send_with(FrameKind::Request, db.id(), b"q", options)
            .unwrap();
        *db.recv(WAIT).unwrap().expect("the request").header()
    };
    db.respond(&request, b"a").unwrap();
    let detail = nacked_not_permitted(&mut db);
    assert!(
        detail.contains(&format!("sending to agent {}", client.id())),
        "{detail}"
    );
    assert_eq!(frames_not_permitted(&router), 3);
}

#[test]
fn a_route_with_no_agent_the_sender_may_reach_is_refused() {
    let router = start("route", sends_restricted());
    let path = router.socket_path().to_path_buf();
    let mut client = Agent::builder("client").socket(&path).connect().unwrap();
    let _secret = Agent::builder("secret")
        .capability("ocr", "1.0.0")
        .feature(7)
        .socket(&path)
        .connect()
        .unwrap();
    client.anycast("ocr", "^1", b"x").unwrap();
    let detail = nacked_not_permitted(&mut client);
    assert!(detail.contains("any agent on capability route"), "{detail}");
    client.send_feature(7, b"x").unwrap();
    let detail = nacked_not_permitted(&mut client);
    assert!(detail.contains("any agent serving feature 7"), "{detail}");
    assert_eq!(frames_not_permitted(&router), 2);
}

#[test]
fn an_agent_the_rule_names_is_reachable_as_soon_as_it_registers() {
    let router = start("fresh", sends_restricted());
    let path = router.socket_path().to_path_buf();
    let mut client = Agent::builder("client").socket(&path).connect().unwrap();
    // Each new agent is sent to at once: the shard's send rights may predate it, and the
    // frame waits for a rebuild rather than being refused.
    for i in 0..20 {
        let mut db = Agent::builder(&format!("db-{i}"))
            .socket(&path)
            .connect()
            .unwrap();
        client.send(db.id(), b"hello").unwrap();
        assert_eq!(received(&mut db), b"hello");
    }
    assert_eq!(frames_not_permitted(&router), 0);
}

/// Polls `done` until it holds (a watchdog of 10 s, not a timing).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_reload_removes_the_agents_it_no_longer_admits() {
    let router = start("reload", Policy::open());
    let path = router.socket_path().to_path_buf();
    let mut db = Agent::builder("db-1").socket(&path).connect().unwrap();
    let mut rogue = Agent::builder("rogue")
        .capability("payments", "1.0.0")
        .socket(&path)
        .connect()
        .unwrap();
    let mut reader = Agent::builder("reader").socket(&path).connect().unwrap();
    reader.subscribe("secrets.keys").unwrap();
    // The new policy lets this uid keep `db-1` (no capabilities, sends to db-*), but not
    // offer `payments` or subscribe to `secrets.*`.
    let narrowed = Policy {
        rules: vec![Rule {
            uids: vec![me()],
            names: patterns(&["*"]),
            subscribe: patterns(&["public.*"]),
            send: patterns(&["db-*"]),
            ..Rule::default()
        }],
    };
    let revoked = || router.stats().agents_revoked.load(Ordering::Relaxed);
    router
        .control()
        .reload(AllowList::current_user(), narrowed, None);
    wait_until("the reload to remove two agents", || revoked() == 2);
    assert_eq!(router.agent_count(), 1);
    // The one left sends under the new rule: to db-* only.
    let mut client = Agent::builder("client").socket(&path).connect().unwrap();
    client.send(db.id(), b"still here").unwrap();
    assert_eq!(received(&mut db), b"still here");
    db.send(client.id(), b"not allowed").unwrap();
    nacked_not_permitted(&mut db);
    // A removed agent's next call finds its connection closed.
    assert!(rogue.subscribe("public.x").is_err());
    // An allow-list without this uid closes every connection it has.
    router
        .control()
        .reload(AllowList::nobody(), Policy::open(), None);
    wait_until("the reload to remove everyone", || {
        router.agent_count() == 0
    });
    assert_eq!(revoked(), 4);
}

#[test]
fn a_reload_that_only_narrows_sending_takes_effect_without_removing_anyone() {
    let router = start("narrow", Policy::open());
    let path = router.socket_path().to_path_buf();
    let connect = |name: &str| Agent::builder(name).socket(&path).connect().unwrap();
    let (mut db, mut other, mut client) = (connect("db-1"), connect("other"), connect("client"));
    client.send(other.id(), b"before").unwrap();
    assert_eq!(received(&mut other), b"before");
    // Everything these agents hold stays allowed: only whom they may send to narrows.
    let narrowed = Policy {
        rules: vec![Rule {
            uids: vec![me()],
            names: patterns(&["*"]),
            send: patterns(&["db-*"]),
            ..Rule::default()
        }],
    };
    router
        .control()
        .reload(AllowList::current_user(), narrowed, None);
    // Probes until the shard builds its send rights from the new policy (the reload is
    // applied by the control loop, after the call returns): each probe is either delivered
    // or refused, and one must be refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.send(other.id(), b"probe").unwrap();
        let delivered = loop {
            if other.try_recv().unwrap().is_some() {
                break true;
            }
            if frames_not_permitted(&router) > 0 {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "the narrowed policy never applied"
            );
            std::thread::yield_now();
        };
        if !delivered {
            break;
        }
    }
    nacked_not_permitted(&mut client);
    client.send(db.id(), b"allowed").unwrap();
    assert_eq!(received(&mut db), b"allowed");
    assert_eq!(router.stats().agents_revoked.load(Ordering::Relaxed), 0);
    assert_eq!(router.agent_count(), 3);
}
