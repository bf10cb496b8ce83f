//! New versions of a function: a deploy (unpack the image at low
//! priority, give its rootfs to the function's id range, commit it, take
//! an address), an update (new options, same rootfs) or a rollback (a kept
//! version again). Each then starts its first container (the runtime must
//! accept it), is recorded with the version it replaces kept in history,
//! and the listener switches to it; a failure anywhere leaves the previous
//! version serving.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{listening, now_secs, Live, Manager, ManagerError};
use crate::api::name::FunctionName;
use crate::api::{DeployOptions, FunctionInfo, ImageRef, OptionsPatch};
use crate::dataplane::Served;
use crate::image::archive::{self, Image, Unpacked};
use crate::image::config::{self, RawImageConfig};
use crate::image::owners;
use crate::image::store::Staging;
use crate::image::ImageError;
use crate::net::Added;
use crate::pull::Platform;
use crate::registry::{FunctionRecord, Registry, Version};
use crate::runtime::Function;
use crate::sys::Priority;

/// Where a deploy's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An uploaded archive on disk.
    Archive(PathBuf),
    /// A registry reference faasd pulls (`faas deploy --image REF`); with
    /// `digest`, exactly that manifest (a cluster peer's pull, or an
    /// update that resolved the tag already), recorded under `reference`.
    Registry {
        reference: String,
        platform: Platform,
        digest: Option<String>,
    },
}

/// What resolving a pulled function's reference again found.
pub enum Repull {
    /// The same digest; a note saying so.
    Same(String),
    /// A new digest, to deploy.
    Moved(ImageSource),
}

/// Gives the unpacked rootfs at `root` to the function's id range.
pub(super) async fn shift_owners(root: PathBuf, slot: u32) -> Result<(), ManagerError> {
    tokio::task::spawn_blocking(move || {
        background(|| owners::shift_tree(&root, owners::base(slot)))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map(|_| ())
    .map_err(|source| ManagerError::Io {
        op: "giving the rootfs to the function's id range".into(),
        source,
    })
}

/// Runs image work (`op`) on tokio's blocking pool; a panic there is an
/// I/O error of `op`.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    work: impl FnOnce() -> Result<T, crate::image::ImageError> + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ManagerError::Io {
            op: op.into(),
            source: std::io::Error::other(e),
        })?
        .map_err(ManagerError::from)
}

/// Runs `work` on this (blocking-pool) thread at low priority, so an
/// unpack never takes the CPU from a connection, yet ends on a saturated
/// node too.
fn background<T>(work: impl FnOnce() -> T) -> T {
    let lowered = crate::sys::set_priority(0, Priority::Low).is_ok();
    let out = work();
    if lowered {
        if let Err(e) = crate::sys::set_priority(0, Priority::Normal) {
            tracing::warn!(error = %e, "restoring a blocking thread's priority");
        }
    }
    out
}

impl Manager {
    /// Deploys (or replaces) `name` from the image archive at `archive`,
    /// with the options `patch` names (the rest as they were, or the
    /// defaults for a new function). The previous version keeps serving
    /// until the new one is complete, and is kept to roll back to.
    pub async fn deploy(
        &self,
        name: FunctionName,
        patch: OptionsPatch,
        archive: PathBuf,
    ) -> Result<FunctionInfo, ManagerError> {
        self.deploy_at(name, patch, ImageSource::Archive(archive), None)
            .await
    }

