//! One container's life: bundle (config.json and the control socket),
//! `runc run` (in the foreground, so runc reaps and deletes it), waiting
//! for the handler to connect, then a supervisor task that follows it
//! through its phases — waiting in the pool, serving a connection (bounded
//! by the function's timeout), in reuse mode waiting again — until it ends
//! or is killed, and finally removes what is left. Every path out of here
//! ends in that cleanup, so nothing is left behind.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::os::unix::net::{UnixListener as StdListener, UnixStream};

use tokio::sync::oneshot;

use super::control::ControlListener;
use super::pool::{HandedOver, Slot, SlotWatch, Taken};
use super::reaper::Exit;
use super::reuse::Reuse;
use super::spec::{render, SpecInput};
use super::{cgroup, logs};
use super::{fdpass, Function, Lease, Runc, Runtime, RuntimeError};
use crate::metrics::Phase;
use crate::respond::{self, Status};

/// How long a supervisor waits for the start watcher's event.
const PHASE_WAIT_STEP: Duration = Duration::from_millis(5);
const PHASE_WAIT_STEPS: u32 = 40;
/// Time the container gets to die after SIGKILL before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

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

impl Runtime {
    /// Starts a fresh container for `func` and waits until its handler has
    /// connected to `/control.sock`.
    pub async fn start(self: &Arc<Self>, func: &Arc<Function>) -> Result<Ready, RuntimeError> {
        if *self.stopping.borrow() {
            return Err(RuntimeError::ShuttingDown);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{seq}", func.name, self.run);
        let bundle = self.bundles_dir().join(&id);
        self.live.fetch_add(1, Ordering::AcqRel);
        let mut guard = Guard {
            rt: Arc::clone(self),
            func: Arc::clone(func),
            id,
            bundle,
            pid: None,
            exit: None,
            exited: None,
            started: None,
        };
        match guard.launch().await {
            Ok((control, listener)) => Ok(Ready {
                guard,
                control,
                listener,
            }),
            Err(e) => {
                tokio::spawn(guard.finish(End::Kill("start failed")));
                Err(e)
            }
        }
    }
}

impl Guard {
    async fn launch(&mut self) -> Result<(UnixStream, Option<ControlListener>), RuntimeError> {
        let metrics = &self.func.metrics;
        let t0 = Instant::now();
        let listener = self.prepare_bundle()?;
        let (output, runc_output) = logs::pipe().map_err(io("creating output pipe"))?;
        metrics.phase(Phase::Bundle, t0.elapsed());
        // Bounded: a burst of runc processes can exhaust memory. The permit
        // is held until the handler is up, which is what costs.
        let t1 = Instant::now();
        let _permit = self
            .rt
            .starts
            .acquire()
            .await
            .map_err(|_| RuntimeError::ShuttingDown)?;
        metrics.phase(Phase::StartSlot, t1.elapsed());
        let t2 = Instant::now();
        let spawned = SystemTime::now();
        let (pid, exit) = self.rt.runc.run(&self.id, &self.bundle, runc_output)?;
        tokio::spawn(logs::collect(
            output,
            Arc::clone(&self.func.logs),
            self.id.clone(),
        ));
        self.pid = Some(pid);
        let exit = self.exit.insert(exit);
        let connect_timeout = self.rt.config.connect_timeout;
        let control = tokio::select! {
            accepted = listener.accept() => accepted.map_err(io("accepting the handler"))?,
            ended = exit => {
                self.exit = None;
                let exit = ended.unwrap_or(Exit::Signal(0));
                return Err(match Runc::failure(&self.bundle) {
                    Some(reason) => RuntimeError::Start { id: self.id.clone(), reason },
                    None => RuntimeError::HandlerExited { id: self.id.clone(), exit },
                });
            },
            _ = tokio::time::sleep(connect_timeout) => return Err(RuntimeError::ConnectTimeout {
                id: self.id.clone(),
                secs: connect_timeout.as_secs_f64(),
            }),
        };
        self.started = Some(Started {
            spawned,
            created: self.created_at(),
            connected: spawned + t2.elapsed(),
        });
        // One-shot: the listener goes, so a second connect is refused.
        let listener = self.func.options.reuse.then_some(listener);
        Ok((control, listener))
    }

