#!/usr/bin/env python3
"""Packs a directory into a one-layer `docker save` archive (classic
layout: manifest.json, the image config, the layer), for the load test's
images of ordinary programs.

  mkimage.py ROOTFS_DIR OUT.tar ENTRYPOINT_JSON [USER]

ENTRYPOINT_JSON is the image's Entrypoint as a JSON list.
"""
import hashlib
import io
import json
import sys
import tarfile

root, out, entrypoint = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
user = sys.argv[4] if len(sys.argv) > 4 else ""
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.add(root, arcname=".", recursive=True)
layer_bytes = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "User": user},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": config_name, "RepoTags": ["loadtest:latest"], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(out, mode="w") as t:
    for name, data in ((config_name, config), ("layer.tar", layer_bytes), ("manifest.json", manifest)):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
