//! What happens to a connection a core accepted, on its own address or
//! on a shared listener: handed to the function's runtime, alone or with
//! the ones queued behind it (`dispatch`, `deliver`); and what an accept's
//! error means for the loop that made it (`accept_failed`).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_uring::net::TcpStream;

use super::{Ctx, Inflight, Served};
use crate::metrics::Outcome;
use crate::runtime::handoff;
use crate::runtime::respond::{self, Status};
use crate::runtime::Lease;
use crate::sys::closer::Foreign;
use crate::sys::rawfd;

/// Pause after EMFILE/ENFILE so a descriptor shortage does not spin.
const FD_BACKOFF: Duration = Duration::from_millis(100);
/// Pause after an accept found the listener non-blocking (see
/// `accept_failed`).
const NONBLOCK_BACKOFF: Duration = Duration::from_millis(1);
/// The most connections taken from the queue behind one accept: a
/// handler's largest batch minus the one accepted.
pub(super) const MAX_TAKEN: usize = crate::runtime::fdpass::MAX_BATCH - 1;

/// Serves a connection accepted at `accepted`, and `more` taken from the
/// queue behind it. Once handed over, a container may shape these sockets
/// (a linger, data its client never takes), so our copies are closed by
/// the closer, never here: the ring's stream closes its descriptor in
/// place when dropped, so it goes at once, a copy standing in for it.
pub(super) fn dispatch(
    stream: TcpStream,
    more: Vec<std::net::TcpStream>,
    accepted: Instant,
    served: &Arc<Served>,
    ctx: &Arc<Ctx>,
) {
    let first = match rawfd::uring_stream(&stream).try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            let func = served.func.load();
            tracing::debug!(function = %func.name, error = %e, "keeping a connection");
            func.ledger.accepted();
            func.ledger.failed(Outcome::HandlerError);
            return;
        }
    };
    drop(stream);
    deliver(first, more, accepted, served, ctx);
}

/// Hands `first` and `more` (accepted together at `accepted`) to
/// `served`'s function: one `deliver`, or several connections in one
/// offer. The single connection, the common case, allocates nothing.
pub(super) fn deliver(
    first: std::net::TcpStream,
    more: Vec<std::net::TcpStream>,
    accepted: Instant,
    served: &Arc<Served>,
    ctx: &Ctx,
) {
    let func = served.func.load_full();
    let first = Foreign::new(first);
    if more.is_empty() {
        func.ledger.accepted();
        let lease: Lease = Box::new(Inflight::new(served));
        handoff::deliver(&ctx.rt, &func, first.as_fd(), accepted, lease);
        return;
    }
    let more: Vec<_> = more.into_iter().map(Foreign::new).collect();
    let fds: Vec<_> = std::iter::once(first.as_fd())
        .chain(more.iter().map(|c| c.as_fd()))
        .collect();
    let leases = fds
        .iter()
        .map(|_| {
            func.ledger.accepted();
            Box::new(Inflight::new(served)) as Lease
        })
        .collect();
    handoff::deliver_many(&ctx.rt, &func, &fds, accepted, leases);
}

/// Answers 503 (on the control runtime): the connection waited past the
/// queue deadline for a function at its concurrency limit.
pub(super) fn reject(conn: std::net::TcpStream, served: &Arc<Served>, ctx: &Ctx) {
    let func = served.func.load();
    func.ledger.accepted();
    func.ledger.failed(Outcome::Rejected);
    ctx.control.spawn(respond::error_std(
        Foreign::new(conn),
        Status::ServiceUnavailable,
        "function is at its concurrency limit; try again",
    ));
}

/// Handles an accept error; false when the listener is finished.
pub(super) async fn accept_failed(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            tracing::warn!(error = %e, "accept: out of resources");
            tokio::time::sleep(FD_BACKOFF).await;
            true
        }
        Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) => true,
        // The listener was non-blocking at the moment: the other core
        // taking its queue while it moves between cores, or (logged by
        // `accept_queued`) left so. Again, shortly, without spinning.
        Some(libc::EAGAIN) => {
            tokio::time::sleep(NONBLOCK_BACKOFF).await;
            true
        }
        _ => {
            tracing::debug!(error = %e, "accept: listener closed");
            false
        }
    }
}
