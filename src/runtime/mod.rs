//! Containers for functions, in three wings: what a container may do and
//! see (`sandbox`: OCI spec, seccomp, cgroups, the state view), one
//! container's life (`container`: start-up, supervision, cleanup) and the
//! containers waiting for connections (`pool`: warm slots, waiting
//! connections, reuse mode's state). Above them: handing a connection over
//! and deciding its cold start (`handoff`), the cold path (`cold`), keeping
//! pools filled (`refill`). Below: the OCI runtime's command line (`oci`:
//! runc, crun or another), child reaping (`reaper`), cleanup at idle
//! priority (`janitor`), passing the client socket (`fdpass`), handler
//! output (`logs`), each function's ledger of outcomes (`ledger`), the
//! node's memory bound on all pools (`budget`) and versions' rootfs
//! directories, mounted while containers use them (`rootfs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use crate::api::name::FunctionName;
use crate::api::DeployOptions;
use crate::image::ImageConfig;

pub mod budget;
pub mod bundles;
mod cold;
pub mod container;
mod error;
pub mod faas_init;
pub mod fdpass;
pub mod forkstats;
pub mod handoff;
pub mod janitor;
pub mod ledger;
pub mod logs;
pub mod oci;
pub mod pool;
pub mod reactor;
pub mod reaper;
mod refill;
pub mod respond;
pub mod rootfs;
pub mod sandbox;

pub use error::RuntimeError;
use janitor::Janitor;
pub use ledger::{Ledger, Stats};
pub use oci::{Flavor, Oci};
pub use pool::{Lease, Slot, WarmPool};
pub use reaper::{Exit, Reaper};
pub use rootfs::{RootfsDir, RootfsUse, Rootfses};
use sandbox::{cgroup, view};

impl RuntimeError {
    /// What the operator is told (`faas logs`, `faas inspect`'s
    /// `last_error`): the cause, and what to do where that is clear.
    pub fn for_operator(&self, func: &Function) -> String {
        match self {
            RuntimeError::ConnectTimeout { secs, .. } if !func.options.kind.needs_init() => {
                let port = match func.image.tcp_ports().as_slice() {
                    [port] => port.to_string(),
                    _ => "N".into(),
                };
                format!(
                    "did not connect to /control.sock within {secs:.0} s; a server? deploy with --container-port {port}"
                )
            }
            RuntimeError::ConnectTimeout { secs, .. } => {
                format!("the server did not listen within {secs:.0} s")
            }
            RuntimeError::HandlerExited { exit, .. } => {
                format!("the program exited ({exit}) before taking a connection")
            }
            other => other.to_string(),
        }
    }
}

/// Node-wide runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub runtime_binary: PathBuf,
    /// Which runtime that is (`Flavor::detect`).
    pub flavor: Flavor,
    pub state_dir: PathBuf,
    /// How long a new handler may take to connect to `/control.sock`.
    pub connect_timeout: Duration,
    /// How long in-flight containers get at shutdown before being killed.
    pub shutdown_grace: Duration,
    /// How many containers may be starting at once.
    pub max_concurrent_starts: usize,
    /// A pool grown beyond its `--warm` shrinks back after this long
    /// without demand for it (zero: never).
    pub pool_idle: Duration,
    /// All pools together hold at most this much memory (0: no bound).
    pub pool_memory: u64,
    /// `faas-init`, installed in the state directory, if there is one.
    pub init: Option<PathBuf>,
    /// Control sockets refuse descriptors containers send (SO_PASSRIGHTS,
    /// where the kernel has it).
    pub refuse_descriptors: bool,
}

/// One deployed version of a function, as the runtime needs it.
#[derive(Debug)]
pub struct Function {
    pub name: FunctionName,
    /// Its version number (per function), as its log lines carry it.
    pub version: u64,
    pub rootfs: Arc<RootfsDir>,
    /// The store directory `rootfs` is (versions may share one).
    pub rootfs_id: u64,
    /// Its secrets as its containers get them, if it has any.
    pub secrets: Option<crate::secrets::Delivered>,
    pub image: ImageConfig,
    pub options: DeployOptions,
    pub logs: Arc<logs::LogSink>,
    /// Where every connection's outcome is recorded.
    pub ledger: Ledger,
    /// Containers of this version started ahead and waiting.
    pub pool: WarmPool,
    /// First host id of the function's range (its container root).
    pub id_base: u32,
    /// Socket activation: the function's listening socket, for its servers.
    pub listener: ActivationListener,
}

/// The listening socket a socket-activation function's servers accept on,
/// set once the data plane has bound it (after the version's first
/// container was started: that one waits for it).
#[derive(Debug, Default)]
pub struct ActivationListener {
    fd: std::sync::Mutex<Option<Arc<std::os::fd::OwnedFd>>>,
    set: Notify,
}

impl ActivationListener {
    pub fn set(&self, fd: std::os::fd::OwnedFd) {
        *self.fd.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(fd));
        self.set.notify_waiters();
    }

    /// The socket, once there is one.
    pub async fn get(&self) -> Arc<std::os::fd::OwnedFd> {
        loop {
            let set = self.set.notified();
            tokio::pin!(set);
            set.as_mut().enable();
            if let Some(fd) = self.fd.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return fd;
            }
            set.await;
        }
    }
}

impl Function {
    /// Writes one of faasd's own lines about this version into the
    /// function's log, where `faas logs` shows it beside the handler's.
    pub fn say(&self, text: &str) {
        self.logs.line(self.version, "faasd", text);
    }

    /// This version takes no more containers: its waiting ones go.
    pub fn close(&self) {
        self.pool.close();
    }

