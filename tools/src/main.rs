//! `agentwire`: the command-line tool.
//!
//! Today it carries `demo`, which runs the shm data plane end to end (the minimal in-process
//! router, a second agent in its own process, discovery, publish/subscribe, request/response
//! and a unicast throughput run), `serve` (the daemon), `status` and `agents`, and
//! `dlq list|replay|purge` for the dead-letter queue, `topology` and `plan` (the machine and
//! its partition plan), and `load` (producers and consumers against the daemon, or the same
//! flow over a bare ring), `perf` (perf-event counters of the daemon's partitions, and
//! `perf record` on their threads), `tune`, `stream` (the streaming engine), `install` /
//! `uninstall` (the daemon as a systemd service), and `config check|default` (the daemon's
//! config file checked whole, and the embedded default). Logs go through [`logging`]: text,
//! journald lines or JSON.

#[macro_use]
mod out;

mod config_cmd;
mod dlq_cmd;
mod host_tuning;
mod install;
mod links_cmd;
mod load;
mod logging;
mod perf;
mod plan_cmd;
mod serve_cmd;
mod stream_bench;
mod stream_chaos;
mod stream_cmd;
mod stream_kafka;
mod stream_listen;
mod systemd;
mod tune;
mod twin_cmd;
mod twin_plan;
mod twin_risks;
mod twin_state;
mod twin_whatif;

use agentwire_router::testing::{TestRouter, TestRouterConfig};
use agentwire_shm::client::{Agent, ClientError};
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::wire::FrameKind;
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "agentwire",
    version,
    about = "agentwire: a bare-metal message runtime for multi-agent systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// How the log (stderr) is written: text lines (colour on a terminal), journal lines
    /// with `<N>` syslog priorities for journald, or one JSON object per line for log
    /// shippers. auto: journal when stderr is systemd's journal stream (JOURNAL_STREAM),
    /// else text. AGENTWIRE_LOG filters it (e.g. `warn`, `agentwire_router=debug`).
    #[arg(
        long,
        global = true,
        env = "AGENTWIRE_LOG_FORMAT",
        value_enum,
        default_value_t = logging::LogFormat::Auto
    )]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a daemon config file as `serve` loads it, then plan it on this machine (or
    /// on --topology) as `serve` would. Every problem is printed at once, one per line as
    /// FILE:LINE: KEY: what is wrong. Exit status: 0 valid (the plan is printed), 1
    /// invalid, 2 the check could not run (bad arguments, a file or topology that cannot be
    /// read). E.g. `agentwire config check /etc/agentwire/agentwire.toml && systemctl
    /// reload agentwire`.
    Check {
        /// The TOML file to check.
        file: PathBuf,
        /// Plan on an hwloc XML export (`lstopo FILE.xml`) of another machine instead of
        /// this one (then CPU availability and kernel checks of this machine are skipped).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Print one JSON object: valid, problems (file, line, key, message), machine,
        /// plan, checks.
        #[arg(long)]
        json: bool,
    },
    /// Print the embedded default configuration, every key documented with its unit
    /// (`agentwire config default > agentwire.toml` starts a file). docs/config.md lists
    /// every key with its default and whether SIGHUP applies it.
    Default,
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List every dead letter: sequence, reason, kind, source, destination, correlation, size.
    List,
    /// Send every dead letter again through the daemon, in order; each one the router acks
    /// is removed, the first refusal stops the replay and keeps the rest.
    Replay {
        /// The daemon's control socket [default: /run/agentwire/agentwire.sock for root,
        /// else under $XDG_RUNTIME_DIR].
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// Deliver records dead-lettered by an earlier run of the daemon to this agent id
        /// (agent ids never repeat across runs, but topics and capability routes may mean
        /// something else now, so such records stop the replay without --to or --to-name;
        /// records routed by feature id replay as they are).
        #[arg(long, value_name = "AGENT_ID", conflicts_with = "to_name")]
        to: Option<u32>,
        /// Like --to, naming the agent (exactly one agent of this run must have the name).
        #[arg(long, value_name = "NAME")]
        to_name: Option<String>,
    },
    /// Remove every dead letter.
    Purge,
}

