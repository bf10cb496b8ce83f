//! `faas`'s command line (clap): also the source of its completions and
//! its man page.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use faasd::api::units::parse_size;
use faasd::api::{parse_env, parse_env_file, EgressRule, HandlerKind, OptionsPatch, SecretRef};

#[derive(Parser)]
#[command(
    name = "faas",
    version,
    about = "Deploy Docker images as functions on faasd",
    long_about = "Deploy Docker images as functions on faasd.\n\n\
        faas talks to faasd at --url (or FAAS_URL); without one, to the Unix socket \
        /run/faasd/faasd.sock if it exists (root and the faasd group), else to \
        http://127.0.0.1:8080 with the token from --token, FAAS_TOKEN, --token-file or \
        /var/lib/faasd/token (readable by root).\n\n\
        In a cluster (faasd --etcd), faas keeps the last revision it saw of each cluster in \
        $FAAS_STATE_DIR (else $XDG_STATE_HOME/faas, else ~/.local/state/faas) and sends it, so \
        a read through any node sees what was written through another."
)]
pub struct Cli {
    /// faasd's control API: http://HOST:PORT or unix:///PATH.
    #[arg(long, env = "FAAS_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token for faasd's TCP address. On the command line it shows
    /// in `ps` to every local user while faas runs: prefer FAAS_TOKEN or
    /// --token-file.
    #[arg(long, env = "FAAS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "FAAS_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Deploy (or replace) a function from a registry (--image REF) or a
    /// `docker save` archive (--archive FILE or standard input).
    Deploy(DeployArgs),
    /// Same as deploy (the original tool's verb).
    #[command(hide = true)]
    New(DeployArgs),
    /// Change a function's options without a new image (a new version),
    /// or with --pull, pull its reference again.
    Update {
        name: String,
        /// Resolve the image reference it was deployed from again and
        /// deploy the new digest, if the tag moved.
        #[arg(long)]
        pull: bool,
        #[command(flatten)]
        options: OptionArgs,
    },
    /// Serve a kept earlier version again (by default the one before).
    Rollback {
        name: String,
        /// The version to serve (see `faas inspect`).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Send one HTTP request to a function and print its answer.
    Invoke(InvokeArgs),
    /// Print a function's IP address.
    Ip { name: String },
    /// List functions.
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show a function's settings, versions and counters.
    #[command(visible_alias = "describe")]
    Inspect {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Format::Json)]
        output: Format,
    },
    /// Remove a function.
    Rm { name: String },
    /// Print the end of a function's handler log (in a cluster, every node's).
    Logs {
        name: String,
        /// Lines from the end to show first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// In a cluster: only this node's lines (by default every node's,
        /// each prefixed with its name).
        #[arg(long)]
        node: Option<String>,
    },
    /// List the cluster's nodes (faasd --etcd).
    Nodes {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Manage secrets (values go in, never out).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage the registry logins faasd pulls with (passwords go in, never out).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Build a deployable image archive from a static binary (no Docker needed).
    Pack {
        binary: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Print faas's man page (roff).
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a secret; the value is read from standard input (or --from-file).
    Create {
        name: String,
        /// Read the value from this file instead.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Replace an existing secret of that name.
        #[arg(long)]
        replace: bool,
    },
    /// List secrets (names, sizes, users; never values).
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove a secret no function uses.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Store the login for a registry host (ghcr.io, docker.io, 127.0.0.1:5000).
    Login {
        host: String,
        /// The user name (else it is asked for).
        #[arg(short, long)]
        username: Option<String>,
        /// Read the password from standard input (else it is asked for).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the registries faasd has logins for (hosts and user names).
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Forget the login for a registry host.
    Logout { host: String },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args)]
pub struct DeployArgs {
    pub name: String,
    /// Image reference faasd pulls (nginx, nginx:1.25, ghcr.io/org/app:v2,
    /// 127.0.0.1:5000/app@sha256:...); an existing file is read as
    /// --archive, as before.
    #[arg(long, value_name = "REF", conflicts_with = "archive")]
    pub image: Option<String>,
    /// Image archive (`docker save`) to upload (default: standard input).
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// Platform to pick from a multi-platform image (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH", requires = "image")]
    pub platform: Option<String>,
    /// In a cluster: return once every live node serves this version with
    /// its pool filled, a line per node as it gets there (non-zero exit if
    /// one failed or --wait-timeout passed).
    #[arg(long)]
    pub wait_all: bool,
    /// How long --wait-all waits, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub options: OptionArgs,
}

#[derive(Args)]
pub struct InvokeArgs {
    pub name: String,
    /// Request body: TEXT, @FILE, or - for standard input (makes it a POST).
    #[arg(short, long)]
    pub data: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Extra header, K:V (repeatable).
    #[arg(short = 'H', long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Method (default: GET, or POST with --data).
    #[arg(short = 'X', long)]
    pub method: Option<String>,
}

/// The options of deploy and update; each left out keeps its value.
#[derive(Args, Default)]
pub struct OptionArgs {
    /// Pre-started containers kept waiting (0: every connection starts one).
    #[arg(long)]
    pub warm: Option<u32>,
    /// Let the pool grow with demand up to this many (arrival rate × start time, with headroom), back to --warm after faasd's --pool-idle without demand (0: fixed at --warm).
    #[arg(long, value_name = "M")]
    pub warm_max: Option<u32>,
    /// Environment, KEY=VALUE (repeatable; given, it replaces the whole environment).
    #[arg(long = "env", value_parser = parse_env, value_name = "KEY=VALUE")]
    pub env: Vec<(String, String)>,
    /// Environment from a file of KEY=VALUE lines (--env entries win).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// A stored secret as $ENVVAR and /run/secrets/NAME (repeatable; NAME= for the file only).
    #[arg(long = "secret", value_parser = SecretRef::parse, value_name = "NAME[=ENVVAR]")]
    pub secrets: Vec<SecretRef>,
    /// Memory limit per container (bytes, or 64M, 1G ...).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Seconds a container may run before it is killed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Containers may connect again to /control.sock for more connections (--reuse=false: off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub reuse: Option<bool>,
    /// With --reuse: connections one container serves at most (0: no limit).
    #[arg(long)]
    pub max_requests: Option<u32>,
    /// With --reuse: seconds an extra reused container may wait idle.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Connections served at once; more wait (up to faasd's queue timeout, then 503).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Listen on every data-plane core (SO_REUSEPORT) instead of one.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub all_cores: Option<bool>,
    /// The image's program speaks faasd's protocol on /control.sock (the default kind).
    #[arg(long, group = "kind")]
    pub control_socket: bool,
    /// The image's program is inetd-style: the connection is its stdin and stdout.
    #[arg(long, group = "kind")]
    pub stdio: bool,
    /// The image's program accepts on fd 3 itself (systemd's LISTEN_FDS).
    #[arg(long, group = "kind")]
    pub socket_activation: bool,
    /// The image's program is a server listening on this port inside its container.
    #[arg(long, value_name = "PORT", group = "kind")]
    pub container_port: Option<u16>,
    /// The protocol's server speaks first (SMTP, SSH, a banner).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub server_first: Option<bool>,
    /// Containers may open connections out, through NAT (--egress=false: off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub egress: Option<bool>,
    /// With --egress: the only destinations allowed, PREFIX[:PORT[/udp]] (a port is TCP unless /udp; no port: every port and protocol; repeatable; given, it replaces the list).
    #[arg(long = "egress-allow", value_parser = EgressRule::parse, value_name = "PREFIX[:PORT[/udp]]")]
    pub egress_allow: Vec<EgressRule>,
    /// The container's root is the image, read-only (default: a writable layer of its own, gone with the container).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Serve every connection in a fresh child of a zygote in a pool container (its own namespaces, /tmp and writable root), not in a fresh container: per-connection isolation at fork speed (--fork=false: off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub fork: Option<bool>,
    /// Size of the writable layer and of each VOLUME (counted against --memory; default 64M).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub scratch: Option<u64>,
    /// A capability beyond Docker's default set, inside the container's user namespace (repeatable; ALL; given, it replaces the list).
    #[arg(long = "cap-add", value_parser = faasd::api::caps::parse, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// A capability of Docker's default set to leave out, or ALL (repeatable; given, it replaces the list).
    #[arg(long = "cap-drop", value_parser = faasd::api::caps::parse, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Names it answers to on faasd's shared listeners (--shared-listen), routed by HTTP Host or TLS SNI: exact names and *.example.com (repeatable or comma-separated; given, it replaces the list; --host "" clears it).
    #[arg(long = "host", value_name = "NAME[,NAME...]")]
    pub hosts: Vec<String>,
}

impl OptionArgs {
    /// The options named, as the API's patch.
    pub fn patch(&self) -> Result<OptionsPatch, String> {
        let env = if self.env_file.is_some() || !self.env.is_empty() {
            let mut env = std::collections::BTreeMap::new();
            if let Some(path) = &self.env_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                env.extend(parse_env_file(&text).map_err(|e| format!("{}: {e}", path.display()))?);
            }
            env.extend(self.env.iter().cloned());
            Some(env)
        } else {
            None
        };
        let kind = if self.control_socket {
            Some(HandlerKind::ControlSocket)
        } else if self.stdio {
            Some(HandlerKind::Stdio)
        } else if self.socket_activation {
            Some(HandlerKind::SocketActivation)
        } else {
            self.container_port.map(HandlerKind::ContainerPort)
        };
        let hosts = if self.hosts.is_empty() {
            None
        } else {
            Some(faasd::api::host::parse_list(&self.hosts.join(","))?)
        };
        Ok(OptionsPatch {
            hosts,
            warm: self.warm,
            warm_max: self.warm_max,
            env,
            memory: self.memory,
            timeout_secs: self.timeout,
            reuse: self.reuse,
            max_requests: self.max_requests,
            idle_timeout_secs: self.idle_timeout,
            concurrency: self.concurrency,
            all_cores: self.all_cores,
            kind,
            server_first: self.server_first,
            secrets: (!self.secrets.is_empty()).then(|| self.secrets.clone()),
            egress: self.egress,
            egress_allow: (!self.egress_allow.is_empty()).then(|| self.egress_allow.clone()),
            read_only: self.read_only,
            fork: self.fork,
            scratch: self.scratch,
            cap_add: (!self.cap_add.is_empty()).then(|| self.cap_add.clone()),
            cap_drop: (!self.cap_drop.is_empty()).then(|| self.cap_drop.clone()),
        })
    }
}
