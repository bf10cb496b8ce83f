#!/usr/bin/env bash
# Registry pulls (#25), each claim a ratio to a reference in the same run:
#   pull      `faas deploy --image` of a ~100 MB image of 5 layers (20 MB of
#             noise each, gzip) from Debian's docker-registry on loopback:
#             faasd's pull + unpack (its log's "image pulled ... ms=") and the
#             whole deploy (wall clock, the first container included), against
#             `skopeo copy` of the same image to a local directory (download
#             and verify, no unpack); alternated, ROUNDS times, medians
#   again     the same digest deployed again (manifest only): wall clock
#   one       an image that differs in one 1 MB layer: bytes fetched
# Writes loadtest/out/pull.md. Needs root, docker-registry, skopeo and a
# release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
bin=target/release
work=$(mktemp -d /tmp/faasd-pull.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$work/faasd.log" /tmp/pull-faasd.log; rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $host
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
pids+=($!)

# Five layers of incompressible noise, docker save's classic layout; one
# variant whose last layer is 1 MB of other noise.
python3 - "$work" <<'PY'
import hashlib, io, json, os, random, sys, tarfile
work = sys.argv[1]
def layer(name, size, seed):
    rnd = random.Random(seed)
    data = rnd.randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name); info.size = size; info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
def image(path, layers):
    probe = open("target/handlers/x86_64-unknown-linux-gnu/release/hello", "rb").read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("handler"); info.size = len(probe); info.mode = 0o755
        t.addfile(info, io.BytesIO(probe))
    blobs = [buf.getvalue()] + layers
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    config = json.dumps({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/handler"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cid = hashlib.sha256(config).hexdigest()
    with tarfile.open(path, "w") as out:
        def add(name, data):
            info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
        names = []
        for i, b in enumerate(blobs):
            names.append(f"{i}/layer.tar"); add(names[-1], b)
        add(f"{cid}.json", config)
        add("manifest.json", json.dumps([{"Config": f"{cid}.json", "RepoTags": ["big:1"], "Layers": names}]).encode())
big = [layer(f"data/{i}", 20 << 20, i) for i in range(5)]
image(f"{work}/big.tar", big)
image(f"{work}/big2.tar", big[:4] + [layer("data/4", 1 << 20, 99)])
PY
for i in $(seq 50); do curl -sf "http://$host/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false docker-archive:"$work/big.tar" "docker://$host/big:1"
skopeo copy --quiet --dest-tls-verify=false docker-archive:"$work/big2.tar" "docker://$host/big:2"
# The pushes' pages are still dirty: faasd's one sync per image (syncfs, the
# whole filesystem) would write them back in the first round.
sync

"$bin/faasd" --state-dir "$work/state" --listen 127.0.0.1:0 --ip-pool 127.77.0.0/24 \
    --socket "$work/faasd.sock" --insecure-registry "$host" > "$work/faasd.log" 2>&1 &
pids+=($!)
export FAAS_URL=unix://$work/faasd.sock
for i in $(seq 100); do "$bin/faas" ls >/dev/null 2>&1 && break; sleep 0.1; done

now() { date +%s.%N; }
deploy() {
    "$bin/faas" deploy big --image "$1" --warm 0 > "$work/deploy.out" 2>&1 || {
        echo "pull.sh: faas deploy --image $1 failed:" >&2
        cat "$work/deploy.out" >&2
        tail -5 "$work/faasd.log" >&2
        exit 1
    }
}
pulled_ms() { grep "image pulled" "$work/faasd.log" | grep "reference=$1 " | tail -1 | sed 's/.* ms=\([0-9]*\).*/\1/'; }
sk=() fa=() fw=()
for r in $(seq "$ROUNDS"); do
    rm -rf "$work/dir"
    t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://$host/big:1" "dir:$work/dir"; t1=$(now)
    sk+=("$(echo "($t1 - $t0) * 1000" | bc)")
    sync    # skopeo's copy is not faasd's to write back
    "$bin/faas" rm big >/dev/null 2>&1 || true
    t0=$(now); deploy "$host/big:1"; t1=$(now)
    fw+=("$(echo "($t1 - $t0) * 1000" | bc)")
    fa+=("$(pulled_ms "$host/big:1")")
done
t0=$(now); deploy "$host/big:1"; t1=$(now)
again=$(echo "($t1 - $t0) * 1000" | bc)
again_fetched=$(grep "image pulled" "$work/faasd.log" | tail -1 | sed 's/.* fetched=\([0-9]*\).*bytes=\([0-9]*\).*/\1 layers, \2 bytes/')
deploy "$host/big:2"
one=$(grep "image pulled" "$work/faasd.log" | tail -1 | sed 's/.* fetched=\([0-9]*\).*bytes=\([0-9]*\).*/\1 layers, \2 bytes/')
size=$(du -sb "$work/dir" | cut -f1)

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
msk=$(median "${sk[@]}"); mfa=$(median "${fa[@]}"); mfw=$(median "${fw[@]}")
mkdir -p loadtest/out
{
    echo "# Registry pulls ($(date -u +%FT%TZ), $(nproc) CPUs, $ROUNDS rounds, medians)"
    echo
    echo "| what | ms | ratio to skopeo copy |"
    echo "| --- | --- | --- |"
    echo "| skopeo copy docker:// → dir: ($((size / 1000000)) MB, 5+1 layers) | $msk | 1.00 |"
    echo "| faasd pull + unpack (log) | $mfa | $(echo "scale=2; $mfa / $msk" | bc) |"
    echo "| faas deploy --image, wall (first container included) | $mfw | $(echo "scale=2; $mfw / $msk" | bc) |"
    echo "| the same digest again, wall | $again | ($again_fetched) |"
    echo
    echo "An image differing in one 1 MB layer fetched: $one."
    echo
    echo "Rounds: skopeo ${sk[*]}; faasd pull ${fa[*]}; deploy ${fw[*]}"
} | tee loadtest/out/pull.md
