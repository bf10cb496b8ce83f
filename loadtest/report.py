#!/usr/bin/env python3
"""Turns loadtest/run.sh's results.json into the report's table: every
faasd number beside its reference from the same run, the ratio and the
target it is held to.

  report.py RESULTS_JSON
"""
import datetime
import json
import os
import platform
import sys

r = json.load(open(sys.argv[1]))
mean = lambda v: sum(v) / len(v)
rows = []


def row(measure, ours, ref, ratio, target, ok):
    rows.append(f"| {measure} | {ours} | {ref} | {ratio} | {target} {'✓' if ok else '✗'} |")


us = lambda v: f"{v:.0f} µs"
for mode, name, limit in (("eof", "to EOF", 4.0), ("cl", "to Content-Length", 3.0)):
    w, p = r[f"warm_{mode}"], r[f"plain_{mode}"]
    ratio = w["p50_us"] / p["p50_us"]
    row(f"warm single-use hit p50, {name} (C client)", us(w["p50_us"]), f"plain server {us(p['p50_us'])}",
        f"{ratio:.2f}", f"≤ {limit:g}", ratio <= limit)
p99 = max(r["warm_eof"]["p99_us"], r["warm_cl"]["p99_us"])
row("warm single-use hit p99 (the larger of EOF and Content-Length)", us(p99), "—", "—", "≤ 2 ms", p99 <= 2000)

m = r["memory"]
grew = lambda k: (m["after"][k] - m["before"][k]) / 40
kernel = sum(grew(k) for k in ("SUnreclaim", "PageTables", "KernelStack", "Percpu"))
over = kernel + grew("faasd_rss")
available = (m["before"]["MemAvailable"] - m["after"]["MemAvailable"]) / 40
row("memory per pooled container (`--warm 40`), above the handler's own: kernel objects + faasd",
    f"{over / 1024:.2f} MB", f"handler Pss {m['handler_pss_kb'] / 1024:.2f} MB", "—", "≤ 0.5 MB", over <= 512)

# Each runtime's fresh rounds against the runc rates measured between them.
rates = {rt: mean([x["per_s"] for x in r[f"runc_rate_{rt}"]]) for rt in ("runc", "crun")}
for runtime, limit in (("runc", 0.9), ("crun", 2.0)):
    fresh, rate = mean([float(x) for x in r[f"fresh_{runtime}"]]), rates[runtime]
    row(f"fresh containers, wrk -t2 -c16 `--warm 8`, {runtime} (mean of 2, alternated)", f"{fresh:.0f} req/s",
        f"plain-runc creation rate {rate:.0f}/s", f"{fresh / rate:.2f}", f"≥ {limit:g}", fresh / rate >= limit)
rate = mean(list(rates.values()))
row("(crun's own creation rate, 4 loops)", f"{r['crun_rate']['per_s']:.0f}/s", f"{rate:.0f}/s",
    f"{r['crun_rate']['per_s'] / rate:.2f}", "—", True)
crun = r["crun_rate"]["per_s"]
for key, what in (("exec", "exec a static no-op"), ("exit", "exit without exec"),
                  ("exec_net", "exec, with a network namespace too")):
    n = r["fork_ref"][key]
    row(f"(#24's ceiling: clone into user, mount, pid, ipc, uts namespaces, tmpfs /tmp, {what}; 2 workers)",
        f"{n:.0f}/s", f"crun's creation rate {crun:.0f}/s", f"{n / crun:.1f}", "—", True)

f = r["fork"]
ref = mean(f["ref"])
for key, what in (("fork", "its own writable root"), ("fork_ro", "`--read-only`")):
    n = mean(f[key])
    row(f"`--fork --stdio` static probe (an exec per connection), {what}, wrk -t2 -c16 (mean of {len(f[key])}, alternated)",
        f"{n:.0f} req/s", f"forkref exec {ref:.0f}/s", f"{n / ref:.2f}", "≥ 0.5", n / ref >= 0.5)
    row(f"(the same against crun's creation rate)", f"{n:.0f} req/s", f"crun {crun:.0f}/s", f"{n / crun:.1f}", "≥ 5",
        n / crun >= 5)
for mode, name in (("eof", "to EOF"), ("cl", "to Content-Length")):
    fk, w = r[f"fork_{mode}"], r[f"warm_{mode}"]
    ratio = fk["p50_us"] / w["p50_us"]
    row(f"`--fork` warm single-use p50, {name} (C client)", us(fk["p50_us"]), f"warm pool hit {us(w['p50_us'])}",
        f"{ratio:.2f}", "≤ 1.5", ratio <= 1.5)

