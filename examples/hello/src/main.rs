//! Example faasd handler: receives one accepted TCP connection over
//! `/control.sock` (SCM_RIGHTS), answers it with a greeting, and exits.
//!
//! Build it static so it runs in a `FROM scratch` image:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hello --target x86_64-unknown-linux-gnu`

use std::io::{IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

const BODY: &str = "Hello from FaaS handler!\n";

fn main() {
    let reuse = std::env::var_os("FAAS_REUSE").is_some();
    loop {
        let conn = match receive_connection() {
            Ok(Some(conn)) => conn,
            Ok(None) => return,
            // After the first connection a refused reconnect just means
            // faasd has no more work for us.
            Err(_) if reuse => return,
            Err(e) => {
                eprintln!("hello: {e}");
                std::process::exit(1);
            }
        };
        if let Err(e) = serve(conn) {
            eprintln!("hello: serving connection: {e}");
        }
        if !reuse {
            return;
        }
    }
}

/// Connects to faasd and waits for one connection; `None` when faasd has
/// nothing more for us (it closed the control socket).
fn receive_connection() -> std::io::Result<Option<TcpStream>> {
    let control = UnixStream::connect("/control.sock")?;
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                return Ok(Some(TcpStream::from(owned)));
            }
        }
    }
    Ok(None)
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
