//! The persistent record of deployed functions: one JSON file a function
//! under `<state>/functions/`, and the store's id counter in
//! `<state>/registry.json`, each replaced crash-safely (write a temp file,
//! fsync, rename, fsync the directory) so a crash leaves either the old or
//! the new record. A change writes only what it changed: with one file for
//! all, a deploy rewrote every record, and a node of 2,000 functions spent
//! most of a deploy doing it.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::name::FunctionName;
use crate::api::{DeployOptions, ImageRef};
use crate::image::ImageConfig;

/// The store's id counter (and, before per-function files, every record).
const FILE: &str = "registry.json";
/// One `NAME.json` a function.
const FUNCTIONS: &str = "functions";

/// One deployed function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: FunctionName,
    pub ip: IpAddr,
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
    /// Which store directory holds its rootfs (absent in records written
    /// before versions were kept: `version`'s).
    #[serde(default)]
    pub rootfs: Option<u64>,
    /// What made this version: `deploy`, `update` or `rollback`.
    #[serde(default = "deployed")]
    pub origin: String,
    /// The registry reference and digest it was pulled by (absent for an
    /// uploaded archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<ImageRef>,
    /// Versions kept to roll back to, the one that served last first.
    #[serde(default)]
    pub history: Vec<Version>,
}

fn deployed() -> String {
    "deploy".into()
}

/// A version that served before, kept with its rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub rootfs: u64,
    pub image_id: String,
    pub image: ImageConfig,
    pub options: DeployOptions,
    pub deployed_at: u64,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<ImageRef>,
}

impl FunctionRecord {
    /// The store directory of the serving version.
    pub fn rootfs_id(&self) -> u64 {
        self.rootfs.unwrap_or(self.version)
    }

    /// The serving version, as history keeps it.
    pub fn as_version(&self) -> Version {
        Version {
            version: self.version,
            rootfs: self.rootfs_id(),
            image_id: self.image_id.clone(),
            image: self.image.clone(),
            options: self.options.clone(),
            deployed_at: self.deployed_at,
            origin: self.origin.clone(),
            pulled: self.pulled.clone(),
        }
    }

    /// The number of this function's next new version: versions count per
    /// function (1, 2, 3, …), a rollback serving a kept one again.
    pub fn next_version(&self) -> u64 {
        let newest = self.history.iter().map(|v| v.version).max().unwrap_or(0);
        newest.max(self.version) + 1
    }

    /// Every store directory this record needs: the serving one and the
    /// kept ones.
    pub fn rootfs_ids(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.rootfs_id()).chain(self.history.iter().map(|v| v.rootfs))
    }

    /// This record with `next` serving and the version it replaces kept
    /// first in history (at most `keep` kept); returns it and the
    /// versions that fell out.
    pub fn succeed(&self, next: Version, keep: usize) -> (FunctionRecord, Vec<Version>) {
        let mut history: Vec<Version> = std::iter::once(self.as_version())
            .chain(self.history.iter().cloned())
            .filter(|v| v.version != next.version)
            .collect();
        let dropped = if history.len() > keep {
            history.split_off(keep)
        } else {
            Vec::new()
        };
        let record = FunctionRecord {
            name: self.name.clone(),
            ip: self.ip,
            version: next.version,
            image_id: next.image_id,
            image: next.image,
            options: next.options,
            deployed_at: next.deployed_at,
            id_slot: self.id_slot,
            rootfs: Some(next.rootfs),
            origin: next.origin,
            pulled: next.pulled,
            history,
        };
        (record, dropped)
    }
}

/// `registry.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    /// The last store directory id handed out (named for when it was the
    /// version number too).
    #[serde(rename = "next_version")]
    next_store_id: u64,
    /// Only in a registry written before per-function files: moved out
    /// at load.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    #[error("registry {path} holds the record of {name}")]
    Misnamed { path: PathBuf, name: String },
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
    /// The counter as `registry.json` has it.
    saved_store_id: u64,
    next_store_id: u64,
    functions: BTreeMap<FunctionName, FunctionRecord>,
}

