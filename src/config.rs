//! The daemon's command line, validated into a typed configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::image::Limits;
use crate::net::AddressPool;
use crate::units::parse_size;

#[derive(Debug, Parser)]
#[command(
    name = "faasd",
    version,
    about = "Docker images as functions with their own IP address"
)]
pub struct Args {
    /// Where faasd keeps rootfs directories, the registry, bundles and logs.
    #[arg(long, default_value = "/var/lib/faasd")]
    pub state_dir: PathBuf,
    /// Address of the control API (and /metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Pool of function addresses (inside 127.0.0.0/8).
    #[arg(long, default_value = "127.10.0.0/16")]
    pub ip_pool: String,
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
    /// FAAS_TOKEN). Required when --listen is not a loopback address.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve the control API on a non-loopback address without a token.
    #[arg(long)]
    pub insecure_no_token: bool,
    /// Record no metrics (/metrics answers 404); for measuring their cost.
    #[arg(long)]
    pub no_metrics: bool,
    /// The static `faas-init` helper for the stdio, socket-activation and
    /// container-port kinds (default: `faas-init` next to `faasd`).
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
}

/// How faasd writes its own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    pub token_file: Option<PathBuf>,
    /// `--init`, if given (else looked for next to the executable).
    pub init: Option<PathBuf>,
}

impl Args {
    pub fn validate(self) -> Result<Config, String> {
        let pool = AddressPool::parse(&self.ip_pool).map_err(|e| e.to_string())?;
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
        if !self.listen.ip().is_loopback() && self.token_file.is_none() && !self.insecure_no_token {
            return Err(format!(
                "--listen {} is reachable from other hosts: pass --token-file FILE (clients send it in FAAS_TOKEN), \
                 or --insecure-no-token to serve it open",
                self.listen
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "--state-dir {} must be an absolute path",
                self.state_dir.display()
            ));
        }
        Ok(Config {
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
            token_file: self.token_file,
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

    #[test]
    fn refuses_bad_values() {
        assert!(parse(&["--cores", "0"]).is_err());
        assert!(parse(&["--ip-pool", "10.0.0.0/8"]).is_err());
        assert!(parse(&["--state-dir", "relative"]).is_err());
        assert!(parse(&["--max-upload", "lots"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(
            parse(&["--listen", "0.0.0.0:8080"]).is_err(),
            "an open API needs a token"
        );
        assert!(parse(&["--listen", "0.0.0.0:8080", "--token-file", "/t"]).is_ok());
        assert!(parse(&["--listen", "0.0.0.0:8080", "--insecure-no-token"]).is_ok());
        assert_eq!(
            parse(&["--max-upload", "64M"]).map(|c| c.max_upload).ok(),
            Some(64 << 20)
        );
    }
}
