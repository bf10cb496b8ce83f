//! The daemon's command line and config file, validated into a typed
//! configuration. Every flag has a key in the file (`/etc/faasd/faasd.toml`
//! by default: `state-dir = "/srv/faasd"`, `cores = 4`, `reuse-port =
//! true`); flags given on the command line win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

mod cluster;
mod file;

pub use cluster::{ClusterConfig, EtcdTls};
pub use file::is_default_config;

use crate::api::units::parse_size;
use crate::image::Limits;
use crate::net::AddressPool;

/// The config file read when `--config` does not name one (a missing
/// default file is no error).
pub const DEFAULT_CONFIG: &str = "/etc/faasd/faasd.toml";

#[derive(Debug, Parser, Serialize)]
#[command(
    name = "faasd",
    version,
    about = "Docker images as functions with their own IP address",
    args_override_self = true
)]
#[serde(rename_all = "kebab-case")]
pub struct Args {
    /// Config file (TOML, a key per flag; flags win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the configuration in effect (file and flags) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Where faasd keeps rootfs directories, the registry, bundles and logs.
    #[arg(long, default_value = "/var/lib/faasd")]
    pub state_dir: PathBuf,
    /// Address of the control API (and /metrics, /healthz); every route but
    /// /healthz needs the token here.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The control API's Unix socket, for root and the `faasd` group.
    #[arg(long, value_name = "PATH", default_value = crate::client::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Prefix function addresses come from, IPv4 or IPv6 (repeatable: the
    /// first with a free address is used).
    #[arg(long, default_value = "127.10.0.0/16", value_delimiter = ',')]
    pub ip_pool: Vec<String>,
    /// Kernel routing table to install a host route in for every function
    /// ready on this node, for a routing daemon (BIRD) to announce.
    #[arg(long, value_name = "N")]
    pub route_table: Option<u32>,
    /// Seconds between withdrawing the routes and stopping, at SIGTERM
    /// (with --route-table).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub drain: f64,
    /// etcd endpoints holding the cluster's registry (repeatable or
    /// comma-separated); without it the local registry is the record.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The CA certificate (PEM) that signed etcd's certificate, for
    /// https:// endpoints.
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// This node's client certificate (PEM) for etcd's client-certificate
    /// authentication (with --etcd-keyfile).
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// The key (PEM) of --etcd-certfile.
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Talk to etcd over plain http:// (anyone who reaches etcd can then
    /// read the cluster's records and change what every node runs).
    #[arg(long)]
    pub etcd_insecure: bool,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The URL peers reach this node's control API at, to fetch image
    /// archives (default: http://LISTEN).
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Data-plane threads (default: number of CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
    /// OCI runtime command line to use (runc or a compatible one such as crun).
    #[arg(long, default_value = "runc")]
    pub runtime: PathBuf,
    /// TCP port functions listen on at their address.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Largest image upload accepted (e.g. 512M, 2G).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    pub max_upload: u64,
    /// Largest total size of the files an image may unpack to.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub max_extracted: u64,
    /// Most files (all kinds) an image may unpack.
    #[arg(long, default_value_t = 500_000)]
    pub max_files: u64,
    /// Most layers an image may have.
    #[arg(long, default_value_t = 128)]
    pub max_layers: usize,
    /// Deepest path (in directories) an image may unpack.
    #[arg(long, default_value_t = 64)]
    pub max_path_depth: usize,
    /// Seconds a new handler may take to connect to /control.sock.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Containers allowed to be starting at once.
    #[arg(long, default_value_t = 16)]
    pub max_concurrent_starts: usize,
    /// Seconds without demand for it after which a pool grown beyond --warm (towards --warm-max) shrinks back (0: never).
    #[arg(long, default_value_t = 60)]
    pub pool_idle: u64,
    /// Memory all warm pools together may hold (e.g. 2G; 0: no bound); the busiest functions keep theirs, the idle ones shrink first, below --warm if need be. Default: a quarter of the machine's memory.
    #[arg(long, value_parser = parse_size)]
    pub pool_memory: Option<u64>,
    /// An address many functions share, routed by HTTP Host or TLS server
    /// name to the function whose --host names it (repeatable): e.g.
    /// 0.0.0.0:80, [::]:443. An address of --ip-pool is put on lo (and
    /// announced with --route-table) by faasd.
    #[arg(long, value_name = "ADDR:PORT")]
    pub shared_listen: Vec<SocketAddr>,
    /// The function that takes shared-listener connections naming no host
    /// (HTTP/1.0 without Host, a TLS hello without server name); without
    /// it they get 404 or an unrecognized_name alert.
    #[arg(long, value_name = "FUNCTION")]
    pub default_host: Option<String>,
    /// Seconds a client on a shared listener has, from its connection, to
    /// send enough of its request head or TLS hello to be routed.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub header_timeout: f64,
    /// Seconds a connection may wait for a free slot before faasd answers 503.
    #[arg(long, default_value_t = 10.0)]
    pub queue_timeout: f64,
    /// Log format of faasd itself: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// File holding the control API's bearer token (clients send it in
    /// FAAS_TOKEN); by default faasd creates `<state-dir>/token` (root only).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve the control API on TCP without a token (anyone who can
    /// connect may deploy): for the original project's token-less client.
    #[arg(long)]
    pub insecure_no_token: bool,
    /// Earlier versions of each function kept to roll back to.
    #[arg(long, default_value_t = 2)]
    pub keep_versions: usize,
    /// Record no metrics (/metrics answers 404); for measuring their cost.
    #[arg(long)]
    pub no_metrics: bool,
    /// Unpack each new version into a copy of its own (owned by its
    /// function's ids) instead of composing it from shared image layers:
    /// more disk and slower deploys, faster file lookups in containers.
    #[arg(long)]
    pub copy_layers: bool,
    /// Seconds a version's rootfs stays mounted after its last container
    /// ended (composed again by the next one; a pool keeps it mounted).
    #[arg(long, default_value_t = 30)]
    pub rootfs_idle: u64,
    /// A registry host (as image references name it: HOST or HOST:PORT)
    /// to reach over plain HTTP instead of HTTPS; repeatable. Pulls from
    /// any other host are HTTPS only.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// PEM file of CA certificates trusted for registries besides the
    /// system's (a private registry's own CA).
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
    /// Seconds one image pull may take, manifest to last layer.
    #[arg(long, default_value_t = 600.0)]
    pub pull_timeout: f64,
    /// The static `faas-init` helper for the stdio, socket-activation and
    /// container-port kinds (default: `faas-init` next to `faasd`).
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Let containers send descriptors to faasd over /control.sock, as
    /// kernels before 6.16 (no SO_PASSRIGHTS) do: tests that fallback.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub accept_passed_descriptors: bool,
}

/// How faasd writes its own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the control API's TCP token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file`
    File(PathBuf),
    /// `<state-dir>/token`, created at the first start.
    StateDir,
    /// `--insecure-no-token`
    None,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub pool: AddressPool,
    pub cores: usize,
    pub runtime: PathBuf,
    pub port: u16,
    pub max_upload: u64,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub max_concurrent_starts: usize,
    pub pool_idle: Duration,
    /// `--pool-memory` in bytes (0: no bound).
    pub pool_memory: u64,
    pub queue_timeout: Duration,
    /// `--shared-listen`, `--default-host`, `--header-timeout`.
    pub shared: crate::dataplane::SharedConfig,
    pub log_format: LogFormat,
    pub metrics: bool,
    pub socket: PathBuf,
    pub token: TokenSource,
    pub keep_versions: usize,
    /// `--copy-layers`
    pub copy_layers: bool,
    pub rootfs_idle: Duration,
    /// `--insecure-registry`, `--registry-ca`, `--pull-timeout`.
    pub pull: crate::pull::PullConfig,
    pub route_table: Option<u32>,
    pub drain: Duration,
    /// `--init`, if given (else looked for next to the executable).
    pub init: Option<PathBuf>,
    /// `--etcd`: this node's part in a cluster.
    pub cluster: Option<ClusterConfig>,
    /// Control sockets refuse descriptors containers send (SO_PASSRIGHTS).
    pub refuse_descriptors: bool,
}

