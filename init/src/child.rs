//! A `--fork` child: what it is given before the image's program runs.
//!
//! Cloned by the zygote (`fork`) into new mount, pid, ipc and uts
//! namespaces (its user namespace is the zygote's, whose ids are the
//! container's one to one), it enters a network namespace no other child
//! holds (`slots`) and builds its own view:
//! its own writable root over the read-only image (or the image alone),
//! its own `/proc` with Docker's masked and read-only paths, fresh tmpfs
//! mounts on `/tmp`, the image's volumes and `/dev/shm`, a fresh mqueue.
//! Then it seals that:
//! the capability bounding set is the function's, and a second seccomp
//! filter forbids mounts and namespaces again. Only then does it serve
//! its connection as single-use faas-init does for MODE.
//!
//! Nothing of an earlier or a concurrent child is reachable: files live
//! in the child's own tmpfs mounts; loopback listeners and abstract Unix
//! sockets in a network namespace no other child holds; SysV IPC and POSIX queues in its
//! own ipc namespace; processes, signals and `/proc` in its own pid
//! namespace; its host name in its own uts namespace.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use faas_protocol::{fork as vars, layout};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::channel::{self, Handed};
use crate::mode::Mode;
use crate::seal;
use crate::slots;
use crate::stats::Stats;

/// Where a child's own tmpfs is first mounted: it holds the writable
/// layer and the control socket, and is covered by the final `/tmp`.
const STAGING: &str = "/tmp";

/// How a child is set up, from what faasd told the zygote.
#[derive(Debug)]
pub struct Plan {
    /// Bytes of the child's own writable layer over the image; `None`:
    /// the image's root read-only.
    overlay: Option<u64>,
    tmpfs: Vec<Tmpfs>,
    caps: Vec<u32>,
    /// The kernel's highest capability number.
    last_cap: u32,
    pids: Option<u64>,
    /// Which of Docker's masked paths this kernel has, and whether each is
    /// a directory; which of its read-only ones (looked up once, by the
    /// zygote, on the container's own `/proc` and `/sys`).
    masked: Vec<(&'static str, bool)>,
    readonly: Vec<&'static str>,
}

/// A fresh tmpfs a child gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tmpfs {
    path: String,
    size: u64,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Plan {
    /// The capabilities the program may hold (numbers).
    pub fn caps(&self) -> &[u32] {
        &self.caps
    }

    /// The capabilities the program may hold, as faasd wrote them.
    pub fn caps_text(&self) -> String {
        let caps: Vec<String> = self.caps.iter().map(u32::to_string).collect();
        caps.join(",")
    }

    /// The kernel's highest capability number.
    pub fn last_cap(&self) -> u32 {
        self.last_cap
    }

    /// Processes one child may have at once, if faasd said.
    pub fn pids(&self) -> Option<u64> {
        self.pids
    }

    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("{name} is not set (faasd sets it for --fork)"))
        };
        let mut plan = Self::parse(&var(vars::ROOT)?, &var(vars::TMPFS)?, &var(vars::CAPS)?)?;
        plan.pids = std::env::var(vars::PIDS).ok().and_then(|p| p.parse().ok());
        Ok(plan)
    }

    fn parse(root: &str, tmpfs: &str, caps: &str) -> Result<Self, String> {
        let overlay = match root {
            "ro" => None,
            _ => Some(
                root.strip_prefix("overlay:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        format!("{}: {root:?} is not ro or overlay:BYTES", vars::ROOT)
                    })?,
            ),
        };
        let tmpfs = tmpfs
            .split(';')
            .filter(|t| !t.is_empty())
            .map(|t| Tmpfs::parse(t).ok_or_else(|| format!("{}: bad entry {t:?}", vars::TMPFS)))
            .collect::<Result<Vec<_>, _>>()?;
        let caps = caps
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse()
                    .map_err(|_| format!("{}: bad number {c:?}", vars::CAPS))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            overlay,
            tmpfs,
            caps,
            last_cap: seal::last_cap(),
            pids: None,
            masked: layout::MASKED
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok().map(|m| (*p, m.is_dir())))
                .collect(),
            readonly: layout::READONLY
                .iter()
                .copied()
                .filter(|p| Path::new(p).exists())
                .collect(),
        })
    }
}

