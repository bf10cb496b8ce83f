//! A container's `/control.sock` listener on the reactor. Accepted
//! connections stay plain std sockets: each is only ever used for one
//! non-blocking `sendmsg`, so registering it with the reactor (two
//! `epoll_ctl` per connection in reuse mode) would be waste.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};

use tokio::io::unix::AsyncFd;

pub struct ControlListener(AsyncFd<UnixListener>);

impl ControlListener {
    /// `listener` must be non-blocking.
    pub fn new(listener: UnixListener) -> io::Result<Self> {
        // SAFETY: the UnixListener owns its descriptor, keeps it open and
        // returns the same one from `as_raw_fd` until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(listener) };
        fd.map(Self).map_err(io::Error::from)
    }

    pub async fn accept(&self) -> io::Result<UnixStream> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|l| l.get_ref().accept()) {
                return result.map(|(s, _)| s);
            }
        }
    }
}
