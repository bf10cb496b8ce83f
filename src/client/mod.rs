//! Client of the control API, used by `faas` (and the tests): blocking,
//! one request per connection, over TCP or faasd's Unix socket (`http`).
//! Also where `faas` finds faasd and its token when told nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::api::{DeployOptions, ErrorBody, FunctionInfo, OptionsPatch, SecretInfo};

mod endpoint;
pub mod http;
pub mod revisions;

use http::{Body, Endpoint, Response, WireError};
use revisions::Revisions;

/// Where faasd listens when nothing else is said.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The control socket faasd creates by default.
pub const DEFAULT_SOCKET: &str = "/run/faasd/faasd.sock";
/// The token faasd creates in its default state directory.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/faasd/token";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("cannot reach faasd at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("{0}")]
    Url(String),
    #[error("reading the upload: {0}")]
    Source(String),
    #[error("unexpected answer from faasd: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The URL `faas` talks to: the one given (flag or FAAS_URL), else the
/// default socket if it exists (as `docker` does), else the default TCP
/// address.
pub fn default_url(given: Option<&str>) -> String {
    match given.filter(|u| !u.is_empty()) {
        Some(url) => url.to_string(),
        None if Path::new(DEFAULT_SOCKET).exists() => format!("unix://{DEFAULT_SOCKET}"),
        None => DEFAULT_URL.to_string(),
    }
}

