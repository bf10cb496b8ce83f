//! Child processes and their exit statuses. faasd is a child subreaper:
//! should a `runc` die before its container, the container's processes are
//! re-parented to us and reaped here (PID 1 on these hosts does not reap).
//! One task answers SIGCHLD with `waitpid(-1)` and hands each status to
//! whoever spawned that pid.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

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
                None => tracing::debug!(pid, %exit, "reaped an orphan"),
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
}
