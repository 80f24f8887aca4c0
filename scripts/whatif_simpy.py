#!/usr/bin/env python3
"""The what-if packet model in SimPy, to compare with agentwire's Rust packet simulator.

`engines/twin/src/whatif/packet.rs` simulates the daemon's queueing model (`model.rs`)
frame by frame as discrete events. This script implements the same model with SimPy, so
`agentwire` can run both on one model and compare their outputs (they should agree within
sampling noise: the random streams differ) and their speed.

The model: every (flow, class) with a rate above 0 is a Poisson source whose frames wait
in their producer lane (at most 65,536 frames; beyond that the producer stalls and the
frame is counted, not queued). Flow i is served by router shard i mod router_cores; a
shard visits its flows in turn and each flow's lanes class 0 to 3, routing up to 2b,
3b/2, b and max(b/2, 1) frames per visit (b = batch_frames, the router's lane budgets) and
skipping a lane that is empty or whose consumer has no room (queue + in-flight >= ring +
deferral). A frame costs router_service_ns * (1 - cv) + Exp(router_service_ns * cv) ns. A
routed frame joins its consumer's FIFO; beyond ring_frames it is deferred, and a deferred
frame still past the ring more than defer_deadline_ns after it was deferred is
dead-lettered (checked whenever the shard considers the flow, a frame is routed to it or
the consumer reads, as the router expires a deferral's head every duty cycle). The
consumer reads one frame per consumer_service_ns. Counts and latencies are of what happens
after the first 5% of the run (the warm-up). Times are whole nanoseconds, rounded as the
Rust simulator rounds them.

Usage: python3 scripts/whatif_simpy.py --model MODEL.json --seconds S --seed N
Prints one JSON object on stdout. Exit 2: bad argument or model; exit 1: no simpy.
"""

import argparse
import collections
import json
import math
import random
import sys
import time

CLASSES = 4
LANE_FRAMES_MAX = 65_536
FIELDS = ("flows", "router_cores", "router_service_ns", "service_cv", "batch_frames",
          "consumer_service_ns", "hop_ns", "ring_frames", "deferral_frames",
          "defer_deadline_ns")


def fail(code, message):
    print(f"whatif_simpy: {message}", file=sys.stderr)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        fail(2, f"{message} (see --help)")


def load_model(path):
    """Reads the Rust `Model` JSON and checks it as `Model::validate` does."""
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read model {path}: {e}") from None
    if not isinstance(m, dict):
        raise ValueError(f"model {path} is not a JSON object")
    for name in FIELDS:
        if name not in m:
            raise ValueError(f"model {path} lacks field {name}")
    rates = []
    for flow in m["flows"] if isinstance(m["flows"], list) else [None]:
        r = flow.get("class_rates_per_s") if isinstance(flow, dict) else None
        if not (isinstance(r, list) and len(r) == CLASSES
                and all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in r)):
            raise ValueError("flows must be objects with 4 class_rates_per_s of 0 or more")
        rates.append([float(x) for x in r])
    num = lambda k: isinstance(m[k], (int, float)) and not isinstance(m[k], bool) and math.isfinite(m[k])
    whole = lambda k: isinstance(m[k], int) and not isinstance(m[k], bool) and m[k] >= 0
    checks = [
        (whole("router_cores") and m["router_cores"] >= 1, "router_cores must be at least 1"),
        (num("router_service_ns") and m["router_service_ns"] > 0, "router_service_ns must be above 0"),
        (num("service_cv") and 0 <= m["service_cv"] <= 1, "service_cv must be within 0 to 1"),
        (whole("batch_frames") and m["batch_frames"] >= 1, "batch_frames must be at least 1"),
        (num("consumer_service_ns") and m["consumer_service_ns"] >= 0 and num("hop_ns")
         and m["hop_ns"] >= 0, "consumer_service_ns and hop_ns must be 0 or more"),
        (whole("ring_frames") and m["ring_frames"] >= 1, "ring_frames must be at least 1"),
        (whole("deferral_frames"), "deferral_frames must be a whole number, 0 or more"),
        (whole("defer_deadline_ns"), "defer_deadline_ns must be a whole number, 0 or more"),
    ]
    for ok, why in checks:
        if not ok:
            raise ValueError(f"bad model: {why}")
    return m, rates


