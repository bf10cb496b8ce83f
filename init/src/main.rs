//! `faas-init`: the first process of a faasd container whose image does not
//! speak faasd's control-socket protocol. faasd bind-mounts it read-only at
//! `/.faas-init` and runs it as the image's user, with the image's
//! environment and working directory; it speaks the protocol on the
//! image's behalf, then (mostly) becomes the image's program:
//!
//! ```text
//! /.faas-init stdio -- PROGRAM ARGS...      the connection is stdin and stdout (the
//!                                           program starts ahead of it, see `stdio`)
//! /.faas-init listen -- PROGRAM ARGS...     a listening socket is fd 3 (systemd's
//!                                           LISTEN_FDS=1, LISTEN_PID, LISTEN_FDNAMES)
//! /.faas-init port N -- PROGRAM ARGS...     PROGRAM is a server binding port N inside
//!                                           the container; single use: its accept gets
//!                                           the connection (see `accept`); reuse with
//!                                           no warm pool: relayed to it (see `port`)
//! /.faas-init bind N -- PROGRAM ARGS...     the same server, reused: its bind of port N
//!                                           gets the function's listening socket, and
//!                                           it accepts by itself (see `bind`)
//! ```
//!
//! A pool container waits here (connected to `/control.sock`), so per
//! connection only the image's program starts (or, for `stdio`, only
//! goes on). Whatever goes wrong before
//! that is said on stderr (the function's log) and ends the container
//! with a failure status, which faasd answers with 502.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use exec::exec;
use handed::receive;

mod accept;
mod bind;
mod caps;
mod cpu;
mod exec;
mod flow;
mod handed;
mod listening;
mod port;
mod relay;
mod stdio;
mod unotify;

/// How `faas-init` was asked to run the program.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Stdio,
    Listen,
    Port(u16),
    Bind(u16),
}

fn main() -> ExitCode {
    // The program runs as our user, often as our child: without this it
    // could open /proc/1/mem and write into us. Our own /proc entries
    // then belong to the container's root; the program's exec makes it
    // dumpable again, as any program is.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        return fail(&format!("prctl(PR_SET_DUMPABLE, 0): {e}"));
    }
    caps::take();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (mode, program) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => return fail(&e),
    };
    let result = match mode {
        Mode::Stdio => stdio::serve(&program),
        Mode::Listen => listen(&program),
        Mode::Port(port) if !faas_handler::reuse_enabled() => accept::serve(port, &program),
        Mode::Port(port) => port::serve(port, &program),
        Mode::Bind(port) => receive("the listening socket")
            .and_then(|listener| bind::serve(port, &program, listener)),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("faas-init: {message}");
    ExitCode::from(1)
}

/// `MODE [N] -- PROGRAM ARGS...`
fn parse(args: &[OsString]) -> Result<(Mode, Vec<OsString>), String> {
    let dashes = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: faas-init stdio|listen|port N|bind N -- PROGRAM [ARGS...]")?;
    let (head, program) = (&args[..dashes], &args[dashes + 1..]);
    if program.is_empty() {
        return Err("the image names no program to run (no Entrypoint or Cmd)".into());
    }
    let mode = match head {
        [m] if m == "stdio" => Mode::Stdio,
        [m] if m == "listen" => Mode::Listen,
        [m, n] if m == "port" => Mode::Port(port_number(n)?),
        [m, n] if m == "bind" => Mode::Bind(port_number(n)?),
        _ => return Err(format!("unknown mode {head:?}")),
    };
    Ok((mode, program.to_vec()))
}

fn port_number(n: &OsString) -> Result<u16, String> {
    n.to_str()
        .and_then(|n| n.parse::<u16>().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("invalid port {n:?}"))
}

/// systemd style: fd 3 is the function's listening socket.
fn listen(program: &[OsString]) -> Result<ExitCode, String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // The control connection is closed by now: 3 is free, or the listener.
    let listener = receive("the listening socket")?;
    if listener.as_raw_fd() == 3 {
        fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| format!("fcntl: {e}"))?;
        // Kept open across the exec, for the program.
        std::mem::forget(listener);
    } else {
        // F_DUPFD: the lowest free descriptor from 3, without close-on-exec.
        let fd = fcntl(&listener, FcntlArg::F_DUPFD(3)).map_err(|e| format!("fcntl: {e}"))?;
        if fd != 3 {
            return Err(format!(
                "descriptor 3 is taken (the listener landed on {fd})"
            ));
        }
    }
    let name = std::env::var("FAAS_FUNCTION").unwrap_or_else(|_| "faas".into());
    let env = [
        ("LISTEN_FDS", "1".to_string()),
        ("LISTEN_PID", std::process::id().to_string()),
        ("LISTEN_FDNAMES", name),
    ];
    // A program told the descriptor on its command line (gunicorn's
    // documented `--bind fd://3`) takes it from there; gunicorn would
    // also take it from LISTEN_FDS, twice, and fail (EBADF).
    let named = program
        .iter()
        .any(|a| a.to_string_lossy().contains("fd://3"));
    exec(program, if named { &[] } else { &env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_three_modes() {
        let (mode, program) = parse(&args(&["stdio", "--", "/bin/sh", "-c", "x"])).expect("stdio");
        assert_eq!((mode, program.len()), (Mode::Stdio, 3));
        assert_eq!(
            parse(&args(&["listen", "--", "srv"])).expect("listen").0,
            Mode::Listen
        );
        assert_eq!(
            parse(&args(&["port", "8080", "--", "srv"]))
                .expect("port")
                .0,
            Mode::Port(8080)
        );
        assert_eq!(
            parse(&args(&["bind", "8080", "--", "srv"]))
                .expect("bind")
                .0,
            Mode::Bind(8080)
        );
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        assert!(parse(&args(&["port", "0", "--", "srv"])).is_err());
        assert!(parse(&args(&["port", "http", "--", "srv"])).is_err());
        assert!(parse(&args(&["bind", "0", "--", "srv"])).is_err());
        assert!(parse(&args(&["stdio", "--"])).is_err());
        assert!(parse(&args(&["stdio", "srv"])).is_err());
        assert!(parse(&args(&["fly", "--", "srv"])).is_err());
    }
}
