//! The daemon applies its partition plan: every executor thread pinned where the plan says
//! (read back with sched_getaffinity from outside the thread, and as the thread itself
//! reported it), engine jobs run on their partition's cores, and a busy partition borrows an
//! idle partition's core and gives it back, with every move in `agentwire status`.

use agentwire_runtime::config::Config;
use agentwire_runtime::daemon::{allowed_cpus, Daemon};
use agentwire_runtime::partitions::{thread_name, PartitionError, PartitionHost};
use agentwire_scheduler::machine::Machine;
use agentwire_scheduler::plan::{plan, PlanConfig};
use agentwire_scheduler::rebalance::RebalanceConfig;
use agentwire_shm::client::query_status;
use agentwire_shm::control::StatusReport;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Daemons in one process share thread names (`aw-router-1`); one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-part-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(dir: &Path, toml: &str) -> Daemon {
    let mut config = Config::parse(toml, "test").unwrap();
    config.metrics = false;
    config.dlq = agentwire_runtime::dlq::DlqConfig::new(dir.join("dlq.log"));
    Daemon::start(&config, dir.join("aw.sock")).unwrap()
}

/// Every thread of this process: (tid, name).
fn threads() -> Vec<(i32, String)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect()
}

/// The CPUs a thread may run on, as the kernel reports them to another thread.
fn affinity_of(tid: i32) -> Vec<usize> {
    let pid = rustix::process::Pid::from_raw(tid).unwrap();
    let set = rustix::thread::sched_getaffinity(Some(pid)).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect()
}

/// Waits (bounded) until `cond` holds on a fresh status report.
fn wait_status(socket: &Path, what: &str, cond: impl Fn(&StatusReport) -> bool) -> StatusReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = query_status(socket).unwrap();
        if cond(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {report:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_planned_executor_is_pinned_where_the_plan_says() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("pinning");
    let daemon = start(&dir, "");
    let p = daemon.plan().clone();
    assert_eq!(p.partitions.len(), 5, "router and four engines: {p:?}");
    let live = threads();
    let report = query_status(&dir.join("aw.sock")).unwrap();
    for partition in &p.partitions {
        let status = report
            .partitions
            .iter()
            .find(|s| s.name == partition.name)
            .unwrap_or_else(|| panic!("{} missing from status", partition.name));
        for cpu in partition.executor_pus() {
            let name = thread_name(&partition.name, cpu);
            let tids: Vec<i32> = live
                .iter()
                .filter(|(_, n)| *n == name)
                .map(|(t, _)| *t)
                .collect();
            assert!(!tids.is_empty(), "no thread {name}: {live:?}");
            for tid in tids {
                assert_eq!(affinity_of(tid), vec![cpu], "thread {name} ({tid})");
            }
            // The thread's own read-back, as `agentwire status` shows it.
            let e = status.executors.iter().find(|e| e.thread == name).unwrap();
            assert_eq!(
                (e.cpu, e.affinity.clone(), e.active),
                (cpu as u32, vec![cpu as u32], true)
            );
        }
    }
    // The checks ran and are in status, one line each.
    assert_eq!(daemon.checks().len(), 4);
    for check in ["isolation", "governor", "hugepages", "memlock"] {
        assert!(
            report
                .info
                .iter()
                .any(|(k, _)| *k == format!("check.{check}")),
            "{:?}",
            report.info
        );
    }
    daemon.join();
}

#[test]
fn engine_jobs_run_and_a_panicking_job_or_a_full_queue_is_refused_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed_cpus();
    let p = plan(
        &Machine::flat("test", &cpus),
        &PlanConfig::embedded_default(),
    )
    .unwrap();
    let host = PartitionHost::start(&p, RebalanceConfig::default(), 128 * 1024).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    host.submit("nas", Box::new(|| panic!("a job that fails")))
        .unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    host.submit(
        "nas",
        Box::new(move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        }),
    )
    .unwrap();
    // The executor survived the panic and now holds the blocking job.
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut accepted = 0u64;
    let refused = loop {
        let ran = ran.clone();
        match host.submit(
            "nas",
            Box::new(move || {
                ran.fetch_add(1, Ordering::Relaxed);
            }),
        ) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 10_000, "the queue is bounded");
    };
    assert!(
        matches!(refused, PartitionError::QueueFull { ref partition, capacity } if partition == "nas" && capacity == agentwire_runtime::partitions::PARTITION_QUEUE_JOBS),
        "{refused}"
    );
    assert_eq!(
        accepted,
        agentwire_runtime::partitions::PARTITION_QUEUE_JOBS as u64
    );
    assert!(matches!(
        host.submit("nope", Box::new(|| {})),
        Err(PartitionError::NoSuchPartition(_))
    ));
    release_tx.send(()).unwrap();
    // Shutdown runs what was accepted before it returns: no accepted job is lost.
    host.shutdown();
    assert_eq!(ran.load(Ordering::Relaxed), accepted);
    let (partitions, _) = host.status();
    let nas = partitions.iter().find(|s| s.name == "nas").unwrap();
    assert_eq!(nas.jobs_completed, accepted + 2);
    assert!(matches!(
        host.submit("nas", Box::new(|| {})),
        Err(PartitionError::ShuttingDown)
    ));
}

