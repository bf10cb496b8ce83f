//! A container's writable root, as Docker gives one: the version's
//! read-only rootfs under a writable layer of the container's own, gone
//! with it (also under `--read-only` when the image has VOLUMEs: their
//! mount points are made in the layer, and the runtime makes the root
//! read-only). In the bundle, `scratch/` is a tmpfs of `--scratch` bytes (its
//! pages are charged to whoever writes them: the container's memory
//! cgroup) holding the overlay's upper and work directories, and
//! `rootfs/` the overlay the runtime is given. Made while the container is
//! prepared (ahead, for a pool), in faasd's own mount namespace with the
//! bundles' tmpfs; unmounted before the bundle is removed.

use std::io;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

const SCRATCH: &str = "scratch";
const ROOTFS: &str = "rootfs";

/// Mounts the writable root of the container whose bundle is `bundle`
/// over `lower` (the version's rootfs), with directories `mountpoints`
/// (absolute, as the image names them) made in it; returns its path.
pub fn mount_root(
    bundle: &Path,
    lower: &Path,
    size: u64,
    mountpoints: &[String],
) -> io::Result<PathBuf> {
    let scratch = bundle.join(SCRATCH);
    let root = bundle.join(ROOTFS);
    // overlayfs splits its options at ',' and its layers at ':'.
    let plain = |p: &Path| {
        !p.as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|b| b",:\\".contains(b))
    };
    if !plain(lower) || !plain(bundle) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} or {}: a ',', ':' or '\\' in the state directory's path",
                lower.display(),
                bundle.display()
            ),
        ));
    }
    std::fs::create_dir(&scratch)?;
    std::fs::create_dir(&root)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let tmpfs = format!("size={size},mode=0700");
    mount(
        Some("tmpfs"),
        &scratch,
        Some("tmpfs"),
        flags,
        Some(tmpfs.as_str()),
    )
    .map_err(io::Error::from)?;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    // The merged root takes the upper directory's owner and mode: the
    // image's own root directory's.
    let top = std::fs::metadata(lower)?;
    chown(&upper, Some(top.uid()), Some(top.gid()))?;
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(top.mode() & 0o7777))?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        flags,
        Some(options.as_str()),
    );
    if let Err(e) = mounted {
        let _ = umount2(&scratch, MntFlags::MNT_DETACH);
        return Err(io::Error::from(e));
    }
    for path in mountpoints {
        // Confined to the rootfs: the path is the image's to name.
        if let Err(e) = crate::image::store::ensure_mountpoint(&root, path) {
            let _ = unmount_root(bundle);
            return Err(io::Error::other(e.to_string()));
        }
    }
    Ok(root)
}

/// Unmounts what `mount_root` mounted in `bundle`, if anything.
pub fn unmount_root(bundle: &Path) -> io::Result<()> {
    for dir in [ROOTFS, SCRATCH] {
        let path = bundle.join(dir);
        match umount2(&path, MntFlags::MNT_DETACH) {
            // Not mounted (a read-only root; never got that far).
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}
