#!/usr/bin/env bash
# Builds the static binaries that run inside images: faas-init (init/,
# installed next to faasd by scripts/demo.sh), the handlers examples/hello
# and tests/probe for FROM-scratch images, and the load test's plain
# server (examples/plain, also run socket-activated). Prints the directory
# holding them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target/handlers"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release -p faas-init -p hello -p probe -p plain-server --target x86_64-unknown-linux-gnu
echo "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
