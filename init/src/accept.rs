//! `port N`, single use, with nothing of ours on the connection's path:
//! the server's own `accept` returns the client's socket.
//!
//! faas-init starts the server under a seccomp filter that stops its
//! `accept` and `accept4` calls, and connects to `/control.sock` once the
//! server listens on port N (as the relay does). When the connection
//! arrives, the server's accept on a listener of port N is answered with
//! it (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SEND`: the descriptor is the
//! call's result), the client's address written where the server asked
//! for it, and accept4's flags honoured. A server that waits for its
//! listener to be readable first (epoll, nginx, node) is woken by a
//! connection of ours to the listener, made only if no accept is waiting
//! already; it accepts that one later and finds it closed. Every other
//! call goes on as asked (a blocking server's next accept blocks: nothing
//! else comes).
//!
//! faas-init keeps no copy of the connection, so the client sees the end
//! when the server closes it. The container ends once no process in it
//! holds the connection any more, found by looking through /proc.
//!
//! Where the filter cannot be installed, faas-init relays (`port`).

use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::unistd::Pid;

use crate::cpu::OneCpu;
use crate::port;
use crate::unotify::{self, Call, Listener, Stop};

const STOPS: &[Stop] = &[
    Stop::every(libc::SYS_accept),
    Stop::every(libc::SYS_accept4),
];

pub fn serve(port: u16, program: &[OsString]) -> Result<ExitCode, String> {
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    // While faas-init has one thread: the spawn forks.
    let (child, calls) = match Listener::spawn(&mut command, STOPS) {
        Ok(started) => started,
        Err(e) if crate::handed::in_fork_child() => {
            return Err(format!(
                "cannot start {:?} with its accept stopped: {e}",
                program[0]
            ))
        }
        Err(e) => {
            eprintln!(
                "faas-init: cannot start {:?} with its accept stopped ({e}); relaying instead",
                program[0]
            );
            return port::serve(port, program);
        }
    };
    let ended = port::watch(Pid::from_raw(child.id() as i32))?;
    let target = port::wait_listening(port, port::listen_wait(), &ended)?;
    let ours: Vec<String> = port::listeners(port)
        .into_iter()
        .map(|(_, inode)| format!("socket:[{inode}]"))
        .collect();
    let client: TcpStream = crate::handed::receive("a connection")?.into();
    let peer = client
        .peer_addr()
        .map_err(|e| format!("the connection's peer: {e}"))?;
    let socket = format!(
        "socket:[{}]",
        nix::sys::stat::fstat(&client)
            .map_err(|e| format!("fstat of the connection: {e}"))?
            .st_ino
    );
    let mut handed = Some(Handover {
        client: OwnedFd::from(client),
        peer,
        ours,
    });
    let mut nudge: Option<TcpStream> = None;
    loop {
        // An accept already waiting takes the connection; with none, the
        // server may be waiting for its listener to be readable.
        if handed.is_some() && nudge.is_none() && !calls.is_pending() {
            nudge = TcpStream::connect(target).ok();
        }
        // Fails only once nothing holds the filter any more.
        let Ok(call) = calls.recv() else {
            if let Some(h) = &handed {
                crate::handed::unserved(&h.client);
            }
            return Ok(ExitCode::SUCCESS);
        };
        let given = match &handed {
            Some(h) if h.is_ours(&call) => h.give(&calls, &call).map(Some),
            _ => Ok(None),
        };
        match given {
            Ok(Some(pinned)) => {
                handed = None;
                nudge = None;
                watch_connection(socket.clone(), pinned)?;
                continue;
            }
            Ok(None) => {}
            Err(e) if unotify::gone(&e) => continue,
            Err(e) => {
                eprintln!("faas-init: giving the server its connection: {e}");
                return Ok(ExitCode::from(1));
            }
        }
        calls.let_go(&call, "the server's");
    }
}

/// The connection, and which of the server's sockets may accept it.
struct Handover {
    client: OwnedFd,
    peer: SocketAddr,
    /// How /proc/PID/fd names the listeners of port N.
    ours: Vec<String>,
}

impl Handover {
    fn is_ours(&self, call: &Call) -> bool {
        std::fs::read_link(format!("/proc/{}/fd/{}", call.pid, call.args[0]))
            .is_ok_and(|target| self.ours.iter().any(|o| target.as_os_str() == o.as_str()))
    }

