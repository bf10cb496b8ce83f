//! Announcing: a host route per function ready on this node (`--route-table`),
//! withdrawn at `rm` and, all at once, when the node drains.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Manager, ManagerError};
use crate::runtime::Function;

/// Addresses announced (or about to be), and whether announcing is over
/// (draining).
#[derive(Default)]
pub(super) struct Announced {
    ips: HashSet<IpAddr>,
    draining: bool,
}

impl Manager {
    /// Announces `ip` once `func`'s pool has filled (at once for `--warm
    /// 0`): a router never sends a client to a node that would make it
    /// wait for cold starts. A function whose pool cannot fill is not
    /// announced. Once announced, a function stays so across versions
    /// until it is removed or the node drains.
    pub(crate) fn announce_when_ready(&self, ip: IpAddr, func: Arc<Function>) {
        let Some(routes) = self.routes.clone() else {
            return;
        };
        {
            let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            if a.draining || !a.ips.insert(ip) {
                return;
            }
        }
        let announced = Arc::clone(&self.announced);
        tokio::spawn(async move {
            while !func.pool.filled() {
                let gone = func.pool.is_closed()
                    || !announced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .ips
                        .contains(&ip);
                if gone {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Checked and announced under the lock: a withdraw (rm, drain)
            // either comes after and removes it, or came before and wins.
            let still = {
                let a = announced.lock().unwrap_or_else(|p| p.into_inner());
                a.ips.contains(&ip) && !a.draining
            };
            if !still {
                return;
            }
            match routes.announce(ip).await {
                Ok(()) => {
                    tracing::info!(function = %func.name, %ip, table = routes.table(), "announced")
                }
                Err(e) => tracing::warn!(function = %func.name, %ip, error = %e, "announcing"),
            }
            // A withdraw that raced the announcement above is done again.
            let withdrawn = !announced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ips
                .contains(&ip);
            if withdrawn {
                let _ = routes.withdraw(ip).await;
            }
        });
    }

    /// Takes charge of the shared listeners' pool addresses (`(ip, we
    /// added it)`), before `restore` (which keeps them): announced with
    /// the functions' routes, withdrawn with them, removed from `lo` at
    /// shutdown if we added them.
    pub async fn announce_shared(&self, ips: Vec<(IpAddr, bool)>) {
        for (ip, _) in &ips {
            let Some(routes) = &self.routes else {
                break;
            };
            self.announced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ips
                .insert(*ip);
            match routes.announce(*ip).await {
                Ok(()) => {
                    tracing::info!(%ip, table = routes.table(), "announced the shared address")
                }
                Err(e) => tracing::warn!(%ip, error = %e, "announcing the shared address"),
            }
        }
        self.shared_ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ips);
    }

    /// The shared listeners' pool addresses.
    pub(super) fn shared_addresses(&self) -> Vec<IpAddr> {
        let shared = self.shared_ips.lock().unwrap_or_else(|p| p.into_inner());
        shared.iter().map(|(ip, _)| *ip).collect()
    }

    /// Withdraws the route to `ip`, if announced.
    pub(super) async fn withdraw(&self, ip: IpAddr) -> Result<(), ManagerError> {
        let Some(routes) = &self.routes else {
            return Ok(());
        };
        let was = self
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ips
            .remove(&ip);
        if was {
            routes.withdraw(ip).await?;
            tracing::info!(%ip, table = routes.table(), "withdrawn");
        }
        Ok(())
    }

    /// The first step of a planned stop: every route goes (and no new one
    /// comes) while everything still serves. Returns whether there were
    /// routes to withdraw (only then is a drain worth waiting for).
    pub async fn withdraw_all(&self) -> bool {
        let ips: Vec<IpAddr> = {
            let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            a.draining = true;
            a.ips.drain().collect()
        };
        let Some(routes) = &self.routes else {
            return false;
        };
        for ip in &ips {
            if let Err(e) = routes.withdraw(*ip).await {
                tracing::warn!(%ip, error = %e, "withdrawing");
            }
        }
        tracing::info!(
            routes = ips.len(),
            table = routes.table(),
            "withdrew every route"
        );
        true
    }
}
