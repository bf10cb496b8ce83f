//! What happens to an accepted connection: the hot path (take a waiting
//! container from the pool, one `sendmsg`, close ours) runs right here on
//! the core; anything slow — a cold start when the pool is empty, writing
//! faasd's own error answer — is sent to the control runtime.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_uring::net::TcpStream as UringStream;

use super::respond::{self, Status};
use super::{rawfd, Ctx, Inflight, Served};
use crate::metrics::Outcome;
use crate::runtime::{reuse, Function, HandedOver, Lease, Runtime, RuntimeError};

/// Serves one accepted connection (accepted at `accepted`).
pub fn dispatch(stream: UringStream, accepted: Instant, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let func = served.func.load_full();
    let stats = &func.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut lease: Lease = Box::new(Inflight::new(served));
    while let Some(slot) = func.pool.take() {
        match slot.hand_over(stream.as_raw_fd(), lease) {
            Ok(next) => {
                if let HandedOver::AwaitNext(reuse, lease) = next {
                    tokio_uring::spawn(reuse::await_next(reuse, lease, Arc::clone(&func)));
                }
                let took = accepted.elapsed();
                stats.warm_starts.fetch_add(1, Ordering::Relaxed);
                stats.handed_over.fetch_add(1, Ordering::Relaxed);
                stats.latency.record(took);
                func.metrics.handed_over(took, true);
                // Dropping `stream` closes our copy; the handler has its own.
                return;
            }
            // That handler died while waiting; its supervisor replaces it.
            Err((back, e)) => {
                tracing::debug!(function = %func.name, error = %e, "warm container gone");
                lease = back;
            }
        }
    }
    cold(stream, accepted, func, lease, ctx);
}

/// Answers 503: the connection waited past the queue deadline.
pub fn reject(stream: UringStream, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let func = served.func.load();
    func.stats.requests.fetch_add(1, Ordering::Relaxed);
    func.stats.rejected.fetch_add(1, Ordering::Relaxed);
    func.metrics.outcome(Outcome::Rejected);
    let Some(client) = to_tokio_std(&stream) else {
        return;
    };
    ctx.control.spawn(async move {
        if let Ok(client) = tokio::net::TcpStream::from_std(client) {
            respond::error(
                client,
                Status::ServiceUnavailable,
                "function is at its concurrency limit; try again",
            )
            .await;
        }
    });
}

/// The pool was empty: start a container on the control runtime.
fn cold(stream: UringStream, accepted: Instant, func: Arc<Function>, lease: Lease, ctx: &Arc<Ctx>) {
    let Some(client) = to_tokio_std(&stream) else {
        func.stats.failed.fetch_add(1, Ordering::Relaxed);
        func.metrics.outcome(Outcome::HandlerError);
        return;
    };
    drop(stream);
    let rt = Arc::clone(&ctx.rt);
    ctx.control
        .spawn(serve_cold(rt, func, client, accepted, lease));
}

/// A std stream (non-blocking, for tokio) sharing the connection.
fn to_tokio_std(stream: &UringStream) -> Option<std::net::TcpStream> {
    let fd = rawfd::dup(stream).ok()?;
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).ok()?;
    Some(std)
}

async fn serve_cold(
    rt: Arc<Runtime>,
    func: Arc<Function>,
    client: std::net::TcpStream,
    accepted: Instant,
    lease: Lease,
) {
    let stats = Arc::clone(&func.stats);
    let result = match rt.start(&func).await {
        Ok(ready) => {
            stats.cold_starts.fetch_add(1, Ordering::Relaxed);
            ready.hand_over(client.as_raw_fd(), lease)
        }
        Err(e) => Err((lease, e)),
    };
    match result {
        Ok(next) => {
            if let HandedOver::AwaitNext(reuse, lease) = next {
                tokio::spawn(reuse::await_next(reuse, lease, Arc::clone(&func)));
            }
            let took = accepted.elapsed();
            stats.handed_over.fetch_add(1, Ordering::Relaxed);
            stats.latency.record(took);
            func.metrics.handed_over(took, false);
        }
        Err((lease, e)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(function = %func.name, error = %e, "request failed");
            let (status, outcome) = match e {
                RuntimeError::ShuttingDown => (Status::ServiceUnavailable, Outcome::Unavailable),
                ref e if e.is_timeout() => (Status::GatewayTimeout, Outcome::Timeout),
                _ => (Status::BadGateway, Outcome::HandlerError),
            };
            func.metrics.outcome(outcome);
            if let Ok(client) = tokio::net::TcpStream::from_std(client) {
                respond::error(client, status, e.public_reason()).await;
            }
            drop(lease);
        }
    }
}
