"""Python process to Python process: agentwire through the daemon against pyzmq over ipc://
and iceoryx2's Python package (publish-subscribe), measured in one run.

For each transport, two processes (this script with --role) exchange 64-byte messages:
- throughput: one sends N messages, the other receives them; msgs/s from the receiver's
  clock, first to last message;
- round trip: request and response, M times after a warm-up; p50/p99/p99.9 of the round trip.
Every received count is checked, so a broken run fails instead of printing a number.

    .venv/bin/python shm/python/bench/bench.py --agentwire-bin target/release/agentwire [--json]

It starts its own daemon (`agentwire serve`, release build) on a socket in a temp dir.
Build the extension in release first (`pip install ./shm/python`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PAYLOAD_BYTES = 64
WATCHDOG_S = 120.0
#: How agentwire agents idle while waiting (--agentwire-idle; children read it from the env).
AW_IDLE = os.environ.get("AW_BENCH_IDLE", "spin-then-park")


def pct(sorted_ns, q):
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))]


def rtt_summary(samples_ns):
    s = sorted(samples_ns)
    return {
        "p50_us": pct(s, 0.50) / 1e3,
        "p99_us": pct(s, 0.99) / 1e3,
        "p999_us": pct(s, 0.999) / 1e3,
        "mean_us": statistics.fmean(s) / 1e3,
    }


def emit(obj):
    print(json.dumps(obj), flush=True)


def progress(text):
    print(text, file=sys.stderr, flush=True)


class Watchdog:
    """For polling loops: fails the run instead of spinning forever if the peer is gone."""

    def __init__(self):
        self.deadline = time.monotonic() + WATCHDOG_S
        self.polls = 0

    def check(self):
        self.polls += 1
        if self.polls % 4096 == 0 and time.monotonic() > self.deadline:
            raise SystemExit("watchdog: the peer stopped")


def hold_until_counted():
    """A sender stays connected until the driver saw the receiver count everything (EOF on
    stdin): a ZeroMQ receiver drops what its pipe still holds when the sending peer
    disconnects (measured: ~400 of 200,000 PUSH/PULL or PAIR messages over ipc:// lost when
    the sender closed with linger=-1 and exited right away)."""
    sys.stdin.read()


def die_with_parent():
    """Children get SIGKILL when the driver dies, so no spinning role outlives a failed run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


# ---------------------------------------------------------------- agentwire


def aw_sink(socket, n):
    import agentwire

    with agentwire.Agent("bench-sink", socket=socket, idle=AW_IDLE, ring_capacity=1 << 22) as a:
        emit({"id": a.agent_id})
        got = 0
        first = None
        while got < n:
            m = a.recv(timeout=WATCHDOG_S)
            assert m is not None, "watchdog: the sender stopped"
            m.payload[0]  # touch the bytes in the ring
            got += 1
            if first is None:
                first = time.perf_counter()
        last = time.perf_counter()
        emit({"count": got, "msgs_per_s": (got - 1) / (last - first)})


def aw_source(socket, n, to):
    import agentwire

    with agentwire.Agent("bench-source", socket=socket, idle=AW_IDLE) as a:
        payload = bytes(PAYLOAD_BYTES)
        for _ in range(n):
            a.send(to, payload)
        emit({"sent": n})
        hold_until_counted()


def aw_echo(socket, m):
    import agentwire

    with agentwire.Agent("bench-echo", socket=socket, idle=AW_IDLE) as a:
        emit({"id": a.agent_id})
        for _ in range(m):
            req = a.recv(timeout=WATCHDOG_S)
            assert req is not None, "watchdog: the client stopped"
            a.respond(req, req.payload)


def aw_client(socket, m, warmup, to):
    import agentwire

    with agentwire.Agent("bench-client", socket=socket, idle=AW_IDLE) as a:
        payload = bytes(PAYLOAD_BYTES)
        samples = []
        for i in range(m):
            t0 = time.perf_counter_ns()
            reply = a.request(to, payload, timeout=WATCHDOG_S)
            t1 = time.perf_counter_ns()
            assert len(reply) == PAYLOAD_BYTES
            if i >= warmup:
                samples.append(t1 - t0)
        emit(rtt_summary(samples))


# ---------------------------------------------------------------- pyzmq


def zmq_sink(endpoint, n):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(endpoint)
    emit({"ready": True})
    got = 0
    first = None
    while got < n:
        if not s.poll(WATCHDOG_S * 1000):
            raise SystemExit(f"watchdog: the sender stopped after {got} of {n} messages")
        msg = s.recv(copy=True)
        msg[0]
        got += 1
        if first is None:
            first = time.perf_counter()
    last = time.perf_counter()
    emit({"count": got, "msgs_per_s": (got - 1) / (last - first)})
    s.close(linger=0)
    ctx.term()


