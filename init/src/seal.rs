//! What a `--fork` child closes behind it before the image's program
//! runs: every descriptor of the zygote's but its connection, every
//! capability the function has not got (the new user namespace gave the
//! child all of them), and, in a second seccomp filter, the mounts and
//! namespaces the container's own profile allowed the zygote. Also the
//! one ioctl the child needs before: its loopback up.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;

use crate::unotify::{
    self, ARCH, ARGS, AUDIT_ARCH_X86_64, BPF_JEQ_K, BPF_JSET_K, BPF_LD_W_ABS, BPF_RET_K, NR,
};

/// Namespace flags `clone` may not be given once sealed (CLONE_NEWNS,
/// NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET), as the
/// container's own profile says for every other function.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// Calls a sealed child may not make: they would change what it sees of
/// the filesystem or which namespaces it is in.
const FORBIDDEN: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

/// Closes every descriptor but 0, 1, 2 and those of `keep`.
pub fn keep_only(keep: &[&OwnedFd]) -> Result<(), String> {
    let mut kept: Vec<libc::c_uint> = keep.iter().map(|k| k.as_raw_fd() as libc::c_uint).collect();
    kept.sort_unstable();
    let mut first: libc::c_uint = 3;
    let mut ranges = Vec::new();
    for fd in kept {
        if fd >= first {
            ranges.push((first, fd - 1));
            first = fd + 1;
        }
    }
    ranges.push((first, libc::c_uint::MAX));
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: integer arguments; what it closes is the zygote's, which
        // nothing in this child owns or uses.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        if rc != 0 {
            return Err(format!("close_range: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Leaves in the bounding set only `caps`: what a fresh container of the
/// function may hold. A root program gains them at its exec, another
/// user's program none. `last` is the kernel's highest (`last_cap`).
pub fn bounding_set(caps: &[u32], last: u32) -> Result<(), String> {
    faas_handler::caps::bound_to(caps, last)
        .map_err(|e| format!("dropping capabilities from the bounding set: {e}"))
}

/// The kernel's highest capability number: read once, by the zygote.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Installs the filter that forbids mounts and new namespaces (EPERM;
/// `clone3`, whose flags a filter cannot read, ENOSYS so libc falls back
/// to `clone`).
pub fn no_more_namespaces() -> Result<(), String> {
    unotify::install_plain(&mut program())
        .map_err(|e| format!("installing the child's seccomp filter: {e}"))
}

/// The seal's program as bytes (`struct sock_filter` in memory order),
/// for a fork server's children (`sdk`).
pub fn program_bytes() -> Vec<u8> {
    program()
        .iter()
        .flat_map(|i| {
            let mut b = Vec::with_capacity(8);
            b.extend_from_slice(&i.code.to_ne_bytes());
            b.push(i.jt);
            b.push(i.jf);
            b.extend_from_slice(&i.k.to_ne_bytes());
            b
        })
        .collect()
}

/// A pidfd of `pid` (nix has no `pidfd_open`).
pub fn pidfd(pid: nix::unistd::Pid) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments; the descriptor returned is ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = std::os::fd::RawFd::try_from(fd).map_err(|_| io::ErrorKind::InvalidData)?;
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn program() -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let allow = op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW);
    let errno = |e: i32| op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | e as u32);
    let mut p = vec![
        op(BPF_LD_W_ABS, 0, 0, ARCH),
        // Another architecture: the container's own filter refuses it.
        op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        allow,
        op(BPF_LD_W_ABS, 0, 0, NR),
    ];
    for &nr in FORBIDDEN {
        p.push(op(BPF_JEQ_K, 0, 1, nr as u32));
        p.push(errno(libc::EPERM));
    }
    p.push(op(BPF_JEQ_K, 0, 1, libc::SYS_clone3 as u32));
    p.push(errno(libc::ENOSYS));
    p.push(op(BPF_JEQ_K, 0, 3, libc::SYS_clone as u32));
    // The low half of clone's flags, where every namespace flag is.
    p.push(op(BPF_LD_W_ABS, 0, 0, ARGS));
    p.push(op(BPF_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS));
    p.push(errno(libc::EPERM));
    p.push(allow);
    p
}

/// Sets IFF_UP on `name` in this network namespace.
pub fn interface_up(name: &str) -> io::Result<()> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero `ifreq` is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is the `ifreq` both requests take, alive for the call.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &[libc::sock_filter], nr: libc::c_long, arg0: u64) -> u32 {
        crate::unotify::tests::run(p, AUDIT_ARCH_X86_64, nr, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn the_seal_forbids_mounts_and_namespaces_only() {
        let p = program();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run(&p, libc::SYS_mount, 0), eperm);
        assert_eq!(run(&p, libc::SYS_unshare, 0), eperm);
        assert_eq!(run(&p, libc::SYS_setns, 0), eperm);
        assert_eq!(
            run(&p, libc::SYS_clone3, 0),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(run(&p, libc::SYS_clone, libc::CLONE_NEWUSER as u64), eperm);
        assert_eq!(
            run(&p, libc::SYS_clone, libc::CLONE_NEWNET as u64 | 17),
            eperm
        );
        // A plain fork (SIGCHLD) and a thread go on.
        assert_eq!(run(&p, libc::SYS_clone, 17), libc::SECCOMP_RET_ALLOW);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(&p, libc::SYS_clone, thread), libc::SECCOMP_RET_ALLOW);
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_bind,
            libc::SYS_listen,
        ] {
            assert_eq!(run(&p, nr, 0), libc::SECCOMP_RET_ALLOW);
        }
    }
}
