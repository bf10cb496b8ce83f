//! What a request through one cluster node asks of the others: every
//! node's log lines of a function for `faas logs` (each line prefixed with
//! its node, followed as they come), and every node's counts for `faas
//! inspect`. Peers are asked over their control API with this node's
//! credential for the subject (`cluster::seal`), never the token, and
//! answer from what they alone hold; a peer that cannot be asked is named
//! in the answer, not an error of it.

use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::logs::{self, Asked};
use super::reply::{text, Reply};
use super::{ApiError, Control};
use crate::api::name::FunctionName;
use crate::api::{FunctionStats, NodeInfo, NodeStatus, PEER_HEADER};
use crate::cluster::Cluster;

/// How long a peer has to answer (to begin answering, when following).
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes of one peer's log lines taken without following.
const MOST: usize = 4 << 20;

/// `faas logs NAME` through a cluster node: every live node's lines (or
/// `node=`'s alone), prefixed `NODE | `.
pub async fn logs(control: &Control, cluster: &Cluster, name: &str, query: Option<&str>) -> Reply {
    let name = FunctionName::parse(name)?;
    let asked = Asked::parse(query)?;
    let mut members = members(cluster).await;
    if let Some(node) = &asked.node {
        members.retain(|m| m.name == *node);
        if members.is_empty() {
            return Err(ApiError::NoRoute(format!(
                "no live node named {node} (`faas nodes` lists them)"
            )));
        }
    }
    if asked.follow {
        // Nothing to follow anywhere: as without following, 404.
        let here = logs::log_of(control, &name).await.is_ok();
        let elsewhere = cluster.statuses(&name).await.is_ok_and(|s| !s.is_empty());
        if !here && !elsewhere {
            return Err(ApiError::NoRoute(format!(
                "no node has a function named {name}"
            )));
        }
        return follow(control, cluster, &name, &asked, members).await;
    }
    let heads = futures::future::join_all(
        members
            .iter()
            .map(|m| node_head(control, cluster, &name, asked.tail, m)),
    )
    .await;
    if heads.iter().all(|h| matches!(h, Head::Lacks)) {
        return Err(ApiError::NoRoute(format!(
            "no node has a function named {name}"
        )));
    }
    let mut out = String::new();
    for (member, head) in members.iter().zip(heads) {
        match head {
            Head::Lines(lines) => out += &prefixed(&member.name, &lines),
            Head::Lacks => {}
            Head::Unasked(why) => out += &format!("{} | (not asked: {why})\n", member.name),
        }
    }
    Ok(text(StatusCode::OK, out))
}

/// Fills each node's live counts into `nodes` (`faas inspect`): this
/// node's from `mine`, the others' by asking them.
pub async fn counts(
    cluster: &Cluster,
    name: &FunctionName,
    mine: &FunctionStats,
    nodes: &mut [NodeStatus],
) {
    let members = members(cluster).await;
    let asks = nodes.iter().map(|status| {
        let member = members.iter().find(|m| m.name == status.node).cloned();
        async move {
            if status.node == cluster.node_name() {
                return Some((mine.requests, mine.warm_ready));
            }
            let member = member?;
            let path = format!("/v1/functions/{name}");
            let credential = cluster.peer_credential(&format!("inspect/{name}"));
            let answer = ask(&member.url, &path, &credential).await.ok()?;
            if answer.status() != StatusCode::OK {
                return None;
            }
            let body = tokio::time::timeout(ASK_TIMEOUT, answer.into_body().collect())
                .await
                .ok()?
                .ok()?;
            let info: crate::api::FunctionInfo = serde_json::from_slice(&body.to_bytes()).ok()?;
            Some((info.stats.requests, info.stats.warm_ready))
        }
    });
    let got = futures::future::join_all(asks).await;
    for (status, got) in nodes.iter_mut().zip(got) {
        if let Some((requests, warm_ready)) = got {
            status.requests = Some(requests);
            status.warm_ready = Some(warm_ready);
        }
    }
}