#[derive(Subcommand)]
enum TwinCmd {
    /// The running daemon's live state, read from its stats segment beside the control
    /// socket (`<socket>.stats`) without querying the daemon: per router shard its frames,
    /// rejections, deferrals, dead letters, agents, fullest rings and idle ratio; the
    /// agents registered, the dead-letter queue's size and each engine partition's CPUs and
    /// busy ratio. Exit codes: 0 shown (a stopped daemon's last values are marked so), 1 no
    /// segment to read.
    State {
        /// The daemon's control socket.
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// The stats segment itself [default: the socket's path with `.stats`].
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Every counter of every slot, not the summary.
        #[arg(long)]
        all: bool,
        /// Read twice, this many milliseconds apart, and show per-second rates.
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Forecast one series: read the `value` column of a CSV (a `timestamp` column is
    /// optional; rows oldest first), write `step,forecast,lo,hi`, one row per step, with a
    /// central prediction interval. Exit codes: 0 done, 2 bad input (missing file, no
    /// `value` column, a row that is not a number, a history too short for the method).
    Forecast {
        /// The input CSV.
        #[arg(long)]
        input: PathBuf,
        /// Steps to forecast.
        #[arg(long)]
        horizon: usize,
        /// The seasonal period in steps (24: hourly data with a daily cycle; 1: none).
        #[arg(long, default_value_t = 24)]
        season: usize,
        /// The method: ensemble, sar, hw-add, hw-mul, theta, snaive, naive2, naive, ses,
        /// holt, damped, comb.
        #[arg(long, default_value = "ensemble")]
        method: String,
        /// The intervals' nominal coverage, in (0, 1).
        #[arg(long, default_value_t = 0.95)]
        level: f64,
        /// The output CSV (`-` for stdout; an existing file is refused without --force, the
        /// input always).
        #[arg(long)]
        output: PathBuf,
        /// Overwrite an existing output file (never the input).
        #[arg(long)]
        force: bool,
        /// Print a JSON summary on stdout (the forecast must then go to a file).
        #[arg(long)]
        json: bool,
    },
    /// Score the forecasters on an M4-layout directory (<Name>-train.csv and
    /// <Name>-test.csv, `id,v1,v2,...` per line): sMAPE, MASE (seasonal, m = --season) and
    /// OWA against Naive2 on the same series, beside seasonal naive, with the 95%
    /// intervals' MSIS and coverage. Progress goes to stderr. Exit codes: 0 done, 2 bad
    /// input.
    M4Eval {
        /// The data directory (e.g. ../shared/data/m4-hourly-dev).
        #[arg(long)]
        data: PathBuf,
        /// Methods to score beside Naive2 and seasonal naive, comma-separated [default:
        /// all].
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
        /// The seasonal period (24 for M4 hourly).
        #[arg(long, default_value_t = 24)]
        season: usize,
        /// Hold out the last horizon of each training series and score on it instead of
        /// the test values (for choosing methods without looking at the test).
        #[arg(long)]
        validation: bool,
        /// Worker threads (0: one per CPU); the scores do not depend on it.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Failure prediction for one series: the probability that it crosses a threshold
    /// within the next steps (forecast intervals turned into random-walk sample paths), the
    /// expected first-crossing step with a 90% interval, and whether the probability passes
    /// --level. Reads the `value` column of a CSV like `twin forecast`. Exit codes: 0 done
    /// (alert or not), 2 bad input.
    Risks {
        /// The input CSV.
        #[arg(long, required_unless_present = "live", conflicts_with = "live")]
        input: Option<PathBuf>,
        /// The threshold; failure is reaching it or going above it (below with --below).
        #[arg(long, allow_negative_numbers = true, required_unless_present = "live")]
        threshold: Option<f64>,
        /// Failure is reaching the threshold or going below it.
        #[arg(long)]
        below: bool,
        /// Steps to look ahead.
        #[arg(long, required_unless_present = "live")]
        horizon: Option<usize>,
        /// The seasonal period in steps (24: hourly data with a daily cycle; 1: none).
        #[arg(long, default_value_t = 24)]
        season: usize,
        /// The forecasting method (as for `twin forecast`).
        #[arg(long, default_value = "ensemble")]
        method: String,
        /// The crossing probability that raises an alert, in (0, 1].
        #[arg(long, default_value_t = 0.5)]
        level: f64,
        /// Instead of a CSV: the running daemon's twin (`[twin] enabled = true`), its last
        /// assessment of every watched signal on its live history.
        #[arg(long)]
        live: bool,
        /// With --live: the daemon's control socket.
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// What-if simulation: calibrate a queueing model of the daemon from its live mirror
    /// (or load a saved one), apply scenarios (load=K, router_cores=±N, agents=+N,
    /// priority_mix=A,B,C,D, ring_frames=N, deferral_frames=N, partition.NAME=±N) and print
    /// the predicted throughput, latency percentiles, deferrals, dead letters and
    /// utilisation beside the baseline. Example: agentwire twin whatif --scenario load=2
    /// --scenario router_cores=+1. Exit codes: 0 done, 1 no mirror to calibrate from, 2 bad
    /// input (a scenario, a model file).
    Whatif(twin_whatif::WhatifArgs),
    /// Time the what-if simulators: the flow simulator over an hour of traffic, the packet
    /// simulator and SimPy (scripts/whatif_simpy.py, the same model) over --packet-seconds,
    /// each as a multiple of real time, with their predictions side by side.
    WhatifBench(twin_whatif::BenchArgs),
    /// Capacity planning: the fewest cores per partition that meet the SLA at the forecast
    /// peak (the twin's history: hourly peaks forecast with the M4-hourly ensemble; the
    /// router sized with the what-if model calibrated from the live mirror or --model;
    /// engine partitions kept under the rebalancing high water), printed as a unified diff
    /// against the current config that `patch` applies and `agentwire plan` plans. Example:
    /// agentwire twin plan --sla 'p99<1ms' --at-forecast-peak 24h > plan.diff. Exit codes:
    /// 0 planned, 1 no mirror or history, 2 bad input, 3 no router size meets the SLA.
    Plan(twin_plan::PlanArgs),
}

#[derive(Subcommand)]
enum StreamCmd {
    /// Run a pipeline declared in TOML (stages, then event-time windows; see
    /// engines/streaming/src/pipeline/file.rs for every key) over a CSV input, writing one
    /// JSON object per window result. The CSV's first line names its columns: `value`, the
    /// time as `event_time_ns` or `timestamp` (`YYYY-MM-DD HH:MM:SS[.fff]` UTC or RFC 3339),
    /// an optional `key`; other columns become attributes. Malformed rows are skipped,
    /// counted and described on stderr.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The CSV input (`-` for stdin) [default: the file's [input] path].
        #[arg(long)]
        input: Option<PathBuf>,
        /// Where results go (`-` for stdout) [default: the file's [output] path, else stdout].
        #[arg(long)]
        output: Option<PathBuf>,
        /// Shard threads [default: the file's `shards`, else 1].
        #[arg(long)]
        shards: Option<usize>,
        /// Overwrite the output file if it exists (without it, an existing file is refused).
        #[arg(long)]
        force: bool,
        /// Print a JSON summary on stdout (results must then go to a file).
        #[arg(long)]
        json: bool,
    },
    /// Test exactly-once with real SIGKILLs: write --events generated events to a durable
    /// log, run a windowed pipeline over it in a child process with checkpoints and a
    /// de-duplicating sink, SIGKILL it at --kills random points and restart it each time,
    /// run the same input once without failures, and compare the outputs. Exits 1 if they
    /// differ.
    Chaos {
        /// Events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// SIGKILLs to send.
        #[arg(long, default_value_t = 5)]
        kills: u32,
        /// Seed of the input and of the kill points.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Shard threads of the pipeline.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Work directory, kept afterwards (must be empty or new) [default: a temporary
        /// one, removed at the end].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object: events, kills, outputs_equal, duplicates, missing, ...
        #[arg(long)]
        json: bool,
    },
    /// Score every row of a Numenta Anomaly Benchmark CSV (`timestamp,value`) with a
    /// streaming detector (each score from that row and earlier ones only) and write
    /// `timestamp,value,anomaly_score`, one row per input row.
    Detect {
        /// The input CSV.
        #[arg(long)]
        input: PathBuf,
        /// The output CSV (an existing file is refused without --force).
        #[arg(long)]
        output: PathBuf,
        /// The detector [default: the best one; `agentwire stream nab-score` lists them in
        /// its errors].
        #[arg(long, default_value = agentwire_streaming::detect::DEFAULT)]
        detector: String,
        /// Overwrite the output file.
        #[arg(long)]
        force: bool,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// NAB's standard-profile score of a detector over a corpus (label windows, scaled
    /// sigmoid, tp 1 / fp 0.11 / fn 1, one threshold per detector across the corpus,
    /// normalised between the null detector at 0 and a perfect one at 100), beside the null
    /// and windowed-Gaussian baselines.
    NabScore {
        /// The corpus's data directory (category folders of CSV files).
        #[arg(long)]
        data: PathBuf,
        /// The label windows (NAB's combined_windows.json; keys relative to --data).
        #[arg(long)]
        labels: PathBuf,
        /// The detector scored.
        #[arg(long, default_value = agentwire_streaming::detect::DEFAULT)]
        detector: String,
        /// Print one JSON object (with the per-file breakdown).
        #[arg(long)]
        json: bool,
    },
    /// The daemon's streaming engine ([streaming] in its config): agent id, frames and
    /// events taken, malformed events, alerts and window results published, acks.
    Status(serve_cmd::QueryArgs),
    /// Events per second and ingest-to-score latency through the engine path (a durable log
    /// with group commit, a tumbling window and a detector per key), against the raw ingest
    /// path (the same events through a bare ring) measured in the same run.
    Bench {
        /// Events per run.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// The detector each key gets.
        #[arg(long, default_value = agentwire_streaming::detect::DEFAULT)]
        detector: String,
        /// Where the log goes (must be empty or new; kept) [default: a temporary directory,
        /// removed at the end].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object: events, events_per_s, latency_ms {p50, p99},
        /// baseline_events_per_s, ...
        #[arg(long)]
        json: bool,
    },
    /// Line input for tools that cannot link the client library: listen on TCP and/or UDP
    /// for lines `KEY VALUE [EVENT_TIME_NS]` (spaces or commas; no time: the arrival time)
    /// and forward them in batches to the daemon's streaming engine. A bad line is counted
    /// and a TCP sender gets `error LINE: WHY` back. Runs until SIGTERM or Ctrl-C.
    Listen {
        /// TCP address, e.g. 127.0.0.1:9470.
        #[arg(long)]
        tcp: Option<String>,
        /// UDP address, e.g. 127.0.0.1:9470 (no backpressure: a full queue drops, counted).
        #[arg(long)]
        udp: Option<String>,
        /// The daemon's control socket.
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// The engine's feature id.
        #[arg(long, default_value_t = agentwire_shm::stream_events::STREAM_FEATURE_ID)]
        feature_id: u32,
    },
    /// Run a pipeline between Kafka topics, exactly once (built with the `kafka` feature).
    ///
    /// Events from --input-topic, window results with their output ids to --output-topic,
    /// one Kafka transaction per epoch tied to the checkpoint in --checkpoints; a restart
    /// restores the epoch the consumer group committed. Needs a build with the tools crate's
    /// `kafka` feature (`cargo build --release -p agentwire-tools --features kafka`).
    Kafka(Box<stream_kafka::KafkaArgs>),
    /// One incarnation of the pipeline `chaos` kills (runs in its own process).
    #[command(hide = true)]
    ChaosWorker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        shards: usize,
    },
}

/// The flow `load` drives and `tune` trials: mode, rate, pattern, size, agents.
#[derive(clap::Args, Clone)]
struct FlowArgs {
    /// closed (as fast as possible) or open (a fixed --rate).
    #[arg(long, value_enum, default_value = "closed")]
    mode: load::Mode,
    /// Open loop: messages per second over all producers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// unicast, fanout, anycast or reqresp.
    #[arg(long, value_enum, default_value = "unicast")]
    pattern: load::Pattern,
    /// Payload bytes per message (at least 24: the stamp).
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Producer agents.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer agents (fan-out: the K subscribers).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Where the agent threads run: auto (every CPU but the daemon's router CPUs, when any
    /// other is left: an agent woken on a busy-polling router core waits for the scheduler,
    /// ~1 ms on an untuned machine), none (wherever the kernel puts them), or a CPU list
    /// such as 0,2-3.
    #[arg(long, default_value = "auto")]
    pin: load::pin::Pin,
}

impl FlowArgs {
    /// Load options for this flow; the rest as given.
    fn options(self, count: Option<u64>, duration_s: f64, warmup_s: f64) -> load::LoadOptions {
        load::LoadOptions {
            socket: None,
            spawn_daemon: false,
            mode: self.mode,
            rate_per_s: self.rate,
            pattern: self.pattern,
            msg_size: self.msg_size,
            producers: self.producers,
            consumers: self.consumers,
            count,
            duration: Duration::from_secs_f64(duration_s.max(0.0)),
            warmup: Duration::from_secs_f64(warmup_s.max(0.0)),
            priority_mix: Vec::new(),
            json: false,
            baseline: None,
            drop_every: 0,
            stall_ms: 0,
            pin: self.pin,
            allow_loss: false,
        }
    }
}

#[derive(Subcommand)]
enum PerfCmd {
    /// Run `perf record -t TIDS PERF-ARGS` on the partition's threads (every partition's
    /// without --partition), e.g. `agentwire perf record --partition router -- -g -o
    /// router.data`.
    Record {
        /// Arguments for `perf record`, after `--`.
        #[arg(last = true)]
        perf_args: Vec<String>,
    },
}

/// `agentwire plan --help`'s examples.
const PLAN_EXAMPLES: &str = "Examples:
  agentwire plan --config /etc/agentwire/agentwire.toml
  agentwire plan --config /etc/agentwire/agentwire.toml --kernel-cmdline
  agentwire plan --config /etc/agentwire/agentwire.toml --cpuset --json
  agentwire plan --topology server.xml --kernel-cmdline    # `lstopo server.xml` on that machine";

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground: the control socket, and the router on a pinned
    /// core. With no --config it runs on the embedded default (see runtime/default.toml).
    /// SIGTERM or SIGINT drain committed frames, dead-letter what still waits for a full
    /// destination, and exit 0. SIGHUP re-reads the config file and applies the allow-list,
    /// the [[authorize]] policy and defer_deadline_ms without dropping clients; every other
    /// changed key is named in a warning and waits for a restart (docs/config.md). Check a
    /// file first with `agentwire config check FILE`.
    ///
    /// Under systemd (`Type=notify`, $NOTIFY_SOCKET set) it sends READY=1 once the socket
    /// accepts, every executor is pinned and the configured engines are registered, a
    /// STATUS= line every second, WATCHDOG=1 at half $WATCHDOG_USEC only while every router
    /// shard runs its duty cycle, and STOPPING=1 at shutdown (systemd/agentwire.service and
    /// systemd/README.md).
    Serve {
        /// TOML configuration file [default: the embedded default].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Control socket; overrides the config [default: /run/agentwire/agentwire.sock
        /// for root, else under $XDG_RUNTIME_DIR].
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// Port of the Prometheus endpoint on 127.0.0.1; overrides the config (0: any free
        /// port, shown by `agentwire status`) [default: 9464].
        #[arg(long)]
        metrics_port: Option<u16>,
        /// Serve no metrics endpoint.
        #[arg(long)]
        no_metrics: bool,
        /// Dead-letter queue file; overrides the config [default: AGENTWIRE_DLQ, else
        /// /var/lib/agentwire/dlq.log for root, else $XDG_STATE_HOME/agentwire/dlq.log; when
        /// that directory cannot be created or written, dlq.log beside the default socket].
        #[arg(long, env = "AGENTWIRE_DLQ")]
        dlq: Option<PathBuf>,
    },
    /// Check a daemon config file (`config check FILE`) or print the embedded default
    /// (`config default`).
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Show the running daemon's counters.
    Status(serve_cmd::QueryArgs),
    /// List the routes of the running daemon: topics with their subscribers, capability
    /// routes with the live agents that satisfy them.
    Routes(serve_cmd::QueryArgs),
    /// List the agents connected to the running daemon.
    Agents(serve_cmd::QueryArgs),
    /// Show the running daemon's links to other nodes (`[node]`): each peer's state, round
    /// trip, its agents known here, frames and bytes each way, retries and last error; in a
    /// NATS cluster (`nats_url`), the server and the other nodes seen there. `--agents`
    /// lists each peer's agents offered here: the proxy's id here, the agent's id there and
    /// its global id (`node:id`); `--json` always has them.
    Links {
        #[command(flatten)]
        query: serve_cmd::QueryArgs,
        /// Also list each peer's agents offered here (global id, id there, proxy id here).
        #[arg(long)]
        agents: bool,
    },
    /// Run the data plane end to end: an in-process router, a second agent process,
    /// discovery, publish/subscribe, request/response and a throughput run.
    Demo {
        /// Unicast messages to send in the throughput run.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// Request/response round trips to time.
        #[arg(long, default_value_t = 10_000)]
        round_trips: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Socket path: of the demo's own router, or with --attach of the running daemon
        /// [default: a fresh path under the temp dir; with --attach the daemon's default].
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// Use the running daemon (`agentwire serve`) instead of starting a router.
        #[arg(long)]
        attach: bool,
    },
    /// Print the machine as hwloc sees it: packages, NUMA nodes with memory and distances,
    /// cores by kind (performance / efficiency) with their PUs, GPUs, NPUs and I/O devices.
    Topology {
        /// An hwloc XML export (`lstopo FILE.xml`) instead of this machine.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Plan partitions (router, streaming, nas, twin, fusion) onto cores: prints partition,
    /// PUs, kind, NUMA node and accelerators, or why the plan is impossible and what to
    /// change. Reads the `[plan]` and `[partitions.NAME]` tables of the config (see
    /// examples/seed-allocation.toml) [default: the embedded default, which shares cores on
    /// small machines].
    ///
    /// With --kernel-cmdline or --cpuset it prints what the plan asks of the server instead
    /// (docs/tuning.md walks through both). The partition cores (router and engines, with
    /// the router cores' idle hyper-threads) are isolated from the OS; housekeeping and
    /// unused cpus are left to it. On the live machine these plan on every online cpu, also
    /// those this shell may not use.
    #[command(after_long_help = PLAN_EXAMPLES)]
    Plan {
        /// TOML configuration file with `[partitions.NAME]` tables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// An hwloc XML export (`lstopo FILE.xml`) instead of this machine.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Print the kernel parameters that isolate the plan's cores, on one line for
        /// GRUB_CMDLINE_LINUX: `isolcpus=managed_irq,domain,CPUS nohz_full=CPUS
        /// rcu_nocbs=CPUS irqaffinity=OS_CPUS` (no scheduler balancing, timer tick, RCU
        /// callbacks or default IRQs on the partition cores). Notes go to stderr.
        #[arg(long, conflicts_with = "cpuset")]
        kernel_cmdline: bool,
        /// Print the systemd drop-ins that keep other services off the daemon's cores:
        /// AllowedCPUs= (the OS's cpus) for system.slice and user.slice, AllowedCPUs= (the
        /// daemon's cpus) for agentwire.slice, and CPUAffinity= for agentwire.service, each
        /// under the file to write it to.
        #[arg(long)]
        cpuset: bool,
    },
    /// Inspect and drain the dead-letter queue (frames the router could not deliver).
    Dlq {
        #[command(subcommand)]
        action: DlqCmd,
        /// The queue file [default: /var/lib/agentwire/dlq.log for root, else under
        /// $XDG_STATE_HOME or ~/.local/state; when that directory cannot be created or
        /// written, dlq.log beside the default socket, as `serve` does].
        #[arg(long, env = "AGENTWIRE_DLQ", global = true)]
        dlq: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Drive a running daemon (or one started with --spawn-daemon) with producer and
    /// consumer agents and report throughput, latency percentiles (HDR histogram), losses,
    /// late arrivals and duplicates (by sequence numbers).
    ///
    /// Exit status: 0 when every message arrived once, 3 when some were lost or duplicated
    /// (0 with --allow-loss), 1 when the run could not complete (no daemon, an agent refused,
    /// the daemon went away mid-run), 2 for a bad command line.
    ///
    /// Closed loop sends as fast as the daemon takes messages; open loop sends at --rate and
    /// measures latency from each message's intended send time, so stalls are not hidden
    /// (no coordinated omission). Patterns: unicast (producer i to consumer i mod C), fanout
    /// (publish to a topic every consumer subscribes to: K = --consumers), anycast (to a
    /// capability every consumer offers), reqresp (request/response round trips).
    /// `--baseline raw-ring` runs the same pattern, producers, consumers and sizes over bare
    /// cross-process rings (no router; each consumer is a child process) and prints the
    /// same JSON, for routed/raw ratios.
    ///
    /// Example: agentwire load --spawn-daemon --pattern unicast --msg-size 64 --count 1000000 --json
    Load {
        /// Daemon socket [default: the daemon's default path].
        #[arg(long, env = "AGENTWIRE_SOCKET")]
        socket: Option<PathBuf>,
        /// Start a daemon for this run (on a socket of its own) and stop it after.
        #[arg(long)]
        spawn_daemon: bool,
        #[command(flatten)]
        flow: FlowArgs,
        /// Measured messages over all producers [default: run for --duration].
        #[arg(long)]
        count: Option<u64>,
        /// Measured seconds when no --count is given.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Warm-up seconds before measuring (tracked for losses, not timed).
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
        /// Priority classes and weights, e.g. 0:10,2:90 [default: all class 2].
        #[arg(long, value_parser = load::parse_priority_mix)]
        priority_mix: Option<std::vec::Vec<(u8, u32)>>,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
        /// Run the physical-limit proxy instead: raw-ring (the same flow over bare rings).
        #[arg(long, value_enum)]
        baseline: Option<load::Baseline>,
        /// Report lost and duplicated messages but exit 0 (without it such a run exits 3).
        #[arg(long)]
        allow_loss: bool,
        /// Test hook: skip every Nth message while counting it as sent.
        #[arg(long, default_value_t = 0, hide = true)]
        drop_every: u64,
        /// Test hook: producer 0 stalls this many ms once, halfway through.
        #[arg(long, default_value_t = 0, hide = true)]
        stall_ms: u64,
    },
    /// Count the running daemon's threads with perf events for --duration: per partition,
    /// per thread and per partition core, instructions, cycles, IPC, cache references and
    /// misses, branch misses, context switches, page faults, CPU migrations and task clock.
    /// Counters the machine lacks (a VM without a hardware PMU) are shown as n/a (null in
    /// JSON) with the kernel's reason; the software counters still count. Threads outside
    /// every partition (main, accept, rebalance) are the partition `other`.
    ///
    /// `agentwire perf record [--partition NAME] -- PERF-ARGS` runs `perf record -t TIDS
    /// PERF-ARGS` on the partition's threads (for --duration unless PERF-ARGS end in
    /// `-- COMMAND`).
    ///
    /// Example: agentwire perf --partition router --duration 5 --json
    Perf {
        #[command(subcommand)]
        action: Option<PerfCmd>,
        /// Daemon socket [default: the daemon's default path].
        #[arg(long, env = "AGENTWIRE_SOCKET", global = true)]
        socket: Option<PathBuf>,
        /// Only this partition (router, streaming, nas, twin, fusion, other) [default: all].
        #[arg(long, global = true)]
        partition: Option<String>,
        /// Seconds to count (or to record).
        #[arg(long, default_value_t = 5.0, global = true)]
        duration: f64,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Find the router settings that suit this machine: short `agentwire load` trials over
    /// the router's batch size (router_batch_frames), idle strategy (idle) and ring size
    /// (ring_capacity_bytes). Each trial starts a daemon of its own on the base config with
    /// those three keys replaced, measures throughput and latency (HDR), and counts the router
    /// threads with perf events (context switches, CPU use; IPC where there is a PMU).
    /// Prints the trials as a table (the best marked *) and writes the best settings as a
    /// config snippet to --output. A trial with losses is disqualified.
    ///
    /// Example: agentwire tune --batch 8,32,128 --idle spin,spin-then-park --ring 65536,1048576
    Tune {
        /// Router batch sizes to try, frames.
        #[arg(long, default_value = "8,32,128", value_parser = parse_usize_list)]
        batch: std::vec::Vec<usize>,
        /// Idle strategies to try: spin, spin-then-park, park.
        #[arg(long, default_value = "spin,spin-then-park", value_parser = parse_string_list)]
        idle: std::vec::Vec<String>,
        /// Ring capacities to try, bytes (powers of two).
        #[arg(long, default_value = "65536,1048576", value_parser = parse_usize_list)]
        ring: std::vec::Vec<usize>,
        /// The config the trials start from [default: the embedded default].
        #[arg(long)]
        config: Option<PathBuf>,
        /// What the best trial maximises.
        #[arg(long, value_enum, default_value = "throughput")]
        objective: tune::Objective,
        /// Where to write the best settings.
        #[arg(long, default_value = "agentwire-tune.toml")]
        output: PathBuf,
        /// Measured seconds per trial.
        #[arg(long, default_value_t = 1.0)]
        trial_s: f64,
        /// Runs per trial; the run of median throughput counts (steadier on noisy VMs).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Warm-up seconds per trial.
        #[arg(long, default_value_t = 0.3)]
        warmup: f64,
        #[command(flatten)]
        flow: FlowArgs,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The reader of `load --baseline raw-ring` (runs in its own process).
    #[command(hide = true)]
    LoadRingPeer {
        /// A segment's descriptor, left open across exec (one per linked producer).
        #[arg(long)]
        fd: Vec<i32>,
        /// Echo every frame on the segment's rx ring (reqresp).
        #[arg(long)]
        echo: bool,
    },
    /// The streaming engine: run a pipeline declared in TOML.
    Stream {
        #[command(subcommand)]
        action: StreamCmd,
    },
    /// The digital twin: the daemon's live state, forecast a series, score the forecasters
    /// on M4 data, failure risks.
    Twin {
        #[command(subcommand)]
        action: TwinCmd,
    },
    /// Install the daemon as a systemd service: this binary to /usr/local/bin, the units
    /// (agentwire.service, agentwire-hugepages.service) to /etc/systemd/system, the default
    /// config to /etc/agentwire/agentwire.toml, the agentwire system user and group
    /// (sysusers.d) and the state directory /var/lib/agentwire (tmpfiles.d); then
    /// `systemctl daemon-reload`. A file already there with other contents (an edited
    /// config) is kept and the new version written beside it as `<file>.agentwire-new`.
    /// Start it with `systemctl enable --now agentwire`. Exit codes: 0 done, 1 a step
    /// failed (the steps before it stay done; run it again), 2 usage.
    Install {
        /// Install under this root directory instead of / (like DESTDIR: the units still
        /// name /usr/local/bin/agentwire), e.g. to stage a machine image.
        #[arg(long, default_value = "/")]
        prefix: PathBuf,
        /// Print every step, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object on stdout: {command, prefix, dry_run, ok, steps: [{action,
        /// target, outcome, detail}]}; progress lines are left out.
        #[arg(long)]
        json: bool,
    },
    /// Undo `agentwire install`: stop and disable the units, remove the files the install
    /// wrote (those edited since are kept and named), keep the config and the state
    /// directory (dead-letter queue, streaming log and checkpoints) unless --purge.
    Uninstall {
        /// The root directory installed under.
        #[arg(long, default_value = "/")]
        prefix: PathBuf,
        /// Print every step, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove the config, the state directory and the agentwire user and group.
        #[arg(long)]
        purge: bool,
        /// One JSON object on stdout, as install prints.
        #[arg(long)]
        json: bool,
    },
    /// The second agent of `demo` (runs in its own process).
    #[command(hide = true)]
    DemoPeer {
        #[arg(long)]
        socket: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = logging::init(cli.log_format);
    let result = match cli.command {
        Cmd::Demo {
            messages,
            payload_bytes,
            round_trips,
            json,
            socket,
            attach,
        } => demo(messages, payload_bytes, round_trips, json, socket, attach),
        Cmd::DemoPeer { socket } => demo_peer(socket),
        Cmd::Load {
            socket,
            spawn_daemon,
            flow,
            count,
            duration,
            warmup,
            priority_mix,
            json,
            baseline,
            allow_loss,
            drop_every,
            stall_ms,
        } => load::run(load::LoadOptions {
            socket,
            spawn_daemon,
            priority_mix: priority_mix.unwrap_or_default(),
            json,
            baseline,
            drop_every,
            stall_ms,
            allow_loss,
            ..flow.options(count, duration, warmup)
        }),
        Cmd::Perf {
            action,
            socket,
            partition,
            duration,
            json,
        } => {
            let socket = socket.unwrap_or_else(agentwire_shm::client::default_socket_path);
            let duration = Duration::from_secs_f64(duration.max(0.0));
            match action {
                None => perf::run(perf::PerfOptions {
                    socket,
                    partition,
                    duration,
                    json,
                }),
                Some(PerfCmd::Record { perf_args }) => perf::record(perf::RecordOptions {
                    socket,
                    partition,
                    duration,
                    perf_args,
                }),
            }
        }
        Cmd::Tune {
            batch,
            idle,
            ring,
            config,
            objective,
            output,
            trial_s,
            repeat,
            warmup,
            flow,
            json,
        } => tune::run(tune::TuneOptions {
            batch_frames: batch,
            idle,
            ring_bytes: ring,
            base_config: config,
            objective,
            output,
            repeat,
            load: load::LoadOptions {
                json,
                ..flow.options(None, trial_s.max(0.05), warmup)
            },
        })
        .map_err(|e| -> BoxError { e }),
        Cmd::LoadRingPeer { fd, echo } => load::raw_ring::peer(fd, echo),
        Cmd::Serve {
            config,
            socket,
            metrics_port,
            no_metrics,
            dlq,
        } => serve_cmd::serve(
            config,
            serve_cmd::Overrides {
                socket,
                metrics_port,
                no_metrics,
                dlq,
            },
        ),
        Cmd::Topology { topology, json } => plan_cmd::topology(topology, json),
        Cmd::Install {
            prefix,
            dry_run,
            json,
        } => install::install(&install::Options {
            prefix,
            dry_run,
            json,
        }),
        Cmd::Uninstall {
            prefix,
            dry_run,
            purge,
            json,
        } => install::uninstall(
            &install::Options {
                prefix,
                dry_run,
                json,
            },
            purge,
        ),
        Cmd::Plan {
            config,
            topology,
            json,
            kernel_cmdline,
            cpuset,
        } => plan_cmd::plan(
            config,
            topology,
            json,
            if kernel_cmdline {
                plan_cmd::PlanOutput::KernelCmdline
            } else if cpuset {
                plan_cmd::PlanOutput::Cpuset
            } else {
                plan_cmd::PlanOutput::Plan
            },
        ),
        Cmd::Stream { action } => match action {
            StreamCmd::Run {
                pipeline,
                input,
                output,
                shards,
                force,
                json,
            } => stream_cmd::run(stream_cmd::RunArgs {
                pipeline,
                input,
                output,
                shards,
                force,
                json,
            }),
            StreamCmd::Chaos {
                events,
                kills,
                seed,
                shards,
                dir,
                json,
            } => stream_chaos::chaos(stream_chaos::ChaosArgs {
                events,
                kills,
                seed,
                shards,
                dir,
                json,
            }),
            StreamCmd::Detect {
                input,
                output,
                detector,
                force,
                json,
            } => stream_cmd::detect(&input, &output, &detector, force, json),
            StreamCmd::NabScore {
                data,
                labels,
                detector,
                json,
            } => stream_cmd::nab_score(&data, &labels, &detector, json),
            StreamCmd::Status(q) => stream_cmd::status(&q),
            StreamCmd::Listen {
                tcp,
                udp,
                socket,
                feature_id,
            } => stream_listen::listen(stream_listen::ListenArgs {
                tcp,
                udp,
                socket,
                feature_id,
            }),
            StreamCmd::Bench {
                events,
                detector,
                dir,
                json,
            } => stream_bench::bench(stream_bench::BenchArgs {
                events,
                detector,
                dir,
                json,
            }),
            StreamCmd::Kafka(args) => stream_kafka::kafka(args),
            StreamCmd::ChaosWorker { dir, name, shards } => {
                stream_chaos::worker(&dir, &name, shards)
            }
        },
        Cmd::Twin { action } => match action {
            TwinCmd::Forecast {
                input,
                horizon,
                season,
                method,
                level,
                output,
                force,
                json,
            } => twin_cmd::forecast(twin_cmd::ForecastArgs {
                input,
                horizon,
                season,
                method,
                level,
                output,
                force,
                json,
            }),
            TwinCmd::M4Eval {
                data,
                methods,
                season,
                validation,
                threads,
                json,
            } => twin_cmd::m4_eval(twin_cmd::EvalArgs {
                data,
                methods,
                season,
                validation,
                threads,
                json,
            }),
            TwinCmd::Risks {
                input,
                threshold,
                below,
                horizon,
                season,
                method,
                level,
                live,
                socket,
                json,
            } => match (live, input, threshold, horizon) {
                (true, ..) => twin_risks::live(socket, json),
                (false, Some(input), Some(threshold), Some(horizon)) => {
                    twin_risks::risks(twin_risks::RisksArgs {
                        input,
                        threshold,
                        below,
                        horizon,
                        season,
                        method,
                        level,
                        json,
                    })
                }
                // clap requires all three without --live; kept as an error, never a panic.
                _ => Err(Box::new(twin_cmd::BadInput(
                    "--input, --threshold and --horizon are required without --live".into(),
                )) as Box<dyn std::error::Error>),
            },
            TwinCmd::Whatif(args) => twin_whatif::whatif(args),
            TwinCmd::WhatifBench(args) => twin_whatif::bench(args),
            TwinCmd::Plan(args) => twin_plan::plan(args),
            TwinCmd::State {
                socket,
                stats,
                all,
                interval_ms,
                json,
            } => twin_state::state(twin_state::StateArgs {
                socket: socket.unwrap_or_else(agentwire_shm::client::default_socket_path),
                stats,
                all,
                interval: interval_ms.map(std::time::Duration::from_millis),
                json,
            }),
        },
        Cmd::Config { action } => match action {
            ConfigCmd::Check {
                file,
                topology,
                json,
            } => config_cmd::check(&file, topology, json),
            ConfigCmd::Default => config_cmd::default(),
        },
        Cmd::Routes(q) => serve_cmd::routes(&q),
        Cmd::Status(q) => serve_cmd::status(&q),
        Cmd::Agents(q) => serve_cmd::agents(&q),
        Cmd::Links { query, agents } => links_cmd::links(&query, agents),
        Cmd::Dlq { action, dlq, json } => {
            // Without --dlq, the queue the daemon would use (the runtime directory's when the
            // state directory cannot be used), found without creating anything.
            let path =
                dlq.unwrap_or_else(|| agentwire_runtime::dlq_path::resolve_default(false).path);
            match action {
                DlqCmd::List => dlq_cmd::list(path, json),
                DlqCmd::Purge => dlq_cmd::purge(path, json),
                DlqCmd::Replay {
                    socket,
                    to,
                    to_name,
                } => {
                    let socket = socket.unwrap_or_else(agentwire_shm::client::default_socket_path);
                    let target = to
                        .map(dlq_cmd::ReplayTarget::Id)
                        .or(to_name.map(dlq_cmd::ReplayTarget::Name));
                    dlq_cmd::replay(path, socket, target, json)
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`agentwire dlq list | head`): a quiet end.
        Err(e) if out::is_broken_pipe(&*e) => ExitCode::SUCCESS,
        Err(e) if e.is::<twin_cmd::BadInput>() => {
            logging::report_error(log_format, &format!("agentwire twin: error: {e}"));
            ExitCode::from(twin_cmd::EXIT_BAD_INPUT)
        }
        Err(e) if e.is::<twin_plan::SlaUnmet>() => {
            logging::report_error(log_format, &format!("agentwire twin plan: {e}"));
            ExitCode::from(twin_plan::EXIT_SLA_UNMET)
        }
        Err(e) if e.is::<load::DeliveryFailed>() => {
            logging::report_error(log_format, &format!("agentwire load: {e}"));
            ExitCode::from(load::EXIT_DELIVERY_FAILED)
        }
        Err(e) => match e.downcast_ref::<config_cmd::CheckFailed>() {
            // Its problems were printed.
            Some(config_cmd::CheckFailed::Invalid) => ExitCode::from(config_cmd::EXIT_INVALID),
            Some(config_cmd::CheckFailed::Usage(e)) => {
                logging::report_error(log_format, &format!("agentwire: error: {e}"));
                ExitCode::from(config_cmd::EXIT_USAGE)
            }
            None => {
                logging::report_error(log_format, &format!("agentwire: error: {e}"));
                ExitCode::FAILURE
            }
        },
    }
}

type BoxError = Box<dyn std::error::Error>;

fn parse_usize_list(text: &str) -> Result<Vec<usize>, String> {
    tune::parse_list(text, |s| {
        s.parse::<usize>()
            .map_err(|e| format!("{s:?} is not a whole number ({e})"))
    })
}

fn parse_string_list(text: &str) -> Result<Vec<String>, String> {
    tune::parse_list(text, |s| Ok(s.to_string()))
}

/// The peer: offers capability `echo 1.0.0`, answers requests, counts sends, subscribes to
/// `demo`, and exits after a `bye` publish, printing what it counted.
fn demo_peer(socket: PathBuf) -> Result<(), BoxError> {
    let mut agent = Agent::builder("demo-echo")
        .socket(&socket)
        .capability("echo", "1.0.0")
        .topic("demo")
        .idle(IdleStrategy::default())
        .connect()?;
    outln!("ready {}", agent.id())?;
    let (mut sends, mut publishes) = (0u64, 0u64);
    let mut last_seq = None::<u64>;
    let mut out_of_order = 0u64;
    loop {
        let Some(msg) = agent.recv(Some(Duration::from_secs(60)))? else {
            return Err("demo peer: no message for 60 s".into());
        };
        match msg.header().kind() {
            FrameKind::Request => {
                let req = msg.to_owned();
                drop(msg);
                agent.respond(req.header(), req.payload())?;
            }
            FrameKind::Publish => {
                publishes += 1;
                if msg.payload() == b"bye" {
                    outln!(
                        "counted sends={sends} publishes={publishes} out_of_order={out_of_order}"
                    )?;
                    return Ok(());
                }
            }
            FrameKind::Send => {
                let seq = u64::from_le_bytes(msg.payload()[..8].try_into()?);
                if last_seq.is_some_and(|l| seq != l + 1) {
                    out_of_order += 1;
                }
                last_seq = Some(seq);
                sends += 1;
            }
            _ => {}
        }
    }
}

fn demo(
    messages: u64,
    payload_bytes: usize,
    round_trips: u64,
    json: bool,
    socket: Option<PathBuf>,
    attach: bool,
) -> Result<(), BoxError> {
    if payload_bytes < 8 {
        return Err("--payload-bytes must be at least 8 (it carries a sequence number)".into());
    }
    let socket = socket.unwrap_or_else(|| {
        if attach {
            agentwire_shm::client::default_socket_path()
        } else {
            std::env::temp_dir()
                .join(format!("agentwire-demo-{}", std::process::id()))
                .join("agentwire.sock")
        }
    });
    let router = if attach {
        None
    } else {
        Some(TestRouter::start(TestRouterConfig::new(socket.clone()))?)
    };
    let progress = |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    };
    match &router {
        Some(_) => progress(&format!("demo router listening on {}", socket.display())),
        None => progress(&format!("using the daemon at {}", socket.display())),
    }

    let mut peer = Command::new(std::env::current_exe()?)
        .args(["demo-peer", "--socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut peer_out = BufReader::new(peer.stdout.take().ok_or("peer stdout")?);
    let mut line = String::new();
    peer_out.read_line(&mut line)?;
    if !line.starts_with("ready") {
        return Err(format!("demo peer did not start: {line:?}").into());
    }

    let mut driver = Agent::builder("demo-driver")
        .socket(&socket)
        .idle(IdleStrategy::default())
        .connect()?;
    let found = driver.discover("echo", "^1")?;
    let echo = found.first().ok_or("discovery found no echo agent")?;
    progress(&format!(
        "discovered {} (agent {}) offering echo {}",
        echo.name, echo.agent_id, echo.version
    ));

    let mut rtt = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let payload = vec![7u8; payload_bytes];
    for _ in 0..round_trips {
        let start = Instant::now();
        let reply = driver.request(echo.agent_id, &payload, Duration::from_secs(5))?;
        rtt.record(start.elapsed().as_nanos() as u64)?;
        if reply.payload() != payload.as_slice() {
            return Err("echo returned a different payload".into());
        }
    }
    progress(&format!(
        "{round_trips} request/response round trips: p50 {} ns, p99 {} ns",
        rtt.value_at_quantile(0.5),
        rtt.value_at_quantile(0.99)
    ));

    let mut buf = vec![0u8; payload_bytes];
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut seq = 0u64;
    while seq < messages {
        let batch_end = (seq + 32).min(messages);
        let frames: Vec<Vec<u8>> = (seq..batch_end)
            .map(|s| {
                buf[..8].copy_from_slice(&s.to_le_bytes());
                buf.clone()
            })
            .collect();
        match driver.send_batch(echo.agent_id, frames.iter().map(|f| f.as_slice())) {
            Ok(_) => seq = batch_end,
            Err(ClientError::Backpressure(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        if !json && last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "  sent {seq}/{messages} ({:.2} M msg/s)",
                seq as f64 / start.elapsed().as_secs_f64() / 1e6
            );
            last_report = Instant::now();
        }
    }
    driver.publish("demo", b"bye")?;
    line.clear();
    peer_out.read_line(&mut line)?;
    let elapsed = start.elapsed();
    let status = peer.wait()?;
    if !status.success() {
        return Err(format!("demo peer exited with {status}").into());
    }
    let counted = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (received, out_of_order) = (counted("sends"), counted("out_of_order"));
    let rate = messages as f64 / elapsed.as_secs_f64();
    let router_name = if router.is_some() {
        "test-router (single thread, minimal)"
    } else {
        "daemon"
    };
    let delivered = match router {
        Some(router) => router
            .stats()
            .frames_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        None => agentwire_shm::client::query_status(&socket)?
            .counters
            .iter()
            .find(|(name, _)| name == "frames_delivered")
            .map_or(0, |(_, v)| *v),
    };
    if json {
        let report = serde_json::json!({
            "router": router_name,
            "msg_size": payload_bytes,
            "sent": messages,
            "delivered": received,
            "lost": messages.saturating_sub(received),
            "out_of_order": out_of_order,
            "msgs_per_s": rate.round(),
            "router_frames_delivered": delivered,
            "request_response_ns": {
                "p50": rtt.value_at_quantile(0.5), "p99": rtt.value_at_quantile(0.99),
                "p999": rtt.value_at_quantile(0.999), "max": rtt.max()
            }
        });
        outln!("{report}")?;
    } else {
        outln!("agentwire demo (through the {router_name})")?;
        outln!("  unicast   {messages} x {payload_bytes} B: {received} delivered, {} lost, {out_of_order} out of order, {:.2} M msg/s", messages.saturating_sub(received), rate / 1e6)?;
        outln!(
            "  req/resp  {round_trips} round trips: p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns",
            rtt.value_at_quantile(0.5),
            rtt.value_at_quantile(0.99),
            rtt.value_at_quantile(0.999),
            rtt.max()
        )?;
        outln!("  router    {delivered} frames delivered")?;
    }
    if received != messages || out_of_order != 0 {
        return Err(format!(
            "delivery check failed: {received}/{messages} delivered, {out_of_order} out of order"
        )
        .into());
    }
    Ok(())
}
