//! Handing a connected socket to a handler: one `sendmsg` with SCM_RIGHTS
//! on the handler's `/control.sock` connection, driven by the reactor's
//! readiness so a full socket buffer waits instead of failing.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends `fd` (plus one data byte, which SCM_RIGHTS needs) over `conn`.
pub async fn send_fd(conn: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let payload = [b'F'];
    conn.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(&payload)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            .map(|_| ())
            .map_err(io::Error::from)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSliceMut, Read, Write};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream as StdUnix;

    use nix::sys::socket::{recvmsg, ControlMessageOwned};

    #[tokio::test]
    async fn passes_a_working_socket() {
        let (ours, theirs) = StdUnix::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let ours = UnixStream::from_std(ours).expect("tokio");
        let (mut a, b) = StdUnix::pair().expect("payload pair");
        send_fd(&ours, b.as_fd()).await.expect("send");
        drop(b);

        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            theirs.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        let fd = msg
            .cmsgs()
            .expect("cmsgs")
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("an fd");
        #[allow(unsafe_code)]
        // SAFETY: recvmsg just installed this descriptor; nothing else owns it.
        let received = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut received = StdUnix::from(received);
        received.write_all(b"hi").expect("write");
        let mut got = [0u8; 2];
        a.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hi");
    }
}
