#!/usr/bin/env bash
# Load test: faasd against references measured in the same run, each
# claim a ratio (docs/performance.md).
#
# References:
#   plain        examples/plain (plain_server): latency from the C client (loadtest/latency.c:
#                one connection per request, sequential, to EOF and to Content-Length,
#                GAP_MS apart as faasd's warm hits are) and wrk -t2 -c32
#   sandboxed    `runc run` / `crun run` of the config.json faasd writes, with the handler
#                replaced by a static `true` (loadtest/refbundle.py): sequential p50
#                alternated with faasd's cold requests; creation rate of 4 `runc run` loops,
#                alternated with faasd's fresh rounds
#   unsandboxed  `runc run` of runc's default spec (read-only rootfs), for orientation
# faasd (example handler, release build, --cores 2 unless said):
#   warm         --warm 8: C client latency, eof and cl, GAP_MS apart
#   cold         --warm 0: sequential p50 (runc and crun)
#   fresh        --warm 8: wrk -t2 -c16, every connection a fresh container (runc and crun)
#   reuse        --reuse --warm 2: wrk -t2 -c32 after 2 s of unmeasured load, alternated
#                with the plain server; --cores 2 against --cores 1
#   memory       a --warm 40 pool, per container: the kernel's objects (unreclaimable
#                slab, page tables, kernel stacks, per-cpu) and faasd's own growth,
#                beside the handler's own (its Pss); all slab and MemAvailable's drop
#                for orientation
#   kinds        ordinary images: --stdio (the probe answering on stdout) and
#                --container-port (the plain server's code, and busybox httpd -f)
#                warm latency against the control-socket probe's (busybox httpd
#                on the host beside it); --container-port --reuse with busybox
#                httpd -f against the same busybox httpd on the host (wrk -c16);
#                --socket-activation with the plain server's code against it on
#                the host (wrk -t2 -c32); alternated
#   metrics      warm p50 and reuse wrk with metrics on and with --no-metrics
#   fork ceiling the machine's own rate of fresh sandboxes without a container
#                runtime (loadtest/forkref.c, 2 workers, 5 s each: exec a static
#                no-op, exit at once, exec with a network namespace and its
#                teardown), beside crun's creation rate: #24's yardstick
#   fork         --fork --stdio with the static probe (an exec per connection,
#                each a fresh child), wrk -t2 -c16, with its own writable root
#                and --read-only, alternated with forkref's exec; its warm
#                single-use latency (C client); the SDK's fork_serve: the
#                probe's (Rust) against forkref's exit, Python's (a 300 ms
#                start) latency with --fork and without
# Prints the ratios and writes loadtest/out/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
N=${N:-100}
LAT_N=${LAT_N:-300}
GAP_MS=${GAP_MS:-50}
DURATION=${DURATION:-10s}

scripts/install-deps.sh
cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
out=loadtest/out; mkdir -p "$out"
work=$(mktemp -d /tmp/faasd-load.XXXXXX)
chmod 711 "$work" # containers (unprivileged host ids) pass through to their rootfs
gcc -O2 -o "$work/latency" loadtest/latency.c
port=18181; pool=127.251.0.0/24; plain_host=127.0.0.1; plain_port=18190
faasd_pid=; plain_pid=
stop_faasd() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; faasd_pid=; fi
}
cleanup() {
    stop_faasd
    [ -n "$plain_pid" ] && kill "$plain_pid" 2>/dev/null || true
    for rt in runc crun; do
        for id in $(ls "$work/root-$rt" 2>/dev/null); do $rt --root "$work/root-$rt" delete --force "$id" >/dev/null 2>&1 || true; done
    done
    rm -rf "$work"
}
trap cleanup EXIT
# faas drives faasd by its own control socket (no token needed there);
# /healthz answers on TCP without one.
export FAAS_URL=unix://$work/faasd.sock
health=http://127.0.0.1:$port/healthz
FAAS=target/release/faas

