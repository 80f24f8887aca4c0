//! The client's binding-facing receive path against the test router: a frame held in the
//! ring across calls (zero-copy, released by the next receive or explicitly), the stash
//! seen through it, and the wakeup descriptor an event loop waits on.

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn router(name: &str) -> TestRouter {
    let socket: PathBuf = std::env::temp_dir()
        .join(format!("aw-held-{}-{name}", std::process::id()))
        .join("agentwire.sock");
    TestRouter::start(TestRouterConfig::new(socket)).unwrap()
}

fn agent(r: &TestRouter, name: &str) -> Agent {
    Agent::builder(name)
        .socket(r.socket_path())
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap()
}

fn payload_of(frame: &[u8]) -> &[u8] {
    &frame[HEADER_BYTES..]
}

#[test]
fn a_held_frame_lies_in_the_mapped_segment_and_each_receive_releases_the_one_before() {
    let r = router("inplace");
    let mut sender = agent(&r, "sender");
    let mut receiver = agent(&r, "receiver");
    for i in 0u8..3 {
        sender.send(receiver.id(), &[i; 40]).unwrap();
    }
    let segment = receiver.segment().address_range();
    let frame = receiver.recv_held(WAIT).unwrap().unwrap();
    assert!(
        segment.contains(&(frame.as_ptr() as usize)),
        "received in place"
    );
    assert_eq!(payload_of(frame), [0; 40]);
    // Held across calls: the same bytes until released.
    assert_eq!(payload_of(receiver.held_frame().unwrap()), [0; 40]);
    // The next receive releases it first: each frame is seen once, in order.
    assert_eq!(
        payload_of(receiver.recv_held(WAIT).unwrap().unwrap()),
        [1; 40]
    );
    assert!(receiver.release_held());
    assert!(receiver.held_frame().is_none());
    assert!(!receiver.release_held(), "nothing held twice");
    // The borrowing receive also releases a held frame before it reads.
    receiver.try_recv_held().unwrap().unwrap();
    assert!(
        receiver.try_recv().unwrap().is_none(),
        "frame 2 was held, now released"
    );
}

#[test]
fn frames_stashed_by_a_request_come_out_held_and_a_held_frame_is_not_stashed_again() {
    let r = router("stash");
    let mut client = agent(&r, "client");
    let mut server = agent(&r, "server");
    let mut other = agent(&r, "other");
    other.send(client.id(), b"first").unwrap();
    other.send(client.id(), b"second").unwrap();
    // Hold "first" in the ring, then make a request: the request releases it (it was
    // handed out) and stashes "second" while it waits.
    assert_eq!(
        payload_of(client.recv_held(WAIT).unwrap().unwrap()),
        b"first"
    );
    let server_id = server.id();
    let answer = std::thread::spawn(move || {
        let request = server.recv(WAIT).unwrap().unwrap().to_owned();
        server.respond(request.header(), b"pong").unwrap();
    });
    let reply = client
        .request(server_id, b"ping", Duration::from_secs(10))
        .unwrap();
    answer.join().unwrap();
    assert_eq!(reply.payload(), b"pong");
    let stashed = client.try_recv_held().unwrap().unwrap();
    assert_eq!(
        FrameHeader::validate(stashed).unwrap().kind(),
        FrameKind::Send
    );
    assert_eq!(payload_of(stashed), b"second");
    assert!(
        client.try_recv_held().unwrap().is_none(),
        "nothing seen twice"
    );
}

/// Whether `fd` is readable now (poll with a zero timeout).
fn readable(fd: i32, wait: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    // SAFETY: the agent owns the descriptor and outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = rustix::event::Timespec::try_from(wait).unwrap();
    poll(&mut fds, Some(&timeout)).unwrap() == 1
}

#[test]
fn the_wakeup_fd_fires_for_a_frame_after_arming_and_clears() {
    let r = router("wakeup");
    let mut sender = agent(&r, "sender");
    let mut receiver = agent(&r, "receiver");
    let fd = receiver.wakeup_fd().as_raw_fd();
    assert!(!receiver.arm_wakeup(), "nothing waiting yet");
    sender.send(receiver.id(), b"ring").unwrap();
    // Readability within the watchdog, not a timing assertion.
    assert!(
        readable(fd, Duration::from_secs(10)),
        "the frame rang the fd"
    );
    receiver.clear_wakeup();
    assert!(!readable(fd, Duration::ZERO), "cleared");
    // Armed again with the frame unread: arming reports it instead of waiting.
    assert!(receiver.arm_wakeup());
    assert_eq!(
        payload_of(receiver.try_recv_held().unwrap().unwrap()),
        b"ring"
    );
    // A held frame is not news; a frame behind it is.
    assert!(!receiver.arm_wakeup());
    sender.send(receiver.id(), b"next").unwrap();
    assert!(readable(fd, Duration::from_secs(10)));
    assert!(receiver.arm_wakeup());
    receiver.ensure_connected().unwrap();
}

#[test]
fn ensure_connected_reports_a_dead_daemon() {
    let r = router("dead");
    let mut a = agent(&r, "a");
    a.ensure_connected().unwrap();
    drop(r);
    let err = a.ensure_connected().unwrap_err();
    assert!(
        matches!(err, agentwire_shm::client::ClientError::Disconnected),
        "{err}"
    );
}

#[test]
fn an_agent_can_move_to_another_thread() {
    // The bindings hand an agent to whichever thread calls them (and Python releases the
    // GIL while one waits): the agent must be Send.
    fn assert_send<T: Send>() {}
    assert_send::<Agent>();
}
