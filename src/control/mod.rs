//! The control API (hyper, HTTP/1.1) on `--listen`.
//!
//! Routes:
//! Every route but `/healthz` requires `Authorization: Bearer TOKEN` when
//! faasd runs with `--token-file`.
//!
//! - `GET /healthz`: 200 once faasd serves
//! - `GET /metrics`: Prometheus text
//! - `GET /v1/functions`: every function (JSON list of `FunctionInfo`)
//! - `PUT|POST /v1/functions/NAME?OPTIONS`: deploy; the body is the image
//!   archive, streamed to disk. Options (`api::DeployOptions`): `warm=N`,
//!   `env=K=V` (repeated), `memory=SIZE`, `timeout=SECS`, `reuse=BOOL`,
//!   `max_requests=N`, `idle_timeout=SECS`, `concurrency=N`,
//!   `all_cores=BOOL`, `kind=control-socket|stdio|socket-activation`,
//!   `container_port=N` (the container-port kind), `server_first=BOOL`.
//!   A request refused before its upload (bad name or options) has its
//!   body read and dropped first, so the client reads the reason
//! - `GET /v1/functions/NAME`: one function
//! - `DELETE /v1/functions/NAME`: remove it
//! - `GET /v1/functions/NAME/logs?tail=N&follow=true`: the end of its
//!   handler log, then (with `follow`) new lines as they come
//! - original tool: `POST /api/new` (name in `X-Image-Name`, the same
//!   options in the query string, the kind also in `X-Handler-Kind:
//!   stdio|socket-activation|container-port=N`), `GET /api/ip/NAME`,
//!   `GET /api/list`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::manager::Manager;

pub mod error;
pub mod logs;
pub mod reply;
pub mod routes;
pub mod upload;

pub use error::ApiError;

/// Every response body: whole, or streamed (`logs --follow`).
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What the handlers share.
pub struct Control {
    pub manager: Arc<Manager>,
    /// `None` with `--no-metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Bearer token every route but /healthz requires, if set.
    pub token: Option<String>,
    pub uploads: PathBuf,
    pub max_upload: u64,
    pub(crate) upload_seq: AtomicU64,
}

impl Control {
    pub fn new(
        manager: Arc<Manager>,
        metrics: Option<PrometheusHandle>,
        token: Option<String>,
        uploads: PathBuf,
        max_upload: u64,
    ) -> std::io::Result<Self> {
        // Uploads of a crashed run are garbage now.
        let _ = std::fs::remove_dir_all(&uploads);
        std::fs::create_dir_all(&uploads)?;
        std::fs::set_permissions(
            &uploads,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        Ok(Self {
            manager,
            metrics,
            token,
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