impl Tmpfs {
    /// `PATH:BYTES:UID:GID:MODE` (mode in octal).
    fn parse(entry: &str) -> Option<Self> {
        let mut parts = entry.rsplitn(5, ':');
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        let gid = parts.next()?.parse().ok()?;
        let uid = parts.next()?.parse().ok()?;
        let size = parts.next()?.parse().ok()?;
        let path = parts.next()?.to_string();
        path.starts_with('/').then_some(Self {
            path,
            size,
            uid,
            gid,
            mode,
        })
    }
}

/// The child's life after the clone: returns only through
/// `std::process::exit`, with its program's status where it has one.
pub fn run(plan: &Plan, mode: Mode, program: &[OsString], given: Given<'_>) -> isize {
    let code = match serve(plan, mode, program, given) {
        Ok(code) if code == ExitCode::SUCCESS => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("faas-init: fork child: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// What the zygote gives a child.
pub struct Given<'a> {
    /// Where its connection will come from (`fork::send_connection`).
    pub channel: OwnedFd,
    /// The read end of the pipe a fork server's child keeps open while
    /// it serves in this child's namespaces (`sdk`).
    pub done: OwnedFd,
    /// The network namespace to enter (none: it is in a fresh one).
    pub net: Option<OwnedFd>,
    /// Its pids cgroup, to join.
    pub cgroup: Option<&'a Path>,
    /// The zygote's counters, for the child's start latency.
    pub stats: Option<&'static Stats>,
    /// A fork server's children may enter its namespaces (`sdk`): the
    /// kernel then asks that it be dumpable, as ptrace would.
    pub enterable: bool,
}

fn serve(
    plan: &Plan,
    mode: Mode,
    program: &[OsString],
    given: Given<'_>,
) -> Result<ExitCode, String> {
    let Given {
        channel,
        done,
        net,
        cgroup,
        stats,
        enterable,
    } = given;
    // The program runs as our user, here as our child: as any faas-init,
    // out of its reach (see main) — unless a fork server's child is to
    // enter this child's namespaces: `setns` by pidfd asks what ptrace
    // would. The program can then reach this child, which holds nothing
    // but its own namespaces (seccomp denies ptrace; `/proc/1/mem` of it
    // changes nothing outside this sandbox).
    nix::sys::prctl::set_dumpable(enterable).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    // First, before anything here can fork.
    if let Some(cgroup) = cgroup {
        slots::join(cgroup)?;
    }
    match net {
        Some(net) => slots::enter(&net)?,
        None => slots::set_up()?,
    }
    seal::keep_only(&[&channel, &done])?;
    let mut unblock = nix::sys::signal::SigSet::empty();
    unblock.add(nix::sys::signal::Signal::SIGCHLD);
    unblock
        .thread_unblock()
        .map_err(|e| format!("unblocking SIGCHLD: {e}"))?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let control = build(plan, mode == Mode::Control)?;
    std::env::set_current_dir(&cwd)
        .or_else(|_| std::env::set_current_dir("/"))
        .map_err(|e| format!("chdir: {e}"))?;
    seal::bounding_set(&plan.caps, plan.last_cap)?;
    seal::no_more_namespaces()?;
    if enterable {
        // A fork server's child serves in this one's namespaces; should
        // the server be gone, this child serves the connection itself.
        let mut stream = std::os::unix::net::UnixStream::from(channel);
        match channel::next(&mut stream)? {
            Handed::Connection(conn, received) => {
                channel::record(stats, received);
                crate::handed::preset(conn);
            }
            Handed::ToForkServer => return Ok(held_until_done(done)),
            Handed::Nothing => return Ok(ExitCode::SUCCESS),
        }
    } else {
        // Prepared: the program starts now, ahead of its connection, as in
        // a pool container; `handed::receive` waits for it on `channel`.
        crate::handed::from_zygote(std::os::unix::net::UnixStream::from(channel), stats);
    }
    drop(done);
    match mode {
        Mode::Stdio => crate::stdio::serve(program),
        Mode::Port(port) => crate::accept::serve(port, program),
        Mode::Control => match control {
            Some(listener) => crate::control::serve(program, listener),
            None => Err("no control socket was made".into()),
        },
        Mode::Listen | Mode::Bind(_) => Err(format!("{mode:?} cannot be forked")),
    }
}

/// Holds this child's namespaces (its pid namespace's init) until the
/// fork server's child serving in them, and all it started, have let go
/// of `done`; ending then ends them all.
fn held_until_done(done: OwnedFd) -> ExitCode {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&done, &mut byte) {
            Ok(0) => return ExitCode::SUCCESS,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(_) => return ExitCode::from(1),
        }
    }
}

