//! Starting a container: its bundle (config.json, the control socket, the
//! output pipe), the runtime's `create`, the start of its process, and
//! waiting until the handler connected to `/control.sock`. Each step is
//! timed as a cold-start phase.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{io, End, Guard, Process, Ready, Starting};
use crate::metrics::Phase;
use crate::runtime::oci::{self, Flavor, Oci};
use crate::runtime::reactor::ControlListener;
use crate::runtime::sandbox::seccomp::Profile;
use crate::runtime::sandbox::spec::{render, SpecInput};
use crate::runtime::sandbox::{bpf, cgroup, scratch};
use crate::runtime::{forkstats, logs, Function, Runtime, RuntimeError};
use crate::sys::{self, Priority};

/// How long the runtime's `start` may still take once the container's
/// process has ended.
const START_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Runtime {
    /// Starts a fresh container for `func` and waits until its handler has
    /// connected to `/control.sock`. `priority` is that of the runtime
    /// while it creates the container (the container itself always runs
    /// at normal priority).
    pub async fn start(
        self: &Arc<Self>,
        func: &Arc<Function>,
        priority: Priority,
    ) -> Result<Ready, RuntimeError> {
        self.launch(func, priority, false).await?.connected().await
    }

    /// `start` for the pool: given up before the program runs if the
    /// version is retired meanwhile (a connection accepted before a swap
    /// is still served by its version; a pool refill is not wanted).
    pub async fn start_for_pool(
        self: &Arc<Self>,
        func: &Arc<Function>,
        priority: Priority,
    ) -> Result<Ready, RuntimeError> {
        self.launch(func, priority, true).await?.connected().await
    }

    /// Creates and starts a container for `func`, without waiting for its
    /// handler: what the runtime itself has to say about the function.
    pub async fn launch(
        self: &Arc<Self>,
        func: &Arc<Function>,
        priority: Priority,
        for_pool: bool,
    ) -> Result<Starting, RuntimeError> {
        if *self.stopping.borrow() {
            return Err(RuntimeError::ShuttingDown);
        }
        let retired = || for_pool && func.pool.is_closed();
        if retired() {
            return Err(RuntimeError::Retired);
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
            created: false,
            process: None,
            exited: None,
            adopted: false,
            egress: None,
            idle_start: false,
            rootfs: None,
        };
        let ledger = &func.ledger;
        let t0 = Instant::now();
        let prepared = guard.prepare_bundle().and_then(|listener| {
            let (output, runtime_output) = logs::pipe().map_err(io("creating output pipe"))?;
            Ok((listener, output, runtime_output))
        });
        let (listener, output, runtime_output) = match prepared {
            Ok(p) => p,
            Err(e) => return Err(guard.fail(e)),
        };
        ledger.phase(Phase::Bundle, t0.elapsed());
        // Bounded: a burst of runtime processes can exhaust memory.
        let t1 = Instant::now();
        let Ok(permit) = Arc::clone(&self.starts).acquire_owned().await else {
            return Err(guard.fail(RuntimeError::ShuttingDown));
        };
        ledger.phase(Phase::StartSlot, t1.elapsed());
        tokio::spawn(logs::collect(
            output,
            Arc::clone(&func.logs),
            func.version,
            guard.id.clone(),
        ));
        if let Err(e) = guard.create(runtime_output, priority).await {
            return Err(guard.fail(e));
        }
        // Replaced or removed while it was being created: it never runs.
        if retired() {
            return Err(guard.fail(RuntimeError::Retired));
        }
        if func.options.egress {
            if let Err(e) = guard.attach_egress().await {
                return Err(guard.fail(e));
            }
        }
        if let Err(e) = guard.start().await {
            return Err(guard.fail(e));
        }
        Ok(Starting {
            guard,
            listener,
            _permit: permit,
        })
    }
}

impl Starting {
    /// Waits until the handler connected to `/control.sock`.
    pub async fn connected(self) -> Result<Ready, RuntimeError> {
        let Starting {
            mut guard,
            listener,
            _permit,
        } = self;
        let t0 = Instant::now();
        let connect_timeout = guard.rt.config.connect_timeout;
        let id = guard.id.clone();
        let deadline = t0 + connect_timeout;
        // A start at idle priority that the host's load starves is raised
        // halfway to its deadline: late, but not failed.
        let mut promote = guard.idle_start.then(|| t0 + connect_timeout / 2);
        let connected = loop {
            tokio::select! {
                accepted = listener.accept() => break accepted.map_err(io("accepting the handler")),
                exit = guard.wait_process() => break Err(RuntimeError::HandlerExited { id, exit }),
                _ = tokio::time::sleep_until(deadline.into()) => break Err(RuntimeError::ConnectTimeout {
                    id,
                    secs: connect_timeout.as_secs_f64(),
                }),
                _ = sys::timer::sleep_until_opt(promote) => {
                    promote = None;
                    guard.serve_at_normal();
                }
            }
        };
        let control = match connected {
            Ok(c) => c,
            Err(e) => return Err(guard.fail(e)),
        };
        guard.func.ledger.phase(Phase::HandlerConnect, t0.elapsed());
        // One-shot: the listener goes, so a second connect is refused.
        let listener = guard.func.options.serves_many().then_some(listener);
        Ok(Ready {
            guard,
            control,
            listener,
        })
    }

