//! The authorization policy against agents that ask for more than their identity allows: a
//! name, capability or topic outside their `[[authorize]]` rule is refused at registration
//! (`NotPermitted`, the detail naming it), a subscribe or a publish (topic resolve) outside
//! it is answered with an error, every refusal is counted in `requests_not_permitted`,
//! what the rule allows works, a peer no rule matches gets nothing, and with no rules (the
//! default) everything is allowed. All tests run as one uid, so the policies match the
//! current uid; a second uid is shown, where the tests run as root, by a thread that
//! switches its own credentials before it connects.

use agentwire_router::policy::{Pattern, Policy, Rule};
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::control::RefuseReason;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

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
