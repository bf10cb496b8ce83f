//! Reference server for `loadtest/`: a plain multi-threaded HTTP server
//! (one accepting thread per CPU, blocking std sockets) answering what the
//! example handler answers, with `Connection: close`. The best a server can
//! do here per connection, without any container: faasd's reuse mode is
//! measured against it.
//!
//! `cargo run --release --example plain_server -- 127.0.0.1:18190`

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nHello from FaaS handler!\n";

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18190".into());
    let listener = Arc::new(TcpListener::bind(&addr)?);
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
