//! Request dispatch: one `match` on method and path, each arm a handler
//! returning `Result<Response, ApiError>`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::reply::{changed, json, text, with_revision, Reply, CLUSTER, MIN_REVISION, REVISION};
use super::{logs, peers, pull, secrets, upload, ApiError, Body, Control, Peer};
use crate::api::name::FunctionName;
use crate::api::OptionsPatch;
use crate::cluster::ClusterError;
use crate::manager::ManagerError;
use crate::metrics;

pub async fn dispatch(control: &Control, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let from_peer =
        req.headers().contains_key(crate::api::PEER_HEADER) && a_peer(control, &req, &segments);
    if segments != ["healthz"] && !from_peer && !authorized(control, peer, &req) {
        return ApiError::Unauthorized.response();
    }
    let reached = match segments.as_slice() {
        ["healthz"] | ["v1", "archives", ..] => Ok(()),
        _ => reach_asked(control, &req).await,
    };
    let reply = if let Err(e) = reached {
        Err(e)
    } else {
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Ok(text(StatusCode::OK, "ok\n")),
            (&Method::GET, ["v1", "functions"]) => list(control).await,
            (&Method::GET, ["v1", "functions", name]) => inspect(control, name, from_peer).await,
            (&Method::PUT | &Method::POST, ["v1", "functions", name]) => {
                let name = FunctionName::parse(name).map_err(ApiError::from);
                match name {
                    Ok(name) => deploy(control, name, req).await,
                    Err(e) => refuse_upload(req, e).await,
                }
            }
            (&Method::PATCH, ["v1", "functions", name]) => update(control, name, &req).await,
            (&Method::POST, ["v1", "functions", name, "rollback"]) => {
                rollback(control, name, &req).await
            }
            (&Method::DELETE, ["v1", "functions", name]) => remove(control, name).await,
            (&Method::GET, ["v1", "functions", name, "pull"]) => pull::progress(control, name),
            (&Method::GET, ["v1", "functions", name, "logs"]) => {
                let query = req.uri().query();
                match (&control.cluster, from_peer) {
                    (Some(cluster), false) => peers::logs(control, cluster, name, query).await,
                    _ => logs::logs(control, name, query).await,
                }
            }
            (&Method::GET, ["v1", "nodes"]) => nodes(control).await,
            (&Method::GET, ["v1", "archives", digest]) => archive(control, digest).await,
            (&Method::GET, ["v1", "secrets"]) => secrets::list(control).await,
            (&Method::PUT | &Method::POST, ["v1", "secrets", name]) => {
                secrets::create(control, name, req).await
            }
            (&Method::DELETE, ["v1", "secrets", name]) => secrets::remove(control, name).await,
            (&Method::GET, ["v1", "registries"]) => pull::logins(control).await,
            (&Method::PUT | &Method::POST, ["v1", "registries", host]) => {
                pull::login(control, host, req).await
            }
            (&Method::DELETE, ["v1", "registries", host]) => pull::logout(control, host).await,
            (&Method::GET, ["metrics"]) => metrics(control).await,
            (&Method::POST, ["api", "new"]) => api_new(control, req).await,
            (&Method::GET, ["api", "ip", name]) => api_ip(control, name).await,
            (&Method::GET, ["api", "list"]) => api_list(control).await,
            (
                _,
                ["healthz"]
                | ["metrics"]
                | ["v1", "functions" | "secrets" | "nodes" | "archives" | "registries", ..]
                | ["api", ..],
            ) => Err(ApiError::Method(method.to_string())),
            _ => Err(ApiError::NoRoute(path.clone())),
        }
    };
    let response = match reply {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%method, %path, status = %e.status(), error = %e, "control request failed");
            e.response()
        }
    };
    stamp(control, response)
}

