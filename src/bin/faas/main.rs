//! `faas`: the command-line client of faasd. Parse, call, print; every
//! failure exits non-zero with a one-line reason.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};
use faasd::client::http::{self, Body, Endpoint};
use faasd::client::{default_token, default_url, read_token, Client};
use faasd::image::build::{single_binary, write_image};

mod cli;
mod output;

use cli::{Cli, Command, DeployArgs, Format, InvokeArgs, SecretCommand};

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
    if std::env::args().any(|a| a == "--token" || a.starts_with("--token=")) {
        eprintln!("faas: warning: --token shows the token to every local user (ps); use FAAS_TOKEN or --token-file");
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faas: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "faas", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        Command::Pack { binary, output } => return pack(binary, output.as_deref()),
        _ => {}
    }
    let client = connect(&cli)?;
    match cli.command {
        Command::Deploy(args) | Command::New(args) => deploy(&client, args),
        Command::Update { name, options } => {
            let patch = options.patch().map_err(anyhow::Error::msg)?;
            if patch.is_empty() {
                bail!("nothing to update: name the options to change (faas update --help)");
            }
            let info = client.update(&name, &patch)?;
            println!("updated {} to version {}", info.name, info.version);
            Ok(())
        }
        Command::Rollback { name, to } => {
            let info = client.rollback(&name, to)?;
            println!("{} serves version {} again", info.name, info.version);
            Ok(())
        }
        Command::Invoke(args) => invoke(&client, args),
        Command::Ip { name } => {
            println!("{}", client.inspect(&name)?.ip);
            Ok(())
        }
        Command::List { output } => {
            let all = client.list()?;
            match output {
                Format::Table => print!("{}", output::functions_table(&all)),
                f => print!("{}", output::structured(&all, f)?),
            }
            Ok(())
        }
        Command::Inspect { name, output } => {
            print!("{}", output::structured(&client.inspect(&name)?, output)?);
            Ok(())
        }
        Command::Rm { name } => {
            client.remove(&name)?;
            println!("removed {name}");
            Ok(())
        }
        Command::Logs { name, tail, follow } => print_stream(client.logs(&name, tail, follow)?),
        Command::Nodes { output } => {
            let all = client.nodes()?;
            match output {
                Format::Table => print!("{}", output::nodes_table(&all)),
                f => print!("{}", output::structured(&all, f)?),
            }
            Ok(())
        }
        Command::Secret(cmd) => secret(&client, cmd),
        Command::Completion { .. } | Command::Man | Command::Pack { .. } => Ok(()),
    }
}

/// The client for `--url` (or FAAS_URL, or the default socket, or the
/// default address), with the token a TCP address needs.
fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let url = default_url(cli.url.as_deref());
    let client = Client::new(&url);
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, Some(file)) => Some(
            read_token(file).with_context(|| format!("reading token file {}", file.display()))?,
        ),
        _ if client.is_local_socket() => None,
        _ => default_token(),
    };
    Ok(client.with_token(token))
}

fn deploy(client: &Client, args: DeployArgs) -> anyhow::Result<()> {
    let patch = args.options.patch().map_err(anyhow::Error::msg)?;
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
    let info = client.deploy(&args.name, &patch, reader)?;
    println!(
        "deployed {} at {} (version {})",
        info.name, info.ip, info.version
    );
    for note in &info.notes {
        println!("{note}");
    }
    Ok(())
}

fn secret(client: &Client, cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Create {
            name,
            from_file,
            replace,
        } => {
            let mut value = Vec::new();
            match from_file {
                Some(path) => {
                    File::open(&path)
                        .and_then(|mut f| f.read_to_end(&mut value))
                        .with_context(|| format!("reading {}", path.display()))?;
                }
                None => {
                    if std::io::stdin().is_terminal() {
                        bail!("no value: pipe it in (faas secret create NAME < file) or pass --from-file FILE");
                    }
                    std::io::stdin()
                        .lock()
                        .read_to_end(&mut value)
                        .context("reading the value from standard input")?;
                }
            }
            let result = client.secret_create(&name, &value, replace);
            value.fill(0);
            result?;
            println!("stored secret {name}");
        }
        SecretCommand::Ls { output } => {
            let all = client.secret_list()?;
            match output {
                Format::Table => print!("{}", output::secrets_table(&all)),
                f => print!("{}", output::structured(&all, f)?),
            }
        }
        SecretCommand::Rm { name } => {
            client.secret_remove(&name)?;
            println!("removed secret {name}");
        }
    }
    Ok(())
}

/// One HTTP request to the function's own address; its answer's body to
/// stdout, and a failure status as the exit status.
fn invoke(client: &Client, args: InvokeArgs) -> anyhow::Result<()> {
    let info = client.inspect(&args.name)?;
    let body = match args.data.as_deref() {
        None => None,
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut b)
                .context("reading standard input")?;
            Some(b)
        }
        Some(d) => match d.strip_prefix('@') {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {path}"))?),
            None => Some(d.as_bytes().to_vec()),
        },
    };
    let method = args
        .method
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
        .to_ascii_uppercase();
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not K:V"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let target = Endpoint::Tcp(std::net::SocketAddr::from((info.ip, info.port)).to_string());
    let data = body.unwrap_or_default();
    let mut answer = http::request(&target, &method, &path, &refs, Body::Bytes(&data))
        .map_err(|e| anyhow::anyhow!("invoking {} at {}:{}: {e}", info.name, info.ip, info.port))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut answer.body, &mut out).context("reading the answer")?;
    out.flush()?;
    if answer.status >= 400 {
        bail!("{} answered HTTP {}", info.name, answer.status);
    }
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

fn pack(binary: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let tag = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "handler".into());
    let spec = single_binary(bytes, &format!("{tag}:latest"));
    match output {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
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
