//! Handing a connected socket to a handler: one `sendmsg` with SCM_RIGHTS
//! on the handler's `/control.sock` connection. Each control connection
//! carries one message per connection handed over, so its send buffer is
//! always empty and the call never has to wait; it is made non-blocking
//! anyway, so a broken handler can never stall the caller.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors handed over in one message (a reuse handler's batch).
pub const MAX_BATCH: usize = 16;

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

/// The handler's side: receives one descriptor sent with `send_fd`
/// (`None` if the message carried none). faasd itself never receives; the
/// benches and tests play the handler with it.
#[allow(unsafe_code)]
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
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: recvmsg just installed this descriptor in our
                // table; nothing else refers to it.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
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