/// Builds the child's view of the filesystem; the listener at
/// `/control.sock` if `control`.
///
/// Every writable path is a directory of one tmpfs of the child's own
/// (the staging tmpfs, also the writable layer's), bound into place: a
/// tmpfs instance per path would cost a superblock each, the dearest
/// part of a mount.
fn build(plan: &Plan, control: bool) -> Result<Option<UnixListener>, String> {
    let staging = Path::new(STAGING);
    let size =
        plan.overlay.unwrap_or(0) + SHM_BYTES + plan.tmpfs.iter().map(|t| t.size).sum::<u64>();
    tmpfs(staging, size, 0o755)?;
    let listener = match control {
        true => {
            let path = staging.join("control.sock");
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("binding {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            Some(listener)
        }
        false => None,
    };
    let mut writable = vec![Writable {
        at: "/dev/shm",
        uid: 0,
        gid: 0,
        mode: 0o1777,
    }];
    writable.extend(plan.tmpfs.iter().map(|t| Writable {
        at: &t.path,
        uid: t.uid,
        gid: t.gid,
        mode: t.mode,
    }));
    for (n, w) in writable.iter().enumerate() {
        w.make(&staging.join(format!("w{n}")))?;
    }
    let root = match plan.overlay {
        Some(_) => writable_root()?,
        None => PathBuf::from("/"),
    };
    let at = |path: &str| root.join(layout::in_rootfs(path));
    proc_fresh(&at("/proc"))?;
    let empty = mask(&root, plan)?;
    if plan.overlay.is_none() {
        hide_zygotes(empty.as_deref())?;
    }
    mount_or(
        Some("mqueue"),
        at("/dev/mqueue"),
        Some("mqueue"),
        nosuid_nodev_noexec(),
        None,
    )?;
    if listener.is_some() {
        bind(&staging.join("control.sock"), &at(layout::CONTROL_SOCKET))?;
    }
    for (n, w) in writable.iter().enumerate() {
        bind(&staging.join(format!("w{n}")), &at(w.at))?;
    }
    if plan.overlay.is_some() {
        enter_root(&root)?;
    }
    Ok(listener)
}

/// Size of a child's `/dev/shm`, as in a container.
const SHM_BYTES: u64 = 64 << 20;

/// A writable path of the child's: a directory in the staging tmpfs.
struct Writable<'a> {
    at: &'a str,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Writable<'_> {
    fn make(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.mode))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))
    }
}

fn bind(from: &Path, to: &Path) -> Result<(), String> {
    mount_or(Some(from), to, None, MsFlags::MS_BIND, None)
}

