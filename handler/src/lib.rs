//! The handler side of faasd's control-socket protocol, for handlers
//! written in Rust:
//!
//! 1. connect to the Unix stream socket `/control.sock`;
//! 2. receive one message whose SCM_RIGHTS carries one connected TCP socket;
//! 3. serve that connection and close it;
//! 4. exit — or, when faasd set `FAAS_REUSE=1`, write one byte on the same
//!    control connection ("ready") and receive the next connection there.
//!    The byte's value (1 to 16) is how many connections it takes in one
//!    message when several are waiting; it serves them in turn before
//!    writing the next ready byte. This crate asks for up to 8.
//!
//! (A reuse handler may instead close its control connection after each
//! connection and connect again, or write a byte outside 1..=16, meaning
//! one; faasd takes all of these.)
//!
//! ```no_run
//! use std::io::{Read, Write};
//! fn main() -> std::io::Result<()> {
//!     faas_handler::serve(|mut conn| {
//!         let mut request = [0u8; 4096];
//!         let _ = conn.read(&mut request)?;
//!         conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")?;
//!         conn.shutdown(std::net::Shutdown::Write)
//!     })
//! }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use faas_protocol::{recv_fds, send_ready, Wait};

pub mod caps;
pub mod fork;
pub use fork::fork_serve;

/// Where faasd puts the control socket in every container.
pub const CONTROL_SOCKET: &str = faas_protocol::layout::CONTROL_SOCKET;
/// The most connections faasd hands over in one message.
pub const MAX_BATCH: u8 = faas_protocol::MAX_BATCH as u8;
/// What this crate's handlers take at once: enough to spare most of the
/// wake-ups under load, few enough that one slow request holds back
/// little.
pub const DEFAULT_BATCH: u8 = 8;

/// A handler's connection to faasd.
pub struct Control {
    stream: UnixStream,
    /// Connections received on this control connection so far.
    received: u64,
    /// Received in the last message and not served yet.
    queued: VecDeque<TcpStream>,
    /// The ready byte: how many connections to take at once.
    batch: u8,
}

impl Control {
    /// Connects to `/control.sock`.
    pub fn connect() -> io::Result<Self> {
        Self::connect_to(CONTROL_SOCKET)
    }

    pub fn connect_to(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self {
            stream: UnixStream::connect(path)?,
            received: 0,
            queued: VecDeque::new(),
            batch: DEFAULT_BATCH,
        })
    }

    /// Takes at most `batch` (1 to 16) connections at once.
    pub fn with_batch(mut self, batch: u8) -> Self {
        self.batch = batch.clamp(1, MAX_BATCH);
        self
    }

    /// The next connection to serve; `None` when faasd has no more for
    /// this handler (it closed the control connection). Once the
    /// connections received so far are served, this tells faasd so.
    pub fn next_connection(&mut self) -> io::Result<Option<TcpStream>> {
        if let Some(conn) = self.queued.pop_front() {
            return Ok(Some(conn));
        }
        if self.received > 0 && !self.ready()? {
            return Ok(None);
        }
        self.queued = receive(&self.stream)?;
        self.received += self.queued.len() as u64;
        Ok(self.queued.pop_front())
    }

    /// Connections received with the last one taken and not taken yet
    /// (faasd hands over several in one message when they queue).
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// The next descriptor faasd sends, whatever it is (`faas-init` gets a
    /// listening socket this way); `None` when faasd closed the connection.
    pub fn next_fd(&mut self) -> io::Result<Option<OwnedFd>> {
        Ok(self.next_connection()?.map(OwnedFd::from))
    }

    /// Sends the ready byte; false if faasd is gone.
    fn ready(&self) -> io::Result<bool> {
        send_ready(self.stream.as_fd(), self.batch)
    }
}

impl AsFd for Control {
    /// The control connection itself.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Whether faasd lets this handler serve more than one connection.
pub fn reuse_enabled() -> bool {
    std::env::var_os("FAAS_REUSE").is_some_and(|v| v == "1")
}

/// Serves what faasd hands over with `handle`: one connection, or with
/// `FAAS_REUSE=1` one after another until faasd has no more. A failure
/// while serving one connection is reported on stderr (the function's
/// log) and ends only that connection.
pub fn serve(mut handle: impl FnMut(TcpStream) -> io::Result<()>) -> io::Result<()> {
    let reuse = reuse_enabled();
    let mut control = Control::connect()?;
    while let Some(conn) = control.next_connection()? {
        if let Err(e) = handle(conn) {
            eprintln!("faas-handler: serving a connection: {e}");
        }
        if !reuse {
            break;
        }
    }
    Ok(())
}

/// Receives one message's descriptors (and the byte that carries them);
/// none when faasd closed the connection.
fn receive(stream: &UnixStream) -> io::Result<VecDeque<TcpStream>> {
    let mut byte = [0u8; 1];
    match recv_fds(stream.as_fd(), &mut byte, Wait::Yes) {
        Ok(got) => Ok(got.fds.into_iter().map(TcpStream::from).collect()),
        // faasd closed without reading our ready byte: no more work.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(VecDeque::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// faasd's side, played with a socket pair.
    fn send_fds(conn: &UnixStream, fds: &[std::os::fd::BorrowedFd<'_>]) {
        faas_protocol::send_fds(conn.as_fd(), fds).expect("sendmsg");
    }

    #[test]
    fn receives_connection_after_connection_on_one_control_connection() {
        let (mut faasd, handler) = UnixStream::pair().expect("pair");
        let handler = std::thread::spawn(move || {
            let mut control = Control {
                stream: handler,
                received: 0,
                queued: VecDeque::new(),
                batch: DEFAULT_BATCH,
            };
            let mut round = 0u8;
            while let Some(mut conn) = control.next_connection().expect("next") {
                conn.write_all(&[round]).expect("write");
                round += 1;
            }
            round
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        for round in 0..3u8 {
            if round > 0 {
                let mut ready = [0u8; 1];
                faasd.read_exact(&mut ready).expect("ready byte");
                assert_eq!(ready[0], DEFAULT_BATCH);
            }
            let mut client = TcpStream::connect(addr).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            send_fds(&faasd, &[accepted.as_fd()]);
            drop(accepted);
            let mut got = Vec::new();
            client.read_to_end(&mut got).expect("read");
            assert_eq!(got, [round]);
        }
        // Three at once, served in turn before the handler asks again.
        let mut ready = [0u8; 1];
        faasd.read_exact(&mut ready).expect("ready byte");
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).expect("connect"));
            accepted.push(listener.accept().expect("accept").0);
        }
        let fds: Vec<_> = accepted.iter().map(|a| a.as_fd()).collect();
        send_fds(&faasd, &fds);
        drop(accepted);
        for (i, mut client) in clients.into_iter().enumerate() {
            let mut got = Vec::new();
            client.read_to_end(&mut got).expect("read");
            assert_eq!(got, [3 + i as u8]);
        }
        // No more work: faasd closes, the handler's `next` says so.
        faasd
            .read_exact(&mut ready)
            .expect("ready byte after the batch");
        drop(faasd);
        assert_eq!(handler.join().expect("handler"), 6);
    }
}
