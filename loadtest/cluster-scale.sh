#!/usr/bin/env bash
# The cluster at size (#27), from tests/cluster_scale.rs (release build,
# one measurement at a time, each in its own namespaces):
#   fanout  a 10 MB image deployed through node 1 → served by every node,
#           20 times, for 1, 3, 5 and 10 nodes (SCALE_NODES, SCALE_DEPLOYS):
#           p50 and max, and docs/cluster-fanout.png (fan-out time against
#           node count)
#   join    a node joining a cluster of 2,000 functions (SCALE_JOIN): time
#           until it serves them all, its faasd's RSS beside an old node's
#   many    10,000 functions with --warm 0 in three nodes (SCALE_MANY):
#           etcd's database size, bytes etcd sent its clients (the watches'
#           traffic with the replies), faasd's RSS per node
# Writes loadtest/out/cluster-scale.txt (the MEASURE lines) and the PNG.
# Needs root and what scripts/install-deps.sh installs; the plot needs
# python3-matplotlib (installed from Debian here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=loadtest/out
mkdir -p "$out"
run() {
    cargo test --release --test cluster_scale -- --ignored --nocapture --test-threads 1 "$@" 2>&1 |
        tee -a "$out/cluster-scale.log" | grep '^MEASURE' >> "$out/cluster-scale.txt" || true
}
: > "$out/cluster-scale.txt"
: > "$out/cluster-scale.log"
for what in ${SCALE_WHAT:-fan_out late_joiner many_functions}; do
    run "$what"
done
cat "$out/cluster-scale.txt"
# Debian's matplotlib is for Debian's python3 (a pyenv's may come first).
py=python3
$py -c 'import matplotlib' 2>/dev/null || py=/usr/bin/python3
$py -c 'import matplotlib' 2>/dev/null ||
    { apt-get install -y -q python3-matplotlib >/dev/null || { echo "no matplotlib: no plot" >&2; exit 0; }; }
$py loadtest/fanout_plot.py "$out/cluster-scale.txt" docs/cluster-fanout.png
