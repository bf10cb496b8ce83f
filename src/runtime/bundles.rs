//! The bundles directory: one small directory per container (config.json,
//! control socket, pid file, runtime log), made and removed for every
//! container. It is a tmpfs of faasd's own, mounted in faasd's private
//! mount namespace, so it ends with faasd (a `kill -9` included) and a
//! restart begins with an empty one.
//!
//! Why not the state directory's disk: on ext4 each new inode is looked
//! for past recently deleted ones (`find_inode_bit`, `recently_deleted`),
//! and a fresh container per connection deletes and creates them
//! constantly. Profiled under `wrk -c16` on fresh containers, creating
//! the bundle directory and binding its control socket was ~5% of all
//! CPU; faasd's own CPU dropped from ~160 to ~100 ticks per 10 s with the
//! tmpfs (docs/performance.md).

use std::io;
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// Mounts the tmpfs on `dir` (created if missing), after removing what
/// an older faasd left on the disk below it (what cannot be removed is
/// only hidden, and said in the log). Call in faasd's own mount namespace
/// only (`sys::private_mounts`): elsewhere the mount would outlive faasd.
pub fn mount_tmpfs(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if let Err(e) = crate::sys::fs::remove_tree(&entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "removing a bundle an older faasd left on disk");
        }
    }
    mount(
        Some("faasd-bundles"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        // Containers (unprivileged host ids) pass through to their
        // control socket and list nothing.
        Some("mode=0711"),
    )
    .map_err(io::Error::from)
}
