//! `GET /v1/functions/NAME/logs?tail=N&follow=true`: the last lines of a
//! function's log ring on this node (also of one whose first deploy was
//! refused), then, when following, what is appended (polled; rotation is
//! noticed by the file getting shorter). In a cluster `peers` asks every
//! node for these.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Response, StatusCode};

use super::reply::{text, Reply};
use super::{ApiError, Control};
use crate::api::name::FunctionName;
use crate::runtime::logs::LogSink;

/// Bytes of each log file we read at most to find the last lines.
const WINDOW: u64 = 1 << 20;
const POLL: Duration = Duration::from_millis(200);
/// Most bytes sent per poll while following.
const CHUNK: usize = 64 << 10;

/// What `faas logs` asks: how many lines back, whether to follow, and
/// (in a cluster) which node's.
pub struct Asked {
    pub tail: usize,
    pub follow: bool,
    pub node: Option<String>,
}

impl Asked {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut asked = Asked {
            tail: 100,
            follow: false,
            node: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "tail" => {
                    asked.tail = v
                        .parse()
                        .map_err(|_| ApiError::BadRequest(format!("invalid tail {v:?}")))?
                }
                "follow" => asked.follow = matches!(v.as_ref(), "true" | "1"),
                "node" => asked.node = Some(v.into_owned()),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown log option {other:?}"
                    )))
                }
            }
        }
        Ok(asked)
    }
}

/// This node's log of `name`.
pub async fn logs(control: &Control, name: &str, query: Option<&str>) -> Reply {
    let name = FunctionName::parse(name)?;
    let asked = Asked::parse(query)?;
    let path = log_of(control, &name).await?;
    let (head, offset) = head(&path, asked.tail).await?;
    if !asked.follow {
        return Ok(text(StatusCode::OK, head));
    }
    let first =
        futures::stream::once(
            async move { Ok::<_, std::io::Error>(Frame::data(Bytes::from(head))) },
        );
    let rest = futures::StreamExt::map(following(path, offset), |chunk| Ok(Frame::data(chunk)));
    let body = StreamBody::new(futures::StreamExt::chain(first, rest)).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// Where `name`'s log is, if this node has one (a function whose first
/// deploy was refused has one too: why).
pub async fn log_of(control: &Control, name: &FunctionName) -> Result<PathBuf, ApiError> {
    let path = control.manager.log_path(name);
    if let Err(e) = control.manager.inspect(name).await {
        if !path.exists() {
            return Err(e.into());
        }
    }
    Ok(path)
}

/// The last `tail` lines, and the offset following goes on from.
pub async fn head(path: &Path, tail: usize) -> Result<(String, u64), ApiError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || last_lines(&p, tail))
        .await
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))
}

/// What is appended to the log from `offset` on, as it comes (polled).
pub fn following(path: PathBuf, offset: u64) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold((path, offset), |(path, mut offset)| async move {
        loop {
            tokio::time::sleep(POLL).await;
            let p = path.clone();
            let (chunk, next) = tokio::task::spawn_blocking(move || read_from(&p, offset))
                .await
                .ok()?;
            offset = next;
            if !chunk.is_empty() {
                return Some((Bytes::from(chunk), (path, offset)));
            }
        }
    })
}

/// The last `n` lines of the ring (older file first), and the current
/// file's length, where following goes on from.
fn last_lines(path: &Path, n: usize) -> (String, u64) {
    let (current, len) = read_end(path);
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    if lines.len() < n {
        let (older, _) = read_end(&LogSink::previous(path));
        let mut all: Vec<String> = older.lines().map(str::to_string).collect();
        all.append(&mut lines);
        lines = all;
    }
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    (out, len)
}

/// The last `WINDOW` bytes of a file (whole lines) and its length.
fn read_end(path: &Path) -> (String, u64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(WINDOW).read_to_end(&mut buf);
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Drop the partial first line.
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    (text, len)
}

/// New bytes since `offset` (from the start if the file was rotated).
fn read_from(path: &PathBuf, offset: u64) -> (Vec<u8>, u64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = if len < offset { 0 } else { offset };
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.take(CHUNK as u64).read_to_end(&mut buf);
    }
    let next = from + buf.len() as u64;
    (buf, next)
}
