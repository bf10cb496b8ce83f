//! Raw socket descriptors, this crate's one place for their `unsafe`:
//! tokio-uring's sockets expose raw fds only; the queue deadline and the
//! answer to a handler that died silent need TCP_INFO, and listeners
//! TCP_DEFER_ACCEPT, which neither nix nor socket2 wraps.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// A borrowed view of `sock`'s descriptor.
pub fn borrow(sock: &impl AsRawFd) -> BorrowedFd<'_> {
    // SAFETY: `sock` owns an open descriptor and outlives the borrow, which
    // is tied to `&sock`'s lifetime.
    unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) }
}

/// A close-on-exec duplicate of `sock`'s descriptor.
pub fn dup(sock: &impl AsRawFd) -> io::Result<OwnedFd> {
    borrow(sock).try_clone_to_owned()
}

/// How long an accepted connection sat since the kernel last heard from
/// the client (established, or its request arrived): its queueing time.
pub fn idle_in_kernel(sock: &impl AsRawFd) -> Option<Duration> {
    tcp_info(sock).map(|info| Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
}

/// Bytes sent on the connection so far (by whoever holds it).
pub fn bytes_sent(sock: &impl AsRawFd) -> Option<u64> {
    tcp_info(sock).map(|info| info.tcpi_bytes_sent)
}

fn tcp_info(sock: &impl AsRawFd) -> Option<libc::tcp_info> {
    let mut info: libc::tcp_info = tcp_info_zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes; the fd is open
    // (borrowed from `sock`); the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

/// Completes accepts only once the client has sent something (or after
/// about `secs`), so a handler never waits for the request it was given.
pub fn defer_accept(sock: &impl AsRawFd, secs: u32) -> io::Result<()> {
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: `secs` is a readable c_int of the length passed; the fd is
    // open (borrowed from `sock`).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn tcp_info_zeroed() -> libc::tcp_info {
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
