#!/usr/bin/env python3
"""Deploy fan-out time against node count, from cluster-scale.sh's
MEASURE lines: every deploy's time as a dot, p50 and max as lines.

  fanout_plot.py MEASURES PNG
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"MEASURE fanout nodes=(\d+) deploy=\d+ ms=(\d+)", line)
    if m:
        runs.setdefault(int(m[1]), []).append(int(m[2]) / 1000)
if not runs:
    sys.exit("no fanout measures")
nodes = sorted(runs)
p50 = [sorted(runs[n])[len(runs[n]) // 2] for n in nodes]
top = [max(runs[n]) for n in nodes]
fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
for n in nodes:
    ax.scatter([n] * len(runs[n]), runs[n], s=8, color="0.6")
ax.plot(nodes, p50, marker="o", label="p50")
ax.plot(nodes, top, marker="^", label="max")
ax.set_xlabel("nodes")
ax.set_ylabel("deploy → served by every node (s)")
ax.set_title(f"10 MB image, {len(runs[nodes[0]])} deploys per count")
ax.set_xticks(nodes)
ax.set_ylim(bottom=0)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2])
print(f"wrote {sys.argv[2]}")
