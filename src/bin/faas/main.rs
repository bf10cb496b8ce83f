//! `faas`: the command-line client of faasd. Parse, call, print; every
//! failure exits non-zero with a one-line reason.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use faasd::api::{
    parse_env, DeployOptions, FunctionInfo, HandlerKind, DEFAULT_CONCURRENCY,
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MEMORY, DEFAULT_TIMEOUT_SECS, DEFAULT_WARM,
};
use faasd::client::{Client, DEFAULT_URL};
use faasd::image::build::{single_binary, write_image};
use faasd::units::parse_size;

#[derive(Parser)]
#[command(
    name = "faas",
    version,
    about = "Deploy Docker images as functions on faasd"
)]
struct Cli {
    /// faasd control API address.
    #[arg(long, env = "FAAS_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// Bearer token, for a faasd run with --token-file.
    #[arg(long, env = "FAAS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DeployArgs {
    name: String,
    /// Pre-started containers kept waiting (0: every connection starts one).
    #[arg(long, default_value_t = DEFAULT_WARM)]
    warm: u32,
    /// Environment for the handler, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Memory limit per container (bytes, or 64M, 1G ...).
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_MEMORY)]
    memory: u64,
    /// Seconds a container may run before it is killed.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// Containers may connect again to /control.sock for more connections.
    #[arg(long)]
    reuse: bool,
    /// With --reuse: connections one container serves at most (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_requests: u32,
    /// With --reuse: seconds an extra reused container may wait idle.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    idle_timeout: u64,
    /// Connections served at once; more wait (up to faasd's queue timeout, then 503).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: u32,
    /// Listen on every data-plane core (SO_REUSEPORT) instead of one.
    #[arg(long)]
    all_cores: bool,
    /// The image's program is inetd-style: the connection is its stdin and stdout.
    #[arg(long, group = "kind")]
    stdio: bool,
    /// The image's program accepts on fd 3 itself (systemd's LISTEN_FDS);
    /// --warm long-lived containers.
    #[arg(long, group = "kind")]
    socket_activation: bool,
    /// The image's program is a server listening on this port inside its container.
    #[arg(long, value_name = "PORT", group = "kind")]
    container_port: Option<u16>,
    /// The protocol's server speaks first (SMTP, SSH, a banner).
    #[arg(long)]
    server_first: bool,
    /// Image archive to upload (default: standard input).
    #[arg(long)]
    image: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Deploy (or replace) a function from a `docker save` archive.
    Deploy(DeployArgs),
    /// Same as deploy (the original tool's verb).
    New(DeployArgs),
    /// Print a function's IP address.
    Ip { name: String },
    /// List functions.
    List {
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Show a function's settings and counters.
    Inspect { name: String },
    /// Remove a function.
    Rm { name: String },
    /// Print the end of a function's handler log.
    Logs {
        name: String,
        /// Lines from the end to show first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
    },
    /// Build a deployable image archive from a static binary (no Docker needed).
    Pack {
        binary: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, as every other failure: clap's first, without its
            // usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("faas: {}", first.trim_start_matches("error: "));
            return std::process::ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faas: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.url).with_token(cli.token);
    match cli.command {
        Command::Deploy(args) | Command::New(args) => deploy(&client, args),
        Command::Ip { name } => {
            println!("{}", client.inspect(&name)?.ip);
            Ok(())
        }
        Command::List { output } => list(&client, &output),
        Command::Inspect { name } => {
            println!("{}", serde_json::to_string_pretty(&client.inspect(&name)?)?);
            Ok(())
        }
        Command::Rm { name } => {
            client.remove(&name)?;
            println!("removed {name}");
            Ok(())
        }
        Command::Logs { name, tail, follow } => print_stream(client.logs(&name, tail, follow)?),
        Command::Pack { binary, output } => pack(&binary, output),
    }
}

fn deploy(client: &Client, args: DeployArgs) -> anyhow::Result<()> {
    let options = DeployOptions {
        warm: args.warm,
        env: args.env.into_iter().collect(),
        memory: args.memory,
        timeout_secs: args.timeout,
        reuse: args.reuse,
        max_requests: args.max_requests,
        idle_timeout_secs: args.idle_timeout,
        concurrency: args.concurrency,
        all_cores: args.all_cores,
        kind: if args.stdio {
            HandlerKind::Stdio
        } else if args.socket_activation {
            HandlerKind::SocketActivation
        } else if let Some(port) = args.container_port {
            HandlerKind::ContainerPort(port)
        } else {
            HandlerKind::ControlSocket
        },
        server_first: args.server_first,
    };
    if !args.reuse && args.max_requests > 0 {
        bail!("--max-requests only applies with --reuse");
    }
    options.validate().map_err(anyhow::Error::msg)?;
    let (reader, size): (Box<dyn Read>, Option<u64>) = match &args.image {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no image: pipe one in (docker save IMAGE | faas deploy NAME) or pass --image FILE");
            }
            (Box::new(std::io::stdin().lock()), None)
        }
    };
    let reader: Box<dyn Read> = if std::io::stderr().is_terminal() {
        let bar = match size {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} uploading {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Box::new(bar.wrap_read(reader))
    } else {
        reader
    };
    let info = client.deploy(&args.name, &options, reader)?;
    println!("deployed {} at {}", info.name, info.ip);
    Ok(())
}

/// Copies a (possibly endless) stream to stdout, flushing as it comes.
fn print_stream(mut from: Box<dyn Read + Send>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).context("reading logs")?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

fn list(client: &Client, output: &str) -> anyhow::Result<()> {
    let all = client.list()?;
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&all)?),
        "table" => print_table(&all),
        other => bail!("unknown output format {other:?} (table or json)"),
    }
    Ok(())
}

fn print_table(all: &[FunctionInfo]) {
    println!(
        "{:<24} {:<15} {:>7} {:>9} {:>7} {:>5} {:>5}  IMAGE",
        "NAME", "IP", "VERSION", "REQUESTS", "FAILED", "WARM", "COLD"
    );
    for f in all {
        let image = f.image_id.strip_prefix("sha256:").unwrap_or(&f.image_id);
        println!(
            "{:<24} {:<15} {:>7} {:>9} {:>7} {:>5} {:>5}  {}",
            f.name,
            f.ip,
            f.version,
            f.stats.requests,
            f.stats.failed,
            f.stats.warm_starts,
            f.stats.cold_starts,
            &image[..image.len().min(12)]
        );
    }
}

fn pack(binary: &PathBuf, output: Option<PathBuf>) -> anyhow::Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let tag = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "handler".into());
    let spec = single_binary(bytes, &format!("{tag}:latest"));
    match output {
        Some(path) => {
            let file =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            write_image(&spec, std::io::BufWriter::new(file)).context("writing image")?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: redirect it or pass -o FILE"
                );
            }
            let mut out = std::io::stdout().lock();
            write_image(&spec, &mut out).context("writing image")?;
            out.flush()?;
        }
    }
    Ok(())
}
