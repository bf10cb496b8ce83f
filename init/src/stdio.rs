//! `stdio`: inetd style, the connection is the program's stdin and stdout.
//!
//! The program starts before its connection arrives, so a pool container
//! holds it loaded and waiting, and a connection costs no exec. It runs
//! under a seccomp filter (`unotify`) that stops its first use of
//! descriptor 0 or 1, and any fork, until faas-init has the connection;
//! faas-init then puts the connection in as the program's 0 and 1 and
//! lets the call go on. Since nothing could fork before, that one
//! descriptor table is the only one there is: every process the program
//! starts later inherits the connection, as if it had been there from the
//! start. Until then stdin is /dev/null, which `poll` finds readable, so a
//! program that polls first still reaches a stopped `read`.
//!
//! faas-init keeps no copy: the client sees the end when the program
//! closes or exits. Calls stopped after that go on at once. faas-init ends
//! with the program's status, and with it the container.
//!
//! Where the filter cannot be installed, faas-init waits for the
//! connection and then becomes the program, as before, and says so.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{open, OFlag};
use nix::libc;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cpu::OneCpu;
use crate::unotify::{self, Listener, Stop};

/// Every call that could look at stdin or stdout (by the descriptor's
/// position among its arguments), and every way to fork. `poll`, `select`
/// and `epoll_wait` take their descriptors in memory the filter cannot
/// read; /dev/null answers them.
const STOPS: &[Stop] = &[
    Stop::on_stdio(libc::SYS_read, &[0]),
    Stop::on_stdio(libc::SYS_write, &[0]),
    Stop::on_stdio(libc::SYS_readv, &[0]),
    Stop::on_stdio(libc::SYS_writev, &[0]),
    Stop::on_stdio(libc::SYS_pread64, &[0]),
    Stop::on_stdio(libc::SYS_pwrite64, &[0]),
    Stop::on_stdio(libc::SYS_preadv, &[0]),
    Stop::on_stdio(libc::SYS_pwritev, &[0]),
    Stop::on_stdio(libc::SYS_preadv2, &[0]),
    Stop::on_stdio(libc::SYS_pwritev2, &[0]),
    Stop::on_stdio(libc::SYS_recvfrom, &[0]),
    Stop::on_stdio(libc::SYS_sendto, &[0]),
    Stop::on_stdio(libc::SYS_recvmsg, &[0]),
    Stop::on_stdio(libc::SYS_sendmsg, &[0]),
    Stop::on_stdio(libc::SYS_recvmmsg, &[0]),
    Stop::on_stdio(libc::SYS_sendmmsg, &[0]),
    Stop::on_stdio(libc::SYS_sendfile, &[0, 1]),
    Stop::on_stdio(libc::SYS_splice, &[0, 2]),
    Stop::on_stdio(libc::SYS_tee, &[0, 1]),
    Stop::on_stdio(libc::SYS_copy_file_range, &[0, 2]),
    Stop::on_stdio(libc::SYS_fstat, &[0]),
    Stop::on_stdio(libc::SYS_newfstatat, &[0]),
    Stop::on_stdio(libc::SYS_statx, &[0]),
    Stop::on_stdio(libc::SYS_fstatfs, &[0]),
    Stop::on_stdio(libc::SYS_lseek, &[0]),
    Stop::on_stdio(libc::SYS_ioctl, &[0]),
    Stop::on_stdio(libc::SYS_fcntl, &[0]),
    Stop::on_stdio(libc::SYS_flock, &[0]),
    Stop::on_stdio(libc::SYS_fsync, &[0]),
    Stop::on_stdio(libc::SYS_fdatasync, &[0]),
    Stop::on_stdio(libc::SYS_ftruncate, &[0]),
    Stop::on_stdio(libc::SYS_fallocate, &[0]),
    Stop::on_stdio(libc::SYS_fadvise64, &[0]),
    Stop::on_stdio(libc::SYS_fchmod, &[0]),
    Stop::on_stdio(libc::SYS_fchown, &[0]),
    Stop::on_stdio(libc::SYS_fgetxattr, &[0]),
    Stop::on_stdio(libc::SYS_close, &[0]),
    Stop::on_stdio(libc::SYS_close_range, &[0]),
    Stop::on_stdio(libc::SYS_dup, &[0]),
    Stop::on_stdio(libc::SYS_dup2, &[0, 1]),
    Stop::on_stdio(libc::SYS_dup3, &[0, 1]),
    Stop::on_stdio(libc::SYS_shutdown, &[0]),
    Stop::on_stdio(libc::SYS_getsockname, &[0]),
    Stop::on_stdio(libc::SYS_getpeername, &[0]),
    Stop::on_stdio(libc::SYS_getsockopt, &[0]),
    Stop::on_stdio(libc::SYS_setsockopt, &[0]),
    Stop::on_stdio(libc::SYS_epoll_ctl, &[2]),
    Stop::every(libc::SYS_clone),
    Stop::every(libc::SYS_clone3),
    Stop::every(libc::SYS_fork),
    Stop::every(libc::SYS_vfork),
];

