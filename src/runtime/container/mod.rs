//! One container's life: start-up (`start`: bundle with config.json and
//! the control socket, `runc run` in the foreground — so runc reaps and
//! deletes it — and waiting for the handler to connect), then supervision
//! (`supervise`: waiting in the pool, serving a connection bounded by the
//! function's timeout, in reuse mode waiting again) until it ends or is
//! killed, and finally the removal of what is left. Every path out of
//! here ends in that cleanup (`Guard`), so nothing is left behind.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::reaper::Exit;
use super::{Function, Runtime, RuntimeError};
use control::ControlListener;

pub mod control;
pub mod phases;
mod start;
mod supervise;

/// A container whose handler is connected and waiting for a connection.
pub struct Ready {
    guard: Guard,
    control: UnixStream,
    /// Kept in reuse mode, for the handler's next connect.
    listener: Option<ControlListener>,
}

/// Owns a container's cleanup; dropping it unfinished schedules the cleanup.
struct Guard {
    rt: Arc<Runtime>,
    func: Arc<Function>,
    id: String,
    bundle: PathBuf,
    /// runc's pid; runc lives as long as the container.
    pid: Option<i32>,
    /// runc's exit, which is the container's end.
    exit: Option<oneshot::Receiver<Exit>>,
    /// How it ended, once it has (runc passes the handler's status on).
    exited: Option<Exit>,
    /// When `runc run` was spawned and when the handler connected, for the
    /// cold-start phases recorded once the hand-over is done.
    started: Option<Started>,
}

/// Moments of a container's start, for its phase metrics.
#[derive(Debug, Clone, Copy)]
struct Started {
    spawned: SystemTime,
    /// runc's own creation time, read from its state at connect (a
    /// container that answers fast may be gone before anything later).
    created: Option<SystemTime>,
    connected: SystemTime,
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
        // Dropped without `finish` (a task was cancelled): clean up anyway.
        let guard = Guard {
            rt: Arc::clone(&self.rt),
            func: Arc::clone(&self.func),
            id: std::mem::take(&mut self.id),
            bundle: std::mem::take(&mut self.bundle),
            pid: self.pid.take(),
            exit: self.exit.take(),
            exited: self.exited.take(),
            started: self.started.take(),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(guard.finish(End::Kill("dropped")));
        }
    }
}
