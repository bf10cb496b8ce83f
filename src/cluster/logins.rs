//! Registry logins cluster-wide: `faas registry login` through any node
//! stores the login in etcd (`registries/HOST`, encrypted under a key
//! from the cluster token: `seal.rs`). A node about to pull from a host
//! first takes the login etcd holds for it into its own store (or forgets
//! its own where etcd holds none), so every node pulls with the login last
//! given through any of them, and a node that joins later has it too.

use serde::{Deserialize, Serialize};

use super::{keys, Cluster, ClusterError};
use crate::manager::ManagerError;
use crate::pull::credentials::{normalise_host, CredentialError, Login};
use crate::pull::Puller;

#[derive(Serialize, Deserialize)]
struct Stored {
    username: String,
    password: String,
}

impl Cluster {
    /// Stores the login for `host` here and in etcd.
    pub async fn registry_login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<String, ClusterError> {
        let host = self.manager.registry_login(host, username, password)?;
        let key = keys::registry(&host);
        let body = serde_json::to_vec(&Stored {
            username: username.into(),
            password: password.into(),
        })
        .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        let sealed = self
            .seal
            .seal_login(&key, &body)
            .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        self.client.clone().put(key, sealed, None).await?;
        Ok(host)
    }

    /// Forgets the login for `host` in etcd and here.
    pub async fn registry_logout(&self, host: &str) -> Result<String, ClusterError> {
        let host = normalise_host(host).map_err(ManagerError::from)?;
        let deleted = self
            .client
            .clone()
            .delete(keys::registry(&host), None)
            .await?
            .deleted();
        match self.manager.registry_logout(&host) {
            Ok(_) => Ok(host),
            Err(ManagerError::Credentials(CredentialError::NotFound(_))) if deleted > 0 => Ok(host),
            Err(e) => Err(e.into()),
        }
    }

    /// The cluster's logins: hosts and user names.
    pub async fn registry_logins(&self) -> Result<Vec<Login>, ClusterError> {
        let got = self
            .client
            .clone()
            .get(
                keys::REGISTRIES,
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        let mut out = Vec::new();
        for kv in got.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(host) = keys::tail(&key, keys::REGISTRIES) else {
                continue;
            };
            let stored = self.open(&key, kv.value())?;
            out.push(Login {
                registry: host.to_string(),
                username: stored.username,
            });
        }
        Ok(out)
    }

    /// Takes the login etcd holds for `reference`'s registry into this
    /// node's store, before a pull from it.
    pub(super) async fn take_login(&self, reference: &str) -> Result<(), ClusterError> {
        let at = Puller::parse(reference).map_err(ManagerError::from)?;
        let host = normalise_host(at.registry()).map_err(ManagerError::from)?;
        let key = keys::registry(&host);
        let got = self.client.clone().get(key.as_str(), None).await?;
        match got.kvs().first() {
            Some(kv) => {
                let stored = self.open(&key, kv.value())?;
                self.manager
                    .registry_login(&host, &stored.username, &stored.password)?;
            }
            None => match self.manager.registry_logout(&host) {
                Ok(_) | Err(ManagerError::Credentials(CredentialError::NotFound(_))) => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }

    fn open(&self, key: &str, value: &[u8]) -> Result<Stored, ClusterError> {
        let body = self
            .seal
            .open_login(key, value)
            .map_err(|e| ClusterError::Refused(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ClusterError::Corrupt(format!("{key}: {e}")))
    }
}
