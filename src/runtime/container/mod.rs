//! One container's life: start-up (`start`: the bundle with config.json
//! and the control socket, the runtime's `create`, our own start through
//! its fifo, and waiting for the handler to connect), then supervision
//! (`supervise`: waiting in the pool, serving a connection bounded by the
//! function's timeout, in reuse mode waiting again) until its process ends
//! or is killed, and finally the removal of what is left. No runtime
//! process lingers meanwhile: the container's process is our child (we are
//! its subreaper), followed through the reaper and signalled through a
//! pidfd. Every path out of here ends in that cleanup (`Guard`), so
//! nothing is left behind.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::fdpass::ControlConn;
use super::reaper::Exit;
use super::{Function, Runtime, RuntimeError};
use crate::runtime::reactor::ControlListener;

mod copy;
mod start;
mod supervise;

/// A container whose process runs, waiting for its handler to connect.
pub struct Starting {
    guard: Guard,
    listener: ControlListener,
    /// Held until the handler is up, which is what starts cost.
    _permit: OwnedSemaphorePermit,
}

/// A container whose handler is connected and waiting for a connection.
pub struct Ready {
    guard: Guard,
    control: ControlConn,
    /// Kept in reuse mode, for the handler's next connect.
    listener: Option<ControlListener>,
}

/// Owns a container's cleanup; dropping it unfinished schedules the cleanup.
struct Guard {
    rt: Arc<Runtime>,
    func: Arc<Function>,
    id: String,
    bundle: PathBuf,
    /// The runtime was asked to create it: it may have state to remove.
    created: bool,
    /// The container's first process, once `create` made it.
    process: Option<Process>,
    /// How that process ended, once it has.
    exited: Option<Exit>,
    /// This guard was made by `drop` of an unfinished one: if it is dropped
    /// unfinished too (the control runtime is going away), it gives up.
    adopted: bool,
    /// Its way out, with `--egress`.
    egress: Option<crate::runtime::sandbox::egress::Link>,
    /// Its cgroup runs at idle priority until it serves (a pool refill).
    idle_start: bool,
    /// Keeps its version's rootfs composed, from its bundle until its
    /// cleanup is done.
    rootfs: Option<super::RootfsUse>,
}

/// A container's first process: our child since its `create` exited.
struct Process {
    pid: i32,
    /// Signals go through this, never through the pid number, which the
    /// kernel may give to another process once this one is reaped.
    pidfd: Option<OwnedFd>,
    /// Its exit, from the reaper; `None` once seen.
    exit: Option<oneshot::Receiver<Exit>>,
}

/// Why a supervisor stopped following its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The container ended by itself.
    Exited,
    /// It must be killed (timeout, retired from the pool, shutdown).
    Kill(&'static str),
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { op, source }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.bundle.as_os_str().is_empty() {
            return;
        }
        if self.adopted {
            // The runtime that ran our cleanup is shutting down; what is
            // left is the next start's to remove (`Runtime::recover`).
            return;
        }
        // Dropped without `finish` (a task was cancelled): clean up anyway.
        let guard = Guard {
            adopted: true,
            rt: Arc::clone(&self.rt),
            func: Arc::clone(&self.func),
            id: std::mem::take(&mut self.id),
            bundle: std::mem::take(&mut self.bundle),
            created: self.created,
            process: self.process.take(),
            idle_start: false,
            exited: self.exited.take(),
            egress: self.egress.take(),
            rootfs: self.rootfs.take(),
        };
        self.rt.control.spawn(guard.finish(End::Kill("dropped")));
    }
}
