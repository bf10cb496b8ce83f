//! Example faasd handler: answers every connection faasd hands over with a
//! greeting (one, or with `--reuse` one after another), using the
//! `faas-handler` crate for the control-socket protocol.
//!
//! Build it static so it runs in a `FROM scratch` image:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hello --target x86_64-unknown-linux-gnu`

use std::io::{Read, Write};
use std::net::TcpStream;

const BODY: &str = "Hello from FaaS handler!\n";

fn main() {
    if let Err(e) = faas_handler::serve(serve) {
        eprintln!("hello: {e}");
        std::process::exit(1);
    }
}

fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    read_request_head(&mut conn)?;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    conn.write_all(response.as_bytes())?;
    conn.shutdown(std::net::Shutdown::Write)
}

/// Reads until the blank line that ends the request head (or EOF).
fn read_request_head(conn: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
