//! The persistent record of deployed functions: one JSON file in the state
//! directory, replaced crash-safely (write a temp file, fsync, rename, fsync
//! the directory) so a crash leaves either the old or the new record.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::DeployOptions;
use crate::image::ImageConfig;
use crate::name::FunctionName;

const FILE: &str = "registry.json";

/// One deployed function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: FunctionName,
    pub ip: Ipv4Addr,
    /// Which rootfs directory of the store serves it.
    pub version: u64,
    pub image_id: String,
    pub image: ImageConfig,
    pub options: DeployOptions,
    pub deployed_at: u64,
    /// Its host id range (`image::owners`); absent in records written
    /// before ranges existed, assigned at the next start.
    #[serde(default)]
    pub id_slot: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    next_version: u64,
    functions: BTreeMap<FunctionName, FunctionRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading registry {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing registry {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The registry, loaded in memory and saved on every change.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    contents: Contents,
}

impl Registry {
    /// Loads `<dir>/registry.json`, or starts empty when there is none.
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let path = dir.join(FILE);
        let contents = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            contents,
        })
    }

    pub fn get(&self, name: &FunctionName) -> Option<&FunctionRecord> {
        self.contents.functions.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &FunctionRecord> {
        self.contents.functions.values()
    }

    /// The lowest id range no function has.
    pub fn free_id_slot(&self) -> u32 {
        let taken: std::collections::HashSet<u32> = self.list().filter_map(|r| r.id_slot).collect();
        (0..crate::image::owners::SLOTS)
            .find(|s| !taken.contains(s))
            .unwrap_or_default()
    }

    /// A version number never used before (store directories are unique).
    pub fn next_version(&mut self) -> u64 {
        self.contents.next_version += 1;
        self.contents.next_version
    }

    /// Inserts or replaces a record and saves.
    pub fn put(&mut self, record: FunctionRecord) -> Result<Option<FunctionRecord>, RegistryError> {
        let old = self.contents.functions.insert(record.name.clone(), record);
        self.save()?;
        Ok(old)
    }

    /// Removes a record and saves.
    pub fn remove(&mut self, name: &FunctionName) -> Result<Option<FunctionRecord>, RegistryError> {
        let old = self.contents.functions.remove(name);
        if old.is_some() {
            self.save()?;
        }
        Ok(old)
    }

    /// Writes the whole registry crash-safely.
    pub fn save(&self) -> Result<(), RegistryError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let werr = |source| RegistryError::Write {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&self.contents).map_err(|e| werr(e.into()))?;
        // Deploy options hold the functions' environment: private.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr)?;
        file.write_all(&bytes).map_err(werr)?;
        file.sync_all().map_err(werr)?;
        fs::rename(&tmp, &path).map_err(werr)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ip: [u8; 4]) -> FunctionRecord {
        FunctionRecord {
            name: FunctionName::parse(name).expect("name"),
            ip: Ipv4Addr::from(ip),
            version: 1,
            image_id: "sha256:x".into(),
            image: ImageConfig::default(),
            options: DeployOptions::default(),
            deployed_at: 0,
            id_slot: None,
        }
    }

    #[test]
    fn survives_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::load(dir.path()).expect("load");
        assert_eq!(reg.next_version(), 1);
        reg.put(record("a", [127, 10, 0, 1])).expect("put");
        reg.put(record("b", [127, 10, 0, 2])).expect("put");
        reg.remove(&FunctionName::parse("a").expect("name"))
            .expect("remove");
        let reg = Registry::load(dir.path()).expect("reload");
        let names: Vec<_> = reg.list().map(|r| r.name.to_string()).collect();
        assert_eq!(names, vec!["b"]);
        assert!(!dir.path().join("registry.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), b"{not json").expect("write");
        assert!(matches!(
            Registry::load(dir.path()),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
