#!/usr/bin/env bash
# Sets up what is missing, builds agentwire in release mode, and runs its main job on the
# embedded default config: the daemon, `agentwire serve`, in the foreground (Ctrl-C or
# SIGTERM drain it and exit 0). In another terminal: `./target/release/agentwire status`,
# `./target/release/agentwire demo --attach` (traffic through it).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p agentwire-tools
exec ./target/release/agentwire serve "$@"
