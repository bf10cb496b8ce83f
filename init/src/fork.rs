//! `fork MODE -- PROGRAM`: faas-init as the zygote of a `--fork` function.
//!
//! faas-init, the container's first process, clones the zygote into a
//! user namespace of its own (ids mapped one to one onto the container's)
//! and reaps whatever ends up its child. The zygote holds the container's
//! control connection as a reuse handler would, and keeps children
//! prepared (`child`): each cloned into new mount, pid, ipc and uts
//! namespaces, given a network namespace and pids cgroup of its slot
//! (`slots`), its sandbox made and sealed and MODE's program started
//! ahead, waiting on a channel to the zygote. A connection from faasd goes
//! to the oldest prepared child (or, for a program built on the SDK's
//! `fork_serve`, to the program started once beside the zygote, with a
//! prepared child's namespaces: `sdk`), and another is prepared behind
//! it. A child is its pid namespace's init: when it ends, the kernel kills
//! whatever it started. The zygote asks for more connections while fewer
//! than `FAAS_FORK_MAX` children serve, reaps them, and kills one that
//! outlives `FAAS_FORK_TIMEOUT_MS`. When faasd closes the control
//! connection the prepared children go, the serving ones finish, and the
//! zygote exits.
//!
//! The image's program never runs in the zygote: only faas-init's code
//! does (and a fork server's start-up, beside it), under the container's
//! seccomp profile that lets it make namespaces and mounts; each child
//! forbids both again before the program starts.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use faas_protocol::{fork as vars, layout, recv_fds, send_ready, Wait, MAX_BATCH};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::channel;
use crate::child::{self, Plan};
use crate::mode::Mode;
use crate::sdk;
use crate::slots::Slots;
use crate::stats::Stats;

/// Each child's stack while it runs faas-init's code (the program gets
/// its own at exec). Only the pages a child touches are ever copied.
const STACK: usize = 1 << 20;

/// The namespaces of every child (its user namespace is the zygote's,
/// its network namespace its slot's, or new).
const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// CAP_NET_ADMIN and CAP_NET_RAW: a program holding either could leave
/// something in a network namespace for the next child (`slots`).
const NET_CAPS: [u32; 2] = [12, 13];

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

/// Children kept prepared: cloned, their sandbox made and sealed,
/// waiting for a connection, so that one costs a `sendmsg` (the cgroup
/// join alone waits for an RCU grace period, 9-18 ms measured here).
const PREPARED: usize = 2;
/// How long no child is prepared ahead after one failed to be.
const PREPARE_BACKOFF: Duration = Duration::from_secs(1);
/// A child of the zygote (its slot is found by its pid).
struct Child {
    state: State,
}

enum State {
    /// Making or holding its sandbox; its connection goes over
    /// `channel`; `done` is the write end of the pipe it would hold its
    /// namespaces for a fork server's child by (`sdk`).
    Prepared { channel: UnixStream, done: OwnedFd },
    /// Serving its connection (or, let go unserved, ending) until
    /// `deadline`.
    Serving {
        deadline: Instant,
        killed: bool,
        served: bool,
    },
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
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    // The container's first process: it ends with the zygote, and reaps
    // what ends up its child (a fork server's children's children).
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
            }
            Ok(WaitStatus::Signaled(p, ..)) if p == pid => return Ok(ExitCode::from(1)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for the zygote: {e}")),
        }
    }
}

/// Maps the zygote's user and group ids one to one onto the container's
/// (every id the container has, so a program that changes user, as
/// nginx does, still can). Without CAP_SETUID and CAP_SETGID in the
/// container (faasd grants them to faas-init) only faas-init's own ids.
fn map_ids(child: Pid) -> Result<(), String> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    let identity = |own: &str| -> Result<String, String> {
        let text = std::fs::read_to_string(format!("/proc/self/{own}"))
            .map_err(|e| format!("reading {own}: {e}"))?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| format!("{} {} {}\n", f[0], f[0], f[2]))
            })
            .collect())
    };
    let (uids, gids) = (identity("uid_map")?, identity("gid_map")?);
    let full = std::fs::write(proc.join("uid_map"), uids)
        .and_then(|()| std::fs::write(proc.join("gid_map"), gids));
    if full.is_ok() {
        return Ok(());
    }
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    std::fs::write(proc.join("uid_map"), format!("{uid} {uid} 1\n"))
        .map_err(|e| format!("writing uid_map: {e}"))?;
    std::fs::write(proc.join("setgroups"), "deny")
        .map_err(|e| format!("writing setgroups: {e}"))?;
    std::fs::write(proc.join("gid_map"), format!("{gid} {gid} 1\n"))
        .map_err(|e| format!("writing gid_map: {e}"))
}

