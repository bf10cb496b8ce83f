//! A connection no running container could take: a container is started
//! for it on the control runtime, then handed the connection; when that
//! fails, faasd answers the client itself (502, 503 or 504).

use std::os::fd::AsFd;
use std::sync::Arc;

use super::pool::handoff::{ScaleOut, Waiting};
use super::{Function, Runtime, RuntimeError};
use crate::metrics::Outcome;
use crate::respond::{self, Status};
use crate::sys::Priority;

impl Runtime {
    /// Serves `waiting` with a fresh container, on the control runtime.
    /// `scaling` counts it as a reuse pool's scale-out while it lasts.
    pub fn serve_cold(
        self: &Arc<Self>,
        func: Arc<Function>,
        waiting: Waiting,
        scaling: Option<ScaleOut>,
    ) {
        let rt = Arc::clone(self);
        self.control.spawn(async move {
            let _scaling = scaling;
            serve(rt, func, waiting).await;
        });
    }
}

async fn serve(rt: Arc<Runtime>, func: Arc<Function>, waiting: Waiting) {
    let Waiting {
        client,
        accepted,
        lease,
    } = waiting;
    let result = match rt.start(&func, Priority::Normal).await {
        Ok(ready) => ready.hand_over(client.as_fd(), lease),
        Err(e) => Err((lease, e)),
    };
    match result {
        Ok(handed) => {
            func.ledger.handed_over(accepted.elapsed(), false);
            handed.follow(&func);
        }
        Err((lease, e)) => {
            tracing::info!(function = %func.name, error = %e, "request failed");
            let (status, outcome) = match e {
                RuntimeError::ShuttingDown => (Status::ServiceUnavailable, Outcome::Unavailable),
                ref e if e.is_timeout() => (Status::GatewayTimeout, Outcome::Timeout),
                _ => (Status::BadGateway, Outcome::HandlerError),
            };
            func.ledger.failed(outcome);
            respond::error_std(client, status, e.public_reason()).await;
            drop(lease);
        }
    }
}
