//! Deployed functions as a whole: deploy (unpack, switch, address, serve),
//! remove, list, restore after a restart, and release everything at
//! shutdown. The only place that touches registry, store, net, runtime and
//! dataplane together. Deploying lives in `deploy`, restoring in `restore`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::name::FunctionName;
use crate::api::{DeployOptions, FunctionInfo, HandlerKind, PullProgress, SecretInfo, VersionInfo};
use crate::dataplane::Listening;
use crate::dataplane::{Dataplane, DataplaneError, Served};
use crate::image::store::Store;
use crate::image::{owners, ImageError, Limits};
use crate::net::{AddressPool, NetError, Netlink, Routes};
use crate::pull::credentials::{CredentialError, Login};
use crate::pull::progress::Pulling;
use crate::pull::{PullError, Puller};
use crate::registry::{FunctionRecord, Registry, RegistryError};
use crate::runtime::logs::LogSink;
use crate::runtime::{
    ActivationListener, Function, Ledger, RootfsDir, Rootfses, Runtime, RuntimeError, Stats,
    WarmPool,
};
use crate::secrets::{SecretError, SecretStore};

mod announce;
mod deploy;
mod egress;
mod restore;

use announce::Announced;
pub use deploy::{ImageSource, Repull};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no function named {0}")]
    NotFound(FunctionName),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("faasd is shutting down")]
    ShuttingDown,
    #[error("the {0} kind needs faas-init, which this faasd does not have: install it next to faasd or pass --init PATH")]
    NoInit(HandlerKind),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Egress(#[from] crate::runtime::sandbox::egress::EgressError),
    #[error("{0}")]
    Options(String),
    #[error("host {host} is held by function {holder}: remove it there first (faas update {holder} --host ...)")]
    HostTaken {
        host: crate::api::host::HostName,
        holder: FunctionName,
    },
    #[error("{name} has no kept version {}: kept are {}", wanted.map(|v| v.to_string()).unwrap_or_else(|| "to roll back to".into()), if kept.is_empty() { "none".to_string() } else { kept.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ") })]
    NoVersion {
        name: FunctionName,
        wanted: Option<u64>,
        kept: Vec<u64>,
    },
}

/// A function being served right now.
struct Live {
    served: Arc<Served>,
    stats: Arc<Stats>,
    ip: IpAddr,
    /// Whether we added the address (and so must remove it).
    owned_ip: bool,
}

pub struct Manager {
    store: Store,
    /// The live rootfs directories, composed while used.
    rootfses: Arc<Rootfses>,
    logs: PathBuf,
    registry: tokio::sync::Mutex<Registry>,
    net: Netlink,
    pool: AddressPool,
    runtime: Arc<Runtime>,
    dataplane: Arc<Dataplane>,
    limits: Limits,
    live: Mutex<HashMap<FunctionName, Live>>,
    sinks: Mutex<HashMap<FunctionName, Arc<LogSink>>>,
    secrets: Arc<SecretStore>,
    /// Versions kept to roll back to, beside the serving one.
    keep_versions: usize,
    /// `--route-table`: host routes announcing ready functions.
    routes: Option<Routes>,
    /// Addresses announced (or about to be), and whether announcing is
    /// over (draining).
    announced: Arc<Mutex<Announced>>,
    /// Shared listeners' pool addresses, and whether we put them on `lo`
    /// (`announce_shared`).
    shared_ips: Mutex<Vec<(IpAddr, bool)>>,
    /// Pulls images by reference; its downloads go to `pulls`.
    puller: Arc<Puller>,
    pulls: PathBuf,
    /// The pulls under way, by function, for `faas deploy --image` to show.
    pulling: Pulling,
}

