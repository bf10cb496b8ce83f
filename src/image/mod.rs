//! Image ingest: turns an uploaded `docker save` tarball (classic or OCI
//! layout) into a read-only root filesystem plus the image's run settings.
//! Knows nothing about sockets or containers.

use std::path::PathBuf;

pub mod archive;
pub mod build;
pub mod config;
pub mod fsops;
pub mod layer;
pub mod layers;
pub mod overlay;
pub mod owners;
pub mod staging;
pub mod store;
pub mod user;

pub use archive::unpack_image;
pub use config::ImageConfig;

/// Bounds on what one image may make us do; each breach names its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_layers: usize,
    pub max_extracted_bytes: u64,
    pub max_files: u64,
    pub max_path_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layers: 128,
            max_extracted_bytes: 4 << 30,
            max_files: 500_000,
            max_path_depth: 64,
        }
    }
}

/// Everything that can go wrong reading or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading image archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("image archive has neither manifest.json nor index.json")]
    NoManifest,
    #[error("image archive is missing {0}")]
    Missing(String),
    #[error("parsing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image is invalid: {0}")]
    Invalid(String),
    #[error("layer {layer}: {source}")]
    Layer {
        layer: usize,
        #[source]
        source: LayerError,
    },
    #[error(
        "layer {layer} content does not match its diff_id (expected {expected}, got {actual})"
    )]
    DiffIdMismatch {
        layer: usize,
        expected: String,
        actual: String,
    },
    #[error("image exceeds the {limit} limit ({value} > {max})")]
    Limit {
        limit: &'static str,
        value: u64,
        max: u64,
    },
    #[error("image user {0:?} is not defined in the image's /etc/passwd or /etc/group")]
    UnknownUser(String),
    #[error("{op} {path}: {source}")]
    Store {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Archive(_) => "archive",
            ImageError::NoManifest | ImageError::Missing(_) => "missing",
            ImageError::Json { .. } => "json",
            ImageError::Invalid(_) => "invalid",
            ImageError::Layer {
                source: LayerError::Escape { .. },
                ..
            } => "escape",
            ImageError::Layer {
                source: LayerError::Limit { .. },
                ..
            }
            | ImageError::Limit { .. } => "limit",
            ImageError::Layer { .. } => "layer",
            ImageError::DiffIdMismatch { .. } => "diff_id",
            ImageError::UnknownUser(_) => "user",
            ImageError::Store { .. } => "store",
        }
    }
}

/// Failures while applying one layer's entries.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading layer: {0}")]
    Read(#[source] std::io::Error),
    #[error("entry {path:?} escapes the root filesystem")]
    Escape { path: String },
    #[error("entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("{op} {path:?}: {source}")]
    Fs {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image exceeds the {limit} limit ({value} > {max})")]
    Limit {
        limit: &'static str,
        value: u64,
        max: u64,
    },
}
