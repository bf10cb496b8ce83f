#!/usr/bin/env python3
"""Mixed soak driver for loadtest/soak.sh.

usage: soak.py WORKERS NAME=IP:COUNT ...

Opens COUNT connections to each function address (shuffled together),
WORKERS at a time; each sends one GET and reads until the server closes.
Prints one JSON object: per function, how many connections ended in each
outcome (an HTTP status, "closed" for a close without an answer, "reset",
"timeout" for no end within 30 s, "refused").
"""
import collections
import json
import random
import socket
import sys
import threading
import time

TIMEOUT = 30.0


def one(ip):
    try:
        s = socket.create_connection((ip, 80), timeout=TIMEOUT)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"
    try:
        s.settimeout(TIMEOUT)
        s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset" if not data else status_of(data)
    finally:
        s.close()
    return status_of(data) if data else "closed"


def status_of(data):
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/"):
        return parts[1].decode(errors="replace")
    return "garbage"


def main():
    workers = int(sys.argv[1])
    jobs = []
    for spec in sys.argv[2:]:
        name, rest = spec.split("=", 1)
        ip, count = rest.rsplit(":", 1)
        jobs += [(name, ip)] * int(count)
    random.seed(7)
    random.shuffle(jobs)
    results = collections.defaultdict(collections.Counter)
    lock = threading.Lock()
    it = iter(jobs)

    def work():
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            name, ip = job
            outcome = one(ip)
            with lock:
                results[name][outcome] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"seconds": round(time.monotonic() - t0, 1),
                      "connections": len(jobs),
                      "outcomes": {k: dict(v) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