/// How a function's address is listened on, from its options.
fn listening(options: &DeployOptions) -> Listening {
    Listening {
        all_cores: options.all_cores,
        defer_accept: options.defers_accept(),
        handed: options.hands_listener(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Manager {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state_dir: &Path,
        registry: Registry,
        net: Netlink,
        pool: AddressPool,
        runtime: Arc<Runtime>,
        dataplane: Dataplane,
        limits: Limits,
        secrets: Arc<SecretStore>,
        keep_versions: usize,
        routes: Option<Routes>,
        copy_layers: bool,
        rootfs_idle: Duration,
        puller: Arc<Puller>,
    ) -> Result<Self, ManagerError> {
        let mut store = Store::open(state_dir.join("rootfs"))?;
        // What an interrupted pull left goes: nothing of it was committed.
        let pulls = state_dir.join("pulls");
        let _ = std::fs::remove_dir_all(&pulls);
        std::fs::create_dir_all(&pulls).map_err(|source| ManagerError::Io {
            op: format!("creating {}", pulls.display()),
            source,
        })?;
        if let Err(e) = store.share_layers(state_dir.join("layers")) {
            tracing::warn!(error = %e, "versions cannot share image layers here: each gets its own copy");
        }
        if copy_layers {
            store.copy_new_versions();
        }
        Ok(Self {
            rootfses: Rootfses::new(store.clone(), rootfs_idle),
            store,
            logs: runtime.logs_dir(),
            registry: tokio::sync::Mutex::new(registry),
            net,
            pool,
            runtime,
            dataplane: Arc::new(dataplane),
            limits,
            live: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
            secrets,
            keep_versions,
            routes,
            announced: Arc::default(),
            shared_ips: Mutex::default(),
            puller,
            pulls,
            pulling: Pulling::default(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<FunctionName, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A version's rootfs directory (the live one, if it has one).
    fn rootfs_dir(&self, path: PathBuf, id_base: u32) -> Arc<RootfsDir> {
        self.rootfses.get(path, id_base)
    }

    /// Removes store directory `id` of `name` once nothing uses it.
    fn retire_rootfs(&self, name: &FunctionName, id: u64) {
        // The id range matters only to a compose, and a retired directory
        // is not composed again.
        self.rootfs_dir(self.store.path(name.as_str(), id), 0)
            .retire();
    }

    /// The runtime's view of a deployed version (its pool not filling yet).
    fn function(
        &self,
        record: &FunctionRecord,
        stats: Arc<Stats>,
    ) -> Result<Arc<Function>, ManagerError> {
        let log = self.open_log(&record.name)?;
        let id_base = owners::base(record.id_slot.unwrap_or_default());
        let rootfs = self.rootfs_dir(
            self.store.path(record.name.as_str(), record.rootfs_id()),
            id_base,
        );
        let secrets = if record.options.secrets.is_empty() {
            None
        } else {
            let _composed = rootfs.hold()?;
            crate::image::store::ensure_secrets_mountpoint(&rootfs.path)?;
            let owner = (id_base + record.image.uid, id_base + record.image.gid);
            // Versions count per function (a removed one's come again);
            // store directories never repeat.
            let key = format!("{}-v{}-{}", record.name, record.version, record.rootfs_id());
            Some(self.secrets.deliver(&key, &record.options.secrets, owner)?)
        };
        let func = Arc::new(Function {
            name: record.name.clone(),
            version: record.version,
            rootfs,
            rootfs_id: record.rootfs_id(),
            secrets,
            image: record.image.clone(),
            options: record.options.clone(),
            logs: log,
            ledger: Ledger::new(record.name.as_str(), stats, record.options.fork),
            pool: {
                let (floor, ceiling) = record.options.pool_bounds();
                WarmPool::new(
                    floor,
                    ceiling,
                    record.options.serves_many() || record.options.hands_listener(),
                )
            },
            id_base,
            listener: ActivationListener::default(),
        });
        Ok(func)
    }

    pub fn log_path(&self, name: &FunctionName) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The function's log, shared by all its versions.
    fn open_log(&self, name: &FunctionName) -> Result<Arc<LogSink>, ManagerError> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = sinks.get(name) {
            return Ok(Arc::clone(sink));
        }
        let path = self.log_path(name);
        let sink = LogSink::open(path.clone()).map_err(|source| ManagerError::Io {
            op: format!("opening log {}", path.display()),
            source,
        })?;
        sinks.insert(name.clone(), Arc::clone(&sink));
        Ok(sink)
    }

    /// Stops serving `name`, removes its address (if we added it), its
    /// record and, once its last container ends, its rootfs.
    pub async fn remove(&self, name: &FunctionName) -> Result<(), ManagerError> {
        let mut registry = self.registry.lock().await;
        if registry.get(name).is_none() {
            return Err(ManagerError::NotFound(name.clone()));
        }
        if let Some(ip) = registry.get(name).map(|r| r.ip) {
            // Routers stop sending here before the listener goes.
            self.withdraw(ip).await?;
        }
        let live = self.live().remove(name);
        if let Some(live) = &live {
            let func = live.served.func.load_full();
            func.retire();
            deploy::servers_gone(&func).await;
        }
        self.dataplane.stop(name);
        if let Some(record) = registry.remove(name)? {
            if record.options.egress {
                self.forget_egress(&record).await;
            }
            for id in record.history.iter().map(|v| v.rootfs) {
                if id != record.rootfs_id() {
                    self.retire_rootfs(name, id);
                }
            }
        }
        if let Some(live) = live {
            live.served.func.load().retire();
            if live.owned_ip {
                self.net.remove(live.ip).await?;
            }
        }
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let _ = std::fs::remove_file(self.log_path(name));
        let _ = std::fs::remove_file(LogSink::previous(&self.log_path(name)));
        tracing::info!(function = %name, "removed");
        Ok(())
    }

    pub async fn list(&self) -> Vec<FunctionInfo> {
        let registry = self.registry.lock().await;
        registry.list().map(|r| self.info(r)).collect()
    }

    pub async fn inspect(&self, name: &FunctionName) -> Result<FunctionInfo, ManagerError> {
        let registry = self.registry.lock().await;
        registry
            .get(name)
            .map(|r| self.info(r))
            .ok_or_else(|| ManagerError::NotFound(name.clone()))
    }

    /// The record of `name`, as the registry holds it.
    pub async fn record(&self, name: &FunctionName) -> Option<FunctionRecord> {
        self.registry.lock().await.get(name).cloned()
    }

    /// Every record.
    pub async fn records(&self) -> Vec<FunctionRecord> {
        self.registry.lock().await.list().cloned().collect()
    }

    /// The addresses on `lo` now (ours and anyone's).
    pub async fn local_addresses(&self) -> Result<Vec<IpAddr>, ManagerError> {
        Ok(self.net.list().await?.into_iter().map(|a| a.ip).collect())
    }

    /// Whether `name` serves here with its warm pool filled.
    pub fn ready(&self, name: &FunctionName) -> bool {
        self.live()
            .get(name)
            .is_some_and(|l| l.served.func.load().pool.filled())
    }

    fn info(&self, r: &FunctionRecord) -> FunctionInfo {
        let live = self.live().get(&r.name).map(|l| {
            let func = l.served.func.load_full();
            let inflight = l.served.inflight();
            (func, inflight)
        });
        let stats = live
            .as_ref()
            .map(|(func, inflight)| {
                // Servers handed the listener never wait in the pool: up is ready.
                let ready = if func.options.hands_listener() {
                    func.pool.live()
                } else {
                    func.pool.ready()
                };
                func.ledger.snapshot(u64::from(ready), u64::from(*inflight))
            })
            .unwrap_or_default();
        let (state, restarts, last_error) = match &live {
            Some((func, _)) => (
                func.pool.state().to_string(),
                func.pool.restarts(),
                func.pool.last_error(),
            ),
            None => ("starting".to_string(), 0, None),
        };
        FunctionInfo {
            name: r.name.to_string(),
            ip: r.ip,
            image_id: r.image_id.clone(),
            image: r.pulled.clone(),
            version: r.version,
            deployed_at: r.deployed_at,
            options: r.options.clone(),
            command: r.image.argv(),
            working_dir: r.image.working_dir.clone(),
            user: r.image.user.clone(),
            stats,
            state,
            restarts,
            last_error,
            sandbox: crate::runtime::sandbox::spec::sandbox(
                &r.options,
                owners::base(r.id_slot.unwrap_or_default()),
            ),
            port: self.dataplane.port(),
            versions: std::iter::once((r.as_version(), true))
                .chain(r.history.iter().map(|v| (v.clone(), false)))
                .map(|(v, current)| VersionInfo {
                    version: v.version,
                    image_id: v.image_id,
                    image: v.pulled,
                    deployed_at: v.deployed_at,
                    current,
                    origin: v.origin,
                })
                .collect(),
            nodes: Vec::new(),
            notes: Vec::new(),
            pool: live.as_ref().map(|(func, _)| pool_info(&func.pool)),
            revision: None,
        }
    }

    /// Stored secrets and the functions whose serving version uses each.
    /// Whether every secret in `refs` is stored here (and fits its use).
    pub fn check_secrets(&self, refs: &[crate::api::SecretRef]) -> Result<(), ManagerError> {
        self.secrets.check(refs).map_err(ManagerError::from)
    }

    pub async fn secrets(&self) -> Result<Vec<SecretInfo>, ManagerError> {
        let registry = self.registry.lock().await;
        Ok(self
            .secrets
            .list()?
            .into_iter()
            .map(|s| SecretInfo {
                used_by: registry
                    .list()
                    .filter(|r| r.options.secrets.iter().any(|x| x.name == s.name))
                    .map(|r| r.name.to_string())
                    .collect(),
                name: s.name,
                created_at: s.created_at,
                bytes: s.bytes,
            })
            .collect())
    }

    /// `faas registry login HOST`: stores (replaces) the credentials
    /// pulls from `host` use; returns the host as kept.
    pub fn registry_login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<String, ManagerError> {
        let host = self.puller.credentials().store(host, username, password)?;
        tracing::info!(registry = %host, username, "registry credentials stored");
        Ok(host)
    }

    pub fn registry_logout(&self, host: &str) -> Result<String, ManagerError> {
        let host = self.puller.credentials().remove(host)?;
        tracing::info!(registry = %host, "registry credentials removed");
        Ok(host)
    }

    /// The host `reference` names, if it is pulled from over plain HTTP.
    pub fn plain_http(&self, reference: &str) -> Option<String> {
        self.puller.plain_http(reference)
    }

    /// The pull under way for `name`, layer by layer.
    pub fn pull_progress(&self, name: &FunctionName) -> Option<PullProgress> {
        self.pulling.get(name)
    }

    /// The registries faasd has credentials for, and the user names.
    pub fn registry_logins(&self) -> Result<Vec<Login>, ManagerError> {
        Ok(self.puller.credentials().list()?)
    }

    pub async fn create_secret(
        &self,
        name: &str,
        value: &[u8],
        replace: bool,
    ) -> Result<(), ManagerError> {
        // Under the registry's lock: no deploy checks it half-written.
        let _registry = self.registry.lock().await;
        self.secrets.create(name, value, replace)?;
        tracing::info!(secret = name, bytes = value.len(), "secret stored");
        Ok(())
    }

    /// Removes a secret no serving version uses.
    pub async fn remove_secret(&self, name: &str) -> Result<(), ManagerError> {
        let registry = self.registry.lock().await;
        let by: Vec<String> = registry
            .list()
            .filter(|r| r.options.secrets.iter().any(|x| x.name == name))
            .map(|r| r.name.to_string())
            .collect();
        if !by.is_empty() {
            return Err(SecretError::InUse {
                name: name.into(),
                by,
            }
            .into());
        }
        self.secrets.remove(name)?;
        tracing::info!(secret = name, "secret removed");
        Ok(())
    }

    /// Sets the point-in-time gauges (pool, in flight) of every function.
    pub fn update_gauges(&self) {
        for (name, live) in self.live().iter() {
            let ready = u64::from(live.served.func.load().pool.ready());
            crate::metrics::set_function_gauges(
                name.as_str(),
                ready,
                u64::from(live.served.inflight()),
            );
        }
    }

    /// Stops accepting, ends in-flight containers, removes our addresses.
    pub async fn shutdown(&self, deadline: Duration) {
        self.withdraw_all().await;
        tokio::task::block_in_place(|| self.dataplane.shutdown());
        // Waiting containers go now; the rootfs stays for the next start.
        for live in self.live().values() {
            live.served.func.load().pool.close();
        }
        let left = self.runtime.shutdown(deadline).await;
        if left > 0 {
            tracing::warn!(containers = left, "containers still running at shutdown");
        }
        let mut owned: Vec<IpAddr> = self
            .live()
            .drain()
            .filter(|(_, l)| l.owned_ip)
            .map(|(_, l)| l.ip)
            .collect();
        let shared =
            std::mem::take(&mut *self.shared_ips.lock().unwrap_or_else(|p| p.into_inner()));
        owned.extend(
            shared
                .into_iter()
                .filter(|(_, ours)| *ours)
                .map(|(ip, _)| ip),
        );
        for ip in owned {
            if let Err(e) = self.net.remove(ip).await {
                tracing::warn!(%ip, error = %e, "removing address");
            }
        }
        let runtime = Arc::clone(&self.runtime);
        let _ = tokio::task::spawn_blocking(move || runtime.egress.close()).await;
        self.secrets.close();
    }
}

/// What `faas inspect` shows of a pool.
fn pool_info(pool: &crate::runtime::WarmPool) -> crate::api::PoolInfo {
    let demand = pool.demand();
    let (min, max) = demand.bounds();
    let target = pool.target();
    let mut why = demand.why().to_string();
    if target < pool.wanted() {
        why.push_str(&format!("; --pool-memory allows {target}"));
    }
    crate::api::PoolInfo {
        min,
        max,
        target,
        ready: pool.ready(),
        starting: pool.starting(),
        rate_per_s: (demand.rate_at(std::time::Instant::now()) * 10.0).round() / 10.0,
        why,
        memory_each: pool.memory_each(),
    }
}
