//! The OCI runtime: runc, crun, or another runc-compatible command line.
//! Argument lists are pure functions; `Oci` runs them through the reaper,
//! bounded in time, and reports the runtime's own message on failure.
//!
//! A container is made in two steps: `create` (the runtime sets up the
//! namespaces, mounts, cgroups and seccomp filter and leaves the
//! container's process waiting on `exec.fifo` in its state directory,
//! then exits — the process becomes our child, see `reaper`) and start.
//! For runc and crun, faasd starts the container itself, through that
//! fifo, as their own `start` does (runc's process writes a byte into it
//! and waits for a reader; crun's waits for a byte): that saves a whole
//! runtime process (~5 ms of Go start-up for runc) per container. Once
//! the container's process has ended, runc and crun leave only their
//! state directory (and the cgroups, which are ours, see
//! `sandbox::cgroup`): faasd removes it instead of running `delete`.
//! Any other runtime gets its own `start` and `delete`.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::RuntimeError;
use super::reactor::register_owned;
use super::reaper::{Exit, Reaper};
use crate::sys::{self, Priority};

/// The runtime's log inside each bundle.
const LOG: &str = "runtime.log";
/// Where `create` writes the container's pid, inside the bundle.
const PID_FILE: &str = "pid";
const EXEC_FIFO: &str = "exec.fifo";
/// The runtime itself should never take this long; past it we kill it.
const DEADLINE: Duration = Duration::from_secs(30);

/// Which runtime the binary is, from its `--version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Runc,
    Crun,
    /// Some other OCI command line: its own `start` and `delete` are used.
    Other,
}

