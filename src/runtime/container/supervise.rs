//! Following a started container to its end: the hand-over of its first
//! connection (cold path) or its place in the pool, the function's timeout
//! while it serves, the answer to a client whose handler died silent, and
//! the cleanup once it ended (kill if asked, runc gone, container deleted,
//! cgroup read and removed, bundle removed).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::ControlListener;
use super::{End, Guard, Ready};
use crate::respond::{self, Status};
use crate::runtime::pool::reuse::Reuse;
use crate::runtime::pool::{Handed, Slot, SlotWatch, Taken};
use crate::runtime::sandbox::cgroup;
use crate::runtime::{fdpass, Function, Lease, RuntimeError};
use crate::timer::sleep_until_opt;

/// Time the container gets to die after SIGKILL before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Ready {
    /// Sends the client socket to the handler (the cold path); the
    /// container is then supervised in the background until it ends.
    /// On failure the lease comes back with the error.
    pub fn hand_over(
        self,
        client: BorrowedFd<'_>,
        lease: Lease,
    ) -> Result<Handed, (Lease, RuntimeError)> {
        let Ready {
            guard,
            control,
            listener,
        } = self;
        if let Err(source) = fdpass::send_fd(control.as_fd(), client) {
            let id = guard.id.clone();
            tokio::spawn(guard.finish(End::Kill("hand-over failed")));
            return Err((lease, RuntimeError::Handoff { id, source }));
        }
        drop(control);
        match listener {
            None => {
                tokio::spawn(supervise_once(guard, Taken::new(lease, client)));
                Ok(Handed::Done)
            }
            Some(listener) => {
                let reuse = guard.reuse(listener);
                reuse.served.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(supervise_reuse(guard, Arc::clone(&reuse)));
                Ok(Handed::AwaitNext(reuse, lease))
            }
        }
    }

    /// Puts the container into its function's pool (before returning, so
    /// the pool's count is right at once), supervised there.
    pub fn park(self) {
        let Ready {
            mut guard,
            control,
            listener,
        } = self;
        let func = Arc::clone(&guard.func);
        match listener {
            None => {
                let watch = offer(&func, control);
                tokio::spawn(async move {
                    guard.record_phases().await;
                    match wait_in_pool(&mut guard, &func, watch).await {
                        Parked::Handed(taken) => supervise_once(guard, taken).await,
                        Parked::Gone(end) => guard.finish(end).await,
                    }
                });
            }
            Some(listener) => {
                let reuse = guard.reuse(listener);
                func.pool.push(Slot::reuse(control, Arc::clone(&reuse)));
                tokio::spawn(supervise_reuse(guard, reuse));
            }
        }
    }
}

impl Guard {
    /// Kills the container if asked to, waits for runc to end, makes sure
    /// the container is deleted, removes the bundle.
    pub(super) async fn finish(mut self, end: End) {
        if let End::Kill(reason) = end {
            self.kill(reason).await;
        }
        if let Some(exit) = self.exit.take() {
            // Killed or about to end by itself; either way it is short.
            if tokio::time::timeout(KILL_WAIT, exit).await.is_err() {
                self.kill_runc().await;
            }
        }
        // runc deletes a container it ran to the end; anything else (runc
        // killed, start failed half-way) is deleted here.
        if self.rt.runc.exists(&self.id) {
            if let Err(e) = self.rt.runc.delete(&self.id).await {
                tracing::warn!(id = %self.id, error = %e, "runc delete");
            }
        }
        if self.pid.is_some() {
            if let Some(usage) = cgroup::usage(&self.rt.cgroup_scope, &self.id) {
                self.func.ledger.usage(usage.cpu_seconds, usage.peak_bytes);
            }
            cgroup::remove(&self.rt.cgroup_scope, &self.id);
        }
        let bundle = std::mem::take(&mut self.bundle);
        let removal =
            tokio::task::spawn_blocking(move || crate::image::store::remove_tree(&bundle)).await;
        if let Ok(Err(e)) = removal {
            tracing::warn!(id = %self.id, error = %e, "removing bundle");
        }
        if self.rt.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.rt.idle.notify_waiters();
        }
    }

    async fn kill(&mut self, reason: &'static str) {
        if self.exit.is_none() {
            return;
        }
        tracing::debug!(id = %self.id, reason, "killing container");
        if let Err(e) = self.rt.runc.kill(&self.id, "KILL").await {
            tracing::debug!(id = %self.id, error = %e, "runc kill");
        }
    }

    /// runc itself is stuck: kill it; `finish` then deletes the container.
    async fn kill_runc(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            tracing::warn!(id = %self.id, pid, "runc did not end; killed it");
        }
    }

    /// Waits for the container to end by itself until `deadline` (if any);
    /// faasd stopping shortens that to the shutdown grace.
    async fn wait_exit(&mut self, deadline: Option<Instant>) -> End {
        let Some(exit) = self.exit.as_mut() else {
            return End::Exited;
        };
        let mut stopping = self.rt.stopping.subscribe();
        let grace = self.rt.config.shutdown_grace;
        loop {
            tokio::select! {
                exited = &mut *exit => {
                    self.exit = None;
                    self.exited = exited.ok();
                    return End::Exited;
                },
                _ = sleep_until_opt(deadline) => return End::Kill("timeout"),
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        if let Ok(exited) = tokio::time::timeout(grace, &mut *exit).await {
                            self.exit = None;
                            self.exited = exited.ok();
                            return End::Exited;
                        }
                        return End::Kill("shutdown");
                    }
                }
            }
        }
    }

    /// Makes this a reuse-mode container, counted live until
    /// `supervise_reuse` ends.
    fn reuse(&self, listener: ControlListener) -> Arc<Reuse> {
        let options = &self.func.options;
        self.func.pool.reuse_started();
        Reuse::new(
            listener.into_inner(),
            options.max_requests,
            Duration::from_secs(options.timeout_secs),
        )
    }
}

