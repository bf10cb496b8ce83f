//! Following etcd. A session holds the node's lease (its membership,
//! statuses and archive offers live under it), converges once on all the
//! cluster records, then applies each change it watches. A session that
//! ends (etcd down, the lease expired) is followed by a new one that reads
//! everything again, so nothing changed during an outage is missed; in
//! between, the node serves what it has.

use crate::manager::ImageSource;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use super::keys::{self, Spec};
use super::{retry, seal, Cluster, ClusterError, LEASE_TTL, REQUEST_TIMEOUT};
use crate::api::name::FunctionName;
use crate::api::{NodeInfo, OptionsPatch};
use crate::manager::ManagerError;

/// The first wait after a session ended (etcd's election takes about a
/// second; writes through this node wait for its view meanwhile), doubled
/// on each failed attempt up to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often the members are counted (`faas_cluster_members`).
const MEMBERS_EVERY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How often archives no function needs any more are looked for, when
/// records changed since the last look. Not after every change: a look
/// reads every record, and with thousands of functions a deploy each
/// made etcd send each node megabytes (quadratic in the functions).
const COLLECT_EVERY: Duration = Duration::from_secs(10);
/// How often a change that failed here (a peer down, a full disk) is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(3);
/// The longest a node waits for one peer's archive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// The key naming the cluster, and the file remembering which one this
/// node joined.
const CLUSTER_ID_KEY: &str = "/faasd/cluster-id";
const CLUSTER_ID_FILE: &str = "cluster-id";

