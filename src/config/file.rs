//! The config file: its keys become flags placed before the command
//! line's (which therefore win), and `--print-config` writes them back.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};

use super::{Args, DEFAULT_CONFIG};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
