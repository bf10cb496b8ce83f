//! Client of the control API, used by `faas`. Blocking (ureq): the CLI
//! makes one request at a time and streams uploads from a reader.

use std::io::Read;
use std::time::Duration;

use crate::api::{DeployOptions, ErrorBody, FunctionInfo};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("cannot reach faasd at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("unexpected answer from faasd: {0}")]
    Decode(String),
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// `Authorization: Bearer …` for a faasd run with `--token-file`.
    auth: Option<String>,
}

impl Client {
    pub fn new(url: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build();
        Self {
            base: url.trim_end_matches('/').to_string(),
            agent,
            auth: None,
        }
    }

    /// Sends `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.auth = token
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"));
        self
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &self.url(path));
        match &self.auth {
            Some(auth) => req.set("authorization", auth),
            None => req,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn check(
        &self,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let body = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<ErrorBody>(&body)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| body.trim().to_string());
                Err(ClientError::Api { status, message })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Transport {
                url: self.base.clone(),
                message: t.to_string(),
            }),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(r: ureq::Response) -> Result<T, ClientError> {
        let body = r
            .into_string()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Uploads an image archive read from `image` and deploys it as `name`.
    pub fn deploy(
        &self,
        name: &str,
        options: &DeployOptions,
        image: impl Read,
    ) -> Result<FunctionInfo, ClientError> {
        let path = format!("/v1/functions/{name}?{}", options.to_query());
        let r = self
            .request("PUT", &path)
            .set("content-type", "application/x-tar")
            .send(image);
        Self::json(self.check(r)?)
    }

    pub fn list(&self) -> Result<Vec<FunctionInfo>, ClientError> {
        Self::json(self.check(self.request("GET", "/v1/functions").call())?)
    }

    pub fn inspect(&self, name: &str) -> Result<FunctionInfo, ClientError> {
        Self::json(self.check(self.request("GET", &format!("/v1/functions/{name}")).call())?)
    }

    pub fn remove(&self, name: &str) -> Result<(), ClientError> {
        self.check(
            self.request("DELETE", &format!("/v1/functions/{name}"))
                .call(),
        )
        .map(|_| ())
    }

    /// The end of a function's log; with `follow`, a stream that goes on
    /// with new lines until the caller stops reading.
    pub fn logs(
        &self,
        name: &str,
        tail: usize,
        follow: bool,
    ) -> Result<Box<dyn Read + Send>, ClientError> {
        let path = format!("/v1/functions/{name}/logs?tail={tail}&follow={follow}");
        Ok(self.check(self.request("GET", &path).call())?.into_reader())
    }
}
