/*
 * latency: sequential HTTP/1.1 requests, one TCP connection each, timed
 * from connect() to the end of the answer, measured two ways:
 *
 *   eof  the answer ends when the server closes (read until EOF): what an
 *        HTTP/1.0 client or any length-less TCP protocol waits for
 *   cl   the answer ends when Content-Length bytes of body have arrived
 *        (the client then closes by itself): what HTTP/1.1 clients do
 *
 * usage: latency HOST PORT N MODE [GAP_US [BURST]]
 *   GAP_US (default 0) is slept between requests (time for a pool refill);
 *   with BURST, only after every BURST requests (back-to-back bursts).
 * Prints one JSON object: n, mode, p50_us, p90_us, p99_us, max_us, mean_us,
 * errors (requests without a 200 answer).
 * LAT_HOST (environment) is the request's Host (default x): a function
 * behind a shared listener is named by it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Body length from the head, or -1 if it has none. */
static long content_length(const char *head, size_t len) {
    const char *p = head, *end = head + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0)
            return strtol(p + 15, NULL, 10);
        p = eol + 1;
    }
    return -1;
}

/* One request; returns 0 on a 200 answer, -1 otherwise. */
static char req[512];
static size_t req_len;

static int once(const struct sockaddr_in *addr, int to_eof) {
    char buf[65536];
    size_t have = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 ||
        write(fd, req, req_len) != (ssize_t)req_len) {
        close(fd);
        return -1;
    }
    long want = -1;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        if (!to_eof) {
            char *blank = strstr(buf, "\r\n\r\n");
            if (blank && want < 0)
                want = content_length(buf, (size_t)(blank - buf));
            if (blank && want >= 0 && have >= (size_t)(blank + 4 - buf) + (size_t)want)
                break;
        }
        if (have >= sizeof buf - 1)
            break;
    }
    close(fd);
    return (have >= 12 && strncmp(buf + 9, "200", 3) == 0) ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT N eof|cl [GAP_US [BURST]]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "latency: bad address %s\n", argv[1]);
        return 2;
    }
    int n = atoi(argv[3]);
    int to_eof = strcmp(argv[4], "eof") == 0;
    if (n <= 0 || (!to_eof && strcmp(argv[4], "cl") != 0)) {
        fprintf(stderr, "latency: N must be positive and MODE eof or cl\n");
        return 2;
    }
    const char *host = getenv("LAT_HOST");
    int w = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     host && *host ? host : "x");
    if (w <= 0 || (size_t)w >= sizeof req) {
        fprintf(stderr, "latency: LAT_HOST is too long\n");
        return 2;
    }
    req_len = (size_t)w;
    long gap_us = argc > 5 ? atol(argv[5]) : 0;
    int burst = argc > 6 ? atoi(argv[6]) : 1;
    if (burst <= 0)
        burst = 1;
    double *t = calloc((size_t)n, sizeof *t);
    if (!t)
        return 1;
    int errors = 0;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        if (once(&addr, to_eof) < 0)
            errors++;
        t[i] = now_us() - t0;
        sum += t[i];
        if (gap_us > 0 && (i + 1) % burst == 0)
            usleep((useconds_t)gap_us);
    }
    qsort(t, (size_t)n, sizeof *t, cmp);
#define PCT(p) t[(int)((n - 1) * (p) + 0.5)]
    printf("{\"n\": %d, \"mode\": \"%s\", \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
           "\"max_us\": %.1f, \"mean_us\": %.1f, \"errors\": %d}\n",
           n, to_eof ? "eof" : "cl", PCT(0.5), PCT(0.9), PCT(0.99), t[n - 1], sum / n, errors);
    free(t);
    return errors ? 1 : 0;
}
