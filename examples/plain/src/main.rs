//! Reference server for `loadtest/`: a plain multi-threaded HTTP server
//! (one accepting thread per CPU, blocking std sockets) answering what the
//! example handler answers, with `Connection: close`. The best a server can
//! do here per connection, without any container: faasd's reuse mode is
//! measured against it. Socket-activated (systemd's `LISTEN_FDS=1` for
//! this process) it accepts on fd 3 instead of binding: faasd's
//! `--socket-activation` kind runs this same code in a container.
//!
//! `cargo run --release -p plain-server -- 127.0.0.1:18190` (static, for an
//! image: `scripts/build-handlers.sh`)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nHello from FaaS handler!\n";

/// Descriptor 3, when it was passed to this process (LISTEN_PID) by a
/// socket activator.
#[allow(unsafe_code)]
fn activated() -> Option<OwnedFd> {
    let ours = std::env::var("LISTEN_PID").ok()? == std::process::id().to_string();
    if !ours || std::env::var("LISTEN_FDS").ok()? != "1" {
        return None;
    }
    // SAFETY: by the socket-activation protocol, descriptor 3 is an open
    // listening socket given to this process, owned by nothing else here.
    Some(unsafe { OwnedFd::from_raw_fd(3) })
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18190".into());
    let listener = Arc::new(match activated() {
        Some(fd) => TcpListener::from(fd),
        None => TcpListener::bind(&addr)?,
    });
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let listener = Arc::clone(&listener);
            std::thread::spawn(move || loop {
                let Ok((mut conn, _)) = listener.accept() else {
                    continue;
                };
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(RESPONSE);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
