#!/usr/bin/env python3
"""Makes the sandboxed reference bundle of the load test from a config.json
that faasd wrote for a container (same user namespace and id mapping,
seccomp allowlist, capabilities, masks, limits), with the handler replaced
by a static `true` and the control socket's mount dropped, so that plain
`runc run` / `crun run` of it costs what the sandbox costs and nothing of
faasd's.

  refbundle.py FAASD_CONFIG_JSON OUT_DIR TRUE_BINARY

OUT_DIR gets config.json and rootfs/ (owned by the function's container
root, as faasd's rootfs is). The cgroup path is left to the runtime (one
per container id), so parallel runs do not share one.
"""
import json
import os
import shutil
import sys

src, out, true_bin = sys.argv[1:4]
config = json.load(open(src))
rootfs = os.path.join(out, "rootfs")
os.makedirs(rootfs, exist_ok=True)
for d in ("proc", "dev", "sys", "tmp"):
    os.makedirs(os.path.join(rootfs, d), exist_ok=True)
os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
shutil.copy(true_bin, os.path.join(rootfs, "true"))
base = config["linux"]["uidMappings"][0]["hostID"]
for dirpath, dirnames, filenames in os.walk(rootfs):
    for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
        os.lchown(name, base, base)
config["process"]["args"] = ["/true"]
config["process"]["user"] = {"uid": 0, "gid": 0}
config["process"]["cwd"] = "/"
config["root"]["path"] = "rootfs"
config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/control.sock"]
config["linux"].pop("cgroupsPath", None)
json.dump(config, open(os.path.join(out, "config.json"), "w"))