pub fn serve(program: &[OsString]) -> Result<ExitCode, String> {
    stdin_from_null()?;
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    // While faas-init has one thread: the spawn forks.
    let (child, calls) = match Listener::spawn(&mut command, STOPS) {
        Ok(started) => started,
        Err(e) => {
            eprintln!(
                "faas-init: cannot start {:?} ahead of its connection ({e}); \
                 starting it when the connection arrives",
                program[0]
            );
            return late(program);
        }
    };
    let delivered = Arc::new(AtomicBool::new(false));
    // The connection until the program takes it (as 0 and 1).
    let waiting: Arc<Mutex<Option<OwnedFd>>> = Arc::default();
    {
        let delivered = Arc::clone(&delivered);
        let waiting = Arc::clone(&waiting);
        let program = Pid::from_raw(child.id() as i32);
        std::thread::Builder::new()
            .spawn(move || reap(program, &delivered, &waiting))
            .map_err(|e| format!("starting the reaper thread: {e}"))?;
    }
    // The program's first stopped call waits in the kernel meanwhile; this
    // thread answers it right after the connection, with no hand-off.
    let conn = crate::handed::receive("a connection")?;
    *lock(&waiting) = Some(conn);
    delivered.store(true, Ordering::Release);
    let pinned = Pinned::pin(Pid::from_raw(child.id() as i32));
    hold(&calls, &waiting, pinned);
    // Nothing holds the filter any more: the reaper ends the process with
    // the program's status.
    loop {
        std::thread::park();
    }
}

/// Without the filter: waits for the connection, then becomes the program.
fn late(program: &[OsString]) -> Result<ExitCode, String> {
    let conn = crate::handed::receive("a connection")?;
    nix::unistd::dup2_stdin(&conn).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2_stdout(&conn).map_err(|e| format!("dup2: {e}"))?;
    drop(conn);
    crate::exec::exec(program, &[])
}

fn stdin_from_null() -> Result<(), String> {
    let null = open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("dup2: {e}"))
}

/// Answers the program's stopped calls: the first gets the connection
/// as 0 and 1, the rest go on.
fn hold(calls: &Listener, waiting: &Mutex<Option<OwnedFd>>, mut pinned: Option<Pinned>) {
    // Fails only once nothing holds the filter any more.
    while let Ok(call) = calls.recv() {
        if let Some(held) = pinned.take_if(|held| held.done_with(call.nr)) {
            held.cpu.release();
        }
        let mut conn = lock(waiting);
        if let Some(fd) = conn.take() {
            let put = calls
                .place(call.id, fd.as_fd(), 0, false)
                .and_then(|()| calls.place(call.id, fd.as_fd(), 1, false));
            match put {
                Ok(()) => {}
                // A signal interrupted the call, which comes again.
                Err(e) if unotify::gone(&e) => {
                    *conn = Some(fd);
                    continue;
                }
                Err(e) => {
                    eprintln!("faas-init: giving the program its connection: {e}");
                    std::process::exit(1);
                }
            }
        }
        calls.let_go(&call, "the program's");
    }
}

/// The hand-over on one CPU (see `cpu`): the program gets every CPU back
/// before it forks (so what it starts inherits them) or after its first
/// few stopped calls, whichever comes first.
struct Pinned {
    cpu: OneCpu,
    calls_left: u32,
}

impl Pinned {
    const CALLS: u32 = 8;

    /// The program is single-threaded and stopped: its pid is its one
    /// task.
    fn pin(program: Pid) -> Option<Self> {
        OneCpu::pin(program).map(|cpu| Self {
            cpu,
            calls_left: Self::CALLS,
        })
    }

    /// Counts a stopped call; true when the program should have its
    /// CPUs back before that call goes on.
    fn done_with(&mut self, nr: i64) -> bool {
        self.calls_left = self.calls_left.saturating_sub(1);
        let forks = [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_fork,
            libc::SYS_vfork,
        ];
        self.calls_left == 0 || forks.contains(&nr)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// As the container's first process, reaps every orphan in it; when the
/// program ends, answers a connection it never took and ends with its
/// status.
fn reap(program: Pid, delivered: &AtomicBool, waiting: &Mutex<Option<OwnedFd>>) {
    loop {
        let code = match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program => 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if !delivered.load(Ordering::Acquire) {
            eprintln!("faas-init: the program ended (status {code}) before its connection arrived");
        }
        if let Some(conn) = lock(waiting).take() {
            crate::handed::unserved(&conn);
        }
        std::process::exit(code);
    }
}
