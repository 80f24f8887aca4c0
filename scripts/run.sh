#!/usr/bin/env bash
# Sets up what is missing, builds agentwire in release mode, and runs its main job on the
# embedded default config. Until the daemon (issue 3) lands, the main job is `agentwire demo`:
# the shm data plane end to end through the minimal router, with a second agent process.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p agentwire-tools
exec ./target/release/agentwire demo "$@"
