#!/usr/bin/env bash
# A/B of two faasd binaries on the request path, alternated round by round
# on one machine (numbers here drift ±25 % minute to minute: only rounds
# interleaved in one run compare):
#   reuse   --reuse --warm 2, wrk -t2 -c32 for DURATION after 2 s unmeasured,
#           each round also against the plain server (examples/plain)
#   warm    --warm 8 single use, the C client (loadtest/latency.c), LAT_N
#           sequential requests GAP_MS apart, p50/p99 to EOF and to
#           Content-Length
#
#   loadtest/ab.sh A_FAASD B_FAASD [ROUNDS]     (as root; release builds)
# faas-init and the example handler come from this checkout. Prints one
# line per round and measure, then the means; writes loadtest/out/ab.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ $# -ge 2 ] || { echo "usage: loadtest/ab.sh A_FAASD B_FAASD [ROUNDS]" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-4}
LAT_N=${LAT_N:-200}; GAP_MS=${GAP_MS:-50}; DURATION=${DURATION:-5s}

cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
FAAS=target/release/faas
work=$(mktemp -d /tmp/faasd-ab.XXXXXX); chmod 711 "$work"
gcc -O2 -o "$work/latency" loadtest/latency.c
port=18281; pool=127.252.0.0/24; plain_port=18290
faasd_pid=; plain_pid=
stop_faasd() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; faasd_pid=; fi
}
cleanup() { stop_faasd; [ -n "$plain_pid" ] && kill "$plain_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export FAAS_URL=unix://$work/faasd.sock
health=http://127.0.0.1:$port/healthz

start_faasd() { # binary
    rm -rf "$work/state"
    "$1" --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool --cores 2 \
        --init "$handlers/faas-init" --socket "$work/faasd.sock" >>"$work/faasd.log" 2>&1 &
    faasd_pid=$!
    for _ in $(seq 100); do curl -sf "$health" >/dev/null && break; sleep 0.1; done
    $FAAS deploy warm --warm 8 --archive "$work/hello.tar" >/dev/null
    $FAAS deploy reuse --reuse --warm 2 --archive "$work/hello.tar" >/dev/null
    for f in warm:8 reuse:2; do
        for _ in $(seq 300); do
            [ "$($FAAS inspect "${f%%:*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["warm_ready"])')" -ge "${f#*:}" ] && break
            sleep 0.1
        done
    done
}
rps() { # url
    wrk -t2 -c32 -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'
}
lat() { # host port mode → "p50 p99" in µs
    "$work/latency" "$1" "$2" "$LAT_N" "$3" $((GAP_MS * 1000)) |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["p50_us"]), round(d["p99_us"]))'
}

$FAAS pack "$handlers/hello" -o "$work/hello.tar"
"$handlers/plain_server" "127.0.0.1:$plain_port" & plain_pid=$!
out=loadtest/out; mkdir -p "$out"; : > "$out/ab.txt"
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        bin=$A; [ $side = B ] && bin=$B
        start_faasd "$bin"
        reuse_ip=$($FAAS ip reuse); warm_ip=$($FAAS ip warm)
        wrk -t2 -c32 -d2s "http://$reuse_ip/" >/dev/null
        plain=$(rps "http://127.0.0.1:$plain_port/")
        reuse=$(rps "http://$reuse_ip/")
        eof=$(lat "$warm_ip" 80 eof); cl=$(lat "$warm_ip" 80 cl)
        line="round $round $side reuse_rps $reuse plain_rps $plain ratio $(python3 -c "print(round($reuse/$plain, 3))") warm_eof_p50_p99_us $eof warm_cl_p50_p99_us $cl"
        echo "$line" | tee -a "$out/ab.txt"
        stop_faasd
    done
done
python3 - "$out/ab.txt" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
for side in "AB":
    r = [l for l in rows if l[2] == side]
    ratio = st.mean(float(l[8]) for l in r)
    eof = st.median(float(l[10]) for l in r); eof99 = st.median(float(l[11]) for l in r)
    cl = st.median(float(l[13]) for l in r); cl99 = st.median(float(l[14]) for l in r)
    print(f"{side}: reuse/plain mean {ratio:.3f}; warm EOF p50 {eof:.0f} µs p99 {eof99:.0f} µs; CL p50 {cl:.0f} µs p99 {cl99:.0f} µs (medians of rounds)")
PY
