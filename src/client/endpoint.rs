//! Where the control API is (`http://HOST:PORT` or `unix:///PATH`), and a
//! connection to it of either kind.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the control API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// `http://HOST:PORT[/]` or `unix:///PATH`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{url}: a unix URL names an absolute path (unix:///run/faasd/faasd.sock)"
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "{url}: faasd's URL is http://HOST:PORT or unix:///PATH"
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("{url}: expected http://HOST:PORT with no path"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint::Tcp(with_port))
    }

    pub(super) fn connect(&self) -> io::Result<Conn> {
        match self {
            Endpoint::Tcp(authority) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in authority.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Endpoint::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
        }
    }

    /// The Host header's value.
    pub(super) fn host(&self) -> &str {
        match self {
            Endpoint::Tcp(authority) => authority,
            Endpoint::Unix(_) => "localhost",
        }
    }
}

pub(super) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub(super) fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080/"),
            Ok(Endpoint::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            Endpoint::parse("http://localhost"),
            Ok(Endpoint::Tcp("localhost:80".into()))
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:9000"),
            Ok(Endpoint::Tcp("[::1]:9000".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:///run/faasd/faasd.sock"),
            Ok(Endpoint::Unix("/run/faasd/faasd.sock".into()))
        );
        assert!(Endpoint::parse("unix://relative").is_err());
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://x:1/api").is_err());
    }
}
