//! The cgroups containers run in, and what they used. Each container's is
//! `/<scope>/<id>` (the scope is per state directory, so two faasd on one
//! host never share a cgroup). The runtime makes it at `create`; faasd
//! reads it once the container's process has ended and removes it (a
//! runtime's own `delete` would remove it too: the usage is read first).
//! Works on cgroup v1 (this host: cpuacct and memory) and v2. Also here:
//! what crun needs on a hybrid host (`hide_v2_controllers_from_runtime`).

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// What a container used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_bytes: u64,
}

/// The cgroup directory name of the faasd using `state_dir`.
pub fn scope(state_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    format!("faasd-{}", &crate::image::archive::hex(&digest)[..12])
}

/// The `cgroupsPath` to give the runtime for container `id`.
pub fn runtime_path(scope: &str, id: &str) -> String {
    format!("/{scope}/{id}")
}

/// Whether a cgroup hierarchy is mounted under `/sys/fs/cgroup` in this
/// mount namespace (the runtime needs one; `ip netns exec` mounts a
/// fresh /sys without any). Unknown (no mountinfo) counts as yes: the
/// runtime then says what it misses.
pub fn mounted() -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    info.lines().any(|line| {
        let mut halves = line.split(" - ");
        let point = halves.next().and_then(|h| h.split(' ').nth(4));
        let fstype = halves.next().and_then(|h| h.split(' ').next());
        point.is_some_and(|p| p.starts_with(ROOT)) && matches!(fstype, Some("cgroup" | "cgroup2"))
    })
}

fn v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// Whether this is a hybrid host (v1 controllers, plus a v2 hierarchy at
/// `unified`) whose v2 hierarchy holds a controller (here: hugetlb).
fn hybrid_with_v2_controllers() -> bool {
    let unified = Path::new(ROOT).join("unified").join("cgroup.controllers");
    !v2() && fs::read_to_string(unified).is_ok_and(|c| !c.trim().is_empty())
}

/// crun (1.8) refuses to run on a hybrid host whose v2 hierarchy holds any
/// controller ("cgroups in hybrid mode not supported"), although it uses
/// only the v1 controllers there. So that it runs unchanged, faasd (in a
/// mount namespace of its own: `sys::private_mounts`) makes that
/// controller list read empty there. Returns whether it was needed.
pub fn hide_v2_controllers_from_runtime() -> std::io::Result<bool> {
    use nix::mount::{mount, MsFlags};
    if !hybrid_with_v2_controllers() {
        return Ok(false);
    }
    mount(
        Some("/dev/null"),
        &Path::new(ROOT).join("unified").join("cgroup.controllers"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    Ok(true)
}

/// Reads the usage of container `id` (after its end).
pub fn usage(scope: &str, id: &str) -> Option<Usage> {
    if v2() {
        let dir = Path::new(ROOT).join(scope).join(id);
        let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())?;
        let peak = read_u64(&dir.join("memory.peak")).unwrap_or(0);
        return Some(Usage {
            cpu_seconds: usec as f64 / 1e6,
            peak_bytes: peak,
        });
    }
    let ns = read_u64(
        &Path::new(ROOT)
            .join("cpuacct")
            .join(scope)
            .join(id)
            .join("cpuacct.usage"),
    )?;
    let peak = read_u64(
        &Path::new(ROOT)
            .join("memory")
            .join(scope)
            .join(id)
            .join("memory.max_usage_in_bytes"),
    )
    .unwrap_or(0);
    Some(Usage {
        cpu_seconds: ns as f64 / 1e9,
        peak_bytes: peak,
    })
}

/// What container `id` takes in memory now, if its cgroup is there: its
/// processes' pages and the kernel's, without the page cache charged to
/// it (the image's files, shared by every container of the version, are
/// charged to whichever read them first).
pub fn memory_now(scope: &str, id: &str) -> Option<u64> {
    let (dir, usage, cache) = if v2() {
        (
            Path::new(ROOT).join(scope).join(id),
            "memory.current",
            "file",
        )
    } else {
        (
            Path::new(ROOT).join("memory").join(scope).join(id),
            "memory.usage_in_bytes",
            "cache",
        )
    };
    let total = read_u64(&dir.join(usage))?;
    let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let cached = stat
        .lines()
        .find_map(|l| l.strip_prefix(cache)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(total.saturating_sub(cached))
}

/// Makes container `id`'s cgroup run at idle priority (`cpu.idle`, the
/// group's SCHED_IDLE: its processes get only CPU time no other group
/// wants), or back at normal. Per group, since a process's own priority
/// counts only against the processes of its own group.
pub fn set_idle(scope: &str, id: &str, idle: bool) -> std::io::Result<()> {
    let dir = if v2() {
        Path::new(ROOT).join(scope).join(id)
    } else {
        Path::new(ROOT).join("cpu").join(scope).join(id)
    };
    fs::write(dir.join("cpu.idle"), if idle { "1" } else { "0" })
}

/// The processes in container `id` now.
pub fn procs(scope: &str, id: &str) -> Vec<i32> {
    let dir = if v2() {
        Path::new(ROOT).join(scope).join(id)
    } else {
        Path::new(ROOT).join("memory").join(scope).join(id)
    };
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|list| list.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Makes container `id`'s pids cgroup ahead of the runtime and gives its
/// directory to `owner` (host uid, gid): a `--fork` zygote running as
/// that user makes a cgroup per child below it, each with a pids limit
/// of its own under the container's. cgroup v1 only (this host's pids
/// controller); elsewhere `None`, and the children share the container's
/// limit.
pub fn delegate_pids(scope: &str, id: &str, owner: (u32, u32)) -> std::io::Result<Option<PathBuf>> {
    if v2() {
        return Ok(None);
    }
    let dir = Path::new(ROOT).join("pids").join(scope).join(id);
    if !dir
        .parent()
        .is_some_and(|p| p.parent().is_some_and(Path::is_dir))
    {
        return Ok(None);
    }
    fs::create_dir_all(&dir)?;
    std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1))?;
    Ok(Some(dir))
}

/// Removes container `id`'s cgroups in every hierarchy, with what was
/// made below them (a `--fork` zygote's per-child cgroups, the leaf `c`
/// that faasd before 2026-12-01 gave the runtime).
pub fn remove(scope: &str, id: &str) {
    for dir in hierarchies() {
        remove_tree(&dir.join(scope).join(id));
    }
}

/// Removes an empty cgroup and its empty descendants (cgroupfs removes
/// a directory only once its children are gone).
fn remove_tree(cgroup: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    fs::remove_dir(cgroup).is_ok()
}

/// Removes every container cgroup an earlier run left (empty ones only:
/// the kernel refuses to remove a cgroup that still has processes).
pub fn sweep(scope: &str) -> usize {
    let mut removed = 0;
    for dir in hierarchies() {
        let Ok(entries) = fs::read_dir(dir.join(scope)) else {
            continue;
        };
        for entry in entries.flatten() {
            if remove_tree(&entry.path()) {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes the scope's directories themselves (at shutdown, once empty).
pub fn release(scope: &str) {
    sweep(scope);
    for dir in hierarchies() {
        let _ = fs::remove_dir(dir.join(scope));
    }
}

/// Every mounted hierarchy: the v2 root, or each v1 controller directory.
fn hierarchies() -> Vec<PathBuf> {
    if v2() {
        return vec![PathBuf::from(ROOT)];
    }
    fs::read_dir(ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
