//! One direction of a relayed connection: a buffer between a source and
//! a sink, and the half-close that passes the source's end on.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};

/// Bytes buffered per direction per connection.
const BUF: usize = 16 << 10;

/// One direction of a pair.
pub struct Flow {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source said EOF (or failed).
    pub eof: bool,
    /// Done: the sink's sending side has been shut.
    pub over: bool,
    /// Bytes that reached the sink.
    pub total: u64,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            buf: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            over: false,
            total: 0,
        }
    }
}

impl Flow {
    /// Copies from `from` to `to` until either would block; at the
    /// source's end (or the sink's failure) shuts the sink's sending side.
    pub fn pump(&mut self, mut from: &TcpStream, mut to: &TcpStream) {
        while !self.over {
            if self.start < self.end {
                match to.write(&self.buf[self.start..self.end]) {
                    Ok(n) => {
                        self.start += n;
                        self.total += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => self.finish(to),
                }
                continue;
            }
            if self.eof {
                self.finish(to);
                continue;
            }
            match from.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
    }

    fn finish(&mut self, to: &TcpStream) {
        let _ = to.shutdown(Shutdown::Write);
        (self.start, self.end, self.over) = (0, 0, true);
    }
}