    fn prepare_bundle(&self) -> Result<ControlListener, RuntimeError> {
        std::fs::create_dir(&self.bundle).map_err(io("creating bundle"))?;
        let sock = self.bundle.join("control.sock");
        let listener = StdListener::bind(&sock).map_err(io("binding control socket"))?;
        // The handler may run as any user of its image.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("control socket"))?;
        let listener = ControlListener::new(listener).map_err(io("control socket"))?;
        let cgroup = cgroup::runc_path(&self.rt.cgroup_scope, &self.id);
        let spec = render(&SpecInput {
            function: self.func.name.as_str(),
            rootfs: &self.rt.view.path(&self.func.rootfs.path),
            control_sock: &self.rt.view.path(&sock),
            image: &self.func.image,
            options: &self.func.options,
            cgroup: &cgroup,
            id_base: self.func.id_base,
        });
        let bytes = serde_json::to_vec(&spec).map_err(|e| io("rendering spec")(e.into()))?;
        std::fs::write(self.bundle.join("config.json"), bytes)
            .map_err(io("writing config.json"))?;
        Ok(listener)
    }

    /// Kills the container if asked to, waits for runc to end, makes sure
    /// the container is deleted, removes the bundle.
    async fn finish(mut self, end: End) {
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
                self.func.metrics.usage(usage.cpu_seconds, usage.peak_bytes);
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

impl Ready {
    /// Sends the client socket to the handler (the cold path); the
    /// container is then supervised in the background until it ends.
    /// On failure the lease comes back with the error.
    pub fn hand_over(
        self,
        client: RawFd,
        lease: Lease,
    ) -> Result<HandedOver, (Lease, RuntimeError)> {
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
                Ok(HandedOver::Done)
            }
            Some(listener) => {
                let reuse = guard.reuse(listener);
                reuse.served.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(supervise_reuse(guard, Arc::clone(&reuse)));
                Ok(HandedOver::AwaitNext(reuse, lease))
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
    /// runc's creation time from its `state.json` (one small read).
    fn created_at(&self) -> Option<SystemTime> {
        let state = std::fs::read(self.rt.runc.root().join(&self.id).join("state.json")).ok()?;
        let v = serde_json::from_slice::<serde_json::Value>(&state).ok()?;
        v["created"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    }

    /// Splits the start at the moments runc leaves behind: its `created`
    /// time, and the removal of `exec.fifo` (seen by `phases`, whose task
    /// may not have read the event yet: we give it a little while).
    async fn record_phases(&mut self) {
        let Some(Started {
            spawned,
            created: Some(created),
            connected,
        }) = self.started.take()
        else {
            return;
        };
        let Some(times) = self.rt.start_times.clone() else {
            return;
        };
        let mut started = times.take(&self.id);
        for _ in 0..PHASE_WAIT_STEPS {
            if started.is_some() {
                break;
            }
            tokio::time::sleep(PHASE_WAIT_STEP).await;
            started = times.take(&self.id);
        }
        let Some(started) = started else { return };
        // The watcher stamps the removal when it reads the event; the
        // handler may have connected first.
        let started = started.min(connected);
        if !(spawned <= created && created <= started) {
            return;
        }
        let between = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
        let m = &self.func.metrics;
        m.phase(Phase::RuntimeCreate, between(spawned, created));
        m.phase(Phase::RuntimeStart, between(created, started));
        m.phase(Phase::HandlerConnect, between(started, connected));
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
    if crate::rawfd::bytes_sent(&client) != Some(0) {
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

/// Sleeps until `deadline`, or forever without one (for `select!`).
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
