//! The few bytes of HTTP/1.1 the CLI speaks, over TCP or a Unix socket:
//! one request per connection, uploads chunked behind `Expect:
//! 100-continue` (so a refusal is read before the image is sent), answers
//! framed by Content-Length, chunked encoding or the connection's end.
//! Small enough to own, and it gives what a general client would not: a
//! Unix socket, and the server's reason when it refuses an upload early.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::endpoint::Conn;
pub use super::endpoint::Endpoint;

/// How long an upload waits for `100 Continue` before sending anyway (a
/// server that ignores `Expect` still gets the body).
const CONTINUE_WAIT: Duration = Duration::from_secs(3);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
const CHUNK: usize = 64 << 10;

/// A request body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Sent chunked, after the server agreed (`Expect: 100-continue`).
    Stream(&'a mut dyn Read),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("reading the upload: {0}")]
    Source(#[source] io::Error),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// An answer: status, headers (names lower-cased) and the body to read.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read + Send>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(mut self) -> io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }
}

/// Sends one request; `headers` beside Host, Connection and the framing.
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> Result<Response, WireError> {
    let conn = endpoint.connect().map_err(WireError::Connect)?;
    let mut writer = conn.try_clone().map_err(WireError::Io)?;
    let mut reader = BufReader::new(conn);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        endpoint.host()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &body {
        Body::Empty => head.push_str("content-length: 0\r\n"),
        Body::Bytes(b) => head.push_str(&format!("content-length: {}\r\n", b.len())),
        Body::Stream(_) => head.push_str("transfer-encoding: chunked\r\nexpect: 100-continue\r\n"),
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).map_err(WireError::Io)?;
    match body {
        Body::Empty => {}
        Body::Bytes(b) => {
            if let Err(e) = writer.write_all(b) {
                return early_answer(reader).ok_or(WireError::Io(e));
            }
        }
        Body::Stream(source) => {
            reader
                .get_ref()
                .set_read_timeout(Some(CONTINUE_WAIT))
                .map_err(WireError::Io)?;
            match read_head(&mut reader) {
                Ok(Some((100, _))) => {}
                Ok(Some((status, headers))) => return Ok(finish(status, headers, reader)),
                Ok(None) => {}
                Err(WireError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            reader
                .get_ref()
                .set_read_timeout(None)
                .map_err(WireError::Io)?;
            match send_chunked(source, &mut writer) {
                Ok(()) => {}
                Err(WireError::Io(e)) => return early_answer(reader).ok_or(WireError::Io(e)),
                Err(e) => return Err(e),
            }
        }
    }
    loop {
        match read_head(&mut reader)? {
            // Interim answers (a late 100 Continue) are skipped.
            Some((status, _)) if (100..200).contains(&status) => continue,
            Some((status, headers)) => return Ok(finish(status, headers, reader)),
            None => {
                return Err(WireError::Malformed(
                    "the connection closed before an answer".into(),
                ))
            }
        }
    }
}

/// After a failed send: the answer the server gave before it stopped
/// reading (a refusal), if there is one.
fn early_answer(mut reader: BufReader<Conn>) -> Option<Response> {
    let _ = reader.get_ref().set_read_timeout(Some(CONTINUE_WAIT));
    loop {
        match read_head(&mut reader) {
            Ok(Some((status, _))) if (100..200).contains(&status) => continue,
            Ok(Some((status, headers))) => return Some(finish(status, headers, reader)),
            _ => return None,
        }
    }
}

fn send_chunked(source: &mut dyn Read, to: &mut Conn) -> Result<(), WireError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WireError::Source(e)),
        };
        to.write_all(format!("{n:x}\r\n").as_bytes())
            .and_then(|()| to.write_all(&buf[..n]))
            .and_then(|()| to.write_all(b"\r\n"))
            .map_err(WireError::Io)?;
    }
    to.write_all(b"0\r\n\r\n").map_err(WireError::Io)
}

type Head = (u16, Vec<(String, String)>);

