//! Engine partitions' executors: one glommio `LocalExecutor` per planned core, pinned
//! (`Placement::Fixed`) and named by role and core (`aw-streaming-3`), each running the
//! partition's jobs from a bounded queue; a rebalancing thread (`aw-rebalance`) that
//! samples every partition's busy ratio and moves cores between partitions
//! ([`agentwire_scheduler::rebalance`]).
//!
//! ## How a core moves between executors
//!
//! An executor is bound to one (partition, CPU) pair for its whole life; what moves is which
//! executor on a CPU is *active*. When partition B borrows CPU 5 from partition A:
//! 1. A's executor on CPU 5 is marked dormant. It finishes the job it is running (jobs run
//!    to completion; none is interrupted or lost), then stops taking A's jobs and sleeps.
//!    A's queue is still served by A's other cores (a partition never lends its last one).
//! 2. B's executor on CPU 5 is marked active, started first if B never ran there (pinned to
//!    CPU 5, named `aw-B-5`, its affinity read back). It takes jobs from B's queue at once.
//! 3. The move is logged and kept (the last 32) for `agentwire status`.
//!
//! Returning the core is the same in reverse. Between the two steps both executors may run
//! a job on the core for as long as A's last job lasts; no job is dropped or run twice.
//! Dormant executors keep their thread (a later move is a flag flip, not a thread start)
//! and sleep in 20 ms timer waits.
//!
//! ```no_run
//! use agentwire_runtime::partitions::PartitionHost;
//! use agentwire_scheduler::{hwloc, plan::{plan, PlanConfig}, rebalance::RebalanceConfig};
//! let machine = hwloc::load(None).unwrap();
//! let p = plan(&machine, &PlanConfig::embedded_default()).unwrap();
//! let host = PartitionHost::start(&p, RebalanceConfig::default(), 128 * 1024).unwrap();
//! host.submit("streaming", Box::new(|| println!("ran on an engine core"))).unwrap();
//! host.shutdown();
//! ```

use agentwire_scheduler::plan::Plan;
use agentwire_scheduler::rebalance::{CoreMove, RebalanceConfig, Rebalancer};
use agentwire_shm::control::{CoreMoveStatus, ExecutorStatus, PartitionStatus};
use crossbeam_queue::ArrayQueue;
use glommio::{LocalExecutorBuilder, Placement};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Queues `job` on `partition` of the host `shared`.
fn submit_to(shared: &HostShared, partition: &str, job: Job) -> Result<(), PartitionError> {
    if shared.stop.load(Ordering::Relaxed) {
        return Err(PartitionError::ShuttingDown);
    }
    let cell = shared
        .partitions
        .iter()
        .find(|p| p.name == partition)
        .ok_or_else(|| PartitionError::NoSuchPartition(partition.to_string()))?;
    cell.queue.push(job).map_err(|_| {
        cell.rejected.fetch_add(1, Ordering::Relaxed);
        PartitionError::QueueFull {
            partition: partition.to_string(),
            capacity: PARTITION_QUEUE_JOBS,
        }
    })
}

/// Submits jobs to a [`PartitionHost`]'s partitions; cloneable and `Send`.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<HostShared>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").finish_non_exhaustive()
    }
}

impl Submitter {
    /// As [`PartitionHost::submit`].
    ///
    /// ```no_run
    /// # fn f(s: &agentwire_runtime::partitions::Submitter) {
    /// s.submit("nas", Box::new(|| {})).unwrap();
    /// # }
    /// ```
    pub fn submit(&self, partition: &str, job: Job) -> Result<(), PartitionError> {
        submit_to(&self.shared, partition, job)
    }

