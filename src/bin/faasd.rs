//! `faasd`: parse the command line, set up logging, run the daemon.

use std::io::IsTerminal;

use faasd::config::{Args, LogFormat};

fn main() -> std::process::ExitCode {
    let args = match Args::load(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faasd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let printed = args.print_config.then(|| args.to_toml());
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faasd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match printed {
        Some(Ok(toml)) => {
            print!("{toml}");
            return std::process::ExitCode::SUCCESS;
        }
        Some(Err(e)) => {
            eprintln!("faasd: printing the configuration: {e}");
            return std::process::ExitCode::FAILURE;
        }
        None => {}
    }
    // Still one thread: the environment may change safely.
    let notifier = match faasd::sys::notify::Notifier::take_from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("faasd: NOTIFY_SOCKET: {e}");
            None
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAASD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or
    // the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match faasd::daemon::run(config, notifier) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Our errors' messages already name their cause (down to the OS
            // error); walking `source()` as well would print it twice.
            eprintln!("faasd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
