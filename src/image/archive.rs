//! Unpacking an image: applies its layers in order, checking each against
//! its `diff_id`, all into one directory or each it lacks into the shared
//! layer store. Layers come from a `LayerSource`: here, an uploaded
//! archive on disk (docker's `manifest.json` or the OCI `index.json`, the
//! config and the layers found by their offsets and read in place,
//! nothing held in memory beyond the JSON documents); or blobs pulled from
//! a registry (`crate::pull`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::{
    self, DockerManifestEntry, ImageConfig, OciIndex, OciManifest, RawImageConfig,
};
use super::fsops::Root;
use super::layer::{apply_layer, Totals};
use super::layers::Layers;
use super::{user, ImageError, Limits};

const BLOCK: u64 = 512;
/// JSON documents above this size are refused rather than read into memory.
const MAX_JSON: u64 = 4 << 20;
const MEDIA_INDEX: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What unpacking produced.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub config: ImageConfig,
    /// `sha256:` digest of the image config: the image's identity.
    pub image_id: String,
    pub layers: usize,
    pub totals: Totals,
}

/// Where a member of the outer archive lies in the file.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

/// The outer archive's members by normalised path; symlinked members (newer
/// docker links `<id>/layer.tar` to a blob) are resolved.
struct Index {
    file: File,
    members: HashMap<String, Member>,
    links: HashMap<String, String>,
}

/// Where an image's layers are read from: an uploaded archive, or blobs
/// pulled from a registry (`crate::pull`). Layer `i` comes as stored:
/// gzip, zstd or plain tar.
pub trait LayerSource: Send {
    fn open(&mut self, i: usize) -> Result<Box<dyn BufRead + '_>, ImageError>;
}

/// An image about to be unpacked: its settings, and its layers with the
/// `diff_id` each must have.
pub struct Image {
    source: Box<dyn LayerSource>,
    config: ImageConfig,
    image_id: String,
    diff_ids: Vec<String>,
}

impl Image {
    /// Reads the manifest and the config of the archive at `archive`,
    /// refusing what breaks the limits.
    pub fn archive(archive: &Path, limits: &Limits) -> Result<Self, ImageError> {
        let mut index = Index::read(archive)?;
        let (config_path, layers) = locate(&mut index)?;
        let config_bytes = index.read_small(&config_path)?;
        Self::new(
            &config_path,
            &config_bytes,
            layers.len(),
            Box::new(ArchiveLayers { index, layers }),
            limits,
        )
    }

    /// An image from its config (`config_bytes`, named `what` in errors)
    /// and `layers` layers that `source` opens.
    pub fn new(
        what: &str,
        config_bytes: &[u8],
        layers: usize,
        source: Box<dyn LayerSource>,
        limits: &Limits,
    ) -> Result<Self, ImageError> {
        let image_id = format!("sha256:{}", hex(&Sha256::digest(config_bytes)));
        let raw: RawImageConfig = config::parse_json(what, config_bytes)?;
        let (config, diff_ids) = config::run_settings(raw)?;
        if layers != diff_ids.len() {
            return Err(ImageError::Invalid(format!(
                "manifest lists {layers} layers but the config has {} diff_ids",
                diff_ids.len()
            )));
        }
        if layers > limits.max_layers {
            return Err(ImageError::Limit {
                limit: "layer count",
                value: layers as u64,
                max: limits.max_layers as u64,
            });
        }
        Ok(Self {
            source,
            config,
            image_id,
            diff_ids,
        })
    }

