//! Binding a function's listening socket.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel accept queue per function; connections wait here when we are busy.
const BACKLOG: i32 = 1024;

/// A non-blocking, close-on-exec listener on `addr` with SO_REUSEADDR, so a
/// restarted faasd can rebind at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