impl Registry {
    /// Loads `<dir>/registry.json` and `<dir>/functions/`, or starts empty
    /// when there are none; moves the records of a registry written
    /// before per-function files out into them.
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let path = dir.join(FILE);
        let contents: Contents = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let functions = dir.join(FUNCTIONS);
        crate::sys::fs::create_private_dir(&functions).map_err(|source| RegistryError::Write {
            path: functions.clone(),
            source,
        })?;
        let mut registry = Self {
            dir: dir.to_path_buf(),
            saved_store_id: contents.next_store_id,
            next_store_id: contents.next_store_id,
            functions: read_functions(&functions)?,
        };
        if !contents.functions.is_empty() {
            // A crash during the move leaves some written both ways: the
            // file is the newer.
            for (name, record) in contents.functions {
                if !registry.functions.contains_key(&name) {
                    registry.write_record(&record)?;
                    registry.functions.insert(name, record);
                }
            }
            registry.save_counter()?;
        }
        Ok(registry)
    }

    pub fn get(&self, name: &FunctionName) -> Option<&FunctionRecord> {
        self.functions.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &FunctionRecord> {
        self.functions.values()
    }

    /// The lowest id range no function has.
    pub fn free_id_slot(&self) -> u32 {
        let taken: std::collections::HashSet<u32> = self.list().filter_map(|r| r.id_slot).collect();
        (0..crate::image::owners::SLOTS)
            .find(|s| !taken.contains(s))
            .unwrap_or_default()
    }

    /// A store directory id never used before, by any function: a
    /// removed function's directories may still be in use while one of
    /// the same name is deployed again.
    pub fn next_store_id(&mut self) -> u64 {
        self.next_store_id += 1;
        self.next_store_id
    }

    /// Inserts or replaces a record and saves it (and the id counter, if
    /// it moved).
    pub fn put(&mut self, record: FunctionRecord) -> Result<Option<FunctionRecord>, RegistryError> {
        if self.next_store_id != self.saved_store_id {
            self.save_counter()?;
        }
        self.write_record(&record)?;
        Ok(self.functions.insert(record.name.clone(), record))
    }

    /// Removes a record and its file.
    pub fn remove(&mut self, name: &FunctionName) -> Result<Option<FunctionRecord>, RegistryError> {
        if !self.functions.contains_key(name) {
            return Ok(None);
        }
        let path = self.record_path(name);
        crate::sys::fs::remove_synced(&path)
            .map_err(|source| RegistryError::Write { path, source })?;
        Ok(self.functions.remove(name))
    }

    fn record_path(&self, name: &FunctionName) -> PathBuf {
        self.dir.join(FUNCTIONS).join(format!("{name}.json"))
    }

    fn write_record(&self, record: &FunctionRecord) -> Result<(), RegistryError> {
        let path = self.record_path(&record.name);
        let werr = |source| RegistryError::Write {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| werr(e.into()))?;
        // Deploy options hold the functions' environment: private.
        crate::sys::fs::write_private(&path, &bytes).map_err(werr)
    }

    fn save_counter(&mut self) -> Result<(), RegistryError> {
        let path = self.dir.join(FILE);
        let werr = |source| RegistryError::Write {
            path: path.clone(),
            source,
        };
        let contents = Contents {
            next_store_id: self.next_store_id,
            functions: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec_pretty(&contents).map_err(|e| werr(e.into()))?;
        crate::sys::fs::write_private(&path, &bytes).map_err(werr)?;
        self.saved_store_id = self.next_store_id;
        Ok(())
    }
}

/// Every `NAME.json` in `dir` (none when it does not exist); a file that
/// does not parse, or names another function, is an error: starting with
/// a function silently gone would free its address for another.
fn read_functions(dir: &Path) -> Result<BTreeMap<FunctionName, FunctionRecord>, RegistryError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(RegistryError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut functions = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(|source| RegistryError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        // Write_private's temporary files of a crash are not records; the
        // state directory is locked, so no writer owns them any more.
        let leftover = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".new-"));
        if leftover {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing a crash's temporary file");
            }
            continue;
        }
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|n| !n.starts_with('.'))
        else {
            continue;
        };
        let bytes = fs::read(&path).map_err(|source| RegistryError::Read {
            path: path.clone(),
            source,
        })?;
        let record: FunctionRecord =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if record.name.as_str() != stem {
            return Err(RegistryError::Misnamed {
                path,
                name: record.name.to_string(),
            });
        }
        functions.insert(record.name.clone(), record);
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ip: [u8; 4]) -> FunctionRecord {
        FunctionRecord {
            name: FunctionName::parse(name).expect("name"),
            ip: std::net::Ipv4Addr::from(ip).into(),
            version: 1,
            image_id: "sha256:x".into(),
            image: ImageConfig::default(),
            options: DeployOptions::default(),
            deployed_at: 0,
            id_slot: None,
            rootfs: None,
            origin: "deploy".into(),
            pulled: None,
            history: Vec::new(),
        }
    }

    fn version(n: u64, rootfs: u64) -> Version {
        Version {
            version: n,
            rootfs,
            image_id: format!("sha256:{n}"),
            image: ImageConfig::default(),
            options: DeployOptions::default(),
            deployed_at: n,
            origin: "deploy".into(),
            pulled: None,
        }
    }

    #[test]
    fn history_keeps_the_newest_and_says_what_fell_out() {
        let first = record("f", [127, 10, 0, 1]);
        let (second, dropped) = first.succeed(version(2, 2), 2);
        assert!(dropped.is_empty());
        let (third, _) = second.succeed(version(3, 2), 2);
        let (fourth, dropped) = third.succeed(version(4, 4), 2);
        let kept: Vec<u64> = fourth.history.iter().map(|v| v.version).collect();
        assert_eq!(kept, vec![3, 2]);
        assert_eq!(
            dropped.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(fourth.rootfs_ids().collect::<Vec<_>>(), vec![4, 2, 2]);
        // Rolling back to 3: 4 is kept first, 3 leaves the history.
        let back = fourth.history[0].clone();
        let (rolled, dropped) = fourth.succeed(back, 2);
        assert_eq!(rolled.version, 3);
        assert_eq!(
            rolled.history.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![4, 2]
        );
        assert!(dropped.is_empty());
    }

    #[test]
    fn survives_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::load(dir.path()).expect("load");
        assert_eq!(reg.next_store_id(), 1);
        reg.put(record("a", [127, 10, 0, 1])).expect("put");
        reg.put(record("b", [127, 10, 0, 2])).expect("put");
        reg.remove(&FunctionName::parse("a").expect("name"))
            .expect("remove");
        let reg = Registry::load(dir.path()).expect("reload");
        let names: Vec<_> = reg.list().map(|r| r.name.to_string()).collect();
        assert_eq!(names, vec!["b"]);
        let files: Vec<_> = fs::read_dir(dir.path().join(FUNCTIONS))
            .expect("functions")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files, ["b.json"], "one file a function, nothing else");
    }

    #[test]
    fn a_crash_s_temporary_files_go_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::load(dir.path()).expect("load");
        reg.put(record("a", [127, 10, 0, 1])).expect("put");
        let functions = dir.path().join(FUNCTIONS);
        // What a crash between write and rename leaves.
        fs::write(functions.join(".new-x1Yz"), b"{\"half").expect("write");
        let reg = Registry::load(dir.path()).expect("reload");
        assert_eq!(reg.list().count(), 1);
        let files: Vec<_> = fs::read_dir(&functions)
            .expect("functions")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files, ["a.json"]);
    }

    #[test]
    fn the_id_counter_survives_a_reload_without_any_function() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::load(dir.path()).expect("load");
        assert_eq!(reg.next_store_id(), 1);
        reg.put(record("a", [127, 10, 0, 1])).expect("put");
        reg.remove(&FunctionName::parse("a").expect("name"))
            .expect("remove");
        let mut reg = Registry::load(dir.path()).expect("reload");
        assert_eq!(reg.next_store_id(), 2, "an id is never handed out twice");
    }

    #[test]
    fn a_registry_of_one_file_moves_into_one_file_a_function() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Contents {
            next_store_id: 7,
            functions: [record("a", [127, 10, 0, 1]), record("b", [127, 10, 0, 2])]
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
        };
        fs::write(
            dir.path().join(FILE),
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("write");
        let mut reg = Registry::load(dir.path()).expect("load");
        assert_eq!(reg.list().count(), 2);
        assert_eq!(reg.next_store_id(), 8);
        let left = fs::read_to_string(dir.path().join(FILE)).expect("counter");
        assert!(!left.contains("functions"), "moved out: {left}");
        let again = Registry::load(dir.path()).expect("reload");
        let names: Vec<_> = again.list().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
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

    #[test]
    fn a_corrupt_or_misnamed_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::load(dir.path()).expect("load");
        reg.put(record("a", [127, 10, 0, 1])).expect("put");
        let functions = dir.path().join(FUNCTIONS);
        fs::rename(functions.join("a.json"), functions.join("b.json")).expect("rename");
        assert!(matches!(
            Registry::load(dir.path()),
            Err(RegistryError::Misnamed { .. })
        ));
        fs::write(functions.join("b.json"), b"{").expect("write");
        assert!(matches!(
            Registry::load(dir.path()),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
