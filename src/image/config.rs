//! The JSON documents inside an image archive: docker's `manifest.json`, the
//! OCI `index.json` and manifests, and the image config with its run settings.

use serde::{Deserialize, Serialize};

use super::ImageError;

/// The run settings of an image, as the container will see them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    /// The image's `User` as written (`name`, `uid`, `uid:gid` ...).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// `ExposedPorts` as written (`8000/tcp`, `53/udp`), sorted.
    #[serde(default)]
    pub exposed: Vec<String>,
    /// `Volumes`: paths the image expects writable (absolute), sorted.
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl ImageConfig {
    /// Entrypoint followed by Cmd: the container's argv.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The TCP ports the image exposes (`EXPOSE 8000`, `EXPOSE 80/tcp`).
    pub fn tcp_ports(&self) -> Vec<u16> {
        self.exposed
            .iter()
            .filter_map(|p| match p.split_once('/') {
                Some((n, "tcp")) | Some((n, "")) => n.parse().ok(),
                None => p.parse().ok(),
                Some(_) => None,
            })
            .filter(|&p| p > 0)
            .collect()
    }
}

/// One entry of docker's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    pub config: String,
    #[serde(default)]
    pub layers: Vec<String>,
}

/// An OCI descriptor (index entries, manifest config and layers).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// OCI `index.json` or an image index blob.
#[derive(Debug, Deserialize)]
pub struct OciIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An OCI image manifest blob.
#[derive(Debug, Deserialize)]
pub struct OciManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of the image config JSON we use.
#[derive(Debug, Deserialize)]
pub struct RawImageConfig {
    #[serde(default)]
    pub config: Option<RawRunConfig>,
    pub rootfs: RawRootfs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawRunConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRootfs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

/// Turns the raw config into run settings (user still unresolved) and the
/// expected layer digests.
pub fn run_settings(raw: RawImageConfig) -> Result<(ImageConfig, Vec<String>), ImageError> {
    let run = raw.config.unwrap_or_default();
    let config = ImageConfig {
        env: run.env.unwrap_or_default(),
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        working_dir: run
            .working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: run.user.unwrap_or_default(),
        uid: 0,
        gid: 0,
        exposed: run.exposed_ports.unwrap_or_default().into_keys().collect(),
        volumes: run.volumes.unwrap_or_default().into_keys().collect(),
    };
    let odd = |v: &String| !v.starts_with('/') || v.split('/').any(|c| c == "..");
    if let Some(bad) = config.volumes.iter().find(|v| odd(v)) {
        return Err(ImageError::Invalid(format!(
            "Volume {bad:?} is not an absolute path without '..'"
        )));
    }
    if config.argv().is_empty() {
        return Err(ImageError::Invalid(
            "image config has neither Entrypoint nor Cmd".into(),
        ));
    }
    if !config.working_dir.starts_with('/') {
        return Err(ImageError::Invalid(format!(
            "WorkingDir {:?} is not absolute",
            config.working_dir
        )));
    }
    for d in &raw.rootfs.diff_ids {
        hex_digest(d)?;
    }
    Ok((config, raw.rootfs.diff_ids))
}

/// Checks a `sha256:<64 hex>` digest and returns the hex part.
pub fn hex_digest(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        ImageError::Invalid(format!("unsupported digest {digest:?} (only sha256)"))
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ImageError::Invalid(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_config() {
        let raw: RawImageConfig = parse_json(
            "config",
            br#"{"config":{"Env":["A=1"],"Entrypoint":["/bin/h"],"Cmd":["x"],"WorkingDir":"/w","User":"1000:1000",
                 "ExposedPorts":{"8000/tcp":{},"53/udp":{}},"Volumes":{"/data":{}}},
                "rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#,
        )
        .expect("parse");
        let (cfg, ids) = run_settings(raw).expect("settings");
        assert_eq!(cfg.argv(), vec!["/bin/h", "x"]);
        assert_eq!(cfg.working_dir, "/w");
        assert_eq!(cfg.user, "1000:1000");
        assert_eq!(cfg.tcp_ports(), vec![8000]);
        assert_eq!(cfg.volumes, vec!["/data"]);
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn refuses_no_command_and_bad_digest() {
        let raw: RawImageConfig = parse_json("c", br#"{"rootfs":{"diff_ids":[]}}"#).expect("parse");
        assert!(run_settings(raw).is_err());
        let raw: RawImageConfig = parse_json(
            "c",
            br#"{"config":{"Cmd":["/h"]},"rootfs":{"diff_ids":["md5:abc"]}}"#,
        )
        .expect("parse");
        assert!(run_settings(raw).is_err());
        assert!(hex_digest("sha256:../../etc/passwd").is_err());
    }
}
