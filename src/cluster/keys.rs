//! What the cluster keeps in etcd, and under which keys. Everything lives
//! under `/faasd/`:
//!
//! - `functions/NAME`: the function's spec (`Spec`), the registry of record
//! - `addresses/IP`: the function holding a pool address (created in a
//!   transaction, so two nodes never hand out one address)
//! - `nodes/NODE`: a member (`api::NodeInfo`), under the node's lease
//! - `status/NAME/NODE`: what a node serves of a function
//!   (`api::NodeStatus`), under the node's lease
//! - `archives/DIGEST/NODE`: a node holding a verified image archive,
//!   under the node's lease (the node's URL is in `nodes/NODE`)
//! - `registries/HOST`: the login nodes pull from HOST with, encrypted
//!   (`seal.rs`, `logins.rs`)

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::api::name::FunctionName;
use crate::api::{DeployOptions, ImageRef};

pub const FUNCTIONS: &str = "/faasd/functions/";
pub const ADDRESSES: &str = "/faasd/addresses/";
/// The address handed out last (the next one is taken after it).
pub const ADDRESS_CURSOR: &str = "/faasd/address-cursor";
pub const NODES: &str = "/faasd/nodes/";
pub const STATUS: &str = "/faasd/status/";
pub const ARCHIVES: &str = "/faasd/archives/";
pub const REGISTRIES: &str = "/faasd/registries/";
/// `--host` names: `/faasd/hosts/NAME` holds the function that has it.
pub const HOSTS: &str = "/faasd/hosts/";

/// A function as the cluster wants it served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: FunctionName,
    pub ip: IpAddr,
    /// The serving version's image (its config digest).
    pub image_id: String,
    /// The sha256 of the image archive it was deployed from.
    pub archive: String,
    /// The archive of each image this function serves or keeps to roll
    /// back to (`image_id` → archive digest).
    pub archives: BTreeMap<String, String>,
    /// The registry reference and manifest digest of each such image that
    /// was pulled (`image_id` → where from): every node pulls that digest,
    /// whatever the tag says by then. Its `archive` is then empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pulled: BTreeMap<String, ImageRef>,
    pub options: DeployOptions,
    /// `deploy`, `update` or `rollback`.
    pub origin: String,
    /// The node the change was made through.
    pub node: String,
}

pub fn function(name: &FunctionName) -> String {
    format!("{FUNCTIONS}{name}")
}

pub fn host(host: &crate::api::host::HostName) -> String {
    format!("{HOSTS}{host}")
}

pub fn address(ip: IpAddr) -> String {
    format!("{ADDRESSES}{ip}")
}

pub fn registry(host: &str) -> String {
    format!("{REGISTRIES}{host}")
}

pub fn node(node: &str) -> String {
    format!("{NODES}{node}")
}

/// The prefix of every node's status of `name`.
pub fn statuses(name: &FunctionName) -> String {
    format!("{STATUS}{name}/")
}

pub fn status(name: &FunctionName, node: &str) -> String {
    format!("{STATUS}{name}/{node}")
}

/// The prefix of every holder of `digest`.
pub fn holders(digest: &str) -> String {
    format!("{ARCHIVES}{digest}/")
}

pub fn holder(digest: &str, node: &str) -> String {
    format!("{ARCHIVES}{digest}/{node}")
}

/// The last path segment of `key` under `prefix`.
pub fn tail<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|t| !t.contains('/'))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and maps with string keys: cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_one_prefix() {
        let name = FunctionName::parse("web").expect("name");
        assert_eq!(function(&name), "/faasd/functions/web");
        assert_eq!(status(&name, "n1"), "/faasd/status/web/n1");
        assert!(status(&name, "n1").starts_with(&statuses(&name)));
        assert_eq!(
            address("fd00:faa5::1".parse().expect("ip")),
            "/faasd/addresses/fd00:faa5::1"
        );
        assert_eq!(tail("/faasd/functions/web", FUNCTIONS), Some("web"));
        assert_eq!(tail("/faasd/functions/a/b", FUNCTIONS), None);
        assert!(holder("ab", "n1").starts_with(&holders("ab")));
    }
}