/// The token to send over TCP when none was given: the default state
/// directory's, which only root can read (`None` otherwise).
pub fn default_token() -> Option<String> {
    std::fs::read_to_string(DEFAULT_TOKEN_FILE)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub struct Client {
    url: String,
    endpoint: Result<Endpoint, String>,
    /// `Authorization: Bearer …`
    auth: Option<String>,
    /// Where the last revision seen of each cluster is kept, if anywhere.
    revisions: Option<Revisions>,
}

impl Client {
    /// A client of faasd at `url` (`http://HOST:PORT` or `unix:///PATH`);
    /// a malformed URL fails at the first request.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            endpoint: Endpoint::parse(url),
            auth: None,
            revisions: None,
        }
    }

    /// Carries the last revision seen of this node's cluster in every
    /// request, and keeps what every answer says (see `revisions`).
    pub fn with_revisions(mut self, revisions: Revisions) -> Self {
        self.revisions = Some(revisions);
        self
    }

    /// Sends `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.auth = token
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"));
        self
    }

    /// Over a Unix socket (where the token is not needed).
    pub fn is_local_socket(&self) -> bool {
        matches!(self.endpoint, Ok(Endpoint::Unix(_)))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response, ClientError> {
        let endpoint = self
            .endpoint
            .as_ref()
            .map_err(|e| ClientError::Url(e.clone()))?;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &self.auth {
            all.push(("authorization", auth));
        }
        let carried = self.revisions.as_ref().and_then(|r| r.for_url(&self.url));
        let min = carried.as_ref().map(|(_, at)| at.to_string());
        if let (Some((cluster, _)), Some(min)) = (&carried, &min) {
            all.push(("x-faas-cluster", cluster));
            all.push(("x-faas-min-revision", min));
        }
        let response = http::request(endpoint, method, path, &all, body).map_err(|e| match e {
            WireError::Connect(io) | WireError::Io(io) => ClientError::Transport {
                url: self.url.clone(),
                message: short_io(&io, endpoint),
            },
            WireError::Source(io) => ClientError::Source(io.to_string()),
            WireError::Malformed(m) => ClientError::Decode(m),
        })?;
        if let (Some(revisions), Some(cluster), Some(at)) = (
            &self.revisions,
            response.header("x-faas-cluster"),
            response
                .header("x-faas-revision")
                .and_then(|v| v.parse::<i64>().ok()),
        ) {
            revisions.saw(&self.url, cluster, at);
        }
        if response.status >= 400 {
            let status = response.status;
            let body = response.text().unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| body.trim().to_string());
            return Err(ClientError::Api { status, message });
        }
        Ok(response)
    }

    fn json<T: serde::de::DeserializeOwned>(r: Response) -> Result<T, ClientError> {
        let body = r.text().map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Uploads an image archive read from `image` and deploys it as
    /// `name`, with the options `patch` names (the rest kept, or the
    /// defaults for a new function). The upload waits for faasd to accept
    /// the request, so a refusal arrives before the image is sent.
    pub fn deploy<'a>(
        &self,
        name: &str,
        patch: impl Into<Patch<'a>>,
        mut image: impl Read,
    ) -> Result<FunctionInfo, ClientError> {
        let path = format!("/v1/functions/{}?{}", escape(name), patch.into().query());
        let r = self.send(
            "PUT",
            &path,
            &[("content-type", "application/x-tar")],
            Body::Stream(&mut image),
        )?;
        Self::json(r)
    }

    /// Deploys `name` from the registry reference `reference`, pulled by
    /// faasd (for `platform`, `os/arch[/variant]`, if given).
    pub fn deploy_image<'a>(
        &self,
        name: &str,
        patch: impl Into<Patch<'a>>,
        reference: &str,
        platform: Option<&str>,
    ) -> Result<FunctionInfo, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("image", reference);
        if let Some(p) = platform {
            query.append_pair("platform", p);
        }
        let options = patch.into().query();
        let mut path = format!("/v1/functions/{}?{}", escape(name), query.finish());
        if !options.is_empty() {
            path = format!("{path}&{options}");
        }
        Self::json(self.send("PUT", &path, &[], Body::Empty)?)
    }

    /// Resolves the reference `name` was pulled by again; deploys the new
    /// digest (with `patch`) if it moved.
    pub fn update_pull(
        &self,
        name: &str,
        patch: &OptionsPatch,
    ) -> Result<FunctionInfo, ClientError> {
        let options = patch.to_query();
        let sep = if options.is_empty() { "" } else { "&" };
        let path = format!("/v1/functions/{}?pull=true{sep}{options}", escape(name));
        Self::json(self.send("PATCH", &path, &[], Body::Empty)?)
    }

    /// The pull under way for `name`, if one is.
    pub fn pull_progress(
        &self,
        name: &str,
    ) -> Result<Option<crate::api::PullProgress>, ClientError> {
        let path = format!("/v1/functions/{}/pull", escape(name));
        match self.send("GET", &path, &[], Body::Empty) {
            Ok(r) => Self::json(r).map(Some),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the login faasd pulls from `host` with.
    pub fn registry_login(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "username": username, "password": password }).to_string();
        let path = format!("/v1/registries/{}", escape(host));
        let sent = self.send(
            "PUT",
            &path,
            &[("content-type", "application/json")],
            Body::Bytes(body.as_bytes()),
        );
        sent.map(|_| ())
    }

    pub fn registry_list(&self) -> Result<Vec<crate::pull::credentials::Login>, ClientError> {
        Self::json(self.send("GET", "/v1/registries", &[], Body::Empty)?)
    }

    pub fn registry_logout(&self, host: &str) -> Result<(), ClientError> {
        let path = format!("/v1/registries/{}", escape(host));
        self.send("DELETE", &path, &[], Body::Empty).map(|_| ())
    }

    /// Changes options of a deployed function without a new image.
    pub fn update(&self, name: &str, patch: &OptionsPatch) -> Result<FunctionInfo, ClientError> {
        let path = format!("/v1/functions/{}?{}", escape(name), patch.to_query());
        Self::json(self.send("PATCH", &path, &[], Body::Empty)?)
    }

    /// Switches back to the version that served before (or `to`).
    pub fn rollback(&self, name: &str, to: Option<u64>) -> Result<FunctionInfo, ClientError> {
        let query = to.map(|v| format!("?to={v}")).unwrap_or_default();
        let path = format!("/v1/functions/{}/rollback{query}", escape(name));
        Self::json(self.send("POST", &path, &[], Body::Empty)?)
    }

    pub fn list(&self) -> Result<Vec<FunctionInfo>, ClientError> {
        Self::json(self.send("GET", "/v1/functions", &[], Body::Empty)?)
    }

    pub fn inspect(&self, name: &str) -> Result<FunctionInfo, ClientError> {
        let path = format!("/v1/functions/{}", escape(name));
        Self::json(self.send("GET", &path, &[], Body::Empty)?)
    }

    /// Removes `name`; in a cluster, answers the revision that recorded it.
    pub fn remove(&self, name: &str) -> Result<Option<i64>, ClientError> {
        let path = format!("/v1/functions/{}", escape(name));
        let response = self.send("DELETE", &path, &[], Body::Empty)?;
        Ok(response
            .header("x-faas-revision")
            .and_then(|v| v.parse().ok()))
    }

    /// The end of a function's log; with `follow`, a stream that goes on
    /// with new lines until the caller stops reading. In a cluster every
    /// node's lines, prefixed with the node, or only `node`'s.
    pub fn logs(
        &self,
        name: &str,
        tail: usize,
        follow: bool,
        node: Option<&str>,
    ) -> Result<Box<dyn Read + Send>, ClientError> {
        let mut path = format!(
            "/v1/functions/{}/logs?tail={tail}&follow={follow}",
            escape(name)
        );
        if let Some(node) = node {
            path += &format!("&node={}", escape(node));
        }
        Ok(self.send("GET", &path, &[], Body::Empty)?.body)
    }

    /// Stores a secret (refused if the name exists, unless `replace`).
    pub fn secret_create(
        &self,
        name: &str,
        value: &[u8],
        replace: bool,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/secrets/{}?replace={replace}", escape(name));
        self.send("PUT", &path, &[], Body::Bytes(value)).map(|_| ())
    }

    pub fn secret_list(&self) -> Result<Vec<SecretInfo>, ClientError> {
        Self::json(self.send("GET", "/v1/secrets", &[], Body::Empty)?)
    }

    pub fn secret_remove(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/secrets/{}", escape(name));
        self.send("DELETE", &path, &[], Body::Empty).map(|_| ())
    }

    /// The members of the cluster faasd is in.
    pub fn nodes(&self) -> Result<Vec<crate::api::NodeInfo>, ClientError> {
        Self::json(self.send("GET", "/v1/nodes", &[], Body::Empty)?)
    }

    /// An image archive a cluster node keeps, by digest (for its peers).
    /// A peer's archive, fetched with a node's credential (never the
    /// token: the peer's address came from etcd).
    pub fn archive(
        &self,
        digest: &str,
        credential: &str,
    ) -> Result<Box<dyn Read + Send>, ClientError> {
        let path = format!("/v1/archives/{}", escape(digest));
        let headers = [(crate::api::PEER_HEADER, credential)];
        Ok(self.send("GET", &path, &headers, Body::Empty)?.body)
    }

    /// Any request, for what has no method here (`/metrics`, `/api/...`).
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), ClientError> {
        let r = self.send(method, path, &[], Body::Bytes(body))?;
        let status = r.status;
        let text = r.text().map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((status, text))
    }
}

