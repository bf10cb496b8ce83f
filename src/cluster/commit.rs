//! Recording a change made through this node: what now serves here is
//! published as the function's record in one transaction on the revision
//! the change started from (its host names claimed in the same one). If
//! etcd did not take it, what the change did here is undone, so this node
//! goes on serving what the cluster records (and a new function's address
//! is let go); if etcd's answer was lost, the record is read back to learn
//! which it was.

use std::collections::HashSet;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::keys::{self, Spec};
use super::{Cluster, ClusterError};
use crate::api::host::HostName;
use crate::api::name::FunctionName;
use crate::api::FunctionInfo;
use crate::manager::ManagerError;

/// A change made here, to be recorded.
pub(super) struct Change<'a> {
    /// The cluster's record it started from, and that record's revision.
    pub current: Option<&'a Spec>,
    pub revision: i64,
    /// The archive of a new image, by digest (a pulled one has none).
    pub new_archive: Option<&'a str>,
    pub origin: &'a str,
    /// The address reserved for a new function.
    pub reserved: Option<IpAddr>,
}

impl Cluster {
    /// Records `change`, or undoes it here; answers the function as this
    /// node serves it, with the revision that recorded it.
    pub(super) async fn commit(
        &self,
        name: &FunctionName,
        change: Change<'_>,
    ) -> Result<FunctionInfo, ClusterError> {
        let failed = match self.publish(name, &change).await {
            Ok(at) => return self.recorded(name, at).await,
            Err(e) => e,
        };
        let taken = match &failed {
            // The answer was lost, not necessarily the change.
            ClusterError::Unavailable(_) => self.taken(name, change.revision).await,
            _ => Some(None),
        };
        match taken {
            Some(Some(at)) => self.recorded(name, at).await,
            Some(None) => {
                self.undo(name, change.current).await;
                if let Some(ip) = change.reserved {
                    self.release_address(ip).await;
                }
                Err(failed)
            }
            None => {
                // Whether etcd holds it is unknown: this node goes back to
                // the record it knows and follows etcd from there (the
                // address stays reserved: the record may name it).
                self.undo(name, change.current).await;
                Err(ClusterError::Indeterminate(failed.to_string()))
            }
        }
    }

    async fn recorded(&self, name: &FunctionName, at: i64) -> Result<FunctionInfo, ClusterError> {
        self.report(name, at, None).await;
        let mut info = self.manager.inspect(name).await?;
        info.nodes = self.statuses(name).await.unwrap_or_default();
        info.revision = Some(at);
        Ok(info)
    }

    /// After a publish etcd did not confirm: the revision that recorded
    /// it if etcd holds it (a record newer than `revision`, signed by this
    /// node, of what serves here), `Some(None)` if not, `None` if etcd
    /// cannot say.
    async fn taken(&self, name: &FunctionName, revision: i64) -> Option<Option<i64>> {
        let key = keys::function(name);
        let got = self.get_again(&key, None).await.ok()?;
        let Some(kv) = got.kvs().first().filter(|kv| kv.mod_revision() != revision) else {
            return Some(None);
        };
        let spec = self.seal.open_spec(&key, kv.value()).ok()?;
        let here = self.manager.record(name).await?;
        let ours = spec.node == self.me.node
            && spec.image_id == here.image_id
            && spec.options == here.options;
        Some(ours.then(|| kv.mod_revision()))
    }

