//! Many nodes, one registry of record in etcd (`faasd --etcd`). A change
//! made through a node's API (deploy, update, rollback, rm) is made here
//! first, then written to etcd in a transaction on the revision it started
//! from; every node watches the functions' prefix and converges (`sync`).
//! Addresses are allocated by transaction, so two nodes never hand out one;
//! image archives move between nodes by digest (`archives`).

use crate::manager::{ImageSource, Repull};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::api::name::FunctionName;
use crate::api::{FunctionInfo, NodeInfo, NodeStatus, OptionsPatch};
use crate::manager::{Manager, ManagerError};
use crate::net::AddressPool;

mod addresses;
mod admit;
pub mod archives;
mod commit;
mod flights;
pub mod keys;
mod logins;
mod reports;
mod retry;
pub mod seal;
mod sync;
pub mod view;

use archives::Archives;
use commit::Change;
use keys::Spec;
use seal::{Seal, SealError};
use view::View;

/// Seconds a node's membership (and what it says it serves) outlives its
/// last keep-alive.
const LEASE_TTL: i64 = 5;
/// Each etcd request's limit: an API call during an outage is answered
/// (503) in about this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request waits for this node's view to reach the revision it
/// builds on (a peer's archive being fetched, a converge queued behind
/// another): then 503, with the reason.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster registry (etcd) is unreachable ({0}); nothing was changed, try again once it is back")]
    Unavailable(String),
    #[error("{0} was changed through another node at the same time; this change was not recorded, try again")]
    Conflict(FunctionName),
    #[error("this node's view of the cluster is at revision {at}, behind revision {wanted} ({why}); try again, or through another node")]
    Behind { at: i64, wanted: i64, why: String },
    #[error("this node does not serve {0}'s cluster version yet (its last attempt failed: `faas inspect` lists why under nodes); try again, or through another node")]
    OutOfStep(FunctionName),
    #[error("etcd did not confirm the change ({0}), but etcd may hold the change: this node serves what the cluster recorded before until it learns which; `faas inspect` shows which, and every node follows what etcd holds")]
    Indeterminate(String),
    #[error("{name}'s version {version} is kept on this node only: the cluster no longer records its image, so its peers could not serve it; deploy that image again instead")]
    NotRecorded { name: FunctionName, version: u64 },
    #[error("the cluster's address pool has no free address")]
    Exhausted,
    #[error("fetching image archive {digest}: {why}")]
    Fetch { digest: String, why: String },
    #[error("etcd is not the cluster this node joined (it joined cluster {joined}, etcd holds {found}); not converging, which would remove every function here: point --etcd at its cluster, or delete <state-dir>/cluster-id to join this one")]
    Identity { joined: String, found: String },
    #[error("corrupt cluster record {0}")]
    Corrupt(String),
    #[error("refused the cluster's record: {0}")]
    Refused(String),
    #[error("etcd's TLS: {0}")]
    Tls(String),
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

