//! A connection no running container could take: a container is started
//! for it on the control runtime, then handed the connection; when that
//! fails, faasd answers the client itself (502, 503 or 504).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::pool::waiters::Waiting;
use super::{Function, Runtime, RuntimeError};
use crate::metrics::Outcome;
use crate::runtime::respond::{self, Status};
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
    if let Some(why) = cannot_start(&func) {
        func.ledger.failed(Outcome::Unavailable);
        let reason = format!("{why}; faas logs {}", func.name);
        respond::error_std(client, Status::ServiceUnavailable, &reason).await;
        drop(lease);
        return;
    }
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
                RuntimeError::ShuttingDown | RuntimeError::Retired => {
                    (Status::ServiceUnavailable, Outcome::Unavailable)
                }
                ref e if e.is_timeout() => (Status::GatewayTimeout, Outcome::Timeout),
                _ => (Status::BadGateway, Outcome::HandlerError),
            };
            if outcome != Outcome::Unavailable {
                let why = e.for_operator(&func);
                func.say(&format!("starting a container for a connection: {why}"));
                func.pool.failed(why);
                func.ledger.container_failed();
            }
            func.ledger.failed(outcome);
            let reason = format!("{}; faas logs {}", e.public_reason(), func.name);
            respond::error_std(client, status, &reason).await;
            drop(lease);
        }
    }
}

/// Why no container may be started for a connection now, if so (for the
/// client: no ids or paths, `faas logs` has the rest): a socket-activated
/// function's servers take connections themselves (one reaches here only
/// while none runs), and a function whose containers keep failing gets
/// one try per back-off period, not one per connection.
fn cannot_start(func: &Function) -> Option<&'static str> {
    if func.options.hands_listener() {
        return Some("the function's servers are not up");
    }
    if !func.pool.may_start_cold() {
        return Some("the function's containers keep failing");
    }
    None
}

/// A cold start adding a container for waiting connections; counted in
/// the pool until dropped (when the start is over, either way).
pub struct ScaleOut(Arc<Function>);

impl ScaleOut {
    pub(super) fn new(func: Arc<Function>) -> Self {
        func.pool.scaling.fetch_add(1, Ordering::AcqRel);
        Self(func)
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        self.0.pool.scaling.fetch_sub(1, Ordering::AcqRel);
    }
}
