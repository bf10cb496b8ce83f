//! `bind N`: a reused server on a container port, with nothing of ours on
//! its connections' path. faasd hands faas-init the function's listening
//! socket (as for socket activation); faas-init starts the server under a
//! seccomp filter that stops its `bind` and `listen` calls. When the
//! server binds port N (at any address), faas-init puts the function's
//! listener in place of the server's socket and says the bind succeeded;
//! the server's `listen` on it succeeds without touching the backlog
//! faasd chose. From then on the server accepts the function's
//! connections itself, like a socket-activated one. Any other `bind` or
//! `listen` runs as asked.
//!
//! Where the kernel or the sandbox refuses the filter, faas-init accepts
//! on the listener itself and relays each connection to the server
//! (`port`), and says so in the log.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;

use crate::port::{self, Ended};
use crate::unotify::{self, Call, Listener, Stop};

/// `O_CLOEXEC` and `O_NONBLOCK` as /proc/PID/fdinfo prints them (octal).
const FDINFO_CLOEXEC: u32 = 0o2000000;
const FDINFO_NONBLOCK: u32 = 0o4000;

pub fn serve(port: u16, program: &[OsString], listener: OwnedFd) -> Result<ExitCode, String> {
    let calls =
        match Listener::install(&[Stop::every(libc::SYS_bind), Stop::every(libc::SYS_listen)]) {
            Ok(calls) => calls,
            Err(e) => {
                eprintln!(
                "faas-init: cannot stop the server's bind ({e}); accepting and relaying instead"
            );
                return port::relay_accepted(port, program, TcpListener::from(listener));
            }
        };
    let inode = nix::sys::stat::fstat(&listener)
        .map_err(|e| format!("fstat of the listener: {e}"))?
        .st_ino;
    let ended = port::start(program)?;
    let bound = Arc::new(AtomicBool::new(false));
    watch_bind(port, port::listen_wait(), Arc::clone(&bound), ended)?;
    let ours = Ours {
        port,
        listener,
        socket: format!("socket:[{inode}]"),
    };
    loop {
        // Fails only once nothing holds the filter any more: the server
        // and all it started have ended, and the reaper ends us.
        let call = calls
            .recv()
            .map_err(|e| format!("waiting for the server's calls: {e}"))?;
        match ours.answer(&calls, &call) {
            Ok(true) => bound.store(true, Ordering::Release),
            Ok(false) => {}
            // The caller was interrupted or has ended meanwhile.
            Err(e) if unotify::gone(&e) => {}
            Err(e) => eprintln!("faas-init: answering the server's call: {e}"),
        }
    }
}

/// The function's listener and what the server's calls are compared with.
struct Ours {
    port: u16,
    listener: OwnedFd,
    /// How /proc/PID/fd names the listener.
    socket: String,
}

impl Ours {
    /// Answers one stopped call; true when it bound our port.
    fn answer(&self, calls: &Listener, call: &Call) -> std::io::Result<bool> {
        let fd = call.args[0];
        if call.nr == libc::SYS_listen {
            return if self.is_ours(call.pid, fd) {
                calls.answer(call.id, Ok(0)).map(|()| false)
            } else {
                calls.proceed(call.id).map(|()| false)
            };
        }
        let asked = requested_port(call.pid, call.args[1], call.args[2]);
        // What was read is the caller's only if its call still waits.
        if asked != Some(self.port) || !calls.valid(call.id) {
            return calls.proceed(call.id).map(|()| false);
        }
        let Some(flags) = fd_flags(call.pid, fd) else {
            return calls.answer(call.id, Err(libc::EBADF)).map(|()| false);
        };
        // The server set up its socket blocking or not; the listener it
        // gets must behave the same (every server of the function runs
        // the same program, so they agree).
        let nonblocking = flags & FDINFO_NONBLOCK != 0;
        let mut mode = OFlag::from_bits_truncate(fcntl(&self.listener, FcntlArg::F_GETFL)?);
        mode.set(OFlag::O_NONBLOCK, nonblocking);
        fcntl(&self.listener, FcntlArg::F_SETFL(mode))?;
        calls.place(
            call.id,
            self.listener.as_fd(),
            fd,
            flags & FDINFO_CLOEXEC != 0,
        )?;
        calls.answer(call.id, Ok(0))?;
        Ok(true)
    }

    fn is_ours(&self, pid: u32, fd: u64) -> bool {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|target| target.as_os_str() == self.socket.as_str())
    }
}

/// The port in the `sockaddr` a `bind` was given (IPv4 or IPv6), read
/// from the caller's memory.
fn requested_port(pid: u32, addr: u64, len: u64) -> Option<u16> {
    let mut sockaddr = [0u8; 4];
    if len < sockaddr.len() as u64 {
        return None;
    }
    let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
    mem.read_exact_at(&mut sockaddr, addr).ok()?;
    let family = i32::from(u16::from_ne_bytes([sockaddr[0], sockaddr[1]]));
    (family == libc::AF_INET || family == libc::AF_INET6)
        .then(|| u16::from_be_bytes([sockaddr[2], sockaddr[3]]))
}

/// The `flags:` of the caller's descriptor `fd` (octal in /proc).
fn fd_flags(pid: u32, fd: u64) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(flags.trim(), 8).ok()
}

/// A server that has not bound its port within `wait` never will: the
/// container ends with the reason in the log (and faasd starts another).
fn watch_bind(
    port: u16,
    wait: Duration,
    bound: Arc<AtomicBool>,
    ended: Arc<Ended>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .spawn(move || {
            std::thread::sleep(wait);
            if !bound.load(Ordering::Acquire) && !ended.is_set() {
                eprintln!(
                    "faas-init: nothing bound port {port} within {:.1}s",
                    wait.as_secs_f64()
                );
                std::process::exit(1);
            }
        })
        .map(drop)
        .map_err(|e| format!("starting the bind watch: {e}"))
}
