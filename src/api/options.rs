//! A function's deploy options: the handler kind, secrets, environment
//! and limits of a version, and their defaults. Changes to them are
//! `patch::OptionsPatch`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
/// Default size of a container's writable layer (and of each VOLUME).
pub const DEFAULT_SCRATCH: u64 = 64 << 20;

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

/// A secret a function receives: its value as environment variable `env`
/// (unless empty) and as the file `/run/secrets/NAME`. Only the names
/// travel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub env: String,
}

impl SecretRef {
    /// `NAME`, `NAME=ENVVAR`, or `NAME=` (the file only); the variable
    /// defaults to NAME upper-cased with `-` and `.` as `_`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, env) = match spec.split_once('=') {
            Some((n, e)) => (n, e.to_string()),
            None => (spec, spec.to_ascii_uppercase().replace(['-', '.'], "_")),
        };
        check_secret_name(name)?;
        if !env.is_empty() {
            check_env_name(&env).map_err(|e| format!("secret {name}: {e}"))?;
        }
        Ok(Self {
            name: name.to_string(),
            env,
        })
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.env)
    }
}

/// Secret names are file names under /run/secrets: 1-63 of `a-z A-Z 0-9 _ . -`,
/// starting with a letter or digit.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid secret name {name:?}: 1-63 of a-z A-Z 0-9 _ . -, starting with a letter or digit"
        ))
    }
}

/// The most `--host` names one function may have.
pub const MAX_HOSTS: usize = 10_000;

/// Settings of a function's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployOptions {
    /// Containers kept started and waiting on `/control.sock`.
    pub warm: u32,
    /// The pool follows demand up to this many (0: stays at `warm`).
    pub warm_max: u32,
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
    /// Secrets it receives (names only; the values stay in faasd).
    pub secrets: Vec<SecretRef>,
    /// Its containers may open connections out (through NAT).
    pub egress: bool,
    /// With `egress`: the only destinations they may reach (empty: any
    /// but this host itself).
    pub egress_allow: Vec<EgressRule>,
    /// The container's root is the image itself, read-only; otherwise a
    /// writable layer of its own lies over it, gone with the container.
    pub read_only: bool,
    /// The writable layer's size in bytes (each VOLUME's too); its pages
    /// count against `memory`.
    pub scratch: u64,
    /// Capabilities added to Docker's default set (`caps`), or `ALL`.
    pub cap_add: Vec<String>,
    /// Capabilities taken from it, or `ALL`.
    pub cap_drop: Vec<String>,
    /// Every connection is served in a fresh child of a zygote held in a
    /// pool container (`faas-init fork`), with its own namespaces and
    /// writable paths, instead of in a fresh container.
    pub fork: bool,
    /// Names it answers to on the shared listeners (`--host`), besides
    /// its own address.
    pub hosts: Vec<super::host::HostName>,
}

/// A destination a function with egress may reach: an IPv4 prefix, and
/// one port of it over TCP or UDP, or all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EgressRule {
    pub net: ipnet::Ipv4Net,
    pub port: Option<u16>,
    /// The port's protocol (TCP unless the rule says `/udp`).
    pub proto: Proto,
}

/// The transport protocol of an egress rule's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl EgressRule {
    /// `10.1.2.0/24:5432` (TCP), `10.1.2.3:53/udp`, `10.1.2.3:443/tcp`,
    /// `10.1.2.0/24` or `10.1.2.3` (every port, every protocol).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid egress destination {text:?}: {why} (PREFIX[:PORT[/tcp|/udp]], e.g. 10.1.2.0/24:5432)"
            )
        };
        let (text, proto) = match text.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Some(Proto::Tcp)),
            Some((rest, "udp")) => (rest, Some(Proto::Udp)),
            _ => (text, None),
        };
        let (net, port) = match text.rsplit_once(':') {
            Some((net, port)) if !net.contains(':') => {
                let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
                if port == 0 {
                    return Err(bad("port 0"));
                }
                (net, Some(port))
            }
            Some(_) => return Err(bad("IPv6 egress is not supported yet")),
            None => (text, None),
        };
        let net = if net.contains('/') {
            net.parse::<ipnet::Ipv4Net>()
                .map_err(|_| bad("bad prefix"))?
        } else {
            let ip: std::net::Ipv4Addr = net.parse().map_err(|_| bad("bad address"))?;
            ipnet::Ipv4Net::from(ip)
        };
        if port.is_none() && proto.is_some() {
            return Err(bad("a protocol needs a port"));
        }
        Ok(Self {
            net: net.trunc(),
            port,
            proto: proto.unwrap_or(Proto::Tcp),
        })
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.port, self.proto) {
            (Some(p), Proto::Tcp) => write!(f, "{}:{p}", self.net),
            (Some(p), Proto::Udp) => write!(f, "{}:{p}/udp", self.net),
            (None, _) => write!(f, "{}", self.net),
        }
    }
}

impl TryFrom<String> for EgressRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<EgressRule> for String {
    fn from(r: EgressRule) -> String {
        r.to_string()
    }
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            warm: DEFAULT_WARM,
            warm_max: 0,
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
            secrets: Vec::new(),
            egress: false,
            egress_allow: Vec::new(),
            read_only: false,
            scratch: DEFAULT_SCRATCH,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            fork: false,
            hosts: Vec::new(),
        }
    }
}

