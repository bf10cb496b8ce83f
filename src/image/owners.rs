//! Each function's own range of host user and group ids. Its containers
//! run in a user namespace whose root is the first id of the range, so a
//! process that breaks out is an unprivileged stranger on the host and
//! cannot touch another function's files. runc 1.1 has no idmapped
//! mounts, so the rootfs itself is owned by the range: owners are shifted
//! once, after unpacking, before the version serves.

use std::io;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::{Path, PathBuf};

/// Ids per function: the container sees 0..65535.
pub const ID_RANGE: u32 = 65_536;
/// Ranges start high, clear of the host's users and of the usual
/// `/etc/subuid` ranges (100000 + n × 65536).
const FIRST_BASE: u32 = 1 << 30;
/// How many functions can have a range (bases stay below 2^31).
pub const SLOTS: u32 = (1 << 30) / ID_RANGE;
/// Where ids the range cannot hold end up: the container's `nobody`.
const NOBODY: u32 = 65_534;

/// The first host id of range `slot`.
pub fn base(slot: u32) -> u32 {
    FIRST_BASE + (slot % SLOTS) * ID_RANGE
}

/// The slot whose range starts at `base`.
pub fn slot(base: u32) -> u32 {
    base.saturating_sub(FIRST_BASE) / ID_RANGE
}

/// The host id of an image's id `id` in the range at `base`. Ids already
/// in the range stay, so shifting twice is harmless (a hard-linked file is
/// met once per link).
pub fn shifted(id: u32, base: u32) -> u32 {
    if id < ID_RANGE {
        base + id
    } else if (base..base + ID_RANGE).contains(&id) {
        id
    } else {
        base + NOBODY
    }
}

/// Shifts the owner of everything under `root` (itself included) into
/// the range at `base`; symlinks are changed, never followed. Returns how
/// many entries were changed.
pub fn shift_tree(root: &Path, base: u32) -> io::Result<u64> {
    let mut changed = 0;
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    shift_one(root, base, &mut changed)?;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if shift_one(&path, base, &mut changed)? {
                dirs.push(path);
            }
        }
    }
    Ok(changed)
}

/// Shifts one entry; true if it is a directory (to descend into).
fn shift_one(path: &Path, base: u32, changed: &mut u64) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    let (uid, gid) = (shifted(meta.uid(), base), shifted(meta.gid(), base));
    if (uid, gid) != (meta.uid(), meta.gid()) {
        lchown(path, Some(uid), Some(gid))?;
        *changed += 1;
    }
    Ok(meta.file_type().is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn ids_map_into_the_range_once() {
        let b = base(3);
        assert_eq!(b, (1 << 30) + 3 * 65_536);
        assert_eq!(shifted(0, b), b);
        assert_eq!(shifted(1000, b), b + 1000);
        assert_eq!(shifted(b + 1000, b), b + 1000, "idempotent");
        assert_eq!(shifted(70_000, b), b + NOBODY, "out of range");
        assert_ne!(base(1), base(2));
        assert!(base(SLOTS - 1) < 1 << 31);
    }

    #[test]
    fn shifts_a_tree_without_following_symlinks() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), "x").expect("write");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host file").expect("write");
        symlink(&outside, root.join("link")).expect("symlink");
        std::fs::hard_link(root.join("etc/passwd"), root.join("again")).expect("link");
        let b = base(7);
        shift_tree(&root, b).expect("shift");
        for p in ["", "etc", "etc/passwd", "again"] {
            let m = std::fs::symlink_metadata(root.join(p)).expect("stat");
            assert_eq!((m.uid(), m.gid()), (b, b), "{p}");
        }
        let link = std::fs::symlink_metadata(root.join("link")).expect("stat");
        assert_eq!(link.uid(), b);
        let host = std::fs::metadata(&outside).expect("stat");
        assert_eq!(host.uid(), 0, "the symlink's target is left alone");
    }
}