    /// This version is removed: its waiting containers go, and its rootfs
    /// once the last running container ends.
    pub fn retire(&self) {
        self.close();
        self.rootfs.retire();
    }
}

/// This start's time in ms, base 36 (eight characters until 2059).
fn run_id() -> String {
    let mut ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut digits = Vec::new();
    while ms > 0 || digits.is_empty() {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(ms % 36) as usize]);
        ms /= 36;
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// A current-thread runtime on its own thread at `SCHED_IDLE`, for the
/// work no connection waits on (pool refills). It lives as long as the
/// process.
fn background_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("faasd-refill".into())
        .spawn(move || {
            if let Err(e) = crate::sys::set_priority(0, crate::sys::Priority::Idle) {
                tracing::warn!(error = %e, "pool refills keep normal priority");
            }
            rt.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

/// The container runtime of the node.
pub struct Runtime {
    pub(crate) config: RuntimeConfig,
    pub(crate) oci: Oci,
    pub(crate) reaper: Reaper,
    pub(crate) janitor: Janitor,
    /// Container ids are `<function>-<run>-<seq>`: `run` (this start's
    /// time) keeps a restarted faasd's ids apart from a crashed run's.
    pub(crate) run: String,
    pub(crate) seq: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) idle: Notify,
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) starts: Arc<Semaphore>,
    /// Where containers reach the state directory (see `view`).
    pub(crate) view: view::StateView,
    /// Links and rules of functions with `--egress`.
    pub egress: sandbox::egress::Egress,
    /// This faasd's cgroup directory (see `cgroup`).
    pub(crate) cgroup_scope: String,
    /// The control runtime, where cold starts and supervisors run.
    pub(crate) control: tokio::runtime::Handle,
    /// A runtime on a thread at idle priority, where pool refills prepare
    /// and start containers: nothing waits on them, so they only get CPU
    /// time no connection wants.
    pub(crate) background: tokio::runtime::Handle,
    /// `--pool-memory`, shared among the pools.
    pub(crate) budget: Arc<budget::Budget>,
}

impl Runtime {
    pub fn bundles_dir(&self) -> PathBuf {
        self.config.state_dir.join("bundles")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.config.state_dir.join("logs")
    }

    /// Sets up the runtime on the current (control) runtime, in faasd's
    /// own mount namespace (the bundles' tmpfs is mounted there); `reaper`
    /// must already run.
    pub fn new(config: RuntimeConfig, reaper: Reaper) -> Result<Arc<Self>, RuntimeError> {
        let io = |op| move |source| RuntimeError::Io { op, source };
        // The runtime's `--root` (named for runc, whichever runtime runs).
        // It stays on disk: after a crash, the next start finds there the
        // containers still running, to delete them.
        let runtime_root = config.state_dir.join("runc");
        bundles::mount_tmpfs(&config.state_dir.join("bundles"))
            .map_err(io("mounting the bundles' tmpfs"))?;
        // Containers (unprivileged host ids) pass through `bundles` to
        // their control socket; the runtime's state and the logs are private.
        for (dir, mode) in [("bundles", 0o711), ("runc", 0o700), ("logs", 0o700)] {
            let path = config.state_dir.join(dir);
            std::fs::create_dir_all(&path).map_err(io("creating state directories"))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io("chmod state directories"))?;
        }
        let oci = Oci::new(
            config.runtime_binary.clone(),
            config.flavor,
            runtime_root,
            reaper.clone(),
        );
        tracing::info!(runtime = %config.runtime_binary.display(), flavor = %oci.flavor(), "OCI runtime");
        let (janitor, _thread) = Janitor::start().map_err(io("starting the cleanup thread"))?;
        let background = background_runtime().map_err(io("starting the refill thread"))?;
        let (stopping, _) = watch::channel(false);
        let cgroup_scope = cgroup::scope(&config.state_dir);
        let egress_reaper = reaper.clone();
        let view = view::StateView::open(&config.state_dir, &cgroup_scope)
            .map_err(io("making the state directory reachable for containers"))?;
        let budget = budget::Budget::new(config.pool_memory);
        background.spawn(Arc::clone(&budget).run());
        Ok(Arc::new(Self {
            oci,
            reaper,
            janitor,
            run: run_id(),
            seq: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            stopping,
            starts: Arc::new(Semaphore::new(config.max_concurrent_starts.max(1))),
            cgroup_scope,
            view,
            egress: sandbox::egress::Egress::new(egress_reaper),
            control: tokio::runtime::Handle::current(),
            background,
            budget,
            config,
        }))
    }

    /// Containers created and not yet deleted.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Removes what an earlier run left: containers in the runtime's root
    /// (the runtime's own `delete --force`, which kills them first) and
    /// their cgroups. (Its bundles went with its tmpfs.) Call before serving.
    pub async fn recover(&self) -> usize {
        let mut removed = 0;
        for id in self.oci.list() {
            match self.oci.delete(&id).await {
                Ok(_) => removed += 1,
                Err(e) => tracing::warn!(%id, error = %e, "deleting leftover container"),
            }
        }
        cgroup::sweep(&self.cgroup_scope);
        removed
    }

    /// Stops new containers, lets in-flight ones finish for the grace
    /// period, kills the rest, and waits (up to `deadline`) until all are
    /// deleted. Returns how many were still live at the end.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.stopping.send_replace(true);
        let wait_all = async {
            while self.live() > 0 {
                let notified = self.idle.notified();
                if self.live() == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait_all).await;
        if self.live() == 0 {
            cgroup::release(&self.cgroup_scope);
        }
        self.view.close();
        self.live()
    }
}
