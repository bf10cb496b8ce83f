//! Seccomp user notification (`seccomp_unotify(2)`), the one place
//! faas-init calls the kernel without a safe wrapper: a filter that turns
//! chosen syscalls of this process (or of a program it starts) and
//! everything started from there into notifications, and the listener
//! that answers them — let the call go on, fail or succeed it, put a
//! descriptor of ours into the caller's table first, or end the call with
//! one as its result. nix has no wrapper
//! for any of it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::libc;

/// `AUDIT_ARCH_X86_64`: the only architecture whose calls are looked at;
/// the container's own filter refuses any other outright.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Offsets in `struct seccomp_data`.
pub const NR: u32 = 0;
pub const ARCH: u32 = 4;
pub const ARGS: u32 = 16;
pub const BPF_LD_W_ABS: u16 = 0x20;
pub const BPF_JEQ_K: u16 = 0x15;
pub const BPF_JGE_K: u16 = 0x35;
pub const BPF_JSET_K: u16 = 0x45;
pub const BPF_RET_K: u16 = 0x06;

/// A syscall the filter stops: every call of it, or only the calls whose
/// descriptor arguments (by position) include 0 or 1, stdin or stdout.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    nr: libc::c_long,
    fd_args: &'static [u32],
}

impl Stop {
    pub const fn every(nr: libc::c_long) -> Self {
        Self { nr, fd_args: &[] }
    }

