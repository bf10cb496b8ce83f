//! The daemon's command line and config file, validated into a typed
//! configuration. Every flag has a key in the file (`/etc/faasd/faasd.toml`
//! by default: `state-dir = "/srv/faasd"`, `cores = 4`, `reuse-port =
//! true`); flags given on the command line win.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde::Serialize;

use crate::image::Limits;
use crate::net::AddressPool;
use crate::units::parse_size;

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
    /// ready on this node, for BIRD or FRR to announce.
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
    /// Seconds without traffic after which a function's warm pool shrinks to nothing (0: never).
    #[arg(long, default_value_t = 300)]
    pub pool_idle: u64,
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
    /// The static `faas-init` helper for the stdio, socket-activation and
    /// container-port kinds (default: `faas-init` next to `faasd`).
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
}

impl Args {
    /// Parses the command line after the config file's keys: the file
    /// (`--config`, or the default if it exists) becomes flags placed
    /// before the command line's, which therefore win.
    pub fn load(argv: Vec<OsString>) -> Result<Self, String> {
        let explicit = config_flag(&argv);
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let given = given_flags(&argv);
        let from_file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                file_flags(&text, &given).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Vec::new(),
            Err(e) => return Err(format!("reading config file {}: {e}", path.display())),
        };
        let mut all: Vec<OsString> = argv.iter().take(1).cloned().collect();
        all.extend(from_file);
        all.extend(argv.into_iter().skip(1));
        Args::try_parse_from(all).map_err(|e| {
            if e.use_stderr() {
                let text = e.to_string();
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string()
            } else {
                // --help and --version print and exit as usual.
                e.exit()
            }
        })
    }

    /// The configuration in effect as a config file would say it.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }
}

/// `--config FILE` or `--config=FILE` on the command line.
fn config_flag(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The long flags on the command line (`--cores 2`, `--cores=2`).
fn given_flags(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .skip(1)
        .filter_map(|a| a.to_str()?.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

/// The flags a config file stands for: `key = value` becomes `--key
/// value`, `key = true` becomes `--key`; unknown keys are errors. A key
/// the command line gives too is left out: the flag wins, also for the
/// flags that may repeat (`--ip-pool`).
fn file_flags(text: &str, given: &[String]) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let command = Args::command();
    let mut flags = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let known = command.get_arguments().any(|a| {
            a.get_long() == Some(long.as_str())
                && !matches!(
                    long.as_str(),
                    "config" | "print-config" | "help" | "version"
                )
        });
        if !known {
            return Err(format!(
                "unknown key {key:?} (keys are faasd's flags: faasd --help)"
            ));
        }
        if given.contains(&long) {
            continue;
        }
        let values: Vec<&toml::Value> = match &value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => flags.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => flags.push(format!("--{long}={s}").into()),
                toml::Value::Integer(i) => flags.push(format!("--{long}={i}").into()),
                toml::Value::Float(f) => flags.push(format!("--{long}={f}").into()),
                other => return Err(format!("key {key:?}: unsupported value {other}")),
            }
        }
    }
    Ok(flags)
}

/// Whether `path` is the default config file (for messages).
pub fn is_default_config(path: &Path) -> bool {
    path == Path::new(DEFAULT_CONFIG)
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
    pub queue_timeout: Duration,
    pub log_format: LogFormat,
    pub metrics: bool,
    pub socket: PathBuf,
    pub token: TokenSource,
    pub keep_versions: usize,
    pub route_table: Option<u32>,
    pub drain: Duration,
    /// `--init`, if given (else looked for next to the executable).
    pub init: Option<PathBuf>,
    /// `--etcd`: this node's part in a cluster.
    pub cluster: Option<ClusterConfig>,
}

/// `--etcd`, `--node-name`, `--advertise-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub node: String,
    pub url: String,
}

/// A node name: a key segment in etcd and a label in `faas nodes`.
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn cluster_config(
    etcd: Vec<String>,
    node: Option<String>,
    url: Option<String>,
    listen: SocketAddr,
) -> Result<Option<ClusterConfig>, String> {
    if etcd.is_empty() {
        if node.is_some() || url.is_some() {
            return Err("--node-name and --advertise-url need --etcd".into());
        }
        return Ok(None);
    }
    for e in &etcd {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!("--etcd {e}: expected http://HOST:PORT"));
        }
    }
    let node = match node {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| format!("--node-name not given and the host name is unknown: {e}"))?
            .trim()
            .to_string(),
    };
    if !valid_node_name(&node) {
        return Err(format!(
            "--node-name {node:?}: 1-63 letters, digits, '-', '_' or '.'"
        ));
    }
    let url = url.unwrap_or_else(|| format!("http://{listen}"));
    crate::client::http::Endpoint::parse(&url).map_err(|e| format!("--advertise-url {e}"))?;
    if url.starts_with("unix:") {
        return Err(format!("--advertise-url {url}: peers need an http:// URL"));
    }
    Ok(Some(ClusterConfig {
        endpoints: etcd,
        node,
        url,
    }))
}

