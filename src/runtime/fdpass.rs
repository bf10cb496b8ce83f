//! faasd's side of the handler protocol (`faas-protocol` owns the wire):
//! handing connected sockets to a handler in one `sendmsg` on its
//! `/control.sock` connection, and reading its ready bytes. Each control
//! connection carries one message per hand-over, so its send buffer is
//! always empty and the call never has to wait; it is non-blocking
//! anyway, so a broken handler can never stall the caller.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use faas_protocol::{recv_fds, send_fds as send_batch, Wait};

use crate::sys::closer::Foreign;

pub use faas_protocol::{batch_of, MAX_BATCH};

/// A handler's `/control.sock` connection: the container holds the other
/// end, so ours is closed by the closer.
pub type ControlConn = Foreign<UnixStream>;

/// Sends `fd` (plus one data byte, which SCM_RIGHTS needs) over `conn`.
pub fn send_fd(conn: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    send_batch(conn, &[fd])
}

/// Sends 1 to `MAX_BATCH` descriptors in one message.
pub fn send_fds(conn: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_batch(conn, fds)
}

/// Reads up to `buf.len()` bytes a handler wrote on its control connection
/// (its ready bytes), without waiting. Descriptors it sent along (which the
/// listener's `SO_PASSRIGHTS` refuses where the kernel has it) are taken
/// with them and go to the closer: a plain `recv` would have the kernel
/// close them in this thread.
pub fn read_ready(conn: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let got = recv_fds(conn, buf, Wait::No)?;
    for fd in got.fds {
        drop(Foreign::new(fd));
    }
    Ok(got.bytes)
}

/// The handler's side: receives one descriptor sent with `send_fd`
/// (`None` if the message carried none). faasd itself never receives; the
/// benches and tests play the handler with it.
pub fn recv_fd(conn: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    Ok(recv_fds(conn, &mut byte, Wait::Yes)?.fds.into_iter().next())
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
