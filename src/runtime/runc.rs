//! The OCI runtime command line (runc, or another runc-compatible CLI such
//! as crun). Argument lists are built by pure functions; `Runc` runs them
//! through the reaper, bounded in time, and reports runc's own message on
//! failure.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::oneshot;

use super::reaper::{Exit, Reaper};
use super::RuntimeError;

/// runc's log inside each bundle.
const LOG: &str = "runc.log";
/// runc itself should never take this long; past it we kill it.
const RUNC_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    reaper: Reaper,
}

/// `runc --root ROOT --log LOG --log-format json run --bundle B ID`
///
/// In the foreground: here runc starts a container ~8 ms faster than with
/// `--detach`, reaps it, and deletes it when it exits, so a finished
/// container costs no `runc delete` of ours.
pub fn run_args(root: &Path, log: &Path, bundle: &Path, id: &str) -> Vec<OsString> {
    let mut args = global(root, Some(log));
    args.push("run".into());
    args.push("--bundle".into());
    args.push(bundle.into());
    args.push(id.into());
    args
}

/// `runc --root ROOT kill ID SIGNAL`
pub fn kill_args(root: &Path, id: &str, signal: &str) -> Vec<OsString> {
    let mut args = global(root, None);
    args.extend(["kill".into(), id.into(), signal.into()]);
    args
}

/// `runc --root ROOT delete --force ID`
pub fn delete_args(root: &Path, id: &str) -> Vec<OsString> {
    let mut args = global(root, None);
    args.extend(["delete".into(), "--force".into(), id.into()]);
    args
}

fn global(root: &Path, log: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--root".into(), root.into()];
    if let Some(log) = log {
        args.extend([
            "--log".into(),
            log.into(),
            "--log-format".into(),
            "json".into(),
        ]);
    }
    args
}

/// The last `msg` runc wrote to its JSON log: the reason it failed.
pub fn last_message(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error" || v["level"] == "fatal")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}

impl Runc {
    pub fn new(binary: PathBuf, root: PathBuf, reaper: Reaper) -> Self {
        Self {
            binary,
            root,
            reaper,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts `runc run` for container `id`; the container's output goes
    /// to `stdio` (a pipe). Returns runc's pid and its future exit, which is the
    /// container's end (runc has deleted it by then).
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        stdio: OwnedFd,
    ) -> Result<(i32, oneshot::Receiver<Exit>), RuntimeError> {
        let args = run_args(&self.root, &bundle.join(LOG), bundle, id);
        let err = stdio.try_clone().map_err(|e| RuntimeError::Io {
            op: "dup output pipe",
            source: e,
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(err);
        self.reaper
            .spawn(&mut cmd)
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })
    }

    /// Why runc failed, from its log in `bundle`, if it said.
    pub fn failure(bundle: &Path) -> Option<String> {
        last_message(&std::fs::read_to_string(bundle.join(LOG)).ok()?)
    }

    /// Whether runc still has state for `id`.
    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<Exit, RuntimeError> {
        self.exec(
            kill_args(&self.root, id, signal),
            Stdio::null(),
            Stdio::null(),
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<Exit, RuntimeError> {
        self.exec(delete_args(&self.root, id), Stdio::null(), Stdio::null())
            .await
    }

    /// Container ids present in runc's state directory.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn exec(
        &self,
        args: Vec<OsString>,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Exit, RuntimeError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let (pid, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        match tokio::time::timeout(RUNC_DEADLINE, exit).await {
            Ok(Ok(exit)) => Ok(exit),
            Ok(Err(_)) => Err(RuntimeError::Lost { pid }),
            Err(_) => {
                // Our own child, so the pid cannot have been reused yet.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                Err(RuntimeError::Hung { pid })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv() {
        let args = run_args(
            Path::new("/r"),
            Path::new("/b/runc.log"),
            Path::new("/b"),
            "f-1",
        );
        let s: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let want = [
            "--root",
            "/r",
            "--log",
            "/b/runc.log",
            "--log-format",
            "json",
            "run",
            "--bundle",
            "/b",
            "f-1",
        ];
        assert_eq!(s, want);
        let s: Vec<_> = delete_args(Path::new("/r"), "f-1")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(s, ["--root", "/r", "delete", "--force", "f-1"]);
    }

    #[test]
    fn finds_runc_error_message() {
        let log = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": no such file\"}\n";
        assert_eq!(
            last_message(log).as_deref(),
            Some("exec: \"/nope\": no such file")
        );
        assert_eq!(last_message("garbage"), None);
    }
}
