//! Wire types of the control API, shared by `faas` and `faasd`; deploy
//! options and their query-string encoding live in `options`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub mod caps;
pub mod host;
pub mod name;
mod options;
mod patch;
pub mod units;

pub use options::*;
pub use patch::OptionsPatch;

/// Request counters of one function since faasd started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Containers waiting in the warm pool right now.
    pub warm_ready: u64,
    /// Connections answered 503 after waiting past the queue deadline.
    pub rejected: u64,
    pub requests: u64,
    pub handed_over: u64,
    pub failed: u64,
    pub cold_starts: u64,
    pub warm_starts: u64,
    pub inflight: u64,
    /// Accept → hand-over, since faasd started (bucket bounds).
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// `--fork`: children serving now (their zygotes' last word, read
    /// every quarter second), and children that have served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_children_alive: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_children_served: Option<u64>,
}

/// What `faas inspect` and `faas list` show of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub ip: IpAddr,
    pub image_id: String,
    /// The serving version's registry reference and digest, if pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    pub version: u64,
    pub deployed_at: u64,
    pub options: DeployOptions,
    pub command: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stats: FunctionStats,
    /// `ready`, `starting` (no container up yet) or `crash-looping`
    /// (containers keep failing; clients get 503 meanwhile).
    #[serde(default = "ready")]
    pub state: String,
    /// Containers of the serving version that failed or ended unasked.
    #[serde(default)]
    pub restarts: u64,
    /// What the last of them said (the rest is in `faas logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The isolation its containers run with.
    #[serde(default)]
    pub sandbox: Sandbox,
    /// The TCP port it serves on at `ip`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The version serving and the ones kept to roll back to, newest first.
    #[serde(default)]
    pub versions: Vec<VersionInfo>,
    /// In a cluster (`--etcd`): what each node serves of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// What a deploy decided for the operator that they should hear of
    /// (the kind taken from the image's EXPOSE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Its warm pool now, where it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolInfo>,
    /// In a cluster, answering a change: the etcd revision that recorded
    /// it (also the `X-Faas-Revision` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// A function's warm pool as it is now, and why (`faas inspect`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PoolInfo {
    /// `--warm` and `--warm-max` (equal: a fixed pool).
    pub min: u32,
    pub max: u32,
    /// How many containers it holds to.
    pub target: u32,
    /// Waiting now, and being started.
    pub ready: u32,
    pub starting: u32,
    /// Connections per second arriving (an average over seconds).
    pub rate_per_s: f64,
    /// What decided the target: demand (rate × start time), a bound, the
    /// node's `--pool-memory`.
    pub why: String,
    /// One waiting container's memory, as last measured (bytes).
    pub memory_each: u64,
}

/// The header a cluster node's archive fetch from a peer authenticates
/// itself with (`cluster::seal` makes and checks its value).
pub const PEER_HEADER: &str = "x-faas-peer";

/// A member of the cluster, as `faas nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Its control API, where peers fetch image archives.
    pub url: String,
    /// When it joined (seconds since the epoch).
    pub since: u64,
}

/// What one node serves of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The cluster revision of the spec it serves (etcd's mod revision).
    pub revision: i64,
    /// Its own version number for it.
    pub version: u64,
    pub image_id: String,
    /// Whether its warm pool is filled (and, with `--route-table`, the
    /// address announced).
    pub ready: bool,
    /// Why it does not serve the spec, if it failed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Live, as that node answered `faas inspect` through any node:
    /// connections it served, and containers waiting in its pool (absent
    /// if it could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_ready: Option<u64>,
}

fn ready() -> String {
    "ready".into()
}

fn default_port() -> u16 {
    80
}

/// Where a pulled image came from: the reference as given (normalised)
/// and the manifest digest it resolved to, which is what was pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
    /// The platform an index was resolved for (`linux/amd64`).
    #[serde(default)]
    pub platform: String,
}

/// A pull under way (`GET /v1/functions/NAME/pull`), as `faas deploy
/// --image` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    #[serde(rename = "ref")]
    pub reference: String,
    pub layers: Vec<LayerPull>,
}

/// One layer of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPull {
    pub digest: String,
    pub size: u64,
    pub bytes: u64,
    /// `here` (the layer store has it), `waiting`, `downloading`, `done`
    /// or `failed`.
    pub state: String,
}

/// One version of a function: an image and the options it ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub image_id: String,
    /// Pulled by reference: which, at which digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    pub deployed_at: u64,
    /// Whether this version serves now.
    pub current: bool,
    /// What made it: `deploy`, `update` or `rollback`.
    pub origin: String,
}

/// A stored secret, as `faas secret ls` shows it (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: u64,
    pub bytes: u64,
    /// Functions whose serving version uses it.
    pub used_by: Vec<String>,
}

/// The isolation of a function's containers: all of it applies by
/// default; only memory and the timeout are set per function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Host uids and gids that container ids 0..65535 map to.
    pub host_ids: String,
    pub seccomp: String,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub rootfs: String,
    pub network: String,
    pub memory_bytes: u64,
    pub pids: i64,
    pub cpus: f64,
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
