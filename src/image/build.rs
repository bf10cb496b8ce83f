//! Writing image archives in `docker save` format without Docker: used by
//! `faas pack` (a static binary to a deployable image) and by the tests to
//! build multi-layer, gzip, OCI-layout and deliberately hostile archives.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::archive::hex;

/// One entry of a layer. `Raw` writes its path bytes verbatim, bypassing
/// the tar crate's checks, so tests can craft `../` and absolute paths.
#[derive(Debug, Clone)]
pub enum Entry {
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    Raw {
        path: Vec<u8>,
        kind: tar::EntryType,
        data: Vec<u8>,
        link: Option<String>,
    },
}

impl Entry {
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.into(),
            mode: 0o644,
            data: data.into(),
        }
    }
    pub fn exe(path: &str, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.into(),
            mode: 0o755,
            data: data.into(),
        }
    }
    pub fn dir(path: &str) -> Self {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }
    /// A whiteout deleting `path` from lower layers.
    pub fn whiteout(path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        Entry::file(&wh, Vec::new())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub gzip: bool,
}

/// Which archive layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `manifest.json`, `<id>.json`, `<id>/layer.tar` (docker before 25).
    Classic,
    /// `oci-layout`, `index.json`, `blobs/sha256/…` only.
    Oci,
    /// Both, sharing the blobs (what docker 25+ writes).
    Both,
}

/// Run settings written into the image config.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `EXPOSE`d ports (`8000/tcp`).
    pub exposed: Vec<String>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub config: RunConfig,
    pub layout: Layout,
    pub tag: String,
}

/// A single-layer image running `binary` (placed at `/handler`).
pub fn single_binary(binary: Vec<u8>, tag: &str) -> ImageSpec {
    ImageSpec {
        layers: vec![Layer {
            entries: vec![Entry::exe("handler", binary)],
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: vec!["/handler".into()],
            ..Default::default()
        },
        layout: Layout::Both,
        tag: tag.into(),
    }
}

/// Writes `spec` as a `docker save` tarball.
pub fn write_image<W: Write>(spec: &ImageSpec, out: W) -> io::Result<()> {
    let mut layer_blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &spec.layers {
        let plain = layer_tar(&layer.entries)?;
        diff_ids.push(format!("sha256:{}", hex(&Sha256::digest(&plain))));
        let blob = if layer.gzip { gzip(&plain)? } else { plain };
        layer_blobs.push(blob);
    }
    let c = &spec.config;
    let set = |items: &[String]| -> serde_json::Map<String, serde_json::Value> {
        items.iter().map(|i| (i.clone(), json!({}))).collect()
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": c.entrypoint, "Cmd": c.cmd, "Env": c.env,
            "WorkingDir": c.working_dir, "User": c.user,
            "ExposedPorts": set(&c.exposed), "Volumes": set(&c.volumes),
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))?;
    let config_hex = hex(&Sha256::digest(&config));
    let layer_hex: Vec<String> = layer_blobs
        .iter()
        .map(|b| hex(&Sha256::digest(b)))
        .collect();

    let mut tar = tar::Builder::new(out);
    let classic = spec.layout == Layout::Classic;
    if classic {
        for (h, blob) in layer_hex.iter().zip(&layer_blobs) {
            append(&mut tar, &format!("{h}/layer.tar"), blob)?;
        }
        append(&mut tar, &format!("{config_hex}.json"), &config)?;
    } else {
        for (h, blob) in layer_hex.iter().zip(&layer_blobs) {
            append(&mut tar, &format!("blobs/sha256/{h}"), blob)?;
        }
        append(&mut tar, &format!("blobs/sha256/{config_hex}"), &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": format!("sha256:{config_hex}"), "size": config.len() },
            "layers": layer_hex.iter().zip(&spec.layers).zip(&layer_blobs).map(|((h, l), b)| json!({
                "mediaType": if l.gzip { "application/vnd.oci.image.layer.v1.tar+gzip" }
                             else { "application/vnd.oci.image.layer.v1.tar" },
                "digest": format!("sha256:{h}"), "size": b.len(),
            })).collect::<Vec<_>>(),
        }))?;
        let manifest_hex = hex(&Sha256::digest(&manifest));
        append(&mut tar, &format!("blobs/sha256/{manifest_hex}"), &manifest)?;
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": format!("sha256:{manifest_hex}"), "size": manifest.len(),
                            "annotations": { "io.containerd.image.name": spec.tag } }],
        }))?;
        append(&mut tar, "index.json", &index)?;
    }
    if spec.layout != Layout::Oci {
        let (config_path, layer_paths): (String, Vec<String>) = if classic {
            (
                format!("{config_hex}.json"),
                layer_hex.iter().map(|h| format!("{h}/layer.tar")).collect(),
            )
        } else {
            (
                format!("blobs/sha256/{config_hex}"),
                layer_hex
                    .iter()
                    .map(|h| format!("blobs/sha256/{h}"))
                    .collect(),
            )
        };
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_path, "RepoTags": [spec.tag], "Layers": layer_paths,
        }]))?;
        append(&mut tar, "manifest.json", &manifest)?;
    }
    tar.into_inner()?.flush()
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

/// Builds one layer's uncompressed tarball.
pub fn layer_tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match entry {
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, path, io::empty())?;
            }
            Entry::Symlink { path, target } | Entry::Hardlink { path, target } => {
                let kind = if matches!(entry, Entry::Symlink { .. }) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                h.set_entry_type(kind);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
            Entry::Raw {
                path,
                kind,
                data,
                link,
            } => {
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let name = &mut h.as_old_mut().name;
                let n = path.len().min(name.len());
                name[..n].copy_from_slice(&path[..n]);
                if let Some(link) = link {
                    let field = &mut h.as_old_mut().linkname;
                    let n = link.len().min(field.len());
                    field[..n].copy_from_slice(&link.as_bytes()[..n]);
                }
                h.set_cksum();
                tar.append(&h, data.as_slice())?;
            }
        }
    }
    tar.into_inner()
}
