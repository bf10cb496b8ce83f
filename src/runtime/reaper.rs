//! Child processes and their exit statuses. faasd is a child subreaper:
//! a container's first process becomes our child when the `create` that
//! made it exits, and whatever else is orphaned below us comes to us too
//! (PID 1 on these hosts does not reap). One task answers SIGCHLD with
//! `waitpid(-1)` and hands each status to whoever waits for that pid.
//!
//! A container's process is only known (from the runtime's pid file) after
//! it became ours, so it may in rare cases (killed before its start) be
//! reaped before anyone asks: such exits are kept for a while and handed
//! to the first `claim` of that pid. A pid is only reused after the kernel
//! has gone through every other one, far longer than that while.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an exit nobody waited for is kept for a late `claim`.
const KEEP_UNCLAIMED: Duration = Duration::from_secs(30);
/// Bound on kept exits (orphans nobody will ever claim).
const MAX_UNCLAIMED: usize = 4096;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Default)]
struct State {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Handle to the reaper; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts the reaping task on
    /// the current tokio runtime.
    pub fn start() -> std::io::Result<Self> {
        nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Self {
            state: Arc::new(Mutex::new(State::default())),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reap_all(&self) {
        let mut state = self.lock();
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid");
                    break;
                }
            };
            let pid = pid.as_raw();
            match state.waiters.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => keep_unclaimed(&mut state, pid, exit),
            }
        }
    }

    /// Spawns `cmd` and returns its pid and a future exit. The lock is held
    /// across the spawn so the reaper cannot see the exit before we listen.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(i32, oneshot::Receiver<Exit>)> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Dropping `Child` neither kills nor waits; the reaper owns the exit.
        drop(child);
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Spawns `cmd` with its standard streams as `cmd` sets them, and
    /// returns them beside what `spawn` does (for a short command whose
    /// input and output we use).
    pub fn spawn_with_io(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(i32, oneshot::Receiver<Exit>, std::process::Child)> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(pid, tx);
        // The caller reads and writes the child's pipes only: its exit
        // comes from the reaper (`Child::wait` would find it reaped).
        Ok((pid, rx, child))
    }

    /// The future exit of `pid`, a process that became our child without
    /// our spawning it (a container's first process).
    pub fn claim(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let mut state = self.lock();
        let (tx, rx) = oneshot::channel();
        match state.unclaimed.remove(&pid) {
            Some((exit, at)) if at.elapsed() < KEEP_UNCLAIMED => {
                let _ = tx.send(exit);
            }
            _ => {
                state.waiters.insert(pid, tx);
            }
        }
        rx
    }
}

fn keep_unclaimed(state: &mut State, pid: i32, exit: Exit) {
    tracing::debug!(pid, %exit, "reaped a process nobody waits for yet");
    if state.unclaimed.len() >= MAX_UNCLAIMED {
        state
            .unclaimed
            .retain(|_, (_, at)| at.elapsed() < KEEP_UNCLAIMED);
        if state.unclaimed.len() >= MAX_UNCLAIMED {
            state.unclaimed.clear();
        }
    }
    state.unclaimed.insert(pid, (exit, Instant::now()));
}
