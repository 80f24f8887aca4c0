//! Routing under criterion: 64-byte messages through the daemon's router (started in this
//! process, router pinned to cpu 1 and spinning, one thread on cpu 0 playing both agents, as
//! the `routed` bench does), request/response round trips, and the bare 64-byte-slot ring
//! cross-thread as the same-run baseline (measured first, before the router spins on cpu 1).
//! Every message's sequence number (or correlation id) is checked.
//!
//! Run: `cargo bench -p agentwire-benches --bench routing` (`cargo test --benches` runs each
//! case once, as a smoke test).

use agentwire_benches::flows::{run_raw, Placement};
use agentwire_benches::routed::{connect, routed_round_trips, routed_throughput, start_daemon};
use agentwire_benches::{pin_to_cpu, set_affinity};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn routing(c: &mut Criterion) {
    let allowed = agentwire_runtime::planning::affinity_mask().unwrap_or_default();
    pin_to_cpu(0);
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare_ring_64B_batch32", |b| {
        b.iter_custom(|iters| run_raw(Placement::Threads, 32, iters.max(1)))
    });
    // The daemon plans over this thread's mask: hand every CPU back, then pin again.
    set_affinity(&allowed);
    let (daemon, socket) = start_daemon("routing", 1);
    pin_to_cpu(0);
    let (mut sender, mut receiver) = (
        connect(&socket, "routing-sender"),
        connect(&socket, "routing-receiver"),
    );
    group.bench_function("routed_unicast_64B", |b| {
        b.iter_custom(|iters| {
            let messages = iters.max(1);
            let rate = routed_throughput(&mut sender, &mut receiver, messages);
            Duration::from_secs_f64(messages as f64 / rate)
        })
    });
    group.bench_function("routed_request_response_64B", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            routed_round_trips(&mut sender, &mut receiver, iters.max(1));
            start.elapsed()
        })
    });
    group.finish();
    drop((sender, receiver));
    daemon.join();
}

criterion_group!(benches, routing);
criterion_main!(benches);