impl Args {
    pub fn validate(self) -> Result<Config, String> {
        let pool = AddressPool::parse_all(&self.ip_pool).map_err(|e| e.to_string())?;
        if let Some(t) = self.route_table {
            // 253-255 are the kernel's default, main and local tables.
            if t == 0 || (253..=255).contains(&t) {
                return Err(format!(
                    "--route-table {t}: choose a table of its own (1-252, or above 255)"
                ));
            }
        }
        if !(0.0..=600.0).contains(&self.drain) {
            return Err(format!(
                "--drain {} must be within [0, 600] seconds",
                self.drain
            ));
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = self.cores.unwrap_or(cpus);
        if cores == 0 || cores > 1024 {
            return Err(format!("--cores {cores} must be within 1..=1024"));
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
        if self.max_concurrent_starts == 0 {
            return Err("--max-concurrent-starts must be at least 1".into());
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
        if self.keep_versions > 100 {
            return Err(format!(
                "--keep-versions {} is above 100",
                self.keep_versions
            ));
        }
        if !self.socket.is_absolute() {
            return Err(format!(
                "--socket {} must be an absolute path",
                self.socket.display()
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "--state-dir {} must be an absolute path",
                self.state_dir.display()
            ));
        }
        let cluster = cluster_config(self.etcd, self.node_name, self.advertise_url, self.listen)?;
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
            queue_timeout: Duration::from_secs_f64(self.queue_timeout),
            log_format,
            metrics: !self.no_metrics,
            socket: self.socket,
            token,
            keep_versions: self.keep_versions,
            route_table: self.route_table,
            drain: Duration::from_secs_f64(self.drain),
            init: self.init,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
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

    fn load(file: &str, args: &[&str]) -> Result<Args, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("faasd.toml");
        std::fs::write(&path, file).expect("write");
        let mut argv: Vec<OsString> = vec!["faasd".into(), "--config".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        Args::load(argv)
    }

    #[test]
    fn the_config_file_sets_flags_and_the_command_line_wins() {
        let a = load(
            "state-dir = \"/srv/faasd\"\ncores = 3\nno_metrics = true\nlisten = \"127.0.0.1:9000\"\n",
            &["--cores", "1"],
        )
        .expect("load");
        assert_eq!(a.state_dir, PathBuf::from("/srv/faasd"));
        assert_eq!(a.cores, Some(1), "the flag wins");
        assert!(a.no_metrics);
        assert_eq!(a.listen, "127.0.0.1:9000".parse().expect("addr"));
        let printed = a.to_toml().expect("toml");
        assert!(printed.contains("state-dir = \"/srv/faasd\""), "{printed}");
        assert!(printed.contains("cores = 1"), "{printed}");
        // What it prints reads back the same.
        let again = load(&printed, &[]).expect("reload");
        assert_eq!(again.to_toml().expect("toml"), printed);
        let pools =
            load("ip-pool = [\"198.18.0.0/24\", \"fd00:faa5::/64\"]\n", &[]).expect("pools");
        assert_eq!(pools.ip_pool, ["198.18.0.0/24", "fd00:faa5::/64"]);
        let pools = load(
            "ip-pool = [\"198.18.0.0/24\"]\n",
            &["--ip-pool", "192.0.2.0/24"],
        )
        .expect("pools");
        assert_eq!(
            pools.ip_pool,
            ["192.0.2.0/24"],
            "the flag replaces the file's list"
        );
        let e = load("colour = \"blue\"\n", &[]).expect_err("unknown key");
        assert!(e.contains("unknown key \"colour\""), "{e}");
        assert!(load("cores = [\n", &[]).is_err(), "bad TOML");
        let missing = Args::load(vec![
            "faasd".into(),
            "--config".into(),
            "/nonexistent.toml".into(),
        ]);
        assert!(missing.is_err(), "an explicit file must exist");
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
    fn cluster_flags() {
        assert_eq!(parse(&[]).map(|c| c.cluster), Ok(None));
        let c = parse(&[
            "--etcd",
            "http://198.18.0.1:2379,http://198.18.0.2:2379",
            "--node-name",
            "n1",
            "--listen",
            "198.18.1.1:8080",
        ])
        .expect("cluster")
        .cluster
        .expect("some");
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.node, "n1");
        assert_eq!(c.url, "http://198.18.1.1:8080");
        assert!(parse(&["--node-name", "n1"]).is_err(), "needs --etcd");
        assert!(parse(&["--etcd", "198.18.0.1:2379"]).is_err());
        assert!(parse(&["--etcd", "http://e:2379", "--node-name", "a/b"]).is_err());
        assert!(parse(&["--etcd", "http://e:2379", "--advertise-url", "unix:///x"]).is_err());
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
