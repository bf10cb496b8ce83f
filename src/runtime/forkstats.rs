//! A `--fork` zygote's counters (`faas_protocol::forkstats`): the file
//! faasd makes in the container's bundle and binds at
//! `layout::FORK_STATS`, and its reading into the function's ledger
//! (`faas inspect`'s children alive and served, `/metrics`' fork starts
//! and `faas_fork_seconds`) while the container lives. The zygote writes
//! it; what faasd reads is bounded, never trusted to be sane.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faas_protocol::forkstats as words;

/// The file's name in a bundle.
const FILE: &str = "fork.stats";

/// Makes the file in `bundle` for the zygote running as `owner` (host
/// uid, gid).
pub fn create(bundle: &Path, owner: (u32, u32)) -> io::Result<PathBuf> {
    let path = bundle.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let mut bytes = vec![0u8; words::BYTES];
    bytes[..8].copy_from_slice(&words::MAGIC.to_le_bytes());
    file.write_all(&bytes)?;
    std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))?;
    Ok(path)
}

/// What changed since the last reading.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub started: u64,
    pub ended: u64,
    pub failed: u64,
    /// Start latencies written since (at most a ring's worth).
    pub latencies: Vec<Duration>,
}

/// The readings of one zygote's file.
#[derive(Debug)]
pub struct Tally {
    file: File,
    started: u64,
    ended: u64,
    failed: u64,
    next: u64,
}

impl Tally {
    /// The readings of the file in `bundle`.
    pub fn open(bundle: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(bundle.join(FILE))?,
            started: 0,
            ended: 0,
            failed: 0,
            next: 0,
        })
    }

    /// Reads the file; what changed since the last time.
    pub fn read(&mut self) -> io::Result<Delta> {
        let mut bytes = vec![0u8; words::BYTES];
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_exact(&mut bytes)?;
        let word = |i: usize| {
            let at = i * 8;
            u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]))
        };
        if word(0) != words::MAGIC {
            return Ok(Delta::default());
        }
        // Counters only grow; one that does not is not counted.
        let step = |last: &mut u64, now: u64| {
            let d = now.saturating_sub(*last);
            *last = (*last).max(now);
            d
        };
        let started = step(&mut self.started, word(words::STARTED));
        let ended = step(&mut self.ended, word(words::ENDED));
        let failed = step(&mut self.failed, word(words::FAILED));
        let next = word(words::RING_NEXT);
        let new = next.saturating_sub(self.next).min(words::RING_LEN as u64);
        let latencies = (next - new..next)
            .map(|n| Duration::from_nanos(word(words::RING + (n as usize) % words::RING_LEN)))
            .collect();
        self.next = self.next.max(next);
        Ok(Delta {
            started,
            ended,
            failed,
            latencies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &Path, index: usize, value: u64) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        f.seek(SeekFrom::Start(index as u64 * 8)).expect("seek");
        f.write_all(&value.to_le_bytes()).expect("write");
    }

    #[test]
    fn readings_are_deltas_and_the_ring_is_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let path = create(dir.path(), owner).expect("create");
        let mut tally = Tally::open(dir.path()).expect("open");
        assert_eq!(tally.read().expect("read"), Delta::default());
        put(&path, words::STARTED, 3);
        put(&path, words::ENDED, 2);
        put(&path, words::RING, 1_000_000);
        put(&path, words::RING + 1, 2_000_000);
        put(&path, words::RING_NEXT, 2);
        let d = tally.read().expect("read");
        assert_eq!((d.started, d.ended, d.failed), (3, 2, 0));
        assert_eq!(
            d.latencies,
            [Duration::from_millis(1), Duration::from_millis(2)]
        );
        assert_eq!(tally.read().expect("read"), Delta::default());
        // A counter going back is not counted; a ring far ahead yields at
        // most one ring.
        put(&path, words::STARTED, 1);
        put(&path, words::RING_NEXT, 10_000);
        let d = tally.read().expect("read");
        assert_eq!(d.started, 0);
        assert_eq!(d.latencies.len(), words::RING_LEN);
        // Not the zygote's file at all.
        put(&path, 0, 7);
        put(&path, words::STARTED, 100);
        assert_eq!(tally.read().expect("read"), Delta::default());
    }
}
