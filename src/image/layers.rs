//! The shared layer store, `<state>/layers` (root only): each image layer
//! unpacked once, in a directory named by its chain id, owned by the
//! image's own ids and in overlayfs's form, plus `top`, faasd's own layer
//! of mount points. Which rootfs uses which layers is kept in `refs/`, one
//! file per rootfs; a layer no ref names is removed, so removing the last
//! user of a layer frees it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fsops::{self, Root};
use super::overlay::{self, Upper};
use super::staging::{self, store_err as err};
use super::ImageError;
use crate::sys::fs::remove_tree;
use faas_protocol::layout;

const REFS: &str = "refs";
/// Named for what it holds: a faasd that adds a mount point makes a new
/// one (a layer under live mounts is never changed), and collects the old.
const TOP: &str = "top-2";
/// An empty layer: overlayfs wants two lower layers at least, and an
/// image may have a single one (or none).
const EMPTY: &str = "empty";
/// Mount points in `top`: runc mounts /proc, /dev, /sys, /tmp; faasd its
/// control socket, `faas-init`, the secrets directory and, for `--fork`,
/// the image's root once more and the zygote's cgroup.
const TOP_DIRS: &[(&str, u32)] = &[
    ("proc", 0o755),
    ("dev", 0o755),
    ("sys", 0o755),
    // runc 1.1 gives a tmpfs the mode of its mount point.
    ("tmp", 0o1777),
    ("run", 0o755),
    (layout::in_rootfs(layout::SECRETS), 0o755),
    (layout::in_rootfs(layout::IMAGE), 0o755),
    (layout::in_rootfs(layout::CGROUP), 0o755),
];
const TOP_FILES: &[&str] = &[
    layout::in_rootfs(layout::CONTROL_SOCKET),
    layout::in_rootfs(layout::FAAS_INIT),
    layout::in_rootfs(layout::FORK_STATS),
];

/// Refs are written and layers collected one at a time, so a layer a
/// deploy has just reserved is never collected under it.
static REFS_LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug)]
pub struct Layers {
    dir: PathBuf,
}

impl Layers {
    /// Opens (or makes) the store at `dir`, with faasd's `top` layer.
    pub fn open(dir: PathBuf) -> Result<Self, ImageError> {
        fs::create_dir_all(dir.join(REFS)).map_err(err("creating", &dir))?;
        // Layers keep the image's ids: host root owns much of them.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(err("chmod", &dir))?;
        let empty = dir.join(EMPTY);
        fs::create_dir_all(&empty).map_err(err("creating", &empty))?;
        let layers = Self { dir };
        layers.make_top()?;
        Ok(layers)
    }

    fn make_top(&self) -> Result<(), ImageError> {
        let top = self.dir.join(TOP);
        if top.exists() {
            return Ok(());
        }
        let staging = self.staging()?;
        let root = Root::open(staging.path()).map_err(err("opening", staging.path()))?;
        for (dir, mode) in TOP_DIRS {
            let path = Path::new(dir);
            root.ensure_dir(path).map_err(err("creating", path))?;
            let (parent, name) = (path.parent().unwrap_or(Path::new("")), path.as_os_str());
            let parent_fd = root.open_dir(parent).map_err(err("opening", path))?;
            let name = path.file_name().unwrap_or(name);
            fsops::chmod_dir(&parent_fd, name, *mode).map_err(err("chmod", path))?;
        }
        let top_fd = root
            .open_dir(Path::new(""))
            .map_err(err("opening", staging.path()))?;
        for file in TOP_FILES {
            fsops::create_file(&top_fd, file.as_ref(), 0o644)
                .map_err(err("creating", Path::new(file)))?;
        }
        fs::set_permissions(
            staging.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(err("chmod", staging.path()))?;
        self.commit(staging, TOP)
    }

    pub fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    pub fn has(&self, hex: &str) -> bool {
        self.path(hex).is_dir()
    }

    /// Unpacks layer `id` by `apply`: straight into a directory of its
    /// own when nothing is below it; otherwise onto a writable overlay of
    /// the layers `below` (bottom first), whose upper directory becomes
    /// the layer: overlayfs itself turns deletions into whiteouts and
    /// copies up what a hard link or a change of owner touches, exactly
    /// as a container writing those changes would have.
    pub fn unpack(
        &self,
        id: &str,
        below: &[String],
        apply: impl FnOnce(&Root) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let staging = staging::Dir::new_in(&self.dir, "layer")?;
        let upper = staging.path().join("upper");
        fs::create_dir(&upper).map_err(err("creating", &upper))?;
        if below.is_empty() {
            apply(&Root::open(&upper).map_err(err("opening", &upper))?)?;
        } else {
            let work = staging.path().join("work");
            let merged = staging.path().join("merged");
            for dir in [&work, &merged] {
                fs::create_dir(dir).map_err(err("creating", dir))?;
            }
            let lower: Vec<PathBuf> = below.iter().rev().map(|id| self.path(id)).collect();
            let lower: Vec<&Path> = lower.iter().map(PathBuf::as_path).collect();
            let upper_dirs = Upper {
                dir: &upper,
                work: &work,
            };
            overlay::compose(&merged, &lower, None, Some(upper_dirs))
                .map_err(err("composing", &merged))?;
            let applied = Root::open(&merged)
                .map_err(err("opening", &merged))
                .and_then(|root| apply(&root));
            overlay::unmount(&merged).map_err(err("unmounting", &merged))?;
            applied?;
        }
        // Another deploy may have put the same layer there meanwhile: then
        // this copy goes with the staging directory.
        let to = self.path(id);
        match fs::rename(&upper, &to) {
            Ok(()) => Ok(()),
            Err(_) if to.is_dir() => Ok(()),
            Err(e) => Err(err("renaming", &upper)(e)),
        }
    }

    /// Writes what was unpacked to the disk, once per image: layers are
    /// unpacked through volatile overlays (no sync per layer), and a
    /// version whose layers a crash left half-written must not be served.
    pub fn sync(&self) -> Result<(), ImageError> {
        let dir = fs::File::open(&self.dir).map_err(err("opening", &self.dir))?;
        nix::unistd::syncfs(&dir).map_err(|e| err("syncing", &self.dir)(io::Error::from(e)))
    }

    /// A directory for `top`.
    fn staging(&self) -> Result<staging::Dir, ImageError> {
        staging::Dir::new_in(&self.dir, "top")
    }

    /// Moves `top`, made, into place.
    fn commit(&self, mut staging: staging::Dir, name: &str) -> Result<(), ImageError> {
        let to = self.path(name);
        let from = staging.keep();
        fs::rename(&from, &to).map_err(err("renaming", &from))
    }

    /// Records that the rootfs `key` is made of `hexes` (bottom first).
    pub fn reserve(&self, key: &str, hexes: &[String]) -> Result<(), ImageError> {
        let _held = REFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.ref_path(key);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, hexes.join("\n")).map_err(err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(err("renaming", &tmp))
    }

    /// Gives the ref `from` the name `to` (a staged rootfs committed).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), ImageError> {
        let _held = REFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.ref_path(from);
        fs::rename(&from, self.ref_path(to)).map_err(err("renaming", &from))
    }

