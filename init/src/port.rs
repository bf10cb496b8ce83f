//! `port N`: an unmodified server that binds port N inside its own
//! network namespace. faas-init starts it (and stays the container's first
//! process, reaping what it leaves), connects to `/control.sock` only once
//! something listens on port N — so faasd never hands a connection to a
//! server that is not ready — and relays each connection it receives to
//! the server over the container's loopback.
//!
//! One-shot (where `accept` cannot stop the server's accept): one
//! connection, then faas-init exits and the container ends with it.
//! Reuse (`--warm 0`, or where `bind` cannot stop the server's bind): it
//! asks for the next connection as soon as one is handed to the relay
//! (`relay`), so one container serves many at once (up to `MAX_RELAYS`).
//! The server start, the wait for its listener and the reaper serve
//! `accept` and `bind` too.

use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use faas_handler::Control;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::relay::Relay;

/// How long the server may take to listen when faasd does not say
/// (FAAS_CONNECT_TIMEOUT, ms): a little less than faasd's own wait, so the
/// client hears why (502) rather than a timeout.
const DEFAULT_LISTEN_WAIT: Duration = Duration::from_secs(5);
const LISTEN_WAIT_MARGIN: Duration = Duration::from_millis(250);
/// Relays at once in a reuse container before it stops asking for more
/// (faasd then starts another container). Well below the container's
/// pids limit (64), which a server forking per connection shares.
const MAX_RELAYS: usize = 32;

pub fn serve(port: u16, program: &[OsString]) -> Result<ExitCode, String> {
    let ended = start(program)?;
    let target = wait_listening(port, listen_wait(), &ended)?;
    let mut control =
        Control::connect().map_err(|e| format!("connecting to /control.sock: {e}"))?;
    let relay =
        Relay::new(target, listen_wait()).map_err(|e| format!("setting up the relay: {e}"))?;
    if !faas_handler::reuse_enabled() {
        let Some(client) = next(&mut control)? else {
            return Ok(ExitCode::SUCCESS);
        };
        drop(control);
        return Ok(match relay.one(client) {
            Ok(sent) if sent > 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("faas-init: relaying to the server on port {port}: {e}");
                ExitCode::from(1)
            }
        });
    }
    serve_many(relay, || next(&mut control))
}

/// Reuse where the server's `bind` cannot be given the function's
/// listener (see `bind`): accepts on `listener` and relays each
/// connection to the server.
pub fn relay_accepted(
    port: u16,
    program: &[OsString],
    listener: TcpListener,
) -> Result<ExitCode, String> {
    let ended = start(program)?;
    let target = wait_listening(port, listen_wait(), &ended)?;
    let relay =
        Relay::new(target, listen_wait()).map_err(|e| format!("setting up the relay: {e}"))?;
    serve_many(relay, || loop {
        match listener.accept() {
            Ok((client, _)) => return Ok(Some(client)),
            // The client gave up before we got to it; the next one counts.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("accepting a connection: {e}")),
        }
    })
}

/// Starts the server, and as the container's first process reaps it and
/// every orphan in it (see `reap`); returns whether it has ended.
pub fn start(program: &[OsString]) -> Result<Arc<Ended>, String> {
    let server = crate::caps::command(program)
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", program[0]))?;
    watch(Pid::from_raw(server.id() as i32))
}

/// Reaps `server` and every orphan in the container (see `reap`).
pub fn watch(server: Pid) -> Result<Arc<Ended>, String> {
    let ended = Arc::new(Ended::default());
    {
        let ended = Arc::clone(&ended);
        std::thread::Builder::new()
            .spawn(move || reap(server, &ended))
            .map_err(|e| format!("starting the reaper thread: {e}"))?;
    }
    Ok(ended)
}

/// Reuse: asks `next` for the next connection while fewer than
/// `MAX_RELAYS` are in flight, and hands each to the relay thread, until
/// `next` has no more.
fn serve_many(
    relay: Relay,
    mut next: impl FnMut() -> Result<Option<TcpStream>, String>,
) -> Result<ExitCode, String> {
    let active = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (to_relay, incoming) = mpsc::channel();
    let (wake, woken) = UnixStream::pair().map_err(|e| format!("creating a socket pair: {e}"))?;
    let relaying = {
        let active = Arc::clone(&active);
        std::thread::Builder::new()
            .spawn(move || {
                relay.run(incoming, woken, || {
                    let (count, cv) = &*active;
                    *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                    cv.notify_one();
                })
            })
            .map_err(|e| format!("starting the relay thread: {e}"))?
    };
    loop {
        {
            let (count, cv) = &*active;
            let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
            while *n >= MAX_RELAYS {
                n = cv.wait(n).unwrap_or_else(|p| p.into_inner());
            }
            *n += 1;
        }
        let Some(client) = next()? else {
            break;
        };
        if to_relay.send(client).is_err() || (&wake).write_all(&[1]).is_err() {
            return Err("the relay thread has stopped".into());
        }
    }
    drop(to_relay);
    let _ = (&wake).write_all(&[1]);
    match relaying.join() {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(format!("relaying: {e}")),
        Err(_) => Err("the relay thread panicked".into()),
    }
}

