//! The control API (hyper, HTTP/1.1) on `--listen`.
//!
//! Routes:
//! - `GET /healthz`: 200 once faasd serves
//! - `GET /v1/functions`: every function (JSON list of `FunctionInfo`)
//! - `PUT|POST /v1/functions/NAME?warm=&memory=&timeout=&env=K=V`: deploy;
//!   the body is the image archive, streamed to disk
//! - `GET /v1/functions/NAME`: one function
//! - `DELETE /v1/functions/NAME`: remove it
//! - `GET /v1/functions/NAME/logs?tail=N`: the end of its handler log
//! - original tool: `POST /api/new` (name in `X-Image-Name`),
//!   `GET /api/ip/NAME`, `GET /api/list`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::manager::Manager;

pub mod error;
pub mod routes;
pub mod upload;

pub use error::ApiError;

/// What the handlers share.
pub struct Control {
    pub manager: Arc<Manager>,
    pub uploads: PathBuf,
    pub max_upload: u64,
    pub(crate) upload_seq: AtomicU64,
}

impl Control {
    pub fn new(manager: Arc<Manager>, uploads: PathBuf, max_upload: u64) -> std::io::Result<Self> {
        // Uploads of a crashed run are garbage now.
        let _ = std::fs::remove_dir_all(&uploads);
        std::fs::create_dir_all(&uploads)?;
        Ok(Self {
            manager,
            uploads,
            max_upload,
            upload_seq: AtomicU64::new(0),
        })
    }
}

/// Serves the control API until `stop` turns true.
pub async fn serve(listener: TcpListener, control: Arc<Control>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let control = Arc::clone(&control);
        tokio::spawn(connection(stream, peer, control));
    }
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, control: Arc<Control>) {
    let service = service_fn(move |req| {
        let control = Arc::clone(&control);
        async move { Ok::<_, std::convert::Infallible>(routes::dispatch(&control, req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "control connection");
    }
}