/// `X-Faas-Min-Revision` (the last revision the client saw, of the cluster
/// named in `X-Faas-Cluster` if it says): waits until this node's view
/// has reached it. Another cluster's revision is not this one's.
async fn reach_asked(control: &Control, req: &Request<Incoming>) -> Result<(), ApiError> {
    let (Some(cluster), Some(min)) = (&control.cluster, req.headers().get(MIN_REVISION)) else {
        return Ok(());
    };
    let min: i64 = min
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{MIN_REVISION} is not a revision")))?;
    let theirs = req.headers().get(CLUSTER).and_then(|v| v.to_str().ok());
    if theirs.is_some_and(|c| cluster.view().id().is_some_and(|ours| ours != c)) {
        return Ok(());
    }
    cluster
        .view()
        .reach(min, crate::cluster::REACH_TIMEOUT)
        .await
        .map_err(ApiError::from)
}

/// Names this node's cluster in every answer, and the revision the answer
/// reflects: a change's own (set by its route), else how far this node's
/// view has come.
fn stamp(control: &Control, mut response: Response<Body>) -> Response<Body> {
    let Some(cluster) = &control.cluster else {
        return response;
    };
    let view = cluster.view();
    let headers = response.headers_mut();
    if let Some(id) = view
        .id()
        .and_then(|id| hyper::header::HeaderValue::from_str(id).ok())
    {
        headers.insert(CLUSTER, id);
    }
    if !headers.contains_key(REVISION) {
        headers.insert(REVISION, hyper::header::HeaderValue::from(view.applied()));
    }
    response
}

/// `%XX` escapes in a path segment (a client escapes what is not a plain
/// name character, so faasd sees and judges the name as typed).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every function as this node serves it (in a cluster, one being changed
/// through this node as it was before, until etcd decides).
async fn list(control: &Control) -> Reply {
    match &control.cluster {
        Some(cluster) => json(&cluster.functions().await),
        None => json(&control.manager.list().await),
    }
}

/// One function as this node serves it; in a cluster (asked by a user,
/// not a peer), with what every node serves of it and counts.
async fn inspect(control: &Control, name: &str, from_peer: bool) -> Reply {
    let name = FunctionName::parse(name)?;
    let mut info = match (&control.cluster, from_peer) {
        (Some(cluster), false) => cluster.function(&name).await?,
        _ => control.manager.inspect(&name).await?,
    };
    if let (Some(cluster), false) = (&control.cluster, from_peer) {
        // What this node serves stays answerable during an etcd outage.
        match cluster.statuses(&name).await {
            Ok(nodes) => info.nodes = nodes,
            Err(e) => tracing::warn!(function = %name, error = %e, "reading node statuses"),
        }
        peers::counts(cluster, &name, &info.stats, &mut info.nodes).await;
    }
    json(&info)
}

async fn remove(control: &Control, name: &str) -> Reply {
    let name = FunctionName::parse(name)?;
    let revision = match &control.cluster {
        Some(cluster) => Some(cluster.remove(&name).await?),
        None => {
            control.manager.remove(&name).await?;
            None
        }
    };
    Ok(with_revision(
        text(StatusCode::OK, format!("removed {name}\n")),
        revision,
    ))
}

async fn nodes(control: &Control) -> Reply {
    let cluster = control.cluster.as_ref().ok_or_else(not_clustered)?;
    json(&cluster.nodes().await?)
}

fn not_clustered() -> ApiError {
    ApiError::NoRoute("/v1/nodes: this faasd is not in a cluster (--etcd)".into())
}

