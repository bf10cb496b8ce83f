//! Function addresses for the whole cluster: taken with a
//! create-if-absent transaction on `/faasd/addresses/IP`, so two nodes
//! never hand out one.

use std::collections::HashSet;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{keys, Cluster, ClusterError};
use crate::api::name::FunctionName;

impl Cluster {
    /// Takes the lowest pool address no function of the cluster holds
    /// (nor anything on this node's `lo`).
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
            let ip = self
                .pool
                .allocate(&taken)
                .map_err(|_| ClusterError::Exhausted)?;
            let key = keys::address(ip);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), name.as_str(), None)]);
            if self.txn_again(txn).await?.succeeded() {
                return Ok(ip);
            }
        }
        Err(ClusterError::Exhausted)
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
