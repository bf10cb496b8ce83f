//! Following a started container to its end: the hand-over of its first
//! connection (cold path) or its place in the pool, the function's timeout
//! while it serves, the answer to a client whose handler died silent, and
//! the cleanup once its process ended (killed if asked; the runtime's
//! state, the cgroups and the bundle removed at idle priority by the
//! janitor, so none of it competes with a request).

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::copy::{ClientCopy, Release};
use super::{End, Guard, Ready};
use crate::runtime::fdpass::ControlConn;
use crate::runtime::oci::Flavor;
use crate::runtime::pool::reuse::Reuse;
use crate::runtime::pool::{
    Handed, Lease, Slot, SlotWatch, Taken, SERVER_BUSY_MAX, SERVER_IDLE_CPU, SERVER_IDLE_FOR,
    SERVER_SETTLE,
};
use crate::runtime::reactor::ControlListener;
use crate::runtime::reaper::Exit;
use crate::runtime::respond::{self, Status};
use crate::runtime::sandbox::cgroup;
use crate::runtime::{fdpass, forkstats, Function, RuntimeError};
use crate::sys::closer::Foreign;
use crate::sys::timer::sleep_until_opt;

/// Time the container gets to die after SIGKILL before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Ready {
    /// Sends the client socket to the handler (the cold path) as the data
    /// plane sends one to a container from the pool, through the slot the
    /// container would have there; it is then supervised in the background
    /// until it ends. On failure the lease comes back with the error.
    pub fn hand_over(
        self,
        client: BorrowedFd<'_>,
        lease: Lease,
    ) -> Result<Handed, (Lease, RuntimeError)> {
        let id = self.guard.id.clone();
        let rt = Arc::clone(&self.guard.rt);
        let (slot, supervise) = self.into_slot("hand-over failed");
        // Started for this connection: the pool never sees it.
        slot.claim();
        let handed = slot.hand_over(client, lease);
        rt.control.spawn(supervise);
        handed.map_err(|(lease, source)| (lease, RuntimeError::Handoff { id, source }))
    }

    /// Kills the container: it was only started to see that it serves
    /// (a version whose pool is empty).
    pub fn discard(self) {
        let rt = Arc::clone(&self.guard.rt);
        rt.control.spawn(self.guard.finish(End::Kill("discarded")));
    }

    /// Puts the container into its function's pool (before returning, so
    /// the pool's count is right at once), supervised there on the control
    /// runtime (whatever runtime started it).
    pub fn park(mut self) {
        self.guard.serve_at_normal();
        let func = Arc::clone(&self.guard.func);
        let rt = Arc::clone(&self.guard.rt);
        // What a waiting container takes, for `--pool-memory`.
        if let Some(bytes) = cgroup::memory_now(&rt.cgroup_scope, &self.guard.id) {
            func.pool.measured_memory(bytes);
        }
        if func.options.hands_listener() {
            func.pool.reuse_started();
            rt.control
                .spawn(supervise_activation(self.guard, self.control));
            return;
        }
        let (slot, supervise) = self.into_slot("retired from the pool");
        func.pool.push(slot);
        rt.control.spawn(supervise);
    }

    /// The slot that hands the container its connections, and its
    /// supervision until it ends, to be spawned once the slot is placed
    /// (a one-shot container unused when its slot goes is killed for
    /// `unused`). Whether it is one-shot or reused is decided here only;
    /// the slot carries it to the hand-over.
    fn into_slot(self, unused: &'static str) -> (Slot, Supervision) {
        let Ready {
            mut guard,
            control,
            listener,
        } = self;
        match listener {
            None => {
                let (slot, watch) = Slot::new(control);
                let supervise = async move {
                    let func = Arc::clone(&guard.func);
                    match wait_in_pool(&mut guard, &func, watch, unused).await {
                        Parked::Handed(taken) => supervise_once(guard, taken).await,
                        Parked::Gone(end) => guard.finish(end).await,
                    }
                };
                (slot, Box::pin(supervise))
            }
            Some(listener) => {
                let reuse = guard.reuse(listener, control);
                let slot = Slot::reuse(Arc::clone(&reuse));
                (slot, Box::pin(supervise_reuse(guard, reuse)))
            }
        }
    }
}

