//! Process syscalls neither std nor nix wraps: pidfds, so a container's
//! process is signalled by identity rather than by a pid number that may
//! already belong to someone else (and a descriptor taken back from it),
//! and scheduling policies, so background
//! work (pool refills, cleanup) only runs on CPU time serving leaves idle;
//! and faasd's own mount namespace; and the closer, which closes the
//! descriptors containers had their hands on away from every thread that
//! serves (`closer`); files kept private and replaced whole (`fs`); and
//! the open files limit, raised as far as the operator allows.
#![allow(unsafe_code)]

pub mod closer;
pub mod fs;
pub mod notify;
pub mod rawfd;
pub mod term;
pub mod timer;

pub use term::EchoOff;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// How urgently a process or thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The default (`SCHED_OTHER`, nice 0): serving connections.
    Normal,
    /// Nice 10: a tenth of the CPU against normal work, yet never starved
    /// (unpacking an image while the node is saturated still ends).
    Low,
    /// `SCHED_IDLE`: only when nothing else wants the CPU; preempted at
    /// once when something does.
    Idle,
}

/// A pidfd for process `pid` (close-on-exec).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of descriptor `fd` of the process behind `pidfd` (close-on-exec;
/// needs the right to ptrace it, which root has).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only; the call returns a new descriptor
    // or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = i32::try_from(got).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got) })
}

/// Sends `signal` to the process behind `pidfd` (ESRCH once it is gone).
pub fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    signal: nix::sys::signal::Signal,
) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow; a null siginfo and
    // zero flags are what the call expects for a plain kill.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives thread `tid` (0: the calling thread) the scheduling `priority`.
pub fn set_priority(tid: i32, priority: Priority) -> io::Result<()> {
    let (policy, nice) = match priority {
        Priority::Normal => (libc::SCHED_OTHER, 0),
        Priority::Low => (libc::SCHED_OTHER, 10),
        Priority::Idle => (libc::SCHED_IDLE, 0),
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param the kernel only reads.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let who = if tid == 0 { thread_id() } else { tid };
    // SAFETY: integer arguments only; for PRIO_PROCESS a tid names one
    // thread on Linux.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who as libc::id_t, nice) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_id() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The scheduling priority of thread `tid` (0: the calling thread), if it
/// is one of ours.
pub fn priority_of(tid: i32) -> Option<Priority> {
    // SAFETY: an integer argument only.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    let who = if tid == 0 { thread_id() } else { tid };
    // SAFETY: integer arguments only.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, who as libc::id_t) };
    match (policy, nice) {
        (libc::SCHED_OTHER, 0) => Some(Priority::Normal),
        (libc::SCHED_OTHER, 10) => Some(Priority::Low),
        (libc::SCHED_IDLE, _) => Some(Priority::Idle),
        _ => None,
    }
}

/// Gives every thread of process `pid` the scheduling `priority` (a
/// process's policy is per thread; a child inherits its creator's).
pub fn set_process_priority(pid: i32, priority: Priority) -> io::Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for task in tasks.flatten() {
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
            match set_priority(tid, priority) {
                // A thread that ended meanwhile needs no priority.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// The machine's memory in bytes (`MemTotal`; 0 if unreadable).
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Moves this process into a mount namespace of its own, which host
/// mounts still propagate into and nothing of ours leaves: the rootfs
/// overlays, the secrets tmpfs and the state view are faasd's alone and
/// end with it, a `kill -9` included. Call before any thread starts (a
/// threaded process cannot unshare its mounts).
pub fn private_mounts() -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Raises this process's soft limit on open descriptors to its hard
/// limit (what the operator or systemd's `LimitNOFILE` allows) and returns
/// it: each function holds its listener and its log file open, so a node
/// of thousands of functions needs far more than the usual 1,024.
pub fn raise_open_files() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_thread_goes_idle_and_back() {
        std::thread::spawn(|| {
            set_priority(0, Priority::Idle).expect("idle");
            assert_eq!(priority_of(0), Some(Priority::Idle));
            set_priority(0, Priority::Low).expect("low");
            assert_eq!(priority_of(0), Some(Priority::Low));
            // Going back to nice 0 takes root (the tests run as root).
            set_priority(0, Priority::Normal).expect("normal");
            assert_eq!(priority_of(0), Some(Priority::Normal));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_pidfd_signals_its_process_only_while_it_lives() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pidfd = pidfd_open(child.id() as i32).expect("pidfd");
        pidfd_send_signal(pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL).expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success());
        // Reaped: the pidfd now refers to nothing, whatever the pid becomes.
        let err =
            pidfd_send_signal(pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL).expect_err("gone");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