start_faasd() { # runtime cores [extra flags]
    local runtime=$1 cores=$2; shift 2
    rm -rf "$work/state"
    target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool \
        --runtime "$runtime" --cores "$cores" --init "$handlers/faas-init" --socket "$work/faasd.sock" \
        "$@" >>"$work/faasd.log" 2>&1 &
    faasd_pid=$!
    for _ in $(seq 100); do curl -sf "$health" >/dev/null && break; sleep 0.1; done
    $FAAS deploy warm --warm 8 --archive "$work/hello.tar" >/dev/null
    $FAAS deploy cold --warm 0 --archive "$work/hello.tar" >/dev/null
    $FAAS deploy reuse --reuse --warm 2 --archive "$work/hello.tar" >/dev/null
    warm_ip=$($FAAS ip warm); cold_ip=$($FAAS ip cold); reuse_ip=$($FAAS ip reuse)
    wait_ready warm 8; wait_ready reuse 2
}
wait_ready() { # name count
    for _ in $(seq 300); do
        [ "$($FAAS inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["warm_ready"])')" -ge "$2" ] && return
        sleep 0.1
    done
    echo "pool of $1 never reached $2" >&2; exit 1
}
warm_up() { # url: 2 s of unmeasured load on a faasd just started (its handlers' first
    # requests, reuse scale-outs while the burst begins); the plain server it is
    # compared with has been serving all along
    wrk -t2 -c32 -d2s "$1" >/dev/null
}
wrk_rps() { # connections url label
    wrk -t2 -c"$1" -d"$DURATION" "$2" > "$work/wrk-$3.txt"
    cat "$work/wrk-$3.txt" >&2
    awk '/Requests\/sec/ {print $2}' "$work/wrk-$3.txt"
}
latency() { # host port mode
    "$work/latency" "$1" "$2" "$LAT_N" "$3" $((GAP_MS * 1000))
}
# crun 1.8 refuses a hybrid cgroup host whose v2 hierarchy lists a
# controller; the references run as faasd runs crun there (README).
in_runtime_ns() { # runtime command...
    local runtime=$1; shift
    if [ "$runtime" = crun ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
        unshare -m --propagation slave sh -c 'mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers && exec "$@"' sh "$@"
    else
        "$@"
    fi
}
meminfo() { # → JSON of the fields in kB, and faasd's RSS
    python3 - "$faasd_pid" <<'PY'
import json, sys
m = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
rss = next(int(l.split()[1]) for l in open(f"/proc/{sys.argv[1]}/status") if l.startswith("VmRSS"))
keys = ("MemAvailable", "Slab", "SUnreclaim", "PageTables", "KernelStack", "Percpu")
print(json.dumps({**{k: m[k] for k in keys}, "faasd_rss": rss}))
PY
}

$FAAS pack "$handlers/hello" -o "$work/hello.tar"
$FAAS pack "$handlers/probe" -o "$work/probe.tar"
"$handlers/plain_server" "$plain_host:$plain_port" & plain_pid=$!

# The unsandboxed reference: runc's default spec, read-only rootfs, a static no-op.
mkdir -p "$work/plainref/rootfs"/{proc,dev,sys,tmp}
cp "$(command -v busybox)" "$work/plainref/rootfs/true"
(cd "$work/plainref" && runc spec)
python3 - "$work/plainref/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/true"]
c["root"]["readonly"] = True
json.dump(c, open(p, "w"))
PY

results=$work/results.json; echo '{}' > "$results"
put() { # key json
    python3 - "$results" "$1" "$2" <<'PY'
import json, sys
p, k, v = sys.argv[1:4]; d = json.load(open(p)); d[k] = json.loads(v); json.dump(d, open(p, "w"))
PY
}

