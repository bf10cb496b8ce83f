//! The last revision `faas` saw of each cluster, kept in the user's state
//! directory so that a change made through one node is seen by the next
//! read through any other, by this `faas` or the next: every request
//! carries it (`X-Faas-Min-Revision`, with the cluster's id in
//! `X-Faas-Cluster`) and every answer may raise it. Which cluster a URL
//! belongs to is learnt from its answers; a URL not heard from yet is
//! assumed to be in the cluster heard from last (a node ignores another
//! cluster's revision). Best effort: a state directory that cannot be
//! written loses the guarantee, never the request.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

const FILE: &str = "revisions.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    /// Cluster id → the highest revision seen of it.
    #[serde(default)]
    clusters: BTreeMap<String, i64>,
    /// URL → the cluster it answered for.
    #[serde(default)]
    urls: BTreeMap<String, String>,
    /// The cluster heard from last.
    #[serde(default)]
    last: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Revisions {
    path: PathBuf,
}

impl Revisions {
    /// Kept in `dir` (made if missing).
    pub fn at(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE),
        }
    }

    /// `$FAAS_STATE_DIR`, else `$XDG_STATE_HOME/faas`, else
    /// `~/.local/state/faas`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("FAAS_STATE_DIR")
            .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("faas")))
            .or_else(|| env("HOME").map(|h| h.join(".local/state/faas")))
    }

    /// The cluster and revision a request to `url` carries, if any.
    pub fn for_url(&self, url: &str) -> Option<(String, i64)> {
        let seen = self.read()?;
        let cluster = seen.urls.get(url).or(seen.last.as_ref())?;
        Some((cluster.clone(), *seen.clusters.get(cluster)?))
    }

    /// What an answer from `url` said: its cluster, and the revision it
    /// reflects.
    pub fn saw(&self, url: &str, cluster: &str, revision: i64) {
        let _ = self.update(|seen| {
            let known = seen.clusters.entry(cluster.to_string()).or_default();
            *known = (*known).max(revision);
            seen.urls.insert(url.to_string(), cluster.to_string());
            seen.last = Some(cluster.to_string());
        });
    }

    fn read(&self) -> Option<Seen> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Read, change and write back under a lock: two `faas` at once keep
    /// the higher revision.
    fn update(&self, change: impl FnOnce(&mut Seen)) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let mut file: Flock<File> =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut seen: Seen = serde_json::from_str(&text).unwrap_or_default();
        change(&mut seen);
        let out = serde_json::to_vec_pretty(&seen).map_err(std::io::Error::other)?;
        file.rewind()?;
        file.set_len(0)?;
        file.write_all(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_not_heard_from_carries_the_last_cluster_and_revisions_only_rise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Revisions::at(&dir.path().join("state"));
        assert_eq!(r.for_url("http://a"), None);
        r.saw("http://a", "c1", 40);
        r.saw("http://a", "c1", 30);
        assert_eq!(r.for_url("http://a"), Some(("c1".into(), 40)));
        assert_eq!(r.for_url("http://b"), Some(("c1".into(), 40)));
        r.saw("http://x", "c2", 7);
        assert_eq!(r.for_url("http://a"), Some(("c1".into(), 40)));
        assert_eq!(r.for_url("http://b"), Some(("c2".into(), 7)));
    }
}