/// The status line and headers; `None` at a clean end of stream.
fn read_head(reader: &mut BufReader<Conn>) -> Result<Option<Head>, WireError> {
    let mut line = String::new();
    let mut seen = 0usize;
    let n = reader.read_line(&mut line).map_err(WireError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    seen += n;
    let mut parts = line.trim_end().splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(WireError::Malformed(format!(
            "not HTTP: {:?}",
            line.trim_end()
        )));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| WireError::Malformed(format!("bad status line {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(WireError::Io)?;
        seen += n;
        if n == 0 || seen > MAX_HEAD {
            return Err(WireError::Malformed("truncated or oversized head".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(Some((status, headers)));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

fn finish(status: u16, headers: Vec<(String, String)>, reader: BufReader<Conn>) -> Response {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body: Box<dyn Read + Send> =
        if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
            Box::new(Chunked::new(reader))
        } else if let Some(len) = get("content-length").and_then(|l| l.parse::<u64>().ok()) {
            Box::new(reader.take(len))
        } else {
            Box::new(reader)
        };
    Response {
        status,
        headers,
        body,
    }
}

/// Reads a chunked body.
struct Chunked {
    inner: BufReader<Conn>,
    left: u64,
    done: bool,
}

impl Chunked {
    fn new(inner: BufReader<Conn>) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
        }
    }

    fn next_size(&mut self) -> io::Result<u64> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the answer ended inside its body",
            ));
        }
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {size:?}"),
            )
        })
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            self.left = self.next_size()?;
            if self.left == 0 {
                self.done = true;
                // Trailers, then the blank line.
                let mut line = String::new();
                while self.inner.read_line(&mut line)? > 2 {
                    line.clear();
                }
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the answer ended inside a chunk",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that answers `reply` after reading what `read`
    /// says, and hands back what it read.
    fn server(
        reply: &'static [u8],
        read_body: bool,
    ) -> (Endpoint, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).expect("read") == 0 {
                    break;
                }
                seen.extend_from_slice(line.as_bytes());
                if line == "\r\n" {
                    break;
                }
            }
            let mut s = s;
            if read_body {
                s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").expect("100");
                let mut rest = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).expect("read") == 0 {
                        break;
                    }
                    rest.extend_from_slice(line.as_bytes());
                    if rest.ends_with(b"0\r\n\r\n") {
                        break;
                    }
                }
                seen.extend(rest);
            }
            s.write_all(reply).expect("reply");
            seen
        });
        (Endpoint::Tcp(addr.to_string()), t)
    }

    #[test]
    fn uploads_chunked_after_100_continue_and_reads_a_chunked_answer() {
        let (ep, t) = server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            true,
        );
        let mut source: &[u8] = b"image bytes";
        let r = request(
            &ep,
            "PUT",
            "/v1/functions/f",
            &[],
            Body::Stream(&mut source),
        )
        .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.text().expect("body"), "hello world");
        let seen = String::from_utf8(t.join().expect("server")).expect("utf8");
        assert!(seen.contains("expect: 100-continue"), "{seen}");
        assert!(seen.contains("b\r\nimage bytes\r\n0\r\n\r\n"), "{seen}");
    }

    #[test]
    fn a_refusal_before_100_continue_is_read_and_nothing_is_sent() {
        let (ep, t) = server(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 8\r\n\r\nbad name",
            false,
        );
        struct Never;
        impl Read for Never {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("the body was read although the server refused");
            }
        }
        let r = request(
            &ep,
            "PUT",
            "/v1/functions/a%20b",
            &[],
            Body::Stream(&mut Never),
        )
        .expect("request");
        assert_eq!(r.status, 400);
        assert_eq!(r.text().expect("body"), "bad name");
        t.join().expect("server");
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let ep = Endpoint::Tcp(format!("127.0.0.1:{port}"));
        assert!(matches!(
            request(&ep, "GET", "/", &[], Body::Empty),
            Err(WireError::Connect(_))
        ));
    }
}
