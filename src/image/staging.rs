//! A directory being filled in the image store (a version's rootfs, a
//! layer, `top`): named `.staging-…`, so a start can tell what a crash
//! left, and removed when dropped (what was mounted on it unmounted
//! first) unless it was kept.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{overlay, ImageError};
use crate::sys::fs::remove_tree;

/// Every staging directory's name starts so.
pub const PREFIX: &str = ".staging-";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// One staging directory.
#[derive(Debug)]
pub struct Dir {
    path: Option<PathBuf>,
}

/// The store's error for `op` on `path`.
pub fn store_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Store {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Dir {
    /// A new, empty staging directory in `dir`.
    pub fn new_in(dir: &Path, label: &str) -> Result<Self, ImageError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{PREFIX}{label}-{}-{seq}", std::process::id()));
        fs::create_dir(&path).map_err(store_err("creating", &path))?;
        Ok(Self { path: Some(path) })
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    /// Whether it was kept (its path now belongs to someone else).
    pub fn kept(&self) -> bool {
        self.path.is_none()
    }

    /// The directory, no longer removed on drop.
    pub fn keep(&mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }

    /// Removes it now (its overlay, if one was composed there, first).
    pub fn remove(&mut self) -> io::Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        overlay::unmount(&path)?;
        remove_tree(&path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let path = self.path.clone();
        if let Err(e) = self.remove() {
            let path = path.unwrap_or_default();
            tracing::warn!(path = %path.display(), error = %e, "removing staging directory");
        }
    }
}
