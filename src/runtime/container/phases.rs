//! When runc finished starting each container, seen from outside: runc
//! removes `exec.fifo` from the container's state directory once it has
//! released the process to exec. One inotify instance for the whole
//! runtime watches runc's root for new container directories and each of
//! those for that removal; container starts pay for nothing but the
//! kernel's event.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::control::register_owned;

/// Bound on remembered start times (containers whose start nobody read).
const MAX_REMEMBERED: usize = 4096;

/// Inotify as an owner of its descriptor, for the reactor.
struct Owned(Inotify);

impl AsFd for Owned {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Owned {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Start times by container id, filled by the watcher.
#[derive(Default)]
pub struct StartTimes {
    times: Mutex<HashMap<String, SystemTime>>,
}

impl StartTimes {
    /// The moment container `id`'s start completed, if seen (forgets it).
    pub fn take(&self, id: &str) -> Option<SystemTime> {
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn put(&self, id: String, at: SystemTime) {
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        if times.len() >= MAX_REMEMBERED {
            times.clear();
        }
        times.insert(id, at);
    }
}

/// Starts watching `root` (runc's `--root`) on the current runtime.
pub fn watch(root: PathBuf) -> io::Result<Arc<StartTimes>> {
    let inotify =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
    let root_wd = inotify
        .add_watch(&root, AddWatchFlags::IN_CREATE)
        .map_err(io::Error::from)?;
    let fd = register_owned(Owned(inotify))?;
    let times = Arc::new(StartTimes::default());
    let out = Arc::clone(&times);
    tokio::spawn(async move {
        let mut dirs: HashMap<WatchDescriptor, String> = HashMap::new();
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            let events =
                match ready.try_io(|f| f.get_ref().0.read_events().map_err(io::Error::from)) {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "start-phase watch ended");
                        return;
                    }
                    Err(_would_block) => continue,
                };
            let now = SystemTime::now();
            for ev in events {
                let name = ev.name.as_deref().unwrap_or_default();
                if ev.wd == root_wd && ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    let dir = root.join(name);
                    if let Ok(wd) = fd.get_ref().0.add_watch(&dir, AddWatchFlags::IN_DELETE) {
                        dirs.insert(wd, name.to_string_lossy().into_owned());
                    }
                } else if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    dirs.remove(&ev.wd);
                } else if ev.mask.contains(AddWatchFlags::IN_DELETE)
                    && name == OsStr::new("exec.fifo")
                {
                    if let Some(id) = dirs.get(&ev.wd) {
                        out.put(id.clone(), now);
                    }
                }
            }
        }
    });
    Ok(times)
}
