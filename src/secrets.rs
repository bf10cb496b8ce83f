//! Secrets: values stored root-only (`<state>/secrets`, 0700, files 0600)
//! and never handed back by any API; and their delivery to a function's
//! version: a directory on faasd's own tmpfs (`<state>/secrets-run`),
//! owned by the function's user and bind-mounted read-only at
//! `/run/secrets`, plus the values as environment variables.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::api::{check_secret_name, SecretRef};

/// Largest secret value accepted.
pub const MAX_BYTES: usize = 64 << 10;
const STORE: &str = "secrets";
const RUN: &str = "secrets-run";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no secret named {0}")]
    NotFound(String),
    #[error("secret {0} exists: remove it first, or create it with --replace")]
    Exists(String),
    #[error("secret values are at most {MAX_BYTES} bytes (got {0})")]
    TooLarge(usize),
    #[error("the secret is empty")]
    Empty,
    #[error("secret {name} is used by {}: deploy them without it first", by.join(", "))]
    InUse { name: String, by: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error("secret {name} holds a NUL byte or is not UTF-8, so it cannot be ${env}: give it as a file only (--secret {name}=)")]
    NotText { name: String, env: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SecretError + 'a {
    move |source| SecretError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A stored secret's description (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub created_at: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct SecretStore {
    dir: PathBuf,
    run: PathBuf,
    /// Whether the tmpfs is mounted (at the first delivery).
    mounted: Mutex<bool>,
}

impl SecretStore {
    /// The store under `state`; a tmpfs a crashed run left is unmounted
    /// (its values were that run's).
    pub fn open(state: &Path) -> Result<Arc<Self>, SecretError> {
        let dir = state.join(STORE);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &dir))?;
        let run = state.join(RUN);
        let _ = umount2(&run, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&run);
        Ok(Arc::new(Self {
            dir,
            run,
            mounted: Mutex::new(false),
        }))
    }

    pub fn create(&self, name: &str, value: &[u8], replace: bool) -> Result<(), SecretError> {
        check_secret_name(name).map_err(SecretError::Invalid)?;
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if value.len() > MAX_BYTES {
            return Err(SecretError::TooLarge(value.len()));
        }
        let path = self.dir.join(name);
        if path.exists() && !replace {
            return Err(SecretError::Exists(name.into()));
        }
        crate::sys::fs::write_private(&path, value).map_err(io_err("writing", &path))
    }

    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        check_secret_name(name).map_err(SecretError::Invalid)?;
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SecretError::NotFound(name.into()))
            }
            other => other.map_err(io_err("removing", &path)),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        check_secret_name(name).is_ok() && self.dir.join(name).is_file()
    }

    pub fn list(&self) -> Result<Vec<Stored>, SecretError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_secret_name(&name).is_err() {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(io_err("inspecting", &entry.path()))?;
            out.push(Stored {
                name,
                created_at: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                bytes: meta.len(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn value(&self, name: &str) -> Result<Vec<u8>, SecretError> {
        let path = self.dir.join(name);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SecretError::NotFound(name.into()),
            _ => SecretError::Io {
                op: "reading",
                path,
                source: e,
            },
        })
    }

    /// Checks that every secret `refs` names exists and fits its variable.
    pub fn check(&self, refs: &[SecretRef]) -> Result<(), SecretError> {
        for r in refs {
            let value = self.value(&r.name)?;
            if !r.env.is_empty() && text(&value).is_none() {
                return Err(SecretError::NotText {
                    name: r.name.clone(),
                    env: r.env.clone(),
                });
            }
        }
        Ok(())
    }

    /// The secrets of one function version as its containers get them:
    /// files owned by `owner` (host uid, gid) in a fresh directory on the
    /// tmpfs, and the environment.
    pub fn deliver(
        &self,
        key: &str,
        refs: &[SecretRef],
        owner: (u32, u32),
    ) -> Result<Delivered, SecretError> {
        self.mount()?;
        let dir = self.run.join(key);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let delivered = Delivered {
            dir: dir.clone(),
            env: Vec::new(),
        };
        let mut delivered = delivered;
        for r in refs {
            let value = self.value(&r.name)?;
            let file = dir.join(&r.name);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&file)
                .map_err(io_err("creating", &file))?;
            f.write_all(&value).map_err(io_err("writing", &file))?;
            chown(&file, owner)?;
            if !r.env.is_empty() {
                let text = text(&value).ok_or_else(|| SecretError::NotText {
                    name: r.name.clone(),
                    env: r.env.clone(),
                })?;
                delivered.env.push((r.env.clone(), text.to_string()));
            }
        }
        chown(&dir, owner)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500))
            .map_err(io_err("chmod", &dir))?;
        Ok(delivered)
    }

    /// Mounts the tmpfs the first time a secret is delivered.
    fn mount(&self) -> Result<(), SecretError> {
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if *mounted {
            return Ok(());
        }
        fs::create_dir_all(&self.run).map_err(io_err("creating", &self.run))?;
        mount(
            Some("faasd-secrets"),
            &self.run,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            // Containers pass through to their own directory, list nothing.
            Some("mode=0711,size=16m"),
        )
        .map_err(|e| io_err("mounting a tmpfs on", &self.run)(e.into()))?;
        *mounted = true;
        Ok(())
    }

    /// Unmounts the tmpfs (at shutdown): the values leave memory.
    pub fn close(&self) {
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if *mounted {
            if let Err(e) = umount2(&self.run, MntFlags::MNT_DETACH) {
                tracing::warn!(path = %self.run.display(), error = %e, "unmounting the secrets tmpfs");
            }
            let _ = fs::remove_dir(&self.run);
            *mounted = false;
        }
    }
}

fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.contains('\0'))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), SecretError> {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| io_err("chown", path)(e.into()))
}

/// One version's delivered secrets; the directory goes with the last
/// container that could mount it.
#[derive(Debug)]
pub struct Delivered {
    pub dir: PathBuf,
    /// `(VARIABLE, value)`: never log these.
    pub env: Vec<(String, String)>,
}

impl Drop for Delivered {
    fn drop(&mut self) {
        // The directory is 0500 and its files 0400: root removes them anyway.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_lists_and_refuses() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open(state.path()).expect("open");
        store.create("db", b"hunter2", false).expect("create");
        assert!(matches!(
            store.create("db", b"again", false),
            Err(SecretError::Exists(_))
        ));
        store.create("db", b"hunter3", true).expect("replace");
        assert!(matches!(
            store.create("../x", b"v", false),
            Err(SecretError::Invalid(_))
        ));
        assert!(matches!(
            store.create("e", b"", false),
            Err(SecretError::Empty)
        ));
        assert!(matches!(
            store.create("big", &vec![b'x'; MAX_BYTES + 1], false),
            Err(SecretError::TooLarge(_))
        ));
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].bytes), ("db", 7));
        let mode = fs::metadata(state.path().join("secrets/db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store.create("key", b"\0binary", false).expect("binary");
        let as_env = SecretRef {
            name: "key".into(),
            env: "KEY".into(),
        };
        assert!(matches!(
            store.check(&[as_env]),
            Err(SecretError::NotText { .. })
        ));
        store.remove("db").expect("remove");
        assert!(matches!(store.remove("db"), Err(SecretError::NotFound(_))));
    }
}
