//! Socket descriptors where std, nix and socket2 stop: the one place that
//! turns an io_uring stream's or listener's raw descriptor into a typed
//! borrow, and the socket options neither nix nor socket2 wraps (TCP_INFO
//! for the queue deadline, the answer to a handler that died silent and
//! a listener's accept queue,
//! TCP_DEFER_ACCEPT for listeners, SO_PEEK_OFF for a reuse handler's
//! control connection).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

/// The connection behind an accepted io_uring stream, as a typed borrow:
/// tokio-uring exposes only `as_raw_fd`, so this is where raw becomes
/// typed, once, for everything downstream.
pub fn uring_stream(stream: &tokio_uring::net::TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the stream owns an open descriptor until it is dropped, and
    // the borrow cannot outlive `stream` (same lifetime).
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// A listener on the ring, as a typed borrow (see `uring_stream`).
pub fn uring_listener(listener: &tokio_uring::net::TcpListener) -> BorrowedFd<'_> {
    // SAFETY: as for `uring_stream`: open until dropped, borrow tied to it.
    unsafe { BorrowedFd::borrow_raw(listener.as_raw_fd()) }
}

/// Connections waiting in a listening socket's accept queue (on a
/// listener, TCP_INFO's `tcpi_unacked` is that queue's length).
pub fn accept_queue_len(listener: BorrowedFd<'_>) -> u32 {
    tcp_info(listener).map_or(0, |info| info.tcpi_unacked)
}

/// How long an accepted connection sat since the kernel last heard from
/// the client (established, or its request arrived): its queueing time.
pub fn idle_in_kernel(sock: BorrowedFd<'_>) -> Option<Duration> {
    tcp_info(sock).map(|info| Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
}

/// Bytes sent on the connection so far (by whoever holds it).
pub fn bytes_sent(sock: BorrowedFd<'_>) -> Option<u64> {
    tcp_info(sock).map(|info| info.tcpi_bytes_sent)
}

fn tcp_info(sock: BorrowedFd<'_>) -> Option<libc::tcp_info> {
    let mut info: libc::tcp_info = tcp_info_zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes; the descriptor
    // is open for the borrow's lifetime; the kernel writes at most `len`.
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
pub fn defer_accept(sock: &impl AsFd, secs: u32) -> io::Result<()> {
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    set_int(
        sock.as_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        secs,
    )
}

/// Bytes sent on a Unix stream socket that its peer has not read yet
/// (SIOCOUTQ: what is still charged to our side).
pub fn unsent(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer; the
    // descriptor is open for the borrow's lifetime.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Whether a stream socket's peer is still there (a peek finds no end).
pub fn peer_open(sock: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: one writable byte; the descriptor is open for the borrow.
    let rc = unsafe { libc::recv(sock.as_raw_fd(), byte.as_mut_ptr().cast(), 1, flags) };
    rc != 0 && (rc > 0 || io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
}

/// `SO_PASSRIGHTS` (Linux 6.16; not in libc yet): whether SCM_RIGHTS may be
/// sent to a Unix socket.
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes a Unix socket refuse descriptors: a sender's SCM_RIGHTS fails
/// with EPERM. Set on a listener, what it accepts inherits it (also a
/// connection still queued on it). ENOPROTOOPT before Linux 6.16.
pub fn refuse_descriptors(sock: &impl AsFd) -> io::Result<()> {
    set_int(sock.as_fd(), libc::SOL_SOCKET, SO_PASSRIGHTS, 0)
}

/// Makes `MSG_PEEK` reads on `sock` start after the bytes peeked before
/// (a plain read of them moves the offset back): each peek then sees only
/// what is new instead of copying everything still unread again.
pub fn peek_from_offset(sock: &impl AsFd) -> io::Result<()> {
    set_peek_offset(sock, 0)
}

/// Sets where the next `MSG_PEEK` read on `sock` starts (`SO_PEEK_OFF`);
/// -1 turns the offset off again (every peek from the start).
pub fn set_peek_offset(sock: &impl AsFd, offset: i32) -> io::Result<()> {
    set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, offset)
}

/// Copies what `sock` has received into `buf` without consuming it
/// (`MSG_PEEK`), never waiting: `Ok(0)` is the peer's end, WouldBlock
/// nothing there yet.
pub fn peek(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: `buf` is writable for its length; the descriptor is open
    // for the borrow.
    let rc = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

fn set_int(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a readable c_int of the length passed; the
    // descriptor is open for the borrow's lifetime.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
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
