//! Handing an accepted connection to a container that is already running
//! (`deliver`, the data plane's one call): one waiting in the pool, or —
//! in reuse mode, when none waits but some are busy — the first busy one
//! to come back. A fast handler comes back within tens of microseconds,
//! far sooner than a cold start (~30 ms), and without adding a container;
//! a connection still waiting after `SCALE_OUT_AFTER` goes to a cold start
//! after all (the load needs one more container) — unless another
//! waiter's cold start is already under way, which it then waits for too,
//! up to `MAX_WAIT`: containers are added one at a time, not one per
//! waiting connection. Fewer, busier handlers are also faster: each wakes
//! with its caches warm.
//!
//! A connection that starts waiting and a container that comes back may
//! each miss the other; both add themselves first and then look (with a
//! fence between), so at least one of them sees the other.

use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::queue::SegQueue;

use super::slot::{Handed, Slot};
use crate::metrics::Outcome;
use crate::runtime::{Function, Lease, Runtime};

/// How long a connection waits for a busy reuse-mode container before a
/// cold start serves it instead.
pub const SCALE_OUT_AFTER: Duration = Duration::from_millis(10);
/// The longest a connection waits for a container before it gets one of
/// its own, whatever else is starting.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// What became of a connection offered to the running containers.
pub enum Delivery {
    /// Dealt with: a handler has it, a busy reuse-mode container will (or
    /// a cold start, should it wait too long), or it was counted lost.
    Handled,
    /// No container can take it: it needs one started for it.
    Cold(Waiting),
}

/// A connection not yet handed to a handler, held by our own descriptor.
pub struct Waiting {
    /// Blocking, as handlers expect (it is the same open file they get).
    pub client: TcpStream,
    pub accepted: Instant,
    pub lease: Lease,
}

/// Offers the connection `conn`, accepted at `accepted`, to the function's
/// running containers. `lease` (its concurrency slot) goes with it.
pub fn deliver(
    rt: &Arc<Runtime>,
    func: &Arc<Function>,
    conn: BorrowedFd<'_>,
    accepted: Instant,
    lease: Lease,
) -> Delivery {
    let lease = match from_pool(func, conn, accepted, lease) {
        Ok(()) => return Delivery::Handled,
        Err(lease) => lease,
    };
    let client = match conn.try_clone_to_owned() {
        Ok(fd) => TcpStream::from(fd),
        Err(e) => {
            tracing::debug!(function = %func.name, error = %e, "keeping a connection");
            func.ledger.failed(Outcome::HandlerError);
            return Delivery::Handled;
        }
    };
    let waiting = Waiting {
        client,
        accepted,
        lease,
    };
    if !func.pool.expects_returns() {
        return Delivery::Cold(waiting);
    }
    wait_for_return(rt, func, waiting);
    Delivery::Handled
}

/// Hands `client` to a container waiting in the pool and records the hit;
/// the lease comes back if none is waiting.
fn from_pool(
    func: &Arc<Function>,
    client: BorrowedFd<'_>,
    accepted: Instant,
    mut lease: Lease,
) -> Result<(), Lease> {
    while let Some(slot) = func.pool.take() {
        match slot.hand_over(client, lease) {
            Ok(handed) => {
                func.ledger.handed_over(accepted.elapsed(), true);
                handed.follow(func);
                return Ok(());
            }
            // That handler died while waiting; its supervisor replaces it.
            Err((back, e)) => {
                tracing::debug!(function = %func.name, error = %e, "warm container gone");
                lease = back;
            }
        }
    }
    Err(lease)
}