    /// Whether the host is shutting down (no job is taken any more).
    ///
    /// ```no_run
    /// # fn f(s: &agentwire_runtime::partitions::Submitter) {
    /// if s.stopping() { return; }
    /// # }
    /// ```
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The cores `partition` runs on now: its home cores not lent out plus those it
    /// borrowed (0 for an unknown partition). An engine sizes its shards by it.
    ///
    /// ```no_run
    /// # fn f(s: &agentwire_runtime::partitions::Submitter) {
    /// let shards = s.active_cores("streaming").max(1);
    /// # }
    /// ```
    pub fn active_cores(&self, partition: &str) -> usize {
        let Some(index) = index_of(&self.shared, partition) else {
            return 0;
        };
        self.shared
            .executors
            .lock()
            .map(|executors| {
                executors
                    .iter()
                    .filter(|e| e.partition == index && e.state.active.load(Ordering::Relaxed))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A unit of engine work: runs to completion on one of the partition's cores.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs a partition's queue holds before [`PartitionHost::submit`] refuses more.
pub const PARTITION_QUEUE_JOBS: usize = 4096;
/// Core moves kept for `agentwire status`.
pub const CORE_MOVES_KEPT: usize = 32;
/// How long a dormant executor sleeps between looks at its flag.
pub const DORMANT_PARK: Duration = Duration::from_millis(20);
/// The longest an idle active executor sleeps between looks at its queue (it starts at
/// 50 µs after a job and doubles).
pub const IDLE_PARK_MAX: Duration = Duration::from_millis(10);
const IDLE_PARK_MIN: Duration = Duration::from_micros(50);
/// How long start waits for an executor thread to come up.
pub const EXECUTOR_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an executor could not start, or a job was refused.
///
/// ```
/// let e = agentwire_runtime::partitions::PartitionError::NoSuchPartition("x".into());
/// assert!(e.to_string().contains("x"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// glommio could not start the executor (memlock, CPU not allowed, ...).
    #[error("starting the {partition} executor on cpu {cpu}: {detail}")]
    Executor {
        /// The partition.
        partition: String,
        /// The CPU.
        cpu: usize,
        /// What failed.
        detail: String,
    },
    /// No such engine partition in the plan.
    #[error("no engine partition named {0:?} in the plan")]
    NoSuchPartition(String),
    /// The partition's queue is full (the caller keeps the work and retries later).
    #[error("partition {partition}'s queue is full ({capacity} jobs)")]
    QueueFull {
        /// The partition.
        partition: String,
        /// Its queue's capacity.
        capacity: usize,
    },
    /// The host is shutting down.
    #[error("the partition executors are shutting down")]
    ShuttingDown,
}

/// One executor thread's shared state: its flag, its busy time, its affinity read back.
///
/// ```
/// let s = agentwire_runtime::partitions::ExecutorState::new("aw-router-1", 1);
/// assert!(s.status().affinity.is_empty());
/// ```
#[derive(Debug)]
pub struct ExecutorState {
    thread: String,
    cpu: usize,
    active: AtomicBool,
    /// Nanoseconds spent in finished jobs.
    busy_ns: AtomicU64,
    /// Start of the running job, ns since the host's epoch (`u64::MAX`: none running).
    job_started_ns: AtomicU64,
    affinity: Mutex<Vec<usize>>,
}

impl ExecutorState {
    /// State for an executor named `thread` pinned to `cpu`, active.
    ///
    /// ```
    /// let s = agentwire_runtime::partitions::ExecutorState::new("aw-twin-0", 0);
    /// assert!(s.status().active);
    /// ```
    pub fn new(thread: &str, cpu: usize) -> Self {
        Self {
            thread: thread.to_string(),
            cpu,
            active: AtomicBool::new(true),
            busy_ns: AtomicU64::new(0),
            job_started_ns: AtomicU64::new(u64::MAX),
            affinity: Mutex::new(Vec::new()),
        }
    }

    /// Called on the executor's own thread once it runs: names the thread and records the
    /// affinity mask the kernel reports for it.
    ///
    /// ```
    /// let s = agentwire_runtime::partitions::ExecutorState::new("aw-doc-0", 0);
    /// s.on_thread_start();
    /// assert!(!s.status().affinity.is_empty());
    /// ```
    pub fn on_thread_start(&self) {
        if let Ok(name) = std::ffi::CString::new(self.thread.as_str()) {
            let _ = rustix::thread::set_name(&name);
        }
        // Empty when unreadable: status must show what the kernel says, never a guess.
        let mask = crate::planning::affinity_mask().unwrap_or_default();
        *self.affinity.lock().expect("affinity lock") = mask;
    }

    /// The executor as `agentwire status` shows it.
    ///
    /// ```
    /// let s = agentwire_runtime::partitions::ExecutorState::new("aw-nas-2", 2);
    /// assert_eq!(s.status().cpu, 2);
    /// ```
    pub fn status(&self) -> ExecutorStatus {
        ExecutorStatus {
            thread: self.thread.clone(),
            cpu: self.cpu as u32,
            affinity: self
                .affinity
                .lock()
                .expect("affinity lock")
                .iter()
                .map(|&c| c as u32)
                .collect(),
            active: self.active.load(Ordering::Relaxed),
        }
    }

    /// Busy nanoseconds so far, the running job's share included. Reads the total before
    /// the running mark (the executor clears the mark before adding to the total), so a
    /// job that ends meanwhile is counted at most once.
    fn busy_total_ns(&self, now_ns: u64) -> u64 {
        let done = self.busy_ns.load(Ordering::Acquire);
        let started = self.job_started_ns.load(Ordering::Acquire);
        if started == u64::MAX {
            done
        } else {
            done + now_ns.saturating_sub(started)
        }
    }
}

/// `aw-<role>-<cpu>`, cut to the 15 bytes Linux keeps of a thread name.
///
/// ```
/// assert_eq!(agentwire_runtime::partitions::thread_name("streaming", 12), "aw-streaming-12");
/// assert_eq!(agentwire_runtime::partitions::thread_name("a-very-long-name", 3), "aw-a-very-lon-3");
/// ```
pub fn thread_name(role: &str, cpu: usize) -> String {
    let suffix = format!("-{cpu}");
    let room = 15usize.saturating_sub(3 + suffix.len());
    let role: String = role.chars().take(room).collect();
    format!("aw-{role}{suffix}")
}

struct PartitionCell {
    name: String,
    priority: u8,
    home: Vec<usize>,
    queue: ArrayQueue<Job>,
    completed: AtomicU64,
    panicked: AtomicU64,
    rejected: AtomicU64,
    busy_permille: AtomicU32,
}

struct ExecutorCell {
    partition: usize,
    state: Arc<ExecutorState>,
    handle: Option<glommio::ExecutorJoinHandle<()>>,
}

struct HostShared {
    epoch: Instant,
    partitions: Vec<PartitionCell>,
    executors: Mutex<Vec<ExecutorCell>>,
    rebalancer: Mutex<Rebalancer>,
    moves: Mutex<VecDeque<CoreMove>>,
    stop: AtomicBool,
    io_memory_bytes: usize,
}

impl HostShared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// The engine partitions' executors and the rebalancing thread.
pub struct PartitionHost {
    shared: Arc<HostShared>,
    controller: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PartitionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .shared
            .partitions
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        f.debug_struct("PartitionHost")
            .field("partitions", &names)
            .finish()
    }
}

impl PartitionHost {
    /// Starts one executor per core of every engine partition of `plan` (every partition
    /// but the router, which the daemon runs itself) and, when `rebalance.enabled`, the
    /// rebalancing thread.
    ///
    /// ```no_run
    /// # use agentwire_runtime::partitions::PartitionHost;
    /// # use agentwire_scheduler::{machine::Machine, plan::{plan, PlanConfig}, rebalance::RebalanceConfig};
    /// let p = plan(&Machine::flat("vm", &[0, 1]), &PlanConfig::embedded_default()).unwrap();
    /// let host = PartitionHost::start(&p, RebalanceConfig::default(), 128 * 1024)?;
    /// assert_eq!(host.executor_threads().len(), 4);
    /// # Ok::<(), agentwire_runtime::partitions::PartitionError>(())
    /// ```
    pub fn start(
        plan: &Plan,
        rebalance: RebalanceConfig,
        io_memory_bytes: usize,
    ) -> Result<Self, PartitionError> {
        let engines: Vec<_> = plan
            .partitions
            .iter()
            .filter(|p| p.name != "router")
            .collect();
        let rebalancer = Rebalancer::from_plan(plan, rebalance.clone());
        let shared = Arc::new(HostShared {
            epoch: Instant::now(),
            partitions: engines
                .iter()
                .map(|p| PartitionCell {
                    name: p.name.clone(),
                    priority: p.priority,
                    home: p.executor_pus(),
                    queue: ArrayQueue::new(PARTITION_QUEUE_JOBS),
                    completed: AtomicU64::new(0),
                    panicked: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    busy_permille: AtomicU32::new(0),
                })
                .collect(),
            executors: Mutex::new(Vec::new()),
            rebalancer: Mutex::new(rebalancer),
            moves: Mutex::new(VecDeque::with_capacity(CORE_MOVES_KEPT)),
            stop: AtomicBool::new(false),
            io_memory_bytes,
        });
        let host = Self {
            shared,
            controller: Mutex::new(None),
        };
        for (index, partition) in host.shared.partitions.iter().enumerate() {
            for &cpu in &partition.home {
                let cell = spawn_executor(&host.shared, index, cpu)?;
                host.shared
                    .executors
                    .lock()
                    .expect("executors lock")
                    .push(cell);
            }
        }
        if rebalance.enabled && host.shared.partitions.len() > 1 {
            let shared = host.shared.clone();
            let interval = rebalance.sample_interval();
            let handle = std::thread::Builder::new()
                .name("aw-rebalance".into())
                .spawn(move || rebalance_loop(&shared, interval))
                .map_err(|e| PartitionError::Executor {
                    partition: "rebalance".into(),
                    cpu: 0,
                    detail: e.to_string(),
                })?;
            *host.controller.lock().expect("controller lock") = Some(handle);
        }
        Ok(host)
    }

    /// Queues a job on a partition; one of its active executors runs it.
    ///
    /// ```no_run
    /// # use agentwire_runtime::partitions::PartitionHost;
    /// # fn f(host: &PartitionHost) {
    /// host.submit("twin", Box::new(|| {})).unwrap();
    /// # }
    /// ```
    pub fn submit(&self, partition: &str, job: Job) -> Result<(), PartitionError> {
        submit_to(&self.shared, partition, job)
    }

    /// A handle that submits jobs from anywhere, a job included (an engine's duty cycle
    /// queues its next slice with it).
    ///
    /// ```no_run
    /// # fn f(host: &agentwire_runtime::partitions::PartitionHost) {
    /// let submitter = host.submitter();
    /// submitter.submit("streaming", Box::new(|| {})).unwrap();
    /// # }
    /// ```
    pub fn submitter(&self) -> Submitter {
        Submitter {
            shared: self.shared.clone(),
        }
    }

    /// Every executor thread: (name, CPU).
    ///
    /// ```no_run
    /// # fn f(host: &agentwire_runtime::partitions::PartitionHost) {
    /// for (name, cpu) in host.executor_threads() { println!("{name} on {cpu}"); }
    /// # }
    /// ```
    pub fn executor_threads(&self) -> Vec<(String, usize)> {
        self.shared
            .executors
            .lock()
            .expect("executors lock")
            .iter()
            .map(|e| (e.state.thread.clone(), e.state.cpu))
            .collect()
    }

    /// The moves made so far (the last [`CORE_MOVES_KEPT`]).
    ///
    /// ```no_run
    /// # fn f(host: &agentwire_runtime::partitions::PartitionHost) {
    /// for m in host.moves() { println!("{}", m.line()); }
    /// # }
    /// ```
    pub fn moves(&self) -> Vec<CoreMove> {
        self.shared
            .moves
            .lock()
            .expect("moves lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The partitions and moves as `agentwire status` shows them.
    ///
    /// ```no_run
    /// # fn f(host: &agentwire_runtime::partitions::PartitionHost) {
    /// let (partitions, moves) = host.status();
    /// # }
    /// ```
    pub fn status(&self) -> (Vec<PartitionStatus>, Vec<CoreMoveStatus>) {
        partition_status(&self.shared)
    }

    /// A closure that produces [`PartitionHost::status`] from another thread (the status
    /// hook), holding the host's shared state.
    pub(crate) fn status_source(
        &self,
    ) -> impl Fn() -> (Vec<PartitionStatus>, Vec<CoreMoveStatus>) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || partition_status(&shared)
    }

    /// Stops the rebalancer, lets every executor finish the jobs already queued, and joins
    /// them. Idempotent.
    ///
    /// ```no_run
    /// # fn f(host: agentwire_runtime::partitions::PartitionHost) {
    /// host.shutdown();
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(handle) = self.controller.lock().expect("controller lock").take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        let handles: Vec<_> = self
            .shared
            .executors
            .lock()
            .expect("executors lock")
            .iter_mut()
            .filter_map(|e| e.handle.take())
            .collect();
        for handle in handles {
            if let Err(e) = handle.join() {
                tracing::error!("engine executor failed: {e}");
            }
        }
    }
}

impl Drop for PartitionHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn partition_status(shared: &HostShared) -> (Vec<PartitionStatus>, Vec<CoreMoveStatus>) {
    let cpus_now: Vec<Vec<usize>> = {
        let r = shared.rebalancer.lock().expect("rebalancer lock");
        (0..shared.partitions.len()).map(|i| r.cpus(i)).collect()
    };
    let executors = shared.executors.lock().expect("executors lock");
    let partitions = shared
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| PartitionStatus {
            name: p.name.clone(),
            priority: u32::from(p.priority),
            home_cpus: p.home.iter().map(|&c| c as u32).collect(),
            cpus: cpus_now[i].iter().map(|&c| c as u32).collect(),
            busy_permille: p.busy_permille.load(Ordering::Relaxed),
            jobs_completed: p.completed.load(Ordering::Relaxed),
            jobs_queued: p.queue.len() as u64,
            executors: executors
                .iter()
                .filter(|e| e.partition == i)
                .map(|e| e.state.status())
                .collect(),
        })
        .collect();
    drop(executors);
    let moves = shared
        .moves
        .lock()
        .expect("moves lock")
        .iter()
        .map(|m| CoreMoveStatus {
            at_ms: m.at.as_millis() as u64,
            cpu: m.cpu as u32,
            from: m.from.clone(),
            to: m.to.clone(),
            kind: m.kind.to_string(),
            reason: m.reason.clone(),
        })
        .collect();
    (partitions, moves)
}

/// Starts a glommio executor pinned to `state`'s CPU that names its thread and reads back
/// its affinity into `state`, then runs `body`; returns once the thread runs (or why it
/// could not start). Router shards and engine executors both start through here.
pub(crate) fn spawn_pinned<F, Fut>(
    state: Arc<ExecutorState>,
    io_memory_bytes: usize,
    body: F,
) -> Result<glommio::ExecutorJoinHandle<()>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let handle = LocalExecutorBuilder::new(Placement::Fixed(state.cpu))
        .name("aw-executor")
        .io_memory(io_memory_bytes)
        .spawn(move || async move {
            // glommio names the thread after its own executor id; name it by role and core
            // so perf and top -H read well.
            state.on_thread_start();
            let _ = started_tx.send(());
            body().await;
        })
        .map_err(|e| e.to_string())?;
    if started_rx.recv_timeout(EXECUTOR_START_TIMEOUT).is_err() {
        return Err(match handle.join() {
            Ok(()) => "exited before starting".to_string(),
            Err(e) => e.to_string(),
        });
    }
    Ok(handle)
}

