#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# checks formatting and lints, then runs every unit and integration test
# (as root, with real runc and crun, netlink, sockets and Docker-built
# images).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the integration tests create containers and addresses)" >&2; exit 1; }

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
scripts/build-handlers.sh >/dev/null
cargo test --workspace --all-targets "$@"
# The integration suite again on a single data-plane core (the run above
# uses one core per CPU), and with crun as the OCI runtime.
FAASD_TEST_CORES=1 cargo test --tests "$@"
FAASD_TEST_RUNTIME=crun cargo test --tests "$@"
