//! Files the way faasd keeps them: a private file replaced whole and
//! crash-safely (the registry, the token, secret values), and a tree
//! removed whatever it is.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes`, readable by root only (0600): written to
/// a new file beside it, synced, renamed over it, and the directory
/// synced, so a crash leaves the old content or the new, never a part.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // tempfile creates it 0600 under a name no other writer picks.
    let mut file = tempfile::Builder::new().prefix(".new-").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Makes `dir` (and its parents) if missing, private (0700) either way.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Removes the file `path` for good: its directory is fsynced after, so a
/// crash cannot bring it back. Gone already is fine.
pub fn remove_synced(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Removes `path`, a directory tree or a file; gone already is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_file_is_replaced_whole_and_nothing_else_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.json");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["registry.json"]);
    }

    #[test]
    fn removing_what_is_not_there_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove_tree(&dir.path().join("nothing")).expect("absent");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        remove_tree(&file).expect("file");
        let tree = dir.path().join("a/b");
        fs::create_dir_all(&tree).expect("mkdir");
        remove_tree(&dir.path().join("a")).expect("tree");
        assert!(!dir.path().join("a").exists());
    }
}
