//! Bringing back, after a start, what the registry records: what a
//! crashed run left goes (containers, addresses, routes, rootfs copies,
//! layers nothing uses, iptables rules) and each function serves on its
//! old address (its rootfs composed when a container first needs it).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::deploy::shift_owners;
use super::{Manager, ManagerError};
use crate::registry::{FunctionRecord, Registry};

impl Manager {
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
        let mut wanted: HashSet<IpAddr> = registry.list().map(|r| r.ip).collect();
        wanted.extend(self.shared_addresses());
        // Only our own pool: another faasd on this host (another state
        // directory, another pool) tags its addresses the same way.
        for addr in self.net.list().await? {
            let ours = addr.is_ours() && self.pool.contains(addr.ip);
            if ours && !wanted.contains(&addr.ip) {
                tracing::info!(ip = %addr.ip, "removing stale address");
                self.net.remove(addr.ip).await?;
            }
        }
        if let Some(routes) = &self.routes {
            // Routes a crashed run left: only the restart's own
            // announcements (below, once each function is ready) come back.
            let shared = self.shared_addresses();
            for ip in routes.list().await? {
                if self.pool.contains(ip) && !shared.contains(&ip) {
                    tracing::info!(%ip, table = routes.table(), "withdrawing a stale route");
                    routes.withdraw(ip).await?;
                }
            }
        }
        let keep: HashSet<PathBuf> = registry
            .list()
            .flat_map(|r| {
                r.rootfs_ids()
                    .map(|id| self.store.path(r.name.as_str(), id))
            })
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
        // Rules a crashed run left go; those of the functions below come back.
        let runtime = Arc::clone(&self.runtime);
        let _ = tokio::task::spawn_blocking(move || runtime.egress.clear()).await;
        for record in registry.list().filter(|r| r.options.egress) {
            self.egress_rules(record, None).await?;
        }
        for record in registry.list() {
            let added = self.net.add(record.ip).await?;
            let func = self.function(record, Arc::default())?;
            self.runtime.refill(&func);
            self.start_serving(record, Arc::clone(&func), Some(added))?;
            self.watch_servers(Arc::clone(&func));
            self.announce_when_ready(record.ip, func);
            tracing::info!(function = %record.name, ip = %record.ip, "serving");
        }
        Ok(())
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
            let rootfs = self.store.path(record.name.as_str(), record.rootfs_id());
            shift_owners(rootfs, slot).await?;
            record.id_slot = Some(slot);
            tracing::info!(function = %record.name, slot, "assigned a host id range");
            registry.put(record)?;
        }
        Ok(())
    }
}
