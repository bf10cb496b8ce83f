//! One container's life: bundle (config.json and the control socket),
//! `runc run` (in the foreground, so runc reaps and deletes it), waiting for the handler to connect, handing over
//! the client socket, then supervising it until it exits or its timeout
//! kills it, and finally `runc delete` and removing the bundle. Every path
//! out of here ends in that cleanup, so nothing is left behind.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::reaper::Exit;
use super::spec::{render, SpecInput};
use super::{fdpass, Function, Runc, Runtime, RuntimeError};

/// Time the container gets to die after SIGKILL before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A container whose handler is connected and waiting for a connection.
pub struct Ready {
    guard: Option<Guard>,
    control: UnixStream,
}

/// Owns a container's cleanup; whoever holds it must call `finish`, and
/// dropping it unfinished schedules the cleanup.
struct Guard {
    rt: Arc<Runtime>,
    func: Arc<Function>,
    id: String,
    bundle: PathBuf,
    /// runc's pid; runc lives as long as the container.
    pid: Option<i32>,
    exit: Option<oneshot::Receiver<Exit>>,
    /// runc already ended (its exit was consumed while starting).
    exited: bool,
    deadline: Instant,
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
        let id = format!("{}-{seq}", func.name);
        let bundle = self.bundles_dir().join(&id);
        self.live.fetch_add(1, Ordering::AcqRel);
        let mut guard = Guard {
            rt: Arc::clone(self),
            func: Arc::clone(func),
            id,
            bundle,
            pid: None,
            exit: None,
            exited: false,
            deadline: Instant::now() + Duration::from_secs(func.options.timeout_secs),
        };
        match guard.launch().await {
            Ok(control) => Ok(Ready {
                guard: Some(guard),
                control,
            }),
            Err(e) => {
                tokio::spawn(guard.finish());
                Err(e)
            }
        }
    }
}

impl Guard {
    async fn launch(&mut self) -> Result<UnixStream, RuntimeError> {
        let listener = self.prepare_bundle()?;
        // Bounded: a burst of runc processes can exhaust memory. The permit
        // is held until the handler is up, which is what costs.
        let _permit = self
            .rt
            .starts
            .acquire()
            .await
            .map_err(|_| RuntimeError::ShuttingDown)?;
        let (pid, mut exit) = self.rt.runc.run(&self.id, &self.bundle, &self.func.log)?;
        self.pid = Some(pid);
        let connect_timeout = self
            .rt
            .config
            .connect_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let result = tokio::select! {
            accepted = listener.accept() => accepted.map(|(s, _)| s).map_err(io("accepting the handler")),
            exit = &mut exit => {
                let exit = exit.unwrap_or(Exit::Signal(0));
                self.exited = true;
                Err(match Runc::failure(&self.bundle) {
                    Some(reason) => RuntimeError::Start { id: self.id.clone(), reason },
                    None => RuntimeError::HandlerExited { id: self.id.clone(), exit },
                })
            },
            _ = tokio::time::sleep(connect_timeout) => Err(RuntimeError::ConnectTimeout {
                id: self.id.clone(),
                secs: connect_timeout.as_secs_f64(),
            }),
        };
        if !self.exited {
            self.exit = Some(exit);
        }
        // One-shot: the listener goes, so a second connect is refused.
        drop(listener);
        result
    }

    fn prepare_bundle(&self) -> Result<UnixListener, RuntimeError> {
        std::fs::create_dir(&self.bundle).map_err(io("creating bundle"))?;
        let sock = self.bundle.join("control.sock");
        let listener =
            std::os::unix::net::UnixListener::bind(&sock).map_err(io("binding control socket"))?;
        // The handler may run as any user of its image.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("control socket"))?;
        let listener = UnixListener::from_std(listener).map_err(io("control socket"))?;
        let cgroup = format!("/faasd/{}", self.id);
        let spec = render(&SpecInput {
            function: self.func.name.as_str(),
            rootfs: &self.func.rootfs.path,
            control_sock: &sock,
            image: &self.func.image,
            options: &self.func.options,
            cgroup: &cgroup,
        });
        let bytes = serde_json::to_vec(&spec).map_err(|e| io("rendering spec")(e.into()))?;
        std::fs::write(self.bundle.join("config.json"), bytes)
            .map_err(io("writing config.json"))?;
        Ok(listener)
    }

    /// Waits for the container to end (killing it at its deadline or when
    /// faasd stops), makes sure runc has deleted it, removes the bundle.
    async fn finish(mut self) {
        if let Some(exit) = self.exit.take() {
            self.await_exit(exit).await;
        }
        // runc deletes a container it ran to the end; anything else (runc
        // killed, start failed half-way) is deleted here.
        if self.rt.runc.exists(&self.id) {
            if let Err(e) = self.rt.runc.delete(&self.id).await {
                tracing::warn!(id = %self.id, error = %e, "runc delete");
            }
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

    /// `exit` is runc's: it ends when the container does.
    async fn await_exit(&self, mut exit: oneshot::Receiver<Exit>) {
        let mut stopping = self.rt.stopping.subscribe();
        let timed_out = tokio::time::sleep_until(self.deadline.into());
        tokio::pin!(timed_out);
        let grace = self.rt.config.shutdown_grace;
        let reason = loop {
            tokio::select! {
                _ = &mut exit => return,
                _ = &mut timed_out => break "timeout",
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        if tokio::time::timeout(grace, &mut exit).await.is_ok() {
                            return;
                        }
                        break "shutdown";
                    }
                }
            }
        };
        tracing::info!(id = %self.id, reason, "killing container");
        if let Err(e) = self.rt.runc.kill(&self.id, "KILL").await {
            tracing::debug!(id = %self.id, error = %e, "runc kill");
        }
        if tokio::time::timeout(KILL_WAIT, &mut exit).await.is_ok() {
            return;
        }
        // runc itself is stuck: kill it; `finish` then deletes the container.
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if tokio::time::timeout(KILL_WAIT, &mut exit).await.is_err() {
                self.rt.reaper.forget(pid);
                tracing::warn!(id = %self.id, pid, "runc did not die after SIGKILL");
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
            exited: self.exited,
            deadline: self.deadline,
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(guard.finish());
        }
    }
}

impl Ready {
    /// Sends the client socket to the handler; the container is then
    /// supervised in the background until it ends.
    pub async fn hand_over(mut self, client: BorrowedFd<'_>) -> Result<(), RuntimeError> {
        let Some(guard) = self.guard.take() else {
            return Err(RuntimeError::ShuttingDown);
        };
        let sent = fdpass::send_fd(&self.control, client).await;
        let id = guard.id.clone();
        tokio::spawn(guard.finish());
        sent.map_err(|source| RuntimeError::Handoff { id, source })
    }

    pub fn id(&self) -> &str {
        self.guard
            .as_ref()
            .map(|g| g.id.as_str())
            .unwrap_or_default()
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(guard.finish());
            }
        }
    }
}
