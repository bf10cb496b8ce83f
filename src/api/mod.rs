//! Wire types of the control API, shared by `faas` and `faasd`, and the
//! query-string encoding of deploy options.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::units::parse_size;

/// Default per-function memory limit.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Default per-connection handler timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default number of pre-started containers.
pub const DEFAULT_WARM: u32 = 2;
/// Default number of connections a function serves at once.
pub const DEFAULT_CONCURRENCY: u32 = 64;
/// Default seconds a reused container may wait for its next connection
/// (while the pool holds more than `warm`).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;

/// How a function's program takes its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// The program speaks faasd's protocol on `/control.sock` itself.
    #[default]
    ControlSocket,
    /// inetd style: the connection is the program's stdin and stdout.
    Stdio,
    /// systemd style: the program accepts on a listening socket at fd 3;
    /// long-lived containers.
    SocketActivation,
    /// An unmodified server that binds this port inside its container.
    ContainerPort(u16),
}

impl HandlerKind {
    /// Whether `faas-init` runs first in the function's containers.
    pub fn needs_init(self) -> bool {
        self != HandlerKind::ControlSocket
    }
}

impl std::fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerKind::ControlSocket => f.write_str("control-socket"),
            HandlerKind::Stdio => f.write_str("stdio"),
            HandlerKind::SocketActivation => f.write_str("socket-activation"),
            HandlerKind::ContainerPort(port) => write!(f, "container-port {port}"),
        }
    }
}

/// Settings chosen at deploy time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployOptions {
    /// Containers kept started and waiting on `/control.sock`.
    pub warm: u32,
    pub env: BTreeMap<String, String>,
    pub memory: u64,
    /// Seconds one connection may take (container start to end, or to the
    /// handler's next connect in reuse mode).
    pub timeout_secs: u64,
    /// Containers may connect again for more connections.
    pub reuse: bool,
    /// In reuse mode: connections one container serves at most (0: no limit).
    pub max_requests: u32,
    /// In reuse mode: seconds an extra container may wait for its next connection.
    pub idle_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub concurrency: u32,
    /// One SO_REUSEPORT listener per core instead of one listener on one core.
    pub all_cores: bool,
    /// How the program takes its connections.
    pub kind: HandlerKind,
    /// The protocol's server speaks first (SMTP, SSH, a banner): never hold
    /// a connection back until the client has sent something.
    pub server_first: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            warm: DEFAULT_WARM,
            env: BTreeMap::new(),
            memory: DEFAULT_MEMORY,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            reuse: false,
            max_requests: 0,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            concurrency: DEFAULT_CONCURRENCY,
            all_cores: false,
            kind: HandlerKind::ControlSocket,
            server_first: false,
        }
    }
}

