//! The seccomp allowlist compiled by faasd itself into the classic BPF
//! program the kernel runs (x86_64), once per process. crun takes it as
//! `run.oci.seccomp_bpf_data` and then skips compiling the spec's
//! `linux.seccomp` section with libseccomp at every container start
//! (measured: the section costs ~3 ms per `crun run`). runc has no such
//! option and compiles the section itself.
//!
//! The program does what `seccomp::profile` says to libseccomp: native
//! calls only (other architectures and x32 numbers: EPERM), the allowed
//! calls, `clone` without namespace flags, `clone3` ENOSYS, anything else
//! EPERM. Allowed calls are tested one after the other; the kernel's
//! action cache answers most of them without running the filter at all,
//! as none of them depends on an argument.

use std::sync::OnceLock;

use base64::Engine;

use super::seccomp::{ALLOWED, CLONE_NAMESPACE_FLAGS, ENOSYS, EPERM};

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Numbers from here on are the x32 ABI's.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program for crun's `run.oci.seccomp_bpf_data`: base64 of the raw
/// `sock_filter` array, built on first use.
pub fn crun_annotation() -> &'static str {
    static ENCODED: OnceLock<String> = OnceLock::new();
    ENCODED.get_or_init(|| base64::engine::general_purpose::STANDARD.encode(bytes(&program())))
}

fn program() -> Vec<Insn> {
    let errno = |e: u32| stmt(RET_K, RET_ERRNO | e);
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        errno(EPERM),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        errno(EPERM),
    ];
    let mut numbers: Vec<u32> = ALLOWED.iter().filter_map(|name| number(name)).collect();
    numbers.sort_unstable();
    numbers.dedup();
    for nr in numbers {
        p.push(jump(JEQ_K, nr, 0, 1));
        p.push(stmt(RET_K, RET_ALLOW));
    }
    if let Some(clone) = number("clone") {
        p.push(jump(JEQ_K, clone, 0, 5));
        p.push(stmt(LD_W_ABS, ARG0_LOW));
        // The namespace flags all sit in the low 32 bits.
        p.push(stmt(AND_K, CLONE_NAMESPACE_FLAGS as u32));
        p.push(jump(JEQ_K, 0, 0, 1));
        p.push(stmt(RET_K, RET_ALLOW));
        p.push(errno(EPERM));
    }
    if let Some(clone3) = number("clone3") {
        p.push(jump(JEQ_K, clone3, 0, 1));
        p.push(errno(ENOSYS));
    }
    p.push(errno(EPERM));
    p
}