/// Starts the executor of partition `index` on `cpu` and waits until it runs.
fn spawn_executor(
    shared: &Arc<HostShared>,
    index: usize,
    cpu: usize,
) -> Result<ExecutorCell, PartitionError> {
    let name = &shared.partitions[index].name;
    let state = Arc::new(ExecutorState::new(&thread_name(name, cpu), cpu));
    let (thread_state, thread_shared) = (state.clone(), shared.clone());
    let handle = spawn_pinned(state.clone(), shared.io_memory_bytes, move || async move {
        run_executor(&thread_shared, index, &thread_state).await;
    })
    .map_err(|detail| PartitionError::Executor {
        partition: name.clone(),
        cpu,
        detail,
    })?;
    Ok(ExecutorCell {
        partition: index,
        state,
        handle: Some(handle),
    })
}

/// The executor's loop: jobs from the partition's queue while active, timer sleeps while
/// idle or dormant; at shutdown it runs what is still queued, then returns.
async fn run_executor(shared: &HostShared, index: usize, state: &ExecutorState) {
    let partition = &shared.partitions[index];
    let mut park = IDLE_PARK_MIN;
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !state.active.load(Ordering::Acquire) {
            if stopping {
                return;
            }
            glommio::timer::sleep(DORMANT_PARK).await;
            continue;
        }
        match partition.queue.pop() {
            Some(job) => {
                let started_ns = shared.now_ns();
                state.job_started_ns.store(started_ns, Ordering::Release);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                let ran_ns = shared.now_ns().saturating_sub(started_ns);
                // Clear the running mark before adding the time: a sampler that reads the
                // total first and the mark second never counts this job twice.
                state.job_started_ns.store(u64::MAX, Ordering::Release);
                state.busy_ns.fetch_add(ran_ns, Ordering::Release);
                partition.completed.fetch_add(1, Ordering::Relaxed);
                if outcome.is_err() {
                    partition.panicked.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        partition = %partition.name,
                        thread = %state.thread,
                        "an engine job panicked; the executor goes on"
                    );
                }
                park = IDLE_PARK_MIN;
                glommio::yield_if_needed().await;
            }
            None if stopping => return,
            None => {
                glommio::timer::sleep(park).await;
                park = (park * 2).min(IDLE_PARK_MAX);
            }
        }
    }
}