    /// Puts this node back on `current`, the record the change started
    /// from (a new function goes); the caller holds the change lock.
    async fn undo(&self, name: &FunctionName, current: Option<&Spec>) {
        let refused = self.manager.record(name).await.map(|r| r.version);
        let undone = match current {
            // The refused version is not kept: a rollback here would
            // otherwise bring back what etcd never took.
            Some(spec) => match self.apply_held(spec).await {
                Ok(()) => match refused {
                    Some(v) => self
                        .manager
                        .forget_version(name, v)
                        .await
                        .map_err(Into::into),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            },
            None => match self.manager.remove(name).await {
                Ok(()) | Err(ManagerError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            },
        };
        match undone {
            Ok(()) => tracing::info!(function = %name, "the change was not recorded: undone here"),
            Err(e) => {
                tracing::warn!(function = %name, error = %e, "the change was not recorded and undoing it here failed: this node serves a version the cluster does not record until the next change")
            }
        }
    }

    /// Records what serves here now as `name`'s spec, if etcd's is still
    /// at `change.revision`; answers the revision that recorded it.
    async fn publish(&self, name: &FunctionName, change: &Change<'_>) -> Result<i64, ClusterError> {
        let (previous, revision) = (change.current, change.revision);
        let record = self
            .manager
            .record(name)
            .await
            .ok_or_else(|| ManagerError::NotFound(name.clone()))?;
        let mut archives = previous.map(|p| p.archives.clone()).unwrap_or_default();
        let mut pulled = previous.map(|p| p.pulled.clone()).unwrap_or_default();
        if let Some(digest) = change.new_archive {
            archives.insert(record.image_id.clone(), digest.to_string());
        }
        for version in std::iter::once(record.as_version()).chain(record.history.iter().cloned()) {
            if let Some(from) = version.pulled {
                pulled.insert(version.image_id, from);
            }
        }
        let images: HashSet<&str> = std::iter::once(record.image_id.as_str())
            .chain(record.history.iter().map(|v| v.image_id.as_str()))
            .collect();
        archives.retain(|image, _| images.contains(image.as_str()));
        pulled.retain(|image, _| images.contains(image.as_str()));
        let archive = match (record.pulled.as_ref(), archives.get(&record.image_id)) {
            (Some(_), _) => String::new(),
            (None, Some(archive)) => archive.clone(),
            (None, None) => {
                return Err(ClusterError::Corrupt(format!(
                    "{}: no archive recorded for image {}",
                    keys::function(name),
                    record.image_id
                )))
            }
        };
        let spec = Spec {
            name: name.clone(),
            ip: record.ip,
            image_id: record.image_id.clone(),
            archive,
            archives,
            pulled,
            options: record.options.clone(),
            origin: change.origin.to_string(),
            node: self.me.node.clone(),
        };
        let key = keys::function(name);
        let mut when = vec![Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            revision,
        )];
        let mut ops = vec![TxnOp::put(key.as_str(), self.seal.seal_spec(&spec), None)];
        // The record and the offer of its archive are one: a record no
        // peer could fetch is never published (an offer of its own could
        // fail while the record's write succeeds).
        if let (Some(digest), Some(lease)) = (change.new_archive, self.lease()) {
            let options = PutOptions::new().with_lease(lease);
            let holder = keys::holder(digest, &self.me.node);
            ops.push(TxnOp::put(holder, self.me.url.as_str(), Some(options)));
        }
        self.claim_hosts(name, &record.options.hosts, previous, &mut when, &mut ops)
            .await?;
        let txn = Txn::new().when(when).and_then(ops);
        let done = self.txn_again(txn).await?;
        if !done.succeeded() {
            return Err(ClusterError::Conflict(name.clone()));
        }
        Ok(done.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Refuses `hosts` if another function holds one in etcd.
    pub(super) async fn hosts_free(
        &self,
        name: &FunctionName,
        hosts: &[HostName],
    ) -> Result<Vec<Option<i64>>, ClusterError> {
        let mut held = Vec::with_capacity(hosts.len());
        for host in hosts {
            let got = self.get_again(&keys::host(host), None).await?;
            match got.kvs().first() {
                Some(kv) if kv.value() != name.as_str().as_bytes() => {
                    let holder = FunctionName::parse(&String::from_utf8_lossy(kv.value()))
                        .map_err(|e| ClusterError::Corrupt(format!("{}: {e}", keys::host(host))))?;
                    return Err(ManagerError::HostTaken {
                        host: host.clone(),
                        holder,
                    }
                    .into());
                }
                Some(kv) => held.push(Some(kv.mod_revision())),
                None => held.push(None),
            }
        }
        Ok(held)
    }

    /// Adds to a publishing transaction: each of `hosts` still free or
    /// still `name`'s, taken; those `previous` had and `hosts` lacks, let go.
    async fn claim_hosts(
        &self,
        name: &FunctionName,
        hosts: &[HostName],
        previous: Option<&Spec>,
        when: &mut Vec<Compare>,
        ops: &mut Vec<TxnOp>,
    ) -> Result<(), ClusterError> {
        let held = self.hosts_free(name, hosts).await?;
        for (host, held) in hosts.iter().zip(held) {
            let key = keys::host(host);
            match held {
                Some(at) => when.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, at)),
                None => {
                    when.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(key.as_str(), name.as_str(), None));
                }
            }
        }
        let dropped = previous
            .into_iter()
            .flat_map(|p| p.options.hosts.iter())
            .filter(|h| !hosts.contains(h));
        ops.extend(dropped.map(|h| TxnOp::delete(keys::host(h), None)));
        Ok(())
    }
}
