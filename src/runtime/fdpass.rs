//! Handing a connected socket to a handler: one `sendmsg` with SCM_RIGHTS
//! on the handler's `/control.sock` connection. Each control connection
//! carries one message per connection handed over, so its send buffer is
//! always empty and the call never has to wait; it is made non-blocking
//! anyway, so a broken handler can never stall the caller.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::sys::closer::Foreign;

/// Most descriptors handed over in one message (a reuse handler's batch).
pub const MAX_BATCH: usize = 16;

/// A handler's `/control.sock` connection: the container holds the other
/// end, so ours is closed by the closer.
pub type ControlConn = Foreign<UnixStream>;

/// Sends `fd` (plus one data byte, which SCM_RIGHTS needs) over `conn`.
pub fn send_fd(conn: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    send_raw(conn, &[fd.as_raw_fd()])
}

/// Sends up to `MAX_BATCH` descriptors in one message.
pub fn send_fds(conn: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut raw = [0; MAX_BATCH];
    let n = fds.len().min(MAX_BATCH);
    for (r, fd) in raw.iter_mut().zip(fds) {
        *r = fd.as_raw_fd();
    }
    send_raw(conn, &raw[..n])
}

fn send_raw(conn: BorrowedFd<'_>, fds: &[RawFd]) -> io::Result<()> {
    let payload = [b'F'];
    let iov = [IoSlice::new(&payload)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, flags, None)
        .map(|_| ())
        .map_err(io::Error::from)
}

/// The most descriptors one message can carry (the kernel's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

/// Reads up to `buf.len()` bytes a handler wrote on its control connection
/// (its ready bytes), without waiting. Descriptors it sent along (which the
/// listener's `SO_PASSRIGHTS` refuses where the kernel has it) are taken
/// with them and go to the closer: a plain `recv` would have the kernel
/// close them in this thread.
pub fn read_ready(conn: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(io::Error::from)?;
    let read = msg.bytes;
    for fd in owned_rights(&msg) {
        drop(Foreign::new(fd));
    }
    Ok(read)
}

/// The descriptors a received message carried, owned.
#[allow(unsafe_code)]
fn owned_rights(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> Vec<OwnedFd> {
    let Ok(cmsgs) = msg.cmsgs() else {
        return Vec::new();
    };
    cmsgs
        .filter_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        // SAFETY: recvmsg just installed these descriptors in our table;
        // nothing else refers to them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// The handler's side: receives one descriptor sent with `send_fd`
/// (`None` if the message carried none). faasd itself never receives; the
/// benches and tests play the handler with it.
pub fn recv_fd(conn: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok(owned_rights(&msg).into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream as StdUnix;

    #[test]
    fn a_dead_peer_is_an_error_not_a_signal() {
        let (ours, theirs) = StdUnix::pair().expect("pair");
        drop(theirs);
        let (_a, b) = StdUnix::pair().expect("payload pair");
        assert!(send_fd(ours.as_fd(), b.as_fd()).is_err());
    }

    #[test]
    fn passes_a_working_socket() {
        let (ours, theirs) = StdUnix::pair().expect("pair");
        let (mut a, b) = StdUnix::pair().expect("payload pair");
        send_fd(ours.as_fd(), b.as_fd()).expect("send");
        drop(b);
        let received = recv_fd(theirs.as_fd()).expect("recvmsg").expect("an fd");
        let mut received = StdUnix::from(received);
        received.write_all(b"hi").expect("write");
        let mut got = [0u8; 2];
        a.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hi");
    }
}
