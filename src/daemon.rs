//! Composition root: checks the host, builds the runtime, restores the
//! deployed functions, serves the control API, and on SIGTERM/SIGINT stops
//! accepting, ends in-flight containers and removes its addresses.

use crate::pull::{Credentials, Puller};
use std::fs::{self, File};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::cluster::{Cluster, Membership};
use crate::config::{Config, TokenSource};
use crate::control::socket::{self, ControlSocket, SocketError};
use crate::control::{self, Control};
use crate::dataplane::shared::Shared;
use crate::dataplane::{Ctx, Dataplane, DataplaneError};
use crate::manager::{Manager, ManagerError};
use crate::net::{NetError, Netlink};
use crate::registry::{Registry, RegistryError};
use crate::runtime::sandbox::cgroup;
use crate::runtime::{Flavor, Reaper, Runtime, RuntimeConfig, RuntimeError};
use crate::secrets::{SecretError, SecretStore};
use crate::sys::notify::Notifier;

/// In-flight containers get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Shutdown as a whole stays well inside the 10 s an operator expects.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(7);
/// The closer gets this long to close what shutdown let go.
const CLOSER_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("faasd must run as root (it creates containers and loopback addresses)")]
    NotRoot,
    #[error(
        "OCI runtime {0:?} not found: install it (apt-get install runc) or pass --runtime PATH"
    )]
    NoRuntime(PathBuf),
    #[error("another faasd already uses state directory {0}")]
    Locked(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    #[error("no cgroup hierarchy is mounted at /sys/fs/cgroup here, and the OCI runtime needs one (`ip netns exec` mounts a /sys without them: run faasd in a network namespace with `nsenter --net=/run/netns/NAME` instead)")]
    NoCgroups,
    #[error("io_uring is disabled on this host (kernel.io_uring_disabled = {0})")]
    IoUringDisabled(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Init(#[from] crate::runtime::faas_init::InitError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Runs faasd until SIGTERM or SIGINT, telling systemd (`notifier`) how
/// it goes.
pub fn run(config: Config, notifier: Option<Notifier>) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    check_io_uring()?;
    if !cgroup::mounted() {
        return Err(DaemonError::NoCgroups);
    }
    let runtime_binary = find_binary(&config.runtime)
        .ok_or_else(|| DaemonError::NoRuntime(config.runtime.clone()))?;
    let flavor = Flavor::detect(&runtime_binary).map_err(|source| DaemonError::Io {
        op: "asking the runtime its version",
        path: runtime_binary.clone(),
        source,
    })?;
    // Still single-threaded here, as unsharing the mount namespace needs.
    crate::sys::private_mounts().map_err(|source| DaemonError::Io {
        op: "making a mount namespace of faasd's own",
        path: PathBuf::from("/"),
        source,
    })?;
    if flavor == Flavor::Crun {
        let hidden =
            cgroup::hide_v2_controllers_from_runtime().map_err(|source| DaemonError::Io {
                op: "hiding the v2 cgroup controllers from crun (hybrid host)",
                path: PathBuf::from("/sys/fs/cgroup/unified"),
                source,
            })?;
        if hidden {
            tracing::info!("hybrid cgroup host: in faasd's own mount namespace the v2 hierarchy lists no controller, for crun");
        }
    }
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.cores.max(2))
        .enable_all()
        .thread_name("faasd")
        .build()
        .map_err(|source| DaemonError::Io {
            op: "starting runtime",
            path: PathBuf::new(),
            source,
        })?;
    tokio_rt.block_on(serve(config, runtime_binary, flavor, notifier))
}

async fn serve(
    config: Config,
    runtime_binary: PathBuf,
    flavor: Flavor,
    notifier: Option<Notifier>,
) -> Result<(), DaemonError> {
    let state = &config.state_dir;
    open_state_dir(state)?;
    let _lock = lock_state(state)?;
    // Before anything registers a metric: handles taken earlier stay no-ops.
    let metrics = start_metrics(&config)?;
    let manager = start_node(&config, runtime_binary, flavor).await?;
    let token = match &config.token {
        TokenSource::File(path) => Some(read_token(path)?),
        TokenSource::StateDir => Some(state_token(state)?),
        TokenSource::None => None,
    };
    // With --etcd, the node serves what it has (restored above) at once
    // and converges on the cluster as soon as etcd answers.
    let cluster = join_cluster(&config, &manager, token.clone()).await?;
    let api = serve_api(&config, &manager, metrics, token, &cluster).await?;
    let notifier = notifier.map(Arc::new);
    if let Some(n) = &notifier {
        tell_ready(n, &config);
    }

    wait_for_signal().await;
    tracing::info!("shutting down");
    if let Some(n) = &notifier {
        tell(n, "STOPPING=1");
    }
    stop(&config, &manager, cluster, api).await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the state directory, which containers (unprivileged host ids,
/// user namespaces) must pass through to reach their rootfs and control
/// socket: others may pass, never list; what is private inside is
/// 0700/0600. (Directories above it are the operator's: `runtime::view`.)
fn open_state_dir(state: &Path) -> Result<(), DaemonError> {
    let io = |op| {
        move |source| DaemonError::Io {
            op,
            path: state.to_path_buf(),
            source,
        }
    };
    fs::create_dir_all(state).map_err(io("creating"))?;
    fs::set_permissions(state, fs::Permissions::from_mode(0o711)).map_err(io("chmod"))
}

/// The Prometheus recorder, unless `--no-metrics`.
fn start_metrics(
    config: &Config,
) -> Result<Option<metrics_exporter_prometheus::PrometheusHandle>, DaemonError> {
    if !config.metrics {
        return Ok(None);
    }
    let handle = crate::metrics::install().map_err(DaemonError::Metrics)?;
    let upkeep = handle.clone();
    // Histogram samples are folded in at render time too; this bounds
    // their memory between scrapes.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(Some(handle))
}

/// Everything that serves functions, brought up and restored: the closer,
/// the reaper, faas-init, addresses, records, secrets, the container
/// runtime, the data plane and the manager over them.
async fn start_node(
    config: &Config,
    runtime_binary: PathBuf,
    flavor: Flavor,
) -> Result<Arc<Manager>, DaemonError> {
    let state = &config.state_dir;
    // After the recorder, so its counters are real.
    if !crate::sys::closer::start_now() {
        tracing::warn!(
            "no closer thread: descriptors containers shaped are closed where they are let go"
        );
    }
    let refuse_descriptors = config.refuse_descriptors && descriptors_refusable();
    if refuse_descriptors {
        crate::sys::closer::descriptors_refused();
    }
    let reaper = Reaper::start().map_err(|source| DaemonError::Io {
        op: "starting reaper",
        path: PathBuf::new(),
        source,
    })?;
    let init = match crate::runtime::faas_init::source(config.init.as_deref()) {
        Some(from) => Some(crate::runtime::faas_init::install(&from, state)?),
        None => {
            tracing::warn!("faas-init not found next to faasd (or --init): functions deployed with --stdio, --socket-activation or --container-port cannot start");
            None
        }
    };
    let net = Netlink::connect()?;
    let routes = config
        .route_table
        .map(|table| crate::net::Routes::new(net.clone(), table));
    let registry = Registry::load(state)?;
    check_open_files(registry.list().count());
    let secrets = SecretStore::open(state)?;
    // reqwest (registry pulls) takes rustls' process-wide provider; ring
    // is the one the etcd client already brings (rustls now steers to
    // aws-lc-rs, a C and cmake build we do not need for a client of
    // registries). Set once; a second call finds it set.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let credentials = Credentials::open(state).map_err(ManagerError::from)?;
    let puller =
        Arc::new(Puller::new(config.pull.clone(), credentials).map_err(ManagerError::from)?);
    let runtime = Runtime::new(
        RuntimeConfig {
            runtime_binary,
            flavor,
            state_dir: state.clone(),
            connect_timeout: config.connect_timeout,
            shutdown_grace: SHUTDOWN_GRACE,
            max_concurrent_starts: config.max_concurrent_starts,
            pool_idle: config.pool_idle,
            pool_memory: config.pool_memory,
            init,
            refuse_descriptors,
        },
        reaper,
    )?;
    let ctx = Ctx {
        rt: Arc::clone(&runtime),
        control: tokio::runtime::Handle::current(),
        queue_timeout: config.queue_timeout,
        shared: Shared::new(config.shared.header_timeout),
    };
    let shared_ips = share_addresses(&net, config).await?;
    let dataplane = Dataplane::start(config.cores, config.port, ctx, &config.shared)?;
    let manager = Arc::new(Manager::new(
        state,
        registry,
        net,
        config.pool.clone(),
        runtime,
        dataplane,
        config.limits.clone(),
        secrets,
        config.keep_versions,
        routes,
        config.copy_layers,
        config.rootfs_idle,
        puller,
    )?);
    manager.announce_shared(shared_ips).await;
    manager.restore().await?;
    Ok(manager)
}

/// Puts the shared listeners' addresses that lie in `--ip-pool` on `lo`
/// (no function is given them then); says which and whether we added them.
async fn share_addresses(
    net: &Netlink,
    config: &Config,
) -> Result<Vec<(IpAddr, bool)>, DaemonError> {
    let mut added = Vec::new();
    for addr in &config.shared.listen {
        let ip = addr.ip();
        if config.pool.contains(ip) && !added.iter().any(|(a, _)| *a == ip) {
            let how = net.add(ip).await.map_err(ManagerError::from)?;
            added.push((ip, how != crate::net::Added::Foreign));
        }
    }
    Ok(added)
}

/// The cluster membership with `--etcd` (and the task that follows etcd).
async fn join_cluster(
    config: &Config,
    manager: &Arc<Manager>,
    token: Option<String>,
) -> Result<Option<(Arc<Cluster>, tokio::task::JoinHandle<()>)>, DaemonError> {
    let Some(c) = &config.cluster else {
        return Ok(None);
    };
    let cluster = Cluster::new(
        Membership {
            endpoints: c.endpoints.clone(),
            node: c.node.clone(),
            url: c.url.clone(),
            // The configuration refuses --etcd without a token.
            token: token.unwrap_or_default(),
            tls: c.tls.clone(),
        },
        Arc::clone(manager),
        &config.state_dir,
        config.pool.clone(),
    )
    .await?;
    let follower = cluster.spawn();
    tracing::info!(node = %c.node, etcd = %c.endpoints.join(","), url = %c.url, "cluster member");
    Ok(Some((cluster, follower)))
}

/// The control API being served, and what stops it.
struct Api {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// Removes the Unix socket when dropped.
    socket: Option<socket::SocketFile>,
}

/// Serves the control API on `--listen` and the Unix socket.
async fn serve_api(
    config: &Config,
    manager: &Arc<Manager>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    token: Option<String>,
    cluster: &Option<(Arc<Cluster>, tokio::task::JoinHandle<()>)>,
) -> Result<Api, DaemonError> {
    let uploads = config.state_dir.join("uploads");
    let has_token = token.is_some();
    let mut control = Control::new(
        Arc::clone(manager),
        metrics,
        token,
        uploads.clone(),
        config.max_upload,
    )
    .map_err(|source| DaemonError::Io {
        op: "creating",
        path: uploads,
        source,
    })?;
    control.cluster = cluster.as_ref().map(|(c, _)| Arc::clone(c));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    let (unix, socket) = match bind_socket(&config.socket)? {
        Some(s) => {
            let (listener, guard) = s.into_parts();
            (Some(listener), Some(guard))
        }
        None => (None, None),
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(control::serve(listener, unix, Arc::new(control), stop_rx));
    tracing::info!(listen = %config.listen, socket = %config.socket.display(), pool = %config.pool,
        cores = config.cores, token = has_token, "faasd serving");
    Ok(Api { task, stop, socket })
}

/// Tells systemd faasd is ready, and keeps its watchdog fed from the
/// control runtime (if that stalls, so does the watchdog).
fn tell_ready(n: &Arc<Notifier>, config: &Config) {
    tell(n, &format!("READY=1\nSTATUS=serving on {}", config.listen));
    if let Some(every) = n.watchdog_every() {
        let n = Arc::clone(n);
        tokio::spawn(async move {
            loop {
                tell(&n, "WATCHDOG=1");
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// Stops in the order that loses no one: the cluster stops counting on
/// this node (its statuses and archive offers go with its lease); then
/// routers (with the routes gone, clients stop arriving while everything
/// here still serves the ones under way); then the API, the containers,
/// and what the closer still holds.
async fn stop(
    config: &Config,
    manager: &Manager,
    cluster: Option<(Arc<Cluster>, tokio::task::JoinHandle<()>)>,
    api: Api,
) {
    if let Some((cluster, follower)) = &cluster {
        follower.abort();
        cluster.leave().await;
    }
    if manager.withdraw_all().await && !config.drain.is_zero() {
        tracing::info!(secs = config.drain.as_secs_f64(), "draining");
        tokio::time::sleep(config.drain).await;
    }
    api.stop.send_replace(true);
    let _ = api.task.await;
    drop(api.socket);
    manager.shutdown(SHUTDOWN_DEADLINE).await;
    if !crate::sys::closer::flush(CLOSER_FLUSH) {
        tracing::warn!("the closer had not closed everything at exit");
    }
}

/// Whether this kernel lets control sockets refuse descriptors
/// (SO_PASSRIGHTS, Linux 6.16); said once at start, either way.
fn descriptors_refusable() -> bool {
    let probe = std::os::unix::net::UnixStream::pair()
        .and_then(|(a, _b)| crate::sys::rawfd::refuse_descriptors(&a));
    match probe {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "this kernel has no SO_PASSRIGHTS (Linux 6.16): descriptors a container sends to faasd are taken and closed by the closer thread");
            false
        }
    }
}

fn tell(n: &Notifier, state: &str) {
    if let Err(e) = n.send(state) {
        tracing::warn!(error = %e, "notifying the service manager");
    }
}

/// The control socket. When the default path is taken by another faasd
/// (another state directory on this host), this one runs without it.
fn bind_socket(path: &Path) -> Result<Option<ControlSocket>, DaemonError> {
    match socket::bind(path) {
        Ok(s) => Ok(Some(s)),
        Err(SocketError::InUse(p)) if p == Path::new(crate::client::DEFAULT_SOCKET) => {
            tracing::warn!(socket = %p.display(), "the default control socket is in use by another faasd; serving on TCP only (pass --socket PATH)");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The state directory's token, created (32 random bytes, hex, root
/// only) at the first start.
fn state_token(state: &Path) -> Result<String, DaemonError> {
    let path = crate::client::token_path(state);
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| DaemonError::Io { op, path, source }
    };
    if !path.exists() {
        let mut bytes = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(io("reading /dev/urandom for"))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::sys::fs::write_private(&path, format!("{hex}\n").as_bytes())
            .map_err(io("creating"))?;
        tracing::info!(path = %path.display(), "created the control API token");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    read_token(&path)
}

async fn wait_for_signal() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// Raises the descriptor limit as far as it goes, and says so when it
/// is short for the functions there are (a deploy beyond it fails with
/// "Too many open files").
fn check_open_files(functions: usize) {
    match crate::sys::raise_open_files() {
        Ok(limit) => {
            // A function's listener (the data plane's and the core's copy;
            // with --all-cores, a pair a core) and its log file, and room for
            // containers' connections and the control plane.
            let each = 3;
            let needed = functions as u64 * each + 4096;
            if needed > limit {
                tracing::warn!(
                    limit,
                    needed,
                    functions,
                    "the open files limit is short for this many functions ({each} descriptors each): raise LimitNOFILE / ulimit -n"
                );
            } else {
                tracing::info!(limit, functions_room = (limit - 4096) / each, "open files");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// The data plane runs on io_uring; say so plainly when the host forbids it.
fn check_io_uring() -> Result<(), DaemonError> {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) if v.trim() != "0" => Err(DaemonError::IoUringDisabled(v.trim().to_string())),
        _ => Ok(()),
    }
}

/// The control API's token: the file's content, trimmed, not empty.
fn read_token(path: &Path) -> Result<String, DaemonError> {
    let text = fs::read_to_string(path).map_err(|source| DaemonError::Io {
        op: "reading token file",
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(DaemonError::EmptyToken(path.to_path_buf()));
    }
    Ok(token)
}

/// One faasd per state directory: two would fight over addresses and containers.
fn lock_state(state: &Path) -> Result<Flock<File>, DaemonError> {
    let path = state.join("lock");
    let file = File::create(&path).map_err(|source| DaemonError::Io {
        op: "creating",
        path: path.clone(),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| DaemonError::Locked(state.to_path_buf()))
}

/// Resolves a command name through PATH, as exec would.
fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
