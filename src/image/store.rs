//! The rootfs store: one directory per deployed version of a function under
//! `<state>/rootfs`. A deploy unpacks into a staging directory and renames
//! it into place only when complete, so an interrupted or failed deploy
//! leaves the previous version untouched; start-up sweeps what is not in
//! the registry. Where the kernel can id-map overlayfs layers, a version's
//! directory is only a mount point: its rootfs is composed from the shared
//! layer store (`layers.rs`) instead of being a copy of its own.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::archive::{self, Image, Unpacked};
use super::fsops::{self, Root};
use faas_protocol::layout;

use super::layers::Layers;
use super::staging::{self, store_err};
use super::{overlay, ImageError, Limits};
use crate::sys::fs::remove_tree;

/// Mount points runc needs; created at deploy so the read-only rootfs is
/// never written when a container starts.
const MOUNT_DIRS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "tmp",
    layout::in_rootfs(layout::IMAGE),
];
/// The control socket's mount point (`faas_protocol::layout`).
pub const CONTROL_SOCK: &str = layout::in_rootfs(layout::CONTROL_SOCKET);
/// Where `faas-init` is bind-mounted in containers of the image kinds that
/// need it.
pub const INIT: &str = layout::in_rootfs(layout::FAAS_INIT);
/// Files the runtime bind-mounts over: created at deploy, so the
/// read-only rootfs is never written at container start.
const MOUNT_FILES: &[&str] = &[CONTROL_SOCK, INIT];

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    layers: Option<Arc<Layers>>,
    /// New versions are unpacked into copies of their own even where they
    /// could share layers (`--copy-layers`; earlier ones stay as made).
    copy: bool,
}

/// A version's rootfs being made; removed on drop unless committed, with
/// its claim on the layers it reserved.
pub struct Staging {
    dir: staging::Dir,
    reserved: Option<Arc<Layers>>,
}

impl Store {
    pub fn open(dir: PathBuf) -> Result<Self, ImageError> {
        fs::create_dir_all(&dir).map_err(store_err("creating", &dir))?;
        // Containers (unprivileged host ids) pass through to their rootfs.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(store_err("chmod", &dir))?;
        Ok(Self {
            dir,
            layers: None,
            copy: false,
        })
    }

    /// Composes versions from the shared layer store at `layers` from now
    /// on, if this kernel can (detached, id-mapped overlayfs layers: Linux
    /// 6.15+); says why not otherwise, and versions stay copies of their
    /// own.
    pub fn share_layers(&mut self, layers: PathBuf) -> Result<(), ImageError> {
        let layers = Layers::open(layers)?;
        let probe = self.dir.join(format!("{}probe", staging::PREFIX));
        let _ = overlay::unmount(&probe);
        let _ = remove_tree(&probe);
        fs::create_dir(&probe).map_err(store_err("creating", &probe))?;
        let stack = layers.stack_of(std::iter::empty());
        let stack: Vec<&Path> = stack.iter().map(PathBuf::as_path).collect();
        let composed = overlay::compose(&probe, &stack, Some(super::owners::base(0)), None);
        let _ = overlay::unmount(&probe);
        let _ = fs::remove_dir(&probe);
        composed.map_err(store_err("composing a rootfs from layers", &probe))?;
        self.layers = Some(Arc::new(layers));
        Ok(())
    }

    /// Unpacks new versions into copies of their own, owned by their
    /// function's ids: a container's path lookups then skip the id-mapped
    /// layers, which overlayfs walks slowly (docs/performance.md).
    pub fn copy_new_versions(&mut self) {
        self.copy = true;
    }

    /// The shared layer store, when versions are composed from it.
    pub fn layers(&self) -> Option<&Arc<Layers>> {
        self.layers.as_ref()
    }

    /// The layer store new versions are composed from, if they are.
    pub fn shared_layers(&self) -> Option<&Arc<Layers>> {
        self.layers.as_ref().filter(|_| !self.copy)
    }

    /// Claims the layers `hexes` (chain ids) for `staging` before a pull
    /// looks at which of them the store has, so none is collected between
    /// that look and the unpack (a removed function's layers go a moment
    /// after `rm` answers).
    pub fn reserve(&self, staging: &mut Staging, hexes: &[String]) -> Result<(), ImageError> {
        if let Some(layers) = self.shared_layers() {
            layers.reserve(&staging.key(), hexes)?;
            staging.reserved = Some(Arc::clone(layers));
        }
        Ok(())
    }

    /// Unpacks `image` for `staging`: into it, or into the layer store
    /// (what it lacks) with the image's user read from the layers composed
    /// at `staging` for a moment.
    pub fn unpack(
        &self,
        image: Image,
        staging: &mut Staging,
        limits: &Limits,
    ) -> Result<Unpacked, ImageError> {
        let Some(layers) = self.shared_layers() else {
            return archive::unpack_into(image, staging.path(), limits);
        };
        let key = staging.key();
        let mut unpacked = archive::unpack_layers(
            image,
            layers,
            |hexes| {
                layers.reserve(&key, hexes)?;
                staging.reserved = Some(Arc::clone(layers));
                Ok(())
            },
            limits,
        )?;
        layers.sync()?;
        let stack = layers
            .stack(&key)?
            .ok_or_else(|| ImageError::Invalid("reserved layers vanished".into()))?;
        let stack: Vec<&Path> = stack.iter().map(PathBuf::as_path).collect();
        let at = staging.path();
        overlay::compose(at, &stack, None, None).map_err(store_err("composing", at))?;
        let resolved = Root::open(at)
            .map_err(store_err("opening", at))
            .and_then(|root| archive::resolve_user(&mut unpacked.config, &root));
        overlay::unmount(at).map_err(store_err("unmounting", at))?;
        resolved.map(|()| unpacked)
    }

