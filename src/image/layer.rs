//! Applying one layer tarball onto a root filesystem with OCI whiteout
//! semantics. `plan` (pure) decides what an entry means; `apply_layer` does
//! it through the confined operations of `fsops`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::fsops::{self, Kind, Root};
use super::{LayerError, Limits};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Setuid and setgid bits are dropped: the rootfs lives on the host too.
const MODE_MASK: u32 = 0o1777;

/// What one tar entry asks for, with its path made relative and clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete `name` in `dir` from lower layers.
    Whiteout { dir: PathBuf, name: PathBuf },
    /// Hide everything lower layers put in `dir`.
    Opaque { dir: PathBuf },
    /// Create or update an object at `dir/name`.
    Put { dir: PathBuf, name: PathBuf },
    /// Nothing to do (the root directory itself).
    Skip,
}

/// Counters shared by all layers of one image.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub skipped_devices: u64,
}

/// Makes an entry path relative: leading `/` and `.` are dropped, `..` is an
/// escape and refused.
pub fn clean_path(raw: &Path, limits: &Limits) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::Escape {
                    path: raw.display().to_string(),
                })
            }
        }
    }
    let depth = out.components().count();
    if depth > limits.max_path_depth {
        return Err(LayerError::Limit {
            limit: "path depth",
            value: depth as u64,
            max: limits.max_path_depth as u64,
        });
    }
    Ok(out)
}

/// Decides what an entry at `raw` means.
pub fn plan(raw: &Path, limits: &Limits) -> Result<Action, LayerError> {
    let path = clean_path(raw, limits)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Action::Skip);
    };
    let dir = dir.to_path_buf();
    let name_str = name.to_string_lossy();
    if name_str == OPAQUE_MARKER {
        return Ok(Action::Opaque { dir });
    }
    if let Some(target) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty() || target == "." || target == ".." {
            return Err(LayerError::BadEntry {
                path: raw.display().to_string(),
                reason: "whiteout names no file".into(),
            });
        }
        let target = OsStr::from_encoded_bytes_checked(name, WHITEOUT_PREFIX.len());
        return Ok(Action::Whiteout {
            dir,
            name: PathBuf::from(target),
        });
    }
    Ok(Action::Put {
        dir,
        name: PathBuf::from(name),
    })
}

/// `OsStr` helpers kept byte-exact so non-UTF-8 names survive.
trait StripBytes {
    fn from_encoded_bytes_checked(s: &OsStr, skip: usize) -> &OsStr;
}

impl StripBytes for OsStr {
    fn from_encoded_bytes_checked(s: &OsStr, skip: usize) -> &OsStr {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(&s.as_bytes()[skip..])
    }
}

/// Applies one uncompressed layer tarball read from `reader` onto `root`.
pub fn apply_layer<R: Read>(
    reader: R,
    root: &Root,
    limits: &Limits,
    totals: &mut Totals,
) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(reader);
    // Paths this layer created: whiteouts and opaque markers only hide what
    // lower layers left, whatever order the entries come in.
    let mut created: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(LayerError::Read)?;
    for entry in entries {
        let mut entry = entry.map_err(LayerError::Read)?;
        let raw = entry.path().map_err(LayerError::Read)?.into_owned();
        match plan(&raw, limits)? {
            Action::Skip => {}
            Action::Whiteout { dir, name } => whiteout(root, &dir, &name, &created)?,
            Action::Opaque { dir } => opaque(root, &dir, &created)?,
            Action::Put { dir, name } => {
                totals.files += 1;
                check(totals.files, limits.max_files, "file count")?;
                put(root, &dir, &name, &mut entry, limits, totals)?;
                created.insert(dir.join(&name));
            }
        }
    }
    // Drain the end-of-archive blocks so the caller's digest covers them.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(LayerError::Read)?;
    Ok(())
}

fn check(value: u64, max: u64, limit: &'static str) -> Result<(), LayerError> {
    if value > max {
        return Err(LayerError::Limit { limit, value, max });
    }
    Ok(())
}

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Fs {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn whiteout(
    root: &Root,
    dir: &Path,
    name: &Path,
    created: &HashSet<PathBuf>,
) -> Result<(), LayerError> {
    let path = dir.join(name);
    if created.contains(&path) {
        return Ok(());
    }
    let dirfd = match root.open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fs_err("opening", dir)(e)),
    };
    fsops::remove(&dirfd, name.as_os_str()).map_err(fs_err("removing", &path))
}

fn opaque(root: &Root, dir: &Path, created: &HashSet<PathBuf>) -> Result<(), LayerError> {
    let dirfd = root.ensure_dir(dir).map_err(fs_err("creating", dir))?;
    for child in fsops::list(&dirfd).map_err(fs_err("listing", dir))? {
        if !created.contains(&dir.join(&child)) {
            fsops::remove(&dirfd, &child).map_err(fs_err("removing", &dir.join(&child)))?;
        }
    }
    Ok(())
}

