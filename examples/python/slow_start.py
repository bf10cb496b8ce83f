"""A handler whose start takes 300 ms (standing for heavy imports or a
model loaded at start), served pre-initialized under `faas deploy --fork`
by faas_fork.fork_serve: the start is paid once, each connection gets a
fresh child. It answers which server started it and where the child
runs (tests/fork.rs, loadtest/run.sh)."""
import os
import random
import socket
import time

time.sleep(0.3)  # the slow start
import faas_fork  # noqa: E402

SERVER = "%d-%d" % (os.getpid(), time.monotonic_ns())


def handle(server, conn):
    data = b""
    while b"\r\n\r\n" not in data:  # the request's head
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    init = open("/proc/1/stat").read().rsplit(")", 1)[1].split()[19]
    procs = len([p for p in os.listdir("/proc") if p.isdigit()])
    body = (
        "server=%s\npidns=%s\ninit_start=%s\nrandom=%r\nprocs=%d\n"
        % (server, os.readlink("/proc/self/ns/pid"), init, random.random(), procs)
    ).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.shutdown(socket.SHUT_WR)


faas_fork.fork_serve(lambda: SERVER, handle)
