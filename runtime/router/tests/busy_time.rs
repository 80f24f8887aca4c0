//! A shard's timed duty cycles: one pass in `BUSY_SAMPLE_PASSES` is timed; those that
//! found work count as busy with the frames they handled, the others as idle. The core is
//! driven by hand here, so which passes were timed and busy is known exactly.

use agentwire_router::config::BUSY_SAMPLE_PASSES;
use agentwire_router::{RouterConfig, RouterControl};
use agentwire_shm::client::Agent;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(60);

#[test]
fn only_timed_busy_passes_count_with_their_frames() {
    let socket = std::env::temp_dir()
        .join(format!("aw-busy-time-{}", std::process::id()))
        .join("agentwire.sock");
    // Small batches: the frames below take at least 3 x BUSY_SAMPLE_PASSES consecutive
    // busy passes (16 frames a pass at most), so at least 3 of them are timed.
    let (control, mut core) = RouterControl::start(RouterConfig {
        batch_frames: 8,
        ..RouterConfig::new(socket.clone())
    })
    .unwrap();
    let stats = || control.stats();

    // Idle passes are never counted, timed or not.
    for _ in 0..BUSY_SAMPLE_PASSES * 10 {
        assert_eq!(core.do_work(), 0);
    }
    assert_eq!(stats().busy_passes_sampled.load(Ordering::Relaxed), 0);
    assert_eq!(stats().busy_ns_sampled.load(Ordering::Relaxed), 0);
    assert_eq!(stats().idle_passes_sampled.load(Ordering::Relaxed), 10);
    assert!(stats().idle_ns_sampled.load(Ordering::Relaxed) > 0);

    // Two agents register while the core runs by hand.
    let joining = std::thread::spawn({
        let socket = socket.clone();
        move || {
            let connect = |name: &str| Agent::builder(name).socket(&socket).connect().unwrap();
            (connect("busy-sender"), connect("busy-receiver"))
        }
    });
    let deadline = Instant::now() + WATCHDOG;
    while !joining.is_finished() || core.agents_served() < 2 {
        assert!(Instant::now() < deadline, "watchdog: registration");
        core.do_work();
    }
    let (mut sender, mut receiver) = joining.join().unwrap();

    // Frames that fit the default 256 KiB rings (64-byte records) and take many passes.
    const FRAMES: u64 = 48 * BUSY_SAMPLE_PASSES;
    for i in 0..FRAMES {
        sender.send(receiver.id(), &i.to_le_bytes()).unwrap();
    }
    let before = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (passes_0, frames_0) = (
        before(&stats().busy_passes_sampled),
        before(&stats().busy_frames_sampled),
    );
    let (mut timed_busy, mut timed_frames, mut routed) = (0u64, 0u64, 0u64);
    while routed < FRAMES {
        assert!(Instant::now() < deadline, "watchdog: routing");
        let frames = core.do_work() as u64;
        // `duty_cycles` counts every pass: it is the number of the pass just run.
        if stats().duty_cycles.load(Ordering::Relaxed) % BUSY_SAMPLE_PASSES == 0 && frames > 0 {
            timed_busy += 1;
            timed_frames += frames;
        }
        routed += frames;
    }
    assert_eq!(routed, FRAMES);
    assert!(
        timed_busy >= 3,
        "every 61 consecutive busy passes hold a timed one"
    );
    let s = stats();
    assert_eq!(
        s.busy_passes_sampled.load(Ordering::Relaxed) - passes_0,
        timed_busy
    );
    assert_eq!(
        s.busy_frames_sampled.load(Ordering::Relaxed) - frames_0,
        timed_frames
    );
    assert!(s.busy_ns_sampled.load(Ordering::Relaxed) > 0);
    for _ in 0..FRAMES {
        receiver
            .recv(Some(WATCHDOG))
            .unwrap()
            .expect("watchdog: a routed frame");
    }
    drop((sender, receiver));
    control.shutdown();
    core.finish();
}

/// A receiver that parks at once on an empty ring is woken by the shard for (nearly) every
/// frame sent while it sleeps; each wake is counted once.
#[test]
fn waking_a_parked_agent_is_counted() {
    use agentwire_shm::idle::IdleStrategy;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    let socket = std::env::temp_dir()
        .join(format!("aw-busy-wake-{}", std::process::id()))
        .join("agentwire.sock");
    let (control, core) = RouterControl::start(RouterConfig::new(socket.clone())).unwrap();
    let shard = std::thread::spawn(move || core.run(IdleStrategy::Spin));
    let mut sender = Agent::builder("wake-sender")
        .socket(&socket)
        .connect()
        .unwrap();
    let mut receiver = Agent::builder("wake-receiver")
        .socket(&socket)
        .idle(IdleStrategy::Park {
            park_timeout_ns: 1_000_000_000,
        })
        .connect()
        .unwrap();
    let receiver_id = receiver.id();
    let received = Arc::new(AtomicU64::new(0));
    const FRAMES: u64 = 50;
    let reading = std::thread::spawn({
        let received = received.clone();
        move || {
            while received.load(Ordering::Relaxed) < FRAMES {
                if receiver.recv(Some(WATCHDOG)).unwrap().is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let deadline = Instant::now() + WATCHDOG;
    for i in 0..FRAMES {
        // Each frame once the last one was read and the receiver had time to park again.
        std::thread::sleep(Duration::from_millis(2));
        sender.send(receiver_id, &i.to_le_bytes()).unwrap();
        while received.load(Ordering::Relaxed) <= i {
            assert!(Instant::now() < deadline, "watchdog: frame {i}");
            std::thread::yield_now();
        }
    }
    reading.join().unwrap();
    let woken = control.stats().agents_woken.load(Ordering::Relaxed);
    let delivered = control.stats().frames_delivered.load(Ordering::Relaxed);
    assert_eq!(delivered, FRAMES);
    // A receiver that had not parked yet needs no wake, so not every frame pays one; but
    // with 2 ms to park before each, one that never slept is out of the question.
    assert!((1..=FRAMES).contains(&woken), "{woken} wakes");
    // The timed passes' wakes are some of those, each with its ring's time.
    let timed_wakes = control.stats().busy_wakes_sampled.load(Ordering::Relaxed);
    let timed_wake_ns = control.stats().busy_wake_ns_sampled.load(Ordering::Relaxed);
    assert!(timed_wakes <= woken);
    assert_eq!(
        timed_wakes > 0,
        timed_wake_ns > 0,
        "{timed_wakes} {timed_wake_ns}"
    );
    drop(sender);
    control.shutdown();
    shard.join().unwrap();
}