/// An archive this node keeps, streamed to a peer.
async fn archive(control: &Control, digest: &str) -> Reply {
    let cluster = control.cluster.as_ref().ok_or_else(not_clustered)?;
    let archives = cluster.archives();
    if !archives.has(digest) {
        return Err(ApiError::NoRoute(format!(
            "/v1/archives/{digest}: not here"
        )));
    }
    let file = tokio::fs::File::open(archives.path(digest))
        .await
        .map_err(ApiError::Storage)?;
    let len = file.metadata().await.map_err(ApiError::Storage)?.len();
    let body = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut r = Response::new(StreamBody::new(body).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(len),
    );
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

async fn deploy(control: &Control, name: FunctionName, req: Request<Incoming>) -> Reply {
    let (pull, rest) = match pull::split_query(req.uri().query().unwrap_or("")) {
        Ok(split) => split,
        Err(e) => return refuse_upload(req, ApiError::BadRequest(e)).await,
    };
    let patch = match OptionsPatch::from_query(&rest) {
        Ok(o) => o,
        Err(e) => return refuse_upload(req, ApiError::BadRequest(e)).await,
    };
    let info = match pull {
        Some(pull) => pull::deploy(control, name, patch, pull, req).await?,
        None => receive_and_deploy(control, name, patch, req).await?,
    };
    changed(&info)
}

async fn update(control: &Control, name: &str, req: &Request<Incoming>) -> Reply {
    let name = FunctionName::parse(name)?;
    let (again, rest) = pull::split_update(req.uri().query().unwrap_or(""))?;
    let patch = OptionsPatch::from_query(&rest).map_err(ApiError::BadRequest)?;
    if again {
        return changed(&pull::update(control, &name, patch).await?);
    }
    if patch.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to update: name the options to change".into(),
        ));
    }
    match &control.cluster {
        Some(cluster) => changed(&cluster.update(&name, patch).await?),
        None => json(&control.manager.update(&name, patch).await?),
    }
}

async fn rollback(control: &Control, name: &str, req: &Request<Incoming>) -> Reply {
    let name = FunctionName::parse(name)?;
    let mut to = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "to" => {
                to = Some(
                    v.parse::<u64>()
                        .map_err(|_| ApiError::BadRequest(format!("invalid version {v:?}")))?,
                )
            }
            other => return Err(ApiError::BadRequest(format!("unknown option {other:?}"))),
        }
    }
    match &control.cluster {
        Some(cluster) => changed(&cluster.rollback(&name, to).await?),
        None => json(&control.manager.rollback(&name, to).await?),
    }
}

/// Answers `e` to a deploy refused before its upload was read. A client
/// that waits for `100 Continue` has sent nothing yet and reads this
/// first; any other has its body read and dropped first, so it finishes
/// sending and reads the reason rather than a broken pipe.
async fn refuse_upload(req: Request<Incoming>, e: ApiError) -> Reply {
    let waits = req
        .headers()
        .get(hyper::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !waits {
        upload::discard(req.into_body()).await;
    }
    Err(e)
}

async fn receive_and_deploy(
    control: &Control,
    name: FunctionName,
    patch: OptionsPatch,
    req: Request<Incoming>,
) -> Result<crate::api::FunctionInfo, ApiError> {
    let started = std::time::Instant::now();
    let seq = control.upload_seq.fetch_add(1, Ordering::Relaxed);
    let path = control.uploads.join(format!("{name}-{seq}.tar"));
    let received = match upload::receive(req.into_body(), &path, control.max_upload).await {
        Ok(r) => r,
        Err(e) => {
            metrics::image_error(match e {
                ApiError::TooLarge(_) => "upload_too_large",
                _ => "upload",
            });
            return Err(e);
        }
    };
    tracing::info!(function = %name, bytes = received.bytes, "image received");
    let deployed = match &control.cluster {
        Some(cluster) => cluster
            .deploy(name, patch, received.path.clone())
            .await
            .map_err(ApiError::from),
        None => control
            .manager
            .deploy(name, patch, received.path.clone())
            .await
            .map_err(ApiError::from),
    };
    match deployed {
        Ok(info) => {
            metrics::deployed(started.elapsed(), received.bytes);
            Ok(info)
        }
        Err(e) => {
            if let ApiError::Manager(ManagerError::Image(image))
            | ApiError::Cluster(ClusterError::Manager(ManagerError::Image(image))) = &e
            {
                metrics::image_error(image.reason());
            }
            Err(e)
        }
    }
}

/// Original tool: `POST /api/new` with the name in `X-Image-Name`.
async fn api_new(control: &Control, req: Request<Incoming>) -> Reply {
    let checked = new_request(&req);
    let (name, patch) = match checked {
        Ok(c) => c,
        Err(e) => return refuse_upload(req, e).await,
    };
    let info = receive_and_deploy(control, name, patch, req).await?;
    Ok(with_revision(
        json(&serde_json::json!({ "name": info.name, "ip": info.ip, "cmd": info.command }))?,
        info.revision,
    ))
}

/// `/api/new`'s name (`X-Image-Name`) and options: the query string, or
/// the handler kind in `X-Handler-Kind` (`stdio`, `socket-activation`,
/// `container-port=N`) for clients that cannot set a query.
fn new_request(req: &Request<Incoming>) -> Result<(FunctionName, OptionsPatch), ApiError> {
    let name = req
        .headers()
        .get("x-image-name")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("missing X-Image-Name header".into()))?;
    let name = FunctionName::parse(name)?;
    let mut query = req.uri().query().unwrap_or("").to_string();
    if let Some(kind) = req.headers().get("x-handler-kind") {
        let kind = kind
            .to_str()
            .map_err(|_| ApiError::BadRequest("X-Handler-Kind is not text".into()))?;
        let pair = match kind.split_once('=') {
            Some(("container-port", port)) => format!("container_port={port}"),
            _ => format!("kind={kind}"),
        };
        query = if query.is_empty() {
            pair
        } else {
            format!("{query}&{pair}")
        };
    }
    let patch = OptionsPatch::from_query(&query).map_err(ApiError::BadRequest)?;
    Ok((name, patch))
}

