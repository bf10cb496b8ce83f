#!/usr/bin/env bash
# One command from a fresh machine to a served function: installs runc and
# the rest, builds faasd, starts it in the background, builds the example
# handler image with `docker build` (a private Docker engine is started for
# it and stopped after), deploys it with `docker save | faas deploy`, and
# calls it.
#
#   scripts/demo.sh                 # (as root) then: curl http://$(target/release/faas ip hello)/
#   kill $(cat faasd.pid)           # stop faasd (removes its addresses)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (faasd creates containers and addresses)" >&2; exit 1; }

scripts/install-deps.sh
echo "building faasd ..."
cargo build --quiet --release --bins
handlers=$(scripts/build-handlers.sh)
# faasd finds faas-init next to itself.
install -m 0755 "$handlers/faas-init" target/release/faas-init
FAAS=target/release/faas
# faas finds faasd on its control socket (/run/faasd/faasd.sock, root and
# the faasd group); /healthz answers on TCP without the token.
health=http://127.0.0.1:8080/healthz

if [ -f faasd.pid ] && kill -0 "$(cat faasd.pid)" 2>/dev/null && curl -sf "$health" >/dev/null; then
    echo "faasd already running (pid $(cat faasd.pid))"
else
    target/release/faasd --state-dir "${FAASD_STATE:-/var/lib/faasd}" >>faasd.log 2>&1 &
    echo $! > faasd.pid
    for _ in $(seq 100); do curl -sf "$health" >/dev/null && break; sleep 0.1; done
    curl -sf "$health" >/dev/null || { echo "faasd did not start; see faasd.log" >&2; tail faasd.log >&2; exit 1; }
    echo "faasd running (pid $(cat faasd.pid)), log in faasd.log"
fi

# docker build + docker save, as users do; a private engine since none runs here.
work=$(mktemp -d /tmp/faasd-demo.XXXXXX)
mkdir "$work/ctx"
cp "$handlers/hello" examples/hello/Dockerfile "$work/ctx/"
dockerd --host "unix://$work/d.sock" --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/d.pid" --bridge none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
cleanup() { kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export DOCKER_HOST="unix://$work/d.sock" DOCKER_BUILDKIT=0
for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker build -q -t hello "$work/ctx" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
docker save hello | "$FAAS" deploy hello

ip=$("$FAAS" ip hello)
echo
echo "curl http://$ip/"
curl -s "http://$ip/"