def simulate(simpy, m, rates, seconds, seed):
    """Runs the model for `seconds`; returns the outcome as a dict."""
    env = simpy.Environment()
    rng = random.Random(seed)
    uniform = rng.random
    cores = m["router_cores"]
    s_ns, cv = float(m["router_service_ns"]), float(m["service_cv"])
    read_ns = int(max(1.0, float(m["consumer_service_ns"])))
    hop_ns = float(m["hop_ns"])
    ring, deadline = m["ring_frames"], m["defer_deadline_ns"]
    capacity = ring + m["deferral_frames"]
    b = max(1, int(m["batch_frames"]))
    budgets = [2 * b, 3 * b // 2, b, max(1, b // 2)]  # the router's lane_batch_frames
    warmup_ns = int(seconds * 0.05 * 1e9)
    end_ns = int(seconds * 1e9)

    lanes = [collections.deque() for _ in range(len(rates) * CLASSES)]
    queues = [collections.deque() for _ in rates]  # (arrival ns, deferred at ns or None)
    in_flight = [0] * len(rates)
    consumer_wake = [None] * len(rates)  # the event an idle consumer waits on
    shard_flows = [[f for f in range(len(rates)) if f % cores == sh] for sh in range(cores)]
    shard_wake = [None] * cores  # the event an idle shard waits on
    # `events` counts SimPy events that resume a process: every timeout (an arrival gap, a
    # routing, a read) and every wake-up event that fires, up to the end of the run. The
    # Rust simulator counts arrivals, routings and reads, so this is that plus the wake-ups.
    stats = {"events": 0, "deferred": 0, "dead": 0, "stalled": 0}
    latencies = []

    def wake(waiters, i):
        if waiters[i] is not None:
            waiters[i].succeed()
            waiters[i] = None

    def expire(flow, now):
        # The router expires the deferral's head (the frames past the ring) once it has
        # waited the deadline, every duty cycle; packet.rs's expire_deferred.
        queue = queues[flow]
        while deadline > 0 and len(queue) > ring:
            _, deferred_at = queue[ring]
            if deferred_at is None or now - deferred_at <= deadline:
                break
            del queue[ring]
            if now >= warmup_ns:
                stats["dead"] += 1

    def source(src, gap_ns):
        lane, shard = lanes[src], (src // CLASSES) % cores
        next_ns = 0.0  # kept to the fraction of a ns, as in packet.rs
        while True:  # exponential gaps by inverse transform
            next_ns += -gap_ns * math.log(1.0 - uniform())
            yield env.timeout(max(0, math.floor(next_ns + 0.5) - env.now))
            stats["events"] += 1
            if len(lane) >= LANE_FRAMES_MAX:
                stats["stalled"] += 1
            else:
                lane.append(env.now)
            wake(shard_wake, shard)

    def router(sh):
        flows = shard_flows[sh]
        pos, cls, budget = 0, 0, 0  # the lane being visited and frames left in its visit
        while True:
            picked = None
            # Packet.rs's start_routing: at most one full round of lanes, and one more.
            for _ in range(len(flows) * CLASSES + 1):
                flow = flows[pos]
                lane = lanes[flow * CLASSES + cls]
                if budget > 0 and lane:
                    expire(flow, env.now)
                if budget > 0 and lane and len(queues[flow]) + in_flight[flow] < capacity:
                    budget -= 1
                    picked = (flow, lane.popleft())
                    break
                pos, cls = (pos, cls + 1) if cls + 1 < CLASSES else ((pos + 1) % len(flows), 0)
                budget = budgets[cls]
            if picked is None:  # nothing routable: sleep until an arrival or a read
                shard_wake[sh] = env.event()
                yield shard_wake[sh]
                stats["events"] += 1
                continue
            flow, arrival = picked
            in_flight[flow] += 1
            service = int(max(1.0, s_ns * (1.0 - cv) - s_ns * cv * math.log(1.0 - uniform())))
            yield env.timeout(service)
            stats["events"] += 1
            in_flight[flow] -= 1
            expire(flow, env.now)
            queue = queues[flow]
            deferred_at = None
            if len(queue) >= ring:
                deferred_at = env.now
                if env.now >= warmup_ns:
                    stats["deferred"] += 1
            queue.append((arrival, deferred_at))
            wake(consumer_wake, flow)

    def consumer(c):
        queue, shard = queues[c], c % cores
        while True:
            if not queue:
                consumer_wake[c] = env.event()
                yield consumer_wake[c]
                stats["events"] += 1
                continue
            yield env.timeout(read_ns)
            stats["events"] += 1
            now = env.now
            arrival, _ = queue.popleft()
            if now >= warmup_ns:
                latencies.append(math.floor(now - arrival + hop_ns + 0.5))
            expire(c, now)
            wake(shard_wake, shard)  # room freed: the shard may route this flow again

    for flow, class_rates in enumerate(rates):
        for cls, rate in enumerate(class_rates):
            if rate > 0:
                env.process(source(flow * CLASSES + cls, 1e9 / rate))
        env.process(consumer(flow))
    for sh in range(cores):
        if shard_flows[sh]:
            env.process(router(sh))

    started = time.perf_counter()
    # Times are whole ns; events at end_ns still happen (packet.rs stops after them).
    env.run(until=end_ns + 0.5)
    wall_s = time.perf_counter() - started

    measured_s = max(seconds - warmup_ns / 1e9, 1e-9)
    latencies.sort()

    def quantile(q):  # nearest rank
        if not latencies:
            return 0.0
        rank = max(1, math.ceil(q * len(latencies) - 1e-9))
        return float(latencies[rank - 1])

    return {
        "simulator": "simpy",
        "simulated_s": measured_s,
        "offered_per_s": sum(map(sum, rates)),
        "throughput_per_s": len(latencies) / measured_s,
        "latency": {"p50_ns": quantile(0.5), "p90_ns": quantile(0.9),
                    "p99_ns": quantile(0.99), "p999_ns": quantile(0.999)},
        "deferred_per_s": stats["deferred"] / measured_s,
        "dead_lettered_per_s": stats["dead"] / measured_s,
        "events": stats["events"],
        "wall_s": wall_s,
    }


def main():
    parser = Parser(
        description="Simulate an agentwire what-if model (the Rust Model's JSON) frame by "
        "frame with SimPy, the same model as the Rust packet simulator "
        "(engines/twin/src/whatif/packet.rs), to compare their outputs and speed. "
        "Prints one JSON object: throughput, latency percentiles, deferred and "
        "dead-lettered rates, SimPy events processed and the wall time of the run.")
    parser.add_argument("--model", required=True, help="the model, as serde_json writes it")
    parser.add_argument("--seconds", required=True, type=float,
                        help="simulated seconds (the first 5%% is warm-up, not measured)")
    parser.add_argument("--seed", required=True, type=int, help="random seed (0 or more)")
    args = parser.parse_args()
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        fail(2, f"--seconds must be above 0, not {args.seconds}")
    if args.seed < 0:
        fail(2, f"--seed must be 0 or more, not {args.seed}")
    try:
        model, rates = load_model(args.model)
    except ValueError as e:
        fail(2, str(e))
    try:
        import simpy
    except ImportError:
        fail(1, "simpy is not installed: scripts/setup.sh installs it into .venv")
    print(json.dumps(simulate(simpy, model, rates, args.seconds, args.seed)))


if __name__ == "__main__":
    main()
