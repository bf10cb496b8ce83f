#!/usr/bin/env python3
"""Sequential latency probes for loadtest/run.sh (standard library only).

  seq.py http HOST PORT N [GAP_MS]
                                 p50/p90 of N sequential GET / (new connection each),
                                 GAP_MS (default 20) apart so a pool can refill
  seq.py runc ROOT BUNDLE N      p50/p90 of N sequential `RUNTIME run` of a no-op container
  seq.py runc-rate ROOT BUNDLE LOOPS SECONDS
                                 containers/s created by LOOPS parallel `RUNTIME run` loops

  seq.py versus ROOT BUNDLE HOST PORT ROUNDS N
                                 ROUNDS × N pairs of one `RUNTIME run` and one GET /
                                 (30 ms apart), alternated one by one so the
                                 machine's drift hits both alike; p50 of each

RUNTIME is the environment's RUNTIME (runc or crun; default runc).
Prints one JSON object.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def http_once(host, port):
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    took = time.perf_counter() - t0
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bad answer: {data[:80]!r}")
    return took


RUNTIME = os.environ.get("RUNTIME", "runc")


def runc_once(root, bundle, cid):
    t0 = time.perf_counter()
    r = subprocess.run([RUNTIME, "--root", root, "run", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{RUNTIME} run failed: {r.stderr.decode()[:200]}")
    return took


def report(samples):
    return {"n": len(samples), "p50_ms": pct(samples, 0.5) * 1e3, "p90_ms": pct(samples, 0.9) * 1e3,
            "mean_ms": statistics.mean(samples) * 1e3}


def main():
    kind = sys.argv[1]
    if kind == "http":
        host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        gap = (float(sys.argv[5]) if len(sys.argv) > 5 else 20.0) / 1000
        http_once(host, port)
        samples = []
        for _ in range(n):
            time.sleep(gap)
            samples.append(http_once(host, port))
        print(json.dumps(report(samples)))
    elif kind == "runc":
        root, bundle, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        samples = [runc_once(root, bundle, f"ref-{i}") for i in range(n)]
        print(json.dumps(report(samples)))
    elif kind == "runc-rate":
        root, bundle, loops, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        done = [0] * loops
        stop = time.perf_counter() + seconds

        def loop(i):
            k = 0
            while time.perf_counter() < stop:
                runc_once(root, bundle, f"rate-{i}-{k}")
                k += 1
            done[i] = k

        t0 = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"containers": sum(done), "per_s": sum(done) / (time.perf_counter() - t0)}))
    elif kind == "versus":
        root, bundle, host, port = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        rounds, n = int(sys.argv[6]), int(sys.argv[7])
        runc, http = [], []
        http_once(host, port)
        for r in range(rounds):
            for i in range(n):
                runc.append(runc_once(root, bundle, f"vs-{r}-{i}"))
                time.sleep(0.03)
                http.append(http_once(host, port))
                time.sleep(0.03)
        print(json.dumps({"runc": report(runc), "http": report(http)}))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
