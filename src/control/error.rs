//! One table from every error the control API can meet to an HTTP status,
//! and the JSON error body.

use crate::pull::credentials::CredentialError;
use crate::pull::PullError;
use hyper::{Response, StatusCode};

use crate::api::name::NameError;
use crate::api::ErrorBody;
use crate::cluster::ClusterError;
use crate::image::{ImageError, LayerError};
use crate::manager::ManagerError;
use crate::net::NetError;
use crate::runtime::RuntimeError;
use crate::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method {0} not allowed here")]
    Method(String),
    #[error("upload is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("receiving upload: {0}")]
    Upload(String),
    #[error("storing upload: {0}")]
    Storage(#[source] std::io::Error),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A fault of faasd's own (a task that died, a body that would not
    /// encode).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Name(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Upload(_) => StatusCode::BAD_REQUEST,
            ApiError::Storage(e) => io_status(e),
            ApiError::Manager(m) => manager_status(m),
            ApiError::Cluster(c) => cluster_status(c),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn response(&self) -> Response<super::Body> {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.to_string(),
        })
        .unwrap_or_default();
        Response::builder()
            .status(self.status())
            .header("content-type", "application/json")
            .body(super::full(body))
            .unwrap_or_else(|_| Response::new(super::full(Vec::new())))
    }
}

fn cluster_status(e: &ClusterError) -> StatusCode {
    match e {
        ClusterError::Unavailable(_)
        | ClusterError::Identity { .. }
        | ClusterError::Behind { .. }
        | ClusterError::Indeterminate(_)
        | ClusterError::OutOfStep(_) => StatusCode::SERVICE_UNAVAILABLE,
        ClusterError::Conflict(_) | ClusterError::NotRecorded { .. } => StatusCode::CONFLICT,
        ClusterError::Exhausted => StatusCode::INSUFFICIENT_STORAGE,
        ClusterError::Fetch { .. } => StatusCode::BAD_GATEWAY,
        ClusterError::Io { source, .. } => io_status(source),
        // A record in etcd no node of this cluster signed: someone else
        // wrote it; this node will not act on it.
        ClusterError::Corrupt(_) | ClusterError::Refused(_) | ClusterError::Tls(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ClusterError::Manager(m) => manager_status(m),
    }
}

/// The registry's failures are a bad gateway's (401 and 403 too: the
/// control API's own 401 means the faas token).
fn pull_status(e: &PullError) -> StatusCode {
    match e {
        PullError::Reference { .. } => StatusCode::BAD_REQUEST,
        PullError::NotFound { .. } | PullError::Platform { .. } => StatusCode::NOT_FOUND,
        PullError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PullError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        PullError::Io { source, .. } => io_status(source),
        PullError::Unauthorized { .. }
        | PullError::Denied { .. }
        | PullError::Digest { .. }
        | PullError::Registry { .. }
        | PullError::Invalid(_) => StatusCode::BAD_GATEWAY,
    }
}

fn manager_status(e: &ManagerError) -> StatusCode {
    match e {
        ManagerError::NotFound(_) | ManagerError::NoVersion { .. } => StatusCode::NOT_FOUND,
        ManagerError::Options(_) => StatusCode::BAD_REQUEST,
        ManagerError::HostTaken { .. } => StatusCode::CONFLICT,
        ManagerError::Secret(s) => secret_status(s),
        ManagerError::Image(ImageError::Store { source, .. }) => io_status(source),
        ManagerError::Image(ImageError::Limit { .. })
        | ManagerError::Image(ImageError::Layer {
            source: LayerError::Limit { .. },
            ..
        }) => StatusCode::PAYLOAD_TOO_LARGE,
        // Most filesystem failures while unpacking come from the image
        // (a hard link to nothing, a file where a directory must be).
        ManagerError::Image(ImageError::Layer {
            source: LayerError::Fs { source, .. },
            ..
        }) => match io_status(source) {
            StatusCode::INTERNAL_SERVER_ERROR => StatusCode::BAD_REQUEST,
            other => other,
        },
        ManagerError::Image(_) => StatusCode::BAD_REQUEST,
        ManagerError::Pull(p) => pull_status(p),
        ManagerError::Credentials(CredentialError::Host(_) | CredentialError::Invalid(_)) => {
            StatusCode::BAD_REQUEST
        }
        ManagerError::Credentials(CredentialError::NotFound(_)) => StatusCode::NOT_FOUND,
        ManagerError::Credentials(CredentialError::Io { source, .. }) => io_status(source),
        ManagerError::Net(NetError::Exhausted(_)) => StatusCode::INSUFFICIENT_STORAGE,
        ManagerError::ShuttingDown | ManagerError::Runtime(RuntimeError::ShuttingDown) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // The runtime cannot start the image (a missing entrypoint, a
        // config it refuses): the deploy is refused, with its reason.
        // The image cannot serve as deployed: its first container failed.
        ManagerError::Runtime(RuntimeError::Start { .. } | RuntimeError::NotUp { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        // The host cannot give egress (no forwarding, iptables failing).
        ManagerError::Egress(_) => StatusCode::SERVICE_UNAVAILABLE,
        ManagerError::Net(_)
        | ManagerError::NoInit(_)
        | ManagerError::Runtime(_)
        | ManagerError::Registry(_)
        | ManagerError::Dataplane(_)
        | ManagerError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn secret_status(e: &SecretError) -> StatusCode {
    match e {
        SecretError::NotFound(_) => StatusCode::NOT_FOUND,
        SecretError::Exists(_) | SecretError::InUse { .. } => StatusCode::CONFLICT,
        SecretError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        SecretError::Empty | SecretError::Invalid(_) | SecretError::NotText { .. } => {
            StatusCode::BAD_REQUEST
        }
        SecretError::Io { source, .. } => io_status(source),
    }
}

/// A full disk is the operator's to fix, and says so.
fn io_status(e: &std::io::Error) -> StatusCode {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
