//! The pulled layers as the unpacker reads them: layer `i` is its file
//! followed as it is downloaded (the unpacker, a blocking thread, waits
//! for bytes not written yet), so a layer is applied while it arrives and
//! the next ones download beside it. Its end is the download's: a digest
//! that did not match is an error at the end of the layer, and the layer
//! applied so far is discarded (`Layers::unpack` keeps only what applied
//! whole and matched its `diff_id`). A download restarted after a reset
//! is followed anew if nothing of it was read yet, and is an error for a
//! layer already partly applied. The files live in a
//! directory of their own, gone with the `Pulled`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use oci_client::manifest::OciDescriptor;

use super::download::{Job, LayerProgress, Progress};
use super::PullError;
use crate::image::archive::LayerSource;
use crate::image::ImageError;

/// How long the unpacker sleeps between looks when no write woke it.
const LOOK: Duration = Duration::from_millis(20);

/// The layers of a pull, for `crate::image::archive::Image`.
pub struct Pulled {
    /// Held for its drop: the downloads' directory goes with the pull.
    _dir: tempfile::TempDir,
    /// Each layer's file, if it is downloaded.
    slots: Vec<Option<PathBuf>>,
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
            slots.push(Some(path.clone()));
            jobs.push(Job {
                index,
                descriptor: descriptor.clone(),
                path,
                progress: Arc::clone(&progress),
            });
        }
        Ok((
            Self {
                _dir: dir,
                slots,
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
        let Some(path) = self.slots.get(i).and_then(Option::as_ref) else {
            return Err(ImageError::Invalid(format!(
                "layer {i} is not in the layer store, nor was it downloaded"
            )));
        };
        let layer = &self.progress.layers[i];
        let attempt =
            wait_started(layer).map_err(|e| ImageError::Invalid(format!("layer {i}: {e}")))?;
        let file = File::open(path).map_err(|source| ImageError::Store {
            op: "opening",
            path: path.clone(),
            source,
        })?;
        // Gone from the directory once open: a pull holds no layer on
        // the disk beyond the unpack.
        let _ = std::fs::remove_file(path);
        let follow = Follow {
            file,
            path: path.clone(),
            layer,
            attempt,
            read: 0,
        };
        Ok(Box::new(BufReader::with_capacity(1 << 20, follow)))
    }
}

/// Waits until `layer`'s download has a file (or ended without one);
/// returns the attempt writing it.
fn wait_started(layer: &LayerProgress) -> Result<u32, String> {
    let mut outcome = layer.outcome.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(Err(e)) = outcome.as_ref() {
            return Err(e.clone());
        }
        let attempt = layer.attempt.load(Ordering::Acquire);
        if attempt > 0 {
            return Ok(attempt);
        }
        outcome = layer
            .changed
            .wait_timeout(outcome, LOOK)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// A layer's file read as it grows, to the download's end.
struct Follow<'a> {
    file: File,
    path: PathBuf,
    layer: &'a LayerProgress,
    attempt: u32,
    read: u64,
}

impl Read for Follow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let attempt = self.layer.attempt.load(Ordering::Acquire);
            if attempt != self.attempt {
                if self.read > 0 {
                    return Err(io::Error::other(
                        "its download was restarted after the layer was partly applied: deploy again",
                    ));
                }
                // Nothing read yet: follow the new attempt's file (it
                // exists before its attempt is counted).
                self.file = File::open(&self.path)?;
                let _ = std::fs::remove_file(&self.path);
                self.attempt = attempt;
                continue;
            }
            let n = self.file.read(buf)?;
            if n > 0 {
                self.read += n as u64;
                return Ok(n);
            }
            let outcome = self.layer.outcome.lock().unwrap_or_else(|p| p.into_inner());
            match outcome.as_ref() {
                Some(Err(e)) => return Err(io::Error::other(e.clone())),
                // Flushed before it ended: what is not read yet is there.
                Some(Ok(())) if self.read >= self.layer.done.load(Ordering::Acquire) => {
                    return Ok(0)
                }
                Some(Ok(())) => continue,
                None => {
                    let _ = self
                        .layer
                        .changed
                        .wait_timeout(outcome, LOOK)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}