    /// Ends the accept with the connection as its result, on this CPU
    /// (see `cpu`): the server's thread that accepted stays on it, with
    /// what it starts, until the watch gives them every CPU back.
    fn give(&self, calls: &Listener, call: &Call) -> std::io::Result<Option<OneCpu>> {
        let flags = if call.nr == libc::SYS_accept4 {
            call.args[3] as i32
        } else {
            0
        };
        let mut mode = OFlag::from_bits_truncate(fcntl(&self.client, FcntlArg::F_GETFL)?);
        mode.set(OFlag::O_NONBLOCK, flags & libc::SOCK_NONBLOCK != 0);
        fcntl(&self.client, FcntlArg::F_SETFL(mode))?;
        if !self.write_peer(call.pid, call.args[1], call.args[2]) {
            eprintln!("faas-init: cannot write the client's address for the server's accept");
        }
        // What was read and written is the caller's only if its call
        // still waits; if not, it comes again.
        if !calls.valid(call.id) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        let pinned = OneCpu::pin(Pid::from_raw(call.pid as i32));
        match calls.give(
            call.id,
            self.client.as_fd(),
            flags & libc::SOCK_CLOEXEC != 0,
        ) {
            Ok(_) => Ok(pinned),
            Err(e) => {
                if let Some(cpu) = pinned {
                    cpu.release();
                }
                Err(e)
            }
        }
    }

    /// Writes the client's address where the accept asked for it (none
    /// asked: nothing to do), as the kernel would: truncated to the
    /// caller's length, the full length written back.
    fn write_peer(&self, pid: u32, addr: u64, len_at: u64) -> bool {
        if addr == 0 {
            return true;
        }
        let Ok(mem) = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
        else {
            return false;
        };
        let mut len = [0u8; 4];
        if mem.read_exact_at(&mut len, len_at).is_err() {
            return false;
        }
        let room = u32::from_ne_bytes(len) as usize;
        let raw = sockaddr_bytes(&self.peer);
        let full = (raw.len() as u32).to_ne_bytes();
        mem.write_all_at(&raw[..raw.len().min(room)], addr).is_ok()
            && mem.write_all_at(&full, len_at).is_ok()
    }
}

/// `struct sockaddr_in` / `sockaddr_in6` as the kernel lays them out.
fn sockaddr_bytes(addr: &SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&[0; 8]);
            b
        }
        SocketAddr::V6(a) => {
            let mut b = Vec::with_capacity(28);
            b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.flowinfo().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

/// Ends the container once no process in it holds `socket` (how
/// /proc/PID/fd names the connection): the server is done with it. Not on
/// the request's path: the first look comes 2 ms after the hand-over, when
/// a small answer has long gone out (and gives every CPU back), looks
/// after that thin out to 50 ms while the server holds on, and "not held"
/// must be seen twice. A look costs tens of microseconds (the container's
/// few processes); ending early matters more: the pool's refill starts
/// only then, and a late one runs into the next request (measured: first
/// look at 10 ms, p90 1.26–1.29 ms; at 2 ms, 1.07–1.15 ms).
fn watch_connection(socket: String, pinned: Option<OneCpu>) -> Result<(), String> {
    std::thread::Builder::new()
        .spawn(move || {
            let mut pause = Duration::from_millis(2);
            let mut free = 0;
            let mut pinned = pinned;
            while free < 2 {
                std::thread::sleep(pause);
                if let Some(cpu) = pinned.take() {
                    cpu.release_all(&processes());
                }
                free = if held(&socket) { 0 } else { free + 1 };
                pause = if free > 0 {
                    Duration::from_millis(1)
                } else {
                    (pause * 2).min(Duration::from_millis(50))
                };
            }
            std::process::exit(0);
        })
        .map(drop)
        .map_err(|e| format!("starting the connection watch: {e}"))
}

/// Whether a process in the container holds `socket`. The list of
/// processes is read before and after their descriptors: a holder that
/// forked and closed its copy meanwhile left a new process to look at.
fn held(socket: &str) -> bool {
    loop {
        let before = processes();
        let found = before.iter().any(|pid| holds(*pid, socket));
        if found || processes() == before {
            return found;
        }
    }
}

fn processes() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|p| p.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

fn holds(pid: u32, socket: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == socket))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_laid_out_as_the_kernel_does() {
        let v4 = sockaddr_bytes(&"192.0.2.7:8080".parse().expect("addr"));
        assert_eq!(v4.len(), std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(&v4[2..8], &[0x1f, 0x90, 192, 0, 2, 7]);
        let v6 = sockaddr_bytes(&"[fd00:faa5::1]:443".parse().expect("addr"));
        assert_eq!(v6.len(), std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(&v6[2..4], &[0x01, 0xbb]);
        assert_eq!(&v6[8..10], &[0xfd, 0x00]);
    }
}
