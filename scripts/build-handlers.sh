#!/usr/bin/env bash
# Builds the static handlers (examples/hello, tests/probe) that run in
# FROM-scratch images. Prints the directory holding them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target/handlers"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release -p hello -p probe --target x86_64-unknown-linux-gnu
echo "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
