#!/usr/bin/env bash
# What-if validation against the real thing (BENCHMARKS.md "What-if simulation"): start a
# daemon, drive it with `agentwire load` at BASE_RATE messages a second, calibrate a model
# over 3 s of that run, take the hop from the run's report, then for each factor K predict
# the run at BASE_RATE × K and measure it, printing the errors of the throughput, the p50
# and the router core's busy share (measured from its timed duty cycles over 2 s of the run).
#
# Usage: scripts/whatif_validate.sh [FACTOR ...]   (default: 2 5 10)
# Environment: AGENTWIRE (the binary; default target/release/agentwire, built first with
# `cargo build --release -p agentwire-tools`), BASE_RATE (default 20000), SATURATED_NS (a
# saturated router core's ns a frame, `cargo bench -p agentwire-benches --bench routed --
# drain`: 1e9 / its median; default 25).
set -euo pipefail

agentwire=${AGENTWIRE:-target/release/agentwire}
base_rate=${BASE_RATE:-20000}
saturated_ns=${SATURATED_NS:-25}
factors=("$@")
[ ${#factors[@]} -gt 0 ] || factors=(2 5 10)
bench_name=whatif-validate
# shellcheck source=scripts/bench_daemon.sh
source "$(dirname "$0")/bench_daemon.sh"

echo "whatif_validate: run A at $base_rate/s, calibrating over 3 s of it" >&2
"$agentwire" load --socket "$dir/a.sock" --mode open --rate "$base_rate" --duration 8 \
    --json > "$dir/A.json" &
load=$!
sleep 2
"$agentwire" twin whatif --socket "$dir/a.sock" --window-ms 3000 --flows 1 \
    --saturated-ns "$saturated_ns" \
    --save-model "$dir/m.json" --json > /dev/null
wait "$load"

for k in "${factors[@]}"; do
    rate=$((base_rate * k))
    "$agentwire" twin whatif --model "$dir/m.json" --load-report "$dir/A.json" \
        --scenario "load=$k" --json > "$dir/p$k.json"
    # The router's busy time over 2 s of the run, from its timed duty cycles.
    load_window "$rate" "$dir/r$k.json" "$dir/s$k.a.json" "$dir/s$k.b.json"
    python3 - "$dir/p$k.json" "$dir/r$k.json" "$rate" "$dir/s$k.a.json" "$dir/s$k.b.json" \
        "$window_ns" <<'PY'
import json
import sys

p = json.load(open(sys.argv[1]))
r = json.load(open(sys.argv[2]))
pred = p["predicted"]
pt, mt = pred["throughput_per_s"], r["msgs_per_s"]
pp, mp = pred["latency"]["p50_ns"], r["latency_ns"]["p50"]


def shards(path):
    return [s["counters"] for s in json.load(open(path))["slots"] if s["name"].startswith("router.")]


busy_ns = 0.0
for a, b in zip(shards(sys.argv[4]), shards(sys.argv[5])):
    d = {k: b[k] - a[k] for k in b}
    timed = d["busy_passes_sampled"]
    if timed:
        busy_ns += d["busy_ns_sampled"] / timed * (d["duty_cycles"] - d["duty_cycles_idle"])
mu = busy_ns / (int(sys.argv[6]) * len(shards(sys.argv[5])))
pu = max(pred["router_utilisation"])
print(
    f"rate {sys.argv[3]}/s: throughput predicted {pt:.0f} measured {mt:.0f} "
    f"({100 * (pt / mt - 1):+.1f}%); p50 predicted {pp / 1e3:.1f} us measured "
    f"{mp / 1e3:.1f} us ({100 * (pp / mp - 1):+.1f}%); router busy predicted {pu:.3f} "
    f"measured {mu:.3f} ({100 * (pu / mu - 1):+.1f}%); service {p['model']['router_service_ns']:.0f} ns "
    f"at the base rate, hop {p['model']['hop_ns'] / 1e3:.1f} us"
)
PY
done
