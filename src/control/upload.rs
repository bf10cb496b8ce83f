//! Receiving an image upload: the request body is streamed to a file in
//! the state directory (never held in memory), refused past the size limit.

use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use super::ApiError;

/// After the limit, or a write that failed (a full disk), we keep reading
/// (and discarding) up to this much more, so an ordinary client finishes
/// sending and can read our 413 or 507.
const DRAIN_AFTER_LIMIT: u64 = 256 << 20;

/// A received upload; the file is deleted on drop.
pub struct Upload {
    pub path: PathBuf,
    pub bytes: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Streams `body` to `path`, stopping with 413 past `limit` bytes.
pub async fn receive(mut body: Incoming, path: &Path, limit: u64) -> Result<Upload, ApiError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(ApiError::Storage)?;
    let mut upload = Upload {
        path: path.to_path_buf(),
        bytes: 0,
    };
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::Upload(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            upload.bytes += data.len() as u64;
            if upload.bytes > limit {
                drop(out);
                drain(
                    body,
                    limit + DRAIN_AFTER_LIMIT - upload.bytes.min(limit + DRAIN_AFTER_LIMIT),
                )
                .await;
                return Err(ApiError::TooLarge(limit));
            }
            if let Err(e) = out.write_all(&data).await {
                drop(out);
                drain(body, limit - upload.bytes + DRAIN_AFTER_LIMIT).await;
                return Err(ApiError::Storage(e));
            }
        }
    }
    out.flush().await.map_err(ApiError::Storage)?;
    if upload.bytes == 0 {
        return Err(ApiError::BadRequest(
            "the upload is empty: send an image archive (docker save)".into(),
        ));
    }
    Ok(upload)
}

/// A small body (a secret, a login) read whole into memory, refused past
/// `limit` bytes; what was read of a refused one is zeroed.
pub async fn read_small(mut body: Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => frame.into_data().unwrap_or_default(),
            Err(e) => {
                bytes.fill(0);
                return Err(ApiError::Upload(e.to_string()));
            }
        };
        if bytes.len() + data.len() > limit {
            bytes.fill(0);
            return Err(ApiError::TooLarge(limit as u64));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes)
}

/// Reads and drops a request body faasd refuses before looking at it (a
/// bad name or option), so the client finishes sending and reads the
/// refusal instead of a broken pipe.
pub async fn discard(body: Incoming) {
    drain(body, DRAIN_AFTER_LIMIT).await;
}

async fn drain(mut body: Incoming, mut budget: u64) {
    while budget > 0 {
        match body.frame().await {
            Some(Ok(frame)) => {
                let n = frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
                budget = budget.saturating_sub(n);
            }
            _ => return,
        }
    }
}