    /// Kills the container: it was only started to see that it can be.
    pub fn discard(self) {
        let rt = Arc::clone(&self.guard.rt);
        rt.control.spawn(self.guard.finish(End::Kill("discarded")));
    }
}

impl Guard {
    /// Schedules the cleanup of a container that failed to start, and
    /// passes the error on.
    fn fail(self, e: RuntimeError) -> RuntimeError {
        let rt = Arc::clone(&self.rt);
        rt.control.spawn(self.finish(End::Kill("start failed")));
        e
    }

    fn prepare_bundle(&mut self) -> Result<ControlListener, RuntimeError> {
        self.rootfs = Some(
            self.func
                .rootfs
                .hold()
                .map_err(|e| io("composing the rootfs")(std::io::Error::other(e)))?,
        );
        std::fs::create_dir(&self.bundle).map_err(io("creating bundle"))?;
        let sock = self.bundle.join("control.sock");
        let listener = StdListener::bind(&sock).map_err(io("binding control socket"))?;
        if self.rt.config.refuse_descriptors {
            // Before anyone can connect: nothing the container sends
            // can then make a close here wait (`sys::closer`).
            crate::sys::rawfd::refuse_descriptors(&listener)
                .map_err(io("refusing descriptors on the control socket"))?;
        }
        // The handler may run as any user of its image.
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("control socket"))?;
        let listener = ControlListener::new(listener).map_err(io("control socket"))?;
        let options = &self.func.options;
        let volumes = &self.func.image.volumes;
        // Mounted where the runtime will look (the state directory's view,
        // when that is another path: a mount under the bundles' tmpfs does
        // not show through the other).
        let rootfs = if (options.read_only || options.fork) && volumes.is_empty() {
            self.rt.view.path(&self.func.rootfs.path)
        } else {
            let bundle = self.rt.view.path(&self.bundle);
            let lower = self.rt.view.path(&self.func.rootfs.path);
            scratch::mount_root(&bundle, &lower, options.scratch, volumes)
                .map_err(io("mounting the writable layer"))?
        };
        let cgroup = cgroup::runtime_path(&self.rt.cgroup_scope, &self.id);
        let (fork_cgroup, fork_stats) = match options.fork {
            true => {
                let user = self.func.id_base;
                let owner = (
                    user.saturating_add(self.func.image.uid),
                    user.saturating_add(self.func.image.gid),
                );
                let cgroup = cgroup::delegate_pids(&self.rt.cgroup_scope, &self.id, owner)
                    .map_err(io("giving the zygote its cgroup"))?;
                let stats = forkstats::create(&self.bundle, owner)
                    .map_err(io("making the zygote's counters"))?;
                (cgroup, Some(self.rt.view.path(&stats)))
            }
            false => (None, None),
        };
        let init = self.rt.config.init.as_ref().map(|p| self.rt.view.path(p));
        let secrets_dir = self
            .func
            .secrets
            .as_ref()
            .map(|s| self.rt.view.path(&s.dir));
        let spec = render(&SpecInput {
            function: self.func.name.as_str(),
            rootfs: &rootfs,
            image_root: &self.rt.view.path(&self.func.rootfs.path),
            fork_cgroup: fork_cgroup.as_deref(),
            fork_stats: fork_stats.as_deref(),
            control_sock: &self.rt.view.path(&sock),
            image: &self.func.image,
            options: &self.func.options,
            cgroup: &cgroup,
            id_base: self.func.id_base,
            seccomp_bpf: (self.rt.oci.flavor() == Flavor::Crun)
                .then(|| bpf::crun_annotation(Profile::of(options))),
            init: init.as_deref(),
            connect_timeout_ms: u64::try_from(self.rt.config.connect_timeout.as_millis())
                .unwrap_or(u64::MAX),
            secrets: secrets_dir
                .as_deref()
                .zip(self.func.secrets.as_ref().map(|s| s.env.as_slice())),
        });
        let bytes = serde_json::to_vec(&spec).map_err(|e| io("rendering spec")(e.into()))?;
        // It may hold secret values: the runtime (root) alone reads it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.bundle.join("config.json"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .map_err(io("writing config.json"))?;
        Ok(listener)
    }

    /// The runtime's `create`: on success the container's process waits to
    /// be started, as our child.
    async fn create(
        &mut self,
        output: std::os::fd::OwnedFd,
        priority: Priority,
    ) -> Result<(), RuntimeError> {
        let t0 = Instant::now();
        self.created = true;
        let (pid, exit) = self
            .rt
            .oci
            .create(&self.id, &self.bundle, output, priority)?;
        let exit = oci::wait_bounded(pid, exit).await?;
        if !exit.success() {
            return Err(self.runtime_failure(format!("create: {exit}")));
        }
        let Some(pid) = Oci::created_pid(&self.bundle) else {
            return Err(self.runtime_failure("create left no pid file".into()));
        };
        let exit = self.rt.reaper.claim(pid);
        let pidfd = sys::pidfd_open(pid)
            .map_err(|e| tracing::debug!(id = %self.id, pid, error = %e, "pidfd"))
            .ok();
        if priority != Priority::Normal {
            // It inherited the runtime's priority; it serves at normal.
            if let Err(e) = sys::set_process_priority(pid, Priority::Normal) {
                tracing::warn!(id = %self.id, pid, error = %e, "raising the container's priority");
            }
            // Until it serves, its whole cgroup (the program's start, its
            // children) gives way to containers serving connections.
            match cgroup::set_idle(&self.rt.cgroup_scope, &self.id, true) {
                Ok(()) => self.idle_start = true,
                Err(e) => tracing::debug!(id = %self.id, error = %e, "cpu.idle"),
            }
        }
        self.process = Some(Process {
            pid,
            pidfd,
            exit: Some(exit),
        });
        self.func.ledger.phase(Phase::RuntimeCreate, t0.elapsed());
        Ok(())
    }

    /// Gives the created container its link out (`--egress`), before its
    /// program runs.
    async fn attach_egress(&mut self) -> Result<(), RuntimeError> {
        let Some(pid) = self.process.as_ref().map(|p| p.pid) else {
            return Ok(());
        };
        let t0 = Instant::now();
        let rt = Arc::clone(&self.rt);
        let slot = crate::image::owners::slot(self.func.id_base);
        let link = tokio::task::spawn_blocking(move || rt.egress.attach(pid, slot))
            .await
            .map_err(|e| io("attaching the egress link")(std::io::Error::other(e)))?
            .map_err(|e| RuntimeError::Start {
                id: self.id.clone(),
                reason: e.to_string(),
            })?;
        tracing::debug!(id = %self.id, took = ?t0.elapsed(), "egress link");
        self.egress = Some(link);
        Ok(())
    }

    /// Lets the created process run the image's program.
    async fn start(&mut self) -> Result<(), RuntimeError> {
        let t0 = Instant::now();
        let rt = Arc::clone(&self.rt);
        let (id, bundle) = (self.id.clone(), self.bundle.clone());
        let starting = rt.oci.start(&id, &bundle);
        tokio::pin!(starting);
        tokio::select! {
            started = &mut starting => started?,
            exit = self.wait_process() => {
                // A program that crashes at once can end before the
                // runtime's `start` returns: if that succeeded, the program
                // ran, and its exit is the handler's (the caller sees it);
                // otherwise the container never started.
                let started = tokio::time::timeout(START_AFTER_EXIT, &mut starting).await;
                if !matches!(started, Ok(Ok(()))) {
                    let why = format!("the container's process ended before its start ({exit})");
                    return Err(self.runtime_failure(why));
                }
            }
        }
        self.func.ledger.phase(Phase::RuntimeStart, t0.elapsed());
        Ok(())
    }

    /// A start failure, in the runtime's words if its log has them.
    fn runtime_failure(&self, fallback: String) -> RuntimeError {
        RuntimeError::Start {
            id: self.id.clone(),
            reason: Oci::failure(&self.bundle).unwrap_or(fallback),
        }
    }
}

impl Guard {
    /// A container started at idle priority serves at normal.
    pub(super) fn serve_at_normal(&mut self) {
        if std::mem::take(&mut self.idle_start) {
            if let Err(e) = cgroup::set_idle(&self.rt.cgroup_scope, &self.id, false) {
                tracing::warn!(id = %self.id, error = %e, "raising the container's priority");
            }
        }
    }
}
