//! Handler output: each container's stdout and stderr come through a pipe,
//! are split into lines and written to the function's log tagged with the
//! time, the version and the container (one container per connection,
//! except in reuse mode); faasd's own lines about the function (starts
//! that failed, exits, timeouts) go there too, tagged `faasd`. The log is a bounded ring on disk: past `MAX_BYTES` the file
//! becomes `NAME.log.1` (replacing the older one) and a new one starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Size of the current log file before it is rotated.
pub const MAX_BYTES: u64 = 4 << 20;
/// Longer lines are cut (a handler printing without newlines cannot make
/// us buffer without bound).
const MAX_LINE: usize = 16 << 10;

/// The log of one function, shared by all its versions and containers.
#[derive(Debug)]
pub struct LogSink {
    path: PathBuf,
    state: Mutex<Sink>,
}

#[derive(Debug)]
struct Sink {
    file: File,
    size: u64,
}

impl LogSink {
    pub fn open(path: PathBuf) -> io::Result<Arc<Self>> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Arc::new(Self {
            path,
            state: Mutex::new(Sink { file, size }),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotated-out older part of the ring.
    pub fn previous(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Appends one line of `source` (a container, or faasd) about version
    /// `version`.
    pub fn line(&self, version: u64, source: &str, text: &str) {
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let record = format!("{stamp} v{version} {source} | {text}\n");
        let mut sink = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if sink.size + record.len() as u64 > MAX_BYTES {
            if let Err(e) = self.rotate(&mut sink) {
                tracing::warn!(path = %self.path.display(), error = %e, "rotating log");
            }
        }
        if sink.file.write_all(record.as_bytes()).is_ok() {
            sink.size += record.len() as u64;
        }
    }

    fn rotate(&self, sink: &mut Sink) -> io::Result<()> {
        std::fs::rename(&self.path, Self::previous(&self.path))?;
        sink.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        sink.size = 0;
        Ok(())
    }
}

/// A pipe for a container's stdout and stderr: the write end goes to runc,
/// the read end to `collect`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Copies the container's output into the log until every writer is gone.
pub async fn collect(read: OwnedFd, sink: Arc<LogSink>, version: u64, container: String) {
    let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else {
        return;
    };
    let mut reader = BufReader::new(rx);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        sink.line(version, &container, text.trim_end_matches(['\n', '\r']));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = LogSink::open(dir.path().join("f.log")).expect("open");
        let line = "x".repeat(1000);
        for _ in 0..(MAX_BYTES / 1000 + 100) {
            sink.line(3, "f-1", &line);
        }
        let current = std::fs::metadata(sink.path()).expect("current").len();
        let previous = std::fs::metadata(LogSink::previous(sink.path()))
            .expect("previous")
            .len();
        assert!(
            current <= MAX_BYTES && previous <= MAX_BYTES,
            "{current} {previous}"
        );
        assert!(current > 0 && previous > MAX_BYTES / 2);
        let text = std::fs::read_to_string(sink.path()).expect("read");
        assert!(text.lines().all(|l| l.contains(" v3 f-1 | ")));
    }
}
