#!/usr/bin/env bash
# Installs what agentwire needs to build on a fresh Debian machine with a Rust toolchain:
# the C libraries behind hwlocality (NUMA placement), pkg-config, perf (for
# `agentwire perf record`), and what the streaming engine's `kafka` feature needs to build
# librdkafka from the sources bundled in rdkafka-sys (its ./configure and make, C and C++:
# build-essential; the gzip codec: zlib1g-dev, found through pkg-config), systemd's
# tools that the unit tests and `agentwire install` run (systemd-analyze verify and
# security, systemd-sysusers, systemd-tmpfiles: the `systemd` package; installing it does
# not make systemd PID 1), cargo-deb (the Debian package, which the tests build), and for
# the Python agents (shm/python) python3-venv (the .venv below) and python3-dev (libpython,
# which the extension crate links when cargo builds it outside maturin).
# Idempotent: it installs only what is missing, so it is cheap to call before every build.
set -euo pipefail

packages=(pkg-config libhwloc-dev libudev-dev linux-perf build-essential zlib1g-dev systemd python3-venv python3-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The test command runs rustfmt and clippy; with rustup, add them if missing.
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi
for tool in "cargo fmt" "cargo clippy"; do
    $tool --version >/dev/null 2>&1 || { echo "setup: '$tool' is missing; install it with your toolchain" >&2; exit 1; }
done
# `cargo deb` builds the Debian package. Pinned: the tests package the debug binary
# (`--profile dev`), which cargo-deb 3.8 allows with a warning and later versions may refuse.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
    echo "setup: installing cargo-deb $cargo_deb_version" >&2
    cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet
fi
# Python agents (shm/python): a virtual environment at .venv with the pinned tools of
# shm/python/requirements.txt (maturin, pytest, the benchmark's pyzmq and iceoryx2, the NATS
# server, SimPy for the what-if bench).
# pip runs only when a pin is missing or differs, so a satisfied setup costs one Python start.
python=${AGENTWIRE_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $python" >&2
    "$python" -m venv .venv || {
        echo "setup: '$python -m venv' failed; on Debian install python3-venv" >&2
        exit 1
    }
fi
if ! .venv/bin/python - shm/python/requirements.txt <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = line.split("==")
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
    echo "setup: installing the pinned Python tools (shm/python/requirements.txt)" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check -r shm/python/requirements.txt
fi