    /// Applies layer `i` onto `root`, checking it against its `diff_id`.
    fn apply(
        &mut self,
        i: usize,
        root: &Root,
        limits: &Limits,
        totals: &mut Totals,
    ) -> Result<(), ImageError> {
        let raw = self.source.open(i)?;
        let actual = apply_compressed(raw, root, limits, totals)
            .map_err(|source| ImageError::Layer { layer: i, source })?;
        let diff_id = &self.diff_ids[i];
        let expected = config::hex_digest(diff_id)?;
        if actual != expected {
            return Err(ImageError::DiffIdMismatch {
                layer: i,
                expected: diff_id.clone(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(())
    }
}

/// The layers of an archive on disk, read in place.
struct ArchiveLayers {
    index: Index,
    layers: Vec<String>,
}

impl LayerSource for ArchiveLayers {
    fn open(&mut self, i: usize) -> Result<Box<dyn BufRead + '_>, ImageError> {
        let member = self.index.member(&self.layers[i])?;
        self.index
            .file
            .seek(SeekFrom::Start(member.offset))
            .map_err(ImageError::Archive)?;
        Ok(Box::new(BufReader::new(
            (&self.index.file).take(member.size),
        )))
    }
}

fn open_root(dir: &Path) -> Result<Root, ImageError> {
    Root::open(dir).map_err(|source| ImageError::Store {
        op: "opening",
        path: dir.to_path_buf(),
        source,
    })
}

/// Unpacks the image archive at `archive` into the empty directory `dest`.
pub fn unpack_image(archive: &Path, dest: &Path, limits: &Limits) -> Result<Unpacked, ImageError> {
    unpack_into(Image::archive(archive, limits)?, dest, limits)
}

/// Unpacks `image` into the empty directory `dest`.
pub fn unpack_into(mut image: Image, dest: &Path, limits: &Limits) -> Result<Unpacked, ImageError> {
    let root = open_root(dest)?;
    let mut totals = Totals::default();
    for i in 0..image.diff_ids.len() {
        image.apply(i, &root, limits, &mut totals)?;
    }
    let mut config = image.config;
    resolve_user(&mut config, &root)?;
    Ok(Unpacked {
        config,
        image_id: image.image_id,
        layers: image.diff_ids.len(),
        totals,
    })
}

/// The chain id (hex) of each layer of an image whose layers have these
/// `diff_ids`: the layer and all below it, as docker names them (a
/// layer's whiteouts and copied-up files depend on what is below it).
pub fn chain_ids(diff_ids: &[String]) -> Result<Vec<String>, ImageError> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        config::hex_digest(diff_id)?;
        let id = match chain.last() {
            None => diff_id.clone(),
            Some(below) => format!(
                "sha256:{}",
                hex(&Sha256::digest(format!("sha256:{below} {diff_id}")))
            ),
        };
        chain.push(config::hex_digest(&id)?.to_owned());
    }
    Ok(chain)
}

/// Unpacks into `store` each layer of `image` it does not hold yet, each
/// into a directory of its own named by its chain id. `reserve` is told
/// every layer the image needs before any is looked for, so none of them
/// is collected meanwhile. The image's user is not resolved (that needs
/// the layers composed: `resolve_user`).
pub fn unpack_layers(
    mut image: Image,
    store: &Layers,
    reserve: impl FnOnce(&[String]) -> Result<(), ImageError>,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    let chain = chain_ids(&image.diff_ids)?;
    reserve(&chain)?;
    let mut totals = Totals::default();
    for (i, id) in chain.iter().enumerate() {
        if !store.has(id) {
            store.unpack(id, &chain[..i], |root| {
                image.apply(i, root, limits, &mut totals)
            })?;
        }
    }
    Ok(Unpacked {
        config: image.config,
        image_id: image.image_id,
        layers: chain.len(),
        totals,
    })
}

/// Sets the numeric ids of the image's user from the rootfs at `root`.
pub fn resolve_user(config: &mut ImageConfig, root: &Root) -> Result<(), ImageError> {
    let (uid, gid) = user::resolve(&config.user, root)?;
    if uid.max(gid) >= super::owners::ID_RANGE {
        return Err(ImageError::Invalid(format!(
            "image user {:?} is {uid}:{gid}; containers have ids 0..{} only",
            config.user,
            super::owners::ID_RANGE - 1
        )));
    }
    config.uid = uid;
    config.gid = gid;
    Ok(())
}

/// Applies a plain, gzip- or zstd-compressed layer; returns the hex sha256 of the
/// uncompressed stream (what `diff_id` names).
fn apply_compressed<R: BufRead>(
    mut raw: R,
    root: &Root,
    limits: &Limits,
    totals: &mut Totals,
) -> Result<String, super::LayerError> {
    let head = raw.fill_buf().map_err(super::LayerError::Read)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let plain: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else if zstd {
        Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(super::LayerError::Read)?)
    } else {
        Box::new(raw)
    };
    let mut hashing = HashingReader {
        inner: plain,
        hasher: Sha256::new(),
    };
    apply_layer(&mut hashing, root, limits, totals)?;
    Ok(hex(&hashing.hasher.finalize()))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Finds the config path and the layer paths, docker manifest first.
fn locate(index: &mut Index) -> Result<(String, Vec<String>), ImageError> {
    if index.has("manifest.json") {
        let bytes = index.read_small("manifest.json")?;
        let entries: Vec<DockerManifestEntry> = config::parse_json("manifest.json", &bytes)?;
        let first = entries
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::Invalid("manifest.json lists no image".into()))?;
        return Ok((first.config, first.layers));
    }
    if index.has("index.json") {
        let bytes = index.read_small("index.json")?;
        let mut idx: OciIndex = config::parse_json("index.json", &bytes)?;
        // Nested indexes (multi-platform images) are followed a few levels.
        for _ in 0..4 {
            let chosen = pick_manifest(idx.manifests)?;
            let path = blob_path(&chosen.digest)?;
            let bytes = index.read_small(&path)?;
            if MEDIA_INDEX.contains(&chosen.media_type.as_str()) {
                idx = config::parse_json(&path, &bytes)?;
                continue;
            }
            let manifest: OciManifest = config::parse_json(&path, &bytes)?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect::<Result<_, _>>()?;
            return Ok((blob_path(&manifest.config.digest)?, layers));
        }
        return Err(ImageError::Invalid("image indexes nest too deeply".into()));
    }
    Err(ImageError::NoManifest)
}