enum Parked {
    Handed(Taken),
    Gone(End),
}

/// Puts the connected one-shot handler into the pool.
fn offer(func: &Function, control: UnixStream) -> SlotWatch {
    let (slot, watch) = Slot::new(control);
    func.pool.push(slot);
    watch
}

/// Waits until the data plane uses the offered container, it dies, or the
/// pool retires it.
async fn wait_in_pool(guard: &mut Guard, func: &Arc<Function>, mut watch: SlotWatch) -> Parked {
    tokio::select! {
        handed = &mut watch.handed => match handed {
            Ok(taken) => Parked::Handed(taken),
            Err(_) => Parked::Gone(End::Kill("retired from the pool")),
        },
        end = guard.wait_exit(None) => {
            // Died (or faasd stops) while waiting: out of the pool, so it
            // is replaced. If the data plane took it meanwhile, its send
            // failed and it went on with a cold start.
            if watch.withdraw() {
                func.pool.withdrawn();
            }
            Parked::Gone(end)
        }
    }
}

/// A one-shot container with a connection: served until it ends, or killed
/// at the function's timeout.
async fn supervise_once(mut guard: Guard, taken: Taken) {
    let deadline = Instant::now() + Duration::from_secs(guard.func.options.timeout_secs);
    guard.record_phases().await;
    let end = guard.wait_exit(Some(deadline)).await;
    let Taken { lease, client } = taken;
    if let Some(client) = client {
        answer_if_silent(&guard, &end, client);
    }
    drop(lease);
    guard.finish(end).await;
}

/// A handler that failed or timed out without sending a byte leaves its
/// client waiting for nothing: faasd answers in its place. (One that sent
/// something has said what it had to say; its client sees the close.)
fn answer_if_silent(guard: &Guard, end: &End, client: OwnedFd) {
    let (status, reason) = match end {
        End::Kill("timeout") => (Status::GatewayTimeout, "the function timed out"),
        End::Exited if guard.exited.is_some_and(|e| !e.success()) => {
            (Status::BadGateway, "the function's handler failed")
        }
        _ => return,
    };
    if crate::rawfd::bytes_sent(client.as_fd()) != Some(0) {
        return;
    }
    tracing::info!(
        function = %guard.func.name,
        id = %guard.id,
        exit = ?guard.exited,
        "handler ended without answering: {reason}"
    );
    tokio::spawn(respond::error_std(client.into(), status, reason));
}

/// A reuse-mode container for its whole life. The per-connection cycle runs
/// in `reuse::await_next`; this only wakes when the container ends or must
/// be killed (timeout, retired, shutdown).
async fn supervise_reuse(mut guard: Guard, reuse: Arc<Reuse>) {
    guard.record_phases().await;
    let end = tokio::select! {
        end = guard.wait_exit(None) => end,
        _ = reuse.kill.notified() => End::Kill(reuse.retired().unwrap_or("retired")),
    };
    if reuse.withdraw() {
        guard.func.pool.withdrawn();
    }
    let func = Arc::clone(&guard.func);
    guard.finish(end).await;
    reuse.end();
    func.pool.reuse_ended();
}