/// The settings, read before the zygote's clone (the copy it has).
static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

fn settings_once() -> &'static Settings {
    SETTINGS.get().expect("set before the zygote is cloned")
}

/// Gives the zygote a mount namespace of its own whose mounts propagate
/// nowhere, once: every child copies it, so none needs to make its own
/// copy private, and no mount event reaches a child from outside.
fn private_mounts() -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making the zygote's mounts private: {e}"))
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
    // Its id maps are written: out of reach again, as any faas-init.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    private_mounts()?;
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
        prepared: VecDeque::new(),
        unprepared: None,
        sdk: None,
        stack: vec![0u8; STACK],
        stats: Stats::open().map(|s| &*Box::leak(Box::new(s))),
        slots: Slots::new(fresh_net, settings.plan.pids()),
    };
    if mode == Mode::Control {
        zygote.sdk = sdk::start(&zygote.program, &settings.plan)?;
    }
    // The first message comes unasked.
    let mut asked = true;
    let mut open = true;
    loop {
        zygote.reap();
        zygote.kill_late();
        if !open && zygote.serving() == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        if open {
            zygote.top_up();
        }
        let room = zygote
            .settings
            .max_children
            .saturating_sub(zygote.serving());
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
                    let received = channel::monotonic_ns();
                    for conn in got.fds {
                        zygote.hand(conn, received);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => open = false,
                Err(e) => return Err(format!("receiving connections: {e}")),
            }
        }
        if !open {
            // No more connections: the prepared children go (their
            // channels close, they end).
            zygote.release_prepared();
        }
    }
}

struct Zygote {
    settings: &'static Settings,
    mode: Mode,
    program: Vec<OsString>,
    children: HashMap<Pid, Child>,
    /// Prepared children, oldest (most likely ready) first.
    prepared: VecDeque<Pid>,
    stack: Vec<u8>,
    slots: Slots,
    /// The counters faasd reads, if it gave the zygote the file (for the
    /// zygote's life: its children keep a reference in their copy).
    stats: Option<&'static Stats>,
    /// When a prepared child last ended before its connection.
    unprepared: Option<Instant>,
    /// The program as fork server, if it is one (`sdk`).
    sdk: Option<sdk::Server>,
}

impl Zygote {
    fn serving(&self) -> usize {
        self.children.len() - self.prepared.len()
    }

    /// Keeps `PREPARED` children prepared, within the children allowed;
    /// for a while none after one could not make its sandbox (a
    /// connection then still gets a child of its own, and the reason).
    fn top_up(&mut self) {
        if self
            .unprepared
            .is_some_and(|at| at.elapsed() < PREPARE_BACKOFF)
        {
            return;
        }
        let limit = self.settings.max_children + PREPARED;
        while self.prepared.len() < PREPARED && self.children.len() < limit {
            if let Err(e) = self.prepare() {
                eprintln!("faas-init: preparing a child: {e}");
                return;
            }
        }
    }

