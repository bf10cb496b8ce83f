//! The default seccomp profile of every function container: an allowlist
//! in the spirit of Docker's default profile. What a handler needs to
//! serve — files, sockets, memory, threads, processes, timers, signals —
//! is allowed; whatever else fails with EPERM: kernel keyrings, module
//! loading, mounting, namespaces (`unshare`, `setns`, namespace flags to
//! `clone`), ptrace and cross-process memory access, BPF, perf, io_uring,
//! userfaultfd, clock and system settings, reboot, swap, kexec, quotas.
//!
//! Syscall names runc's libseccomp does not know are skipped by runc, so
//! newer names in the list do no harm on an older host. The filter covers
//! native x86_64 calls only; 32-bit entry points are refused outright.

use serde_json::{json, Value};

/// Namespace flags `clone` may not be given (CLONE_NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET; Docker's mask).
pub(super) const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
pub(super) const EPERM: u32 = 1;
pub(super) const ENOSYS: u32 = 38;

pub(super) const ALLOWED: &[&str] = &[
    // Files and directories.
    "access",
    "chdir",
    "chmod",
    "chown",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "setxattr",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "futimesat",
    "vmsplice",
    "write",
    "writev",
    // Polling and events.
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "poll",
    "ppoll",
    "pselect6",
    "select",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    // Sockets (the container has no network but the connection it is given).
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketpair",
    // Memory.
    "brk",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "map_shadow_stack",
    "mseal",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    // Processes and threads (clone is allowed below, without namespace flags).
    "arch_prctl",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "get_robust_list",
    "set_robust_list",
    "get_thread_area",
    "set_thread_area",
    "set_tid_address",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    // Only ever narrows what the caller may do (under no_new_privs);
    // faas-init's `bind` mode needs a filter with a listener of its own.
    "seccomp",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "tgkill",
    "tkill",
    "wait4",
    "waitid",
    "restart_syscall",
    // Identity (without capabilities these cannot gain anything).
    "capget",
    "capset",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getresgid",
    "getresuid",
    "getuid",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setuid",
    // With CAP_SYS_CHROOT (Docker's default set), inside the container.
    "chroot",
    // Signals, futexes, time.
    "alarm",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "times",
    // IPC within the container's own namespace.
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Miscellaneous harmless queries.
    "getrandom",
    "ioctl",
    "sysinfo",
    "uname",
    "cachestat",
];

/// Which profile a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Every function's: no mounts, no namespaces.
    Default,
    /// A `--fork` zygote's: it makes each child's namespaces and mounts
    /// (`ZYGOTE_ALLOWED`, and `clone` with any flags); each child forbids
    /// them again with a filter of its own before the image's program runs.
    Zygote,
}

impl Profile {
    pub fn of(options: &crate::api::DeployOptions) -> Self {
        match options.fork {
            true => Profile::Zygote,
            false => Profile::Default,
        }
    }
}

/// What a zygote may call beyond `ALLOWED`.
pub(super) const ZYGOTE_ALLOWED: &[&str] = &["mount", "umount2", "pivot_root", "unshare", "setns"];

/// The `linux.seccomp` section of a container's spec.
pub fn profile(which: Profile) -> Value {
    let clone = match which {
        Profile::Default => json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }),
        Profile::Zygote => json!({
            "names": ([&["clone"], ZYGOTE_ALLOWED].concat()),
            "action": "SCMP_ACT_ALLOW",
        }),
    };
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        // Native calls only: 32-bit (ia32, x32) entry points match no rule.
        // Each architecture listed costs runc a filter compiled per start
        // (measured: all three +19 ms per `runc run`, x86_64 alone +3.5 ms).
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            { "names": ALLOWED, "action": "SCMP_ACT_ALLOW" },
            clone,
            // clone3's flags sit in memory seccomp cannot read: ENOSYS makes
            // libc fall back to clone, which is checked above.
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_by_default_and_allows_what_serving_needs() {
        let p = profile(Profile::Default);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = p["syscalls"][0]["names"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for needed in [
            "recvmsg",
            "accept4",
            "write",
            "mmap",
            "futex",
            "execve",
            "exit_group",
        ] {
            assert!(allowed.contains(&needed), "{needed} must be allowed");
        }
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "init_module",
            "finit_module",
            "ptrace",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "reboot",
            "kexec_load",
            "userfaultfd",
            "process_vm_readv",
            "clock_settime",
        ] {
            assert!(!allowed.contains(&denied), "{denied} must be denied");
        }
        let zygote = profile(Profile::Zygote);
        assert_eq!(zygote["syscalls"][1]["names"][1], "mount");
        assert!(
            zygote["syscalls"][1]["args"].is_null(),
            "a zygote clones with any flags"
        );
        assert_eq!(p["syscalls"][1]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let mut sorted = allowed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), allowed.len(), "no name twice");
    }
}
