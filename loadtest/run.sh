#!/usr/bin/env bash
# Load test: faasd against its references, all measured in the same run.
#
# References:
#   runc-seq     p50 of sequential `runc run` of a no-op container on a read-only rootfs
#                (alternated with the cold requests, 5 rounds)
#   runc-rate    containers/s from 4 parallel `runc run` loops
#   plain        wrk -t2 -c32 against a plain multi-threaded server (examples/plain_server)
# faasd (example handler, release build, --cores 2 unless said):
#   cold         --warm 0: sequential p50, wrk -t2 -c16
#   warm         --warm 8: sequential p50 (50 ms apart, time to refill), wrk -t2 -c16
#   reuse        --reuse --warm 2: wrk -t2 -c32, with --cores 2 and --cores 1
#   metrics      warm p50 and reuse wrk with metrics on and with --no-metrics,
#                alternated twice (on, off, on, off) to spread the drift
# Prints the ratios and writes loadtest/out/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
N=${N:-100}
DURATION=${DURATION:-10s}

scripts/install-deps.sh
cargo build --quiet --release --bins --example plain_server
handlers=$(scripts/build-handlers.sh)
out=loadtest/out; mkdir -p "$out"
work=$(mktemp -d /tmp/faasd-load.XXXXXX)
chmod 711 "$work" # containers (unprivileged host ids) pass through to their rootfs
port=18181; pool=127.251.0.0/24; plain_addr=127.0.0.1:18190
faasd_pid=; plain_pid=
stop_faasd() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; faasd_pid=; fi
}
cleanup() {
    stop_faasd
    [ -n "$plain_pid" ] && kill "$plain_pid" 2>/dev/null || true
    for id in $(ls "$work/refroot" 2>/dev/null); do runc --root "$work/refroot" delete --force "$id" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export FAAS_URL=http://127.0.0.1:$port
FAAS=target/release/faas

start_faasd() { # cores [extra flags]
    local cores=$1; shift
    target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool --cores "$cores" "$@" \
        >>"$work/faasd.log" 2>&1 &
    faasd_pid=$!
    for _ in $(seq 100); do curl -sf "$FAAS_URL/healthz" >/dev/null && break; sleep 0.1; done
}
wait_ready() { # name count
    for _ in $(seq 200); do
        [ "$($FAAS inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["warm_ready"])')" -ge "$2" ] && return
        sleep 0.1
    done
    echo "pool of $1 never reached $2" >&2; exit 1
}
wrk_rps() { # connections url label
    wrk -t2 -c"$1" -d"$DURATION" "$2" > "$work/wrk-$3.txt"
    cat "$work/wrk-$3.txt" >&2
    awk '/Requests\/sec/ {print $2}' "$work/wrk-$3.txt"
}

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

target/release/examples/plain_server "$plain_addr" & plain_pid=$!
start_faasd 2
$FAAS pack "$handlers/hello" -o "$work/hello.tar"
$FAAS deploy cold --warm 0 --image "$work/hello.tar" >/dev/null
$FAAS deploy warm --warm 8 --image "$work/hello.tar" >/dev/null
$FAAS deploy reuse --reuse --warm 2 --image "$work/hello.tar" >/dev/null
cold_ip=$($FAAS ip cold); warm_ip=$($FAAS ip warm); reuse_ip=$($FAAS ip reuse)
wait_ready warm 8; wait_ready reuse 2

echo "== runc run vs faasd --warm 0, sequential, alternated" >&2
versus=$(python3 loadtest/seq.py versus "$work/refroot" "$work/ref" "$cold_ip" 80 5 $((N / 5)))
runc_seq=$(echo "$versus" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["runc"]))')
cold_seq=$(echo "$versus" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["http"]))')
echo "== faasd --warm 8, sequential" >&2
warm_seq=$(python3 loadtest/seq.py http "$warm_ip" 80 "$N" 50)
echo "== runc run, 4 loops" >&2
runc_rate=$(python3 loadtest/seq.py runc-rate "$work/refroot" "$work/ref" 4 10)
echo "== wrk" >&2
cold_rps=$(wrk_rps 16 "http://$cold_ip/" cold)
wait_ready warm 8
warm_rps=$(wrk_rps 16 "http://$warm_ip/" warm)
# Reuse against the plain server and --cores 2 against --cores 1,
# alternated twice; the mean of each.
plain_runs=(); reuse2_runs=(); reuse1_runs=()
for round in 1 2; do
    plain_runs+=("$(wrk_rps 32 "http://$plain_addr/" "plain-$round")")
    reuse2_runs+=("$(wrk_rps 32 "http://$reuse_ip/" "reuse2-$round")")
    stop_faasd; start_faasd 1; wait_ready reuse 2
    reuse1_runs+=("$(wrk_rps 32 "http://$reuse_ip/" "reuse1-$round")")
    stop_faasd; start_faasd 2; wait_ready reuse 2
done
stop_faasd
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))' "$@"; }
plain_rps=$(mean "${plain_runs[@]}"); reuse2_rps=$(mean "${reuse2_runs[@]}"); reuse1_rps=$(mean "${reuse1_runs[@]}")
echo "plain ${plain_runs[*]} reuse2 ${reuse2_runs[*]} reuse1 ${reuse1_runs[*]}" > "$work/rounds.txt"

echo "== metrics on / off" >&2
metrics_runs=()
for round in 1 2; do
    for mode in on off; do
        if [ $mode = on ]; then start_faasd 2; else start_faasd 2 --no-metrics; fi
        wait_ready warm 8; wait_ready reuse 2
        p50=$(python3 loadtest/seq.py http "$warm_ip" 80 "$N" 50)
        rps=$(wrk_rps 32 "http://$reuse_ip/" "metrics-$mode-$round")
        metrics_runs+=("$mode $p50 $rps")
        stop_faasd
    done
done
metrics_json=$(printf '%s\n' "${metrics_runs[@]}" | python3 -c '
import json, sys
runs = {"on": {"p50": [], "rps": []}, "off": {"p50": [], "rps": []}}
for line in sys.stdin:
    mode, rest = line.split(" ", 1)
    seq, rps = rest.rsplit(" ", 1)
    runs[mode]["p50"].append(json.loads(seq)["p50_ms"]); runs[mode]["rps"].append(float(rps))
print(json.dumps(runs))')
errors=$(grep -h -E "Non-2xx|Socket errors" "$work"/wrk-*.txt | sort | uniq -c || true)

rounds=$(cat "$work/rounds.txt")
python3 - "$runc_seq" "$cold_seq" "$warm_seq" "$runc_rate" "$cold_rps" "$warm_rps" "$plain_rps" "$reuse2_rps" "$reuse1_rps" "$errors" "$metrics_json" "$rounds" <<'PY' | tee "$out/report.md"
import json, sys, datetime, platform, os
runc_seq, cold_seq, warm_seq, runc_rate = (json.loads(a) for a in sys.argv[1:5])
cold_rps, warm_rps, plain_rps, reuse2, reuse1 = (float(a) for a in sys.argv[5:10])
errors = sys.argv[10].strip() or "none"
m = json.loads(sys.argv[11])
mean = lambda v: sum(v) / len(v)
r = runc_seq["p50_ms"]; rate = runc_rate["per_s"]
print(f"# faasd load test, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}")
print()
print("| measure | faasd | reference | ratio | target |")
print("|---|---|---|---|---|")
print(f"| warm hit p50, sequential (`--warm 8`) | {warm_seq['p50_ms']:.2f} ms | `runc run` p50 {r:.1f} ms | {warm_seq['p50_ms']/r:.3f} | ≤ 0.10 |")
print(f"| cold p50, sequential (`--warm 0`) | {cold_seq['p50_ms']:.1f} ms | `runc run` p50 {r:.1f} ms | {cold_seq['p50_ms']/r:.2f} | ≤ 1.3 |")
print(f"| wrk -t2 -c16, `--warm 8` | {warm_rps:.0f} req/s | runc creation rate {rate:.0f}/s | {warm_rps/rate:.2f} | ≥ 0.8 |")
print(f"| wrk -t2 -c16, `--warm 0` | {cold_rps:.0f} req/s | runc creation rate {rate:.0f}/s | {cold_rps/rate:.2f} | ≥ 0.7 |")
print(f"| wrk -t2 -c32, `--reuse --warm 2` | {reuse2:.0f} req/s | plain server {plain_rps:.0f} req/s | {reuse2/plain_rps:.2f} | ≥ 0.5 |")
print(f"| reuse, `--cores 2` vs `--cores 1` | {reuse2:.0f} req/s | {reuse1:.0f} req/s | {reuse2/reuse1:.2f} | ≥ 0.95 |")
on_p50, off_p50 = mean(m["on"]["p50"]), mean(m["off"]["p50"])
on_rps, off_rps = mean(m["on"]["rps"]), mean(m["off"]["rps"])
print(f"| metrics cost: warm p50, on vs `--no-metrics` | {on_p50:.2f} ms | {off_p50:.2f} ms | {on_p50/off_p50:.3f} | ≤ 1.05 |")
print(f"| metrics cost: reuse wrk, on vs `--no-metrics` | {on_rps:.0f} req/s | {off_rps:.0f} req/s | {on_rps/off_rps:.3f} | ≥ 0.95 |")
print()
print(f"metrics rounds (on, off alternated): p50 ms on {m['on']['p50']}, off {m['off']['p50']}; req/s on {m['on']['rps']}, off {m['off']['rps']}")
print(f"wrk rounds (req/s): {sys.argv[12]}")
print(f"warm p90 {warm_seq['p90_ms']:.2f} ms, cold p90 {cold_seq['p90_ms']:.1f} ms, runc run p90 {runc_seq['p90_ms']:.1f} ms")
print(f"wrk errors: {errors}")
PY