impl Flavor {
    /// Asks `binary --version`. Call before the reaper runs (it would reap
    /// the child from under `output`).
    pub fn detect(binary: &Path) -> io::Result<Self> {
        let out = Command::new(binary).arg("--version").output()?;
        Ok(Self::from_version(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Recognises `runc version …` and `crun version …`.
    pub fn from_version(output: &str) -> Self {
        match output.split_whitespace().next() {
            Some("runc") => Flavor::Runc,
            Some("crun") => Flavor::Crun,
            _ => Flavor::Other,
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::Runc => "runc",
            Flavor::Crun => "crun",
            Flavor::Other => "other",
        })
    }
}

/// `RUNTIME --root ROOT --log LOG --log-format json create --bundle B --pid-file P ID`
pub fn create_args(root: &Path, bundle: &Path, id: &str) -> Vec<OsString> {
    let mut args = global(root, Some(&bundle.join(LOG)));
    args.push("create".into());
    args.push("--bundle".into());
    args.push(bundle.into());
    args.push("--pid-file".into());
    args.push(bundle.join(PID_FILE).into());
    args.push(id.into());
    args
}

/// `RUNTIME --root ROOT --log LOG --log-format json start ID`
pub fn start_args(root: &Path, bundle: &Path, id: &str) -> Vec<OsString> {
    let mut args = global(root, Some(&bundle.join(LOG)));
    args.extend(["start".into(), id.into()]);
    args
}

/// `RUNTIME --root ROOT kill ID SIGNAL`
pub fn kill_args(root: &Path, id: &str, signal: &str) -> Vec<OsString> {
    let mut args = global(root, None);
    args.extend(["kill".into(), id.into(), signal.into()]);
    args
}

/// `RUNTIME --root ROOT delete --force ID`
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

/// The last error the runtime wrote to its JSON log: the reason it failed.
pub fn last_message(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error" || v["level"] == "fatal")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}

#[derive(Clone)]
pub struct Oci {
    binary: PathBuf,
    root: PathBuf,
    flavor: Flavor,
    reaper: Reaper,
}

impl Oci {
    /// The runtime at `binary` (of `flavor`), keeping its state under `root`.
    pub fn new(binary: PathBuf, flavor: Flavor, root: PathBuf, reaper: Reaper) -> Self {
        Self {
            binary,
            root,
            flavor,
            reaper,
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Starts `create` for container `id`; the container's output goes to
    /// `stdio` (a pipe). `priority` is the runtime process's (its
    /// container's process inherits it: see `Created::own`). Returns the
    /// runtime's pid and its future exit.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: OwnedFd,
        priority: Priority,
    ) -> Result<(i32, oneshot::Receiver<Exit>), RuntimeError> {
        let err = stdio.try_clone().map_err(|source| RuntimeError::Io {
            op: "dup output pipe",
            source,
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(create_args(&self.root, bundle, id))
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(err);
        let (pid, exit) = self.spawn(&mut cmd)?;
        if priority != Priority::Normal {
            // Right after the spawn: the runtime forks the container's
            // process many milliseconds later, so it inherits this.
            if let Err(e) = sys::set_priority(pid, priority) {
                tracing::debug!(pid, error = %e, "lowering the runtime's priority");
            }
        }
        Ok((pid, exit))
    }

    /// The pid of a created container's process, from the pid file.
    pub fn created_pid(bundle: &Path) -> Option<i32> {
        std::fs::read_to_string(bundle.join(PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Lets created container `id` run its process.
    pub async fn start(&self, id: &str, bundle: &Path) -> Result<(), RuntimeError> {
        let fifo = self.root.join(id).join(EXEC_FIFO);
        match self.flavor {
            Flavor::Runc => read_fifo(&fifo).await,
            Flavor::Crun => write_fifo(&fifo),
            Flavor::Other => {
                let exit = self.exec(start_args(&self.root, bundle, id)).await?;
                if exit.success() {
                    return Ok(());
                }
                Err(io::Error::other(format!("start: {exit}")))
            }
        }
        .map_err(|e| RuntimeError::Start {
            id: id.to_string(),
            reason: Self::failure(bundle).unwrap_or_else(|| e.to_string()),
        })
    }

    /// Why the runtime failed, from its log in `bundle`, if it said.
    pub fn failure(bundle: &Path) -> Option<String> {
        last_message(&std::fs::read_to_string(bundle.join(LOG)).ok()?)
    }

    /// Whether the runtime still has state for `id`.
    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<Exit, RuntimeError> {
        self.exec(kill_args(&self.root, id, signal)).await
    }

    /// Removes container `id`, whatever its state (the runtime's `delete`).
    pub async fn delete(&self, id: &str) -> Result<Exit, RuntimeError> {
        self.exec(delete_args(&self.root, id)).await
    }

    /// Forgets container `id`, whose process has ended: runc and crun keep
    /// nothing but their state directory then (the cgroups are ours to
    /// remove); others are asked to `delete`. Blocking (file removal).
    pub fn forget_ended(&self, id: &str) -> io::Result<bool> {
        if self.flavor == Flavor::Other {
            return Ok(false);
        }
        match std::fs::remove_dir_all(self.root.join(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Container ids present in the runtime's state directory.
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

    fn spawn(&self, cmd: &mut Command) -> Result<(i32, oneshot::Receiver<Exit>), RuntimeError> {
        self.reaper
            .spawn(cmd)
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })
    }

    /// Runs the runtime with `args` to its end (killed past `DEADLINE`).
    async fn exec(&self, args: Vec<OsString>) -> Result<Exit, RuntimeError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (pid, exit) = self.spawn(&mut cmd)?;
        wait_bounded(pid, exit).await
    }
}

/// Waits for process `pid` (ours) to end, killing it past `DEADLINE`.
pub async fn wait_bounded(pid: i32, exit: oneshot::Receiver<Exit>) -> Result<Exit, RuntimeError> {
    match tokio::time::timeout(DEADLINE, exit).await {
        Ok(Ok(exit)) => Ok(exit),
        Ok(Err(_)) => Err(RuntimeError::Lost { pid }),
        Err(_) => {
            // Our own unreaped child, so the pid cannot have been reused.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(RuntimeError::Hung { pid })
        }
    }
}

/// runc's start: the container's process opens the fifo for writing
/// (blocking until a reader comes), writes one byte and executes. Opened
/// without blocking, the fifo reports readable only once that byte is in;
/// a read of nothing means the process died first.
async fn read_fifo(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let fifo = register_owned(file)?;
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut ready = fifo.readable().await?;
            let mut byte = [0u8; 1];
            match ready.try_io(|f| f.get_ref().read(&mut byte)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    })
    .await
    .map_err(|_| io::Error::other("the container's process never became ready"))??;
    if got == 0 {
        return Err(io::Error::other(
            "the container's process ended before its start",
        ));
    }
    // What tells runc (and `runc state`) that the container was started.
    std::fs::remove_file(path)
}

/// crun's start: the container's process holds the fifo open for reading
/// and waits for one byte (no reader: it died, ENXIO).
fn write_fifo(path: &Path) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    std::fs::remove_file(path)?;
    file.write_all(&[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn argv() {
        let want = [
            "--root",
            "/r",
            "--log",
            "/b/runtime.log",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/pid",
            "f-1",
        ];
        assert_eq!(
            strings(create_args(Path::new("/r"), Path::new("/b"), "f-1")),
            want
        );
        assert_eq!(
            strings(delete_args(Path::new("/r"), "f-1")),
            ["--root", "/r", "delete", "--force", "f-1"]
        );
        assert_eq!(
            strings(start_args(Path::new("/r"), Path::new("/b"), "f-1"))[6..],
            ["start", "f-1"]
        );
    }

    #[test]
    fn knows_runc_and_crun() {
        assert_eq!(
            Flavor::from_version("runc version 1.1.5\ncommit: v1.1.5"),
            Flavor::Runc
        );
        assert_eq!(
            Flavor::from_version("crun version 1.8.1\ncommit: 1"),
            Flavor::Crun
        );
        assert_eq!(Flavor::from_version("youki version 0.3"), Flavor::Other);
        assert_eq!(Flavor::from_version(""), Flavor::Other);
    }

    #[test]
    fn finds_the_runtime_error_message() {
        let log = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": no such file\"}\n";
        assert_eq!(
            last_message(log).as_deref(),
            Some("exec: \"/nope\": no such file")
        );
        assert_eq!(last_message("garbage"), None);
    }
}
