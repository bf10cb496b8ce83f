#!/usr/bin/env bash
# Mixed soak: 20,000+ connections over six functions — fast reuse and warm
# one-shot handlers, and handlers that crash, hang, sleep or close without
# answering — then checks that faasd is back where it started: fds,
# threads and RSS within a small margin, no zombies, no containers or
# bundles beyond the warm pools, no cgroups or mounts left, and (after a
# SIGTERM) no addresses. Writes loadtest/out/soak.md.
#
#   loadtest/soak.sh                 # (as root) SCALE=2 doubles every count
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
SCALE=${SCALE:-1}

cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
out=loadtest/out; mkdir -p "$out"
work=$(mktemp -d /tmp/faasd-soak.XXXXXX)
chmod 711 "$work"
port=18183; pool=127.249.0.0/24
# faas drives faasd by its own control socket (no token needed there).
export FAAS_URL=unix://$work/faasd.sock
health=http://127.0.0.1:$port/healthz
FAAS=target/release/faas
faasd_pid=
cleanup() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool \
    --socket "$work/faasd.sock" --queue-timeout 2 >"$work/faasd.log" 2>&1 &
faasd_pid=$!
for _ in $(seq 100); do curl -sf "$health" >/dev/null && break; sleep 0.1; done

$FAAS pack "$handlers/hello" -o "$work/hello.tar"
$FAAS pack "$handlers/probe" -o "$work/probe.tar"
$FAAS deploy fast --reuse --warm 2 --idle-timeout 3 --archive "$work/hello.tar" >/dev/null
$FAAS deploy oneshot --warm 4 --archive "$work/hello.tar" >/dev/null
$FAAS deploy crash --warm 0 --env PROBE_MODE=crash --archive "$work/probe.tar" >/dev/null
$FAAS deploy hang --warm 1 --timeout 1 --env PROBE_MODE=hang --archive "$work/probe.tar" >/dev/null
$FAAS deploy slow --reuse --warm 2 --idle-timeout 3 --concurrency 4 --env PROBE_MODE=slow --env PROBE_SLEEP_MS=50 \
    --archive "$work/probe.tar" >/dev/null
$FAAS deploy close --warm 2 --env PROBE_MODE=close --archive "$work/probe.tar" >/dev/null

pools_full() {
    python3 - "$FAAS" <<'PY'
import json, subprocess, sys
want = {"fast": 2, "oneshot": 4, "hang": 1, "slow": 2, "close": 2}
for name, n in want.items():
    info = json.loads(subprocess.check_output([sys.argv[1], "inspect", name]))
    if info["stats"]["warm_ready"] < n or info["stats"]["inflight"] > 0:
        sys.exit(1)
PY
}
wait_quiet() {
    for _ in $(seq 600); do pools_full && return; sleep 0.1; done
    echo "pools never refilled" >&2
}
snapshot() { # label
    local fds threads rss zombies containers bundles cgroups mounts
    fds=$(ls /proc/$faasd_pid/fd | wc -l)
    threads=$(awk '/^Threads/ {print $2}' /proc/$faasd_pid/status)
    rss=$(awk '/^VmRSS/ {print $2}' /proc/$faasd_pid/status)
    zombies=$(ps --ppid $faasd_pid -o stat= | grep -c '^Z' || true)
    containers=$(containers)
    # The bundles are a tmpfs in faasd's own mount namespace.
    bundles=$(ls "/proc/$faasd_pid/root$work/state/bundles" | wc -l)
    cgroups=$(find /sys/fs/cgroup -path "*faasd-*" -mindepth 2 -type d -name '*-*' 2>/dev/null \
        | grep -c -E '/(fast|oneshot|crash|hang|slow|close)-[0-9a-z]+-[0-9]+$' || true)
    mounts=$(grep -c "$work" /proc/mounts || true)
    echo "$1 $fds $threads $rss $zombies $containers $bundles $cgroups $mounts"
}

addr_of() { $FAAS ip "$1"; }
containers() { runc --root "$work/state/runc" list -q | wc -l; }
# Reuse mode's extra containers retire after --idle-timeout; idle tokio
# blocking threads after 10 s.
settle() { # containers wanted
    for _ in $(seq 120); do [ "$(containers)" -le "$1" ] && break; sleep 0.5; done
    sleep 11
}
wait_quiet
# Warm-up, so the baseline includes what serving allocates once.
python3 loadtest/soak.py 16 fast="$(addr_of fast)":500 oneshot="$(addr_of oneshot)":50 >/dev/null
wait_quiet
settle "$(containers)"
before=$(snapshot before)
baseline=$(containers)
n() { echo $(( $1 * SCALE )); }
result=$(python3 loadtest/soak.py 32 \
    fast="$(addr_of fast)":"$(n 15000)" oneshot="$(addr_of oneshot)":"$(n 2500)" \
    crash="$(addr_of crash)":"$(n 600)" hang="$(addr_of hang)":"$(n 100)" \
    slow="$(addr_of slow)":"$(n 1200)" close="$(addr_of close)":"$(n 600)")
echo "$result" >&2
wait_quiet
settle "$baseline"
after=$(snapshot after)
kill "$faasd_pid"; wait "$faasd_pid" || true; faasd_pid=
addresses=$(ip -4 -o addr show dev lo label lo:faas | grep -c "127\.249\.0\." || true)

python3 - "$result" "$before" "$after" "$addresses" <<'PY' | tee "$out/soak.md"
import datetime, json, os, platform, sys
r = json.loads(sys.argv[1])
cols = ["fds", "threads", "rss_kib", "zombies", "containers", "bundles", "cgroups", "mounts"]
before = dict(zip(cols, map(int, sys.argv[2].split()[1:])))
after = dict(zip(cols, map(int, sys.argv[3].split()[1:])))
print(f"# faasd soak, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}")
print()
print(f"{r['connections']} connections in {r['seconds']} s, 32 at a time.")
print()
print("| function | connections | outcomes |")
print("|---|---|---|")
bad = 0
for name, outcomes in sorted(r["outcomes"].items()):
    total = sum(outcomes.values())
    bad += outcomes.get("timeout", 0) + outcomes.get("garbage", 0)
    print(f"| {name} | {total} | {', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))} |")
print()
print("| faasd | before | after |")
print("|---|---|---|")
for c in cols:
    print(f"| {c} | {before[c]} | {after[c]} |")
print(f"| addresses after SIGTERM | | {sys.argv[4]} |")
print()
print(f"connections that hung or got garbage: {bad}")
PY