/// Samples busy ratios every `interval`, asks the rebalancer, applies its moves.
fn rebalance_loop(shared: &Arc<HostShared>, interval: Duration) {
    let mut last_ns = shared.now_ns();
    let mut last_busy: Vec<(usize, usize, u64)> = Vec::new(); // (partition, cpu, busy ns)
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::park_timeout(interval);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now_ns = shared.now_ns();
        let wall_ns = now_ns.saturating_sub(last_ns).max(1);
        let mut busy_ns = vec![0u64; shared.partitions.len()];
        let mut active = vec![0u64; shared.partitions.len()];
        let mut sample = Vec::new();
        for e in shared.executors.lock().expect("executors lock").iter() {
            let total = e.state.busy_total_ns(now_ns);
            let before = last_busy
                .iter()
                .find(|(p, c, _)| *p == e.partition && *c == e.state.cpu)
                .map_or(total, |b| b.2);
            if e.state.active.load(Ordering::Relaxed) {
                busy_ns[e.partition] += total.saturating_sub(before);
                active[e.partition] += 1;
            }
            sample.push((e.partition, e.state.cpu, total));
        }
        last_busy = sample;
        last_ns = now_ns;
        let busy: Vec<f64> = busy_ns
            .iter()
            .zip(&active)
            .map(|(&b, &n)| {
                if n == 0 {
                    0.0
                } else {
                    (b as f64 / (wall_ns * n) as f64).min(1.0)
                }
            })
            .collect();
        for (cell, ratio) in shared.partitions.iter().zip(&busy) {
            cell.busy_permille
                .store((ratio * 1000.0).round() as u32, Ordering::Relaxed);
        }
        let at = Duration::from_nanos(now_ns);
        let moves = shared
            .rebalancer
            .lock()
            .expect("rebalancer lock")
            .step(at, &busy);
        for m in moves {
            apply_move(shared, m);
        }
    }
}

