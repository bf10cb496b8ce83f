//! The rootfs directories of deployed versions, one object a directory
//! (versions that share one share it), and when they are composed. A
//! rootfs made of shared layers is an overlay mount; every mount in
//! faasd's namespace is copied into each new container's and read by the
//! runtime in `/proc/self/mountinfo` several times a start, so at
//! thousands of functions the mounts, not the containers, were what a
//! start cost. So a rootfs is mounted only while it is used: a container
//! holds it (`RootfsDir::hold`) from its bundle until its cleanup, and
//! one nobody has held for a while (`faasd --rootfs-idle`) is unmounted
//! again. A retired directory goes once its last user lets go.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::image::store::Store;
use crate::image::{overlay, ImageError};

/// Every live rootfs directory, by path.
#[derive(Debug)]
pub struct Rootfses {
    store: Store,
    /// How long a rootfs nobody uses stays mounted: a function without a
    /// warm pool starts its containers one at a time, and should not pay
    /// a compose for each.
    linger: Duration,
    /// Where unmounts wait out `linger` (containers let go of a rootfs on
    /// the cleanup thread, which has no runtime of its own).
    waits: Option<tokio::runtime::Handle>,
    dirs: Mutex<HashMap<PathBuf, Weak<RootfsDir>>>,
}

/// A rootfs directory shared by the containers of the versions using it.
#[derive(Debug)]
pub struct RootfsDir {
    pub path: PathBuf,
    /// First host id of its function's range (its layers are seen so).
    id_base: u32,
    retired: AtomicBool,
    table: Arc<Rootfses>,
    mount: Mutex<Mount>,
}

#[derive(Debug, Default)]
struct Mount {
    composed: bool,
    users: usize,
    /// Counts the times `users` fell to zero: an unmount scheduled then
    /// is void once it moved on.
    idle_since: u64,
}

/// A use of a rootfs: it stays composed while this lives.
#[derive(Debug)]
pub struct RootfsUse(Arc<RootfsDir>);

impl Rootfses {
    /// The table for `store`'s directories; made inside the runtime that
    /// runs as long as faasd does.
    pub fn new(store: Store, linger: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            linger,
            waits: tokio::runtime::Handle::try_current().ok(),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    /// The directory at `path`: the live one, or a new one (not composed
    /// until it is held).
    pub fn get(self: &Arc<Self>, path: PathBuf, id_base: u32) -> Arc<RootfsDir> {
        let mut dirs = self.dirs();
        if let Some(dir) = dirs.get(&path).and_then(Weak::upgrade) {
            return dir;
        }
        let dir = Arc::new(RootfsDir {
            path: path.clone(),
            id_base,
            retired: AtomicBool::new(false),
            table: Arc::clone(self),
            mount: Mutex::default(),
        });
        dirs.insert(path, Arc::downgrade(&dir));
        dir
    }

    fn dirs(&self) -> MutexGuard<'_, HashMap<PathBuf, Weak<RootfsDir>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RootfsDir {
    /// Composes the directory if it is not (it stays so while the use
    /// lives, and a while after).
    pub fn hold(self: &Arc<Self>) -> Result<RootfsUse, ImageError> {
        let mut mount = self.state();
        if !mount.composed {
            self.table.store.mount(&self.path, self.id_base)?;
            mount.composed = true;
        }
        mount.users += 1;
        Ok(RootfsUse(Arc::clone(self)))
    }

    /// Says the store just composed it (a deploy's commit): unmounted
    /// after a while unless held by then.
    pub fn composed(self: &Arc<Self>) {
        let mut mount = self.state();
        mount.composed = true;
        if mount.users == 0 {
            self.unmount_later(&mut mount);
        }
    }

    /// Marks the directory for removal once the last user lets go.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    fn release(self: &Arc<Self>) {
        let mut mount = self.state();
        mount.users = mount.users.saturating_sub(1);
        if mount.users == 0 {
            self.unmount_later(&mut mount);
        }
    }

    fn unmount_later(self: &Arc<Self>, mount: &mut Mount) {
        mount.idle_since += 1;
        let idle_since = mount.idle_since;
        let Some(handle) =
            (self.table.waits.clone()).or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            // No runtime to wait on: it stays mounted until faasd's mount
            // namespace goes.
            return;
        };
        let dir = Arc::downgrade(self);
        let linger = self.table.linger;
        handle.spawn(async move {
            tokio::time::sleep(linger).await;
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(dir) = dir.upgrade() {
                    dir.unmount_if_idle(idle_since);
                }
            })
            .await;
        });
    }

    fn unmount_if_idle(&self, idle_since: u64) {
        let mut mount = self.state();
        if mount.users == 0 && mount.idle_since == idle_since && mount.composed {
            unmount(&self.path);
            mount.composed = false;
        }
    }

    fn state(&self) -> MutexGuard<'_, Mount> {
        self.mount.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RootfsUse {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Drop for RootfsDir {
    fn drop(&mut self) {
        // Under the table's lock, and only while this object is the
        // path's: one made after it (a rollback) composes only after this
        // one's mount is gone, and one that replaced it before this lock
        // unmounts what is there when it composes or ends. Whatever is
        // there: it may be the mount of one this replaced.
        let mut dirs = self.table.dirs();
        let ours = dirs
            .get(&self.path)
            .is_some_and(|d| std::ptr::eq(d.as_ptr(), self));
        if ours {
            dirs.remove(&self.path);
            unmount(&self.path);
        }
        drop(dirs);
        if self.retired.load(Ordering::Acquire) {
            let path = std::mem::take(&mut self.path);
            let layers = self.table.store.layers().cloned();
            // Removing a tree is slow; never on whatever thread dropped us,
            // and only on CPU time nothing else wants.
            std::thread::spawn(move || {
                let _ = crate::sys::set_priority(0, crate::sys::Priority::Idle);
                if let Err(e) = crate::image::store::remove_rootfs(&path, layers.as_deref()) {
                    tracing::warn!(path = %path.display(), error = %e, "removing retired rootfs");
                }
            });
        }
    }
}

fn unmount(path: &Path) {
    if let Err(e) = overlay::unmount(path) {
        tracing::warn!(path = %path.display(), error = %e, "unmounting an idle rootfs");
    }
}