fs = r["fork_sdk"]
n, ref = mean(fs["sdk"]), mean(fs["ref"])
row(f"`--fork` through the SDK (the probe's `fork_serve`, no exec), wrk -t2 -c16 (mean of {len(fs['sdk'])}, alternated)",
    f"{n:.0f} req/s", f"forkref exit {ref:.0f}/s", f"{n / ref:.2f}", "≥ 0.5", n / ref >= 0.5)
row("(the same against crun's creation rate)", f"{n:.0f} req/s", f"crun {crun:.0f}/s", f"{n / crun:.1f}", "≥ 10",
    n / crun >= 10)
pf, pr = r["py_fork"], r["py_fresh"]
row("Python, a 300 ms start, `--fork` through `faas_fork.py`: warm p50, to Content-Length (C client)",
    f"{pf['p50_us'] / 1000:.1f} ms", f"without `--fork`, `--warm 0` {pr['p50_us'] / 1000:.0f} ms", "—", "≤ 10 ms",
    pf["p50_us"] <= 10_000)

if "fork_memory" in r:
    fm = r["fork_memory"]
    per = (fm["with"] - fm["before"]) / max(fm["children"], 1) / 1e6
    beyond = per - fm["program_private_kb"] / 1e3
    row(f"`--fork`: memory per live child, {fm['children']} held open ({fm['containers']} pool container; its "
        f"memory cgroup), beyond what its program touches itself ({fm['program_private_kb']} kB private)", f"{beyond:.2f} MB",
        f"all of it {per:.2f} MB", "—", "≤ 0.3 MB", beyond <= 0.3)

if "pool_follows" in r:
    pfx, pfo, pt = r["pool_fixed"], r["pool_follows"], r["pool_target"]
    ratio = pfo["p90_us"] / pfo["p50_us"]
    row("python3 -m http.server single use, bursts of 8 back to back every 2 s: `--warm 2 --warm-max 16` p90 "
        f"against its p50 (C client, to Content-Length; the pool grew to {pt['grown']})",
        us(pfo["p90_us"]), f"p50 {us(pfo['p50_us'])}", f"{ratio:.2f}", "≤ 2", ratio <= 2)
    row("(the same load with `--warm 2`: p90, p50)", us(pfx["p90_us"]), f"p50 {us(pfx['p50_us'])}",
        f"{pfx['p90_us'] / pfx['p50_us']:.1f}", "—", True)
    row("(the grown pool, 14 s after the load with `--pool-idle 10`: target, ready)",
        f"{pt['after_idle']}, {pt['ready_after_idle']}", "--warm 2", "—", "2", pt["after_idle"] == 2)

for runtime in ("runc", "crun"):
    c = r[f"cold_{runtime}"]
    ratio = c["http"]["p50_ms"] / c["runc"]["p50_ms"]
    row(f"cold p50, `--warm 0`, {runtime}", f"{c['http']['p50_ms']:.1f} ms",
        f"sandboxed `{runtime} run` {c['runc']['p50_ms']:.1f} ms", f"{ratio:.2f}", "≤ 1.1", ratio <= 1.1)
u = r["unsandboxed"]["p50_ms"]
row("(cold p50, runc, against unsandboxed `runc run`)", f"{r['cold_runc']['http']['p50_ms']:.1f} ms",
    f"{u:.1f} ms", f"{r['cold_runc']['http']['p50_ms'] / u:.2f}", "—", True)

re = r["reuse"]
plain, reuse2, reuse1 = mean(re["plain"]), mean(re["reuse2"]), mean(re["reuse1"])
row(f"reuse, wrk -t2 -c32 `--reuse --warm 2` (mean of {len(re['reuse2'])}, alternated)", f"{reuse2:.0f} req/s",
    f"plain server {plain:.0f} req/s", f"{reuse2 / plain:.2f}", "≥ 0.7 (aim 0.8)", reuse2 / plain >= 0.7)
row("reuse, `--cores 2` against `--cores 1`", f"{reuse2:.0f} req/s", f"{reuse1:.0f} req/s",
    f"{reuse2 / reuse1:.2f}", "≥ 0.95", reuse2 / reuse1 >= 0.95)