/// A container's supervision, from its slot's placing to its end.
type Supervision = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Guard {
    /// One of faasd's lines about this container in the function's log.
    fn say(&self, text: &str) {
        self.func.say(&format!("{}: {text}", self.id));
    }

    /// This container failed (`what`, and how its process ended): said in
    /// the function's log, counted by its pool (back-off, crash loops).
    fn failed(&self, what: &str) {
        let exit = self.exited.map(|e| format!(" ({e})")).unwrap_or_default();
        let why = format!("{what}{exit}");
        self.say(&why);
        self.func.pool.failed(why);
        self.func.ledger.container_failed();
    }

    /// Waits for the container's process to end and records how (at once
    /// if it already has; never if there is none).
    pub(super) async fn wait_process(&mut self) -> Exit {
        if let Some(exit) = self.exited {
            return exit;
        }
        let Some(rx) = self.process.as_mut().and_then(|p| p.exit.as_mut()) else {
            return std::future::pending().await;
        };
        // The reaper only drops a waiter at shutdown, when it no longer matters.
        let exit = rx.await.unwrap_or(Exit::Signal(0));
        if let Some(p) = self.process.as_mut() {
            p.exit = None;
        }
        self.exited = Some(exit);
        exit
    }

    /// Waits for the container to end by itself until `deadline` (if any);
    /// faasd stopping shortens that to the shutdown grace.
    async fn wait_exit(&mut self, deadline: Option<Instant>) -> End {
        let mut stopping = self.rt.stopping.subscribe();
        let grace = self.rt.config.shutdown_grace;
        loop {
            if *stopping.borrow_and_update() {
                if tokio::time::timeout(grace, self.wait_process())
                    .await
                    .is_ok()
                {
                    return End::Exited;
                }
                return End::Kill("shutdown");
            }
            tokio::select! {
                _ = self.wait_process() => return End::Exited,
                _ = sleep_until_opt(deadline) => return End::Kill("timeout"),
                changed = stopping.changed() => {
                    if changed.is_err() {
                        return End::Kill("shutdown");
                    }
                }
            }
        }
    }

    /// Kills the container if asked to, waits for its process to end, and
    /// removes what is left: the runtime's state (runc and crun keep only a
    /// directory, removed by us; others are asked to `delete`), the
    /// cgroups (read for usage first) and the bundle.
    pub(super) async fn finish(mut self, end: End) {
        if let End::Kill(reason) = end {
            self.kill(reason);
        }
        if self.exited.is_none() && self.process.is_some() {
            // Killed or about to end by itself; either way it is short.
            if tokio::time::timeout(KILL_WAIT, self.wait_process())
                .await
                .is_err()
            {
                tracing::warn!(id = %self.id, "container process did not end after SIGKILL");
            }
        }
        let rt = Arc::clone(&self.rt);
        let ended = self.exited.is_some() && rt.oci.flavor() != Flavor::Other;
        // Read before the runtime's own `delete`, which removes the cgroup.
        let mut usage = None;
        if self.created && !ended {
            if self.process.is_some() {
                usage = cgroup::usage(&rt.cgroup_scope, &self.id);
            }
            if let Err(e) = rt.oci.delete(&self.id).await {
                tracing::warn!(id = %self.id, error = %e, "runtime delete");
            }
        }
        let id = std::mem::take(&mut self.id);
        let bundle = std::mem::take(&mut self.bundle);
        let forget = self.created && ended;
        let had_cgroup = self.process.is_some();
        let oci = rt.oci.clone();
        let scope = rt.cgroup_scope.clone();
        let egress = self.egress.take();
        let rootfs = self.rootfs.take();
        let links = Arc::clone(&rt);
        let cleanup = rt.janitor.run(move || {
            if let Some(link) = egress {
                links.egress.release(link);
            }
            let mut usage = usage;
            if forget {
                if let Err(e) = oci.forget_ended(&id) {
                    tracing::warn!(%id, error = %e, "removing the runtime's state");
                }
            }
            if had_cgroup {
                usage = usage.or_else(|| cgroup::usage(&scope, &id));
                cgroup::remove(&scope, &id);
            }
            if let Err(e) =
                crate::runtime::sandbox::scratch::unmount_root(&links.view.path(&bundle))
            {
                tracing::warn!(%id, error = %e, "unmounting the writable layer");
            }
            if let Err(e) = crate::sys::fs::remove_tree(&bundle) {
                tracing::warn!(%id, error = %e, "removing bundle");
            }
            // Its writable layer (composed on the rootfs) is gone.
            drop(rootfs);
            usage
        });
        if let Ok(Some(usage)) = cleanup.await {
            self.func.ledger.usage(usage.cpu_seconds, usage.peak_bytes);
        }
        if rt.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            rt.idle.notify_waiters();
        }
    }

    /// SIGKILL to the container's first process: its pid namespace goes
    /// with it.
    fn kill(&mut self, reason: &'static str) {
        if self.exited.is_some() {
            return;
        }
        let Some(process) = &self.process else { return };
        tracing::debug!(id = %self.id, pid = process.pid, reason, "killing container");
        if let Some(pidfd) = &process.pidfd {
            if let Err(e) =
                crate::sys::pidfd_send_signal(pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL)
            {
                tracing::debug!(id = %self.id, error = %e, "kill");
            }
        }
    }

    /// Makes this a reuse-mode container, counted live until
    /// `supervise_reuse` ends.
    fn reuse(&self, listener: ControlListener, control: ControlConn) -> Arc<Reuse> {
        let options = &self.func.options;
        self.func.pool.reuse_started();
        // A full zygote asks for more once a child ends, at the latest at
        // the function's timeout (it kills the child then): its ready byte
        // may come that long after the batch before, and a little more.
        let grace = match options.fork {
            true => FORK_READY_GRACE,
            false => Duration::ZERO,
        };
        Reuse::new(
            listener.into_inner(),
            control,
            options.max_requests,
            Duration::from_secs(options.timeout_secs) + grace,
        )
    }
}

