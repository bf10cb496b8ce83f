#!/usr/bin/env bash
# Load test of shared listeners (issue #26), each claim a ratio to the same
# function on its own address, measured in the same run, alternated round
# by round:
#
#   single use   the example handler, --warm 8, --host one.test: the C
#                client (loadtest/latency.c, a connection per request, to
#                Content-Length and to EOF) GAP_MS apart, through the shared
#                listener (Host: one.test) against the function's own address
#   reuse        the example handler --reuse --warm 2, --host re.test:
#                wrk -t2 -c32 with that Host, against its own address (which
#                of the two goes first alternates round by round)
#
# Both functions share the listener with 1,000 other names (another
# function's), so the route table is not trivially small.
#
#   loadtest/shared.sh      (as root; release build; ROUNDS=3 LAT_N=400 GAP_MS=20 DURATION=5s)
# Prints the ratios and writes loadtest/out/shared.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}; LAT_N=${LAT_N:-400}; GAP_MS=${GAP_MS:-20}; DURATION=${DURATION:-5s}

scripts/install-deps.sh
cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
FAAS=target/release/faas
work=$(mktemp -d /tmp/faasd-shared.XXXXXX); chmod 711 "$work"
gcc -O2 -o "$work/latency" loadtest/latency.c
port=18481; pool=127.251.0.0/24; shared=127.0.0.1:18480
faasd_pid=
cleanup() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; fi
    [ -n "${KEEP:-}" ] && cp "$work/faasd.log" /tmp/shared-faasd.log
    rm -rf "$work"
}
trap cleanup EXIT
export FAAS_URL=unix://$work/faasd.sock

target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool --cores 2 \
    --init "$handlers/faas-init" --socket "$work/faasd.sock" --shared-listen $shared >>"$work/faasd.log" 2>&1 &
faasd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
$FAAS pack "$handlers/hello" -o "$work/hello.tar"
$FAAS deploy one --warm 8 --host one.test --archive "$work/hello.tar" >/dev/null
$FAAS deploy re --reuse --warm 2 --host re.test --archive "$work/hello.tar" >/dev/null
others=$(seq -s, -f 'h%g.other.test' 1 1000)
$FAAS deploy others --warm 0 --host "$others" --archive "$work/hello.tar" >/dev/null
for f in one:8 re:2; do
    for _ in $(seq 300); do
        [ "$($FAAS inspect "${f%%:*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["warm_ready"])')" -ge "${f#*:}" ] && break
        sleep 0.1
    done
done
one=$($FAAS ip one); re=$($FAAS ip re)
curl -sf -H 'Host: one.test' "http://$shared/" | grep -q "Hello" || { echo "the shared listener does not route" >&2; tail "$work/faasd.log" >&2; exit 1; }
lat() { # address port mode [host] → p50 µs
    { LAT_HOST=${4:-x} "$work/latency" "$1" "$2" "$LAT_N" "$3" $((GAP_MS * 1000)) || true; } | tee -a "$work/latency.log" |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["p50_us"]))'
}
rps() { wrk -t2 -c32 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }

out=loadtest/out; mkdir -p "$out"; : > "$out/shared.txt"
for round in $(seq "$ROUNDS"); do
    own_cl=$(lat "$one" 80 cl); sh_cl=$(lat "${shared%:*}" "${shared#*:}" cl one.test)
    own_eof=$(lat "$one" 80 eof); sh_eof=$(lat "${shared%:*}" "${shared#*:}" eof one.test)
    # Which goes first alternates, so drift within a round cancels out.
    if [ $((round % 2)) = 1 ]; then
        own_rps=$(rps "http://$re/"); sh_rps=$(rps -H 'Host: re.test' "http://$shared/")
    else
        sh_rps=$(rps -H 'Host: re.test' "http://$shared/"); own_rps=$(rps "http://$re/")
    fi
    grep -q '"errors": [1-9]' "$work/latency.log" && { echo "requests failed:" >&2; grep '"errors": [1-9]' "$work/latency.log" >&2; }
    echo "round $round cl_us own $own_cl shared $sh_cl eof_us own $own_eof shared $sh_eof reuse_rps own $own_rps shared $sh_rps" | tee -a "$out/shared.txt"
done
python3 - "$out/shared.txt" <<'PY' | tee "$out/shared.md"
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
col = lambda i: [float(r[i]) for r in rows]
ratio = lambda a, b: st.median(x / y for x, y in zip(col(a), col(b)))
print(f"| claim | median ratio of {len(rows)} rounds | target |")
print("|---|---|---|")
print(f"| warm single use through the shared listener, CL p50 / own address | {ratio(6, 4):.2f} | ≤ 1.1 |")
print(f"| same, EOF p50 / own address | {ratio(11, 9):.2f} | (≤ 1.1) |")
print(f"| --reuse, wrk -t2 -c32 with Host, shared / own address | {ratio(16, 14):.2f} | ≥ 0.95 |")
PY
