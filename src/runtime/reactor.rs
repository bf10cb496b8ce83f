//! Descriptors on the tokio reactor (`unsafe` because tokio cannot check that a
//! raw descriptor stays what it was; the bound on `AsFd` makes the types
//! prove it): a container's `/control.sock` listener, and runc's exec
//! fifo while a container starts (`oci`). Accepted
//! connections stay plain std sockets: each is only ever used for one
//! non-blocking `sendmsg`, so registering it with the reactor (two
//! `epoll_ctl` per connection in reuse mode) would be waste.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;

use tokio::io::unix::AsyncFd;

use crate::runtime::fdpass::ControlConn;
use crate::sys::closer::Foreign;

/// A container's `/control.sock` listener (the container can connect to it
/// and queue on it, so it is closed by the closer).
pub struct ControlListener(AsyncFd<Foreign<UnixListener>>);

/// Registers a non-blocking descriptor owner with the current reactor.
pub fn register_owned<T: AsFd + AsRawFd>(owner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `AsFd` (I/O safety) means `owner` owns or borrows an open
    // descriptor for as long as it lives; the AsyncFd owns `owner`, so the
    // descriptor stays open and the same until the AsyncFd is dropped.
    let fd = unsafe { AsyncFd::register(owner) };
    fd.map_err(io::Error::from)
}

impl ControlListener {
    /// `listener` must be non-blocking.
    pub fn new(listener: UnixListener) -> io::Result<Self> {
        register_owned(Foreign::endpoint(listener)).map(Self)
    }

    /// The listener back (off the reactor).
    pub fn into_inner(self) -> Foreign<UnixListener> {
        self.0.into_inner()
    }

    pub async fn accept(&self) -> io::Result<ControlConn> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|l| l.get_ref().accept()) {
                return result.map(|(s, _)| Foreign::endpoint(s));
            }
        }
    }
}