pub(super) async fn run(cluster: Arc<Cluster>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut joined = false;
        let ended = session(&cluster, &mut joined).await;
        *cluster.lease.lock().unwrap_or_else(|p| p.into_inner()) = None;
        cluster.view.lost(ended.to_string());
        if joined {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(error = %ended, retry_in = ?backoff, "cluster session ended; serving what is here");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Aborts the keep-alive task when the session ends.
struct Abort<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One session: returns why it ended.
async fn session(cluster: &Cluster, joined: &mut bool) -> ClusterError {
    match session_inner(cluster, joined).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session_inner(
    cluster: &Cluster,
    joined: &mut bool,
) -> Result<std::convert::Infallible, ClusterError> {
    cluster.check_identity().await?;
    let mut keepalive = register(cluster).await?;
    let (revision, mut failed) = converge_all(cluster).await?;
    *joined = true;
    follow(cluster, revision, &mut failed, &mut keepalive).await
}

/// Functions whose convergence failed, retried every `RETRY_EVERY`.
type Failed = HashMap<FunctionName, (Spec, i64)>;

/// Puts this node in etcd under a lease of its own, kept alive by the
/// returned task (which ends with why it could not), and offers the
/// archives it holds.
async fn register(cluster: &Cluster) -> Result<Abort<String>, ClusterError> {
    let client = cluster.client.clone();
    let lease = retry::write(|| {
        let mut client = client.clone();
        async move { client.lease_grant(LEASE_TTL, None).await }
    })
    .await?
    .id();
    let (mut keeper, mut acks) = retry::read(|| {
        let mut client = client.clone();
        async move { client.lease_keep_alive(lease).await }
    })
    .await?;
    let keepalive = Abort(tokio::spawn(async move {
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return format!("keeping the lease: {e}");
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, acks.message()).await {
                Ok(Ok(Some(ack))) if ack.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return "the lease expired".to_string(),
                Ok(Err(e)) => return format!("keeping the lease: {e}"),
                Ok(Ok(None)) | Err(_) => return "etcd stopped answering keep-alives".into(),
            }
            tokio::time::sleep(Duration::from_millis(LEASE_TTL as u64 * 1000 / 3)).await;
        }
    }));
    let me = NodeInfo {
        name: cluster.me.node.clone(),
        url: cluster.me.url.clone(),
        since: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    retry::write(|| {
        let (mut client, me) = (client.clone(), &me);
        async move {
            let options = Some(PutOptions::new().with_lease(lease));
            client
                .put(keys::node(&me.name), keys::encode(me), options)
                .await
        }
    })
    .await?;
    *cluster.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
    for digest in cluster.archives.held() {
        cluster.offer(&digest).await;
    }
    Ok(keepalive)
}

/// Makes this node what etcd says at one revision: every admitted record
/// served, every function etcd no longer has removed. Returns that
/// revision and what failed.
async fn converge_all(cluster: &Cluster) -> Result<(i64, Failed), ClusterError> {
    let all = cluster
        .get_again(keys::FUNCTIONS, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = all.header().map(|h| h.revision()).unwrap_or_default();
    let mut specs: Failed = HashMap::new();
    for kv in all.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match cluster.admit(&key, kv.value()) {
            Ok(spec) => {
                specs.insert(spec.name.clone(), (spec, kv.mod_revision()));
            }
            Err(e) => cluster.refuse(&key, kv.mod_revision(), &e).await,
        }
    }
    for record in cluster.manager.records().await {
        if !specs.contains_key(&record.name) {
            tracing::info!(function = %record.name, ip = %record.ip, "not in the cluster any more: removing");
            cluster.retire(&record.name).await;
            cluster.view.release(record.name.as_str());
        }
    }
    let mut failed = HashMap::new();
    for (spec, at) in specs.values() {
        cluster.converge(spec, *at, &mut failed).await;
    }
    cluster.collect_archives().await;
    cluster.view.advance(revision);
    cluster.view.follows();
    tracing::info!(node = %cluster.me.node, functions = specs.len(), revision, "in the cluster");
    Ok((revision, failed))
}

/// Follows etcd's changes after `revision` until the session ends (the
/// lease or the watch is lost), retrying what failed meanwhile.
async fn follow(
    cluster: &Cluster,
    revision: i64,
    failed: &mut Failed,
    keepalive: &mut Abort<String>,
) -> Result<std::convert::Infallible, ClusterError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watch = retry::read(|| {
        let (mut client, options) = (cluster.client.clone(), options.clone());
        async move { client.watch(keys::FUNCTIONS, Some(options)).await }
    })
    .await?;
    let mut retry = tokio::time::interval(RETRY_EVERY);
    let mut members = tokio::time::interval(MEMBERS_EVERY);
    // A slow count is not made up for with a burst of them.
    members.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut collect = tokio::time::interval(COLLECT_EVERY);
    collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = false;
    loop {
        tokio::select! {
            _ = members.tick() => cluster.count_members().await,
            why = &mut keepalive.0 => {
                return Err(ClusterError::Unavailable(why.unwrap_or_else(|e| e.to_string())));
            }
            message = watch.message() => {
                let response = message?.ok_or_else(|| ClusterError::Unavailable("the watch ended".into()))?;
                if response.compact_revision() > 0 {
                    // Changes since were compacted away: read everything again.
                    return Err(ClusterError::Unavailable(format!("the watch fell behind etcd's compaction at revision {}", response.compact_revision())));
                }
                if response.canceled() {
                    return Err(ClusterError::Unavailable(format!("the watch was cancelled: {}", response.cancel_reason())));
                }
                for event in response.events() {
                    apply_event(cluster, event, failed).await;
                }
                let last = response.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max();
                if let Some(revision) = last {
                    cluster.view.advance(revision);
                    changed = true;
                }
            }
            _ = collect.tick(), if changed => {
                changed = false;
                cluster.collect_archives().await;
            }
            _ = retry.tick(), if !failed.is_empty() => {
                let again: Vec<(Spec, i64)> = failed.drain().map(|(_, v)| v).collect();
                for (spec, at) in again {
                    cluster.converge(&spec, at, failed).await;
                }
            }
        }
    }
}

/// One change of a function's record: admitted and served, or removed.
async fn apply_event(cluster: &Cluster, event: &etcd_client::Event, failed: &mut Failed) {
    let Some(kv) = event.kv() else {
        return;
    };
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let name = keys::tail(&key, keys::FUNCTIONS).and_then(|n| FunctionName::parse(n).ok());
    let Some(name) = name else {
        return;
    };
    match event.event_type() {
        EventType::Put => match cluster.admit(&key, kv.value()) {
            Ok(spec) => {
                failed.remove(&name);
                cluster.converge(&spec, kv.mod_revision(), failed).await;
            }
            Err(e) => cluster.refuse(&key, kv.mod_revision(), &e).await,
        },
        EventType::Delete => {
            failed.remove(&name);
            cluster.retire(&name).await;
            cluster.view.release(name.as_str());
        }
    }
}

impl Cluster {
    /// Refuses an etcd that is not the cluster this node joined: converging
    /// on an empty (or another) etcd would remove every function here.
    async fn check_identity(&self) -> Result<(), ClusterError> {
        let path = self.state.join(CLUSTER_ID_FILE);
        let remembered = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string());
        let mut client = self.client.clone();
        let fresh = format!("{:016x}", rand_u64());
        let txn = Txn::new()
            .when([Compare::create_revision(
                CLUSTER_ID_KEY,
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(CLUSTER_ID_KEY, fresh.as_str(), None)])
            .or_else([TxnOp::get(CLUSTER_ID_KEY, None)]);
        let done = self.txn_again(txn).await?;
        let id = if done.succeeded() {
            match &remembered {
                // This node knew a cluster, and etcd knows none: an empty
                // etcd. Take the id back out rather than adopt it.
                Some(old) => {
                    let _ = client.delete(CLUSTER_ID_KEY, None).await;
                    return Err(ClusterError::Identity {
                        joined: old.clone(),
                        found: "none (an empty etcd)".into(),
                    });
                }
                None => fresh,
            }
        } else {
            let got = self.get_again(CLUSTER_ID_KEY, None).await?;
            got.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default()
        };
        if remembered.as_ref().is_none_or(|old| *old == id) {
            self.view.named(&id);
        }
        match remembered {
            Some(old) if old != id => Err(ClusterError::Identity {
                joined: old,
                found: id,
            }),
            Some(_) => Ok(()),
            None => std::fs::write(&path, format!("{id}\n")).map_err(|source| ClusterError::Io {
                op: "remembering the cluster id",
                source,
            }),
        }
    }

    /// Makes `spec` serve here, reporting how it went; a failure is tried
    /// again later.
    async fn converge(&self, spec: &Spec, revision: i64, failed: &mut Failed) {
        match self.apply(spec).await {
            Ok(()) => {
                self.view.release(spec.name.as_str());
                self.report(&spec.name, revision, None).await
            }
            Err(e) => {
                self.view.hold(spec.name.as_str(), revision, &e.to_string());
                tracing::warn!(function = %spec.name, revision, error = %e, "could not serve the cluster's version");
                self.report(&spec.name, revision, Some(e.to_string())).await;
                failed.insert(spec.name.clone(), (spec.clone(), revision));
            }
        }
    }

    /// The cheapest way from what serves here to `spec`: nothing, new
    /// options, a kept version, or (only then) the archive, fetched if
    /// this node lacks it.
    async fn apply(&self, spec: &Spec) -> Result<(), ClusterError> {
        let one = self.applying.lock().await;
        // Reads answer what served before until this one is done: a
        // convergence can take steps (a function moved: removed, then
        // made again).
        let _flight = self.take_off(one, &spec.name).await;
        self.apply_held(spec).await
    }

    /// `apply`, the change lock held by the caller.
    pub(super) async fn apply_held(&self, spec: &Spec) -> Result<(), ClusterError> {
        let name = &spec.name;
        self.forget_if_elsewhere(name, spec.ip).await?;
        let local = self.manager.record(name).await;
        let kept = local.as_ref().and_then(|r| {
            r.history
                .iter()
                .filter(|v| v.image_id == spec.image_id)
                .max_by_key(|v| (v.options == spec.options, v.version))
                .map(|v| v.version)
        });
        match (local, kept) {
            (Some(r), _) if r.image_id == spec.image_id => {
                if r.options != spec.options {
                    self.manager.set_options(name, spec.options.clone()).await?;
                }
            }
            (Some(_), Some(version)) => {
                self.manager
                    .serve_kept(name, version, spec.options.clone())
                    .await?;
            }
            _ => match spec.pulled.get(&spec.image_id) {
                Some(from) => {
                    self.take_login(&from.reference).await?;
                    let source = ImageSource::Registry {
                        reference: from.reference.clone(),
                        platform: from.platform.parse().unwrap_or_default(),
                        digest: Some(from.digest.clone()),
                    };
                    self.manager
                        .deploy_at(
                            name.clone(),
                            OptionsPatch::from(&spec.options),
                            source,
                            Some(spec.ip),
                        )
                        .await?;
                }
                None => {
                    let archive = self.fetch(&spec.archive).await?;
                    self.manager
                        .deploy_at(
                            name.clone(),
                            OptionsPatch::from(&spec.options),
                            ImageSource::Archive(archive),
                            Some(spec.ip),
                        )
                        .await?;
                    self.offer(&spec.archive).await;
                }
            },
        }
        Ok(())
    }

    /// Counts the members for `faas_cluster_members` (a failure leaves the
    /// last count: the lease's loss says more). Bounded: with every
    /// member unreachable a request can wait for a connection longer than
    /// its own timeout, and the loop that awaits this must go on to notice
    /// the lease's loss (a partition test caught it stuck here).
    async fn count_members(&self) {
        let count = GetOptions::new().with_prefix().with_count_only();
        let mut client = self.client.clone();
        let got = tokio::time::timeout(REQUEST_TIMEOUT, client.get(keys::NODES, Some(count))).await;
        if let Ok(Ok(got)) = got {
            crate::metrics::cluster_members(usize::try_from(got.count()).unwrap_or(0));
        }
    }

    /// Removes `name` here (the cluster removed it).
    async fn retire(&self, name: &FunctionName) {
        let _one = self.applying.lock().await;
        match self.manager.remove(name).await {
            Ok(()) | Err(ManagerError::NotFound(_)) => {}
            Err(e) => tracing::warn!(function = %name, error = %e, "removing"),
        }
        self.forget_status(name).await;
    }

    /// The archive `digest`, here already or fetched from a peer holding it.
    async fn fetch(&self, digest: &str) -> Result<std::path::PathBuf, ClusterError> {
        if self.archives.has(digest) {
            return Ok(self.archives.path(digest));
        }
        let got = self
            .client
            .clone()
            .get(keys::holders(digest), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut peers: Vec<String> = got
            .kvs()
            .iter()
            .filter(|kv| !kv.key().ends_with(format!("/{}", self.me.node).as_bytes()))
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect();
        if peers.is_empty() {
            // No offer (its holder's lease lapsed, say): any peer may
            // still have it, and says so by sending it.
            peers = self
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.name != self.me.node)
                .map(|n| n.url)
                .collect();
        }
        let archives = self.archives.clone();
        let credential = self.seal.credential(&self.me.node, digest, seal::now());
        let wanted = digest.to_string();
        let started = std::time::Instant::now();
        let fetched = tokio::time::timeout(
            FETCH_TIMEOUT,
            tokio::task::spawn_blocking(move || archives.fetch(&wanted, &peers, &credential)),
        )
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|joined| joined.map_err(|e| e.to_string()))
        .and_then(|r| r)
        .map_err(|why| ClusterError::Fetch {
            digest: digest.to_string(),
            why,
        })?;
        tracing::info!(digest, took = ?started.elapsed(), "fetched an image archive from a peer");
        Ok(fetched)
    }

    /// Deletes the archives no function of the cluster needs, and this
    /// node's offers of them. Under the change lock and from etcd itself:
    /// an archive a deploy here has kept but not yet recorded is not
    /// mistaken for garbage.
    async fn collect_archives(&self) {
        let _one = self.applying.lock().await;
        let keep = self.needed(None).await;
        for digest in self.archives.retain(&keep) {
            tracing::info!(digest, "deleted an image archive no function needs");
            let _ = self
                .client
                .clone()
                .delete(keys::holder(&digest, &self.me.node), None)
                .await;
        }
    }
}

/// 64 random bits from the kernel (a cluster id needs no more).
fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    u64::from_ne_bytes(bytes)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
}