/// The cluster's live members by name; this node alone if etcd cannot
/// say (its own lines still answer).
async fn members(cluster: &Cluster) -> Vec<NodeInfo> {
    let mut members = match cluster.nodes().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "listing the cluster's nodes");
            Vec::new()
        }
    };
    if !members.iter().any(|m| m.name == cluster.node_name()) {
        members.push(NodeInfo {
            name: cluster.node_name().to_string(),
            url: String::new(),
            since: 0,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}

enum Head {
    Lines(String),
    /// That node has no such function (nor a log of one).
    Lacks,
    Unasked(String),
}

async fn node_head(
    control: &Control,
    cluster: &Cluster,
    name: &FunctionName,
    tail: usize,
    member: &NodeInfo,
) -> Head {
    if member.name == cluster.node_name() {
        return match logs::log_of(control, name).await {
            Ok(path) => match logs::head(&path, tail).await {
                Ok((lines, _)) => Head::Lines(lines),
                Err(e) => Head::Unasked(e.to_string()),
            },
            Err(_) => Head::Lacks,
        };
    }
    let path = format!("/v1/functions/{name}/logs?tail={tail}");
    let credential = cluster.peer_credential(&format!("logs/{name}"));
    let answer = match ask(&member.url, &path, &credential).await {
        Ok(a) => a,
        Err(why) => return Head::Unasked(why),
    };
    match answer.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Head::Lacks,
        other => return Head::Unasked(format!("it answered {other}")),
    }
    let body = http_body_util::Limited::new(answer.into_body(), MOST);
    match tokio::time::timeout(ASK_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => Head::Lines(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Ok(Err(e)) => Head::Unasked(e.to_string()),
        Err(_) => Head::Unasked("timed out".into()),
    }
}

/// Every member's lines as they come, merged line by line. Each source
/// stops when the client goes (the channel closes), which drops its
/// connection to the peer, which stops following there too.
async fn follow(
    control: &Control,
    cluster: &Cluster,
    name: &FunctionName,
    asked: &Asked,
    members: Vec<NodeInfo>,
) -> Reply {
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    for member in members {
        let tx = tx.clone();
        if member.name == cluster.node_name() {
            let Ok(path) = logs::log_of(control, name).await else {
                continue;
            };
            let (head, offset) = logs::head(&path, asked.tail).await?;
            let chunks = futures::stream::once(async { Bytes::from(head) })
                .chain(logs::following(path, offset));
            tokio::spawn(relay(member.name, chunks.boxed(), tx));
            continue;
        }
        let path = format!("/v1/functions/{name}/logs?tail={}&follow=true", asked.tail);
        let credential = cluster.peer_credential(&format!("logs/{name}"));
        tokio::spawn(async move {
            let answer = match ask(&member.url, &path, &credential).await {
                Ok(a) if a.status() == StatusCode::OK => a,
                Ok(a) if a.status() == StatusCode::NOT_FOUND => return,
                Ok(a) => {
                    let why = format!(
                        "{} | (not asked: it answered {})\n",
                        member.name,
                        a.status()
                    );
                    let _ = tx.send(Bytes::from(why)).await;
                    return;
                }
                Err(why) => {
                    let why = format!("{} | (not asked: {why})\n", member.name);
                    let _ = tx.send(Bytes::from(why)).await;
                    return;
                }
            };
            let chunks = futures::stream::unfold(answer.into_body(), |mut body| async move {
                loop {
                    match body.frame().await? {
                        Ok(frame) => {
                            if let Ok(data) = frame.into_data() {
                                return Some((data, body));
                            }
                        }
                        Err(_) => return None,
                    }
                }
            });
            relay(member.name, chunks.boxed(), tx).await;
        });
    }
    drop(tx);
    let merged = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|chunk| Ok::<_, std::io::Error>(Frame::data(chunk)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(merged)));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// Sends `chunks` on as whole lines prefixed with `node`, until they end
/// or nobody reads any more.
async fn relay(
    node: String,
    mut chunks: futures::stream::BoxStream<'static, Bytes>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = tx.closed() => return,
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            return;
        };
        partial.extend_from_slice(&chunk);
        let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let lines: Vec<u8> = partial.drain(..=end).collect();
        let out = prefixed(&node, &String::from_utf8_lossy(&lines));
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}

fn prefixed(node: &str, lines: &str) -> String {
    lines.lines().map(|l| format!("{node} | {l}\n")).collect()
}

/// `GET path` of the peer at `url` (`http://HOST:PORT`, as it advertises
/// itself), with `credential`.
async fn ask(url: &str, path: &str, credential: &str) -> Result<Response<Incoming>, String> {
    let authority = url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .ok_or_else(|| format!("{url:?} is not an http:// address"))?;
    let asked = async {
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(PEER_HEADER, credential)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .map_err(|_| format!("{url}: no answer within {ASK_TIMEOUT:?}"))?
}