/// A fresh writable layer over the image, in the staging tmpfs, with the
/// kernel's filesystems and the function's secrets bound into it: the
/// new root, not entered yet.
fn writable_root() -> Result<PathBuf, String> {
    let staging = Path::new(STAGING);
    for dir in ["upper", "work", "root"] {
        std::fs::create_dir(staging.join(dir)).map_err(|e| format!("mkdir {dir}: {e}"))?;
    }
    // The upper layer's root takes the image root's owner and mode.
    let image_root = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
    let upper = staging.join("upper");
    std::os::unix::fs::chown(
        &upper,
        Some(std::os::unix::fs::MetadataExt::uid(&image_root)),
        Some(std::os::unix::fs::MetadataExt::gid(&image_root)),
    )
    .map_err(|e| format!("chown upper: {e}"))?;
    std::fs::set_permissions(&upper, image_root.permissions())
        .map_err(|e| format!("chmod upper: {e}"))?;
    let root = staging.join("root");
    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        layout::IMAGE,
        upper.display(),
        staging.join("work").display()
    );
    mount_or(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )?;
    for kernel in ["/dev", "/sys"] {
        mount_or(
            Some(kernel),
            root.join(layout::in_rootfs(kernel)),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    if Path::new(layout::SECRETS).is_dir() {
        mount_or(
            Some(layout::SECRETS),
            root.join(layout::in_rootfs(layout::SECRETS)),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    Ok(root)
}

/// Makes `root` this child's `/`, the image's own root let go of.
fn enter_root(root: &Path) -> Result<(), String> {
    std::env::set_current_dir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    // The old root ends up under the new one, at the same place: let go
    // of it there.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the image's root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// This pid namespace's own `/proc`.
fn proc_fresh(at: &Path) -> Result<(), String> {
    mount_or(Some("proc"), at, Some("proc"), nosuid_nodev_noexec(), None)
}

/// Docker's masked and read-only paths, in this child's `/proc` and
/// `/sys`: `/dev/null` over files; over directories one empty read-only
/// tmpfs, bound to the others (a bind keeps its source's read-only flag).
fn mask(root: &Path, plan: &Plan) -> Result<Option<PathBuf>, String> {
    let mut empty: Option<PathBuf> = None;
    for &(path, dir) in &plan.masked {
        let target = root.join(layout::in_rootfs(path));
        match &empty {
            Some(first) if dir => bind(first, &target)?,
            None if dir => {
                mount_or(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | nosuid_nodev_noexec(),
                    Some("size=4k"),
                )?;
                empty = Some(target);
            }
            _ => bind(Path::new("/dev/null"), &target)?,
        }
    }
    for path in &plan.readonly {
        let target = root.join(layout::in_rootfs(path));
        bind(&target, &target)?;
        mount_or(
            None::<&str>,
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(empty)
}

/// Covers what faasd gave the zygote in the image's root, which a child
/// on that root would otherwise share: the container's control socket
/// (the way to faasd's connections for this container) and the pids
/// cgroup. `empty` is a read-only empty directory to bind over a
/// directory. A child on a writable root of its own has neither (its
/// root shows the image's placeholders).
fn hide_zygotes(empty: Option<&Path>) -> Result<(), String> {
    bind(Path::new("/dev/null"), Path::new(layout::CONTROL_SOCKET))?;
    if Path::new(layout::FORK_STATS).is_file() {
        bind(Path::new("/dev/null"), Path::new(layout::FORK_STATS))?;
    }
    let cgroup = Path::new(layout::CGROUP);
    match empty {
        _ if !cgroup.is_dir() => Ok(()),
        Some(empty) => bind(empty, cgroup),
        None => mount_or(
            Some("tmpfs"),
            cgroup,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | nosuid_nodev_noexec(),
            Some("size=4k"),
        ),
    }
}

fn tmpfs(at: &Path, size: u64, mode: u32) -> Result<(), String> {
    mount_or(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("size={size},mode={mode:o}")),
    )
}

fn nosuid_nodev_noexec() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

fn mount_or<S: AsRef<Path> + ?Sized>(
    source: Option<&S>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let target = target.as_ref();
    mount(source.map(|s| s.as_ref()), target, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} on {}: {e}",
            fstype.unwrap_or("a bind"),
            target.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_as_faasd_writes_them() {
        let plan = Plan::parse(
            "overlay:67108864",
            "/tmp:67108864:0:0:1777;/var/lib/data:1048576:33:33:755",
            "0,1,21",
        )
        .expect("plan");
        assert_eq!(plan.overlay, Some(64 << 20));
        assert_eq!(plan.caps, vec![0, 1, 21]);
        assert_eq!(
            plan.tmpfs[1],
            Tmpfs {
                path: "/var/lib/data".into(),
                size: 1 << 20,
                uid: 33,
                gid: 33,
                mode: 0o755
            }
        );
        assert_eq!(Plan::parse("ro", "", "").expect("ro").overlay, None);
        assert!(Plan::parse("rw", "", "").is_err());
        assert!(Plan::parse("ro", "tmp:1:0:0:1777", "").is_err());
        assert!(Plan::parse("ro", "", "x").is_err());
    }
}