    /// Where version `version` of `name` lives.
    pub fn path(&self, name: &str, version: u64) -> PathBuf {
        self.dir.join(format!("{name}-v{version}"))
    }

    pub fn staging(&self, name: &str) -> Result<Staging, ImageError> {
        Ok(Staging {
            dir: staging::Dir::new_in(&self.dir, name)?,
            reserved: None,
        })
    }

    /// Moves a fully unpacked staging directory into place as `version`;
    /// one made of shared layers is then composed there, seen through the
    /// id map at `id_base`.
    pub fn commit(
        &self,
        mut staging: Staging,
        name: &str,
        version: u64,
        id_base: u32,
    ) -> Result<PathBuf, ImageError> {
        let key = staging.key();
        let layered = staging.reserved.take();
        let from = staging.keep();
        let to = self.path(name, version);
        remove_rootfs(&to, None).map_err(store_err("removing", &to))?;
        if layered.is_none() {
            prepare_mountpoints(&from)?;
        }
        fs::rename(&from, &to).map_err(store_err("renaming", &from))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(store_err("syncing", &self.dir))?;
        if let Some(layers) = layered {
            layers.rename(&key, &rootfs_key(&to))?;
            if let Err(e) = self.mount(&to, id_base) {
                let _ = remove_rootfs(&to, Some(&layers));
                return Err(e);
            }
        }
        Ok(to)
    }

    /// Composes the rootfs at `path` from its layers (again: whatever is
    /// mounted there goes first), if it is made of shared layers.
    pub fn mount(&self, path: &Path, id_base: u32) -> Result<(), ImageError> {
        let Some(layers) = &self.layers else {
            return Ok(());
        };
        let Some(stack) = layers.stack(&rootfs_key(path))? else {
            return Ok(());
        };
        overlay::unmount(path).map_err(store_err("unmounting", path))?;
        match fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(store_err("creating", path)(e))
            }
            _ => {}
        }
        let stack: Vec<&Path> = stack.iter().map(PathBuf::as_path).collect();
        overlay::compose(path, &stack, Some(id_base), None).map_err(store_err("composing", path))
    }

    /// Removes every directory not in `keep`: staging leftovers of a crash
    /// and versions that were replaced; then the layers only they used.
    pub fn sweep(&self, keep: &HashSet<PathBuf>) -> Result<usize, ImageError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(store_err("listing", &self.dir))? {
            let path = entry.map_err(store_err("listing", &self.dir))?.path();
            if !keep.contains(&path) {
                remove_rootfs(&path, None).map_err(store_err("removing", &path))?;
                removed += 1;
            }
        }
        if let Some(layers) = &self.layers {
            let keys = keep.iter().map(|p| rootfs_key(p)).collect();
            let gone = layers.prune(&keys)?;
            if gone > 0 {
                tracing::info!(count = gone, "removed unused layers");
            }
        }
        Ok(removed)
    }
}

/// The name a rootfs directory's layers are kept under.
fn rootfs_key(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes a version's rootfs: its overlay (if composed), its directory
/// and, given the layer store, its claim on layers (those no other version
/// uses go too).
pub fn remove_rootfs(path: &Path, layers: Option<&Layers>) -> io::Result<()> {
    overlay::unmount(path)?;
    remove_tree(path)?;
    if let Some(layers) = layers {
        layers
            .release(&rootfs_key(path))
            .map_err(io::Error::other)?;
    }
    Ok(())
}

impl Staging {
    /// Whether it is made of shared layers (else a copy of its own).
    pub fn layered(&self) -> bool {
        self.reserved.is_some()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn key(&self) -> String {
        rootfs_key(self.path())
    }

    /// The directory, no longer removed on drop.
    fn keep(&mut self) -> PathBuf {
        self.dir.keep()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let Some(layers) = self.reserved.take() else {
            return;
        };
        if self.dir.kept() {
            return;
        }
        let key = self.key();
        match self.dir.remove() {
            Ok(()) => {
                if let Err(e) = layers.release(&key) {
                    tracing::warn!(rootfs = %key, error = %e, "releasing the layers of a staging directory");
                }
            }
            Err(e) => tracing::warn!(rootfs = %key, error = %e, "removing staging directory"),
        }
    }
}

/// Where a function's secrets are mounted.
pub const SECRETS_DIR: &str = layout::in_rootfs(layout::SECRETS);

/// Creates `/run/secrets` in a rootfs committed before secrets existed
/// (symlinks resolved inside the rootfs, as everywhere here).
pub fn ensure_secrets_mountpoint(rootfs: &Path) -> Result<(), ImageError> {
    let root = Root::open(rootfs).map_err(store_err("opening", rootfs))?;
    root.ensure_dir(Path::new(SECRETS_DIR))
        .map(drop)
        .map_err(store_err("creating", &rootfs.join(SECRETS_DIR)))
}

/// Creates directory `path` (absolute, as the image names it) in a rootfs,
/// symlinks resolved inside it: a VOLUME's mount point.
pub fn ensure_mountpoint(rootfs: &Path, path: &str) -> Result<(), ImageError> {
    let root = Root::open(rootfs).map_err(store_err("opening", rootfs))?;
    let inside = Path::new(path.trim_start_matches('/'));
    root.ensure_dir(inside)
        .map(drop)
        .map_err(store_err("creating", &rootfs.join(inside)))
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