#[test]
fn a_busy_partition_borrows_an_idle_core_and_gives_it_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed_cpus();
    if cpus.len() < 2 || !cpus.contains(&0) || !cpus.contains(&1) {
        eprintln!("skipped: needs cpus 0 and 1 in this process's affinity (has {cpus:?})");
        return;
    }
    let dir = scratch("rebalance");
    // The router and streaming on cpu 0; twin planned on 0 and 1, so it may lend cpu 1.
    let daemon = start(
        &dir,
        "[plan]\nallow_sharing = true\nhousekeeping_cores = 0\n\
         [partitions.router]\ncpus = [0]\n\
         [partitions.streaming]\ncpus = [0]\npriority = 5\n\
         [partitions.twin]\ncpus = [0, 1]\npriority = 1\n\
         [rebalance]\nhigh_water = 0.6\nlow_water = 0.2\nmin_hold_ms = 300\nsample_ms = 50\n",
    );
    let socket = dir.join("aw.sock");
    let before = query_status(&socket).unwrap();
    let streaming = before
        .partitions
        .iter()
        .find(|p| p.name == "streaming")
        .unwrap();
    assert_eq!(
        (streaming.home_cpus.clone(), streaming.cpus.clone()),
        (vec![0], vec![0])
    );
    assert!(before.core_moves.is_empty());

    // Load: keep streaming's queue a few 2 ms jobs deep until it has borrowed cpu 1.
    let (submitted, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let feed = |until: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !until() {
            assert!(Instant::now() < deadline, "streaming never borrowed a core");
            while submitted.load(Ordering::Relaxed) - done.load(Ordering::Relaxed) < 8 {
                let done = done.clone();
                daemon
                    .partitions()
                    .submit(
                        "streaming",
                        Box::new(move || {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_millis(2) {
                                std::hint::spin_loop();
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }),
                    )
                    .unwrap();
                submitted.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    feed(&|| {
        daemon
            .partitions()
            .moves()
            .iter()
            .any(|m| m.to == "streaming")
    });
    let borrowed = wait_status(&socket, "the borrow in status", |r| {
        r.partitions
            .iter()
            .any(|p| p.name == "streaming" && p.cpus == vec![0, 1])
    });
    let m = &borrowed.core_moves[0];
    assert_eq!(
        (m.cpu, m.from.as_str(), m.to.as_str(), m.kind.as_str()),
        (1, "twin", "streaming", "borrow")
    );
    assert!(
        m.reason.contains("streaming busy") && m.reason.contains("> high water 0.60"),
        "{}",
        m.reason
    );
    let part = |r: &StatusReport, name: &str| {
        r.partitions
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .clone()
    };
    let twin = part(&borrowed, "twin");
    assert_eq!(twin.cpus, vec![0]);
    let lent = twin.executors.iter().find(|e| e.cpu == 1).unwrap();
    assert!(
        !lent.active,
        "twin's executor on cpu 1 is dormant while lent"
    );
    // The borrower's executor on cpu 1 was started for the loan, pinned there.
    let new = part(&borrowed, "streaming");
    let e = new.executors.iter().find(|e| e.cpu == 1).unwrap();
    assert_eq!(
        (e.thread.as_str(), e.affinity.clone(), e.active),
        ("aw-streaming-1", vec![1], true)
    );
    let tid = threads()
        .into_iter()
        .find(|(_, n)| n == "aw-streaming-1")
        .map(|(t, _)| t)
        .unwrap();
    assert_eq!(affinity_of(tid), vec![1]);

    // Load gone: below the low-water mark, after the hold time, the core goes back.
    let returned = wait_status(&socket, "the return", |r| {
        r.core_moves
            .iter()
            .any(|m| m.kind == "return" && m.cpu == 1)
    });
    let back = returned
        .core_moves
        .iter()
        .find(|m| m.kind == "return")
        .unwrap();
    assert_eq!(
        (back.from.as_str(), back.to.as_str()),
        ("streaming", "twin")
    );
    assert!(back.reason.contains("< low water 0.20"), "{}", back.reason);
    let settled = wait_status(&socket, "cpus back home", |r| {
        part(r, "streaming").cpus == vec![0] && part(r, "twin").cpus == vec![0, 1]
    });
    assert!(part(&settled, "twin").executors.iter().all(|e| e.active));
    assert!(
        !part(&settled, "streaming")
            .executors
            .iter()
            .find(|e| e.cpu == 1)
            .unwrap()
            .active
    );
    // Every job accepted ran exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) != submitted.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "jobs lost across the moves");
        std::thread::sleep(Duration::from_millis(5));
    }
    let total = submitted.load(Ordering::Relaxed);
    wait_status(&socket, "every job counted", |r| {
        part(r, "streaming").jobs_completed == total
    });
    daemon.join();
}
