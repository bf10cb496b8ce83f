//! `fork_serve`: a handler that does its expensive start once (loading a
//! model, building tables) and serves every connection in a fresh child
//! forked after it, in a sandbox of its own.
//!
//! Under `faas deploy --fork`, faas-init starts the program once beside
//! its zygote with `FAAS_FORK_SERVER` set; `fork_serve` then runs `init`,
//! says it is ready, and for each connection receives it with a prepared
//! sandbox's namespaces: it forks, the child enters them (mount, pid,
//! ipc, uts and network namespaces of their own: a root, `/proc`, `/tmp`,
//! loopback no other connection sees), forks once more to be in the pid
//! namespace, gives up every capability the function has not got,
//! installs the seccomp filter faas-init gave (no mounts, no namespaces)
//! and calls `handle` with `init`'s state. When it and all it started
//! have ended, so does the sandbox. Without `FAAS_FORK_SERVER` (no
//! `--fork`) it serves as `crate::serve` does, after `init`.
//!
//! A child is a copy of the server's memory: whatever must differ between
//! connections (random generators seeded at start, tokens) must be made
//! anew in `handle`. `std` keeps no such state; crates may (rand's
//! `ThreadRng` reseeds itself after a fork).
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use faas_protocol::{fork as vars, recv_fds, Wait};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult};

/// The namespaces a child enters (the user namespace stays the server's).
const ENTERED: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWNET);

/// Runs `init` once, then serves every connection with `handle` in a
/// fresh child (see the module's doc).
pub fn fork_serve<S>(
    init: impl FnOnce() -> S,
    handle: impl Fn(&S, TcpStream) -> io::Result<()>,
) -> io::Result<()> {
    let server = std::env::var(vars::SERVER)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok());
    let Some(fd) = server else {
        let state = init();
        return crate::serve(|conn| handle(&state, conn));
    };
    // SAFETY: faas-init passed this descriptor to this process alone.
    let channel = unsafe { UnixStream::from_raw_fd(fd) };
    let seal = Seal::from_env()?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let state = init();
    // Its children go at once (reaped by the kernel): waiting for each
    // would make the server wait for every setns and second fork.
    set_sigchld(SigHandler::SigIgn)?;
    (&channel).write_all(&[1])?;
    while let Some(request) = next_request(&channel)? {
        // SAFETY: the server has one thread (`init` is the caller's: it
        // must not leave threads behind), so the child finds no lock held
        // by a thread that is gone.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Child => {
                let code =
                    enter_and_serve(request, &channel, &seal, &cwd, |conn| handle(&state, conn));
                std::process::exit(code)
            }
            ForkResult::Parent { .. } => drop(request),
        }
    }
    Ok(())
}

fn set_sigchld(handler: SigHandler) -> io::Result<()> {
    // SAFETY: SIG_IGN and SIG_DFL run no code of ours.
    unsafe { signal(Signal::SIGCHLD, handler) }
        .map(drop)
        .map_err(io::Error::from)
}

/// A connection and its sandbox.
struct Request {
    conn: OwnedFd,
    /// A pidfd of the process holding the sandbox's namespaces.
    holder: OwnedFd,
    /// Kept open while the connection is served.
    done: OwnedFd,
}

fn next_request(channel: &UnixStream) -> io::Result<Option<Request>> {
    let mut when = [0u8; 8];
    match (&*channel).read_exact(&mut when) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut byte = [0u8; 1];
    let got = recv_fds(channel.as_fd(), &mut byte, Wait::Yes)?;
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut fds = got.fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(conn), Some(holder), Some(done)) => Ok(Some(Request { conn, holder, done })),
        _ => Err(io::Error::other(
            "faas-init sent a request without its descriptors",
        )),
    }
}

