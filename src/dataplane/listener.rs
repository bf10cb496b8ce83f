//! A function's listening socket: binding it, and taking at once the
//! connections already queued on it.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::BorrowedFd;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Kernel accept queue per listener; connections wait here while the
/// function is at its concurrency limit.
const BACKLOG: i32 = 1024;
/// With deferral, a connection that has sent nothing yet stays in the
/// kernel up to about this long before it is accepted anyway: a reuse
/// handler is handed a request to read, not a socket to wait on.
const DEFER_ACCEPT_SECS: u32 = 5;

/// A close-on-exec listener on `addr` with SO_REUSEADDR (a restarted faasd
/// rebinds at once), for all-cores functions SO_REUSEPORT, and
/// TCP_DEFER_ACCEPT if `defer` (see `DeployOptions::defers_accept`). Left
/// in blocking mode: io_uring waits for us, and a non-blocking socket
/// would make its accept fail with EAGAIN instead (a handed listener is
/// the server's to set).
pub fn bind(addr: SocketAddr, reuse_port: bool, defer: bool) -> std::io::Result<TcpListener> {
    bind_with(addr, reuse_port, defer.then_some(DEFER_ACCEPT_SECS))
}

/// A shared listener (`--shared-listen`), deferred for
/// `SHARED_DEFER_SECS`, so the first peek finds the request (or hello)
/// already there; SO_REUSEPORT, so that on a wildcard address it can
/// share its port with the functions' own listeners.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_with(addr, true, Some(SHARED_DEFER_SECS))
}

/// How long a shared listener's kernel keeps a silent connection before
/// it is accepted anyway; the header timeout counts it in.
pub const SHARED_DEFER_SECS: u32 = 1;

fn bind_with(
    addr: SocketAddr,
    reuse_port: bool,
    defer_secs: Option<u32>,
) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(secs) = defer_secs {
        crate::sys::rawfd::defer_accept(&socket, secs)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts up to `max` connections already waiting in `listener`'s queue,
/// without waiting for more. The listener is blocking (see `bind`), so it
/// is switched to non-blocking only meanwhile — between two of the ring's
/// accepts, when none is in flight; the queue's length is asked first, so
/// an empty queue costs one `getsockopt`.
pub fn accept_queued(listener: BorrowedFd<'_>, max: usize) -> Vec<TcpStream> {
    let mut taken = Vec::new();
    if max == 0 || crate::sys::rawfd::accept_queue_len(listener) == 0 {
        return taken;
    }
    let sock = SockRef::from(&listener);
    if sock.set_nonblocking(true).is_err() {
        return taken;
    }
    while taken.len() < max {
        match sock.accept() {
            Ok((conn, _)) => taken.push(conn.into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            // Drained (WouldBlock); any other error the ring's next accept
            // meets and reports.
            Err(_) => break,
        }
    }
    if let Err(e) = sock.set_nonblocking(false) {
        tracing::error!(error = %e, "a listener left non-blocking: its accepts will back off");
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn queue_len(l: &TcpListener) -> u32 {
        crate::sys::rawfd::accept_queue_len(l.as_fd())
    }

    /// Takes what is queued, no more than asked, never waits, and leaves
    /// the listener blocking for the ring.
    #[test]
    fn accept_queued_takes_what_waits_and_leaves_the_listener_blocking() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"), false, false).expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert!(
            accept_queued(listener.as_fd(), 4).is_empty(),
            "nothing queued"
        );
        let _clients: Vec<_> = (0..3)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        assert_eq!(queue_len(&listener), 3);
        let taken = accept_queued(listener.as_fd(), 2);
        assert_eq!(taken.len(), 2);
        assert_eq!(queue_len(&listener), 1);
        assert_eq!(accept_queued(listener.as_fd(), 8).len(), 1);
        assert!(accept_queued(listener.as_fd(), 8).is_empty());
        let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFL).expect("flags");
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "the listener is blocking again"
        );
        for conn in &taken {
            let flags = nix::fcntl::fcntl(conn, nix::fcntl::FcntlArg::F_GETFL).expect("flags");
            assert_eq!(flags & libc::O_NONBLOCK, 0, "handlers get blocking sockets");
        }
    }
}
