//! What a `--fork` zygote gives each child alive, and the next child once
//! the one before it has ended: a slot holding a network namespace
//! (loopback up, low ports open to any user, as in every faasd
//! container) and, where faasd gave the zygote its pids cgroup
//! (`layout::CGROUP`, cgroup v1), a pids cgroup of the child's own, so a
//! fork bomb in one child leaves the container's others room.
//!
//! Why a namespace may pass from one child to the next: a child ends when
//! its pid namespace does, so every process of it is gone, and with them
//! every socket it held — its listeners, its abstract Unix sockets, its
//! connections (what the kernel keeps of a closed connection, TIME_WAIT,
//! carries no data and accepts nothing). What else a namespace holds —
//! addresses, routes, firewall rules, its `net.*` settings — a child can
//! change only with CAP_NET_ADMIN, or as root through `/proc/sys`, which a
//! child sees read-only; a function given CAP_NET_ADMIN (or CAP_NET_RAW)
//! gets a fresh namespace for every child instead. Measured here, making
//! and tearing down a namespace per child costs about a third of the
//! machine's rate of fresh children (docs/decisions.md).
//!
//! Concurrent children never share one: a namespace is handed to a child
//! only while no other holds it.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use faas_protocol::layout;

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The zygote's slots, each with the child in it (if any).
pub struct Slots {
    slots: Vec<Slot>,
    /// The helper's stack while it sets a new namespace up.
    stack: Vec<u8>,
    /// Every child gets a fresh network namespace (none is recycled).
    fresh_net: bool,
    /// Each child's pids limit, if the zygote has a cgroup to make them in.
    pids: Option<u64>,
}

pub struct Slot {
    /// Its network namespace; `None`: a fresh one for every child.
    pub net: Option<OwnedFd>,
    /// Its pids cgroup's directory.
    pub cgroup: Option<PathBuf>,
    child: Option<Pid>,
}

impl Slots {
    pub fn new(fresh_net: bool, pids: Option<u64>) -> Self {
        let pids = pids.filter(|_| Path::new(layout::CGROUP).join("pids.max").is_file());
        Self {
            slots: Vec::new(),
            stack: vec![0u8; 64 << 10],
            fresh_net,
            pids,
        }
    }

    /// A slot no child holds, made if none is free; its index.
    pub fn take(&mut self) -> Result<usize, String> {
        if let Some(free) = self.slots.iter().position(|s| s.child.is_none()) {
            return Ok(free);
        }
        let n = self.slots.len();
        let net = match self.fresh_net {
            true => None,
            false => Some(self.make()?),
        };
        let cgroup = match self.pids {
            Some(limit) => Some(child_cgroup(n, limit)?),
            None => None,
        };
        self.slots.push(Slot {
            net,
            cgroup,
            child: None,
        });
        Ok(n)
    }

    pub fn get(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot)
    }

    /// `slot` is held by `child` until it is reaped.
    pub fn hold(&mut self, slot: usize, child: Pid) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.child = Some(child);
        }
    }

    /// `child` has ended (its whole pid namespace with it): its
    /// namespace is free.
    pub fn release(&mut self, child: Pid) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.child == Some(child)) {
            s.child = None;
        }
    }

    /// A new namespace set up as a container's, made by a helper cloned
    /// into it: the zygote could not come back (its own namespace is the
    /// container's user namespace's, where it holds no capability).
    fn make(&mut self) -> Result<OwnedFd, String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("a socket pair for a new namespace: {e}"))?;
        let theirs_fd = theirs.as_raw_fd();
        let helper = Box::new(move || {
            let sent = set_up().and_then(|()| {
                let net = open(
                    "/proc/self/ns/net",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| format!("opening a new network namespace: {e}"))?;
                // SAFETY: the pair's end this helper inherited, open for
                // the call.
                let theirs = unsafe { BorrowedFd::borrow_raw(theirs_fd) };
                faas_protocol::send_fds(theirs, &[net.as_fd()])
                    .map_err(|e| format!("sending a new network namespace: {e}"))
            });
            let code = match sent {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("faas-init: {e}");
                    1
                }
            };
            std::process::exit(code)
        });
        // SAFETY: one thread, no CLONE_VM (see `fork`); the helper ends
        // with `std::process::exit`.
        let pid = unsafe {
            nix::sched::clone(
                helper,
                &mut self.stack,
                CloneFlags::CLONE_NEWNET,
                Some(nix::libc::SIGCHLD),
            )
        }
        .map_err(|e| format!("cloning into a new network namespace: {e}"))?;
        drop(theirs);
        let mut byte = [0u8; 1];
        let got = faas_protocol::recv_fds(ours.as_fd(), &mut byte, faas_protocol::Wait::Yes);
        let _ = waitpid(pid, None);
        got.map_err(|e| format!("receiving a new network namespace: {e}"))?
            .fds
            .into_iter()
            .next()
            .ok_or_else(|| "the new network namespace was not set up".to_string())
    }
}

/// This namespace as a container's: loopback up, any user may bind
/// port 80.
pub fn set_up() -> Result<(), String> {
    crate::seal::interface_up("lo").map_err(|e| format!("bringing lo up: {e}"))?;
    let knob = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    std::fs::write(knob, "0").map_err(|e| format!("writing {knob}: {e}"))
}

/// The pids cgroup of slot `n`: made below the zygote's, with `limit`.
fn child_cgroup(n: usize, limit: u64) -> Result<PathBuf, String> {
    let dir = Path::new(layout::CGROUP).join(format!("child{n}"));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making {}: {e}", dir.display())),
    }
    std::fs::write(dir.join("pids.max"), limit.to_string())
        .map_err(|e| format!("setting {}'s pids.max: {e}", dir.display()))?;
    Ok(dir)
}

/// Moves the calling child into its slot's pids cgroup.
pub fn join(cgroup: &Path) -> Result<(), String> {
    std::fs::write(cgroup.join("cgroup.procs"), "0")
        .map_err(|e| format!("joining {}: {e}", cgroup.display()))
}

/// Moves the calling child into `net`.
pub fn enter(net: &OwnedFd) -> Result<(), String> {
    setns(net.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("entering its network namespace: {e}"))
}
