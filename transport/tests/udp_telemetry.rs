//! UDP telemetry against a real router on loopback: frames from a `TelemetrySender` reach a
//! local subscriber in order, hand-made sequences are accounted exactly, garbage is counted
//! and survived, and feature frames reach the endpoint registered for the feature.

mod common;

use agentwire_router::endpoint::EndpointKind;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::control::Registration;
use agentwire_shm::telemetry::{DatagramPrefix, TelemetrySender, PREFIX_BYTES};
use agentwire_shm::wire::{FrameHeader, FrameKind, HEADER_BYTES};
use agentwire_transport::udp::{UdpTelemetry, UdpTelemetryConfig};
use common::{eventually, local_agent, loopback, socket_path};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "metrics";
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

fn start(test: &str) -> (TestRouter, UdpTelemetry) {
    let router = TestRouter::start(TestRouterConfig::new(socket_path(test))).unwrap();
    let mut config = UdpTelemetryConfig::new(loopback());
    config.topic = TOPIC.into();
    let udp = UdpTelemetry::start(config, router.control().endpoint_registrar()).unwrap();
    (router, udp)
}

/// A datagram by hand: `sequence` of `source`, one publish frame carrying `payload`.
fn datagram(source: u64, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; PREFIX_BYTES + HEADER_BYTES + payload.len()];
    DatagramPrefix::new(source, sequence, 1).write_to(&mut d);
    FrameHeader::new(FrameKind::Publish, 0, 0, payload.len() as u32)
        .write_to(&mut d[PREFIX_BYTES..]);
    d[PREFIX_BYTES + HEADER_BYTES..].copy_from_slice(payload);
    d
}

fn raw_sender(udp: &UdpTelemetry) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(udp.local_addr()).unwrap();
    s
}

