#!/usr/bin/env bash
# Sets up what is missing and runs the whole test suite: formatting, clippy, unit,
# integration and doc tests, and every bench compiled and run once in test mode
# (`--all-targets` includes `--benches`, so benches cannot rot). `--all-features` builds,
# lints and tests the optional parts too, such as the streaming engine's Kafka bridge
# (tested against librdkafka's in-process mock cluster, so no broker is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== fmt" >&2
cargo fmt --all -- --check
echo "== clippy" >&2
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
echo "== tests (lib, bins, integration tests, benches in test mode)" >&2
cargo test --workspace --all-targets --all-features --quiet
echo "== doc tests" >&2
cargo test --workspace --doc --all-features --quiet
