//! Installing `faas-init`, the static helper the stdio, socket-activation
//! and container-port kinds run as their containers' first process: found
//! (`--init`, or next to `faasd`), checked to be a static executable (it
//! runs inside images that may have no libc at all), and copied into the
//! state directory, where every container's runtime can reach it and
//! bind-mount it read-only.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NAME: &str = "faas-init";
/// ELF program header type of a dynamic loader request.
const PT_INTERP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a static executable (it runs inside images without a libc): build it with scripts/build-init.sh")]
    NotStatic(PathBuf),
    #[error("installing faas-init at {path}: {source}")]
    Install {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where faas-init comes from: `--init`, or beside the running executable.
pub fn source(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let beside = std::env::current_exe().ok()?.with_file_name(NAME);
    beside.is_file().then_some(beside)
}

/// Copies `from` (checked) to `<state>/init/faas-init` and returns that path.
pub fn install(from: &Path, state: &Path) -> Result<PathBuf, InitError> {
    let bytes = fs::read(from).map_err(|source| InitError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    if !is_static_elf(&bytes) {
        return Err(InitError::NotStatic(from.to_path_buf()));
    }
    let dir = state.join("init");
    let path = dir.join(NAME);
    let err = |source| InitError::Install {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(err)?;
    // Containers (unprivileged host ids) pass through to it, and run it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(err)?;
    let tmp = dir.join(format!(".{NAME}.tmp"));
    fs::write(&tmp, &bytes).map_err(err)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// A 64-bit little-endian ELF executable that asks for no loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes.get(at..at + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // Magic, 64-bit, little-endian.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic() {
        // This test binary is dynamically linked: it names a loader.
        let exe = std::env::current_exe().expect("exe");
        assert!(!is_static_elf(&fs::read(exe).expect("read")));
        assert!(!is_static_elf(b"#!/bin/sh\necho hi\n"));
        // A minimal static header: ELF64 LE, no program headers.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(is_static_elf(&elf));
    }

    #[test]
    fn installs_a_copy_others_can_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let src = dir.path().join("faas-init");
        fs::write(&src, &elf).expect("write");
        let state = dir.path().join("state");
        let installed = install(&src, &state).expect("install");
        assert_eq!(installed, state.join("init/faas-init"));
        let mode = fs::metadata(&installed).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        fs::write(&src, b"#!/bin/sh\n").expect("write");
        assert!(matches!(
            install(&src, &state),
            Err(InitError::NotStatic(_))
        ));
    }
}
