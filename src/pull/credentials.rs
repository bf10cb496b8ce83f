//! Registry credentials (`faas registry login`), kept as secrets are:
//! root-only under `<state>/registries` (0700, one file 0600 per
//! registry host), never handed back by any API (`list` names hosts and
//! user names only), never logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

const DIR: &str = "registries";
/// Longest user name or password taken.
const MAX_FIELD: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid registry host {0:?}: write it as in an image reference (ghcr.io, 127.0.0.1:5000, docker.io)")]
    Host(String),
    #[error("{0}")]
    Invalid(String),
    #[error("not logged in to {0}")]
    NotFound(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CredentialError + 'a {
    move |source| CredentialError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    username: String,
    password: String,
}

/// A stored login as the API shows it: never the password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Login {
    pub registry: String,
    pub username: String,
}

pub struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    pub fn open(state: &Path) -> Result<Arc<Self>, CredentialError> {
        let dir = state.join(DIR);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &dir))?;
        Ok(Arc::new(Self { dir }))
    }

    /// Stores (or replaces) the login for `host`; returns the host as kept.
    pub fn store(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<String, CredentialError> {
        let host = normalise_host(host)?;
        for (what, value) in [("user name", username), ("password", password)] {
            if value.is_empty() || value.len() > MAX_FIELD || value.contains(['\0', '\n', '\r']) {
                return Err(CredentialError::Invalid(format!(
                    "the {what} must be 1 to {MAX_FIELD} bytes on one line"
                )));
            }
        }
        if username.contains(':') {
            return Err(CredentialError::Invalid(
                "a user name cannot hold ':' (HTTP basic auth)".into(),
            ));
        }
        let bytes = serde_json::to_vec(&Stored {
            username: username.into(),
            password: password.into(),
        })
        .map_err(|e| CredentialError::Invalid(e.to_string()))?;
        let path = self.dir.join(&host);
        let tmp = self.dir.join(format!(".{host}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
        Ok(host)
    }

    pub fn remove(&self, host: &str) -> Result<String, CredentialError> {
        let host = normalise_host(host)?;
        let path = self.dir.join(&host);
        match fs::remove_file(&path) {
            Ok(()) => Ok(host),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CredentialError::NotFound(host))
            }
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    pub fn list(&self) -> Result<Vec<Login>, CredentialError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("reading", &self.dir))? {
            let entry = entry.map_err(io_err("reading", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(stored) = self.read(&name)? {
                out.push(Login {
                    registry: name,
                    username: stored.username,
                });
            }
        }
        out.sort_by(|a, b| a.registry.cmp(&b.registry));
        Ok(out)
    }

    /// What to pull from `registry` (as a reference names it) with.
    pub fn auth(&self, registry: &str) -> Result<RegistryAuth, CredentialError> {
        let host = normalise_host(registry)?;
        Ok(match self.read(&host)? {
            Some(s) => RegistryAuth::Basic(s.username, s.password),
            None => RegistryAuth::Anonymous,
        })
    }

    pub fn has(&self, registry: &str) -> bool {
        normalise_host(registry).is_ok_and(|h| self.dir.join(h).exists())
    }

    fn read(&self, host: &str) -> Result<Option<Stored>, CredentialError> {
        let path = self.dir.join(host);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CredentialError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }
}

/// A registry host as references name it: Docker Hub's names are all
/// `docker.io`; a scheme or trailing path (as `docker login` accepts) goes.
pub fn normalise_host(host: &str) -> Result<String, CredentialError> {
    let bare = host
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let bare = bare.split('/').next().unwrap_or("").to_ascii_lowercase();
    let valid = !bare.is_empty()
        && bare.len() <= 255
        && !bare.starts_with('.')
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(CredentialError::Host(host.into()));
    }
    Ok(match bare.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => bare,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_as_references_name_them() {
        assert_eq!(
            normalise_host("https://index.docker.io/v1/").expect("ok"),
            "docker.io"
        );
        assert_eq!(normalise_host("GHCR.io").expect("ok"), "ghcr.io");
        assert_eq!(
            normalise_host("127.0.0.1:5000").expect("ok"),
            "127.0.0.1:5000"
        );
        assert!(normalise_host("..").is_err());
        assert!(normalise_host("a b").is_err());
        assert!(normalise_host("").is_err());
    }

    #[test]
    fn stores_lists_without_passwords_and_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = Credentials::open(dir.path()).expect("open");
        assert!(matches!(creds.auth("ghcr.io"), Ok(RegistryAuth::Anonymous)));
        creds.store("ghcr.io", "me", "s3cret").expect("store");
        let mode = fs::metadata(dir.path().join(DIR).join("ghcr.io"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let listed = creds.list().expect("list");
        assert_eq!(
            listed,
            vec![Login {
                registry: "ghcr.io".into(),
                username: "me".into()
            }]
        );
        assert!(!format!("{listed:?}").contains("s3cret"));
        assert!(
            matches!(creds.auth("ghcr.io"), Ok(RegistryAuth::Basic(u, p)) if u == "me" && p == "s3cret")
        );
        assert!(creds.store("x.io", "a:b", "p").is_err());
        assert!(creds.store("x.io", "a", "p\nq").is_err());
        creds.remove("ghcr.io").expect("remove");
        assert!(matches!(
            creds.remove("ghcr.io"),
            Err(CredentialError::NotFound(_))
        ));
    }
}
