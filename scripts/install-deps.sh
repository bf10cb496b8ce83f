#!/usr/bin/env bash
# Installs what faasd and its tests need on a fresh Debian machine of this
# kind: the OCI runtimes (runc, crun), the Docker engine and skopeo (test
# fixtures and the README flow), wrk (load tests), iproute2 and busybox
# (reference bundle, ordinary-image tests), prometheus and promtool
# (metrics tests), gcc (C handlers and test servers, the load test's
# client), Debian's python3 (an image of it runs a Python handler),
# systemd-analyze (the unit file is verified), bird2 (BGP tests: a router
# and nodes in network namespaces), frr (the same router in FRR),
# etcd-server (the cluster test's registry), protobuf-compiler and
# libprotobuf-dev (etcd-client's build needs protoc and the well-known
# .proto files), curl, and iptables (egress rules; the cluster test's
# router pins flows), openssl (the cluster tests' etcd PKI), and the
# stock software the tests run as users have it: nginx-light,
# python3-gunicorn, python3-uvicorn; docker-registry (distribution 2.8:
# the registry the pull tests push to with skopeo).
set -euo pipefail

# command:package, or /path:package for a file a package brings
wanted="runc:runc crun:crun dockerd:docker.io skopeo:skopeo wrk:wrk ip:iproute2 busybox:busybox-static promtool:prometheus gcc:gcc /usr/bin/python3.11:python3-minimal systemd-analyze:systemd man:man-db bird:bird2 /usr/lib/frr/bgpd:frr etcd:etcd-server protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev curl:curl nsenter:util-linux iptables:iptables openssl:openssl /usr/sbin/nginx:nginx-light /usr/lib/python3/dist-packages/gunicorn:python3-gunicorn /usr/lib/python3/dist-packages/uvicorn:python3-uvicorn docker-registry:docker-registry"
have() {
    case $1 in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
need=()
for pair in $wanted; do
    have "${pair%%:*}" || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
missing=()
for pair in $wanted; do
    have "${pair%%:*}" || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: still missing after apt-get: ${missing[*]}" >&2
    exit 1
fi
# Members of the faasd group may drive faasd through its control socket
# (the tests check it with an unprivileged user in the group).
getent group faasd >/dev/null || groupadd --system faasd
