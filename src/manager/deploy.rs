//! Deploying a function: unpack the image (at low priority), give its
//! rootfs to the function's id range, commit it, take an address, start
//! its first container (the runtime must accept it), record it, and switch
//! the listener to it; a failure anywhere leaves the previous version
//! serving.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{listening, now_secs, Live, Manager, ManagerError};
use crate::api::{DeployOptions, FunctionInfo};
use crate::dataplane::Served;
use crate::image::{owners, unpack_image};
use crate::name::FunctionName;
use crate::net::Added;
use crate::registry::{FunctionRecord, Registry};
use crate::runtime::{Function, RootfsDir};
use crate::sys::Priority;

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
    /// Deploys (or replaces) `name` from the image archive at `archive`.
    /// The previous version keeps serving until the new one is complete.
    pub async fn deploy(
        &self,
        name: FunctionName,
        options: DeployOptions,
        archive: PathBuf,
    ) -> Result<FunctionInfo, ManagerError> {
        if options.kind.needs_init() && self.runtime.config.init.is_none() {
            return Err(ManagerError::NoInit(options.kind));
        }
        let staging = self.store.staging(name.as_str())?;
        let dest = staging.path().to_path_buf();
        let limits = self.limits.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            background(|| unpack_image(&archive, &dest, &limits))
        })
        .await
        .map_err(|e| ManagerError::Io {
            op: "unpacking image".into(),
            source: std::io::Error::other(e),
        })??;

        let mut registry = self.registry.lock().await;
        let previous = registry.get(&name).cloned();
        let version = registry.next_version();
        let id_slot = previous
            .as_ref()
            .and_then(|p| p.id_slot)
            .unwrap_or_else(|| registry.free_id_slot());
        shift_owners(staging.path().to_path_buf(), id_slot).await?;
        let store = self.store.clone();
        let commit_name = name.clone();
        let rootfs = tokio::task::spawn_blocking(move || {
            store.commit(staging, commit_name.as_str(), version)
        })
        .await
        .map_err(|e| ManagerError::Io {
            op: "committing rootfs".into(),
            source: std::io::Error::other(e),
        })??;

        let (ip, newly_added) = match &previous {
            Some(p) => (p.ip, None),
            None => {
                let ip = self.allocate_ip(&registry).await?;
                (ip, Some(self.net.add(ip).await?))
            }
        };
        let record = FunctionRecord {
            name: name.clone(),
            ip,
            version,
            image_id: unpacked.image_id.clone(),
            image: unpacked.config.clone(),
            options,
            deployed_at: now_secs(),
            id_slot: Some(id_slot),
        };
        let undo = |this: &Self| {
            RootfsDir::new(rootfs.clone()).retire();
            if let Some(Added::New) = newly_added {
                let net = this.net.clone();
                tokio::spawn(async move { net.remove(ip).await });
            }
        };
        let existing = self
            .live()
            .get(&name)
            .map(|l| (Arc::clone(&l.served), Arc::clone(&l.stats)));
        let stats = existing
            .as_ref()
            .map(|e| Arc::clone(&e.1))
            .unwrap_or_default();
        let func = match self.function(&record, stats) {
            Ok(f) => f,
            Err(e) => {
                undo(self);
                return Err(e);
            }
        };
        // The runtime must be able to start it before it replaces anything.
        if let Err(e) = self.runtime.first_start(&func).await {
            func.retire();
            undo(self);
            return Err(e.into());
        }
        if let Err(e) = registry.put(record.clone()) {
            func.retire();
            undo(self);
            return Err(e.into());
        }
        let same_listeners =
            previous.as_ref().map(|p| listening(&p.options)) == Some(listening(&record.options));
        let result = match existing {
            Some((served, _)) if same_listeners => {
                if let Some(fd) = self.dataplane.handed(&name) {
                    func.listener.set(fd);
                }
                // Connections accepted before the swap finish on the old version.
                served.func.swap(func).retire();
                Ok(())
            }
            Some((served, _)) => {
                served.func.load().retire();
                self.start_serving(&record, func, None)
            }
            None => self.start_serving(&record, func, newly_added),
        };
        if let Err(e) = result {
            match previous {
                Some(p) => registry.put(p).map(|_| ())?,
                None => registry.remove(&name).map(|_| ())?,
            };
            undo(self);
            return Err(e);
        }
        tracing::info!(function = %name, %ip, version, image = %record.image_id, "deployed");
        Ok(self.info(&record))
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
                func.retire();
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
    async fn allocate_ip(&self, registry: &Registry) -> Result<Ipv4Addr, ManagerError> {
        let mut taken: HashSet<Ipv4Addr> = registry.list().map(|r| r.ip).collect();
        taken.extend(self.net.list().await?.into_iter().map(|a| a.ip));
        Ok(self.pool.allocate(&taken)?)
    }
}