impl Args {
    pub fn validate(self) -> Result<Config, String> {
        let pool = AddressPool::parse_all(&self.ip_pool).map_err(|e| e.to_string())?;
        self.check_ranges()?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = self.cores.unwrap_or(cpus);
        if cores == 0 || cores > 1024 {
            return Err(format!("--cores {cores} must be within 1..=1024"));
        }
        let log_format = match self.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(format!("--log-format {other:?} must be text or json")),
        };
        let token = match (self.token_file, self.insecure_no_token) {
            (Some(_), true) => {
                return Err("--token-file and --insecure-no-token exclude each other".into())
            }
            (Some(file), false) => TokenSource::File(file),
            (None, false) => TokenSource::StateDir,
            (None, true) => TokenSource::None,
        };
        if !self.etcd.is_empty() && token == TokenSource::None {
            return Err("--etcd needs the cluster's token (--token-file, the same on every node): it authenticates nodes to each other and signs what they record in etcd".into());
        }
        let etcd = cluster::EtcdFlags {
            endpoints: self.etcd,
            cafile: self.etcd_cafile,
            certfile: self.etcd_certfile,
            keyfile: self.etcd_keyfile,
            insecure: self.etcd_insecure,
        };
        let cluster =
            cluster::cluster_config(etcd, self.node_name, self.advertise_url, self.listen)?;
        Ok(Config {
            cluster,
            state_dir: self.state_dir,
            listen: self.listen,
            pool,
            cores,
            runtime: self.runtime,
            port: self.port,
            max_upload: self.max_upload,
            limits: Limits {
                max_layers: self.max_layers,
                max_extracted_bytes: self.max_extracted,
                max_files: self.max_files,
                max_path_depth: self.max_path_depth,
            },
            connect_timeout: Duration::from_secs_f64(self.connect_timeout),
            max_concurrent_starts: self.max_concurrent_starts,
            pool_idle: Duration::from_secs(self.pool_idle),
            pool_memory: self
                .pool_memory
                .unwrap_or_else(|| crate::sys::physical_memory() / 4),
            queue_timeout: Duration::from_secs_f64(self.queue_timeout),
            shared: crate::dataplane::SharedConfig {
                listen: self.shared_listen,
                default_host: self
                    .default_host
                    .as_deref()
                    .map(crate::api::name::FunctionName::parse)
                    .transpose()
                    .map_err(|e| format!("--default-host: {e}"))?,
                header_timeout: Duration::from_secs_f64(self.header_timeout),
            },
            log_format,
            metrics: !self.no_metrics,
            socket: self.socket,
            token,
            keep_versions: self.keep_versions,
            copy_layers: self.copy_layers,
            rootfs_idle: Duration::from_secs(self.rootfs_idle),
            pull: crate::pull::PullConfig {
                insecure: self
                    .insecure_registry
                    .iter()
                    .map(|h| crate::pull::credentials::normalise_host(h).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?,
                ca_pem: match &self.registry_ca {
                    Some(path) => {
                        crate::pull::read_ca(path).map_err(|e| format!("--registry-ca: {e}"))?
                    }
                    None => Vec::new(),
                },
                timeout: Duration::from_secs_f64(self.pull_timeout),
                max_bytes: self.max_upload,
            },
            route_table: self.route_table,
            drain: Duration::from_secs_f64(self.drain),
            init: self.init,
            refuse_descriptors: !self.accept_passed_descriptors,
        })
    }

