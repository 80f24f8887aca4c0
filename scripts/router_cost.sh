#!/usr/bin/env bash
# What a frame costs the router core at each rate, from its timed duty cycles (docs/twin.md
# "The time per frame follows the load"; BENCHMARKS.md "What-if simulation"): starts a
# daemon, drives it with `agentwire load --mode open` at each RATE for 5 s, reads the router
# shard's counters twice 2 s apart (`agentwire twin state --json`) and prints frames a busy
# pass, ns a busy pass, the share of deliveries that woke a parked consumer and what a wake
# cost, ns an idle pass, ns a frame and the core's busy share.
#
# Usage: scripts/router_cost.sh [RATE ...]   (default: 20000 200000 1000000)
# Environment: AGENTWIRE (default target/release/agentwire, built with
# `cargo build --release -p agentwire-tools`).
set -euo pipefail

agentwire=${AGENTWIRE:-target/release/agentwire}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(20000 200000 1000000)
bench_name=router-cost
# shellcheck source=scripts/bench_daemon.sh
source "$(dirname "$0")/bench_daemon.sh"

for rate in "${rates[@]}"; do
    load_window "$rate" "$dir/r.json" "$dir/a.json" "$dir/b.json"
    python3 - "$dir/a.json" "$dir/b.json" "$rate" "$window_ns" <<'PY'
import json
import sys


def shard(path):
    for s in json.load(open(path))["slots"]:
        if s["name"].startswith("router."):
            return s["counters"]


a, b = shard(sys.argv[1]), shard(sys.argv[2])
d = {k: b[k] - a[k] for k in b}
busy, idle = max(1, d["busy_passes_sampled"]), max(1, d["idle_passes_sampled"])
frames_per_pass = d["busy_frames_sampled"] / busy
pass_ns = d["busy_ns_sampled"] / busy
wakes = max(1, d["busy_wakes_sampled"])
busy_share = pass_ns * (d["duty_cycles"] - d["duty_cycles_idle"]) / int(sys.argv[4])
print(
    f"rate {sys.argv[3]}/s: {frames_per_pass:.2f} frames a busy pass, {pass_ns:.0f} ns a busy "
    f"pass; woke its consumer for {d['agents_woken'] / max(1, d['frames_delivered']):.0%} of "
    f"deliveries, {d['busy_wake_ns_sampled'] / wakes:.0f} ns a wake; "
    f"{d['idle_ns_sampled'] / idle:.0f} ns an idle pass; "
    f"{pass_ns / max(frames_per_pass, 1e-9):.0f} ns a frame; core busy {busy_share:.0%}"
)
PY
done
