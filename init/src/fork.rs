//! `fork MODE -- PROGRAM`: faas-init as the zygote of a `--fork` function.
//!
//! It holds the container's control connection as a reuse handler would,
//! and for each connection faasd hands over clones a child into new user,
//! mount, pid, ipc, uts and network namespaces (`child`), which serves
//! that one connection as MODE's single-use faas-init would and ends with
//! it: the child is its pid namespace's init, so when it ends the kernel
//! kills whatever it started. The zygote asks for more connections while
//! fewer than `FAAS_FORK_MAX` children live, reaps them, and kills one
//! that outlives `FAAS_FORK_TIMEOUT_MS`. When faasd closes the control
//! connection the zygote waits for its children and exits.
//!
//! The image's program never runs in the zygote: only faas-init's code
//! does, under the container's seccomp profile that lets it make
//! namespaces and mounts; each child forbids both again before the
//! program starts.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faas_protocol::{fork as vars, layout, recv_fds, send_ready, Wait, MAX_BATCH};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::child::{self, map_ids, Plan};
use crate::slots::Slots;
use crate::Mode;

/// Each child's stack while it runs faas-init's code (the program gets
/// its own at exec). Only the pages a child touches are ever copied.
const STACK: usize = 1 << 20;

/// The namespaces of every child (its user namespace is the zygote's,
/// its network namespace one of `netslots`, or new).
const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// CAP_NET_ADMIN and CAP_NET_RAW: a program holding either could leave
/// something in a network namespace for the next child (`netslots`).
const NET_CAPS: [u32; 2] = [12, 13];

/// Set in a child right after the clone: the code it shares with the
/// zygote then takes the child's ways (its connection is preset).
static IS_CHILD: AtomicBool = AtomicBool::new(false);

pub fn is_child() -> bool {
    IS_CHILD.load(Ordering::Relaxed)
}

/// What faasd set for the zygote (`faas_protocol::fork`).
struct Settings {
    max_children: usize,
    timeout: Duration,
    plan: Plan,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let number = |name: &str| -> Result<u64, String> {
            std::env::var(name)
                .map_err(|_| format!("{name} is not set (faasd sets it for --fork)"))?
                .parse()
                .map_err(|_| format!("{name} is not a number"))
        };
        let settings = Self {
            max_children: number(vars::MAX_CHILDREN)?.clamp(1, 4096) as usize,
            timeout: Duration::from_millis(number(vars::TIMEOUT_MS)?),
            plan: Plan::from_env()?,
        };
        for name in vars::ALL {
            std::env::remove_var(name);
        }
        // The children serve one connection each, whatever faasd said to
        // the zygote.
        std::env::remove_var("FAAS_REUSE");
        Ok(settings)
    }
}

/// A child alive, and when it must be gone.
struct Alive {
    deadline: Instant,
    killed: bool,
}

pub fn serve(mode: Mode, program: &[OsString]) -> Result<ExitCode, String> {
    let settings = Settings::from_env()?;
    // The zygote's id maps are written from here, in /proc/ZYGOTE: files
    // of the zygote's own user only if it is dumpable.
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    let (go_rx, go_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let go = go_rx.as_raw_fd();
    let program = program.to_vec();
    let mut stack = vec![0u8; STACK];
    let zygote = Box::new(move || {
        // SAFETY: the pipe's end this process inherited from its parent;
        // nothing else here owns it.
        let go = unsafe { OwnedFd::from_raw_fd(go) };
        let mut byte = [0u8; 1];
        let code = match nix::unistd::read(&go, &mut byte) {
            Ok(1) => match zygote(settings_once(), mode, &program, go) {
                Ok(code) if code == ExitCode::SUCCESS => 0,
                Ok(_) => 1,
                Err(e) => {
                    eprintln!("faas-init: {e}");
                    1
                }
            },
            _ => 1,
        };
        std::process::exit(code)
    });
    SETTINGS
        .set(settings)
        .map_err(|_| "faas-init fork started twice".to_string())?;
    // SAFETY: this process has one thread, so the zygote (a copy of it, no
    // CLONE_VM) finds no lock held by a thread that is gone; it runs on
    // its own copy of `stack` and ends with `std::process::exit`.
    let pid = unsafe {
        nix::sched::clone(
            zygote,
            &mut stack,
            CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| format!("cloning the zygote into its user namespace: {e}"))?;
    drop(go_rx);
    if let Err(e) = map_ids(pid) {
        let _ = kill(pid, Signal::SIGKILL);
        return Err(format!("mapping the zygote's user ids: {e}"));
    }
    nix::unistd::write(&go_tx, &[1]).map_err(|e| format!("starting the zygote: {e}"))?;
    drop(go_tx);
    // The container's first process: it ends with the zygote.
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
            }
            Ok(WaitStatus::Signaled(..)) => return Ok(ExitCode::from(1)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for the zygote: {e}")),
        }
    }
}

/// The settings, read before the zygote's clone (the copy it has).
static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

fn settings_once() -> &'static Settings {
    SETTINGS.get().expect("set before the zygote is cloned")
}