#[test]
fn ten_thousand_published_frames_reach_a_subscriber_in_order_and_loss_is_exact() {
    const FRAMES: u64 = 10_000;
    const MARKER: u64 = u64::MAX;
    let (router, udp) = start("udp-ten-thousand");
    let mut agent = local_agent(&router, "watcher");
    agent.subscribe(TOPIC).unwrap();

    let addr = udp.local_addr();
    let seen_marker = Arc::new(AtomicBool::new(false));
    let seen = seen_marker.clone();
    let sender = std::thread::spawn(move || {
        let mut sender = TelemetrySender::connect(addr).unwrap();
        let mut datagrams = 0;
        for i in 0..FRAMES {
            sender.publish(&i.to_le_bytes()).unwrap();
            if sender.sequence_next() != datagrams {
                datagrams = sender.sequence_next();
                // Bursts of 16 datagrams: within the socket's receive buffer.
                if datagrams % 16 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        sender.flush().unwrap();
        let data_datagrams = sender.sequence_next();
        // A marker after the data (repeated until seen: any datagram may be lost) makes
        // every loss among the data visible: a gap shows when the next datagram arrives.
        while !seen.load(Ordering::Relaxed) {
            sender.publish(&MARKER.to_le_bytes()).unwrap();
            sender.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        (data_datagrams, sender.sequence_next(), sender.stats())
    });

    let mut data_received = 0u64;
    let mut frames_received = 0u64;
    let mut last: Option<u64> = None;
    loop {
        let m = agent
            .recv(Some(RECV_TIMEOUT))
            .unwrap()
            .expect("frames keep coming");
        assert_eq!(m.header().kind(), FrameKind::Publish);
        frames_received += 1;
        let value = u64::from_le_bytes(m.payload().try_into().unwrap());
        if value == MARKER {
            break;
        }
        assert!(
            last.is_none_or(|l| value > l),
            "in order, no repeat: {value} after {last:?}"
        );
        last = Some(value);
        data_received += 1;
    }
    seen_marker.store(true, Ordering::Relaxed);
    let (data_datagrams, datagrams_sent, sender_stats) = sender.join().unwrap();
    assert_eq!(sender_stats.datagrams_failed, 0);
    // Every datagram sent is received or counted lost (the last one, sent after the marker
    // was seen, is waited for).
    eventually("every datagram accounted", || {
        let s = udp.stats();
        s.datagrams_received + s.datagrams_lost == datagrams_sent
            && s.frames_forwarded + s.frames_dropped_full >= frames_received
    });
    let stats = udp.stats();
    eprintln!("{FRAMES} frames in {data_datagrams} datagrams: {data_received} received; {stats:?}");
    assert_eq!(stats.datagrams_malformed, 0);
    assert_eq!(stats.datagrams_duplicate, 0);
    if stats.datagrams_lost == 0 && stats.frames_dropped_full == 0 {
        assert_eq!(data_received, FRAMES, "no loss counted: everything arrived");
    } else {
        // 25 frames of 56 bytes fill a 1472-byte datagram: a lost datagram lost 25 at most.
        let missing = FRAMES - data_received;
        assert!(
            missing <= 25 * stats.datagrams_lost + stats.frames_dropped_full,
            "{missing} frames missing, more than the counted loss explains: {stats:?}"
        );
        assert!(missing > 0, "loss counted but nothing missing: {stats:?}");
    }
    assert!(stats.frames_forwarded >= frames_received);
    assert_eq!(stats.sources_active, 1);
}

#[test]
fn hand_made_sequences_count_loss_reordering_and_duplicates_exactly() {
    let (router, udp) = start("udp-sequences");
    let mut agent = local_agent(&router, "watcher");
    agent.subscribe(TOPIC).unwrap();
    let socket = raw_sender(&udp);
    for sequence in [1u64, 2, 4, 3, 3, 7] {
        socket
            .send(&datagram(0xfeed, sequence, &sequence.to_le_bytes()))
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = agent.recv(Some(RECV_TIMEOUT)).unwrap().expect("a frame");
        got.push(u64::from_le_bytes(m.payload().try_into().unwrap()));
    }
    assert_eq!(got, vec![1, 2, 4, 3, 7], "the duplicate 3 is not forwarded");
    eventually("six datagrams accounted", || {
        let s = udp.stats();
        s.datagrams_received + s.datagrams_duplicate == 6 && s.frames_forwarded == 5
    });
    let s = udp.stats();
    assert_eq!(
        (
            s.datagrams_received,
            s.datagrams_lost,
            s.datagrams_reordered,
            s.datagrams_duplicate,
            s.datagrams_late
        ),
        (5, 2, 1, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.frames_forwarded, 5);
    assert!(agent
        .recv(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
}

#[test]
fn garbage_datagrams_are_counted_malformed_and_valid_ones_still_flow() {
    let (router, udp) = start("udp-garbage");
    let mut agent = local_agent(&router, "watcher");
    agent.subscribe(TOPIC).unwrap();
    let socket = raw_sender(&udp);
    let mut bad_frame = datagram(1, 0, b"abc");
    bad_frame[PREFIX_BYTES + 6] = 99; // an unknown frame kind
    let mut truncated = datagram(1, 0, b"abcdefgh");
    truncated.truncate(truncated.len() - 3);
    let mut wrong_count = datagram(1, 0, b"abc");
    wrong_count[6] = 2;
    let garbage: [&[u8]; 6] = [
        b"",
        b"AWT1",
        &[0xffu8; 100],
        &bad_frame,
        &truncated,
        &wrong_count,
    ];
    for g in garbage {
        socket.send(g).unwrap();
    }
    // A frame of a kind that is not forwarded, in a valid datagram: refused, not malformed.
    let mut request = datagram(1, 0, b"req");
    request[PREFIX_BYTES + 6] = FrameKind::Request as u8;
    socket.send(&request).unwrap();
    socket.send(&datagram(1, 1, b"after")).unwrap();
    let m = agent.recv(Some(RECV_TIMEOUT)).unwrap().expect("a frame");
    assert_eq!(m.payload(), b"after");
    // The counters are written after the frames went in: wait for them.
    eventually("the garbage and the datagrams counted", || {
        let s = udp.stats();
        s.datagrams_malformed == garbage.len() as u64
            && s.datagrams_received == 2
            && s.frames_forwarded == 1
    });
    let s = udp.stats();
    assert_eq!(s.datagrams_received, 2);
    assert_eq!(s.datagrams_lost, 0);
    assert_eq!(s.frames_refused, 1);
    assert_eq!(s.frames_forwarded, 1);
}

#[test]
fn a_feature_frame_reaches_the_endpoint_registered_for_the_feature() {
    const FEATURE: u32 = 0x7e1e;
    let (router, udp) = start("udp-feature");
    let identity = Registration {
        name: "engine".into(),
        features: vec![FEATURE],
        ..Default::default()
    };
    let mut engine = router
        .control()
        .register_endpoint(identity, EndpointKind::InProcess)
        .unwrap();
    let mut sender = TelemetrySender::connect(udp.local_addr()).unwrap();
    sender.send_feature(FEATURE, b"event-1").unwrap();
    sender.send_feature(FEATURE, b"event-2").unwrap();
    sender.flush().unwrap();
    let mut got = Vec::new();
    eventually("both feature frames", || {
        engine
            .read(16, |header, payload| {
                assert_eq!(header.feature_id.get(), FEATURE);
                got.push(payload.to_vec());
            })
            .unwrap();
        got.len() == 2
    });
    assert_eq!(got, vec![b"event-1".to_vec(), b"event-2".to_vec()]);
    eventually("the frames counted", || udp.stats().frames_forwarded == 2);
}
