//! Filesystem operations confined to one root directory. Every path is
//! resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`, so `..` and
//! symlinks (absolute or relative) can never lead outside the root: a
//! symlink to `/etc` inside an image means `<root>/etc`, exactly as the
//! container will see it. The final component is never followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchownat, linkat, mkfifoat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// What kind of object sits at a path (never following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Other,
}

/// A directory all operations stay inside.
pub struct Root {
    fd: OwnedFd,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// `""` for the root itself.
fn dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io_err)?;
        Ok(Self { fd })
    }

    /// Opens a directory inside the root (symlinks resolved inside it).
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        openat2(self.fd.as_fd(), dot(rel), how).map_err(io_err)
    }

    /// Like `mkdir -p` inside the root, then opens the result.
    pub fn ensure_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut sofar = PathBuf::new();
        for comp in rel.components() {
            let parent = self.open_dir(&sofar)?;
            sofar.push(comp);
            match mkdirat(
                parent.as_fd(),
                comp.as_os_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        self.open_dir(rel)
    }

    /// Opens a file inside the root for reading (symlinks resolved inside it).
    pub fn read_file(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let fd = openat2(self.fd.as_fd(), dot(rel), how).map_err(io_err)?;
        let mut out = Vec::new();
        io::Read::read_to_end(&mut File::from(fd), &mut out)?;
        Ok(out)
    }

    /// Links `name` in `dir` to the object at `target` (inside the root).
    pub fn hardlink(&self, target: &Path, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        let src = openat2(self.fd.as_fd(), dot(target), how).map_err(io_err)?;
        linkat(src.as_fd(), "", dir.as_fd(), name, AtFlags::AT_EMPTY_PATH).map_err(io_err)
    }
}

/// What is at `name` in `dir`, without following a symlink.
pub fn lookup(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<Kind>> {
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            Ok(Some(if fmt == SFlag::S_IFDIR {
                Kind::Dir
            } else {
                Kind::Other
            }))
        }
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// Removes whatever is at `name` in `dir`, recursively for directories.
pub fn remove(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match lookup(dir, name)? {
        None => Ok(()),
        Some(Kind::Other) => {
            unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir).map_err(io_err)
        }
        Some(Kind::Dir) => {
            // The /proc link names the directory's real location, already
            // resolved inside the root; remove_dir_all never follows symlinks.
            let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
            std::fs::remove_dir_all(real.join(name))
        }
    }
}

/// Names in a directory (without `.` and `..`).
pub fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    std::fs::read_dir(real)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// Creates a new regular file (never through an existing name).
pub fn create_file(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(io_err)?;
    let file = File::from(fd);
    // The umask trimmed the creation mode; set it exactly.
    nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(io_err)?;
    Ok(file)
}

pub fn mkdir(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)).map_err(io_err)
}

/// Sets a directory's mode (the directory itself, never a symlink).
pub fn chmod_dir(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(io_err)
}

pub fn symlink(dir: &OwnedFd, name: &OsStr, target: &Path) -> io::Result<()> {
    symlinkat(target, dir.as_fd(), name).map_err(io_err)
}

pub fn mkfifo(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    mkfifoat(dir.as_fd(), name, Mode::from_bits_truncate(mode)).map_err(io_err)
}

/// Sets the owner of `name` itself (not a symlink's target).
pub fn chown(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().expect("tempdir");
        let root_dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("escape"))
            .expect("symlink");
        std::os::unix::fs::symlink("../../../..", root_dir.path().join("up")).expect("symlink");
        let root = Root::open(root_dir.path()).expect("open root");
        // An absolute symlink is taken relative to the root: the outside
        // directory does not exist inside it.
        assert!(root.open_dir(Path::new("escape")).is_err());
        let up = root.open_dir(Path::new("up")).expect("open up");
        let real =
            std::fs::read_link(format!("/proc/self/fd/{}", up.as_raw_fd())).expect("readlink");
        assert_eq!(real, root_dir.path().canonicalize().expect("canon"));
        let made = root.ensure_dir(Path::new("up/a/b")).expect("mkdir -p");
        let real =
            std::fs::read_link(format!("/proc/self/fd/{}", made.as_raw_fd())).expect("readlink");
        assert!(real.starts_with(root_dir.path().canonicalize().expect("canon")));
    }
}
