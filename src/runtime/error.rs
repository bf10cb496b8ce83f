//! What can go wrong in starting, serving and ending containers, and
//! what a client and an operator are told of it.

use std::path::PathBuf;

use super::reaper::Exit;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id} failed to start: {reason}")]
    Start { id: String, reason: String },
    #[error("handler of container {id} exited ({exit}) before taking a connection")]
    HandlerExited { id: String, exit: Exit },
    #[error("handler of container {id} did not connect to /control.sock within {secs:.1}s")]
    ConnectTimeout { id: String, secs: f64 },
    #[error("handing the connection to container {id}: {source}")]
    Handoff {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("faasd is shutting down")]
    ShuttingDown,
    #[error("the function's version was replaced or removed")]
    Retired,
    #[error("the first server of {function} is not up: {why}")]
    NotUp { function: String, why: String },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("lost track of process {pid}")]
    Lost { pid: i32 },
    #[error("the runtime (pid {pid}) did not finish in time and was killed")]
    Hung { pid: i32 },
}

impl RuntimeError {
    /// What a client may be told: no ids, paths or runc messages (those
    /// go to faasd's log and the function's).
    pub fn public_reason(&self) -> &'static str {
        match self {
            RuntimeError::HandlerExited { .. } => {
                "the function's handler exited before taking the connection"
            }
            RuntimeError::ConnectTimeout { .. } => "the function's handler did not start in time",
            RuntimeError::ShuttingDown => "the node is shutting down",
            RuntimeError::Start { .. } => "the function's container failed to start",
            _ => "the function could not be started",
        }
    }

    /// Whether the client should hear 504 (too slow) rather than 502.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            RuntimeError::ConnectTimeout { .. } | RuntimeError::Hung { .. }
        )
    }
}
