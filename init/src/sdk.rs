//! `--fork` for a handler that does its expensive start once: one built
//! on the SDK's `fork_serve` (Rust `faas_handler::fork::fork_serve`,
//! Python `examples/python/faas_fork.py`).
//!
//! A zygote of a program of faasd's protocol starts the program once,
//! beside itself, with `FAAS_FORK_SERVER` naming a socket to it; the
//! container's `/control.sock` is covered first (in the zygote's own
//! mount namespace) by a socket of the zygote's. A program built on
//! `fork_serve` runs its start-up and writes a ready byte on that socket:
//! it is then the fork server, and the zygote hands it each connection
//! together with a prepared child's namespaces (a pidfd of the child, the
//! holder) and the write end of a pipe the holder waits on. The server
//! forks; its child enters the holder's namespaces, forks once more into
//! its pid namespace, seals itself with what `FAAS_FORK_SEAL` and
//! `FAAS_FORK_CAPS` say (the holder's own seal: the same seccomp program
//! and capabilities) and serves the connection; the holder ends when the
//! last of them lets go of the pipe, and with it all they started. A
//! program that connects to `/control.sock` instead is an ordinary
//! handler: it is stopped, and every connection gets a child that starts
//! the program afresh.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::time::Instant;

use faas_protocol::{fork as vars, layout};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::child::Plan;
use crate::seal;

/// The program, serving forks.
pub struct Server {
    channel: UnixStream,
    process: Child,
}

/// Starts `program` beside the zygote and finds out what it is: the
/// fork server, or `None` (an ordinary handler, stopped again; or one
/// that said nothing in time, which is said).
pub fn start(program: &[OsString], plan: &Plan) -> Result<Option<Server>, String> {
    let listener = cover_control_socket()?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("a socket pair: {e}"))?;
    // The program inherits its end.
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| format!("fcntl: {e}"))?;
    let mut command = crate::caps::fork_server_command(program);
    command
        .env(vars::SERVER, theirs.as_raw_fd().to_string())
        .env(vars::SEAL, hex(&seal::program_bytes()))
        .env(vars::CAPS, plan.caps_text())
        .env(vars::LAST_CAP, plan.last_cap().to_string());
    let mut process = command
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", program[0]))?;
    drop(theirs);
    let deadline = Instant::now() + crate::port::listen_wait();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "faas-init: {:?} neither connected to /control.sock nor said it serves forks in time: \
                 every connection starts it afresh",
                program[0]
            );
            stop(&mut process);
            return Ok(None);
        }
        let mut fds = [
            PollFd::new(ours.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let wait =
            PollTimeout::try_from(left.as_millis().min(100) as i32).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, wait).is_err() {
            continue;
        }
        let said = fds[0].revents().is_some_and(|r| !r.is_empty());
        let connected = fds[1].revents().is_some_and(|r| !r.is_empty());
        if said {
            let mut byte = [0u8; 1];
            return match (&ours).read(&mut byte) {
                Ok(1) => Ok(Some(Server {
                    channel: ours,
                    process,
                })),
                _ => {
                    eprintln!(
                        "faas-init: {:?} closed its fork-server socket: every connection starts it afresh",
                        program[0]
                    );
                    stop(&mut process);
                    Ok(None)
                }
            };
        }
        if connected {
            stop(&mut process);
            return Ok(None);
        }
        if let Ok(Some(status)) = process.try_wait() {
            eprintln!(
                "faas-init: {:?} ended ({status}) before it served: every connection starts it afresh",
                program[0]
            );
            return Ok(None);
        }
    }
}

impl Server {
    /// Hands the server `conn` with the holder `holder`'s namespaces and
    /// the write end of its pipe: when it was received, then the three
    /// descriptors.
    pub fn hand(
        &self,
        conn: &OwnedFd,
        holder: Pid,
        done: &OwnedFd,
        received: u64,
    ) -> std::io::Result<()> {
        let pidfd = crate::seal::pidfd(holder)?;
        (&self.channel).write_all(&received.to_le_bytes())?;
        faas_protocol::send_fds(
            self.channel.as_fd(),
            &[conn.as_fd(), pidfd.as_fd(), done.as_fd()],
        )
    }

    /// Whether the server is `pid` (reaped by the zygote: it has ended).
    pub fn is(&self, pid: Pid) -> bool {
        self.process.id() == pid.as_raw() as u32
    }
}

/// Puts a socket of the zygote's over `/control.sock` in its own mount
/// namespace (the zygote is connected to faasd's already): the program,
/// and every child, find this one.
fn cover_control_socket() -> Result<UnixListener, String> {
    let dir = std::path::Path::new("/tmp/.faas-zygote");
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let path = dir.join("control.sock");
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    mount(
        Some(&path),
        layout::CONTROL_SOCKET,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("covering {}: {e}", layout::CONTROL_SOCKET))?;
    Ok(listener)
}

fn stop(process: &mut Child) {
    let _ = kill(Pid::from_raw(process.id() as i32), Signal::SIGKILL);
    let _ = process.wait();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
