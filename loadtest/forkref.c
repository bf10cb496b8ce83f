/* The machine's own ceiling for a fresh sandbox per connection (#24):
 * WORKERS processes each clone children, one at a time, into new user,
 * mount, pid, ipc and uts namespaces (and a network namespace with
 * "net"), each child mounting a fresh tmpfs on /tmp and then either
 * exec'ing a static no-op ("exec") or exiting at once ("exit"); the
 * parent waits for each. Prints children per second over all workers.
 * A network namespace outlives its last process: the kernel tears it
 * down later, on a workqueue. With "net" the time counted runs until the
 * kernel's count of them (/proc/slabinfo's net_namespace) is back where
 * it was, so the rate includes the teardown.
 *
 *   forkref exec|exit [net] SECONDS WORKERS NOOP
 *
 * NOOP must lie outside /tmp, which each child covers with its tmpfs.
 * Run as root (or where unprivileged user namespaces are allowed). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *noop;
static int do_exec;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Network namespaces alive (net_namespace objects), or -1. */
static long netns_alive(void)
{
    FILE *f = fopen("/proc/slabinfo", "r");
    if (!f)
        return -1;
    char line[512];
    long n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "net_namespace %ld", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Waits (up to a minute) until no more network namespaces are alive
 * than `before`, give or take what SLUB counts as in use while it sits
 * in per-CPU slabs (a few slabs of 7). */
static int netns_drained(long before)
{
    double give_up = now() + 60;
    while (netns_alive() > before + 64) {
        if (now() > give_up)
            return 0;
        usleep(10000);
    }
    return 1;
}

/* The child: pid 1 of its own pid namespace. */
static int child(void *arg)
{
    (void)arg;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        _exit(10);
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0)
        _exit(11);
    if (do_exec) {
        char *argv[] = {(char *)noop, NULL};
        char *envp[] = {NULL};
        execve(noop, argv, envp);
        _exit(12);
    }
    _exit(0);
}

/* One worker: children one after another until `until`; their count, or
 * -1 on the first failure (said on stderr). */
static long worker(int flags, double until)
{
    static char stack[64 * 1024] __attribute__((aligned(16)));
    long n = 0;
    while (now() < until) {
        pid_t pid = clone(child, stack + sizeof stack, flags | SIGCHLD, NULL);
        if (pid < 0) {
            fprintf(stderr, "clone: %s\n", strerror(errno));
            return -1;
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child failed: status %#x\n", status);
            return -1;
        }
        n++;
    }
    return n;
}

int main(int argc, char **argv)
{
    int net = argc == 6 && strcmp(argv[2], "net") == 0;
    if (argc != 5 + net || (strcmp(argv[1], "exec") && strcmp(argv[1], "exit"))) {
        fprintf(stderr, "usage: %s exec|exit [net] SECONDS WORKERS NOOP\n", argv[0]);
        return 2;
    }
    do_exec = strcmp(argv[1], "exec") == 0;
    double seconds = atof(argv[2 + net]);
    int workers = atoi(argv[3 + net]);
    noop = argv[4 + net];
    if (strncmp(noop, "/tmp/", 5) == 0) {
        fprintf(stderr, "%s: NOOP must lie outside /tmp\n", argv[0]);
        return 2;
    }
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    if (net)
        flags |= CLONE_NEWNET;

    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    long netns_before = net ? netns_alive() : -1;
    if (net && netns_before < 0) {
        fprintf(stderr, "%s: no net_namespace in /proc/slabinfo\n", argv[0]);
        return 1;
    }
    double start = now(), until = start + seconds;
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            long n = worker(flags, until);
            if (write(fds[1], &n, sizeof n) != sizeof n)
                _exit(1);
            _exit(0);
        }
    }
    long total = 0;
    int failed = 0;
    for (int w = 0; w < workers; w++) {
        long n;
        if (read(fds[0], &n, sizeof n) != sizeof n || n < 0)
            failed = 1;
        else
            total += n;
    }
    while (wait(NULL) > 0)
        ;
    double ended = now();
    if (net && !netns_drained(netns_before)) {
        fprintf(stderr, "%s: network namespaces still alive a minute later\n", argv[0]);
        return 1;
    }
    double elapsed = now() - start;
    if (net)
        fprintf(stderr, "network namespaces gone %.3f s after the last child\n", now() - ended);
    if (failed)
        return 1;
    printf("%.0f\n", total / elapsed);
    return 0;
}
