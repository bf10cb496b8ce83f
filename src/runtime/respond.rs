//! Answers faasd writes itself when no handler got the connection: a short
//! HTTP error, then an orderly close (drain what the client sent, so the
//! kernel does not turn our answer into a reset).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sys::closer::Foreign;

/// How long we keep reading the client's request after answering.
const DRAIN: Duration = Duration::from_millis(500);
const WRITE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    NotFound,
    HeaderFieldsTooLarge,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            Status::BadGateway => "502 Bad Gateway",
            Status::ServiceUnavailable => "503 Service Unavailable",
            Status::GatewayTimeout => "504 Gateway Timeout",
        }
    }
}

/// The bytes of a complete `Connection: close` error response.
pub fn render(status: Status, reason: &str) -> String {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    )
}

/// `error` on a connection a container may have had (made non-blocking
/// here: it may be the same open file a handler was given, which must stay
/// blocking until then). Written through a copy of ours, closed first, so
/// the last close is the closer's.
pub async fn error_std<T: Into<OwnedFd> + AsFd>(client: Foreign<T>, status: Status, reason: &str) {
    let copy = client
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(|c| c.set_nonblocking(true).map(|()| c))
        .and_then(TcpStream::from_std);
    if let Ok(copy) = copy {
        error(copy, status, reason).await;
    }
    drop(client);
}

pub async fn error(client: TcpStream, status: Status, reason: &str) {
    send_and_close(client, render(status, reason).as_bytes()).await;
}

/// Writes `bytes` (a response, a TLS alert) and ends the connection,
/// reading what the client still sends for a moment first, so our answer
/// is not lost to a reset.
pub async fn send_and_close(mut client: TcpStream, bytes: &[u8]) {
    if tokio::time::timeout(WRITE, client.write_all(bytes))
        .await
        .is_err()
    {
        return;
    }
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN, async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_complete_response() {
        let r = render(Status::GatewayTimeout, "handler did not connect");
        assert!(r.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"));
        assert!(r.contains("Content-Length: 24\r\n"));
        assert!(r.ends_with("\r\n\r\nhandler did not connect\n"));
    }
}