    /// Each number within what works, each path absolute.
    fn check_ranges(&self) -> Result<(), String> {
        if let Some(t) = self.route_table {
            // 253-255 are the kernel's default, main and local tables.
            if t == 0 || (253..=255).contains(&t) {
                return Err(format!(
                    "--route-table {t}: choose a table of its own (1-252, or above 255)"
                ));
            }
        }
        if !(1.0..=86_400.0).contains(&self.pull_timeout) {
            return Err(format!(
                "--pull-timeout {} must be within [1, 86400] seconds",
                self.pull_timeout
            ));
        }
        if !(0.0..=600.0).contains(&self.drain) {
            return Err(format!(
                "--drain {} must be within [0, 600] seconds",
                self.drain
            ));
        }
        if !(self.connect_timeout > 0.0 && self.connect_timeout <= 600.0) {
            return Err(format!(
                "--connect-timeout {} must be within (0, 600] seconds",
                self.connect_timeout
            ));
        }
        if !(self.queue_timeout > 0.0 && self.queue_timeout <= 3600.0) {
            return Err(format!(
                "--queue-timeout {} must be within (0, 3600] seconds",
                self.queue_timeout
            ));
        }
        if !(self.header_timeout > 0.0 && self.header_timeout <= 3600.0) {
            return Err(format!(
                "--header-timeout {} must be within (0, 3600] seconds",
                self.header_timeout
            ));
        }
        for (i, addr) in self.shared_listen.iter().enumerate() {
            if self.shared_listen[..i].contains(addr) {
                return Err(format!("--shared-listen {addr} is given twice"));
            }
        }
        if self.max_concurrent_starts == 0 {
            return Err("--max-concurrent-starts must be at least 1".into());
        }
        if self.keep_versions > 100 {
            return Err(format!(
                "--keep-versions {} is above 100",
                self.keep_versions
            ));
        }
        for (flag, path) in [("--socket", &self.socket), ("--state-dir", &self.state_dir)] {
            if !path.is_absolute() {
                return Err(format!(
                    "{flag} {} must be an absolute path",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["faasd"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_match_the_pinned_interface() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/faasd"));
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.pool.to_string(), "127.10.0.0/16");
        assert!(c.cores >= 1);
        assert_eq!(c.port, 80);
    }

    #[test]
    fn several_pools_of_either_family() {
        let c = parse(&[
            "--ip-pool",
            "198.51.100.0/24",
            "--ip-pool",
            "fd00:faa5:1::/64",
        ])
        .expect("pools");
        assert_eq!(c.pool.to_string(), "198.51.100.0/24,fd00:faa5:1::/64");
        let c = parse(&["--ip-pool", "192.0.2.0/28,198.18.0.0/24"]).expect("comma");
        assert_eq!(c.pool.to_string(), "192.0.2.0/28,198.18.0.0/24");
        let c = parse(&["--route-table", "100", "--drain", "1.5"]).expect("routes");
        assert_eq!(
            (c.route_table, c.drain),
            (Some(100), Duration::from_millis(1500))
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(
            parse(&[]).map(|c| c.token).ok(),
            Some(TokenSource::StateDir)
        );
        assert_eq!(
            parse(&["--insecure-no-token"]).map(|c| c.token).ok(),
            Some(TokenSource::None)
        );
        assert_eq!(
            parse(&["--token-file", "/t"]).map(|c| c.token).ok(),
            Some(TokenSource::File("/t".into()))
        );
        assert!(parse(&["--token-file", "/t", "--insecure-no-token"]).is_err());
    }

    #[test]
    fn refuses_bad_values() {
        assert!(parse(&["--cores", "0"]).is_err());
        assert!(parse(&["--ip-pool", "224.0.0.0/8"]).is_err());
        assert!(parse(&["--route-table", "254"]).is_err());
        assert!(parse(&["--drain", "-1"]).is_err());
        assert!(parse(&["--state-dir", "relative"]).is_err());
        assert!(parse(&["--max-upload", "lots"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--socket", "relative.sock"]).is_err());
        assert!(parse(&["--keep-versions", "1000"]).is_err());
        assert!(parse(&["--listen", "0.0.0.0:8080", "--insecure-no-token"]).is_ok());
        assert_eq!(
            parse(&["--max-upload", "64M"]).map(|c| c.max_upload).ok(),
            Some(64 << 20)
        );
    }
}
