//! Test handler for faasd's integration tests. `probe MODE` speaks the
//! handler protocol and behaves as MODE says:
//!
//! - `hello`: answer "probe ok"
//! - `inspect`: answer `key=value` lines describing the sandbox it runs in
//! - `crash`: exit 3 before connecting to `/control.sock`
//! - `noconnect`: never connect
//! - `hang`: take the connection, never answer
//! - `close`: take the connection, close it without answering
//! - `print`: print a line to stdout and stderr, then answer like `hello`
//! - `slow`: answer like `hello` after PROBE_SLEEP_MS (default 300) ms
//!
//! With FAAS_REUSE set it connects again after each connection; `inspect`
//! then reports the same `instance` and a growing `served`.

use std::io::{IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "hello".into());
    let reuse = std::env::var_os("FAAS_REUSE").is_some();
    match mode.as_str() {
        "crash" => std::process::exit(3),
        "noconnect" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
    let instance = format!("{}-{}", std::process::id(), nanos());
    let mut served = 0u32;
    loop {
        let mut conn = match receive_connection() {
            Ok(Some(conn)) => conn,
            // faasd closed the control socket or refused us: no more work.
            Ok(None) | Err(_) => return,
        };
        served += 1;
        match mode.as_str() {
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "close" => return,
            "inspect" => {
                let _ = read_request_head(&mut conn);
                answer(
                    &mut conn,
                    &format!("instance={instance}\nserved={served}\n{}", inspect()),
                );
            }
            "slow" => {
                let _ = read_request_head(&mut conn);
                let ms = std::env::var("PROBE_SLEEP_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(300);
                std::thread::sleep(Duration::from_millis(ms));
                answer(&mut conn, "probe ok\n");
            }
            "print" => {
                println!("probe stdout line pid={}", std::process::id());
                eprintln!("probe stderr line");
                let _ = read_request_head(&mut conn);
                answer(&mut conn, "probe ok\n");
            }
            _ => {
                let _ = read_request_head(&mut conn);
                answer(&mut conn, "probe ok\n");
            }
        }
        if !reuse {
            return;
        }
    }
}

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

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn inspect() -> String {
    let mut out = String::new();
    out += &format!("pid={}\n", std::process::id());
    out += &format!("uid={}\n", nix::unistd::getuid());
    out += &format!("gid={}\n", nix::unistd::getgid());
    let cwd = std::env::current_dir().map(|p| p.display().to_string());
    out += &format!("cwd={}\n", cwd.unwrap_or_else(|e| format!("error {e}")));
    out += &format!("rootfs_write={}\n", try_write("/probe-write"));
    out += &format!("tmp_write={}\n", try_write("/tmp/probe-write"));
    out += &format!("egress={}\n", try_egress());
    for name in list_var("PROBE_ENV") {
        out += &format!(
            "env.{name}={}\n",
            std::env::var(&name).unwrap_or_else(|_| "<unset>".into())
        );
    }
    for path in list_var("PROBE_FILES") {
        let content = std::fs::read_to_string(&path)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "<missing>".into());
        out += &format!("file.{path}={content}\n");
    }
    out
}

fn list_var(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn try_write(path: &str) -> String {
    match std::fs::write(path, b"x") {
        Ok(()) => "ok".into(),
        Err(e) => format!("denied({})", e.raw_os_error().unwrap_or(0)),
    }
}

/// Tries the address in PROBE_EGRESS (a loopback listener the test runs on the host).
fn try_egress() -> String {
    let Ok(target) = std::env::var("PROBE_EGRESS") else {
        return "untested".into();
    };
    let Ok(addr) = target.parse::<SocketAddr>() else {
        return "bad-address".into();
    };
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => "connected".into(),
        Err(e) => format!("failed({})", e.raw_os_error().unwrap_or(0)),
    }
}

fn answer(conn: &mut TcpStream, body: &str) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes());
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

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
