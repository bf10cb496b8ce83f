/*
 * A faasd handler in C: connect to /control.sock, receive one connected
 * TCP socket (SCM_RIGHTS), answer it, exit. Static, so it runs in a
 * FROM-scratch image:   gcc -static -O2 -o handler handler.c
 */
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(void) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/control.sock"};
    int control = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(control, (struct sockaddr *)&addr, sizeof addr) < 0)
        return 1;
    char byte, cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    if (recvmsg(control, &msg, 0) <= 0 || !CMSG_FIRSTHDR(&msg))
        return 1;
    int conn;
    memcpy(&conn, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof conn);
    char request[4096];
    size_t have = 0; /* the request's head, up to its blank line */
    while (have < sizeof request - 1) {
        ssize_t got = read(conn, request + have, sizeof request - 1 - have);
        if (got <= 0)
            break;
        have += (size_t)got;
        request[have] = 0;
        if (strstr(request, "\r\n\r\n"))
            break;
    }
    static const char answer[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nHello from C!\n";
    (void)write(conn, answer, sizeof answer - 1);
    shutdown(conn, SHUT_WR);
    close(conn);
    return 0;
}