    /// The layers of rootfs `key`, topmost first, `top` included; `None`
    /// when it is not made of shared layers (an unpacked copy).
    pub fn stack(&self, key: &str) -> Result<Option<Vec<PathBuf>>, ImageError> {
        let path = self.ref_path(key);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("reading", &path)(e)),
        };
        Ok(Some(self.stack_of(text.lines().rev())))
    }

    /// `top` over the layers `hexes` (topmost first), at least two.
    pub fn stack_of<'a>(&self, hexes: impl Iterator<Item = &'a str>) -> Vec<PathBuf> {
        let mut stack = vec![self.path(TOP)];
        stack.extend(hexes.map(|hex| self.path(hex)));
        if stack.len() < 2 {
            stack.push(self.path(EMPTY));
        }
        stack
    }

    /// Forgets rootfs `key` and removes the layers no rootfs uses now.
    pub fn release(&self, key: &str) -> Result<usize, ImageError> {
        let _held = REFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.ref_path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("removing", &path)(e)),
        }
        self.collect()
    }

    /// Forgets every rootfs not in `keep` (a crashed run's), then removes
    /// what no rootfs uses, staging leftovers included.
    pub fn prune(&self, keep: &HashSet<String>) -> Result<usize, ImageError> {
        let _held = REFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let refs = self.dir.join(REFS);
        for entry in fs::read_dir(&refs).map_err(err("listing", &refs))? {
            let entry = entry.map_err(err("listing", &refs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                fs::remove_file(entry.path()).map_err(err("removing", &entry.path()))?;
            }
        }
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(err("listing", &self.dir))? {
            let path = entry.map_err(err("listing", &self.dir))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                remove_tree(&path).map_err(err("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed + self.collect()?)
    }

    /// Removes layers no ref names (the caller holds `REFS_LOCK`).
    fn collect(&self) -> Result<usize, ImageError> {
        let refs = self.dir.join(REFS);
        let mut used: HashSet<String> = [TOP, EMPTY, REFS].map(str::to_owned).into();
        for entry in fs::read_dir(&refs).map_err(err("listing", &refs))? {
            let path = entry.map_err(err("listing", &refs))?.path();
            let text = fs::read_to_string(&path).map_err(err("reading", &path))?;
            used.extend(text.lines().map(str::to_owned));
        }
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(err("listing", &self.dir))? {
            let entry = entry.map_err(err("listing", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || used.contains(&name) {
                continue;
            }
            remove_tree(&entry.path()).map_err(err("removing", &entry.path()))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn ref_path(&self, key: &str) -> PathBuf {
        self.dir.join(REFS).join(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_goes_with_its_last_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layers = Layers::open(dir.path().join("layers")).expect("open");
        for id in ["a", "b", "c"] {
            fs::create_dir(layers.path(id)).expect("layer");
        }
        layers
            .reserve("f-v1", &["a".into(), "b".into()])
            .expect("ref");
        layers
            .reserve(".staging-g", &["b".into(), "c".into()])
            .expect("ref");
        layers.rename(".staging-g", "g-v1").expect("rename");
        let stack = layers.stack("g-v1").expect("stack").expect("layered");
        let names: Vec<_> = stack.iter().filter_map(|p| p.file_name()).collect();
        assert_eq!(names, [TOP, "c", "b"], "top first, then the image's top");
        assert_eq!(layers.stack("old-copy").expect("stack"), None);

        assert_eq!(layers.release("f-v1").expect("release"), 1);
        assert!(!layers.has("a") && layers.has("b") && layers.has("c"));
        fs::create_dir(dir.path().join("layers/.staging-layer-1")).expect("staging");
        assert_eq!(layers.prune(&HashSet::new()).expect("prune"), 3);
        assert!(!layers.has("b") && !layers.has("c"));
        assert!(layers.has(TOP) && layers.has(EMPTY), "faasd's own stay");
        let single = layers.stack_of(["x"].into_iter());
        assert_eq!(single.len(), 2, "overlayfs needs two lower layers");
        let none = layers.stack_of(std::iter::empty());
        assert_eq!(none, [layers.path(TOP), layers.path(EMPTY)]);
    }
}
