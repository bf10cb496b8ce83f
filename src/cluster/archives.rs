//! Image archives kept by digest (`<state>/archives/<sha256>.tar`): the
//! node a deploy came through keeps the upload, peers fetch it from a
//! holder's control API and keep it after checking its digest, and an
//! archive no function of the cluster needs any more goes.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::client::Client;

/// Archives of this node.
#[derive(Debug, Clone)]
pub struct Archives {
    dir: PathBuf,
}

/// Whether `digest` looks like what `digest_of` returns (64 lower-case
/// hex digits): nothing else names a file here.
pub fn valid_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The sha256 of the file at `path`, hex.
pub fn digest_of(path: &Path) -> io::Result<String> {
    copy_hashing(&mut fs::File::open(path)?, &mut io::sink())
}

/// Copies `from` to `to`; returns the sha256 of what went, hex.
fn copy_hashing(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Archives {
    pub fn open(state: &Path) -> io::Result<Self> {
        let dir = state.join("archives");
        crate::sys::fs::create_private_dir(&dir)?;
        // Fetches a crash interrupted.
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "part") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir })
    }

    /// Where archive `digest` is (whether or not it is here).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.tar"))
    }

    pub fn has(&self, digest: &str) -> bool {
        valid_digest(digest) && self.path(digest).is_file()
    }

    /// Keeps the upload at `upload` (a hard link: the upload directory is
    /// on the same file system) and returns its digest.
    pub fn keep(&self, upload: &Path) -> io::Result<String> {
        let digest = digest_of(upload)?;
        let dest = self.path(&digest);
        if !dest.exists() {
            let tmp = self.dir.join(format!("{digest}.part"));
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(upload, &tmp).is_err() {
                fs::copy(upload, &tmp)?;
            }
            fs::rename(&tmp, &dest)?;
        }
        Ok(digest)
    }

    /// The digests held here.
    pub fn held(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digest = name.strip_suffix(".tar")?;
                valid_digest(digest).then(|| digest.to_string())
            })
            .collect()
    }

    /// Deletes every archive not in `keep`; returns the digests deleted.
    pub fn retain(&self, keep: &HashSet<String>) -> Vec<String> {
        let mut gone = Vec::new();
        for digest in self.held() {
            if !keep.contains(&digest) && fs::remove_file(self.path(&digest)).is_ok() {
                gone.push(digest);
            }
        }
        gone
    }

    /// Fetches `digest` from the first of `peers` (control API URLs) that
    /// has it, presenting `credential` (`seal::Seal::credential`), checks
    /// the digest, and keeps it. Blocking.
    pub fn fetch(
        &self,
        digest: &str,
        peers: &[String],
        credential: &str,
    ) -> Result<PathBuf, String> {
        if !valid_digest(digest) {
            return Err(format!("{digest:?} is not an archive digest"));
        }
        if self.has(digest) {
            return Ok(self.path(digest));
        }
        let mut why = vec![];
        for url in peers {
            match self.fetch_from(digest, url, credential) {
                Ok(path) => return Ok(path),
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        if why.is_empty() {
            why.push("no live node holds it".into());
        }
        Err(why.join("; "))
    }

    fn fetch_from(&self, digest: &str, url: &str, credential: &str) -> Result<PathBuf, String> {
        let client = Client::new(url);
        let mut body = client
            .archive(digest, credential)
            .map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!("{digest}.part"));
        let copied = fs::File::create(&tmp).and_then(|mut out| {
            let got = copy_hashing(&mut body, &mut out)?;
            out.sync_all()?;
            Ok(got)
        });
        let got = match copied {
            Ok(got) => got,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.to_string());
            }
        };
        if got != digest {
            let _ = fs::remove_file(&tmp);
            return Err(format!("sent an archive whose digest is {got}"));
        }
        let dest = self.path(digest);
        fs::rename(&tmp, &dest).map_err(|e| e.to_string())?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_uploads_by_digest_and_lets_go_of_the_rest() {
        let state = tempfile::tempdir().expect("tempdir");
        let archives = Archives::open(state.path()).expect("open");
        let upload = state.path().join("upload.tar");
        fs::write(&upload, b"abc").expect("write");
        let digest = archives.keep(&upload).expect("keep");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_file(&upload).expect("the upload goes");
        assert!(archives.has(&digest));
        assert_eq!(archives.held(), vec![digest.clone()]);
        assert!(!archives.has("../upload"));
        assert!(archives.retain(&HashSet::from([digest.clone()])).is_empty());
        assert_eq!(archives.retain(&HashSet::new()), vec![digest.clone()]);
        assert!(!archives.has(&digest));
    }

    #[test]
    fn a_fetch_from_nobody_says_so() {
        let state = tempfile::tempdir().expect("tempdir");
        let archives = Archives::open(state.path()).expect("open");
        let err = archives
            .fetch(&"0".repeat(64), &[], "")
            .expect_err("nobody");
        assert!(err.contains("no live node"), "{err}");
        assert!(archives.fetch("nope", &[], "").is_err());
    }
}