/// Original tool: `GET /api/ip/NAME` → `{"name", "ip"}`.
async fn api_ip(control: &Control, name: &str) -> Reply {
    let name = FunctionName::parse(name)?;
    let info = control.manager.inspect(&name).await?;
    json(&serde_json::json!({ "name": info.name, "ip": info.ip }))
}

/// Original tool: `GET /api/list` → `{NAME: {"ip", "cmd"}}`.
async fn api_list(control: &Control) -> Reply {
    let all: BTreeMap<String, serde_json::Value> = control
        .manager
        .list()
        .await
        .into_iter()
        .map(|i| {
            (
                i.name.clone(),
                serde_json::json!({ "ip": i.ip, "cmd": i.command }),
            )
        })
        .collect();
    json(&all)
}

/// Prometheus text; the point-in-time gauges are set just before.
async fn metrics(control: &Control) -> Reply {
    let Some(handle) = &control.metrics else {
        return Err(ApiError::NoRoute(
            "/metrics (faasd runs with --no-metrics)".into(),
        ));
    };
    control.manager.update_gauges();
    let mut r = text(StatusCode::OK, handle.render());
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// Whether the request may drive faasd: anything on the Unix socket (its
/// permissions decided), on TCP only with the token (if there is one).
fn authorized(control: &Control, peer: Peer, req: &Request<Incoming>) -> bool {
    let Peer::Tcp(_) = peer else {
        return true;
    };
    let Some(token) = &control.token else {
        return true;
    };
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

/// Whether the request is a cluster peer's (an archive, or what this node
/// alone serves of a function and logged of it), with a credential good
/// for that subject (`cluster::seal`): peers never send the token, since
/// their addresses come from etcd.
fn a_peer(control: &Control, req: &Request<Incoming>, segments: &[&str]) -> bool {
    let Some(cluster) = &control.cluster else {
        return false;
    };
    // What a peer may ask, and the subject its credential must be for.
    let subject = match (req.method(), segments) {
        (&Method::GET, ["v1", "archives", digest]) => digest.to_string(),
        (&Method::GET, ["v1", "functions", name]) => format!("inspect/{name}"),
        (&Method::GET, ["v1", "functions", name, "logs"]) => format!("logs/{name}"),
        _ => return false,
    };
    let Some(credential) = req
        .headers()
        .get(crate::api::PEER_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match cluster.check_peer(credential, &subject) {
        Ok(node) => {
            tracing::debug!(node, subject, "answering a peer");
            true
        }
        Err(e) => {
            tracing::warn!(subject, error = %e, "refused a peer's request");
            false
        }
    }
}

/// Compares without an early exit, so timing tells nothing about where a
/// guess went wrong (only, at most, that its length did).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, percent_decode};

    #[test]
    fn decodes_escaped_segments() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("plain-name"), "plain-name");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("%2e%2E"), "..");
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