def zmq_source(endpoint, n):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(endpoint)
    payload = bytes(PAYLOAD_BYTES)
    for _ in range(n):
        s.send(payload)
    emit({"sent": n})
    hold_until_counted()
    s.close(linger=-1)
    ctx.term()


def zmq_echo(endpoint, m):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.REP)
    s.bind(endpoint)
    emit({"ready": True})
    for _ in range(m):
        s.send(s.recv())
    s.close(linger=-1)
    ctx.term()


def zmq_client(endpoint, m, warmup):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.connect(endpoint)
    payload = bytes(PAYLOAD_BYTES)
    samples = []
    for i in range(m):
        t0 = time.perf_counter_ns()
        s.send(payload)
        reply = s.recv()
        t1 = time.perf_counter_ns()
        assert len(reply) == PAYLOAD_BYTES
        if i >= warmup:
            samples.append(t1 - t0)
    s.close(linger=0)
    ctx.term()
    emit(rtt_summary(samples))


# ---------------------------------------------------------------- iceoryx2


class Payload(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * PAYLOAD_BYTES)]


def iox_service(node, name, buffer):
    import iceoryx2 as iox2

    return (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(Payload)
        .subscriber_max_buffer_size(buffer)
        .history_size(0)
        .enable_safe_overflow(False)  # lossless: the publisher retries instead
        .open_or_create()
    )


def iox_node():
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Warn)
    return iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)


def iox_publisher(service):
    import iceoryx2 as iox2

    return (
        service.publisher_builder()
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .create()
    )


def iox_sink(name, n):
    node = iox_node()
    sub = iox_service(node, name, 1024).subscriber_builder().create()
    emit({"ready": True})
    got = 0
    first = None
    dog = Watchdog()
    while got < n:  # iceoryx2's publish-subscribe has no blocking receive: poll
        sample = sub.receive()
        if sample is None:
            dog.check()
            continue
        sample.payload().contents.data[0]
        sample.delete()
        got += 1
        if first is None:
            first = time.perf_counter()
    last = time.perf_counter()
    emit({"count": got, "msgs_per_s": (got - 1) / (last - first)})


def iox_source(name, n):
    node = iox_node()
    pub = iox_publisher(iox_service(node, name, 1024))
    payload = Payload()
    for _ in range(n):
        pub.send_copy(payload)
    emit({"sent": n})
    hold_until_counted()


def iox_echo(name, m):
    node = iox_node()
    sub = iox_service(node, name + "/ping", 16).subscriber_builder().create()
    pub = iox_publisher(iox_service(node, name + "/pong", 16))
    emit({"ready": True})
    done = 0
    dog = Watchdog()
    while done < m:
        sample = sub.receive()
        if sample is None:
            dog.check()
            continue
        reply = pub.loan_uninit()
        ctypes.memmove(reply.payload_ptr, sample.payload_ptr, PAYLOAD_BYTES)
        sample.delete()
        reply.assume_init().send()
        done += 1


def iox_client(name, m, warmup):
    node = iox_node()
    pub = iox_publisher(iox_service(node, name + "/ping", 16))
    sub = iox_service(node, name + "/pong", 16).subscriber_builder().create()
    payload = Payload()
    samples = []
    dog = Watchdog()
    for i in range(m):
        t0 = time.perf_counter_ns()
        pub.send_copy(payload)
        while True:
            sample = sub.receive()
            if sample is not None:
                break
            dog.check()
        sample.delete()
        t1 = time.perf_counter_ns()
        if i >= warmup:
            samples.append(t1 - t0)
    emit(rtt_summary(samples))


# ---------------------------------------------------------------- driver

ROLES = {
    "aw_sink": aw_sink,
    "aw_source": aw_source,
    "aw_echo": aw_echo,
    "aw_client": aw_client,
    "zmq_sink": zmq_sink,
    "zmq_source": zmq_source,
    "zmq_echo": zmq_echo,
    "zmq_client": zmq_client,
    "iox_sink": iox_sink,
    "iox_source": iox_source,
    "iox_echo": iox_echo,
    "iox_client": iox_client,
}


def spawn(role, *args):
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )


def line(proc):
    out = proc.stdout.readline()
    if not out:
        raise RuntimeError(f"{proc.args[3]} exited with {proc.wait()} before answering")
    return json.loads(out)


def finish(*procs):
    for p in procs:
        p.stdin.close()
    for p in procs:
        if p.wait(WATCHDOG_S) != 0:
            raise RuntimeError(f"{p.args[3]} failed with {p.returncode}")


def pair_run(server_role, server_args, client_role, client_args, pass_id):
    """Starts the server side, then the client (given the server's agent id if pass_id)."""
    server = spawn(server_role, *server_args)
    hello = line(server)
    extra = [hello["id"]] if pass_id else []
    client = spawn(client_role, *client_args, *extra)
    return server, client


