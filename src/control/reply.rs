//! Building answers: plain text and JSON bodies, and the `Reply` every
//! route returns (errors become answers through `ApiError`'s table).

use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{full, ApiError, Body};

pub type Reply = Result<Response<Body>, ApiError>;

/// The revision an answer reflects (a change's own), the lowest one a
/// request accepts, and the cluster both belong to.
pub const REVISION: &str = "x-faas-revision";
pub const MIN_REVISION: &str = "x-faas-min-revision";
pub const CLUSTER: &str = "x-faas-cluster";

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

pub fn json<T: Serialize>(value: &T) -> Reply {
    let body = serde_json::to_vec_pretty(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// A function as a change left it, with the revision that recorded it.
pub fn changed(info: &crate::api::FunctionInfo) -> Reply {
    Ok(with_revision(json(info)?, info.revision))
}

/// `X-Faas-Revision`, where the cluster recorded the change.
pub fn with_revision(mut r: Response<Body>, revision: Option<i64>) -> Response<Body> {
    if let Some(revision) = revision {
        r.headers_mut()
            .insert(REVISION, hyper::header::HeaderValue::from(revision));
    }
    r
}