/// In the forked child: into the sandbox's namespaces, once more into its
/// pid namespace, sealed, then `serve`. Returns the exit status.
fn enter_and_serve(
    request: Request,
    channel: &UnixStream,
    seal: &Seal,
    cwd: &std::path::Path,
    serve: impl FnOnce(TcpStream) -> io::Result<()>,
) -> i32 {
    let Request { conn, holder, done } = request;
    // The server's socket is the server's alone.
    let _ = nix::unistd::close(channel.as_raw_fd());
    if let Err(e) = setns(holder.as_fd(), ENTERED) {
        eprintln!("faas-handler: entering a connection's sandbox: {e}");
        return 1;
    }
    drop(holder);
    // SAFETY: as for the server's own fork: one thread.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("faas-handler: forking into a connection's sandbox: {e}");
            return 1;
        }
    }
    // The handler's own children are its to wait for.
    if let Err(e) = set_sigchld(SigHandler::SigDfl) {
        eprintln!("faas-handler: SIGCHLD in a connection's sandbox: {e}");
        return 1;
    }
    if let Err(e) = seal.apply() {
        eprintln!("faas-handler: sealing a connection's sandbox: {e}");
        return 1;
    }
    let _ = std::env::set_current_dir(cwd);
    let code = match serve(TcpStream::from(conn)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faas-handler: serving a connection: {e}");
            1
        }
    };
    drop(done);
    code
}

/// What a child gives up before it serves: every capability but the
/// function's (`FAAS_FORK_CAPS`, for a root user; none for another), and
/// then what the seccomp program (`FAAS_FORK_SEAL`) forbids.
struct Seal {
    caps: Vec<u32>,
    last_cap: u32,
    program: Vec<nix::libc::sock_filter>,
}

impl Seal {
    fn from_env() -> io::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| io::Error::other(format!("{name} is not set")))
        };
        let caps = var(vars::CAPS)?
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse()
                    .map_err(|_| io::Error::other("a bad capability number"))
            })
            .collect::<io::Result<Vec<u32>>>()?;
        let last_cap = var(vars::LAST_CAP)?
            .parse()
            .map_err(|_| io::Error::other("a bad last capability"))?;
        let program = parse_program(&var(vars::SEAL)?)
            .ok_or_else(|| io::Error::other(format!("{} is not a seccomp program", vars::SEAL)))?;
        for name in [vars::SERVER, vars::SEAL, vars::CAPS, vars::LAST_CAP] {
            std::env::remove_var(name);
        }
        Ok(Self {
            caps,
            last_cap,
            program,
        })
    }

    fn apply(&self) -> io::Result<()> {
        use nix::libc;
        crate::caps::bound_to(&self.caps, self.last_cap)?;
        crate::caps::clear_ambient()?;
        let kept: &[u32] = if nix::unistd::geteuid().is_root() {
            &self.caps
        } else {
            &[]
        };
        set_capabilities(kept)?;
        let fprog = libc::sock_fprog {
            len: u16::try_from(self.program.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at the program, alive for the call; the
        // kernel copies it. No new privileges is set by the runtime.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Effective and permitted exactly `caps`, none inheritable.
fn set_capabilities(caps: &[u32]) -> io::Result<()> {
    let mut data = [crate::caps::Word::default(); 2];
    for &cap in caps.iter().filter(|&&c| c < 64) {
        let word = &mut data[(cap / 32) as usize];
        word.effective |= 1 << (cap % 32);
        word.permitted |= 1 << (cap % 32);
    }
    crate::caps::set(&data)
}

/// Hex of `struct sock_filter`s in memory order (faas-init's `seal`).
fn parse_program(hex: &str) -> Option<Vec<nix::libc::sock_filter>> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| nix::libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_programs_parse_from_faas_inits_hex() {
        // ld [4]; ret ALLOW
        let p = parse_program("2000000004000000060000000000ff7f").expect("program");
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].code, p[0].k), (0x20, 4));
        assert_eq!((p[1].code, p[1].k), (0x06, 0x7fff_0000));
        assert!(parse_program("").is_none());
        assert!(parse_program("20000000").is_none());
        assert!(parse_program("zz00000004000000").is_none());
    }
}