enum Parked {
    Handed(Taken),
    Gone(End),
}

/// Waits until the data plane uses the offered container, it dies, or the
/// pool retires it.
async fn wait_in_pool(
    guard: &mut Guard,
    func: &Arc<Function>,
    mut watch: SlotWatch,
    unused: &'static str,
) -> Parked {
    // A quick handler is often done with its connection before we look:
    // its hand-over and its end are then both there, and the hand-over
    // is what happened first.
    let end = tokio::select! {
        biased;
        handed = &mut watch.handed => return match handed {
            Ok(taken) => Parked::Handed(taken),
            Err(_) => Parked::Gone(End::Kill(unused)),
        },
        end = guard.wait_exit(None) => end,
    };
    if watch.withdraw() {
        func.pool.withdrawn();
    } else if let Ok(taken) = watch.handed.await {
        // The data plane took it just before its end: the hand-over is
        // on its way, and the connection is this container's to answer.
        return Parked::Handed(taken);
    }
    // Died (or faasd stops) while waiting: out of the pool, so it is
    // replaced. If the data plane took it meanwhile, its send failed and
    // it went on with a cold start.
    if end == End::Exited {
        guard.failed("exited while waiting in the pool");
    }
    Parked::Gone(end)
}

/// A one-shot container with a connection: served until it ends, or killed
/// at the function's timeout. Our copy of the connection (kept to answer a
/// handler's silent death) holds the client's FIN back while we have it,
/// so it goes as soon as it is not needed: when the process ends (we hear
/// of that at once: it is our child), or when a check finds the handler
/// has answered — for a handler that closes and then lingers.
async fn supervise_once(mut guard: Guard, taken: Taken) {
    let deadline = Instant::now() + Duration::from_secs(guard.func.options.timeout_secs);
    let Taken {
        lease,
        client,
        control,
    } = taken;
    let release = Release::of(guard.func.options.kind);
    let copy = ClientCopy::watch(client, control, release);
    let end = guard.wait_exit(Some(deadline)).await;
    if end == End::Kill("timeout") {
        let secs = guard.func.options.timeout_secs;
        guard.say(&format!(
            "still serving at its --timeout of {secs} s: killed"
        ));
    }
    // At a timeout the container still runs: a server that has the
    // connection gives it back for the 504.
    let client = if end == End::Kill("timeout") {
        copy.take_back(&cgroup::procs(&guard.rt.cgroup_scope, &guard.id))
    } else {
        copy.take()
    };
    if let Some(client) = client {
        answer_if_silent(&guard, &end, client);
    }
    drop(lease);
    guard.finish(end).await;
}

/// A handler that failed or timed out without sending a byte leaves its
/// client waiting for nothing: faasd answers in its place. (One that sent
/// something has said what it had to say; its client sees the close.)
fn answer_if_silent(guard: &Guard, end: &End, client: Foreign<OwnedFd>) {
    let (status, reason) = match end {
        End::Kill("timeout") => (Status::GatewayTimeout, "the function timed out"),
        End::Exited if guard.exited.is_some_and(|e| !e.success()) => {
            (Status::BadGateway, "the function's handler failed")
        }
        _ => return,
    };
    if crate::sys::rawfd::bytes_sent(client.as_fd()) != Some(0) {
        return;
    }
    let exit = guard.exited.map(|e| format!(" ({e})")).unwrap_or_default();
    guard.say(&format!(
        "ended{exit} without answering its connection: {reason}"
    ));
    let reason = format!("{reason}; faas logs {}", guard.func.name);
    guard
        .rt
        .control
        .spawn(async move { respond::error_std(client, status, &reason).await });
}

