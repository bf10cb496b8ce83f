//! The pulled layers as the unpacker reads them: layer `i` is its
//! downloaded file once the download completed and matched its digest;
//! the unpacker (a blocking thread) waits for it, so layers are applied
//! in order while later ones still arrive. The files live in a directory
//! of their own, gone with the `Pulled`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use oci_client::manifest::OciDescriptor;

use super::download::Progress;
use super::PullError;
use crate::image::archive::LayerSource;
use crate::image::ImageError;

/// One layer to download, and whom to tell when it is there.
pub(super) struct Job {
    pub index: usize,
    pub descriptor: OciDescriptor,
    pub path: PathBuf,
    pub done: mpsc::SyncSender<Result<(), String>>,
    pub progress: Arc<Progress>,
}

struct Slot {
    path: PathBuf,
    done: mpsc::Receiver<Result<(), String>>,
}

/// The layers of a pull, for `crate::image::archive::Image`.
pub struct Pulled {
    dir: tempfile::TempDir,
    slots: Vec<Option<Slot>>,
    open: Option<File>,
    progress: Arc<Progress>,
}

impl Pulled {
    /// Slots for `layers`, those `wanted` with a job each.
    pub(super) fn new(
        parent: &Path,
        layers: &[OciDescriptor],
        wanted: &[bool],
        progress: Arc<Progress>,
    ) -> Result<(Self, Vec<Job>), PullError> {
        let dir = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(parent)
            .map_err(|source| PullError::Io {
                op: "creating a directory in",
                path: parent.to_path_buf(),
                source,
            })?;
        let mut slots = Vec::with_capacity(layers.len());
        let mut jobs = Vec::new();
        for (index, (descriptor, wanted)) in layers.iter().zip(wanted).enumerate() {
            if !wanted {
                slots.push(None);
                continue;
            }
            let path = dir.path().join(index.to_string());
            let (tx, rx) = mpsc::sync_channel(1);
            slots.push(Some(Slot {
                path: path.clone(),
                done: rx,
            }));
            jobs.push(Job {
                index,
                descriptor: descriptor.clone(),
                path,
                done: tx,
                progress: Arc::clone(&progress),
            });
        }
        Ok((
            Self {
                dir,
                slots,
                open: None,
                progress,
            },
            jobs,
        ))
    }

    /// Bytes downloaded so far, per layer.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }
}

impl LayerSource for Pulled {
    fn open(&mut self, i: usize) -> Result<Box<dyn BufRead + '_>, ImageError> {
        let Some(slot) = self.slots.get(i).and_then(Option::as_ref) else {
            return Err(ImageError::Invalid(format!(
                "layer {i} left the layer store while the image was pulled: deploy again"
            )));
        };
        match slot.done.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ImageError::Invalid(format!("layer {i}: {e}"))),
            Err(_) => {
                return Err(ImageError::Invalid(format!(
                    "layer {i}: the download stopped"
                )))
            }
        }
        let file = File::open(&slot.path).map_err(|source| ImageError::Store {
            op: "opening",
            path: slot.path.clone(),
            source,
        })?;
        // Gone from the disk once read: a pull holds at most the layers
        // not applied yet.
        let _ = std::fs::remove_file(&slot.path);
        let _ = self.dir.path();
        let file = self.open.insert(file);
        Ok(Box::new(BufReader::with_capacity(1 << 20, &*file)))
    }
}
