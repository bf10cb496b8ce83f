//! What faasd hands faas-init: taking it (one descriptor on
//! `/control.sock`, or the connection a `--fork` child was cloned with),
//! and answering a connection for a program that ended before it took it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::stats::Stats;

use faas_handler::Control;

/// Answers a connection the program never took (faasd let go of it once
/// faas-init had it): the client hears why instead of a bare close.
pub fn unserved(conn: &OwnedFd) {
    let name = std::env::var("FAAS_FUNCTION").unwrap_or_else(|_| "NAME".into());
    let body =
        format!("the function's program ended before taking the connection; faas logs {name}\n");
    let answer = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = nix::unistd::write(conn, answer.as_bytes());
    let _ = nix::sys::socket::shutdown(conn.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    eprintln!("faas-init: the program ended before taking its connection: answered 502");
    drain(conn);
}

/// Reads what the client sent, for a while: a close with its request
/// unread would be a reset, which may reach the client before our answer.
fn drain(conn: &OwnedFd) {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let step = nix::sys::time::TimeVal::new(0, 100_000);
    if setsockopt(conn, ReceiveTimeout, &step).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while std::time::Instant::now() < until {
        match nix::unistd::read(conn, &mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The connection a `--fork` child serves, there before anything asks.
static PRESET: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Makes `conn` what the next `receive` returns: a `--fork` child has its
/// connection from the zygote, and must never connect to faasd itself.
pub fn preset(conn: OwnedFd) {
    *PRESET.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
}

/// Where a prepared `--fork` child's connection comes from: the zygote,
/// over this channel (`child::next`), counted in its counters.
static FROM_ZYGOTE: Mutex<Option<(UnixStream, Option<&'static Stats>)>> = Mutex::new(None);

/// Makes `receive` wait for the zygote's connection on `channel`.
pub fn from_zygote(channel: UnixStream, stats: Option<&'static Stats>) {
    *FROM_ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()) = Some((channel, stats));
}

/// Set in a `--fork` child right after its clone: the code it shares
/// with faas-init elsewhere then takes its connection from the zygote.
static FORK_CHILD: AtomicBool = AtomicBool::new(false);

pub fn mark_fork_child() {
    FORK_CHILD.store(true, Ordering::Relaxed);
}

/// Whether this process is a `--fork` child.
pub fn in_fork_child() -> bool {
    FORK_CHILD.load(Ordering::Relaxed)
}

/// A fork child's connection: preset, or the zygote's when it comes. A
/// zygote that lets the child go (no more connections) ends it here,
/// quietly, and with it the program started ahead.
fn from_the_zygote(what: &str) -> Result<OwnedFd, String> {
    if let Some(conn) = PRESET.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Ok(conn);
    }
    let taken = FROM_ZYGOTE.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((mut channel, stats)) = taken else {
        return Err(format!("a fork child asked twice for {what}"));
    };
    match crate::channel::next(&mut channel)? {
        crate::channel::Handed::Connection(conn, received) => {
            crate::channel::record(stats, received);
            Ok(conn)
        }
        crate::channel::Handed::Nothing => std::process::exit(0),
        crate::channel::Handed::ToForkServer => Err(format!("no {what}: a fork server serves it")),
    }
}

/// Connects to faasd and waits for one descriptor (a `--fork` child: its
/// connection).
pub fn receive(what: &str) -> Result<OwnedFd, String> {
    if in_fork_child() {
        return from_the_zygote(what);
    }
    let mut control =
        Control::connect().map_err(|e| format!("connecting to /control.sock: {e}"))?;
    control
        .next_fd()
        .map_err(|e| format!("receiving {what}: {e}"))?
        .ok_or_else(|| format!("faasd closed the control socket before sending {what}"))
}