impl DeployOptions {
    /// Encodes the options as a URL query string (without the `?`).
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("warm", &self.warm.to_string());
        q.append_pair("memory", &self.memory.to_string());
        q.append_pair("timeout", &self.timeout_secs.to_string());
        q.append_pair("reuse", &self.reuse.to_string());
        q.append_pair("max_requests", &self.max_requests.to_string());
        q.append_pair("idle_timeout", &self.idle_timeout_secs.to_string());
        q.append_pair("concurrency", &self.concurrency.to_string());
        q.append_pair("all_cores", &self.all_cores.to_string());
        match self.kind {
            HandlerKind::ControlSocket => {}
            HandlerKind::Stdio => {
                q.append_pair("kind", "stdio");
            }
            HandlerKind::SocketActivation => {
                q.append_pair("kind", "socket-activation");
            }
            HandlerKind::ContainerPort(port) => {
                q.append_pair("container_port", &port.to_string());
            }
        }
        if self.server_first {
            q.append_pair("server_first", "true");
        }
        for (k, v) in &self.env {
            q.append_pair("env", &format!("{k}={v}"));
        }
        q.finish()
    }

    /// Decodes a query string; unknown keys and malformed values are errors
    /// so a typo never silently deploys with defaults.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut opts = Self::default();
        let mut kind: Option<HandlerKind> = None;
        let mut port: Option<u16> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "kind" => kind = Some(parse_kind(&value)?),
                "container_port" => {
                    port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid container port {value:?} (1-65535)"))?,
                    )
                }
                "server_first" => opts.server_first = parse_bool("server_first", &value)?,
                "warm" => {
                    opts.warm = value
                        .parse()
                        .map_err(|_| format!("invalid warm count {value:?}"))?
                }
                "memory" => opts.memory = parse_size(&value)?,
                "timeout" => {
                    opts.timeout_secs = value
                        .parse()
                        .map_err(|_| format!("invalid timeout {value:?} (seconds)"))?
                }
                "reuse" => opts.reuse = parse_bool("reuse", &value)?,
                "all_cores" => opts.all_cores = parse_bool("all_cores", &value)?,
                "max_requests" => {
                    opts.max_requests = value
                        .parse()
                        .map_err(|_| format!("invalid max_requests {value:?}"))?
                }
                "idle_timeout" => {
                    opts.idle_timeout_secs = value
                        .parse()
                        .map_err(|_| format!("invalid idle timeout {value:?} (seconds)"))?
                }
                "concurrency" => {
                    opts.concurrency = value
                        .parse()
                        .map_err(|_| format!("invalid concurrency {value:?}"))?
                }
                "env" => {
                    let (k, v) = parse_env(&value)?;
                    opts.env.insert(k, v);
                }
                other => return Err(format!("unknown deploy option {other:?}")),
            }
        }
        opts.kind = combine_kind(kind, port)?;
        opts.validate()?;
        Ok(opts)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.memory < 4 << 20 {
            return Err(format!("memory limit {} is below 4M", self.memory));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 3600 {
            return Err(format!(
                "timeout {}s must be within 1..=3600",
                self.timeout_secs
            ));
        }
        if self.warm > 256 {
            return Err(format!("warm count {} is above 256", self.warm));
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(format!(
                "concurrency {} must be within 1..=10000",
                self.concurrency
            ));
        }
        if self.idle_timeout_secs == 0 {
            return Err("idle timeout must be at least 1 second".into());
        }
        match self.kind {
            HandlerKind::ContainerPort(0) => {
                return Err("container port 0: the server's port must be 1-65535".into())
            }
            HandlerKind::Stdio if self.reuse => {
                return Err("--stdio and --reuse exclude each other: a stdio program serves one connection and ends".into())
            }
            HandlerKind::SocketActivation if self.reuse => {
                return Err("--socket-activation and --reuse exclude each other: an activated server accepts every connection itself".into())
            }
            HandlerKind::SocketActivation if self.warm == 0 => {
                return Err("--socket-activation needs --warm of at least 1: its containers are the servers".into())
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the function's listener holds a connection back until the
    /// client has sent something (TCP_DEFER_ACCEPT). Only where it was
    /// measured to pay off — a reuse handler of faasd's protocol, which
    /// would otherwise often wake to wait for the request — and never for
    /// a protocol whose server speaks first.
    pub fn defers_accept(&self) -> bool {
        self.reuse && self.kind == HandlerKind::ControlSocket && !self.server_first
    }
}

fn parse_kind(value: &str) -> Result<HandlerKind, String> {
    match value {
        "control-socket" => Ok(HandlerKind::ControlSocket),
        "stdio" => Ok(HandlerKind::Stdio),
        "socket-activation" => Ok(HandlerKind::SocketActivation),
        "container-port" => Err("kind container-port needs container_port=N".into()),
        other => Err(format!(
            "unknown handler kind {other:?} (control-socket, stdio, socket-activation, or container_port=N)"
        )),
    }
}

/// `kind=` and `container_port=` together name one kind at most.
fn combine_kind(kind: Option<HandlerKind>, port: Option<u16>) -> Result<HandlerKind, String> {
    match (kind, port) {
        (None, None) => Ok(HandlerKind::ControlSocket),
        (Some(k), None) => Ok(k),
        (None | Some(HandlerKind::ControlSocket), Some(p)) => Ok(HandlerKind::ContainerPort(p)),
        (Some(k), Some(_)) => Err(format!(
            "--container-port and --{k} exclude each other: choose one handler kind"
        )),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid {key} {value:?} (true or false)")),
    }
}

/// Splits `KEY=VALUE`; the key must be a plain environment variable name.
pub fn parse_env(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("environment entry {kv:?} is not KEY=VALUE"))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("invalid environment variable name {k:?}"));
    }
    if v.contains('\0') {
        return Err(format!("environment value for {k} contains a NUL byte"));
    }
    Ok((k.to_string(), v.to_string()))
}

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
}

