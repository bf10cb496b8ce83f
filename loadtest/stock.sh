#!/usr/bin/env bash
# Load test of stock images (issue #22), each claim a ratio to a reference
# measured in the same run, alternated round by round:
#
#   nginx single use   Debian's nginx-light, stock config, --container-port 80
#                      --warm 8: C client (loadtest/latency.c, Connection: close,
#                      to EOF and to Content-Length) GAP_MS apart; against the
#                      host's nginx serving the same files (its stock config
#                      but for the listen address, pid and log paths)
#   nginx reused       --container-port 80 --reuse --warm 2, wrk -t2 -c16,
#                      against the host's nginx, wrk -t2 -c16; also on a
#                      second faasd with --copy-layers (versions copied,
#                      not composed from id-mapped shared layers)
#   close-only probe   a handler that answers and closes without shutdown
#                      (tests/probe noshutdown), --warm 8: EOF p50 against
#                      its Content-Length p50
#   cold start         the example handler, --warm 0: sequential p50 with the
#                      writable layer (default) against --read-only
#
#   loadtest/stock.sh      (as root; release build; ROUNDS=3 LAT_N=200 GAP_MS=50)
# Prints the ratios and writes loadtest/out/stock.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}; LAT_N=${LAT_N:-200}; GAP_MS=${GAP_MS:-50}; DURATION=${DURATION:-5s}

scripts/install-deps.sh
cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
FAAS=target/release/faas
work=$(mktemp -d /tmp/faasd-stock.XXXXXX); chmod 711 "$work"
gcc -O2 -o "$work/latency" loadtest/latency.c
port=18381; pool=127.253.0.0/24; host_port=18390
faasd_pid=; copy_pid=; host_pid=
stop_faasd() {
    if [ -n "$faasd_pid" ]; then kill "$faasd_pid" 2>/dev/null || true; wait "$faasd_pid" 2>/dev/null || true; faasd_pid=; fi
    if [ -n "$copy_pid" ]; then kill "$copy_pid" 2>/dev/null || true; wait "$copy_pid" 2>/dev/null || true; copy_pid=; fi
}
cleanup() {
    stop_faasd
    [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export FAAS_URL=unix://$work/faasd.sock
health=http://127.0.0.1:$port/healthz

# The nginx image: the program, its libraries, its stock files.
root=$work/nginx-root
copy() { mkdir -p "$root$(dirname "$1")"; cp -aL "$1" "$root$1"; }
copy /usr/sbin/nginx
for lib in $(ldd /usr/sbin/nginx | grep -o '/[^ ]*'); do copy "$lib"; done
for dir in /etc/nginx /usr/share/nginx /var/www/html /usr/lib/nginx; do
    [ -d "$dir" ] && { mkdir -p "$root$(dirname "$dir")"; cp -a "$dir" "$root$dir"; }
done
# modules-enabled links point into /usr/share/nginx: kept as they are.
mkdir -p "$root"/{var/lib/nginx,var/log/nginx,run,tmp,etc}
printf 'root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nnobody:x:65534:65534::/:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' > "$root/etc/group"
python3 loadtest/mkimage.py "$root" "$work/nginx.tar" '["/usr/sbin/nginx", "-g", "daemon off;"]'
$FAAS pack "$handlers/hello" -o "$work/hello.tar"
mkdir -p "$work/probe-root"; cp "$handlers/probe" "$work/probe-root/probe"
python3 loadtest/mkimage.py "$work/probe-root" "$work/close.tar" '["/probe", "noshutdown"]'

# The host's nginx with the same files: its stock configuration, but on
# 127.0.0.1:$host_port, with pid and logs in the work directory.
cp -a /etc/nginx "$work/nginx-host"
sed -i -e "s|^pid .*|pid $work/nginx.pid;|" -e "s|/var/log/nginx/|$work/|g" -e "s|/etc/nginx/|$work/nginx-host/|g" \
    "$work/nginx-host/nginx.conf"
sed -i -e "s|listen 80 default_server;|listen 127.0.0.1:$host_port default_server;|" -e '/listen \[::\]:80/d' \
    "$work/nginx-host/sites-available/default"
ln -sf "$work/nginx-host/sites-available/default" "$work/nginx-host/sites-enabled/default"
/usr/sbin/nginx -c "$work/nginx-host/nginx.conf" -g 'daemon off;' 2>"$work/nginx-host.err" & host_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$host_port/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$host_port/" | grep -q "Welcome to nginx" || { echo "the host's nginx does not answer" >&2; cat "$work/nginx-host.err" >&2; exit 1; }

start_faasd() {
    rm -rf "$work/state"
    target/release/faasd --state-dir "$work/state" --listen 127.0.0.1:$port --ip-pool $pool --cores 2 \
        --init "$handlers/faas-init" --socket "$work/faasd.sock" >>"$work/faasd.log" 2>&1 &
    faasd_pid=$!
    for _ in $(seq 100); do curl -sf "$health" >/dev/null && break; sleep 0.1; done
    $FAAS deploy web --container-port 80 --warm 8 --archive "$work/nginx.tar" >/dev/null
    $FAAS deploy webr --container-port 80 --reuse --warm 2 --archive "$work/nginx.tar" >/dev/null
    $FAAS deploy close --warm 8 --archive "$work/close.tar" >/dev/null
    $FAAS deploy cold-rw --warm 0 --archive "$work/hello.tar" >/dev/null
    $FAAS deploy cold-ro --warm 0 --read-only --archive "$work/hello.tar" >/dev/null
    for f in web:8 webr:2 close:8; do
        for _ in $(seq 300); do
            [ "$($FAAS inspect "${f%%:*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["warm_ready"])')" -ge "${f#*:}" ] && break
            sleep 0.1
        done
    done
    rm -rf "$work/state-copy"
    target/release/faasd --state-dir "$work/state-copy" --listen 127.0.0.1:$((port + 1)) --ip-pool 127.253.1.0/24 --cores 2 \
        --init "$handlers/faas-init" --socket "$work/faasd-copy.sock" --copy-layers >>"$work/faasd-copy.log" 2>&1 &
    copy_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + 1))/healthz" >/dev/null && break; sleep 0.1; done
    FAAS_URL=unix://$work/faasd-copy.sock $FAAS deploy webc --container-port 80 --reuse --warm 2 --archive "$work/nginx.tar" >/dev/null
    sleep 1
}
lat() { # host port mode → p50 µs (requests that failed are counted in latency.log)
    { "$work/latency" "$1" "$2" "$LAT_N" "$3" $((GAP_MS * 1000)) || true; } | tee -a "$work/latency.log" |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["p50_us"]))'
}
rps() { wrk -t2 -c16 -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
cold() { python3 loadtest/seq.py http "$1" 80 20 30 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["p50_ms"], 2))'; }

