#!/usr/bin/env bash
# Installs what agentwire needs to build on a fresh Debian machine with a Rust toolchain:
# the C libraries behind hwlocality (NUMA placement), pkg-config, perf (for
# `agentwire perf record`), and what the streaming engine's `kafka` feature needs to build
# librdkafka from the sources bundled in rdkafka-sys (its ./configure and make, C and C++:
# build-essential; the gzip codec: zlib1g-dev, found through pkg-config), systemd's
# tools that the unit tests and `agentwire install` run (systemd-analyze verify and
# security, systemd-sysusers, systemd-tmpfiles: the `systemd` package; installing it does
# not make systemd PID 1), and cargo-deb (the Debian package, which the tests build).
# Idempotent: it installs only what is missing, so it is cheap to call before every build.
set -euo pipefail

packages=(pkg-config libhwloc-dev libudev-dev linux-perf build-essential zlib1g-dev systemd)
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
