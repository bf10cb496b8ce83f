//! Deployed functions as a whole: deploy (unpack, switch, address, serve),
//! remove, list, restore after a restart, and release everything at
//! shutdown. The only place that touches registry, store, net, runtime and
//! dataplane together. Deploying lives in `deploy`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::{DeployOptions, FunctionInfo, HandlerKind};
use crate::dataplane::Listening;
use crate::dataplane::{Dataplane, DataplaneError, Served};
use crate::image::store::Store;
use crate::image::{owners, ImageError, Limits};
use crate::name::FunctionName;
use crate::net::{AddressPool, NetError, Netlink, LABEL};
use crate::registry::{FunctionRecord, Registry, RegistryError};
use crate::runtime::logs::LogSink;
use crate::runtime::{
    ActivationListener, Function, Ledger, RootfsDir, Runtime, RuntimeError, Stats, WarmPool,
};

use deploy::shift_owners;

mod deploy;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no function named {0}")]
    NotFound(FunctionName),
    #[error(transparent)]
    Image(#[from] ImageError),
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
}

/// A function being served right now.
struct Live {
    served: Arc<Served>,
    stats: Arc<Stats>,
    ip: Ipv4Addr,
    /// Whether we added the address (and so must remove it).
    owned_ip: bool,
}

pub struct Manager {
    store: Store,
    logs: PathBuf,
    registry: tokio::sync::Mutex<Registry>,
    net: Netlink,
    pool: AddressPool,
    runtime: Arc<Runtime>,
    dataplane: Dataplane,
    limits: Limits,
    live: Mutex<HashMap<FunctionName, Live>>,
    sinks: Mutex<HashMap<FunctionName, Arc<LogSink>>>,
}

/// How a function's address is listened on, from its options.
fn listening(options: &DeployOptions) -> Listening {
    Listening {
        all_cores: options.all_cores,
        defer_accept: options.defers_accept(),
        handed: options.kind == HandlerKind::SocketActivation,
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
    ) -> Result<Self, ManagerError> {
        let store = Store::open(state_dir.join("rootfs"))?;
        Ok(Self {
            store,
            logs: runtime.logs_dir(),
            registry: tokio::sync::Mutex::new(registry),
            net,
            pool,
            runtime,
            dataplane,
            limits,
            live: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<FunctionName, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings back every registered function after a start: removes what a
    /// crashed run left (containers, bundles, stray addresses, staging
    /// directories), then serves each function on its old address.
    pub async fn restore(&self) -> Result<(), ManagerError> {
        let leftovers = self.runtime.recover().await;
        if leftovers > 0 {
            tracing::info!(
                count = leftovers,
                "deleted containers left by an earlier run"
            );
        }
        let mut registry = self.registry.lock().await;
        self.assign_id_ranges(&mut registry).await?;
        let wanted: HashSet<Ipv4Addr> = registry.list().map(|r| r.ip).collect();
        // Only our own pool: another faasd on this host (another state
        // directory, another pool) labels its addresses the same way.
        for addr in self.net.list().await? {
            let ours = addr.label.as_deref() == Some(LABEL) && self.pool.contains(addr.ip);
            if ours && !wanted.contains(&addr.ip) {
                tracing::info!(ip = %addr.ip, "removing stale address");
                self.net.remove(addr.ip).await?;
            }
        }
        let keep: HashSet<PathBuf> = registry
            .list()
            .map(|r| self.store.path(r.name.as_str(), r.version))
            .collect();
        let store = self.store.clone();
        let swept = tokio::task::spawn_blocking(move || store.sweep(&keep))
            .await
            .map_err(|e| ManagerError::Io {
                op: "sweeping rootfs store".into(),
                source: std::io::Error::other(e),
            })??;
        if swept > 0 {
            tracing::info!(count = swept, "removed unreferenced rootfs directories");
        }
        for record in registry.list() {
            let added = self.net.add(record.ip).await?;
            let func = self.function(record, Arc::default())?;
            self.runtime.refill(&func);
            self.start_serving(record, func, Some(added))?;
            tracing::info!(function = %record.name, ip = %record.ip, "serving");
        }
        Ok(())
    }

    /// The runtime's view of a deployed version (its pool not filling yet).
    fn function(
        &self,
        record: &FunctionRecord,
        stats: Arc<Stats>,
    ) -> Result<Arc<Function>, ManagerError> {
        let log = self.open_log(&record.name)?;
        let func = Arc::new(Function {
            name: record.name.clone(),
            rootfs: RootfsDir::new(self.store.path(record.name.as_str(), record.version)),
            image: record.image.clone(),
            options: record.options.clone(),
            logs: log,
            ledger: Ledger::new(record.name.as_str(), stats),
            pool: WarmPool::new(
                record.options.warm,
                record.options.reuse || record.options.kind == HandlerKind::SocketActivation,
            ),
            id_base: owners::base(record.id_slot.unwrap_or_default()),
            listener: ActivationListener::default(),
        });
        Ok(func)
    }

    /// Gives functions recorded before id ranges existed a range, and
    /// their rootfs to it.
    async fn assign_id_ranges(&self, registry: &mut Registry) -> Result<(), ManagerError> {
        let unassigned: Vec<FunctionRecord> = registry
            .list()
            .filter(|r| r.id_slot.is_none())
            .cloned()
            .collect();
        for mut record in unassigned {
            let slot = registry.free_id_slot();
            let rootfs = self.store.path(record.name.as_str(), record.version);
            shift_owners(rootfs, slot).await?;
            record.id_slot = Some(slot);
            tracing::info!(function = %record.name, slot, "assigned a host id range");
            registry.put(record)?;
        }
        Ok(())
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
        self.dataplane.stop(name);
        let live = self.live().remove(name);
        registry.remove(name)?;
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

    fn info(&self, r: &FunctionRecord) -> FunctionInfo {
        let stats = self
            .live()
            .get(&r.name)
            .map(|l| {
                let func = l.served.func.load();
                func.ledger
                    .snapshot(u64::from(func.pool.ready()), u64::from(l.served.inflight()))
            })
            .unwrap_or_default();
        FunctionInfo {
            name: r.name.to_string(),
            ip: r.ip,
            image_id: r.image_id.clone(),
            version: r.version,
            deployed_at: r.deployed_at,
            options: r.options.clone(),
            command: r.image.argv(),
            working_dir: r.image.working_dir.clone(),
            user: r.image.user.clone(),
            stats,
            sandbox: crate::runtime::sandbox::spec::sandbox(
                &r.options,
                owners::base(r.id_slot.unwrap_or_default()),
            ),
        }
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
        tokio::task::block_in_place(|| self.dataplane.shutdown());
        // Waiting containers go now; the rootfs stays for the next start.
        for live in self.live().values() {
            live.served.func.load().pool.close();
        }
        let left = self.runtime.shutdown(deadline).await;
        if left > 0 {
            tracing::warn!(containers = left, "containers still running at shutdown");
        }
        let owned: Vec<Ipv4Addr> = self
            .live()
            .drain()
            .filter(|(_, l)| l.owned_ip)
            .map(|(_, l)| l.ip)
            .collect();
        for ip in owned {
            if let Err(e) = self.net.remove(ip).await {
                tracing::warn!(%ip, error = %e, "removing address");
            }
        }
    }
}