fn next(control: &mut Control) -> Result<Option<TcpStream>, String> {
    control
        .next_connection()
        .map_err(|e| format!("receiving a connection: {e}"))
}

pub fn listen_wait() -> Duration {
    std::env::var("FAAS_CONNECT_TIMEOUT")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
        .map(|d| d.saturating_sub(LISTEN_WAIT_MARGIN))
        .unwrap_or(DEFAULT_LISTEN_WAIT)
}

/// Set by the reaper when the server has ended.
#[derive(Default)]
pub struct Ended(AtomicBool);

impl Ended {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// As the container's first process we inherit every orphan in it: reap
/// them all. When the server itself ends, so does the container (one-shot
/// or reuse alike): nothing would answer any more.
fn reap(server: Pid, ended: &Ended) {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => {
                finish(ended, format!("exited with code {code}"));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => {
                finish(ended, format!("was killed by {sig}"));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn finish(ended: &Ended, how: String) {
    ended.0.store(true, Ordering::Release);
    // Give a relay in flight a moment to pass on the server's last words.
    std::thread::sleep(Duration::from_millis(50));
    eprintln!("faas-init: the server {how}");
    std::process::exit(1);
}

/// Waits until something listens on TCP port `port` in this network
/// namespace (asked of sock_diag, /proc/net/tcp where that is refused:
/// the server sees no probe connection), and
/// returns where to connect.
pub fn wait_listening(port: u16, wait: Duration, ended: &Ended) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + wait;
    let started = Instant::now();
    loop {
        if let Some(addr) = listening(port) {
            return Ok(addr);
        }
        if ended.is_set() {
            return Err(format!(
                "the server ended before it listened on port {port}"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing listened on port {port} within {:.1}s",
                wait.as_secs_f64()
            ));
        }
        // Often within milliseconds; poll fast at first.
        let pause = if started.elapsed() < Duration::from_millis(50) {
            1
        } else {
            10
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

fn listening(port: u16) -> Option<SocketAddr> {
    listeners(port).first().map(|&(addr, _)| addr)
}

/// Every LISTEN socket on TCP `port` in this network namespace: where to
/// reach it, and its inode (how /proc/PID/fd names it). Asked of
/// sock_diag (`listening`); /proc/net/tcp where that is refused.
pub fn listeners(port: u16) -> Vec<(SocketAddr, u64)> {
    if let Some(found) = crate::listening::listeners(port) {
        return found;
    }
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(table) {
            found.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| listener_in(l, port, v6)),
            );
        }
    }
    found
}

/// The address to reach a LISTEN socket on `port`, and its inode, from
/// one line of /proc/net/tcp{,6} (a wildcard address becomes loopback).
fn listener_in(line: &str, port: u16, v6: bool) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state) = (fields.get(1)?, fields.get(3)?);
    if *state != "0A" {
        return None;
    }
    let inode = fields.get(9)?.parse().ok()?;
    let (addr, p) = local.split_once(':')?;
    if u16::from_str_radix(p, 16).ok()? != port {
        return None;
    }
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(hex_words(addr)?))
    } else {
        let raw = u32::from_str_radix(addr, 16).ok()?;
        // The kernel prints the address as a host-order (little-endian) word.
        IpAddr::V4(Ipv4Addr::from(raw.to_le_bytes()))
    };
    Some((
        crate::listening::reachable(SocketAddr::new(ip, port)),
        inode,
    ))
}

/// An IPv6 address as /proc prints it: four host-order 32-bit words.
fn hex_words(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for w in 0..4 {
        let word = u32::from_str_radix(&s[w * 8..w * 8 + 8], 16).ok()?;
        out[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_in_proc_net_tcp() {
        let v4 = "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            listener_in(v4, 8080, false),
            Some(("127.0.0.1:8080".parse().expect("addr"), 12345))
        );
        assert_eq!(listener_in(v4, 80, false), None);
        let lo = "   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            listener_in(lo, 8080, false).map(|(a, _)| a),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        let established = "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(listener_in(established, 8080, false), None);
        let v6 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            listener_in(v6, 8080, true).map(|(a, _)| a),
            Some("[::1]:8080".parse().expect("addr"))
        );
        let v6lo = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            listener_in(v6lo, 8080, true).map(|(a, _)| a),
            Some("[::1]:8080".parse().expect("addr"))
        );
    }
}
