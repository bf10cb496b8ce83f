//! Function addresses for the whole cluster: taken with a
//! create-if-absent transaction on `/faasd/addresses/IP`, so two nodes
//! never hand out one; handed out in turn, and a removed function's kept
//! from the next one for a while.

use std::collections::HashSet;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use super::{keys, retry, Cluster, ClusterError};
use crate::api::name::FunctionName;

/// How long a removed function's address is not handed out again: longer
/// than a node lags behind etcd while it is in touch (a node cut off
/// longer may serve the old function there until it heals; that it is
/// handed out in turn makes that rarer still).
const ADDRESS_QUARANTINE_SECS: i64 = 60;

impl Cluster {
    /// Takes the pool address after the one taken last that no function
    /// of the cluster holds or held within `ADDRESS_QUARANTINE_SECS` (nor
    /// anything on this node's `lo`): a node that missed a removal (cut
    /// off, or slow) never serves the old function on an address another
    /// one was given since.
    pub(super) async fn reserve_address(
        &self,
        name: &FunctionName,
    ) -> Result<IpAddr, ClusterError> {
        for _ in 0..32 {
            let got = self
                .get_again(
                    keys::ADDRESSES,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            let mut taken: HashSet<IpAddr> = got
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = std::str::from_utf8(kv.key()).ok()?;
                    keys::tail(key, keys::ADDRESSES)?.parse().ok()
                })
                .collect();
            taken.extend(self.manager.local_addresses().await?);
            let cursor = self.get_again(keys::ADDRESS_CURSOR, None).await?;
            let last = cursor
                .kvs()
                .first()
                .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok());
            let ip = self
                .pool
                .allocate_after(&taken, last)
                .map_err(|_| ClusterError::Exhausted)?;
            let key = keys::address(ip);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(key.as_str(), name.as_str(), None),
                    TxnOp::put(keys::ADDRESS_CURSOR, ip.to_string(), None),
                ]);
            if self.txn_again(txn).await?.succeeded() {
                return Ok(ip);
            }
        }
        Err(ClusterError::Exhausted)
    }

    /// What a removal puts in place of each address it lets go: the key
    /// kept (so the address is not handed out) under a lease that ends
    /// the quarantine.
    pub(super) async fn quarantine(&self, held: &[IpAddr]) -> Result<Vec<TxnOp>, ClusterError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let lease = retry::write(|| {
            let mut client = self.client.clone();
            async move { client.lease_grant(ADDRESS_QUARANTINE_SECS, None).await }
        })
        .await?
        .id();
        Ok(held
            .iter()
            .map(|ip| {
                let options = PutOptions::new().with_lease(lease);
                TxnOp::put(keys::address(*ip), "", Some(options))
            })
            .collect())
    }

    /// The addresses etcd holds for `name`.
    pub(super) async fn addresses_of(
        &self,
        name: &FunctionName,
    ) -> Result<Vec<IpAddr>, ClusterError> {
        let got = self
            .client
            .clone()
            .get(keys::ADDRESSES, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(got
            .kvs()
            .iter()
            .filter(|kv| kv.value() == name.as_str().as_bytes())
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                keys::tail(key, keys::ADDRESSES)?.parse().ok()
            })
            .collect())
    }

    pub(super) async fn release_address(&self, ip: IpAddr) {
        if let Err(e) = self.client.clone().delete(keys::address(ip), None).await {
            tracing::warn!(%ip, error = %e, "releasing a reserved address");
        }
    }
}