impl DeployOptions {
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
        if self.warm_max != 0 {
            if self.warm_max < self.warm {
                return Err(format!(
                    "--warm-max {} is below --warm {}",
                    self.warm_max, self.warm
                ));
            }
            if self.warm_max > 256 {
                return Err(format!("--warm-max {} is above 256", self.warm_max));
            }
            if self.warm_max > self.warm && self.hands_listener() {
                return Err("--warm-max does not apply to servers handed the listener (--socket-activation, --reuse on a --container-port): they accept by themselves, faasd does not see their demand".into());
            }
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
        for (i, s) in self.secrets.iter().enumerate() {
            if !s.env.is_empty() && self.secrets[..i].iter().any(|t| t.env == s.env) {
                return Err(format!(
                    "secrets {} and another both set ${}: give one another variable (NAME=VAR)",
                    s.name, s.env
                ));
            }
        }
        if !self.egress && !self.egress_allow.is_empty() {
            return Err("--egress-allow needs --egress".into());
        }
        if !(1 << 20..=16 << 30).contains(&self.scratch) {
            return Err(format!(
                "scratch size {} must be within 1M..=16G",
                self.scratch
            ));
        }
        if self.hosts.len() > MAX_HOSTS {
            return Err(format!(
                "{} host names: at most {MAX_HOSTS} per function (a wildcard covers many)",
                self.hosts.len()
            ));
        }
        for cap in self.cap_add.iter().chain(&self.cap_drop) {
            let known = super::caps::parse(cap)?;
            if known != *cap {
                return Err(format!("capability {cap:?}: write it {known}"));
            }
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
            HandlerKind::SocketActivation if self.fork => {
                return Err("--fork and --socket-activation exclude each other: an activated server accepts every connection itself, in one process".into())
            }
            _ if self.fork && self.reuse => {
                return Err("--fork and --reuse exclude each other: --fork serves every connection in a fresh child, --reuse one program many".into())
            }
            HandlerKind::SocketActivation if !self.hosts.is_empty() => {
                return Err("--host cannot route to --socket-activation: an activated server accepts on its own listener, where faasd cannot put a connection it routed (a --container-port server can take them)".into())
            }
            HandlerKind::SocketActivation if self.warm == 0 => {
                return Err("--socket-activation needs --warm of at least 1: its containers are the servers".into())
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `faas-init` runs first in the function's containers: the
    /// kinds it serves, and every `--fork` function (it is the zygote).
    pub fn runs_init(&self) -> bool {
        self.kind.needs_init() || self.fork
    }

    /// Whether a container serves many connections, one after another or
    /// at once: reuse, and a `--fork` zygote.
    pub fn serves_many(&self) -> bool {
        self.reuse || self.fork
    }

    /// The pool's least and most containers (`--warm`, `--warm-max`).
    pub fn pool_bounds(&self) -> (u32, u32) {
        (self.warm, self.warm_max.max(self.warm))
    }

    /// Whether the function's listener holds a connection back until the
    /// client has sent something (TCP_DEFER_ACCEPT). Only where it was
    /// measured to pay off — a reuse handler of faasd's protocol, which
    /// would otherwise often wake to wait for the request — and never for
    /// a protocol whose server speaks first.
    pub fn defers_accept(&self) -> bool {
        self.reuse && self.kind == HandlerKind::ControlSocket && !self.server_first
    }

    /// Whether the function's containers are given its listening socket
    /// and accept on it themselves (no core of faasd's does): socket
    /// activation, and a reused server on a container port with a warm
    /// pool, whose `bind` of that port gets the socket (faas-init's
    /// `bind` mode). With `--warm 0` nothing would be there to accept, so
    /// such a server gets connections relayed, started as they come; so
    /// does one with `--host`.
    pub fn hands_listener(&self) -> bool {
        match self.kind {
            HandlerKind::SocketActivation => true,
            // Routed connections (`--host`) come one by one, so such a
            // server is relayed them like every other.
            HandlerKind::ContainerPort(_) => self.reuse && self.warm > 0 && self.hosts.is_empty(),
            HandlerKind::ControlSocket | HandlerKind::Stdio => false,
        }
    }
}

/// Splits `KEY=VALUE`; the key must be a plain environment variable name.
pub fn parse_env(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("environment entry {kv:?} is not KEY=VALUE"))?;
    check_env_name(k)?;
    if v.contains('\0') {
        return Err(format!("environment value for {k} contains a NUL byte"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn check_env_name(k: &str) -> Result<(), String> {
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid environment variable name {k:?}"))
    }
}

/// `K=V` lines of an env file: blank lines and `#` comments skipped, an
/// optional `export ` prefix allowed, values taken as written (no quotes
/// removed but a matching pair around the whole value).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = parse_env(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let v = match v.as_bytes() {
            [q @ (b'"' | b'\''), .., e] if q == e && v.len() >= 2 => v[1..v.len() - 1].to_string(),
            _ => v,
        };
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_env_files() {
        assert_eq!(
            SecretRef::parse("db-pass.v2").expect("secret").env,
            "DB_PASS_V2"
        );
        assert_eq!(SecretRef::parse("x=MY_VAR").expect("secret").env, "MY_VAR");
        for bad in ["", "../etc", "a/b", ".hidden", "x=1VAR", "x=A-B"] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
        let env = parse_env_file("# comment\n\nexport A=1\nB=\"two words\"\nC='x'\nD=a=b\n")
            .expect("env file");
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), "a=b".into())
            ]
        );
        assert!(parse_env_file("GOOD=1\nbad line\n")
            .expect_err("bad")
            .starts_with("line 2:"));
    }
}
