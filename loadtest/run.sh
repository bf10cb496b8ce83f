#!/usr/bin/env bash
# Load test: faasd against plain runc, measured in the same run.
#
# References (same machine, same minute):
#   runc-seq   p50 of sequential `runc run` of a no-op container on a read-only rootfs
#   runc-rate  containers/s from 4 parallel `runc run` loops
# faasd (example handler, release build):
#   cold-seq   p50 of sequential requests to a --warm 0 function
#   cold-wrk   wrk -t2 -c16 -d10s against it
# Prints the ratios and writes loadtest/out/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
N=${N:-100}
DURATION=${DURATION:-10s}

scripts/install-deps.sh
cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
out=loadtest/out; mkdir -p "$out"
work=$(mktemp -d /tmp/faasd-load.XXXXXX)
port=18181; pool=127.251.0.0/24
faasd_pid=
cleanup() {
    [ -n "$faasd_pid" ] && kill "$faasd_pid" 2>/dev/null && wait "$faasd_pid" 2>/dev/null || true
    for id in $(ls "$work/refroot" 2>/dev/null); do runc --root "$work/refroot" delete --force "$id" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Reference bundle: runc's default spec, read-only rootfs, a static no-op.
mkdir -p "$work/ref/rootfs"/{proc,dev,sys,tmp}
cp "$(command -v busybox)" "$work/ref/rootfs/true"
(cd "$work/ref" && runc spec)
python3 - "$work/ref/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/true"]
c["root"]["readonly"] = True
json.dump(c, open(p, "w"))
PY

target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool >"$work/faasd.log" 2>&1 &
faasd_pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
export FAAS_URL=http://127.0.0.1:$port
target/release/faas pack "$handlers/hello" -o "$work/hello.tar"
target/release/faas deploy cold --warm 0 --image "$work/hello.tar" >/dev/null
cold_ip=$(target/release/faas ip cold)

echo "== reference: plain runc run (sequential, N=$N)"
runc_seq=$(python3 loadtest/seq.py runc "$work/refroot" "$work/ref" "$N")
echo "$runc_seq"
echo "== faasd --warm 0 (sequential, N=$N)"
cold_seq=$(python3 loadtest/seq.py http "$cold_ip" 80 "$N")
echo "$cold_seq"
echo "== reference: plain runc run, 4 parallel loops"
runc_rate=$(python3 loadtest/seq.py runc-rate "$work/refroot" "$work/ref" 4 10)
echo "$runc_rate"
echo "== faasd --warm 0: wrk -t2 -c16 -d$DURATION"
wrk -t2 -c16 -d"$DURATION" "http://$cold_ip/" | tee "$work/wrk-cold.txt"
cold_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-cold.txt")
cold_errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk-cold.txt")

python3 - "$runc_seq" "$cold_seq" "$runc_rate" "$cold_rps" "$cold_errors" <<'PY' | tee "$out/report.md"
import json, sys, datetime, platform, os
runc_seq, cold_seq, runc_rate = (json.loads(a) for a in sys.argv[1:4])
cold_rps = float(sys.argv[4]); errors = sys.argv[5].strip() or "none"
print(f"# faasd load test, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC")
print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}")
print()
print("| measure | reference | faasd | ratio |")
print("|---|---|---|---|")
print(f"| sequential p50, cold (`--warm 0`) | plain `runc run` {runc_seq['p50_ms']:.1f} ms | {cold_seq['p50_ms']:.1f} ms | {cold_seq['p50_ms']/runc_seq['p50_ms']:.2f} |")
print(f"| throughput, cold, wrk -t2 -c16 | runc creation rate (4 loops) {runc_rate['per_s']:.1f}/s | {cold_rps:.1f} req/s | {cold_rps/runc_rate['per_s']:.2f} |")
print()
print(f"wrk errors: {errors}")
PY