    pub const fn on_stdio(nr: libc::c_long, fd_args: &'static [u32]) -> Self {
        Self { nr, fd_args }
    }
}

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
/// Whether an answer failed because its call no longer waits (the caller
/// was interrupted, and makes the call again, or has ended): moot, not a
/// failure.
pub fn gone(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

pub struct Listener(OwnedFd);

impl Listener {
    /// Installs on the calling process a filter that hands the calls of
    /// `stops` to the returned listener, and allows all else (the
    /// container's own filter still applies). Inherited by every process
    /// started afterwards; the calling process must not make those calls
    /// itself (nobody would answer), and must have no other thread yet.
    pub fn install(stops: &[Stop]) -> io::Result<Self> {
        let fd = install_filter(&mut program(stops))?;
        // SAFETY: the kernel just returned this descriptor, ours alone.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Starts `command` with the filter of `stops` installed in it just
    /// before it becomes its program, so this process stays free to make
    /// those calls. Call it while this process has a single thread.
    pub fn spawn(command: &mut Command, stops: &[Stop]) -> io::Result<(Child, Self)> {
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut program = program(stops);
        // SAFETY: the closure runs in the forked child of a process with
        // one thread (so no lock, the allocator's included, can be held by
        // a thread that is gone), before exec; it owns what it touches.
        unsafe {
            command.pre_exec(move || {
                crate::caps::drop_for_program()?;
                let fd = install_filter(&mut program)?;
                // Both are open here: ours, and the pair's end this child
                // inherited.
                let sent = faas_protocol::send_fds(
                    BorrowedFd::borrow_raw(theirs_fd),
                    &[BorrowedFd::borrow_raw(fd)],
                );
                libc::close(fd);
                sent
            })
        };
        let child = command.spawn()?;
        drop(theirs);
        let mut byte = [0u8];
        let got = faas_protocol::recv_fds(ours.as_fd(), &mut byte, faas_protocol::Wait::Yes)?;
        // The program could not be started under the filter: the spawn
        // itself reports why; this is only what is left.
        let fd = got
            .fds
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::other("the filter's listener did not arrive"))?;
        Ok((child, Self(fd)))
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

    /// `proceed`, for a call the answer loop leaves alone: one gone
    /// meanwhile needs nothing, any other failure is said on stderr as
    /// `whose` call's.
    pub fn let_go(&self, call: &Call, whose: &str) {
        match self.proceed(call.id) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => eprintln!("faas-init: letting {whose} call go on: {e}"),
        }
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

    /// Puts `fd` into the caller's table at its lowest free number and
    /// ends the call with that number as its result, in one step (as an
    /// `accept` would return a new socket).
    pub fn give(&self, id: u64, fd: BorrowedFd<'_>, cloexec: bool) -> io::Result<i32> {
        let mut add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        let n = self.ioctl(
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &mut add as *mut _ as *mut _,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }

    /// Whether a call waits to be received, without waiting for one.
    pub fn is_pending(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
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

/// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)`: the listener's
/// descriptor.
fn install_filter(program: &mut [libc::sock_filter]) -> io::Result<RawFd> {
    install(program, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` of a filter that answers every call
/// itself (a `--fork` child's seal).
pub fn install_plain(program: &mut [libc::sock_filter]) -> io::Result<()> {
    install(program, 0).map(drop)
}

fn install(program: &mut [libc::sock_filter], flags: libc::c_ulong) -> io::Result<RawFd> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel
    // copies it. No new privileges is set by the runtime (and needed only
    // to install, which fails cleanly without it).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    RawFd::try_from(fd).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// The classic BPF program: calls of another architecture and of any
/// syscall not stopped are allowed; those stopped are notified. One block
/// per stop, each ending in its own "allow" and "notify", so every jump
/// is short.
fn program(stops: &[Stop]) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let allow = op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW);
    let notify = op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF);
    let mut p = vec![
        op(BPF_LD_W_ABS, 0, 0, ARCH),
        // x86_64: over the "allow".
        op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        allow,
        op(BPF_LD_W_ABS, 0, 0, NR),
    ];
    for stop in stops {
        let k = stop.fd_args.len();
        let body = if k == 0 { 1 } else { 2 * k + 2 };
        // Another syscall: over this block, the number still loaded.
        p.push(op(BPF_JEQ_K, 0, body as u8, stop.nr as u32));
        for (m, &arg) in stop.fd_args.iter().enumerate() {
            // The low half (little endian): a descriptor is an int.
            p.push(op(BPF_LD_W_ABS, 0, 0, ARGS + 8 * arg));
            // 0 or 1: to this block's "notify"; else on.
            p.push(op(BPF_JGE_K, 0, (2 * (k - m) - 1) as u8, 2));
        }
        if k > 0 {
            p.push(allow);
        }
        p.push(notify);
    }
    p.push(allow);
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs `p` on one call the way the kernel would (the opcodes faas-init's
    /// programs emit: this module's and `seal`'s).
    pub(crate) fn run(p: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = p[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS => {
                    let at = ins.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                }
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match ins.code {
                        BPF_JEQ_K => acc == ins.k,
                        BPF_JGE_K => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return ins.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_notifies_only_the_calls_named() {
        let p = program(&[Stop::every(libc::SYS_bind), Stop::every(libc::SYS_listen)]);
        let x86 = AUDIT_ARCH_X86_64;
        for nr in [libc::SYS_bind, libc::SYS_listen] {
            assert_eq!(run(&p, x86, nr, [3; 6]), libc::SECCOMP_RET_USER_NOTIF);
            assert_eq!(run(&p, 0x4000_0003, nr, [3; 6]), libc::SECCOMP_RET_ALLOW);
        }
        for nr in [libc::SYS_connect, libc::SYS_read, 0] {
            assert_eq!(run(&p, x86, nr, [3; 6]), libc::SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn descriptor_stops_notify_only_stdin_and_stdout() {
        let p = program(&[
            Stop::on_stdio(libc::SYS_read, &[0]),
            Stop::on_stdio(libc::SYS_dup2, &[0, 1]),
            Stop::every(libc::SYS_clone),
            Stop::on_stdio(libc::SYS_epoll_ctl, &[2]),
        ]);
        let x86 = AUDIT_ARCH_X86_64;
        let notified = |nr, args| run(&p, x86, nr, args) == libc::SECCOMP_RET_USER_NOTIF;
        assert!(notified(libc::SYS_read, [0, 9, 9, 9, 9, 9]));
        assert!(notified(libc::SYS_read, [1, 9, 9, 9, 9, 9]));
        assert!(!notified(libc::SYS_read, [2, 0, 0, 0, 0, 0]));
        assert!(!notified(libc::SYS_read, [7, 1, 1, 1, 1, 1]));
        assert!(notified(libc::SYS_dup2, [5, 1, 9, 9, 9, 9]));
        assert!(notified(libc::SYS_dup2, [0, 5, 9, 9, 9, 9]));
        assert!(!notified(libc::SYS_dup2, [5, 6, 0, 0, 0, 0]));
        assert!(notified(libc::SYS_clone, [5; 6]));
        assert!(notified(libc::SYS_epoll_ctl, [4, 1, 0, 9, 9, 9]));
        assert!(!notified(libc::SYS_epoll_ctl, [0, 1, 5, 0, 0, 0]));
        assert!(!notified(libc::SYS_write, [1; 6]));
        assert_eq!(
            run(&p, 0x4000_0003, libc::SYS_read, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
    }
}
