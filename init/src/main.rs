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
//! /.faas-init fork MODE -- PROGRAM ARGS...  `--fork`: a zygote that serves each connection
//!                                           in a fresh child, as MODE (stdio, port N, or
//!                                           control: PROGRAM speaks faasd's protocol)
//!                                           serves one (see `fork`, `child`)
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
use mode::Mode;

mod accept;
mod bind;
mod caps;
mod channel;
mod child;
mod control;
mod cpu;
mod exec;
mod flow;
mod fork;
mod handed;
mod listening;
mod mode;
mod port;
mod relay;
mod sdk;
mod seal;
mod slots;
mod stats;
mod stdio;
mod unotify;

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
    let (forked, mode, program) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => return fail(&e),
    };
    if forked {
        return match fork::serve(mode, &program) {
            Ok(code) => code,
            Err(e) => fail(&e),
        };
    }
    let result = match mode {
        Mode::Stdio => stdio::serve(&program),
        Mode::Listen => listen(&program),
        Mode::Port(port) if !faas_handler::reuse_enabled() => accept::serve(port, &program),
        Mode::Port(port) => port::serve(port, &program),
        Mode::Bind(port) => receive("the listening socket")
            .and_then(|listener| bind::serve(port, &program, listener)),
        Mode::Control => Err("control needs fork".into()),
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

/// `[fork] MODE [N] -- PROGRAM ARGS...`: whether forked, the mode, the
/// program.
fn parse(args: &[OsString]) -> Result<(bool, Mode, Vec<OsString>), String> {
    let dashes = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: faas-init [fork] stdio|listen|port N|bind N|control -- PROGRAM [ARGS...]")?;
    let (head, program) = (&args[..dashes], &args[dashes + 1..]);
    if program.is_empty() {
        return Err("the image names no program to run (no Entrypoint or Cmd)".into());
    }
    let (forked, head) = match head {
        [first, rest @ ..] if first == "fork" => (true, rest),
        _ => (false, head),
    };
    let mode = match head {
        [m] if m == "stdio" => Mode::Stdio,
        [m] if m == "listen" && !forked => Mode::Listen,
        [m] if m == "control" && forked => Mode::Control,
        [m, n] if m == "port" => Mode::Port(port_number(n)?),
        [m, n] if m == "bind" && !forked => Mode::Bind(port_number(n)?),
        _ => return Err(format!("unknown mode {head:?}")),
    };
    Ok((forked, mode, program.to_vec()))
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
        let (forked, mode, program) =
            parse(&args(&["stdio", "--", "/bin/sh", "-c", "x"])).expect("stdio");
        assert_eq!((forked, mode, program.len()), (false, Mode::Stdio, 3));
        assert_eq!(
            parse(&args(&["listen", "--", "srv"])).expect("listen").1,
            Mode::Listen
        );
        assert_eq!(
            parse(&args(&["port", "8080", "--", "srv"]))
                .expect("port")
                .1,
            Mode::Port(8080)
        );
        assert_eq!(
            parse(&args(&["bind", "8080", "--", "srv"]))
                .expect("bind")
                .1,
            Mode::Bind(8080)
        );
    }

    #[test]
    fn parses_the_fork_modes() {
        for (list, mode) in [
            (&["fork", "stdio", "--", "srv"][..], Mode::Stdio),
            (&["fork", "control", "--", "srv"][..], Mode::Control),
            (&["fork", "port", "80", "--", "srv"][..], Mode::Port(80)),
        ] {
            assert!(parse(&args(list)).expect("fork").0);
            assert_eq!(parse(&args(list)).expect("fork").1, mode);
        }
        assert!(parse(&args(&["fork", "listen", "--", "srv"])).is_err());
        assert!(parse(&args(&["fork", "bind", "80", "--", "srv"])).is_err());
        assert!(parse(&args(&["control", "--", "srv"])).is_err());
        assert!(parse(&args(&["fork", "--", "srv"])).is_err());
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