/// Options for a deploy: a patch, or whole options (every one given).
pub enum Patch<'a> {
    Some(&'a OptionsPatch),
    All(&'a DeployOptions),
}

impl Patch<'_> {
    fn query(&self) -> String {
        match self {
            Patch::Some(p) => p.to_query(),
            Patch::All(o) => o.to_query(),
        }
    }
}

impl<'a> From<&'a OptionsPatch> for Patch<'a> {
    fn from(p: &'a OptionsPatch) -> Self {
        Patch::Some(p)
    }
}

impl<'a> From<&'a DeployOptions> for Patch<'a> {
    fn from(o: &'a DeployOptions) -> Self {
        Patch::All(o)
    }
}

/// A path segment as typed: anything outside the name alphabet is
/// percent-encoded, so faasd judges the name itself (and says why).
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One short phrase for a transport failure ("connection refused").
fn short_io(e: &std::io::Error, endpoint: &Endpoint) -> String {
    use std::io::ErrorKind::*;
    match (e.kind(), endpoint) {
        (ConnectionRefused, _) => "connection refused".into(),
        (NotFound, Endpoint::Unix(_)) => "no such socket (is faasd running?)".into(),
        (PermissionDenied, Endpoint::Unix(_)) => {
            "permission denied (the socket is for root and the faasd group)".into()
        }
        (TimedOut | WouldBlock, _) => "timed out".into(),
        (BrokenPipe | ConnectionReset, _) => "the connection was closed".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// A token from a file (its first line), for `--token-file` and tests.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Where a state directory keeps its token.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("token")
}
