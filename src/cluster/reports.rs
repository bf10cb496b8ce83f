//! What this node tells the cluster about itself, under its lease: the
//! archives it offers to peers, and what it serves of each function.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::{keys, Cluster};
use crate::api::name::FunctionName;
use crate::api::NodeStatus;

impl Cluster {
    /// Tells peers this node holds `digest`.
    pub(super) async fn offer(&self, digest: &str) {
        let Some(lease) = self.lease() else {
            return;
        };
        let put = self
            .client
            .clone()
            .put(
                keys::holder(digest, &self.me.node),
                self.me.url.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(e) = put {
            tracing::warn!(digest, error = %e, "offering an archive to peers");
        }
    }

    /// Writes what this node serves of `name` (at cluster `revision`), and
    /// again once its pool is filled.
    pub(super) async fn report(&self, name: &FunctionName, revision: i64, error: Option<String>) {
        let Some(lease) = self.lease() else {
            return;
        };
        let record = self.manager.record(name).await;
        if record.is_none() && error.is_none() {
            return;
        }
        let status = NodeStatus {
            node: self.me.node.clone(),
            revision,
            version: record.as_ref().map(|r| r.version).unwrap_or_default(),
            image_id: record.map(|r| r.image_id).unwrap_or_default(),
            ready: error.is_none() && self.manager.ready(name),
            error,
            requests: None,
            warm_ready: None,
        };
        let key = keys::status(name, &self.me.node);
        let mut client = self.client.clone();
        let put = client
            .put(
                key.as_str(),
                keys::encode(&status),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        let written = match put {
            Ok(put) => put.header().map(|h| h.revision()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(function = %name, error = %e, "reporting status");
                return;
            }
        };
        if status.ready || status.error.is_some() {
            return;
        }
        let manager = Arc::clone(&self.manager);
        let name = name.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match manager.record(&name).await {
                    Some(r) if r.version == status.version => {}
                    _ => return,
                }
                if manager.ready(&name) {
                    let ready = NodeStatus {
                        ready: true,
                        ..status
                    };
                    // Only over the status written above: a later report
                    // (a refused record, a newer revision) stands.
                    let opts = Some(PutOptions::new().with_lease(lease));
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            written,
                        )])
                        .and_then([TxnOp::put(key.as_str(), keys::encode(&ready), opts)]);
                    let _ = client.txn(txn).await;
                    return;
                }
            }
        });
    }

    pub(super) async fn forget_status(&self, name: &FunctionName) {
        let _ = self
            .client
            .clone()
            .delete(keys::status(name, &self.me.node), None)
            .await;
    }
}
