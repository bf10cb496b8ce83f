//! Where containers reach the state directory. Their root is an
//! unprivileged host uid (user namespaces), so every directory on the way
//! to their rootfs and control socket must let other users pass (o+x).
//! When one above `--state-dir` does not (a `mktemp -d` directory, a home
//! directory), faasd changes nothing of the operator's: it bind-mounts the
//! state directory at `/run/faasd/<scope>` (0711 all the way) and gives
//! runc paths through that. The state directory becomes a shared mount
//! and the view its peer, so the rootfs overlays composed under it later
//! show in the view too. The mounts are removed at shutdown (and live in
//! faasd's own mount namespace anyway); one found in mountinfo is used
//! again.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

const RUN_DIR: &str = "/run/faasd";

#[derive(Debug)]
pub struct StateView {
    /// The state directory as faasd names it (its paths start so).
    state: PathBuf,
    view: PathBuf,
    mounted: bool,
    /// Whether the state directory was bound onto itself (to be shared)
    /// here, and so is ours to unmount.
    bound_state: bool,
}

impl StateView {
    /// The view of `state` (canonical) for this faasd (`scope` names it).
    pub fn open(given: &Path, scope: &str) -> io::Result<Self> {
        let state = given.canonicalize()?;
        if passable(&state)? {
            return Ok(Self {
                state: given.to_path_buf(),
                view: given.to_path_buf(),
                mounted: false,
                bound_state: false,
            });
        }
        let view = Path::new(RUN_DIR).join(scope);
        std::fs::create_dir_all(&view)?;
        std::fs::set_permissions(RUN_DIR, std::fs::Permissions::from_mode(0o711))?;
        let mut bound_state = false;
        if !mounted_at(&view)? {
            bound_state = share(&state)?;
            mount(
                Some(&state),
                &view,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
        }
        tracing::info!(
            state = %state.display(),
            view = %view.display(),
            "an ancestor of the state directory keeps other users out: containers reach it through a bind mount"
        );
        Ok(Self {
            state: given.to_path_buf(),
            view,
            mounted: true,
            bound_state,
        })
    }

    /// `path` (under the state directory) as containers' runc sees it.
    pub fn path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.state) {
            Ok(rest) if self.mounted => self.view.join(rest),
            _ => path.to_path_buf(),
        }
    }

    /// Removes the bind mount, if there is one.
    pub fn close(&self) {
        if self.mounted {
            if let Err(e) = umount2(&self.view, MntFlags::MNT_DETACH) {
                tracing::warn!(view = %self.view.display(), error = %e, "unmounting the state view");
            }
            let _ = std::fs::remove_dir(&self.view);
            if self.bound_state {
                if let Ok(state) = self.state.canonicalize() {
                    let _ = umount2(&state, MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

/// Makes `dir` a mount of its own, shared: a bind of it is its peer and
/// receives the mounts made under it afterwards. Returns whether it bound
/// `dir` onto itself (a mount point already, the operator's, stays theirs).
fn share(dir: &Path) -> io::Result<bool> {
    let bind = !mounted_at(dir)?;
    if bind {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    Ok(bind)
}

/// Whether every directory above `dir` lets other users through.
fn passable(dir: &Path) -> io::Result<bool> {
    for ancestor in dir.ancestors().skip(1) {
        if std::fs::metadata(ancestor)?.permissions().mode() & 0o001 == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether something is mounted at `path` (mountinfo's fifth field).
fn mounted_at(path: &Path) -> io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.to_string_lossy();
    Ok(info
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_the_way_is_open() {
        let view = StateView {
            state: "/var/lib/faasd".into(),
            view: "/var/lib/faasd".into(),
            mounted: false,
            bound_state: false,
        };
        let p = Path::new("/var/lib/faasd/rootfs/f-v1");
        assert_eq!(view.path(p), p);
    }

    #[test]
    fn translates_under_a_mount() {
        let view = StateView {
            state: "/tmp/tmp.x/state".into(),
            view: "/run/faasd/faasd-abc".into(),
            mounted: true,
            bound_state: true,
        };
        assert_eq!(
            view.path(Path::new("/tmp/tmp.x/state/bundles/f-1/control.sock")),
            Path::new("/run/faasd/faasd-abc/bundles/f-1/control.sock")
        );
        assert_eq!(view.path(Path::new("/elsewhere")), Path::new("/elsewhere"));
    }
}