for runtime in runc crun; do
    echo "== $runtime" >&2
    start_faasd "$runtime" 2
    if [ "$runtime" = runc ]; then
        # The sandboxed reference: faasd's own config.json for this image
        # (its bundles are a tmpfs in faasd's own mount namespace).
        python3 loadtest/refbundle.py "$(ls -d "/proc/$faasd_pid/root$work"/state/bundles/warm-* | head -1)/config.json" \
            "$work/ref" "$(command -v busybox)"
        echo "== warm latency against the plain server, ${GAP_MS} ms apart" >&2
        for mode in eof cl; do
            put "plain_$mode" "$(latency $plain_host $plain_port $mode)"
            put "warm_$mode" "$(latency "$warm_ip" 80 $mode)"
        done
        echo "== unsandboxed runc run" >&2
        put unsandboxed "$(python3 loadtest/seq.py runc "$work/root-runc" "$work/plainref" 20)"
    fi
    echo "== $runtime run (sandboxed) against faasd --warm 0, alternated" >&2
    put "cold_$runtime" "$(RUNTIME=$runtime in_runtime_ns "$runtime" python3 loadtest/seq.py versus "$work/root-$runtime" "$work/ref" "$cold_ip" 80 5 $((N / 5)))"
    # Both sides swing by ±10 % from minute to minute here: two rounds
    # each, alternated.
    echo "== fresh containers: wrk -c16 --warm 8, alternated with the runc creation rate (sandboxed, 4 loops)" >&2
    rates=(); fresh=()
    for round in 1 2; do
        rates+=("$(RUNTIME=runc python3 loadtest/seq.py runc-rate "$work/root-runc" "$work/ref" 4 10)")
        wait_ready warm 8
        fresh+=("$(wrk_rps 16 "http://$warm_ip/" "fresh-$runtime-$round")")
    done
    put "runc_rate_$runtime" "[$(IFS=,; echo "${rates[*]}")]"
    put "fresh_$runtime" "[$(IFS=,; echo "${fresh[*]}")]"
    if [ "$runtime" = crun ]; then
        put crun_rate "$(RUNTIME=crun in_runtime_ns crun python3 loadtest/seq.py runc-rate "$work/root-crun" "$work/ref" 4 10)"
    fi
    stop_faasd
done

# #24's yardstick: how many fresh sandboxes per second this machine makes
# without any container runtime (loadtest/forkref.c: clone into new
# user, mount, pid, ipc and uts namespaces, a tmpfs on /tmp; exec a static
# no-op, or exit at once; and exec with a network namespace too).
echo "== the machine's ceiling for a fresh sandbox per connection (forkref, 2 workers)" >&2
gcc -O2 -o "$work/forkref" loadtest/forkref.c
noop=$PWD/target/loadtest-noop # outside /tmp, which each child covers
printf 'int main(void) { return 0; }\n' | gcc -O2 -static -x c -o "$noop" -
fork_ref=()
for mode in exec exit "exec net"; do
    # shellcheck disable=SC2086 # "exec net" is two arguments
    fork_ref+=("$("$work/forkref" $mode 5 2 "$noop")")
done
put fork_ref "{\"exec\": ${fork_ref[0]}, \"exit\": ${fork_ref[1]}, \"exec_net\": ${fork_ref[2]}}"

# --fork against that ceiling: the static probe as an inetd-style program
# (one exec per connection, no runtime), every connection a fresh child;
# alternated with forkref's exec rounds. Then its warm single-use latency
# (C client), against the warm pool's measured above.
echo "== --fork: fresh children per second, alternated with forkref exec" >&2
fork_runs=(); fork_ref_runs=(); fork_ro_runs=()
for round in $(seq "${FORK_ROUNDS:-2}"); do
    fork_ref_runs+=("$("$work/forkref" exec 5 2 "$noop")")
    start_faasd crun 2
    $FAAS deploy fork --fork --stdio --warm 2 --env PROBE_MODE=stdio --archive "$work/probe.tar" >/dev/null
    $FAAS deploy fork-ro --fork --read-only --stdio --warm 2 --env PROBE_MODE=stdio --archive "$work/probe.tar" >/dev/null
    warm_up "http://$($FAAS ip fork)/"
    fork_runs+=("$(wrk_rps 16 "http://$($FAAS ip fork)/" "fork-$round")")
    fork_ro_runs+=("$(wrk_rps 16 "http://$($FAAS ip fork-ro)/" "fork-ro-$round")")
    if [ "$round" = 1 ]; then
        put fork_eof "$(latency "$($FAAS ip fork)" 80 eof)"
        put fork_cl "$(latency "$($FAAS ip fork)" 80 cl)"
    fi
    stop_faasd
done
put fork "$(python3 -c 'import json,sys; print(json.dumps({k: [float(x) for x in v.split()] for k, v in zip(["fork", "fork_ro", "ref"], sys.argv[1:])}))' \
    "${fork_runs[*]}" "${fork_ro_runs[*]}" "${fork_ref_runs[*]}")"

# Pre-initialized handlers (the SDK's fork_serve): the probe's (Rust, no
# exec per connection, a 300 ms start) against forkref's exit rate,
# alternated; and examples/python/slow_start.py (a 300 ms start) through
# faas_fork.py, warm latency with --fork and, for comparison, without (a
# fresh container, and Python's start, per connection).
echo "== --fork through the SDK: the probe's fork_serve, Python's faas_fork" >&2
pyroot=$work/py-root
pycopy() { mkdir -p "$pyroot$(dirname "$1")"; cp -aL "$1" "$pyroot$1"; }
pycopy /usr/bin/python3.11
mkdir -p "$pyroot/usr/lib" "$pyroot/app" "$pyroot/tmp"
cp -a /usr/lib/python3.11 "$pyroot/usr/lib/"
for bin in /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so; do
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*'); do [ -e "$pyroot$lib" ] || pycopy "$lib"; done
done
cp examples/python/faas_fork.py examples/python/slow_start.py "$pyroot/app/"
python3 loadtest/mkimage.py "$pyroot" "$work/py.tar" '["/usr/bin/python3.11", "/app/slow_start.py"]'
sdk_runs=(); sdk_ref_runs=()
for round in $(seq "${FORK_ROUNDS:-2}"); do
    sdk_ref_runs+=("$("$work/forkref" exit 5 2 "$noop")")
    start_faasd crun 2
    $FAAS deploy fork-sdk --fork --warm 2 --env PROBE_MODE=forkserve --env PROBE_SLEEP_MS=300 --archive "$work/probe.tar" >/dev/null
    warm_up "http://$($FAAS ip fork-sdk)/"
    sdk_runs+=("$(wrk_rps 16 "http://$($FAAS ip fork-sdk)/" "fork-sdk-$round")")
    if [ "$round" = 1 ]; then
        $FAAS deploy py-fork --fork --warm 2 --archive "$work/py.tar" >/dev/null
        $FAAS deploy py-fresh --warm 0 --archive "$work/py.tar" >/dev/null
        put py_fork "$(latency "$($FAAS ip py-fork)" 80 cl)"
        put py_fresh "$("$work/latency" "$($FAAS ip py-fresh)" 80 30 cl $((GAP_MS * 1000)))"
    fi
    stop_faasd
done
put fork_sdk "$(python3 -c 'import json,sys; print(json.dumps({k: [float(x) for x in v.split()] for k, v in zip(["sdk", "ref"], sys.argv[1:])}))' \
    "${sdk_runs[*]}" "${sdk_ref_runs[*]}")"

# Memory per --fork child (#24): one zygote, 200 connections held open by
# children that took them and wait (probe `hang`), opened 20 ms apart, so
# that one zygote holds them all (opened at once, a burst outruns the two
# children a zygote prepares ahead and the pool adds zygote containers,
# one at a time: 11 here); the
# function's memory cgroups before and with them, and what one child's
# program touches itself (its private pages, the median).
echo "== --fork: memory with 200 children held" >&2
start_faasd crun 2
$FAAS deploy fork-mem --fork --warm 1 --concurrency 256 --timeout 300 --env PROBE_MODE=hang --archive "$work/probe.tar" >/dev/null
wait_ready fork-mem 1; sleep 2
mem_cg=$(ls -d /sys/fs/cgroup/memory/faasd-*/fork-mem-* | head -1)
mem_before=$(cat "$mem_cg/memory.usage_in_bytes")
python3 - "$($FAAS ip fork-mem)" 200 <<'PY' &
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 80), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    held.append(s)
    time.sleep(0.02)
time.sleep(120)
PY
holder=$!
for _ in $(seq 120); do
    alive=$($FAAS inspect fork-mem | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"].get("fork_children_alive") or 0)')
    [ "$alive" -ge 200 ] && break; sleep 0.5
done
sleep 1
mem_with=$(cat /sys/fs/cgroup/memory/faasd-*/fork-mem-*/memory.usage_in_bytes | awk '{s += $1} END {print s}')
zygotes=$(ls -d /sys/fs/cgroup/memory/faasd-*/fork-mem-* | wc -l)
program_kb=$(python3 - "$mem_cg" <<'PY'
import sys
kb = []
for pid in open(sys.argv[1] + "/cgroup.procs").read().split():
    try:
        if open(f"/proc/{pid}/cmdline").read().split("\0")[0] != "/handler":
            continue
        rollup = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        continue
    kb.append(sum(int(l.split()[1]) for l in rollup.splitlines() if l.startswith(("Private_Clean", "Private_Dirty"))))
kb.sort()
print(kb[len(kb) // 2] if kb else 0)
PY
)
kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
put fork_memory "{\"children\": $alive, \"containers\": $zygotes, \"before\": $mem_before, \"with\": $mem_with, \"program_private_kb\": $program_kb}"
stop_faasd

# The pool follows demand (#24): python3 -m http.server single use on a
# container port, bursts of 8 back-to-back connections every 2 s (the C
# client), with --warm 2 and with --warm 2 --warm-max 16, after three
# bursts of warm-up each; then the grown pool back at 2 after --pool-idle.
echo "== the pool follows demand: python3 -m http.server, bursts of 8" >&2
mkdir -p "$pyroot/srv"; echo hello > "$pyroot/srv/index.html"
python3 loadtest/mkimage.py "$pyroot" "$work/pyhttp.tar" '["/usr/bin/python3.11", "-m", "http.server", "8000", "-d", "/srv"]'
start_faasd runc 2 --pool-idle 10
$FAAS deploy py-fixed --container-port 8000 --warm 2 --archive "$work/pyhttp.tar" >/dev/null
$FAAS deploy py-follows --container-port 8000 --warm 2 --warm-max 16 --archive "$work/pyhttp.tar" >/dev/null
wait_ready py-fixed 2; wait_ready py-follows 2
for name in py-fixed py-follows; do
    ip=$($FAAS ip $name)
    "$work/latency" "$ip" 80 24 cl 2000000 8 >/dev/null
    put "pool_${name#py-}" "$("$work/latency" "$ip" 80 80 cl 2000000 8)"
done
pool_grown=$($FAAS inspect py-follows | python3 -c 'import json,sys; print(json.load(sys.stdin)["pool"]["target"])')
sleep 14
pool_after=$($FAAS inspect py-follows | python3 -c 'import json,sys; p=json.load(sys.stdin)["pool"]; print(p["target"], p["ready"])')
put pool_target "{\"grown\": $pool_grown, \"after_idle\": ${pool_after% *}, \"ready_after_idle\": ${pool_after#* }}"
stop_faasd

echo "== reuse against the plain server, cores 2 against cores 1 (alternated)" >&2
plain_runs=(); reuse2_runs=(); reuse1_runs=()
# Four rounds: with two, the machine's round-to-round spread (±5%) alone
# moved the --cores ratio between 0.92 and 1.10 across runs.
for round in $(seq "${REUSE_ROUNDS:-4}"); do
    plain_runs+=("$(wrk_rps 32 "http://$plain_host:$plain_port/" "plain-$round")")
    start_faasd runc 2; warm_up "http://$reuse_ip/"
    reuse2_runs+=("$(wrk_rps 32 "http://$reuse_ip/" "reuse2-$round")")
    stop_faasd; start_faasd runc 1; warm_up "http://$reuse_ip/"
    reuse1_runs+=("$(wrk_rps 32 "http://$reuse_ip/" "reuse1-$round")")
    stop_faasd
done
put reuse "$(python3 -c 'import json,sys; print(json.dumps({k: [float(x) for x in v.split()] for k, v in zip(["plain", "reuse2", "reuse1"], sys.argv[1:])}))' \
    "${plain_runs[*]}" "${reuse2_runs[*]}" "${reuse1_runs[*]}")"

echo "== memory of a --warm 40 pool" >&2
start_faasd runc 2
sync; sleep 2
before=$(meminfo)
$FAAS deploy mem --warm 40 --archive "$work/hello.tar" >/dev/null
wait_ready mem 40
sync; sleep 3
after=$(meminfo)
pss=$(for pid in $(pgrep -x handler || true); do
        if grep -q '/mem-' "/proc/$pid/cgroup" 2>/dev/null; then awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup"; fi
      done | python3 -c 'import sys; v=[int(x) for x in sys.stdin]; print(sum(v)/len(v) if v else 0)')
runtimes=$(pgrep -cx runc || true)
put memory "{\"before\": $before, \"after\": $after, \"handler_pss_kb\": $pss, \"runtime_processes\": $runtimes}"
stop_faasd

echo "== handler kinds" >&2
mkdir -p "$work/bb/bin" "$work/bb/www"
cp "$(command -v busybox)" "$work/bb/bin/busybox"
printf 'Hello from FaaS handler!\n' > "$work/bb/www/index.html"
python3 loadtest/mkimage.py "$work/bb" "$work/busybox.tar" '["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]'
$FAAS pack "$handlers/plain_server" -o "$work/plain.tar"
mkdir -p "$work/pp"
cp "$handlers/plain_server" "$work/pp/plain_server"
python3 loadtest/mkimage.py "$work/pp" "$work/plain-port.tar" '["/plain_server", "0.0.0.0:8080"]'
start_faasd runc 2
$FAAS deploy k-control --warm 8 --env PROBE_MODE=hello --archive "$work/probe.tar" >/dev/null
$FAAS deploy k-stdio --stdio --warm 8 --env PROBE_MODE=stdio --archive "$work/probe.tar" >/dev/null
$FAAS deploy k-port --container-port 8080 --warm 8 --archive "$work/busybox.tar" >/dev/null
$FAAS deploy k-pport --container-port 8080 --warm 8 --archive "$work/plain-port.tar" >/dev/null
$FAAS deploy k-port-reuse --container-port 8080 --reuse --warm 2 --archive "$work/busybox.tar" >/dev/null
$FAAS deploy k-activated --socket-activation --warm 2 --archive "$work/plain.tar" >/dev/null
for f in k-control:8 k-stdio:8 k-port:8 k-pport:8 k-port-reuse:2; do wait_ready "${f%%:*}" "${f#*:}"; done
busybox httpd -f -p "$plain_host:18192" -h "$work/bb/www" & bb_pid=$!
for kind in control stdio port pport; do
    put "kind_$kind" "$(latency "$($FAAS ip "k-$kind")" 80 cl)"
done
put kind_busybox_host "$(latency "$plain_host" 18192 cl)"
bb_runs=(); port_runs=(); plain2_runs=(); act_runs=()
for round in 1 2; do
    bb_runs+=("$(wrk_rps 16 "http://$plain_host:18192/index.html" "bb-$round")")
    port_runs+=("$(wrk_rps 16 "http://$($FAAS ip k-port-reuse)/index.html" "port-reuse-$round")")
    plain2_runs+=("$(wrk_rps 32 "http://$plain_host:$plain_port/" "plain2-$round")")
    act_runs+=("$(wrk_rps 32 "http://$($FAAS ip k-activated)/" "activated-$round")")
done
kill "$bb_pid" 2>/dev/null || true
put kinds_wrk "$(python3 -c 'import json,sys; print(json.dumps({k: [float(x) for x in v.split()] for k, v in zip(["busybox", "port_reuse", "plain", "activated"], sys.argv[1:])}))' \
    "${bb_runs[*]}" "${port_runs[*]}" "${plain2_runs[*]}" "${act_runs[*]}")"
stop_faasd

echo "== metrics on / off" >&2
metrics_runs=()
for round in 1 2; do
    for mode in on off; do
        if [ $mode = on ]; then start_faasd runc 2; else start_faasd runc 2 --no-metrics; fi
        p50=$(latency "$warm_ip" 80 cl | python3 -c 'import json,sys; print(json.load(sys.stdin)["p50_us"])')
        warm_up "http://$reuse_ip/"
        rps=$(wrk_rps 32 "http://$reuse_ip/" "metrics-$mode-$round")
        metrics_runs+=("$mode $p50 $rps")
        stop_faasd
    done
done
put metrics "$(printf '%s\n' "${metrics_runs[@]}" | python3 -c '
import json, sys
runs = {"on": {"p50": [], "rps": []}, "off": {"p50": [], "rps": []}}
for line in sys.stdin:
    mode, p50, rps = line.split()
    runs[mode]["p50"].append(float(p50)); runs[mode]["rps"].append(float(rps))
print(json.dumps(runs))')"
put errors "$(grep -h -E "Non-2xx|Socket errors" "$work"/wrk-*.txt | sort | uniq -c | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip() or "none"))')"

python3 loadtest/report.py "$results" | tee "$out/report.md"
cp "$results" "$out/results.json"