    /// Hands `conn` to a prepared child (one is prepared now if none is);
    /// our copy closes on return, so the client sees the end when the
    /// child's program closes.
    fn hand(&mut self, conn: OwnedFd, received: u64) {
        for _ in 0..2 {
            let pid = match self.prepared.pop_front() {
                Some(pid) => pid,
                None => match self.prepare() {
                    Ok(_) => match self.prepared.pop_front() {
                        Some(pid) => pid,
                        None => break,
                    },
                    Err(e) => {
                        eprintln!("faas-init: a child for a connection: {e}");
                        break;
                    }
                },
            };
            let Some(child) = self.children.get_mut(&pid) else {
                continue;
            };
            let sent = match (&child.state, &self.sdk) {
                (State::Prepared { channel, done }, Some(server)) => {
                    // The fork server's child takes the namespaces once
                    // they are made (the holder says so); the holder is
                    // told to hold them. Failing that, this child serves
                    // the connection itself.
                    match channel::prepared(channel)
                        .and_then(|()| server.hand(&conn, pid, done, received))
                    {
                        Ok(()) => channel::send_to_fork_server(channel),
                        Err(e) => {
                            eprintln!("faas-init: handing a connection to the fork server: {e}");
                            channel::send_connection(channel, &conn, received)
                        }
                    }
                }
                (State::Prepared { channel, .. }, None) => {
                    channel::send_connection(channel, &conn, received)
                }
                (State::Serving { .. }, _) => continue,
            };
            match sent {
                Ok(()) => {
                    child.state = State::Serving {
                        deadline: Instant::now() + self.settings.timeout,
                        killed: false,
                        served: true,
                    };
                    self.count(Stats::started);
                    return;
                }
                // It died making its sandbox (it said why): the next one.
                Err(_) => {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
        self.count(Stats::failed);
        crate::handed::unserved(&conn);
    }

    /// Clones a child that makes its sandbox and waits for a connection.
    fn prepare(&mut self) -> Result<Pid, String> {
        let slot = self.slots.take()?;
        let given = self.slots.get(slot);
        let net = given.and_then(|s| s.net.as_ref()).map(|n| n.as_raw_fd());
        let cgroup = given.and_then(|s| s.cgroup.clone());
        let flags = match net {
            Some(_) => NAMESPACES,
            None => NAMESPACES | CloneFlags::CLONE_NEWNET,
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("a child's channel: {e}"))?;
        let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("a child's pipe: {e}"))?;
        let (plan, mode, program) = (&self.settings.plan, self.mode, &self.program);
        let stats = self.stats;
        let enterable = self.sdk.is_some();
        let channel_fd = theirs.as_raw_fd();
        let done_fd = done_r.as_raw_fd();
        let run = Box::new(move || {
            crate::handed::mark_fork_child();
            // SAFETY: the zygote's descriptors, copied into this child's
            // table by the clone; nothing else in the child owns them.
            let (channel, done, net) = unsafe {
                (
                    OwnedFd::from_raw_fd(channel_fd),
                    OwnedFd::from_raw_fd(done_fd),
                    net.map(|fd| OwnedFd::from_raw_fd(fd)),
                )
            };
            let given = child::Given {
                channel,
                done,
                net,
                cgroup: cgroup.as_deref(),
                stats,
                enterable,
            };
            child::run(plan, mode, program, given)
        });
        // SAFETY: as for the zygote's own clone: one thread, no CLONE_VM,
        // the child ends with `std::process::exit`.
        let pid = unsafe { nix::sched::clone(run, &mut self.stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|e| format!("clone: {e}"))?;
        drop((theirs, done_r));
        self.slots.hold(slot, pid);
        self.children.insert(
            pid,
            Child {
                state: State::Prepared {
                    channel: ours,
                    done: done_w,
                },
            },
        );
        self.prepared.push_back(pid);
        Ok(pid)
    }

    /// Lets the prepared children go: with their channels closed they end.
    fn release_prepared(&mut self) {
        for pid in self.prepared.drain(..) {
            if let Some(child) = self.children.get_mut(&pid) {
                child.state = State::Serving {
                    deadline: Instant::now() + Duration::from_secs(5),
                    killed: false,
                    served: false,
                };
            }
        }
    }

    fn count(&self, what: fn(&Stats)) {
        if let Some(stats) = self.stats {
            what(stats);
        }
    }

    /// Collects every child that ended (each one's status: said only when
    /// it is a failure of faas-init's own, its program's is the log's).
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                    if self.sdk.as_ref().is_some_and(|s| s.is(pid)) {
                        eprintln!(
                            "faas-init: the fork server ended: every connection starts the program afresh"
                        );
                        self.sdk = None;
                    }
                    if let Some(child) = self.children.remove(&pid) {
                        self.slots.release(pid);
                        match child.state {
                            State::Serving { served: true, .. } => self.count(Stats::ended),
                            State::Serving { .. } => {}
                            // It could not make its sandbox (it said why).
                            State::Prepared { .. } => {
                                self.prepared.retain(|p| *p != pid);
                                self.unprepared = Some(Instant::now());
                            }
                        }
                    }
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
        for (pid, child) in &mut self.children {
            if let State::Serving {
                deadline, killed, ..
            } = &mut child.state
            {
                if !*killed && now >= *deadline {
                    eprintln!(
                        "faas-init: a child served its connection longer than {} s: killed",
                        self.settings.timeout.as_secs_f64()
                    );
                    let _ = kill(*pid, Signal::SIGKILL);
                    *killed = true;
                }
            }
        }
    }

    /// Until the next deadline, or for ever.
    fn poll_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        self.children
            .values()
            .filter_map(|c| match c.state {
                State::Serving {
                    deadline,
                    killed: false,
                    ..
                } => Some(deadline.saturating_duration_since(now)),
                _ => None,
            })
            .min()
            .map(|d| {
                let ms = d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            })
            .unwrap_or(PollTimeout::NONE)
    }
}

use nix::libc;