    /// A deploy whose address, for a new function, is `ip` when given (the
    /// cluster allocated it) instead of the lowest free one. An existing
    /// function keeps its address.
    pub async fn deploy_at(
        &self,
        name: FunctionName,
        patch: OptionsPatch,
        source: ImageSource,
        ip: Option<IpAddr>,
    ) -> Result<FunctionInfo, ManagerError> {
        let (staging, unpacked, pulled) = self.unpack(&name, &patch, source).await?;
        let mut registry = self.registry.lock().await;
        let previous = registry.get(&name).cloned();
        let options = patch
            .apply(
                &previous
                    .as_ref()
                    .map(|p| p.options.clone())
                    .unwrap_or_default(),
            )
            .map_err(ManagerError::Options)?;
        let fresh_kind = patch.kind.is_none() && previous.is_none();
        let (options, note) = if fresh_kind {
            kind_from_expose(options, &unpacked.config)?
        } else {
            (options, None)
        };
        if note.is_some() {
            self.check_options(&options)?;
        }
        let store_id = registry.next_store_id();
        let id_slot = previous
            .as_ref()
            .and_then(|p| p.id_slot)
            .unwrap_or_else(|| registry.free_id_slot());
        let rootfs = self.commit(staging, &name, store_id, id_slot).await?;
        let next = Version {
            version: previous.as_ref().map_or(1, FunctionRecord::next_version),
            rootfs: store_id,
            image_id: unpacked.image_id.clone(),
            image: unpacked.config.clone(),
            options,
            deployed_at: now_secs(),
            origin: "deploy".into(),
            pulled,
        };
        let fresh = self.rootfs_dir(rootfs, owners::base(id_slot));
        fresh.composed();
        let switched = match previous {
            Some(previous) => {
                let (record, dropped) = previous.succeed(next, self.keep_versions);
                self.switch(&mut registry, Some(previous), record, dropped, None)
                    .await
            }
            None => {
                self.first_version(&mut registry, name, ip, next, id_slot)
                    .await
            }
        };
        if switched.is_err() {
            fresh.retire();
        }
        switched.map(|mut info| {
            info.notes.extend(note);
            info
        })
    }

    /// Unpacks the image `source` names for a new version of `name`
    /// (options refused first, before the work, if they cannot work);
    /// says where a pulled image came from.
    async fn unpack(
        &self,
        name: &FunctionName,
        patch: &OptionsPatch,
        source: ImageSource,
    ) -> Result<(Staging, Unpacked, Option<ImageRef>), ManagerError> {
        let current = self
            .registry
            .lock()
            .await
            .get(name)
            .map(|r| r.options.clone());
        self.check_options(
            &patch
                .apply(&current.unwrap_or_default())
                .map_err(ManagerError::Options)?,
        )?;
        let mut staging = self.store.staging(name.as_str())?;
        let limits = self.limits.clone();
        let store = self.store.clone();
        match source {
            ImageSource::Archive(archive) => {
                blocking("unpacking image", move || {
                    let image = Image::archive(&archive, &limits)?;
                    background(|| store.unpack(image, &mut staging, &limits))
                        .map(|u| (staging, u, None))
                })
                .await
            }
            ImageSource::Registry {
                reference,
                platform,
                digest,
            } => {
                self.pull(name, &reference, digest.as_deref(), &platform, staging)
                    .await
            }
        }
    }

