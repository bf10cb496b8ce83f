#!/usr/bin/env bash
# Fuzzes image ingest (fuzz/fuzz_targets/ingest.rs) with cargo-fuzz for a
# bounded time: FUZZ_SECONDS (default 120). Needs the nightly toolchain;
# installs cargo-fuzz if missing. The seed is a small real image archive
# (`faas pack`); crashes land in fuzz/artifacts/ingest/. The test suite runs a stable-Rust mutation
# test of the same entry point (tests/ingest_mutations.rs) every time.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BUDGET=${FUZZ_SECONDS:-120}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
corpus=fuzz/corpus/ingest
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    cargo build --quiet --release --bin faas
    # A small real image keeps the fuzzer's inputs short.
    printf '#!/bin/sh\necho hi\n' > fuzz/corpus/tiny-handler
    target/release/faas pack fuzz/corpus/tiny-handler -o "$corpus/tiny.tar"
    rm fuzz/corpus/tiny-handler
fi
cargo +nightly fuzz run ingest "$corpus" -- -max_total_time="$SECONDS_BUDGET" -max_len=262144 -rss_limit_mb=2048
