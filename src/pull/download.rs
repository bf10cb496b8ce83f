//! Downloading blobs to files: a few at once, each verified against its
//! digest as it streams (oci-client's `pull_blob`), never more bytes than
//! its descriptor says, retried with backoff after a reset, 429 or 5xx.
//! Each layer's state (bytes so far, which attempt, how it ended) is what
//! the unpacker follows the file by (`source.rs`) and what the client is
//! shown.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use tokio::io::AsyncWrite;

use super::{classify, PullError, Puller};

/// One layer to download, into `path`.
pub(super) struct Job {
    pub index: usize,
    pub descriptor: OciDescriptor,
    pub path: std::path::PathBuf,
    pub progress: std::sync::Arc<Progress>,
}

/// Bytes downloaded per layer (0 for those not downloaded).
#[derive(Debug)]
pub struct Progress {
    pub layers: Vec<LayerProgress>,
}

#[derive(Debug)]
pub struct LayerProgress {
    pub digest: String,
    pub size: u64,
    /// Whether it is downloaded at all (the layer store lacks it).
    pub fetched: bool,
    /// Bytes written by the current attempt.
    pub done: AtomicU64,
    /// The attempt writing the file now (0: none started).
    pub attempt: AtomicU32,
    /// How the download ended, once it has; `changed` is signalled on
    /// every write and at the end.
    pub outcome: Mutex<Option<Result<(), String>>>,
    pub changed: Condvar,
}

impl LayerProgress {
    fn end(&self, outcome: Result<(), String>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.changed.notify_all();
    }
}

impl Progress {
    pub fn new(layers: &[OciDescriptor], wanted: &[bool]) -> Self {
        Self {
            layers: layers
                .iter()
                .zip(wanted)
                .map(|(l, w)| LayerProgress {
                    digest: l.digest.clone(),
                    size: l.size.max(0) as u64,
                    fetched: *w,
                    done: AtomicU64::new(0),
                    attempt: AtomicU32::new(0),
                    outcome: Mutex::new(None),
                    changed: Condvar::new(),
                })
                .collect(),
        }
    }

    /// Bytes downloaded in all.
    pub fn bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.done.load(Ordering::Relaxed))
            .sum()
    }
}

/// Ends, when dropped, every layer not ended yet: a pull stopped (its
/// timeout, another layer's failure, the request gone) must not leave the
/// unpacker waiting for bytes that will not come.
pub(super) struct EndAll(pub std::sync::Arc<Progress>);

impl Drop for EndAll {
    fn drop(&mut self) {
        for layer in &self.0.layers {
            let mut outcome = layer.outcome.lock().unwrap_or_else(|p| p.into_inner());
            if outcome.is_none() {
                *outcome = Some(Err("the pull stopped before this layer arrived".into()));
            }
            drop(outcome);
            layer.changed.notify_all();
        }
    }
}

/// Runs `jobs`, `concurrent` at a time, in order of start; the first
/// failure stops the rest.
pub(super) async fn all(
    puller: &Puller,
    at: &Reference,
    jobs: Vec<Job>,
    concurrent: usize,
) -> Result<(), PullError> {
    futures::stream::iter(jobs)
        .map(|job| one(puller, at, job))
        .buffer_unordered(concurrent)
        .try_collect::<()>()
        .await
}

async fn one(puller: &Puller, at: &Reference, job: Job) -> Result<(), PullError> {
    let layer = &job.progress.layers[job.index];
    let what = format!("layer {}", job.descriptor.digest);
    let logged_in = puller.credentials.has(at.registry());
    let mut delay = Duration::from_millis(250);
    let mut attempt = 0;
    let outcome = loop {
        layer.done.store(0, Ordering::Relaxed);
        let file = tokio::fs::File::create(&job.path).await;
        // The unpacker follows this attempt's file from here on.
        layer.attempt.fetch_add(1, Ordering::AcqRel);
        layer.changed.notify_all();
        let file = match file {
            Ok(f) => f,
            Err(source) => {
                break Err(PullError::Io {
                    op: "creating",
                    path: job.path.clone(),
                    source,
                })
            }
        };
        let out = Bounded {
            inner: file,
            max: layer.size,
            layer,
            what: &what,
        };
        match puller
            .client
            .pull_blob(at, &job.descriptor, out)
            .await
            .map_err(|e| classify(e, at, &what, logged_in))
        {
            Err(e) if e.transient() && attempt < 3 => {
                tracing::warn!(reference = %at.whole(), error = %e, "retrying");
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            other => break other,
        }
    };
    layer.end(outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
    outcome
}

/// A file that refuses bytes past the descriptor's size (a registry
/// could otherwise fill the disk before the digest is checked).
struct Bounded<'a> {
    inner: tokio::fs::File,
    max: u64,
    layer: &'a LayerProgress,
    what: &'a str,
}

impl AsyncWrite for Bounded<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let so_far = self.layer.done.load(Ordering::Relaxed);
        if so_far + buf.len() as u64 > self.max {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "{}: the registry sent more than the {} bytes the manifest gives it",
                self.what, self.max
            ))));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.layer.done.fetch_add(*n as u64, Ordering::Relaxed);
            self.layer.changed.notify_all();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Memory that refuses bytes past `max` (an image config: a registry
/// could send more than the manifest says before the digest is checked).
pub(super) struct Capped {
    pub bytes: Vec<u8>,
    pub max: usize,
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.max {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "more than the {} bytes the manifest gives it",
                self.max
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