/// The zygote, in its own user namespace (where it holds every
/// capability, so its children can be given namespaces of their own).
fn zygote(
    settings: &'static Settings,
    mode: Mode,
    program: &[OsString],
    go: OwnedFd,
) -> Result<ExitCode, String> {
    drop(go);
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let signals = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let control = UnixStream::connect(layout::CONTROL_SOCKET)
        .map_err(|e| format!("connecting to {}: {e}", layout::CONTROL_SOCKET))?;
    let fresh_net = settings.plan.caps().iter().any(|c| NET_CAPS.contains(c));
    let mut zygote = Zygote {
        settings,
        mode,
        program: program.to_vec(),
        children: HashMap::new(),
        stack: vec![0u8; STACK],
        slots: Slots::new(fresh_net, settings.plan.pids()),
    };
    // The first message comes unasked.
    let mut asked = true;
    let mut open = true;
    loop {
        zygote.reap();
        zygote.kill_late();
        if !open && zygote.children.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        let room = zygote
            .settings
            .max_children
            .saturating_sub(zygote.children.len());
        if open && !asked && room > 0 {
            let batch = room.min(MAX_BATCH) as u8;
            match send_ready(control.as_fd(), batch) {
                Ok(true) => asked = true,
                Ok(false) => open = false,
                Err(e) => return Err(format!("asking faasd for connections: {e}")),
            }
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if open && asked {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, zygote.poll_timeout()) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let control_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        while let Ok(Some(_)) = signals.read_signal() {}
        if control_ready {
            let mut byte = [0u8; 1];
            match recv_fds(control.as_fd(), &mut byte, Wait::No) {
                Ok(got) if got.bytes == 0 => open = false,
                Ok(got) => {
                    asked = false;
                    for conn in got.fds {
                        zygote.spawn(conn);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => open = false,
                Err(e) => return Err(format!("receiving connections: {e}")),
            }
        }
    }
}

struct Zygote {
    settings: &'static Settings,
    mode: Mode,
    program: Vec<OsString>,
    children: HashMap<Pid, Alive>,
    stack: Vec<u8>,
    slots: Slots,
}

impl Zygote {
    /// Clones a child for `conn`; our copy closes on return, so the
    /// client sees the end when the child's program closes.
    fn spawn(&mut self, conn: OwnedFd) {
        let started = Instant::now();
        let slot = match self.slots.take() {
            Ok(slot) => slot,
            Err(e) => {
                eprintln!("faas-init: a slot for a child: {e}");
                crate::handed::unserved(&conn);
                return;
            }
        };
        let given = self.slots.get(slot);
        let net = given.and_then(|s| s.net.as_ref()).map(|n| n.as_raw_fd());
        let cgroup = given.and_then(|s| s.cgroup.clone());
        let flags = match net {
            Some(_) => NAMESPACES,
            None => NAMESPACES | CloneFlags::CLONE_NEWNET,
        };
        let (plan, mode, program) = (&self.settings.plan, self.mode, &self.program);
        let conn_fd = conn.as_raw_fd();
        let run = Box::new(move || {
            IS_CHILD.store(true, Ordering::Relaxed);
            // SAFETY: the zygote's descriptors, copied into this child's
            // table by the clone; nothing else in the child owns them.
            let (conn, net) = unsafe {
                (
                    OwnedFd::from_raw_fd(conn_fd),
                    net.map(|fd| OwnedFd::from_raw_fd(fd)),
                )
            };
            child::run(plan, mode, program, conn, net, cgroup.as_deref())
        });
        // SAFETY: as for the zygote's own clone: one thread, no CLONE_VM,
        // the child ends with `std::process::exit`.
        let cloned = unsafe { nix::sched::clone(run, &mut self.stack, flags, Some(libc::SIGCHLD)) };
        let pid = match cloned {
            Ok(pid) => pid,
            Err(e) => {
                eprintln!("faas-init: cloning a child for a connection: {e}");
                crate::handed::unserved(&conn);
                return;
            }
        };
        self.slots.hold(slot, pid);
        self.children.insert(
            pid,
            Alive {
                deadline: started + self.settings.timeout,
                killed: false,
            },
        );
    }

    /// Collects every child that ended (each one's status: said only when
    /// it is a failure of faas-init's own, its program's is the log's).
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                    self.children.remove(&pid);
                    self.slots.release(pid);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Kills each child past its deadline: its pid namespace's init, so
    /// the kernel kills the rest of it.
    fn kill_late(&mut self) {
        let now = Instant::now();
        for (pid, alive) in &mut self.children {
            if !alive.killed && now >= alive.deadline {
                eprintln!(
                    "faas-init: a child served its connection longer than {} s: killed",
                    self.settings.timeout.as_secs_f64()
                );
                let _ = kill(*pid, Signal::SIGKILL);
                alive.killed = true;
            }
        }
    }

    /// Until the next deadline, or for ever.
    fn poll_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        self.children
            .values()
            .filter(|a| !a.killed)
            .map(|a| a.deadline.saturating_duration_since(now))
            .min()
            .map(|d| {
                let ms = d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            })
            .unwrap_or(PollTimeout::NONE)
    }
}

use nix::libc;
