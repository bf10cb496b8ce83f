//! `faas`: the command-line client of faasd. Parse, call, print; every
//! failure exits non-zero with a one-line reason.

use std::fs::File;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};
use faasd::client::http::{self, Body, Endpoint};
use faasd::client::revisions::Revisions;
use faasd::client::{default_token, default_url, read_token, Client};
use faasd::image::build::{single_binary, write_image};

mod cli;
mod output;

use cli::{Cli, Command, DeployArgs, Format, InvokeArgs, RegistryCommand, SecretCommand};

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
        Command::Update {
            name,
            pull: true,
            options,
        } => {
            let patch = options.patch().map_err(anyhow::Error::msg)?;
            let info = client.update_pull(&name, &patch)?;
            for note in &info.notes {
                println!("{note}");
            }
            println!(
                "{} serves version {}{}",
                info.name,
                info.version,
                pulled(&info)
            );
            Ok(())
        }
        Command::Update { name, options, .. } => {
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
        Command::Logs {
            name,
            tail,
            follow,
            node,
        } => print_stream(client.logs(&name, tail, follow, node.as_deref())?),
        Command::Nodes { output } => {
            let all = client.nodes()?;
            match output {
                Format::Table => print!("{}", output::nodes_table(&all)),
                f => print!("{}", output::structured(&all, f)?),
            }
            Ok(())
        }
        Command::Secret(cmd) => secret(&client, cmd),
        Command::Registry(cmd) => registry(&client, cmd),
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
    let client = match Revisions::default_dir() {
        Some(dir) => client.with_revisions(Revisions::at(&dir)),
        None => client,
    };
    Ok(client.with_token(token))
}

