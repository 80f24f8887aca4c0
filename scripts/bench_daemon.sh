# Sourced by the bench scripts (whatif_validate.sh, router_cost.sh): checks the agentwire
# binary, starts a default daemon on a socket in a fresh scratch directory, waits for its
# socket, and stops it and removes the directory when the script exits.
#
# Before sourcing: `agentwire` (the binary) and `bench_name` (for messages and the scratch
# directory's name). After: `dir` (the scratch directory), `dir/a.sock` (the socket), `serve`
# (the daemon's pid).

if [ ! -x "$agentwire" ]; then
    echo "$bench_name: no $agentwire (cargo build --release -p agentwire-tools)" >&2
    exit 2
fi
dir=$(mktemp -d -t "agentwire-$bench_name-XXXXXX")
"$agentwire" serve --metrics-port 0 --socket "$dir/a.sock" --dlq "$dir/dlq.log" \
    > "$dir/serve.log" 2>&1 &
serve=$!
trap 'kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    [ -S "$dir/a.sock" ] && break
    sleep 0.1
done
if [ ! -S "$dir/a.sock" ]; then
    echo "$bench_name: the daemon did not start; its log:" >&2
    cat "$dir/serve.log" >&2
    exit 1
fi

# load_window RATE REPORT BEFORE AFTER: an `agentwire load --mode open` run at RATE messages a
# second for 5 s (its JSON report in REPORT), with the mirror read (`twin state --json`) 1.5 s
# in (BEFORE) and 2 s later (AFTER); sets `window_ns` to the time between the two reads.
load_window() {
    local rate=$1 report=$2 before=$3 after=$4 load t0
    "$agentwire" load --socket "$dir/a.sock" --mode open --rate "$rate" --duration 5 \
        --json > "$report" &
    load=$!
    sleep 1.5
    "$agentwire" twin state --socket "$dir/a.sock" --json > "$before"
    t0=$(date +%s%N)
    sleep 2
    "$agentwire" twin state --socket "$dir/a.sock" --json > "$after"
    window_ns=$(($(date +%s%N) - t0))
    wait "$load"
}