fn index_of(shared: &HostShared, name: &str) -> Option<usize> {
    shared.partitions.iter().position(|p| p.name == name)
}

/// Deactivates `from`'s executor on the CPU and activates (starting it if need be) `to`'s.
fn apply_move(shared: &Arc<HostShared>, m: CoreMove) {
    let (Some(from), Some(to)) = (index_of(shared, &m.from), index_of(shared, &m.to)) else {
        return;
    };
    let existing = {
        let executors = shared.executors.lock().expect("executors lock");
        for e in executors.iter() {
            if e.partition == from && e.state.cpu == m.cpu {
                e.state.active.store(false, Ordering::Release);
            }
        }
        executors
            .iter()
            .find(|e| e.partition == to && e.state.cpu == m.cpu)
            .map(|e| e.state.clone())
    };
    match existing {
        Some(state) => state.active.store(true, Ordering::Release),
        None => match spawn_executor(shared, to, m.cpu) {
            Ok(cell) => shared.executors.lock().expect("executors lock").push(cell),
            Err(e) => {
                // Undo: the lender keeps its core; the borrower stays as it was.
                tracing::error!("core move cancelled: {e}");
                shared
                    .rebalancer
                    .lock()
                    .expect("rebalancer lock")
                    .cancel_loan(m.cpu);
                for e in shared.executors.lock().expect("executors lock").iter() {
                    if e.partition == from && e.state.cpu == m.cpu {
                        e.state.active.store(true, Ordering::Release);
                    }
                }
                return;
            }
        },
    }
    tracing::info!(kind = %m.kind, "core move: {}", m.line());
    let mut moves = shared.moves.lock().expect("moves lock");
    if moves.len() == CORE_MOVES_KEPT {
        moves.pop_front();
    }
    moves.push_back(m);
}