if "kind_control" in r:
    ctl = r["kind_control"]["p50_us"]
    for kind, label, limit in (("stdio", "`--stdio` (the probe on stdout)", 1.5),
                               ("pport", "`--container-port` single use (the plain server's code)", 2.0),
                               ("port", "`--container-port` single use (busybox httpd -f)", 2.0)):
        if f"kind_{kind}" not in r:
            continue
        v = r[f"kind_{kind}"]["p50_us"]
        row(f"{label} warm hit p50, to Content-Length", us(v), f"control-socket probe {us(ctl)}",
            f"{v / ctl:.2f}", f"≤ {limit:g}", v / ctl <= limit)
    if "kind_busybox_host" in r:
        v, host = r["kind_port"]["p50_us"], r["kind_busybox_host"]["p50_us"]
        row("(busybox httpd -f single use against busybox httpd on the host, p50)", us(v), us(host),
            f"{v / host:.2f}", "—", True)
    kw = r["kinds_wrk"]
    bb, port_reuse = mean(kw["busybox"]), mean(kw["port_reuse"])
    row("`--container-port --reuse`, busybox httpd -f, wrk -t2 -c16", f"{port_reuse:.0f} req/s",
        f"busybox httpd on the host {bb:.0f} req/s", f"{port_reuse / bb:.2f}", "≥ 0.8", port_reuse / bb >= 0.8)
    plain2, act = mean(kw["plain"]), mean(kw["activated"])
    row("`--socket-activation`, the plain server's code, wrk -t2 -c32", f"{act:.0f} req/s",
        f"the plain server on the host {plain2:.0f} req/s", f"{act / plain2:.2f}", "≥ 0.9", act / plain2 >= 0.9)

mt = r["metrics"]
on_p50, off_p50 = mean(mt["on"]["p50"]), mean(mt["off"]["p50"])
on_rps, off_rps = mean(mt["on"]["rps"]), mean(mt["off"]["rps"])
row("metrics cost: warm p50 (cl), on against `--no-metrics`", us(on_p50), us(off_p50),
    f"{on_p50 / off_p50:.3f}", "≤ 1.05", on_p50 / off_p50 <= 1.05)
row("metrics cost: reuse wrk, on against `--no-metrics`", f"{on_rps:.0f} req/s", f"{off_rps:.0f} req/s",
    f"{on_rps / off_rps:.3f}", "≥ 0.95", on_rps / off_rps >= 0.95)

print(f"# faasd load test, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}")
print()
print("| measure | faasd | reference | ratio | target |")
print("|---|---|---|---|---|")
print("\n".join(rows))
print()
print(f"warm (C client, {r['warm_cl']['n']} requests each): "
      + ", ".join(f"{k} p50/p90/p99 {r[k]['p50_us']:.0f}/{r[k]['p90_us']:.0f}/{r[k]['p99_us']:.0f} µs"
                  for k in ("warm_eof", "warm_cl", "plain_eof", "plain_cl")))
kinds = [k for k in ("kind_control", "kind_stdio", "kind_pport", "kind_port", "kind_busybox_host") if k in r]
if kinds:
    print("kinds (C client, to Content-Length): " + ", ".join(
        f"{k[5:]} p50/p90/p99 {r[k]['p50_us']:.0f}/{r[k]['p90_us']:.0f}/{r[k]['p99_us']:.0f} µs" for k in kinds))
print(f"wrk rounds (req/s): plain {re['plain']}, reuse cores 2 {re['reuse2']}, cores 1 {re['reuse1']}")
print(f"metrics rounds: p50 µs on {mt['on']['p50']}, off {mt['off']['p50']}; req/s on {mt['on']['rps']}, off {mt['off']['rps']}")
print(f"memory per container: unreclaimable slab {grew('SUnreclaim'):.0f} kB (all slab {grew('Slab'):.0f} kB: "
      f"the rest is dentry and inode caches the kernel drops under pressure), page tables {grew('PageTables'):.0f} kB, kernel stacks {grew('KernelStack'):.0f} kB, "
      f"per-cpu {grew('Percpu'):.0f} kB, faasd {grew('faasd_rss'):.0f} kB; MemAvailable dropped {available:.0f} kB "
      f"(page cache and all); runtime processes beside the pool: {m['runtime_processes']}")
if "kinds_wrk" in r:
    print(f"kinds rounds (req/s): {r['kinds_wrk']}")
print(f"wrk errors: {r['errors']}")
