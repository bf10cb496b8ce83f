//! Composing a read-only rootfs from shared layers: an overlayfs whose
//! lower layers are idmapped, detached mounts of the layer store, so one
//! unpacked layer (owned by the image's own ids) serves every function,
//! each seeing it owned by its own host id range. The one place for the
//! mount API syscalls (`open_tree`, `mount_setattr`, `fsopen`,
//! `fsconfig`, `fsmount`, `move_mount`) and for the throwaway process
//! that makes a user namespace to map ids with.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::owners::ID_RANGE;

// Kernel ABI (include/uapi/linux/mount.h); not all are in `libc` yet.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// A syscall's result as a descriptor it returned.
fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor of ours;
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn done(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a writable overlay keeps its changes: a new layer being
/// unpacked onto those below it.
pub struct Upper<'a> {
    pub dir: &'a Path,
    /// overlayfs's scratch directory, on the same filesystem.
    pub work: &'a Path,
}

/// Composes `layers` (topmost first) at `target`: read-only, or writable
/// into `upper`. With `id_base`, every layer is seen through an id map
/// that puts the image's ids 0..65535 at the host range starting there;
/// without, as stored (faasd's own look inside, or a layer unpacked).
pub fn compose(
    target: &Path,
    layers: &[&Path],
    id_base: Option<u32>,
    upper: Option<Upper<'_>>,
) -> io::Result<()> {
    let userns = id_base.map(userns).transpose()?;
    let mut lower = Vec::with_capacity(layers.len());
    for layer in layers {
        lower.push(detached(layer, userns.as_ref().map(|u| u.as_fd()))?);
    }
    // SAFETY: a plain syscall with a NUL-terminated name; the kernel
    // returns a new descriptor or -1.
    let fs =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    for layer in &lower {
        // SAFETY: `fs` and `layer` are descriptors we own; the key is
        // NUL-terminated; the value pointer is unused for SET_FD.
        done(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_FD,
                c"lowerdir+".as_ptr(),
                std::ptr::null::<libc::c_char>(),
                layer.as_raw_fd(),
            )
        })
        .map_err(|e| context(e, "adding an overlay layer"))?;
    }
    let mut attrs = MOUNT_ATTR_NODEV;
    match upper {
        Some(upper) => {
            set_string(&fs, c"upperdir", upper.dir)?;
            set_string(&fs, c"workdir", upper.work)?;
            // A layer being unpacked: unmounting would otherwise sync the
            // whole upper filesystem after every layer (most of a pull's
            // time); the store syncs once, when the image is whole.
            // SAFETY: as below; a flag takes no value.
            done(unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_SET_FLAG,
                    c"volatile".as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            })
            .map_err(|e| context(e, "making the unpacking overlay volatile"))?;
        }
        None => {
            attrs |= MOUNT_ATTR_RDONLY;
            // SAFETY: as above; a flag takes no value.
            done(unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_SET_FLAG,
                    c"ro".as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            })?;
        }
    }
    // SAFETY: as above; CMD_CREATE takes no key or value.
    done(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map_err(|e| context(e, "creating the overlay"))?;
    // SAFETY: `fs` is a configured filesystem context of ours.
    let mnt =
        owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    let to = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: `mnt` is a detached mount of ours; `to` is NUL-terminated.
    done(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map_err(|e| context(e, "attaching the overlay"))
}

/// Sets a string option (a path) of the filesystem context `fs`.
fn set_string(fs: &OwnedFd, key: &std::ffi::CStr, value: &Path) -> io::Result<()> {
    let v = cstr(value.as_os_str().as_bytes())?;
    // SAFETY: `fs` is our context; key and value are NUL-terminated and
    // outlive the call.
    done(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            v.as_ptr(),
            0,
        )
    })
    .map_err(|e| context(e, &format!("overlay option {key:?}")))
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A private, read-only copy of the mount at `path`, id-mapped through
/// `userns` when given.
fn detached(path: &Path, userns: Option<BorrowedFd<'_>>) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `p` is NUL-terminated; the kernel returns a new descriptor.
    let fd = owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })
    .map_err(|e| context(e, &format!("cloning {}", path.display())))?;
    let mut attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    // SAFETY: `fd` is our detached mount, `attr` lives across the call and
    // its size is passed with it.
    done(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map_err(|e| context(e, "id-mapping a layer"))?;
    Ok(fd)
}

/// A user namespace mapping ids 0..65535 to `base`..: made by a child
/// cloned straight into a new one, which waits (on a pipe) until its
/// maps are written and the namespace is held by a descriptor. The child
/// is cloned without an exit signal, so the daemon's SIGCHLD reaper never
/// sees it and we wait for it here. It holds the pipe's write end too, so
/// it is let go by a byte, not by EOF.
fn userns(base: u32) -> io::Result<OwnedFd> {
    let (hold_r, hold_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut stack = vec![0u8; 64 * 1024];
    let hold_raw = hold_r.as_raw_fd();
    let child = Box::new(move || {
        let mut byte = 0u8;
        // SAFETY: a read into a local byte; async-signal-safe, as the
        // child of a threaded process must be.
        unsafe { libc::read(hold_raw, (&mut byte as *mut u8).cast(), 1) };
        0
    });
    // SAFETY: the child runs only the closure above (one read, then
    // exit) on its own copy of our memory, with `stack` as its stack.
    let pid = unsafe {
        nix::sched::clone(
            child,
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            None,
        )
    }
    .map_err(io::Error::from)?;
    drop(hold_r);
    let made = (|| {
        let map = format!("0 {base} {ID_RANGE}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok::<_, io::Error>(OwnedFd::from(std::fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    let released = nix::unistd::write(&hold_w, b"x");
    if released.is_err() {
        // It cannot be let go; it must not be waited for forever.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    while let Err(Errno::EINTR) =
        nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL))
    {}
    made.map_err(|e| context(e, "making an id map"))
}

/// Unmounts whatever is mounted at `target` (stacked mounts too); not
/// mounted is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    for _ in 0..16 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}
