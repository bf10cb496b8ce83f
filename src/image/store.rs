//! The rootfs store: one directory per deployed version of a function under
//! `<state>/rootfs`. A deploy unpacks into a staging directory and renames
//! it into place only when complete, so an interrupted or failed deploy
//! leaves the previous version untouched; start-up sweeps what is not in
//! the registry.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::fsops::{self, Root};
use super::ImageError;

const STAGING_PREFIX: &str = ".staging-";
/// Mount points runc needs; created at deploy so the read-only rootfs is
/// never written when a container starts.
const MOUNT_DIRS: &[&str] = &["proc", "dev", "sys", "tmp"];
pub const CONTROL_SOCK: &str = "control.sock";
/// Where `faas-init` is bind-mounted in containers of the image kinds that
/// need it.
pub const INIT: &str = ".faas-init";
/// Files the runtime bind-mounts over: created at deploy, so the
/// read-only rootfs is never written at container start.
const MOUNT_FILES: &[&str] = &[CONTROL_SOCK, INIT];

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A directory being filled; removed on drop unless committed.
pub struct Staging {
    path: Option<PathBuf>,
}

fn store_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Store {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    pub fn open(dir: PathBuf) -> Result<Self, ImageError> {
        fs::create_dir_all(&dir).map_err(store_err("creating", &dir))?;
        // Containers (unprivileged host ids) pass through to their rootfs.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(store_err("chmod", &dir))?;
        Ok(Self { dir })
    }

    /// Where version `version` of `name` lives.
    pub fn path(&self, name: &str, version: u64) -> PathBuf {
        self.dir.join(format!("{name}-v{version}"))
    }

    pub fn staging(&self, name: &str) -> Result<Staging, ImageError> {
        let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!(
            "{STAGING_PREFIX}{name}-{}-{seq}",
            std::process::id()
        ));
        fs::create_dir(&path).map_err(store_err("creating", &path))?;
        Ok(Staging { path: Some(path) })
    }

    /// Moves a fully unpacked staging directory into place as `version`.
    pub fn commit(
        &self,
        mut staging: Staging,
        name: &str,
        version: u64,
    ) -> Result<PathBuf, ImageError> {
        let from = staging
            .path
            .take()
            .ok_or_else(|| ImageError::Invalid("staging already used".into()))?;
        let to = self.path(name, version);
        if to.exists() {
            fs::remove_dir_all(&to).map_err(store_err("removing", &to))?;
        }
        prepare_mountpoints(&from)?;
        fs::rename(&from, &to).map_err(store_err("renaming", &from))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(store_err("syncing", &self.dir))?;
        Ok(to)
    }

    /// Removes every directory not in `keep`: staging leftovers of a crash
    /// and versions that were replaced.
    pub fn sweep(&self, keep: &HashSet<PathBuf>) -> Result<usize, ImageError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(store_err("listing", &self.dir))? {
            let path = entry.map_err(store_err("listing", &self.dir))?.path();
            if !keep.contains(&path) {
                remove_tree(&path).map_err(store_err("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing staging directory");
            }
        }
    }
}

pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where a function's secrets are mounted.
pub const SECRETS_DIR: &str = "run/secrets";

/// Creates `/run/secrets` in a rootfs committed before secrets existed
/// (symlinks resolved inside the rootfs, as everywhere here).
pub fn ensure_secrets_mountpoint(rootfs: &Path) -> Result<(), ImageError> {
    let root = Root::open(rootfs).map_err(store_err("opening", rootfs))?;
    root.ensure_dir(Path::new(SECRETS_DIR))
        .map(drop)
        .map_err(store_err("creating", &rootfs.join(SECRETS_DIR)))
}

fn prepare_mountpoints(rootfs: &Path) -> Result<(), ImageError> {
    let root = Root::open(rootfs).map_err(store_err("opening", rootfs))?;
    let top = root
        .open_dir(Path::new(""))
        .map_err(store_err("opening", rootfs))?;
    for dir in MOUNT_DIRS {
        let name = std::ffi::OsStr::new(dir);
        if fsops::lookup(&top, name)
            .map_err(store_err("inspecting", &rootfs.join(dir)))?
            .is_none()
        {
            fsops::mkdir(&top, name).map_err(store_err("creating", &rootfs.join(dir)))?;
            // runc 1.1 gives a tmpfs the mode of its mount point, ignoring
            // `mode=`: /tmp must be world-writable here already.
            let mode = if *dir == "tmp" { 0o1777 } else { 0o755 };
            fsops::chmod_dir(&top, name, mode).map_err(store_err("chmod", &rootfs.join(dir)))?;
        }
    }
    for file in MOUNT_FILES {
        let name = std::ffi::OsStr::new(file);
        fsops::remove(&top, name).map_err(store_err("replacing", &rootfs.join(file)))?;
        fsops::create_file(&top, name, 0o644).map_err(store_err("creating", &rootfs.join(file)))?;
    }
    ensure_secrets_mountpoint(rootfs)?;
    let meta = fs::metadata(rootfs).map_err(store_err("inspecting", rootfs))?;
    let mut perms = meta.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(rootfs, perms).map_err(store_err("chmod", rootfs))
}
