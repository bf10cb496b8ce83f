//! Seccomp user notification (`seccomp_unotify(2)`), the one place
//! faas-init calls the kernel without a safe wrapper: a filter that turns
//! chosen syscalls of this process and everything it starts into
//! notifications, and the listener that answers them — let the call go
//! on, fail or succeed it, or put a descriptor of ours into the caller's
//! table first. nix has no wrapper for any of it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;

/// `AUDIT_ARCH_X86_64`: the only architecture whose calls are looked at;
/// the container's own filter refuses any other outright.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// One call held by the kernel until it is answered.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub id: u64,
    /// The caller, in our own pid namespace.
    pub pid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// The listener of a filter installed on this process.
pub struct Listener(OwnedFd);

impl Listener {
    /// Installs on the calling process a filter that hands every call of
    /// `syscalls` to the returned listener, and allows all else (the
    /// container's own filter still applies). Inherited by every process
    /// started afterwards; the calling process must not make those calls
    /// itself (nobody would answer), and must have no other thread yet.
    pub fn install(syscalls: &[libc::c_long]) -> io::Result<Self> {
        let mut program = program(syscalls);
        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `program`, alive for the call; the
        // kernel copies it. No new privileges is set by the runtime (and
        // needed only to install, which fails cleanly without it).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog as *const libc::sock_fprog,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::ErrorKind::InvalidData)?;
        // SAFETY: the kernel just returned this descriptor, ours alone.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Waits for the next call (EINTR retried).
    pub fn recv(&self) -> io::Result<Call> {
        loop {
            // SAFETY: an all-zero `seccomp_notif` is valid (and the kernel
            // insists on it).
            let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            if self.ioctl(libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut _ as *mut _) == 0 {
                return Ok(Call {
                    id: n.id,
                    pid: n.pid,
                    nr: i64::from(n.data.nr),
                    args: n.data.args,
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Whether `id` still waits for an answer (its caller is alive and in
    /// that call): what was read from the caller's memory is its own.
    pub fn valid(&self, id: u64) -> bool {
        let mut id = id;
        self.ioctl(
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut _ as *mut _,
        ) == 0
    }

    /// Lets the call run as if nothing had stopped it.
    pub fn proceed(&self, id: u64) -> io::Result<()> {
        self.respond(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// Ends the call without running it: `Ok(value)` or `Err(errno)`.
    pub fn answer(&self, id: u64, result: Result<i64, i32>) -> io::Result<()> {
        match result {
            Ok(value) => self.respond(id, value, 0, 0),
            Err(errno) => self.respond(id, 0, -errno, 0),
        }
    }

    /// Puts `fd` into the caller's table as descriptor `target`, replacing
    /// whatever it was (as `dup2` would), close-on-exec if `cloexec`.
    pub fn place(&self, id: u64, fd: BorrowedFd<'_>, target: u64, cloexec: bool) -> io::Result<()> {
        let mut add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?,
            newfd: u32::try_from(target).map_err(|_| io::ErrorKind::InvalidInput)?,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        if self.ioctl(
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &mut add as *mut _ as *mut _,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn respond(&self, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        let mut resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        if self.ioctl(
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut _ as *mut _,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn ioctl(&self, request: libc::Ioctl, arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: each caller passes the struct its request is defined
        // with, alive and exclusively borrowed for the call.
        unsafe { libc::ioctl(self.0.as_raw_fd(), request, arg) }
    }
}

/// The classic BPF program: calls of another architecture and of any
/// syscall not in `syscalls` are allowed; those are notified.
fn program(syscalls: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let n = syscalls.len();
    let mut p = Vec::with_capacity(n + 5);
    p.push(op(BPF_LD_W_ABS, 0, 0, ARCH));
    // Not x86_64: past the number and every comparison, to "allow".
    p.push(op(BPF_JEQ_K, 0, (n + 1) as u8, AUDIT_ARCH_X86_64));
    p.push(op(BPF_LD_W_ABS, 0, 0, NR));
    for (i, &nr) in syscalls.iter().enumerate() {
        // Equal: past the comparisons left and "allow", to "notify".
        p.push(op(BPF_JEQ_K, (n - i) as u8, 0, nr as u32));
    }
    p.push(op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    p.push(op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_notifies_only_the_calls_named() {
        let p = program(&[libc::SYS_bind, libc::SYS_listen]);
        assert_eq!(p.len(), 7);
        // Another architecture lands on "allow".
        assert_eq!(1 + 1 + usize::from(p[1].jf), 5);
        assert_eq!(p[5].k, libc::SECCOMP_RET_ALLOW);
        // Each comparison's match lands on "notify".
        for i in [3, 4] {
            assert_eq!(i + 1 + usize::from(p[i].jt), 6);
        }
        assert_eq!(p[6].k, libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(p[3].k, libc::SYS_bind as u32);
    }
}
