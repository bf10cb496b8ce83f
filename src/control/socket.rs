//! The control API's Unix socket: created for root and the `faasd` group
//! only (0660, or 0600 when there is no such group), replacing a stale one
//! a crashed run left but never one another faasd still answers on, and
//! removed at shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Group};
use tokio::net::UnixListener;

/// The group whose members may drive faasd through the socket.
pub const GROUP: &str = "faasd";

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {0} is in use by another faasd")]
    InUse(PathBuf),
    #[error("control socket {0} exists and is not a socket: remove it or choose another --socket")]
    NotASocket(PathBuf),
    #[error("control socket {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A bound control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: SocketFile,
}

/// The socket's file, removed when this is dropped.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ControlSocket {
    pub fn into_parts(self) -> (UnixListener, SocketFile) {
        (self.listener, self.path)
    }
}

/// Binds `path` with the permissions above.
pub fn bind(path: &Path) -> Result<ControlSocket, SocketError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| SocketError::Io { path, op, source }
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io("chmod of its directory"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("looking at it")(e)),
    }
    // Bound at a private name, given its owner and mode, then renamed into
    // place: there is no moment where anyone else could connect.
    let staging = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(io("binding"))?;
    let prepared = (|| {
        let mode = match Group::from_name(GROUP) {
            Ok(Some(group)) => {
                chown(&staging, None, Some(group.gid))
                    .map_err(|e| io("chown to the faasd group")(e.into()))?;
                0o660
            }
            _ => 0o600,
        };
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod"))?;
        std::fs::rename(&staging, path).map_err(io("renaming into place"))
    })();
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    let socket = ControlSocket {
        listener,
        path: SocketFile(path.to_path_buf()),
    };
    Ok(socket)
}