    /// Pulls `reference` for `platform` into `staging`: the layers the
    /// layer store lacks are downloaded while the unpacker applies them in
    /// order. A failed download is the error (not the unpack it stopped).
    async fn pull(
        &self,
        name: &FunctionName,
        reference: &str,
        digest: Option<&str>,
        platform: &Platform,
        mut staging: Staging,
    ) -> Result<(Staging, Unpacked, Option<ImageRef>), ManagerError> {
        let started = std::time::Instant::now();
        let resolved = self.puller.resolve(reference, digest, platform).await?;
        let resolved_in = started.elapsed();
        let raw: RawImageConfig = config::parse_json("the image config", &resolved.config)?;
        let (_, diff_ids) = config::run_settings(raw)?;
        if diff_ids.len() != resolved.layers.len() {
            return Err(ImageError::Invalid(format!(
                "the manifest lists {} layers but the config has {} diff_ids",
                resolved.layers.len(),
                diff_ids.len()
            ))
            .into());
        }
        let chain = archive::chain_ids(&diff_ids)?;
        self.store.reserve(&mut staging, &chain)?;
        let wanted: Vec<bool> = match self.store.shared_layers() {
            Some(layers) => chain.iter().map(|id| !layers.has(id)).collect(),
            None => vec![true; diff_ids.len()],
        };
        let (pulled, downloads) = self.puller.fetch(&resolved, &wanted, &self.pulls)?;
        let progress = pulled.progress();
        let _shown = self.pulling.show(name, reference, Arc::clone(&progress));
        let image = Image::new(
            "the image config",
            &resolved.config,
            resolved.layers.len(),
            Box::new(pulled),
            &self.limits,
        )?;
        let limits = self.limits.clone();
        let store = self.store.clone();
        let unpack = blocking("unpacking a pulled image", move || {
            background(|| store.unpack(image, &mut staging, &limits)).map(|u| (staging, u))
        });
        tokio::pin!(unpack, downloads);
        let mut downloaded = None;
        let unpacked = loop {
            tokio::select! {
                done = &mut downloads, if downloaded.is_none() => {
                    if let Err(e) = &done {
                        tracing::info!(%reference, error = %e, "pull failed");
                    }
                    downloaded = Some((done, started.elapsed()));
                }
                unpacked = &mut unpack => break unpacked,
            }
        };
        let downloaded_in = match downloaded {
            Some((Err(e), _)) => return Err(e.into()),
            Some((Ok(()), at)) => at,
            None => started.elapsed(),
        };
        if unpacked.is_err() && downloaded.is_none() {
            // The unpacker stopped on a layer that never arrived: the
            // download's own error says why.
            if let Ok(Err(e)) =
                tokio::time::timeout(std::time::Duration::from_secs(1), &mut downloads).await
            {
                return Err(e.into());
            }
        }
        let (staging, unpacked) = unpacked?;
        tracing::info!(
            %reference,
            digest = %resolved.digest,
            layers = resolved.layers.len(),
            fetched = wanted.iter().filter(|w| **w).count(),
            bytes = progress.bytes(),
            resolved_ms = resolved_in.as_millis() as u64,
            downloaded_ms = downloaded_in.as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        if let Some(host) = self.puller.plain_http(reference) {
            tracing::warn!(%reference, %host, "pulled over plain HTTP (--insecure-registry)");
        }
        let from = ImageRef {
            reference: resolved.reference,
            digest: resolved.digest,
            platform: platform.to_string(),
        };
        Ok((staging, unpacked, Some(from)))
    }

    /// Makes `staging` the rootfs `store_id` of `name`, owned by the ids of
    /// `id_slot` (a copy is shifted into them; composed layers are mapped).
    async fn commit(
        &self,
        staging: Staging,
        name: &FunctionName,
        store_id: u64,
        id_slot: u32,
    ) -> Result<PathBuf, ManagerError> {
        if !staging.layered() {
            shift_owners(staging.path().to_path_buf(), id_slot).await?;
        }
        let store = self.store.clone();
        let name = name.clone();
        blocking("committing rootfs", move || {
            store.commit(staging, name.as_str(), store_id, owners::base(id_slot))
        })
        .await
    }

    /// A new function's first version: its address, its record, the
    /// switch; the address goes again if the switch refuses it.
    async fn first_version(
        &self,
        registry: &mut Registry,
        name: FunctionName,
        ip: Option<IpAddr>,
        next: Version,
        id_slot: u32,
    ) -> Result<FunctionInfo, ManagerError> {
        let ip = match ip {
            Some(ip) => ip,
            None => self.allocate_ip(registry).await?,
        };
        let added = self.net.add(ip).await?;
        let record = FunctionRecord {
            name,
            ip,
            version: next.version,
            image_id: next.image_id,
            image: next.image,
            options: next.options,
            deployed_at: next.deployed_at,
            id_slot: Some(id_slot),
            rootfs: Some(next.rootfs),
            origin: next.origin,
            pulled: next.pulled,
            history: Vec::new(),
        };
        let switched = self
            .switch(registry, None, record, Vec::new(), Some(added))
            .await;
        if switched.is_err() && added == Added::New {
            // Gone before the refusal is answered.
            if let Err(e) = self.net.remove(ip).await {
                tracing::warn!(%ip, error = %e, "removing the address of a refused deploy");
            }
        }
        switched
    }

    /// A new version of `name` with the same image and the options `patch`
    /// names changed; nothing is unpacked, the pool is replaced as a
    /// deploy's is. Changing nothing changes nothing.
    pub async fn update(
        &self,
        name: &FunctionName,
        patch: OptionsPatch,
    ) -> Result<FunctionInfo, ManagerError> {
        self.update_with(name, |current| {
            patch.apply(current).map_err(ManagerError::Options)
        })
        .await
    }

    /// `faas update NAME --pull`: resolves the reference `name` was pulled
    /// by again and deploys it (with `patch`) only if its digest moved;
    /// otherwise changes only what `patch` names.
    pub async fn update_pull(
        &self,
        name: &FunctionName,
        patch: OptionsPatch,
    ) -> Result<FunctionInfo, ManagerError> {
        match self.pull_again(name).await? {
            Repull::Moved(source) => self.deploy_at(name.clone(), patch, source, None).await,
            Repull::Same(note) => {
                let mut info = self.update(name, patch).await?;
                info.notes.push(note);
                Ok(info)
            }
        }
    }

    /// Resolves the reference `name`'s serving version was pulled by
    /// again: the digest it names now, if that moved.
    pub async fn pull_again(&self, name: &FunctionName) -> Result<Repull, ManagerError> {
        let record = self
            .registry
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.clone()))?;
        let Some(from) = record.pulled.clone() else {
            return Err(ManagerError::Options(format!(
                "{name} was deployed from an archive, not pulled: deploy it with --image REF"
            )));
        };
        let platform: Platform = from.platform.parse().unwrap_or_default();
        let resolved = self
            .puller
            .resolve(&from.reference, None, &platform)
            .await?;
        if resolved.digest == from.digest {
            return Ok(Repull::Same(format!(
                "{} is still {}: nothing pulled",
                from.reference, from.digest
            )));
        }
        Ok(Repull::Moved(ImageSource::Registry {
            reference: from.reference,
            platform,
            digest: Some(resolved.digest),
        }))
    }

    /// A new version of `name` with exactly `options` (a cluster peer's).
    pub async fn set_options(
        &self,
        name: &FunctionName,
        options: DeployOptions,
    ) -> Result<FunctionInfo, ManagerError> {
        self.update_with(name, |_| Ok(options)).await
    }

    /// A new version of `name` with the options `change` makes of its
    /// current ones.
    async fn update_with(
        &self,
        name: &FunctionName,
        change: impl FnOnce(&DeployOptions) -> Result<DeployOptions, ManagerError>,
    ) -> Result<FunctionInfo, ManagerError> {
        let mut registry = self.registry.lock().await;
        let previous = registry
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.clone()))?;
        let options = change(&previous.options)?;
        self.update_locked(&mut registry, previous, options).await
    }

    async fn update_locked(
        &self,
        registry: &mut Registry,
        previous: FunctionRecord,
        options: DeployOptions,
    ) -> Result<FunctionInfo, ManagerError> {
        if options == previous.options {
            return Ok(self.info(&previous));
        }
        self.check_options(&options)?;
        let next = Version {
            version: previous.next_version(),
            options,
            deployed_at: now_secs(),
            origin: "update".into(),
            ..previous.as_version()
        };
        let (record, dropped) = previous.succeed(next, self.keep_versions);
        self.switch(registry, Some(previous), record, dropped, None)
            .await
    }

    /// Serves a kept version of `name` again: `to`, or the one that served
    /// before. Its rootfs is still there; nothing is unpacked.
    pub async fn rollback(
        &self,
        name: &FunctionName,
        to: Option<u64>,
    ) -> Result<FunctionInfo, ManagerError> {
        self.rollback_with(name, to, None).await
    }

    /// Serves kept version `version`'s image again with `options`, in one
    /// switch (a cluster node converging on a record: no moment serves
    /// the kept version's own options).
    pub async fn serve_kept(
        &self,
        name: &FunctionName,
        version: u64,
        options: DeployOptions,
    ) -> Result<FunctionInfo, ManagerError> {
        self.rollback_with(name, Some(version), Some(options)).await
    }

    async fn rollback_with(
        &self,
        name: &FunctionName,
        to: Option<u64>,
        options: Option<DeployOptions>,
    ) -> Result<FunctionInfo, ManagerError> {
        let mut registry = self.registry.lock().await;
        let previous = registry
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.clone()))?;
        let target = match to {
            None => previous.history.first(),
            Some(v) => previous.history.iter().find(|h| h.version == v),
        }
        .cloned()
        .ok_or_else(|| ManagerError::NoVersion {
            name: name.clone(),
            wanted: to,
            kept: previous.history.iter().map(|h| h.version).collect(),
        })?;
        let options = options.unwrap_or_else(|| target.options.clone());
        self.check_options(&options)?;
        let next = Version {
            deployed_at: now_secs(),
            origin: "rollback".into(),
            options,
            ..target
        };
        let (record, dropped) = previous.succeed(next, self.keep_versions);
        self.switch(&mut registry, Some(previous), record, dropped, None)
            .await
    }

    /// Drops kept version `version` of `name` (a change the cluster
    /// refused, undone here: no rollback may bring it back); its rootfs
    /// goes unless another version uses it.
    pub async fn forget_version(
        &self,
        name: &FunctionName,
        version: u64,
    ) -> Result<(), ManagerError> {
        let mut registry = self.registry.lock().await;
        let Some(mut record) = registry.get(name).cloned() else {
            return Ok(());
        };
        let Some(at) = record.history.iter().position(|v| v.version == version) else {
            return Ok(());
        };
        let gone = record.history.remove(at);
        let needed: HashSet<u64> = record.rootfs_ids().collect();
        registry.put(record)?;
        if !needed.contains(&gone.rootfs) {
            self.retire_rootfs(name, gone.rootfs);
        }
        Ok(())
    }

    /// What must hold before options are used: faas-init for the kinds
    /// that need it, every secret they name, forwarding for egress.
    fn check_options(&self, options: &DeployOptions) -> Result<(), ManagerError> {
        if options.runs_init() && self.runtime.config.init.is_none() {
            return Err(ManagerError::NoInit(options.kind));
        }
        if options.egress {
            self.runtime.egress.check()?;
        }
        self.secrets.check(&options.secrets)?;
        Ok(())
    }

    /// Makes `record` the serving version: its first container must start,
    /// then the record is saved and the listener switched to it; connections
    /// accepted before finish on the old version. `dropped` are versions
    /// that left the history (their rootfs goes unless still used). On
    /// failure the previous version serves on, recorded as before.
    async fn switch(
        &self,
        registry: &mut Registry,
        previous: Option<FunctionRecord>,
        record: FunctionRecord,
        dropped: Vec<Version>,
        added: Option<Added>,
    ) -> Result<FunctionInfo, ManagerError> {
        let name = record.name.clone();
        check_hosts(registry, &record)?;
        let existing = self
            .live()
            .get(&name)
            .map(|l| (Arc::clone(&l.served), Arc::clone(&l.stats)));
        let stats = existing
            .as_ref()
            .map(|e| Arc::clone(&e.1))
            .unwrap_or_default();
        self.egress_rules(&record, previous.as_ref()).await?;
        let func = self.function(&record, stats)?;
        // The runtime must be able to start it before it replaces anything.
        if let Err(e) = self.runtime.first_start(&func).await {
            func.close();
            self.restore_egress(&record, previous.as_ref()).await;
            return Err(e.into());
        }
        if let Err(e) = registry.put(record.clone()) {
            func.close();
            self.restore_egress(&record, previous.as_ref()).await;
            return Err(e.into());
        }
        let same_listeners =
            previous.as_ref().map(|p| listening(&p.options)) == Some(listening(&record.options));
        let needed: HashSet<u64> = record.rootfs_ids().collect();
        let served = existing.map(|(served, _)| served);
        let result = self
            .put_in_service(&record, func, served, same_listeners, added, &needed)
            .await;
        if let Err(e) = result {
            self.restore_egress(&record, previous.as_ref()).await;
            match previous {
                Some(p) => registry.put(p).map(|_| ())?,
                None => registry.remove(&name).map(|_| ())?,
            };
            return Err(e);
        }
        for gone in dropped.iter().filter(|v| !needed.contains(&v.rootfs)) {
            self.retire_rootfs(&name, gone.rootfs);
        }
        tracing::info!(function = %name, ip = %record.ip, version = record.version,
            image = %record.image_id, origin = %record.origin, "serving a new version");
        Ok(self.info(&record))
    }

    /// Makes `func` the one serving `record`: in place of the version
    /// `served` now (on its listeners when they stay as they are, else on
    /// new ones once the old version is gone), or as a new function.
    async fn put_in_service(
        &self,
        record: &FunctionRecord,
        func: Arc<Function>,
        served: Option<Arc<Served>>,
        same_listeners: bool,
        added: Option<Added>,
        needed: &HashSet<u64>,
    ) -> Result<(), ManagerError> {
        let name = &record.name;
        match served {
            Some(served) if same_listeners => {
                if let Some(fd) = self.dataplane.handed(name) {
                    func.listener.set(fd);
                }
                // A new server takes the listener beside the old ones, and
                // must be up before they go.
                if let Err(e) = self.server_up(&func).await {
                    func.close();
                    return Err(e);
                }
                self.watch_servers(Arc::clone(&func));
                // Connections accepted before the swap finish on the old version.
                let old = served.func.swap(func);
                self.dataplane.reroute();
                self.let_go(&old, needed);
                Ok(())
            }
            Some(served) => {
                let old = served.func.load_full();
                self.let_go(&old, needed);
                servers_gone(&old).await;
                self.start_serving(record, Arc::clone(&func), None)?;
                self.server_up(&func).await?;
                self.watch_servers(func);
                Ok(())
            }
            None => {
                let up = match self.start_serving(record, Arc::clone(&func), added) {
                    Ok(()) => self.server_up(&func).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = up {
                    self.dataplane.stop(name);
                    self.live().remove(name);
                    func.close();
                    return Err(e);
                }
                self.watch_servers(Arc::clone(&func));
                self.announce_when_ready(record.ip, func);
                Ok(())
            }
        }
    }

    /// The replaced version takes no more containers; its rootfs goes with
    /// its last one unless the record still needs it.
    /// A socket-activated version's first server is up (every other kind:
    /// its first container came up in `first_start`).
    async fn server_up(&self, func: &Function) -> Result<(), ManagerError> {
        if !func.options.hands_listener() {
            return Ok(());
        }
        self.runtime
            .server_up(func)
            .await
            .map_err(ManagerError::from)
    }

    /// While `func` (socket-activated) serves, a core stands in for its
    /// servers whenever they crash-loop (`Dataplane::stand_in`): clients
    /// hear why (503) instead of waiting in the backlog.
    pub(super) fn watch_servers(&self, func: Arc<Function>) {
        if !func.options.hands_listener() {
            return;
        }
        let dataplane = Arc::clone(&self.dataplane);
        tokio::spawn(async move {
            let mut standing_in = false;
            while !func.pool.is_closed() {
                let failing = func.pool.crash_looping();
                if failing != standing_in {
                    dataplane.stand_in(&func.name, failing);
                    standing_in = failing;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
    }

    fn let_go(&self, old: &Function, needed: &HashSet<u64>) {
        old.close();
        if !needed.contains(&old.rootfs_id) {
            old.rootfs.retire();
        }
    }

    /// Listens for a function not served yet (or whose listeners change).
    /// `added` says how its address got on `lo`; `None` keeps what we knew.
    pub(super) fn start_serving(
        &self,
        record: &FunctionRecord,
        func: Arc<Function>,
        added: Option<Added>,
    ) -> Result<(), ManagerError> {
        let known = self
            .live()
            .get(&record.name)
            .map(|l| (Arc::clone(&l.stats), l.owned_ip));
        let stats = known.as_ref().map(|k| Arc::clone(&k.0)).unwrap_or_default();
        let owned_ip = match added {
            Some(a) => a != Added::Foreign,
            None => known.map(|k| k.1).unwrap_or(true),
        };
        let served = Served::new(Arc::clone(&func));
        match self.dataplane.serve(
            &record.name,
            record.ip,
            Arc::clone(&served),
            listening(&record.options),
        ) {
            Ok(handed) => {
                if let Some(fd) = handed {
                    func.listener.set(fd);
                }
            }
            Err(e) => {
                func.close();
                return Err(e.into());
            }
        }
        self.live().insert(
            record.name.clone(),
            Live {
                served,
                stats,
                ip: record.ip,
                owned_ip,
            },
        );
        Ok(())
    }

    /// The lowest pool address used neither by a function nor by anyone else on `lo`.
    async fn allocate_ip(&self, registry: &Registry) -> Result<IpAddr, ManagerError> {
        let mut taken: HashSet<IpAddr> = registry.list().map(|r| r.ip).collect();
        taken.extend(self.net.list().await?.into_iter().map(|a| a.ip));
        Ok(self.pool.allocate(&taken)?)
    }
}

/// Each `--host` name of `record` is held by no other function.
fn check_hosts(registry: &Registry, record: &FunctionRecord) -> Result<(), ManagerError> {
    for host in &record.options.hosts {
        let holder = registry
            .list()
            .find(|r| r.name != record.name && r.options.hosts.contains(host));
        if let Some(holder) = holder {
            return Err(ManagerError::HostTaken {
                host: host.clone(),
                holder: holder.name.clone(),
            });
        }
    }
    Ok(())
}

/// A new function deployed without a kind: an image that exposes exactly
/// one TCP port is served as `--container-port` of it, as `docker run`
/// users expect of such an image (said in a note); several ports are a
/// question only the operator can answer; none keeps faasd's own
/// protocol (the original project's handlers).
fn kind_from_expose(
    options: DeployOptions,
    image: &crate::image::ImageConfig,
) -> Result<(DeployOptions, Option<String>), ManagerError> {
    match image.tcp_ports().as_slice() {
        [] => Ok((options, None)),
        [port] => {
            let options = DeployOptions {
                kind: crate::api::HandlerKind::ContainerPort(*port),
                ..options
            };
            options.validate().map_err(ManagerError::Options)?;
            let note = format!(
                "serving port {port}, from the image's EXPOSE; --control-socket for faasd's protocol"
            );
            Ok((options, Some(note)))
        }
        ports => Err(ManagerError::Options(format!(
            "the image exposes ports {}: name the one that serves with --container-port N (or --control-socket for faasd's protocol)",
            ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Waits (a second at most) until a retired version's long-lived servers
/// (socket-activated, or reused ones given the listener) have ended: its
/// listener is shut only then, or they would spin on accept (EINVAL).
pub(super) async fn servers_gone(old: &Function) {
    if !old.options.hands_listener() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while old.pool.live() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
