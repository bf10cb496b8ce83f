//! The control API (hyper, HTTP/1.1) on `--listen` and on the Unix socket
//! `--socket` (`socket`).
//!
//! On TCP every route but `/healthz` requires `Authorization: Bearer
//! TOKEN` (faasd's token, unless `--insecure-no-token`); on the socket its
//! file permissions decide. Routes:
//!
//! - `GET /healthz`: 200 once faasd serves
//! - `GET /metrics`: Prometheus text
//! - `GET /v1/functions`: every function (JSON list of `FunctionInfo`)
//! - `PUT|POST /v1/functions/NAME?OPTIONS`: deploy; the body is the image
//!   archive, streamed to disk. Options (`api::OptionsPatch`): `warm=N`,
//!   `env=K=V` (repeated), `secret=NAME[=VAR]` (repeated), `memory=SIZE`,
//!   `timeout=SECS`, `reuse=BOOL`, `max_requests=N`, `idle_timeout=SECS`,
//!   `concurrency=N`, `all_cores=BOOL`,
//!   `kind=control-socket|stdio|socket-activation`, `container_port=N`,
//!   `server_first=BOOL`, `egress=BOOL`, `egress_allow=PREFIX[:PORT]`
//!   (repeated); those left out keep the function's current value.
//!   A request refused before its upload (bad name or options) is answered
//!   before `100 Continue` (or, without `Expect`, after its body was read
//!   and dropped), so the client reads the reason
//! - `PUT /v1/functions/NAME?image=REF[&platform=OS/ARCH]&OPTIONS`, empty
//!   body: deploy by registry reference, faasd pulls (`pull`)
//! - `PATCH /v1/functions/NAME?OPTIONS`: a new version with the same image
//!   and these options changed; with `pull=true`, the reference resolved
//!   again and a moved digest deployed
//! - `GET /v1/functions/NAME/pull`: a pull under way, layer by layer
//! - `POST /v1/functions/NAME/rollback[?to=VERSION]`: serve a kept version
//!   again (by default the one that served before)
//! - `GET /v1/functions/NAME`: one function, with its versions
//! - `DELETE /v1/functions/NAME`: remove it
//! - `GET /v1/functions/NAME/logs?tail=N&follow=true[&node=NODE]`: the end
//!   of its handler log, then (with `follow`) new lines as they come; in
//!   a cluster every live node's (or `node`'s), each line prefixed
//!   `NODE | ` (`peers`)
//! - `GET /v1/registries`, `PUT /v1/registries/HOST` (body `{"username",
//!   "password"}`), `DELETE /v1/registries/HOST`: the logins faasd pulls
//!   with; hosts and user names only ever go out
//! - `GET /v1/nodes`: the cluster's members (`--etcd` only)
//! - `GET /v1/archives/DIGEST`: an image archive this node keeps, for its
//!   cluster peers (`--etcd` only)
//!
//! With `--etcd`, deploy, update, rollback and rm are recorded in etcd for
//! every node (503 while etcd is unreachable), and a function's answer
//! lists what each node serves of it, with each node's live counts
//! (`peers`). A peer's own requests (an archive, a function's local view
//! or log) carry a credential for that subject instead of the token. Every answer then names the cluster
//! (`X-Faas-Cluster`) and the revision it reflects (`X-Faas-Revision`: a
//! change's own, else this node's view); a request carrying
//! `X-Faas-Min-Revision` waits until this node's view has reached it
//! (`routes::reach_asked`).
//! - `GET /v1/secrets`, `PUT /v1/secrets/NAME[?replace=true]` (the body is
//!   the value), `DELETE /v1/secrets/NAME`: names and sizes only ever go
//!   out
//! - original tool: `POST /api/new` (name in `X-Image-Name`, the same
//!   options in the query string, the kind also in `X-Handler-Kind:
//!   stdio|socket-activation|container-port=N`), `GET /api/ip/NAME`,
//!   `GET /api/list`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

use crate::cluster::Cluster;
use crate::manager::Manager;

pub mod error;
pub mod logs;
pub mod peers;
pub mod pull;
pub mod reply;
pub mod routes;
pub mod secrets;
pub mod socket;
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
    /// Bearer token every TCP route but /healthz requires, if set.
    pub token: Option<String>,
    pub uploads: PathBuf,
    pub max_upload: u64,
    pub(crate) upload_seq: AtomicU64,
    /// `--etcd`: changes go through the cluster.
    pub cluster: Option<Arc<Cluster>>,
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
            cluster: None,
        })
    }
}

/// Who is on the other end of a control connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The Unix socket: whoever could open it (root and the `faasd`
    /// group) may drive faasd without the token.
    Unix,
}

/// A client gets this long to send a request's head (or, idle on a kept
/// connection, its next one) before the connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections held at once per listener; past it a new one is told 503
/// and closed, so half-sent requests cannot take every slot for long, and
/// the Unix socket keeps room for the operator whatever happens on TCP.
const MAX_TCP_CONNECTIONS: usize = 256;
const MAX_UNIX_CONNECTIONS: usize = 64;
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 52\r\nconnection: close\r\n\r\n{\"error\":\"faasd holds too many control connections\"}";

/// Serves the control API on `tcp` (and the Unix socket, if any) until
/// `stop` turns true.
pub async fn serve(
    tcp: TcpListener,
    unix: Option<UnixListener>,
    control: Arc<Control>,
    stop: watch::Receiver<bool>,
) {
    let unix_task = unix.map(|listener| {
        let control = Arc::clone(&control);
        let stop = stop.clone();
        tokio::spawn(async move {
            accept_loop(
                || async { listener.accept().await.map(|(s, _)| (s, Peer::Unix)) },
                MAX_UNIX_CONNECTIONS,
                control,
                stop,
            )
            .await
        })
    });
    accept_loop(
        || async { tcp.accept().await.map(|(s, a)| (s, Peer::Tcp(a))) },
        MAX_TCP_CONNECTIONS,
        control,
        stop,
    )
    .await;
    if let Some(task) = unix_task {
        let _ = task.await;
    }
}

async fn accept_loop<S, F, Fut>(
    mut accept: F,
    cap: usize,
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, Peer)>>,
{
    let slots = Arc::new(Semaphore::new(cap));
    loop {
        let (stream, peer) = tokio::select! {
            a = accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(?peer, cap, "control connection refused: too many open");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
            });
            continue;
        };
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            connection(stream, peer, control).await;
            drop(slot);
        });
    }
}

async fn connection<S>(stream: S, peer: Peer, control: Arc<Control>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let control = Arc::clone(&control);
        async move { Ok::<_, std::convert::Infallible>(routes::dispatch(&control, peer, req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(?peer, error = %e, "control connection");
    }
}
