//! The C binding's per-call overhead against the Rust client, in the same run on the same
//! in-process test router: a 64-byte send, and a try_recv on an empty ring. The C side is
//! called through the extern "C" functions of the rlib (the same code the cdylib exports;
//! cross-library call overhead, a few ns of PLT indirection, is not included).
//!
//! The receiver of the sends is drained by a background thread, so neither sender ever
//! meets a full ring. Every call's status is checked, so a broken binding fails the bench.
//!
//! Run: `cargo bench -p agentwire-capi --bench per_call` (`cargo test --benches` runs each
//! once as a smoke test).

use agentwire::*;
use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::Agent;
use agentwire_shm::idle::IdleStrategy;
use criterion::{criterion_group, criterion_main, Criterion};
use std::ffi::CString;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAYLOAD_BYTES: usize = 64;

/// A C agent handle, closed when dropped.
struct CAgent(*mut aw_agent);

impl CAgent {
    fn connect(socket: &std::path::Path, name: &str) -> Self {
        let name = CString::new(name).unwrap();
        let socket = CString::new(socket.to_str().unwrap()).unwrap();
        let mut options = std::ptr::null_mut();
        let mut agent = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings, writable out-pointers; the handles are used by this
        // thread only and freed once.
        unsafe {
            assert_eq!(
                aw_options_new(name.as_ptr(), &mut options),
                aw_status::AW_OK
            );
            assert_eq!(
                aw_options_set_socket(options, socket.as_ptr()),
                aw_status::AW_OK
            );
            assert_eq!(
                aw_options_set_idle(options, AW_IDLE_SPIN, 0, 0),
                aw_status::AW_OK
            );
            assert_eq!(aw_connect(options, &mut agent), aw_status::AW_OK);
            aw_options_free(options);
        }
        Self(agent)
    }
}

impl Drop for CAgent {
    fn drop(&mut self) {
        // SAFETY: a live handle, closed once.
        unsafe { aw_close(self.0) };
    }
}

fn rust_agent(socket: &std::path::Path, name: &str) -> Agent {
    Agent::builder(name)
        .socket(socket)
        .idle(IdleStrategy::Spin)
        .connect()
        .unwrap()
}

fn per_call(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("aw-capi-bench-{}", std::process::id()));
    let router = TestRouter::start(TestRouterConfig::new(dir.join("agentwire.sock"))).unwrap();
    let socket = router.socket_path().to_path_buf();

    // The sink every send goes to, drained by its own thread.
    let mut sink = rust_agent(&socket, "sink");
    let sink_id = sink.id();
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = sink.recv_batch(256, |_, _| {}).unwrap();
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };

    let payload = [7u8; PAYLOAD_BYTES];
    let mut rust_sender = rust_agent(&socket, "rust-sender");
    let c_sender = CAgent::connect(&socket, "c-sender");
    let mut group = c.benchmark_group("per_call");
    group.bench_function("send_64B/rust", |b| {
        b.iter(|| rust_sender.send(sink_id, black_box(&payload)).unwrap())
    });
    group.bench_function("send_64B/c", |b| {
        b.iter(|| {
            // SAFETY: a live handle used by this thread; 64 readable bytes.
            let status = unsafe {
                aw_send(
                    c_sender.0,
                    sink_id,
                    black_box(payload.as_ptr().cast()),
                    PAYLOAD_BYTES,
                )
            };
            assert_eq!(status, aw_status::AW_OK);
        })
    });
    // The Rust sender once more, after the C one: the spread between the two Rust runs is
    // the drift of the machine and the router across a run, the floor for any difference.
    group.bench_function("send_64B/rust_again", |b| {
        b.iter(|| rust_sender.send(sink_id, black_box(&payload)).unwrap())
    });

    // Nobody sends to these two: every try_recv finds an empty ring.
    let mut rust_idle = rust_agent(&socket, "rust-idle");
    let c_idle = CAgent::connect(&socket, "c-idle");
    group.bench_function("try_recv_empty/rust", |b| {
        b.iter(|| assert!(rust_idle.try_recv().unwrap().is_none()))
    });
    let mut msg = std::mem::MaybeUninit::<aw_message>::uninit();
    group.bench_function("try_recv_empty/c", |b| {
        b.iter(|| {
            // SAFETY: a live handle used by this thread; `msg` is writable.
            let status = unsafe { aw_try_recv(c_idle.0, msg.as_mut_ptr()) };
            assert_eq!(status, aw_status::AW_NO_MESSAGE);
        })
    });
    group.finish();

    stop.store(true, Ordering::Relaxed);
    drainer.join().unwrap();
    drop((rust_sender, c_sender, rust_idle, c_idle));
    router.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = per_call
}
criterion_main!(benches);