fn pick_manifest(manifests: Vec<config::Descriptor>) -> Result<config::Descriptor, ImageError> {
    let wanted = |d: &config::Descriptor| {
        d.platform.as_ref().is_none_or(|p| {
            p.os == "linux" && (p.architecture == "amd64" || p.architecture.is_empty())
        })
    };
    let mut fallback = None;
    for d in manifests {
        if wanted(&d) {
            return Ok(d);
        }
        fallback.get_or_insert(d);
    }
    fallback.ok_or_else(|| ImageError::Invalid("index.json lists no manifest".into()))
}

fn blob_path(digest: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", config::hex_digest(digest)?))
}

/// Normalises a member path: no leading `./` or `/`; `..` pops.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => parts.push(c.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

impl Index {
    fn read(path: &Path) -> Result<Self, ImageError> {
        let file = File::open(path).map_err(ImageError::Archive)?;
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let mut end = 0u64;
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(ImageError::Archive)? {
                let entry = entry.map_err(ImageError::Archive)?;
                end = end.max(entry.raw_file_position() + entry.size().div_ceil(BLOCK) * BLOCK);
                let name = normalise(&entry.path().map_err(ImageError::Archive)?);
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        let member = Member {
                            offset: entry.raw_file_position(),
                            size: entry.size(),
                        };
                        members.insert(name, member);
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Some(target) = entry.link_name().map_err(ImageError::Archive)? {
                            let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                                Path::new(&name)
                                    .parent()
                                    .map(Path::to_path_buf)
                                    .unwrap_or_default()
                            } else {
                                PathBuf::new()
                            };
                            links.insert(name, normalise(&base.join(target)));
                        }
                    }
                    _ => {}
                }
            }
        }
        let len = file.metadata().map_err(ImageError::Archive)?.len();
        let mut index = Self {
            file,
            members,
            links,
        };
        // A complete archive ends with two zero blocks; an upload cut off at
        // a member boundary would otherwise look like a smaller archive.
        if !index.has_trailer(end, len)? {
            return Err(ImageError::Invalid(
                "archive is truncated (no end-of-archive marker)".into(),
            ));
        }
        // A member running past the end means the upload was cut off.
        if let Some(m) = index.members.values().find(|m| m.offset + m.size > len) {
            return Err(ImageError::Invalid(format!(
                "archive is truncated (member at offset {} needs {} bytes)",
                m.offset, m.size
            )));
        }
        Ok(index)
    }

    fn has_trailer(&mut self, end: u64, len: u64) -> Result<bool, ImageError> {
        if len < end + 2 * BLOCK {
            return Ok(false);
        }
        self.file
            .seek(SeekFrom::Start(end))
            .map_err(ImageError::Archive)?;
        let mut trailer = [0u8; 2 * BLOCK as usize];
        self.file
            .read_exact(&mut trailer)
            .map_err(ImageError::Archive)?;
        Ok(trailer.iter().all(|&b| b == 0))
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name) || self.links.contains_key(name)
    }

    fn member(&self, name: &str) -> Result<Member, ImageError> {
        let mut name = normalise(Path::new(name));
        for _ in 0..8 {
            if let Some(m) = self.members.get(&name) {
                return Ok(*m);
            }
            match self.links.get(&name) {
                Some(next) => name = next.clone(),
                None => break,
            }
        }
        Err(ImageError::Missing(name))
    }

    fn read_small(&mut self, name: &str) -> Result<Vec<u8>, ImageError> {
        let member = self.member(name)?;
        if member.size > MAX_JSON {
            return Err(ImageError::Invalid(format!(
                "{name} is larger than {MAX_JSON} bytes"
            )));
        }
        self.file
            .seek(SeekFrom::Start(member.offset))
            .map_err(ImageError::Archive)?;
        let mut buf = Vec::with_capacity(member.size as usize);
        (&self.file)
            .take(member.size)
            .read_to_end(&mut buf)
            .map_err(ImageError::Archive)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_member_paths() {
        assert_eq!(normalise(Path::new("./manifest.json")), "manifest.json");
        assert_eq!(
            normalise(Path::new("abc/../blobs/sha256/x")),
            "blobs/sha256/x"
        );
        assert_eq!(normalise(Path::new("/a/b")), "a/b");
    }
}