fn bytes(program: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// The x86_64 number of a system call named in the allowlist.
fn number(name: &str) -> Option<u32> {
    let nr = match name {
        "accept" => libc::SYS_accept,
        "accept4" => libc::SYS_accept4,
        "access" => libc::SYS_access,
        "alarm" => libc::SYS_alarm,
        "arch_prctl" => libc::SYS_arch_prctl,
        "bind" => libc::SYS_bind,
        "brk" => libc::SYS_brk,
        "cachestat" => 451, // not in the libc crate's table
        "capget" => libc::SYS_capget,
        "capset" => libc::SYS_capset,
        "chdir" => libc::SYS_chdir,
        "chroot" => libc::SYS_chroot,
        "chmod" => libc::SYS_chmod,
        "chown" => libc::SYS_chown,
        "clock_getres" => libc::SYS_clock_getres,
        "clock_gettime" => libc::SYS_clock_gettime,
        "clock_nanosleep" => libc::SYS_clock_nanosleep,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "close" => libc::SYS_close,
        "close_range" => libc::SYS_close_range,
        "connect" => libc::SYS_connect,
        "copy_file_range" => libc::SYS_copy_file_range,
        "creat" => libc::SYS_creat,
        "dup" => libc::SYS_dup,
        "dup2" => libc::SYS_dup2,
        "dup3" => libc::SYS_dup3,
        "epoll_create" => libc::SYS_epoll_create,
        "epoll_create1" => libc::SYS_epoll_create1,
        "epoll_ctl" => libc::SYS_epoll_ctl,
        "epoll_pwait" => libc::SYS_epoll_pwait,
        "epoll_pwait2" => libc::SYS_epoll_pwait2,
        "epoll_wait" => libc::SYS_epoll_wait,
        "eventfd" => libc::SYS_eventfd,
        "eventfd2" => libc::SYS_eventfd2,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "exit" => libc::SYS_exit,
        "exit_group" => libc::SYS_exit_group,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "fadvise64" => libc::SYS_fadvise64,
        "fallocate" => libc::SYS_fallocate,
        "fchdir" => libc::SYS_fchdir,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchmodat2" => libc::SYS_fchmodat2,
        "fchown" => libc::SYS_fchown,
        "fchownat" => libc::SYS_fchownat,
        "fcntl" => libc::SYS_fcntl,
        "fdatasync" => libc::SYS_fdatasync,
        "fgetxattr" => libc::SYS_fgetxattr,
        "flistxattr" => libc::SYS_flistxattr,
        "flock" => libc::SYS_flock,
        "fork" => libc::SYS_fork,
        "fremovexattr" => libc::SYS_fremovexattr,
        "fsetxattr" => libc::SYS_fsetxattr,
        "fstat" => libc::SYS_fstat,
        "fstatfs" => libc::SYS_fstatfs,
        "fsync" => libc::SYS_fsync,
        "ftruncate" => libc::SYS_ftruncate,
        "futex" => libc::SYS_futex,
        "futex_requeue" => 456, // not in the libc crate's table
        "futex_wait" => 455,    // not in the libc crate's table
        "futex_waitv" => libc::SYS_futex_waitv,
        "futex_wake" => 454, // not in the libc crate's table
        "futimesat" => libc::SYS_futimesat,
        "get_robust_list" => libc::SYS_get_robust_list,
        "get_thread_area" => libc::SYS_get_thread_area,
        "getcpu" => libc::SYS_getcpu,
        "getcwd" => libc::SYS_getcwd,
        "getdents" => libc::SYS_getdents,
        "getdents64" => libc::SYS_getdents64,
        "getegid" => libc::SYS_getegid,
        "geteuid" => libc::SYS_geteuid,
        "getgid" => libc::SYS_getgid,
        "getgroups" => libc::SYS_getgroups,
        "getitimer" => libc::SYS_getitimer,
        "getpeername" => libc::SYS_getpeername,
        "getpgid" => libc::SYS_getpgid,
        "getpgrp" => libc::SYS_getpgrp,
        "getpid" => libc::SYS_getpid,
        "getppid" => libc::SYS_getppid,
        "getpriority" => libc::SYS_getpriority,
        "getrandom" => libc::SYS_getrandom,
        "getresgid" => libc::SYS_getresgid,
        "getresuid" => libc::SYS_getresuid,
        "getrlimit" => libc::SYS_getrlimit,
        "getrusage" => libc::SYS_getrusage,
        "getsid" => libc::SYS_getsid,
        "getsockname" => libc::SYS_getsockname,
        "getsockopt" => libc::SYS_getsockopt,
        "gettid" => libc::SYS_gettid,
        "gettimeofday" => libc::SYS_gettimeofday,
        "getuid" => libc::SYS_getuid,
        "getxattr" => libc::SYS_getxattr,
        "inotify_add_watch" => libc::SYS_inotify_add_watch,
        "inotify_init" => libc::SYS_inotify_init,
        "inotify_init1" => libc::SYS_inotify_init1,
        "inotify_rm_watch" => libc::SYS_inotify_rm_watch,
        "io_cancel" => libc::SYS_io_cancel,
        "io_destroy" => libc::SYS_io_destroy,
        "io_getevents" => libc::SYS_io_getevents,
        "io_pgetevents" => 333, // not in the libc crate's table
        "io_setup" => libc::SYS_io_setup,
        "io_submit" => libc::SYS_io_submit,
        "ioctl" => libc::SYS_ioctl,
        "ioprio_get" => libc::SYS_ioprio_get,
        "ioprio_set" => libc::SYS_ioprio_set,
        "kill" => libc::SYS_kill,
        "lchown" => libc::SYS_lchown,
        "lgetxattr" => libc::SYS_lgetxattr,
        "link" => libc::SYS_link,
        "linkat" => libc::SYS_linkat,
        "listen" => libc::SYS_listen,
        "listxattr" => libc::SYS_listxattr,
        "llistxattr" => libc::SYS_llistxattr,
        "lremovexattr" => libc::SYS_lremovexattr,
        "lseek" => libc::SYS_lseek,
        "lsetxattr" => libc::SYS_lsetxattr,
        "lstat" => libc::SYS_lstat,
        "madvise" => libc::SYS_madvise,
        "map_shadow_stack" => 453, // not in the libc crate's table
        "membarrier" => libc::SYS_membarrier,
        "memfd_create" => libc::SYS_memfd_create,
        "mincore" => libc::SYS_mincore,
        "mkdir" => libc::SYS_mkdir,
        "mkdirat" => libc::SYS_mkdirat,
        "mknod" => libc::SYS_mknod,
        "mknodat" => libc::SYS_mknodat,
        "mlock" => libc::SYS_mlock,
        "mlock2" => libc::SYS_mlock2,
        "mlockall" => libc::SYS_mlockall,
        "mmap" => libc::SYS_mmap,
        "mprotect" => libc::SYS_mprotect,
        "mq_getsetattr" => libc::SYS_mq_getsetattr,
        "mq_notify" => libc::SYS_mq_notify,
        "mq_open" => libc::SYS_mq_open,
        "mq_timedreceive" => libc::SYS_mq_timedreceive,
        "mq_timedsend" => libc::SYS_mq_timedsend,
        "mq_unlink" => libc::SYS_mq_unlink,
        "mremap" => libc::SYS_mremap,
        "mseal" => libc::SYS_mseal,
        "msgctl" => libc::SYS_msgctl,
        "msgget" => libc::SYS_msgget,
        "msgrcv" => libc::SYS_msgrcv,
        "msgsnd" => libc::SYS_msgsnd,
        "msync" => libc::SYS_msync,
        "munlock" => libc::SYS_munlock,
        "munlockall" => libc::SYS_munlockall,
        "munmap" => libc::SYS_munmap,
        "nanosleep" => libc::SYS_nanosleep,
        "newfstatat" => libc::SYS_newfstatat,
        "open" => libc::SYS_open,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "pipe" => libc::SYS_pipe,
        "pipe2" => libc::SYS_pipe2,
        "pause" => libc::SYS_pause,
        "pidfd_open" => libc::SYS_pidfd_open,
        "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
        "pkey_alloc" => libc::SYS_pkey_alloc,
        "pkey_free" => libc::SYS_pkey_free,
        "pkey_mprotect" => libc::SYS_pkey_mprotect,
        "poll" => libc::SYS_poll,
        "ppoll" => libc::SYS_ppoll,
        "prctl" => libc::SYS_prctl,
        "pread64" => libc::SYS_pread64,
        "preadv" => libc::SYS_preadv,
        "preadv2" => libc::SYS_preadv2,
        "prlimit64" => libc::SYS_prlimit64,
        "pselect6" => libc::SYS_pselect6,
        "pwrite64" => libc::SYS_pwrite64,
        "pwritev" => libc::SYS_pwritev,
        "pwritev2" => libc::SYS_pwritev2,
        "read" => libc::SYS_read,
        "readahead" => libc::SYS_readahead,
        "readlink" => libc::SYS_readlink,
        "readlinkat" => libc::SYS_readlinkat,
        "readv" => libc::SYS_readv,
        "recvfrom" => libc::SYS_recvfrom,
        "recvmmsg" => libc::SYS_recvmmsg,
        "recvmsg" => libc::SYS_recvmsg,
        "removexattr" => libc::SYS_removexattr,
        "rename" => libc::SYS_rename,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "restart_syscall" => libc::SYS_restart_syscall,
        "rmdir" => libc::SYS_rmdir,
        "rseq" => libc::SYS_rseq,
        "rt_sigaction" => libc::SYS_rt_sigaction,
        "rt_sigpending" => libc::SYS_rt_sigpending,
        "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
        "rt_sigqueueinfo" => libc::SYS_rt_sigqueueinfo,
        "rt_sigreturn" => libc::SYS_rt_sigreturn,
        "rt_sigsuspend" => libc::SYS_rt_sigsuspend,
        "rt_sigtimedwait" => libc::SYS_rt_sigtimedwait,
        "rt_tgsigqueueinfo" => libc::SYS_rt_tgsigqueueinfo,
        "sched_get_priority_max" => libc::SYS_sched_get_priority_max,
        "sched_get_priority_min" => libc::SYS_sched_get_priority_min,
        "sched_getaffinity" => libc::SYS_sched_getaffinity,
        "sched_getattr" => libc::SYS_sched_getattr,
        "sched_getparam" => libc::SYS_sched_getparam,
        "sched_getscheduler" => libc::SYS_sched_getscheduler,
        "sched_rr_get_interval" => libc::SYS_sched_rr_get_interval,
        "sched_setaffinity" => libc::SYS_sched_setaffinity,
        "sched_setattr" => libc::SYS_sched_setattr,
        "sched_setparam" => libc::SYS_sched_setparam,
        "sched_setscheduler" => libc::SYS_sched_setscheduler,
        "sched_yield" => libc::SYS_sched_yield,
        "seccomp" => libc::SYS_seccomp,
        "select" => libc::SYS_select,
        "semctl" => libc::SYS_semctl,
        "semget" => libc::SYS_semget,
        "semop" => libc::SYS_semop,
        "semtimedop" => libc::SYS_semtimedop,
        "sendfile" => libc::SYS_sendfile,
        "sendmmsg" => libc::SYS_sendmmsg,
        "sendmsg" => libc::SYS_sendmsg,
        "sendto" => libc::SYS_sendto,
        "set_robust_list" => libc::SYS_set_robust_list,
        "set_thread_area" => libc::SYS_set_thread_area,
        "set_tid_address" => libc::SYS_set_tid_address,
        "setfsgid" => libc::SYS_setfsgid,
        "setfsuid" => libc::SYS_setfsuid,
        "setgid" => libc::SYS_setgid,
        "setgroups" => libc::SYS_setgroups,
        "setitimer" => libc::SYS_setitimer,
        "setpgid" => libc::SYS_setpgid,
        "setpriority" => libc::SYS_setpriority,
        "setregid" => libc::SYS_setregid,
        "setresgid" => libc::SYS_setresgid,
        "setresuid" => libc::SYS_setresuid,
        "setreuid" => libc::SYS_setreuid,
        "setrlimit" => libc::SYS_setrlimit,
        "setsid" => libc::SYS_setsid,
        "setsockopt" => libc::SYS_setsockopt,
        "setuid" => libc::SYS_setuid,
        "setxattr" => libc::SYS_setxattr,
        "shmat" => libc::SYS_shmat,
        "shmctl" => libc::SYS_shmctl,
        "shmdt" => libc::SYS_shmdt,
        "shmget" => libc::SYS_shmget,
        "shutdown" => libc::SYS_shutdown,
        "sigaltstack" => libc::SYS_sigaltstack,
        "signalfd" => libc::SYS_signalfd,
        "signalfd4" => libc::SYS_signalfd4,
        "socket" => libc::SYS_socket,
        "socketpair" => libc::SYS_socketpair,
        "splice" => libc::SYS_splice,
        "stat" => libc::SYS_stat,
        "statfs" => libc::SYS_statfs,
        "statx" => libc::SYS_statx,
        "symlink" => libc::SYS_symlink,
        "symlinkat" => libc::SYS_symlinkat,
        "sync" => libc::SYS_sync,
        "sync_file_range" => libc::SYS_sync_file_range,
        "syncfs" => libc::SYS_syncfs,
        "sysinfo" => libc::SYS_sysinfo,
        "tee" => libc::SYS_tee,
        "tgkill" => libc::SYS_tgkill,
        "time" => libc::SYS_time,
        "timer_create" => libc::SYS_timer_create,
        "timer_delete" => libc::SYS_timer_delete,
        "timer_getoverrun" => libc::SYS_timer_getoverrun,
        "timer_gettime" => libc::SYS_timer_gettime,
        "timer_settime" => libc::SYS_timer_settime,
        "timerfd_create" => libc::SYS_timerfd_create,
        "timerfd_gettime" => libc::SYS_timerfd_gettime,
        "timerfd_settime" => libc::SYS_timerfd_settime,
        "times" => libc::SYS_times,
        "tkill" => libc::SYS_tkill,
        "truncate" => libc::SYS_truncate,
        "umask" => libc::SYS_umask,
        "uname" => libc::SYS_uname,
        "unlink" => libc::SYS_unlink,
        "unlinkat" => libc::SYS_unlinkat,
        "utime" => libc::SYS_utime,
        "utimensat" => libc::SYS_utimensat,
        "utimes" => libc::SYS_utimes,
        "vfork" => libc::SYS_vfork,
        "vmsplice" => libc::SYS_vmsplice,
        "wait4" => libc::SYS_wait4,
        "waitid" => libc::SYS_waitid,
        "write" => libc::SYS_write,
        "writev" => libc::SYS_writev,
        _ => return None,
    };
    u32::try_from(nr).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_call_has_a_number() {
        for name in ALLOWED {
            assert!(number(name).is_some(), "{name} has no x86_64 number");
        }
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("clone"), Some(56));
        assert_eq!(number("mount"), None, "mount is not allowed");
    }

    #[test]
    fn the_program_checks_arch_then_allows_then_denies() {
        let p = program();
        assert!(p.len() < 4096, "the kernel takes at most 4096 instructions");
        assert_eq!(p[0], stmt(LD_W_ABS, ARCH));
        assert_eq!(p[1].k, AUDIT_ARCH_X86_64);
        assert_eq!(p.last(), Some(&stmt(RET_K, RET_ERRNO | EPERM)));
        // read (0) is allowed: a compare followed by ALLOW.
        let read = p
            .iter()
            .position(|i| i.code == JEQ_K && i.k == 0 && i.jf == 1);
        assert!(read.is_some_and(|at| p[at + 1] == stmt(RET_K, RET_ALLOW)));
        // mount (165) is never compared.
        assert!(!p.iter().any(|i| i.code == JEQ_K && i.k == 165));
        // Every jump lands inside the program.
        for (at, i) in p.iter().enumerate() {
            if i.code == JEQ_K || i.code == JGE_K {
                assert!(at + 1 + usize::from(i.jt.max(i.jf)) < p.len());
            }
        }
        assert_eq!(bytes(&p).len(), p.len() * 8);
        assert!(!crun_annotation().is_empty());
    }
}