/// What `faas inspect` and `faas list` show of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub ip: Ipv4Addr,
    pub image_id: String,
    pub version: u64,
    pub deployed_at: u64,
    pub options: DeployOptions,
    pub command: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stats: FunctionStats,
    /// The isolation its containers run with.
    #[serde(default)]
    pub sandbox: Sandbox,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let mut opts = DeployOptions {
            warm: 0,
            memory: 64 << 20,
            timeout_secs: 5,
            reuse: true,
            max_requests: 7,
            idle_timeout_secs: 9,
            concurrency: 3,
            all_cores: true,
            kind: HandlerKind::ContainerPort(8080),
            server_first: true,
            ..Default::default()
        };
        opts.env.insert("GREETING".into(), "a=b & c".into());
        assert_eq!(DeployOptions::from_query(&opts.to_query()), Ok(opts));
    }

    #[test]
    fn query_refuses_nonsense() {
        assert!(DeployOptions::from_query("warm=-1").is_err());
        assert!(DeployOptions::from_query("memory=1").is_err());
        assert!(DeployOptions::from_query("timeout=0").is_err());
        assert!(DeployOptions::from_query("colour=blue").is_err());
        assert!(DeployOptions::from_query("env=NOEQUALS").is_err());
        assert!(DeployOptions::from_query("reuse=maybe").is_err());
        assert!(DeployOptions::from_query("concurrency=0").is_err());
        assert!(DeployOptions::from_query("env=1BAD%3Dx").is_err());
        assert_eq!(DeployOptions::from_query(""), Ok(DeployOptions::default()));
        assert_eq!(
            DeployOptions::from_query("memory=64M").map(|o| o.memory),
            Ok(64 << 20)
        );
    }

    #[test]
    fn handler_kinds_and_their_bad_combinations() {
        let kind = |q: &str| DeployOptions::from_query(q).map(|o| o.kind);
        assert_eq!(kind(""), Ok(HandlerKind::ControlSocket));
        assert_eq!(kind("kind=stdio"), Ok(HandlerKind::Stdio));
        assert_eq!(
            kind("kind=socket-activation"),
            Ok(HandlerKind::SocketActivation)
        );
        assert_eq!(
            kind("container_port=8080"),
            Ok(HandlerKind::ContainerPort(8080))
        );
        for bad in [
            "kind=stdio&reuse=true",
            "container_port=0",
            "container_port=70000",
            "kind=socket-activation&container_port=80",
            "kind=socket-activation&reuse=true",
            "kind=socket-activation&warm=0",
            "kind=fast",
        ] {
            let e = DeployOptions::from_query(bad).expect_err(bad);
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let reuse = DeployOptions::from_query("reuse=true").expect("reuse");
        assert!(reuse.defers_accept());
        let banner = DeployOptions::from_query("reuse=true&server_first=true").expect("banner");
        assert!(!banner.defers_accept());
        assert!(!DeployOptions::default().defers_accept());
    }
}