out=loadtest/out; mkdir -p "$out"; : > "$out/stock.txt"
start_faasd
web=$($FAAS ip web); webr=$($FAAS ip webr); close=$($FAAS ip close)
webc=$(FAAS_URL=unix://$work/faasd-copy.sock $FAAS ip webc)
curl -sf "http://$web/" | grep -q "Welcome to nginx" || { echo "stock nginx does not answer" >&2; tail "$work/faasd.log" >&2; exit 1; }
for round in $(seq "$ROUNDS"); do
    host_eof=$(lat 127.0.0.1 $host_port eof); web_eof=$(lat "$web" 80 eof)
    host_cl=$(lat 127.0.0.1 $host_port cl); web_cl=$(lat "$web" 80 cl)
    host_rps=$(rps "http://127.0.0.1:$host_port/"); webr_rps=$(rps "http://$webr/"); webc_rps=$(rps "http://$webc/")
    close_eof=$(lat "$close" 80 eof); close_cl=$(lat "$close" 80 cl)
    cold_rw=$(cold "$($FAAS ip cold-rw)"); cold_ro=$(cold "$($FAAS ip cold-ro)")
    grep -q '"errors": [1-9]' "$work/latency.log" && { echo "requests failed:" >&2; grep '"errors": [1-9]' "$work/latency.log" >&2; }
    echo "round $round nginx_eof_us host $host_eof faasd $web_eof nginx_cl_us host $host_cl faasd $web_cl reuse_rps host $host_rps faasd $webr_rps copied $webc_rps close_us eof $close_eof cl $close_cl cold_ms rw $cold_rw ro $cold_ro" | tee -a "$out/stock.txt"
done
stop_faasd
python3 - "$out/stock.txt" <<'PY' | tee "$out/stock.md"
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
col = lambda i: [float(r[i]) for r in rows]
ratio = lambda a, b: st.median(x / y for x, y in zip(col(a), col(b)))
print(f"| claim | median ratio of {len(rows)} rounds | target |")
print("|---|---|---|")
print(f"| stock nginx single use, EOF p50 / host nginx | {ratio(6, 4):.2f} | ≤ 2 |")
print(f"| stock nginx single use, CL p50 / host nginx | {ratio(11, 9):.2f} | (orientation) |")
print(f"| stock nginx --reuse --warm 2, wrk -c16 / host nginx | {ratio(16, 14):.2f} | ≥ 0.85 |")
print(f"| same, faasd --copy-layers / host nginx | {ratio(18, 14):.2f} | (≥ 0.85) |")
print(f"| close-only probe, EOF p50 / CL p50 | {ratio(21, 23):.2f} | ≤ 1.3 |")
print(f"| cold start, writable layer / --read-only | {ratio(26, 28):.2f} | ≤ 1.1 |")
PY
