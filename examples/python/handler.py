"""A faasd handler in Python: connect to /control.sock, receive one
connected TCP socket (SCM_RIGHTS), answer it, exit."""
import socket

with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
    control.connect("/control.sock")
    _, fds, _, _ = socket.recv_fds(control, 1, 1)
with socket.socket(fileno=fds[0]) as conn:
    request = b""
    while b"\r\n\r\n" not in request:  # the request's head
        chunk = conn.recv(65536)
        if not chunk:
            break
        request += chunk
    body = b"Hello from Python!\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.shutdown(socket.SHUT_WR)
