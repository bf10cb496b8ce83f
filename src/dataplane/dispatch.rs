//! What happens to an accepted connection: the hot path (take a waiting
//! container from the pool, one `sendmsg`, close ours) runs right here on
//! the core, as does waiting briefly for a busy reuse-mode container;
//! anything slow — a cold start, writing faasd's own error answer — is
//! sent to the control runtime.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_uring::net::TcpStream as UringStream;

use super::{Ctx, Inflight, Served};
use crate::metrics::Outcome;
use crate::rawfd;
use crate::respond::{self, Status};
use crate::runtime::handoff::{self, Waiting};
use crate::runtime::{reuse, Function, HandedOver, Lease, Runtime, RuntimeError};

/// Serves one accepted connection (accepted at `accepted`).
pub fn dispatch(stream: UringStream, accepted: Instant, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let func = served.func.load_full();
    func.stats.requests.fetch_add(1, Ordering::Relaxed);
    let lease: Lease = Box::new(Inflight::new(served));
    let lease = match handoff::from_pool(&func, stream.as_raw_fd(), accepted, lease) {
        Ok(next) => {
            await_next(next, func);
            // Dropping `stream` closes our copy; the handler has its own.
            return;
        }
        Err(lease) => lease,
    };
    let Some(client) = to_std(&stream) else {
        func.stats.failed.fetch_add(1, Ordering::Relaxed);
        func.metrics.outcome(Outcome::HandlerError);
        return;
    };
    drop(stream);
    let waiting = Waiting {
        client,
        accepted,
        lease,
    };
    if func.pool.expects_returns() {
        wait_for_return(waiting, func, served, ctx);
    } else {
        cold(waiting, func, ctx, None);
    }
}

/// Reuse mode, every container busy: the connection waits for the first
/// to come back, or goes cold after `SCALE_OUT_AFTER` (if no other cold
/// start for a waiter is under way; after `MAX_WAIT` regardless).
fn wait_for_return(waiting: Waiting, func: Arc<Function>, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let since = waiting.accepted;
    let (ticket, next) = handoff::wait(&func, waiting);
    await_next(next, Arc::clone(&func));
    let served = Arc::clone(served);
    let ctx = Arc::clone(ctx);
    tokio_uring::spawn(async move {
        loop {
            tokio::time::sleep(handoff::SCALE_OUT_AFTER).await;
            if !ticket.waiting() {
                return;
            }
            if handoff::should_scale_out(&func, since) {
                break;
            }
        }
        let Some(waiting) = ticket.take() else { return };
        // The current version: a redeploy may have retired `func`.
        let func = served.func.load_full();
        match waiting.from_pool(&func) {
            Ok(next) => await_next(next, func),
            Err(waiting) => {
                let scaling = handoff::ScaleOut::new(Arc::clone(&func));
                cold(waiting, func, &ctx, Some(scaling));
            }
        }
    });
}

/// Reuse mode: waits on this core for the handler's next connect.
fn await_next(next: Option<handoff::Next>, func: Arc<Function>) {
    if let Some((reuse, lease)) = next {
        tokio_uring::spawn(reuse::await_next(reuse, lease, func));
    }
}

/// Answers 503: the connection waited past the queue deadline.
pub fn reject(stream: UringStream, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let func = served.func.load();
    func.stats.requests.fetch_add(1, Ordering::Relaxed);
    func.stats.rejected.fetch_add(1, Ordering::Relaxed);
    func.metrics.outcome(Outcome::Rejected);
    let Some(client) = to_std(&stream) else {
        return;
    };
    ctx.control.spawn(respond::error_std(
        client,
        Status::ServiceUnavailable,
        "function is at its concurrency limit; try again",
    ));
}

/// No container to take: start one on the control runtime (counted as a
/// scale-out for waiting connections while `scaling` lives).
fn cold(waiting: Waiting, func: Arc<Function>, ctx: &Arc<Ctx>, scaling: Option<handoff::ScaleOut>) {
    let rt = Arc::clone(&ctx.rt);
    ctx.control.spawn(async move {
        let _scaling = scaling;
        serve_cold(rt, func, waiting).await;
    });
}

/// A std stream sharing the connection, left blocking: handlers expect
/// that, and it is the same open file they receive.
fn to_std(stream: &UringStream) -> Option<std::net::TcpStream> {
    rawfd::dup(stream).ok().map(std::net::TcpStream::from)
}

async fn serve_cold(rt: Arc<Runtime>, func: Arc<Function>, waiting: Waiting) {
    let Waiting {
        client,
        accepted,
        lease,
    } = waiting;
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
            respond::error_std(client, status, e.public_reason()).await;
            drop(lease);
        }
    }
}
