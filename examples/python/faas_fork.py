"""fork_serve for Python handlers: do the expensive start once (imports,
loading data), then serve every connection in a fresh child forked after
it, in a sandbox of its own. Standard library only.

    import faas_fork

    def init():
        import numpy          # slow imports, models, tables: once
        return {"table": ...}

    def handle(state, conn):  # a connected socket.socket
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nhi\\n")

    faas_fork.fork_serve(init, handle)

Under `faas deploy --fork` faas-init starts the program once with
FAAS_FORK_SERVER set (faasd's protocol, protocol/src/lib.rs `fork`):
fork_serve runs init, says it is ready, and for each connection receives
it together with a prepared sandbox's namespaces. It forks; the child
enters them (its own mount, pid, ipc, uts and network namespaces: a root,
/proc, /tmp and loopback no other connection sees), forks once more into
the pid namespace, drops every capability the function has not got,
installs the seccomp filter faas-init gave (no mounts, no namespaces),
reseeds `random`, and calls handle(state, conn). Without FAAS_FORK_SERVER
(no --fork) it runs init and then serves one connection per process, as
a handler of faasd's protocol does.

A child is a copy of the server: whatever must differ between
connections and was made in init (a random.Random of your own, tokens,
UUID state) must be made anew in handle. `random`'s module functions and
`os.urandom`, `secrets` and `uuid.uuid4` need nothing.
"""
import ctypes
import os
import random
import signal
import socket
import struct
import traceback

CONTROL_SOCKET = "/control.sock"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_ENTERED = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWPID | _CLONE_NEWNET

_PR_CAPBSET_DROP = 24
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_CAPSET = 126  # x86_64
_CAP_VERSION_3 = 0x20080522


def fork_serve(init, handle):
    server = os.environ.get("FAAS_FORK_SERVER")
    if server is None:
        _serve_plain(init(), handle)
        return
    channel = socket.socket(fileno=int(server))
    seal = _Seal.from_env()
    cwd = os.getcwd()
    state = init()
    # Its children go at once (reaped by the kernel): waiting for each
    # would make the server wait for every setns and second fork.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    channel.sendall(b"\x01")
    while True:
        request = _next_request(channel)
        if request is None:
            return
        conn, holder, done = request
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _enter_and_serve(channel, seal, cwd, holder, lambda: handle(state, socket.socket(fileno=conn)))
            except BaseException:
                traceback.print_exc()  # the function's log
            finally:
                os._exit(code)
        for fd in (conn, holder, done):
            os.close(fd)


def _serve_plain(state, handle):
    """One connection from faasd's /control.sock (its protocol)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(CONTROL_SOCKET)
        _, fds, _, _ = socket.recv_fds(control, 1, 16)
    for fd in fds[1:]:
        os.close(fd)
    with socket.socket(fileno=fds[0]) as conn:
        handle(state, conn)


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _next_request(channel):
    """The next connection, the holder's pidfd and the pipe's write end;
    None once faas-init has no more."""
    if _recv_exact(channel, 8) is None:
        return None
    msg, fds, _, _ = socket.recv_fds(channel, 1, 3)
    if not msg:
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise OSError("faas-init sent a request without its descriptors")
    return fds


def _enter_and_serve(channel, seal, cwd, holder, serve):
    """In the forked child: into the sandbox, once more into its pid
    namespace, sealed, then serve. The exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    channel.close()
    if libc.setns(holder, _ENTERED) != 0:
        os.write(2, b"faas_fork: entering a connection's sandbox: %s\n" % os.strerror(ctypes.get_errno()).encode())
        return 1
    os.close(holder)
    if os.fork() != 0:
        return 0
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the handler's own children
    seal.apply(libc)
    random.seed()
    try:
        os.chdir(cwd)
    except OSError:
        pass
    serve()
    return 0


class _Seal:
    """What a child gives up before it serves: every capability but the
    function's (for a root user; all for another), and what faas-init's
    seccomp program forbids."""

    def __init__(self, caps, last_cap, program):
        self.caps, self.last_cap, self.program = caps, last_cap, program

    @classmethod
    def from_env(cls):
        caps = [int(c) for c in os.environ["FAAS_FORK_CAPS"].split(",") if c]
        last_cap = int(os.environ["FAAS_FORK_LAST_CAP"])
        program = bytes.fromhex(os.environ["FAAS_FORK_SEAL"])
        if not program or len(program) % 8:
            raise ValueError("FAAS_FORK_SEAL is not a seccomp program")
        for name in ("FAAS_FORK_SERVER", "FAAS_FORK_SEAL", "FAAS_FORK_CAPS", "FAAS_FORK_LAST_CAP"):
            os.environ.pop(name, None)
        return cls(caps, last_cap, program)

    def apply(self, libc):
        def check(rc, what):
            if rc != 0:
                raise OSError(ctypes.get_errno(), what)

        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        for cap in range(self.last_cap + 1):
            if cap not in self.caps:
                check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), "dropping a capability")
        check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
        kept = self.caps if os.geteuid() == 0 else []
        words = [0, 0]
        for cap in kept:
            if cap < 64:
                words[cap // 32] |= 1 << (cap % 32)
        header = struct.pack("Ii", _CAP_VERSION_3, 0)
        data = struct.pack("IIIIII", words[0], words[0], 0, words[1], words[1], 0)
        hbuf = ctypes.create_string_buffer(header)
        dbuf = ctypes.create_string_buffer(data)
        check(libc.syscall(_SYS_CAPSET, hbuf, dbuf), "setting capabilities")
        filt = ctypes.create_string_buffer(self.program)
        fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(self.program) // 8, ctypes.addressof(filt)))
        check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "installing the seccomp filter")
