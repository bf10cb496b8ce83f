//! A `--fork` child of a handler that speaks faasd's protocol itself: the
//! child plays faasd's part. It starts the program ahead of the
//! connection; its own `/control.sock` (`child` binds it) hands the
//! program the one connection once it comes, as to a single-use handler;
//! then the child, its pid namespace's init, reaps until the program
//! ends and ends with its status.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub fn serve(program: &[OsString], listener: UnixListener) -> Result<ExitCode, String> {
    let child = crate::caps::command(program)
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", program[0]))?;
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + crate::port::listen_wait() + Duration::from_millis(250);
    let handler = loop {
        if let Some(status) = ended(pid) {
            crate::handed::unserved(&crate::handed::receive("a connection")?);
            return Ok(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            crate::handed::unserved(&crate::handed::receive("a connection")?);
            return Err(format!(
                "{:?} did not connect to /control.sock in time; a server? deploy with --container-port N",
                program[0]
            ));
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let wait =
            PollTimeout::try_from(left.as_millis().min(50) as i32).unwrap_or(PollTimeout::ZERO);
        if let Ok(n) = poll(&mut fds, wait) {
            if n > 0 {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) => return Err(format!("accepting the handler: {e}")),
                }
            }
        }
    };
    drop(listener);
    // Started and connected ahead, as a pool container's handler: now the
    // connection.
    let conn = crate::handed::receive("a connection")?;
    faas_protocol::send_fds(handler.as_fd(), &[conn.as_fd()])
        .map_err(|e| format!("handing the connection over: {e}"))?;
    drop(conn);
    // The handler may wait for more on its control connection: it gets
    // none once it closes its connection or ends.
    let status = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => break exit_code(code),
            Ok(WaitStatus::Signaled(p, _, _)) if p == pid => break ExitCode::from(1),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for the handler: {e}")),
        }
    };
    drop(handler);
    Ok(status)
}

/// The program's status, if it has ended (reaping whatever else ended).
fn ended(program: Pid) -> Option<ExitCode> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == program => return Some(exit_code(code)),
            Ok(WaitStatus::Signaled(p, _, _)) if p == program => return Some(ExitCode::from(1)),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