/// A socket-activation container for its whole life: it gets the
/// function's listening socket (once the data plane has bound it) and
/// accepts by itself until it ends — then the pool starts another — or
/// the version is retired.
async fn supervise_activation(mut guard: Guard, control: ControlConn) {
    let func = Arc::clone(&guard.func);
    let retired = func.pool.retired.notified();
    tokio::pin!(retired);
    retired.as_mut().enable();
    let mut settled = false;
    let end = if func.pool.is_closed() {
        End::Kill("retired")
    } else {
        tokio::select! {
            listener = func.listener.get() => {
                match fdpass::send_fd(control.as_fd(), listener.as_fd()) {
                    Ok(()) => {
                        drop(control);
                        let settle = server_settled(guard.rt.cgroup_scope.clone(), guard.id.clone());
                        tokio::pin!(settle);
                        loop {
                            tokio::select! {
                                end = guard.wait_exit(None) => break end,
                                _ = &mut retired => break End::Kill("retired"),
                                _ = &mut settle, if !settled => {
                                    settled = true;
                                    func.pool.came_up();
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(id = %guard.id, error = %e, "handing the listener over");
                        End::Kill("hand-over failed")
                    }
                }
            }
            end = guard.wait_exit(None) => end,
            _ = &mut retired => End::Kill("retired"),
        }
    };
    if end == End::Exited {
        guard.failed(if settled {
            "the server ended; starting another"
        } else {
            "the server ended before it was up (idle, waiting for connections)"
        });
    }
    guard.finish(end).await;
    func.pool.reuse_ended();
}

/// Resolves once a socket-activated server in container `id` is up:
/// alive `SERVER_SETTLE`, then idle (see `SERVER_IDLE_CPU`), or busy for
/// `SERVER_BUSY_MAX`. Wall time alone misjudged a server still loading on
/// a busy host as up.
async fn server_settled(scope: String, id: String) {
    let started = Instant::now();
    tokio::time::sleep(SERVER_SETTLE).await;
    let cpu = || cgroup::usage(&scope, &id).map(|u| u.cpu_seconds);
    let mut before = cpu();
    while started.elapsed() < SERVER_BUSY_MAX {
        tokio::time::sleep(SERVER_IDLE_FOR).await;
        let now = cpu();
        match (before, now) {
            (Some(b), Some(n)) if n - b < SERVER_IDLE_CPU.as_secs_f64() => return,
            // Usage unreadable: wall time is all there is.
            (None, None) => return,
            _ => before = now,
        }
    }
}

/// How much longer than `--timeout` a `--fork` zygote may take to ask for
/// more connections (see `Guard::reuse`).
const FORK_READY_GRACE: Duration = Duration::from_secs(2);

/// How often a `--fork` zygote's counters are read (its ring of start
/// latencies holds 1,024: four times this machine's rate per zygote).
const FORK_STATS_EVERY: Duration = Duration::from_millis(250);

/// Folds what a zygote counted since the last reading into its
/// function's ledger.
fn fold(func: &Function, tally: Option<&mut forkstats::Tally>) {
    if let Some(delta) = tally.and_then(|t| t.read().ok()) {
        func.ledger.forked(&delta);
    }
}

/// A reuse-mode container for its whole life. The per-connection cycle runs
/// in `reuse::await_next`; this only wakes when the container ends or must
/// be killed (timeout, retired, shutdown).
async fn supervise_reuse(mut guard: Guard, reuse: Arc<Reuse>) {
    let mut tally = match guard.func.options.fork {
        true => forkstats::Tally::open(&guard.bundle).ok(),
        false => None,
    };
    let mut every = tokio::time::interval(FORK_STATS_EVERY);
    let end = loop {
        tokio::select! {
            end = guard.wait_exit(None) => break end,
            _ = reuse.kill.notified() => break End::Kill(reuse.retired().unwrap_or("retired")),
            _ = every.tick(), if tally.is_some() => fold(&guard.func, tally.as_mut()),
        }
    };
    fold(&guard.func, tally.as_mut());
    if end == End::Exited && guard.exited.is_some_and(|e| !e.success()) {
        guard.failed("the reused handler exited");
    }
    if reuse.withdraw() {
        guard.func.pool.withdrawn();
    }
    let func = Arc::clone(&guard.func);
    guard.finish(end).await;
    reuse.end();
    func.pool.reuse_ended();
}