impl From<etcd_client::Error> for ClusterError {
    fn from(e: etcd_client::Error) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct Membership {
    pub endpoints: Vec<String>,
    pub node: String,
    /// This node's control API, for peers fetching archives.
    pub url: String,
    /// The cluster token (every node's `--token-file` holds it): the key
    /// of what nodes sign (`seal`).
    pub token: String,
    /// TLS to etcd; `None` is plain http (`--etcd-insecure`).
    pub tls: Option<crate::config::EtcdTls>,
}

pub struct Cluster {
    client: Client,
    me: Membership,
    seal: Seal,
    manager: Arc<Manager>,
    archives: Archives,
    pool: AddressPool,
    state: PathBuf,
    /// The lease of the current etcd session, if there is one.
    lease: Mutex<Option<i64>>,
    /// One change at a time on this node: an API change and the
    /// convergence of a watched one never interleave.
    applying: tokio::sync::Mutex<()>,
    /// Changes through this node under way (`flights`).
    flights: Mutex<flights::Flights>,
    view: View,
}

impl Cluster {
    /// Connects lazily: an unreachable etcd is no error here (the node
    /// serves what it has and converges once etcd answers).
    pub async fn new(
        me: Membership,
        manager: Arc<Manager>,
        state: &std::path::Path,
        pool: AddressPool,
    ) -> Result<Arc<Self>, ClusterError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT)
            // A member cut off from the others' quorum refuses rather
            // than serve (and watch) a view that no longer moves.
            .with_require_leader(true);
        match &me.tls {
            Some(tls) => options = options.with_tls(tls_options(tls)?),
            None => tracing::warn!("etcd over plain http (--etcd-insecure): anyone who reaches etcd reads the cluster's records and can keep nodes from converging; use https:// with --etcd-cafile, --etcd-certfile and --etcd-keyfile"),
        }
        let client = Client::connect(&me.endpoints, Some(options)).await?;
        let seal = Seal::new(&me.token);
        let archives = Archives::open(state).map_err(|source| ClusterError::Io {
            op: "opening the archive directory",
            source,
        })?;
        Ok(Arc::new(Self {
            client,
            me,
            seal,
            manager,
            archives,
            pool,
            state: state.to_path_buf(),
            lease: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
            flights: Mutex::new(flights::Flights::default()),
            view: View::new(),
        }))
    }

    /// Follows etcd until `stop`: see `sync`.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(sync::run(Arc::clone(self)))
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn archives(&self) -> &Archives {
        &self.archives
    }

    fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves at shutdown: the lease goes, and with it this node's
    /// membership, statuses and archive offers.
    pub async fn leave(&self) {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(id) = lease {
            let mut client = self.client.clone();
            if let Err(e) = client.lease_revoke(id).await {
                tracing::warn!(error = %e, "leaving the cluster");
            }
        }
    }

    /// Deploys through this node: the archive is kept by digest, the
    /// address taken in etcd (for a new function), the version deployed
    /// here, then recorded for every node.
    pub async fn deploy(
        &self,
        name: FunctionName,
        patch: OptionsPatch,
        upload: PathBuf,
    ) -> Result<FunctionInfo, ClusterError> {
        let (_one, current, revision) = self.begin(&name).await?;
        let kept = self.archives.clone();
        let digest = tokio::task::spawn_blocking(move || kept.keep(&upload))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| ClusterError::Io {
                op: "keeping the image archive",
                source,
            })?;
        let source = ImageSource::Archive(self.archives.path(&digest));
        let deployed = self
            .deploy_here(&name, current.as_ref(), patch, source)
            .await;
        let reserved = match deployed {
            Ok(reserved) => reserved,
            Err(e) => {
                self.archives.retain(&self.needed(None).await);
                return Err(e);
            }
        };
        self.offer(&digest).await;
        let change = Change {
            current: current.as_ref(),
            revision,
            new_archive: Some(&digest),
            origin: "deploy",
            reserved,
        };
        self.commit(&name, change).await
    }

    /// Deploys through this node from a registry: pulled here first (the
    /// reference resolved to a digest), then recorded with that digest,
    /// which every other node pulls itself.
    pub async fn deploy_pulled(
        &self,
        name: FunctionName,
        patch: OptionsPatch,
        source: ImageSource,
    ) -> Result<FunctionInfo, ClusterError> {
        let (_one, current, revision) = self.begin(&name).await?;
        let reserved = self
            .deploy_here(&name, current.as_ref(), patch, source)
            .await?;
        let change = Change {
            current: current.as_ref(),
            revision,
            new_archive: None,
            origin: "deploy",
            reserved,
        };
        self.commit(&name, change).await
    }

    /// Deploys `source` here as `name`'s new version, at its address or,
    /// for a new function, one reserved in etcd (released again if the
    /// deploy fails, answered if it does not); a pull takes the cluster's
    /// login for its registry.
    async fn deploy_here(
        &self,
        name: &FunctionName,
        current: Option<&Spec>,
        patch: OptionsPatch,
        source: ImageSource,
    ) -> Result<Option<IpAddr>, ClusterError> {
        if let Some(hosts) = &patch.hosts {
            self.hosts_free(name, hosts).await?;
        }
        let (ip, reserved) = match current {
            Some(spec) => (spec.ip, false),
            None => (self.reserve_address(name).await?, true),
        };
        let deployed = async {
            self.forget_if_elsewhere(name, ip).await?;
            if let ImageSource::Registry { reference, .. } = &source {
                self.take_login(reference).await?;
            }
            self.manager
                .deploy_at(name.clone(), patch, source, Some(ip))
                .await
                .map_err(ClusterError::from)
        }
        .await;
        if deployed.is_err() && reserved {
            self.release_address(ip).await;
        }
        deployed.map(|_| reserved.then_some(ip))
    }

    /// `faas update NAME --pull` through this node: the reference resolved
    /// again here; a moved digest is deployed (and recorded) as a pull.
    pub async fn update_pull(
        &self,
        name: &FunctionName,
        patch: OptionsPatch,
    ) -> Result<FunctionInfo, ClusterError> {
        if let Some(from) = self.manager.record(name).await.and_then(|r| r.pulled) {
            self.take_login(&from.reference).await?;
        }
        match self.manager.pull_again(name).await? {
            Repull::Moved(source) => self.deploy_pulled(name.clone(), patch, source).await,
            Repull::Same(note) => {
                let mut info = if patch.is_empty() {
                    self.manager.inspect(name).await?
                } else {
                    self.update(name, patch).await?
                };
                info.notes.push(note);
                Ok(info)
            }
        }
    }

    /// New options for `name`, through this node.
    pub async fn update(
        &self,
        name: &FunctionName,
        patch: OptionsPatch,
    ) -> Result<FunctionInfo, ClusterError> {
        let (_one, current, revision) = self.begin(name).await?;
        self.in_step(name, current.as_ref()).await?;
        if let Some(hosts) = &patch.hosts {
            self.hosts_free(name, hosts).await?;
        }
        self.manager.update(name, patch).await?;
        let change = Change {
            current: current.as_ref(),
            revision,
            new_archive: None,
            origin: "update",
            reserved: None,
        };
        self.commit(name, change).await
    }

    /// A kept version of `name` again, through this node.
    pub async fn rollback(
        &self,
        name: &FunctionName,
        to: Option<u64>,
    ) -> Result<FunctionInfo, ClusterError> {
        let (_one, current, revision) = self.begin(name).await?;
        self.in_step(name, current.as_ref()).await?;
        if let Some(spec) = &current {
            self.recorded_image(name, spec, to).await?;
        }
        self.manager.rollback(name, to).await?;
        let change = Change {
            current: current.as_ref(),
            revision,
            new_archive: None,
            origin: "rollback",
            reserved: None,
        };
        self.commit(name, change).await
    }

    /// Removes `name` from the cluster (and here); answers the revision
    /// that removed it. A name the cluster has no record of is not found,
    /// even if this node still serves it (its removal is on the way here,
    /// and no revision says when it happened).
    pub async fn remove(&self, name: &FunctionName) -> Result<i64, ClusterError> {
        let _one = self.applying.lock().await;
        let key = keys::function(name);
        let (revision, held, hosts) = match self.spec(name).await {
            Ok((current, revision)) => (
                revision,
                current.as_ref().map(|s| s.ip).into_iter().collect(),
                current.map(|s| s.options.hosts).unwrap_or_default(),
            ),
            // A record no node signed goes all the same; the address it
            // names is not trusted, the addresses etcd holds for the name
            // go instead.
            Err(ClusterError::Refused(why)) => {
                tracing::warn!(function = %name, why, "removing a refused cluster record");
                let got = self.get_again(&key, None).await?;
                let revision = got.kvs().first().map_or(0, |kv| kv.mod_revision());
                (revision, self.addresses_of(name).await?, Vec::new())
            }
            Err(e) => return Err(e),
        };
        if revision == 0 {
            return Err(ManagerError::NotFound(name.clone()).into());
        }
        let removed_at = {
            let mut ops = vec![TxnOp::delete(key.as_str(), None)];
            ops.extend(self.quarantine(&held).await?);
            ops.extend(hosts.iter().map(|h| TxnOp::delete(keys::host(h), None)));
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then(ops);
            let done = match self.txn_again(txn).await {
                Ok(done) => done,
                // The answer was lost, not necessarily the removal: only a
                // record still at `revision` says it did not happen.
                Err(e) => {
                    let got = self.get_again(&key, None).await.ok();
                    let untouched = got.is_some_and(|g| {
                        g.kvs().first().map(|kv| kv.mod_revision()) == Some(revision)
                    });
                    return Err(match untouched {
                        true => e.into(),
                        false => ClusterError::Indeterminate(e.to_string()),
                    });
                }
            };
            if !done.succeeded() {
                return Err(ClusterError::Conflict(name.clone()));
            }
            done.header().map_or(0, |h| h.revision())
        };
        match self.manager.remove(name).await {
            Ok(()) | Err(ManagerError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.forget_status(name).await;
        Ok(removed_at)
    }

    /// The members now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        self.list(keys::NODES).await
    }

    /// What every node serves of `name`.
    pub async fn statuses(&self, name: &FunctionName) -> Result<Vec<NodeStatus>, ClusterError> {
        self.list(&keys::statuses(name)).await
    }

    /// Every value under `prefix`, decoded.
    async fn list<T: for<'de> serde::Deserialize<'de>>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, ClusterError> {
        let got = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        got.kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                keys::decode(&key, kv.value()).map_err(ClusterError::Corrupt)
            })
            .collect()
    }

    /// `name`'s spec in etcd and its revision (0: none).
    async fn spec(&self, name: &FunctionName) -> Result<(Option<Spec>, i64), ClusterError> {
        let key = keys::function(name);
        let got = self.get_again(&key, None).await?;
        match got.kvs().first() {
            Some(kv) => Ok((
                Some(self.seal.open_spec(&key, kv.value()).map_err(refused)?),
                kv.mod_revision(),
            )),
            None => Ok((None, 0)),
        }
    }

    /// Takes the change lock with etcd's record of `name` and its
    /// revision, once this node has applied that record: a change made
    /// here builds on the version the cluster serves, not on an older one
    /// this node still had (which it would otherwise publish over the
    /// newer). The wait is outside the lock, which applying needs.
    async fn begin(
        &self,
        name: &FunctionName,
    ) -> Result<(flights::InFlight<'_>, Option<Spec>, i64), ClusterError> {
        loop {
            let one = self.applying.lock().await;
            let (current, revision) = self.spec(name).await?;
            // Tried is enough: a record this node could not serve is
            // refused by `in_step`, not waited for.
            if self.view.watched() >= revision {
                return Ok((self.take_off(one, name).await, current, revision));
            }
            drop(one);
            self.view.reach_watched(revision, REACH_TIMEOUT).await?;
        }
    }

    /// Refuses a change to `name` while what serves here is not the
    /// cluster's version (its convergence failed): the change would
    /// publish this node's older one. The cluster's record is what counts:
    /// a function it does not have is not found, even if this node still
    /// serves it (its removal is on the way here).
    async fn in_step(&self, name: &FunctionName, spec: Option<&Spec>) -> Result<(), ClusterError> {
        let Some(spec) = spec else {
            return Err(ManagerError::NotFound(name.clone()).into());
        };
        match self.manager.record(name).await {
            Some(r) if r.image_id == spec.image_id && r.options == spec.options => Ok(()),
            _ => Err(ClusterError::OutOfStep(name.clone())),
        }
    }

    /// Refuses a rollback to a version kept here whose image the cluster's
    /// record cannot name (a node that missed versions kept others; its
    /// peers could not fetch this one), before anything changes.
    async fn recorded_image(
        &self,
        name: &FunctionName,
        spec: &Spec,
        to: Option<u64>,
    ) -> Result<(), ClusterError> {
        let Some(record) = self.manager.record(name).await else {
            return Ok(());
        };
        let target = match to {
            None => record.history.first(),
            Some(v) => record.history.iter().find(|h| h.version == v),
        };
        match target {
            Some(t)
                if !spec.archives.contains_key(&t.image_id)
                    && !spec.pulled.contains_key(&t.image_id) =>
            {
                Err(ClusterError::NotRecorded {
                    name: name.clone(),
                    version: t.version,
                })
            }
            _ => Ok(()),
        }
    }

    /// A local function of that name on another address is an older one
    /// (removed and made again elsewhere while this node was away): it goes.
    async fn forget_if_elsewhere(
        &self,
        name: &FunctionName,
        ip: IpAddr,
    ) -> Result<(), ClusterError> {
        if let Some(record) = self.manager.record(name).await {
            if record.ip != ip {
                tracing::info!(function = %name, old = %record.ip, new = %ip, "the cluster moved it: removing the old one");
                self.manager.remove(name).await?;
            }
        }
        Ok(())
    }

    /// The archives the cluster's functions need (and `also`).
    async fn needed(&self, also: Option<&str>) -> HashSet<String> {
        let mut keep: HashSet<String> = also.into_iter().map(str::to_string).collect();
        if let Ok(got) = self
            .client
            .clone()
            .get(keys::FUNCTIONS, Some(GetOptions::new().with_prefix()))
            .await
        {
            for kv in got.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                if let Ok(spec) = self.seal.open_spec(&key, kv.value()) {
                    keep.extend(spec.archives.into_values());
                }
            }
        } else {
            // Unknown: keep everything until etcd answers.
            keep.extend(self.archives.held());
        }
        keep
    }
}

fn refused(e: SealError) -> ClusterError {
    ClusterError::Refused(e.to_string())
}

/// etcd's TLS from its files: the CA etcd's certificate must chain to,
/// and this node's client certificate.
fn tls_options(tls: &crate::config::EtcdTls) -> Result<etcd_client::TlsOptions, ClusterError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ClusterError::Tls(format!("reading {}: {e}", path.display())))
    };
    let mut options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?));
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}
