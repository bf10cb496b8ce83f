//! What a node takes from etcd. A function's record is applied only if a
//! node of this cluster signed it (`seal`) and it would pass here as an
//! API request: its name is its key's, its options are valid, its address
//! is in this node's pool, its archives are digests, and every secret it
//! names is stored on this node. Anything else is refused with the reason,
//! logged and reported as this node's status of the function; what serves
//! here goes on serving.

use super::keys::{self, Spec};
use super::seal::{self, SealError};
use super::{archives, refused, Cluster, ClusterError};
use crate::pull::{Platform, Puller};

impl Cluster {
    /// The spec stored under `key`, if this node may apply it.
    pub(super) fn admit(&self, key: &str, value: &[u8]) -> Result<Spec, ClusterError> {
        let spec = self.seal.open_spec(key, value).map_err(refused)?;
        let refuse = |why: String| ClusterError::Refused(format!("{key}: {why}"));
        if keys::tail(key, keys::FUNCTIONS) != Some(spec.name.as_str()) {
            return Err(refuse(format!("it names function {}", spec.name)));
        }
        spec.options.validate().map_err(refuse)?;
        if !self.pool.contains(spec.ip) {
            return Err(refuse(format!(
                "address {} is outside this node's --ip-pool",
                spec.ip
            )));
        }
        // A pulled image has no archive: its reference and digest instead.
        let pulled_now = spec.pulled.contains_key(&spec.image_id);
        let serving = (!pulled_now || !spec.archive.is_empty()).then_some(&spec.archive);
        let digests = serving.into_iter().chain(spec.archives.values());
        if let Some(bad) = digests.into_iter().find(|d| !archives::valid_digest(d)) {
            return Err(refuse(format!("{bad:?} is not an archive digest")));
        }
        for from in spec.pulled.values() {
            Puller::parse(&from.reference).map_err(|e| refuse(e.to_string()))?;
            let hex = from.digest.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refuse(format!(
                    "{:?} is not a manifest digest",
                    from.digest
                )));
            }
            from.platform.parse::<Platform>().map_err(refuse)?;
        }
        self.manager
            .check_secrets(&spec.options.secrets)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(spec)
    }

    /// Says why the record under `key` (at `revision`) is not applied.
    pub(super) async fn refuse(&self, key: &str, revision: i64, why: &ClusterError) {
        tracing::warn!(key, revision, error = %why, "refusing a cluster record");
        let name = keys::tail(key, keys::FUNCTIONS)
            .and_then(|n| crate::api::name::FunctionName::parse(n).ok());
        if let Some(name) = name {
            self.report(&name, revision, Some(why.to_string())).await;
        }
    }

    /// The node a peer's request comes from, if its credential is good
    /// for `subject` now (an archive's digest, `logs/NAME`,
    /// `inspect/NAME`).
    pub fn check_peer(&self, credential: &str, subject: &str) -> Result<String, SealError> {
        self.seal.check_credential(credential, subject, seal::now())
    }

    /// What this node presents to a peer asking about `subject`.
    pub fn peer_credential(&self, subject: &str) -> String {
        self.seal.credential(&self.me.node, subject, seal::now())
    }

    /// This node's name in the cluster.
    pub fn node_name(&self) -> &str {
        &self.me.node
    }
}