/// Reuse mode, every container busy: the connection queues for the first
/// to come back; a timer sends it to a cold start after
/// `SCALE_OUT_AFTER` if no other waiter's cold start is under way, and
/// after `MAX_WAIT` regardless.
fn wait_for_return(rt: &Arc<Runtime>, func: &Arc<Function>, waiting: Waiting) {
    let since = waiting.accepted;
    let ticket = func.pool.waiters.push(waiting);
    match_waiting(func);
    let rt = Arc::clone(rt);
    let func = Arc::clone(func);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SCALE_OUT_AFTER).await;
            if !ticket.waiting() {
                return;
            }
            if should_scale_out(&func, since) {
                break;
            }
        }
        let Some(waiting) = ticket.take() else { return };
        let client = waiting.client.as_fd();
        if let Err(lease) = from_pool(&func, client, waiting.accepted, waiting.lease) {
            let waiting = Waiting { lease, ..waiting };
            let scaling = ScaleOut::new(Arc::clone(&func));
            rt.serve_cold(func, waiting, Some(scaling));
        }
    });
}

/// Whether a connection that has waited since `since` should start a
/// container of its own now.
fn should_scale_out(func: &Function, since: Instant) -> bool {
    func.pool.scaling.load(Ordering::Acquire) == 0 || since.elapsed() >= MAX_WAIT
}

/// A cold start adding a container for waiting connections; counted in
/// the pool until dropped (when the start is over, either way).
pub struct ScaleOut(Arc<Function>);

impl ScaleOut {
    fn new(func: Arc<Function>) -> Self {
        func.pool.scaling.fetch_add(1, Ordering::AcqRel);
        Self(func)
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        self.0.pool.scaling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A waiting connection, shared by the queue and its scale-out timer:
/// whoever takes it out serves it.
#[derive(Clone)]
struct Ticket(Arc<Mutex<Option<Waiting>>>);

impl Ticket {
    /// Still waiting (nobody took it yet).
    fn waiting(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn take(&self) -> Option<Waiting> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put_back(&self, waiting: Waiting) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(waiting);
    }
}

/// Connections waiting for one of a function's reuse-mode containers.
#[derive(Default)]
pub struct Waiters {
    queue: SegQueue<Ticket>,
}

impl Waiters {
    /// Queues `waiting`; the ticket lets its timer take it back.
    fn push(&self, waiting: Waiting) -> Ticket {
        let ticket = Ticket(Arc::new(Mutex::new(Some(waiting))));
        self.queue.push(ticket.clone());
        ticket
    }

    /// The oldest connection still waiting, with its ticket.
    fn pop(&self) -> Option<(Ticket, Waiting)> {
        while let Some(ticket) = self.queue.pop() {
            if let Some(waiting) = ticket.take() {
                return Some((ticket, waiting));
            }
            // Its timer took it: already served cold.
        }
        None
    }
}

/// Gives a reuse-mode container that came back to the oldest waiting
/// connection; the slot comes back if nobody waits.
pub fn to_waiter(slot: Slot, func: &Arc<Function>) -> Result<Handed, Slot> {
    let Some((ticket, waiting)) = func.pool.waiters.pop() else {
        return Err(slot);
    };
    Ok(serve(slot, func, ticket, waiting))
}

/// Serves a waiting connection from the pool if both exist: the second
/// look of whichever side just added itself.
pub fn match_waiting(func: &Arc<Function>) {
    fence(Ordering::SeqCst);
    if func.pool.waiters.queue.is_empty() {
        return;
    }
    let Some(slot) = func.pool.take() else { return };
    match func.pool.waiters.pop() {
        Some((ticket, waiting)) => serve(slot, func, ticket, waiting).follow(func),
        None => func.pool.push(slot),
    }
}

/// Hands `waiting` to `slot`'s handler. If that fails (the handler is
/// gone) the connection goes back into the queue — its timer still holds
/// the ticket — and nothing follows.
fn serve(slot: Slot, func: &Arc<Function>, ticket: Ticket, waiting: Waiting) -> Handed {
    let Waiting {
        client,
        accepted,
        lease,
    } = waiting;
    match slot.hand_over(client.as_fd(), lease) {
        Ok(handed) => {
            func.ledger.handed_over(accepted.elapsed(), true);
            handed
        }
        Err((lease, e)) => {
            tracing::debug!(function = %func.name, error = %e, "returning container gone");
            ticket.put_back(Waiting {
                client,
                accepted,
                lease,
            });
            func.pool.waiters.queue.push(ticket);
            Handed::Done
        }
    }
}
