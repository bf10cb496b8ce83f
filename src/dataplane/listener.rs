//! Binding a function's listening socket.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

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
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if defer {
        crate::rawfd::defer_accept(&socket, DEFER_ACCEPT_SECS)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