fn deploy(client: &Client, mut args: DeployArgs) -> anyhow::Result<()> {
    let patch = args.options.patch().map_err(anyhow::Error::msg)?;
    if let Some(image) = args.image.take() {
        if !std::path::Path::new(&image).is_file() {
            return deploy_image(client, &args, &patch, &image);
        }
        eprintln!("note: --image FILE is now --archive FILE (--image takes a registry reference)");
        args.archive = Some(image.into());
    }
    let (reader, size): (Box<dyn Read>, Option<u64>) = match &args.archive {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no image: name one (--image REF), pipe one in (docker save IMAGE | faas deploy NAME) or pass --archive FILE");
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
    if args.wait_all {
        wait_all(client, &info, args.wait_timeout)?;
    }
    Ok(())
}

/// `--wait-all`: each live node's report on this change, as it comes in,
/// until every one serves it (or one failed, or time is up).
fn wait_all(client: &Client, info: &faasd::api::FunctionInfo, secs: u64) -> anyhow::Result<()> {
    let Some(revision) = info.revision else {
        bail!("--wait-all: this faasd is not in a cluster (--etcd); it serves the version already");
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut heard: std::collections::BTreeMap<String, Option<String>> = Default::default();
    loop {
        let nodes = client.nodes()?;
        let statuses = client.inspect(&info.name)?.nodes;
        for s in statuses.iter().filter(|s| s.revision >= revision) {
            if heard.contains_key(&s.node) || !nodes.iter().any(|n| n.name == s.node) {
                continue;
            }
            match &s.error {
                Some(e) => println!("{}: failed: {e}", s.node),
                None if s.ready => println!("{}: serves version {}", s.node, s.version),
                None => continue,
            }
            heard.insert(s.node.clone(), s.error.clone());
        }
        let waiting: Vec<&str> = nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| !heard.contains_key(*n))
            .collect();
        if waiting.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "--wait-all: after {secs} s, {} do not serve it yet",
                waiting.join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let failed: Vec<&str> = heard
        .iter()
        .filter(|(_, e)| e.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("--wait-all: {} failed to serve it", failed.join(", "));
    }
    Ok(())
}

/// `faas deploy NAME --image REF`: faasd pulls; meanwhile its progress,
/// layer by layer (bars on a terminal, a line per layer otherwise).
fn deploy_image(
    client: &Client,
    args: &DeployArgs,
    patch: &faasd::api::OptionsPatch,
    reference: &str,
) -> anyhow::Result<()> {
    eprintln!("faasd is pulling {reference}");
    let done = std::sync::atomic::AtomicBool::new(false);
    let deployed = std::thread::scope(|s| {
        let deploying = s.spawn(|| {
            let r = client.deploy_image(&args.name, patch, reference, args.platform.as_deref());
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        });
        let mut shown = PullShown::new(std::io::stderr().is_terminal());
        let ended = || done.load(std::sync::atomic::Ordering::Relaxed);
        while !ended() {
            if let Ok(Some(p)) = client.pull_progress(&args.name) {
                shown.update(&p);
            }
            for _ in 0..15 {
                if ended() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        shown.finish();
        deploying.join()
    })
    .map_err(|_| anyhow::anyhow!("the deploy thread panicked"))?;
    let info = deployed?;
    println!(
        "deployed {} at {} (version {}){}",
        info.name,
        info.ip,
        info.version,
        pulled(&info)
    );
    for note in &info.notes {
        println!("{note}");
    }
    if args.wait_all {
        wait_all(client, &info, args.wait_timeout)?;
    }
    Ok(())
}

/// A pull as `docker pull` shows one: a bar per layer on a terminal, a
/// line per layer as it finishes (or stops) otherwise.
struct PullShown {
    bars: Option<indicatif::MultiProgress>,
    layers: Vec<(String, Option<indicatif::ProgressBar>, bool)>,
}

impl PullShown {
    fn new(terminal: bool) -> Self {
        Self {
            bars: terminal.then(indicatif::MultiProgress::new),
            layers: Vec::new(),
        }
    }

    fn update(&mut self, p: &faasd::api::PullProgress) {
        for l in &p.layers {
            let short: String = l
                .digest
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect();
            let at = match self.layers.iter().position(|(d, _, _)| *d == l.digest) {
                Some(i) => i,
                None => {
                    let bar = self.bars.as_ref().map(|m| {
                        let bar = m.add(indicatif::ProgressBar::new(l.size.max(1)));
                        bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{prefix} {wide_msg} {bytes:>10}/{total_bytes:<10}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                        bar.set_prefix(short.clone());
                        bar
                    });
                    self.layers.push((l.digest.clone(), bar, false));
                    self.layers.len() - 1
                }
            };
            let (_, bar, ended) = &mut self.layers[at];
            if *ended {
                continue;
            }
            let word = match l.state.as_str() {
                "here" => "already here",
                "done" => "pulled",
                "failed" => "failed",
                "waiting" => "waiting",
                _ => "downloading",
            };
            let finished = matches!(l.state.as_str(), "here" | "done" | "failed");
            match bar {
                Some(bar) => {
                    bar.set_position(l.bytes);
                    bar.set_message(word);
                    if finished {
                        bar.finish();
                    }
                }
                None if finished => eprintln!("{short}: {word} ({} bytes)", l.bytes),
                None => {}
            }
            *ended = finished;
        }
    }

    /// Bars of layers that never finished (the pull failed) stop where
    /// they were; finished ones stay, as docker leaves them.
    fn finish(self) {
        for (digest, bar, ended) in self.layers {
            match (bar, ended) {
                (_, true) => {}
                (Some(bar), false) => bar.abandon(),
                (None, false) => {
                    let short: String = digest
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect();
                    eprintln!("{short}: stopped");
                }
            }
        }
    }
}

/// ` from REF@DIGEST`, for a pulled version.
fn pulled(info: &faasd::api::FunctionInfo) -> String {
    info.image
        .as_ref()
        .map(|i| format!(" from {}@{}", i.reference, i.digest))
        .unwrap_or_default()
}

fn registry(client: &Client, cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Login {
            host,
            username,
            password_stdin,
        } => {
            let username = match username {
                Some(u) => u,
                None => ask_username()?,
            };
            let mut password = read_password(password_stdin)?;
            let stored = client.registry_login(&host, &username, &password);
            password.clear();
            stored?;
            println!("login for {host} stored (faasd pulls with it)");
        }
        RegistryCommand::Ls { output } => {
            let all = client.registry_list()?;
            match output {
                Format::Table => {
                    println!("{:<40} USER", "REGISTRY");
                    for l in &all {
                        println!("{:<40} {}", l.registry, l.username);
                    }
                }
                f => print!("{}", output::structured(&all, f)?),
            }
        }
        RegistryCommand::Logout { host } => {
            client.registry_logout(&host)?;
            println!("removed the login for {host}");
        }
    }
    Ok(())
}

/// The user name, asked for on the terminal.
fn ask_username() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the user name on: give it with -u USER");
    }
    eprint!("Username: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the user name")?;
    let name = line.trim().to_string();
    if name.is_empty() {
        bail!("the user name is empty");
    }
    Ok(name)
}

/// The password: standard input's first line with --password-stdin;
/// else asked for on the terminal, not echoed.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    if from_stdin {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on: pipe it in with --password-stdin");
        }
        eprint!("Password: ");
        let stdin = std::io::stdin();
        let _quiet = faasd::sys::EchoOff::new(&stdin).context("turning off the terminal's echo")?;
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password")?;
        eprintln!();
    }
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    line.clear();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
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