def run_throughput(kind, target, n):
    if kind == "agentwire":
        sink, source = pair_run("aw_sink", [target, n], "aw_source", [target, n], True)
    elif kind == "pyzmq":
        sink, source = pair_run("zmq_sink", [target, n], "zmq_source", [target, n], False)
    else:
        sink, source = pair_run("iox_sink", [target, n], "iox_source", [target, n], False)
    line(source)
    result = line(sink)
    finish(source, sink)
    assert result["count"] == n, result
    return result["msgs_per_s"]


def run_rtt(kind, target, m, warmup):
    if kind == "agentwire":
        echo, client = pair_run("aw_echo", [target, m], "aw_client", [target, m, warmup], True)
    elif kind == "pyzmq":
        echo, client = pair_run("zmq_echo", [target, m], "zmq_client", [target, m, warmup], False)
    else:
        echo, client = pair_run("iox_echo", [target, m], "iox_client", [target, m, warmup], False)
    result = line(client)
    finish(client, echo)
    return result


def start_daemon(binary, tmp):
    socket = os.path.join(tmp, "agentwire.sock")
    env = dict(os.environ, AGENTWIRE_DLQ=os.path.join(tmp, "dlq.log"))
    log = open(os.path.join(tmp, "daemon.log"), "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--metrics-port", "0", "--socket", socket],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 30
    while subprocess.run([binary, "status", "--socket", socket], capture_output=True).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not come up: see " + log.name)
        time.sleep(0.05)
    return proc, socket


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--agentwire-bin", default="target/release/agentwire")
    ap.add_argument("--messages", type=int, default=200_000, help="per throughput run")
    ap.add_argument("--round-trips", type=int, default=20_000, help="per round-trip run")
    ap.add_argument("--warmup", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per cell (median and spread)")
    ap.add_argument("--only", choices=["agentwire", "pyzmq", "iceoryx2"], action="append")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--agentwire-idle",
        default="spin-then-park",
        choices=["spin", "spin-then-park", "park"],
        help="how agentwire agents wait (the client library's idle strategy)",
    )
    args, rest = ap.parse_known_args()
    if args.role:
        ROLES[args.role](*[int(a) if a.isdigit() else a for a in rest])
        return

    kinds = args.only or ["agentwire", "pyzmq", "iceoryx2"]
    os.environ["AW_BENCH_IDLE"] = args.agentwire_idle
    results = {}
    with tempfile.TemporaryDirectory(prefix="aw-pybench-") as tmp:
        daemon, socket = (None, None)
        if "agentwire" in kinds:
            daemon, socket = start_daemon(args.agentwire_bin, tmp)
        try:
            for kind in kinds:
                rates, rtts = [], []
                for run in range(args.runs):
                    target = {
                        "agentwire": socket,
                        "pyzmq": f"ipc://{tmp}/zmq-{run}",
                        "iceoryx2": f"aw-pybench/{os.getpid()}/{run}",
                    }[kind]
                    progress(f"{kind} run {run + 1}: throughput")
                    rates.append(run_throughput(kind, target, args.messages))
                    rt_target = target if kind == "agentwire" else target + "-rt"
                    progress(f"{kind} run {run + 1}: round trip")
                    rtts.append(run_rtt(kind, rt_target, args.round_trips, args.warmup))
                results[kind] = {
                    "msgs_per_s_median": statistics.median(rates),
                    "msgs_per_s_runs": rates,
                    "rtt_p50_us_median": statistics.median(r["p50_us"] for r in rtts),
                    "rtt_p99_us_median": statistics.median(r["p99_us"] for r in rtts),
                    "rtt_p999_us_median": statistics.median(r["p999_us"] for r in rtts),
                    "rtt_runs": rtts,
                }
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(30)
    meta = {
        "payload_bytes": PAYLOAD_BYTES,
        "messages": args.messages,
        "round_trips": args.round_trips,
        "warmup": args.warmup,
        "runs": args.runs,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "agentwire_idle": args.agentwire_idle,
    }
    # The table goes to stdout, or with --json to stderr (stdout is then the JSON).
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"64-byte messages, Python process to Python process, median of {args.runs} runs", file=out)
    print(f"{'transport':<34} {'msgs/s':>12} {'spread':>17} {'rtt p50':>9} {'p99':>9} {'p99.9':>9}", file=out)
    names = {
        "agentwire": "agentwire (through the daemon)",
        "pyzmq": "pyzmq ipc:// (PUSH/PULL, REQ/REP)",
        "iceoryx2": "iceoryx2 0.10 publish-subscribe",
    }
    for kind, r in results.items():
        spread = f"{min(r['msgs_per_s_runs']):,.0f}-{max(r['msgs_per_s_runs']):,.0f}"
        print(
            f"{names[kind]:<34} {r['msgs_per_s_median']:>12,.0f} {spread:>17} "
            f"{r['rtt_p50_us_median']:>7.1f}us {r['rtt_p99_us_median']:>7.1f}us "
            f"{r['rtt_p999_us_median']:>7.1f}us",
            file=out,
        )


if __name__ == "__main__":
    main()
