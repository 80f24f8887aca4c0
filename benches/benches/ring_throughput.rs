//! Ring throughput: agentwire's variable-frame SPSC ring against a bare fixed 64-byte slot
//! ring (the physical-limit baseline), measured in the same run, in one process (two pinned
//! threads) and across two processes (fork, pinned), with batches of 1 and 32 on both sides.
//! Every frame carries a sequence number the consumer checks, so a broken ring fails the
//! bench instead of reporting a fast wrong number. Busy-polling on both sides.
//!
//! Run: `cargo bench -p agentwire-benches --bench ring_throughput`
//! (`cargo test --benches` runs each case once, as a smoke test.)

use agentwire_benches::flows::{run_agentwire, run_raw, Placement, Wake};
use agentwire_benches::{cpus, pin_to_cpu};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn ring_throughput(c: &mut Criterion) {
    let cpu_count = cpus();
    pin_to_cpu(0);
    if cpu_count < 2 {
        eprintln!("ring_throughput: fewer than 2 CPUs; producer and consumer share a core");
    }
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for placement in [Placement::Threads, Placement::Processes] {
        for batch in [1usize, 32] {
            let p = format!("{placement:?}").to_lowercase();
            group.bench_function(
                BenchmarkId::new(format!("raw_64B_slots/{p}"), format!("batch{batch}")),
                |b| b.iter_custom(|iters| run_raw(placement, batch as u64, iters.max(1))),
            );
            for size in [64usize, 1024] {
                group.bench_function(
                    BenchmarkId::new(format!("agentwire_{size}B/{p}"), format!("batch{batch}")),
                    |b| {
                        b.iter_custom(|iters| {
                            run_agentwire(placement, size, batch, iters.max(1), Wake::None)
                        })
                    },
                );
            }
            if matches!(placement, Placement::Processes) {
                for wake in [Wake::Asymmetric, Wake::Fenced] {
                    let name = format!("agentwire_64B_doorbell_{wake:?}/{p}").to_lowercase();
                    group.bench_function(BenchmarkId::new(name, format!("batch{batch}")), |b| {
                        b.iter_custom(|iters| {
                            run_agentwire(placement, 64, batch, iters.max(1), wake)
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, ring_throughput);
criterion_main!(benches);