fn put<R: Read>(
    root: &Root,
    dir: &Path,
    name: &Path,
    entry: &mut tar::Entry<R>,
    limits: &Limits,
    totals: &mut Totals,
) -> Result<(), LayerError> {
    let path = dir.join(name);
    let name = name.as_os_str();
    let header = entry.header();
    let kind = header.entry_type();
    let mode = header.mode().map_err(LayerError::Read)? & MODE_MASK;
    let uid = header.uid().map_err(LayerError::Read)?;
    let gid = header.gid().map_err(LayerError::Read)?;
    let (uid, gid) = (id32(uid, &path)?, id32(gid, &path)?);
    let dirfd = root.ensure_dir(dir).map_err(fs_err("creating", dir))?;
    let existing = fsops::lookup(&dirfd, name).map_err(fs_err("inspecting", &path))?;

    if kind == EntryType::Directory {
        match existing {
            Some(Kind::Dir) => {}
            Some(Kind::Other) => {
                fsops::remove(&dirfd, name).map_err(fs_err("replacing", &path))?;
                fsops::mkdir(&dirfd, name).map_err(fs_err("creating", &path))?;
            }
            None => fsops::mkdir(&dirfd, name).map_err(fs_err("creating", &path))?,
        }
        fsops::chmod_dir(&dirfd, name, mode).map_err(fs_err("chmod", &path))?;
        return fsops::chown(&dirfd, name, uid, gid).map_err(fs_err("chown", &path));
    }

    let is_device = matches!(kind, EntryType::Char | EntryType::Block);
    if is_device {
        // Device nodes in a function image are at best useless (the container
        // gets its own /dev) and at worst a door to host hardware.
        totals.skipped_devices += 1;
        return Ok(());
    }
    if existing.is_some() {
        fsops::remove(&dirfd, name).map_err(fs_err("replacing", &path))?;
    }
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            let mut file =
                fsops::create_file(&dirfd, name, mode).map_err(fs_err("creating", &path))?;
            let room = limits.max_extracted_bytes.saturating_sub(totals.bytes);
            let written = io::copy(&mut (&mut *entry).take(room + 1), &mut file)
                .map_err(fs_err("writing", &path))?;
            totals.bytes += written;
            check(totals.bytes, limits.max_extracted_bytes, "extracted bytes")?;
        }
        EntryType::Symlink => {
            let target = link_target(entry, &path)?;
            fsops::symlink(&dirfd, name, &target).map_err(fs_err("symlinking", &path))?;
        }
        EntryType::Link => {
            let target = clean_path(&link_target(entry, &path)?, limits)?;
            return root
                .hardlink(&target, &dirfd, name)
                .map_err(fs_err("hard-linking", &path));
        }
        EntryType::Fifo => {
            fsops::mkfifo(&dirfd, name, mode).map_err(fs_err("creating fifo", &path))?
        }
        other => {
            return Err(LayerError::BadEntry {
                path: path.display().to_string(),
                reason: format!("unsupported entry type {other:?}"),
            })
        }
    }
    fsops::chown(&dirfd, name, uid, gid).map_err(fs_err("chown", &path))
}

fn link_target<R: Read>(entry: &tar::Entry<R>, path: &Path) -> Result<PathBuf, LayerError> {
    entry
        .link_name()
        .map_err(LayerError::Read)?
        .map(|p| p.into_owned())
        .ok_or_else(|| LayerError::BadEntry {
            path: path.display().to_string(),
            reason: "link without a target".into(),
        })
}

fn id32(id: u64, path: &Path) -> Result<u32, LayerError> {
    u32::try_from(id).map_err(|_| LayerError::BadEntry {
        path: path.display().to_string(),
        reason: format!("owner id {id} out of range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Action, LayerError> {
        plan(Path::new(s), &Limits::default())
    }

    #[test]
    fn plans_entries() {
        assert_eq!(
            p("./etc/passwd").ok(),
            Some(Action::Put {
                dir: "etc".into(),
                name: "passwd".into()
            })
        );
        assert_eq!(
            p("/abs/file").ok(),
            Some(Action::Put {
                dir: "abs".into(),
                name: "file".into()
            })
        );
        assert_eq!(p("./").ok(), Some(Action::Skip));
        assert_eq!(
            p("a/.wh.b").ok(),
            Some(Action::Whiteout {
                dir: "a".into(),
                name: "b".into()
            })
        );
        assert_eq!(
            p("a/.wh..wh..opq").ok(),
            Some(Action::Opaque { dir: "a".into() })
        );
    }

    #[test]
    fn refuses_escapes() {
        assert!(matches!(p("../x"), Err(LayerError::Escape { .. })));
        assert!(matches!(p("a/../../x"), Err(LayerError::Escape { .. })));
        assert!(matches!(p("a/.wh.."), Err(LayerError::BadEntry { .. })));
        let deep = "d/".repeat(100) + "f";
        assert!(matches!(p(&deep), Err(LayerError::Limit { .. })));
    }
}
