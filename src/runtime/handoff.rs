//! Handing an accepted connection to a container that is already running:
//! one waiting in the pool, or — in reuse mode, when none waits but some
//! are busy — the first busy one to come back. A fast handler comes back
//! within tens of microseconds, far sooner than a cold start (~30 ms), and
//! without adding a container; a connection still waiting after
//! `SCALE_OUT_AFTER` goes to a cold start after all (the load needs one
//! more container) — unless another waiter's cold start is already under
//! way, which it then waits for too, up to `MAX_WAIT`: containers are
//! added one at a time, not one per waiting connection. Fewer, busier
//! handlers are also faster: each wakes with its caches warm.
//!
//! A connection that starts waiting and a container that comes back may
//! each miss the other; both add themselves first and then look (with a
//! fence between), so at least one of them sees the other.

use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::queue::SegQueue;

use super::pool::{HandedOver, Slot};
use super::reuse::Reuse;
use super::{Function, Lease};

/// How long a connection waits for a busy reuse-mode container before a
/// cold start serves it instead.
pub const SCALE_OUT_AFTER: Duration = Duration::from_millis(10);
/// The longest a connection waits for a container before it gets one of
/// its own, whatever else is starting.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// A reuse-mode container that took a connection and is to be waited for.
pub type Next = (Arc<Reuse>, Lease);

/// A connection waiting for a reuse-mode container to come back.
pub struct Waiting {
    /// Our own descriptor of the connection (blocking, as handlers expect).
    pub client: TcpStream,
    pub accepted: Instant,
    pub lease: Lease,
}

impl Waiting {
    /// Hands this connection to a container waiting in the pool; itself
    /// back if none is.
    pub fn from_pool(self, func: &Function) -> Result<Option<Next>, Waiting> {
        let Waiting {
            client,
            accepted,
            lease,
        } = self;
        from_pool(func, client.as_raw_fd(), accepted, lease).map_err(|lease| Waiting {
            client,
            accepted,
            lease,
        })
    }
}

/// A waiting connection, shared by the queue and its scale-out timer:
/// whoever takes it out serves it.
#[derive(Clone)]
pub struct Ticket(Arc<Mutex<Option<Waiting>>>);

impl Ticket {
    /// Still waiting (nobody took it yet).
    pub fn waiting(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    pub fn take(&self) -> Option<Waiting> {
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
    pub fn push(&self, waiting: Waiting) -> Ticket {
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

/// A cold start adding a container for waiting connections; counted in
/// the pool until dropped (when the start is over, either way).
pub struct ScaleOut(Arc<Function>);

impl ScaleOut {
    pub fn new(func: Arc<Function>) -> Self {
        func.pool.scaling.fetch_add(1, Ordering::AcqRel);
        Self(func)
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        self.0.pool.scaling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a waiting connection that has waited since `since` should
/// start a container of its own now.
pub fn should_scale_out(func: &Function, since: Instant) -> bool {
    func.pool.scaling.load(Ordering::Acquire) == 0 || since.elapsed() >= MAX_WAIT
}

/// Hands `client` to a container waiting in the pool and records the hit;
/// the lease comes back if none is waiting.
pub fn from_pool(
    func: &Function,
    client: RawFd,
    accepted: Instant,
    mut lease: Lease,
) -> Result<Option<Next>, Lease> {
    while let Some(slot) = func.pool.take() {
        match slot.hand_over(client, lease) {
            Ok(next) => {
                record_warm(func, accepted);
                return Ok(awaited(next));
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

/// Queues a connection for the next container to come back (call when
/// `from_pool` found none and `Pool::expects_returns`). It may be served
/// at once, by a container that came back meanwhile.
pub fn wait(func: &Function, waiting: Waiting) -> (Ticket, Option<Next>) {
    let ticket = func.pool.waiters.push(waiting);
    (ticket, match_waiting(func))
}

/// What became of a container that came back.
pub enum Returned {
    /// It took a waiting connection.
    Served(Option<Next>),
    /// Nobody waits: park it.
    Idle(Slot),
    /// Its handler is gone.
    Gone,
}

/// Gives a container that came back to the oldest waiting connection.
pub fn to_waiter(slot: Slot, func: &Function) -> Returned {
    let Some((ticket, waiting)) = func.pool.waiters.pop() else {
        return Returned::Idle(slot);
    };
    match serve(slot, func, ticket, waiting) {
        Some(next) => Returned::Served(next),
        None => Returned::Gone,
    }
}

/// Serves a waiting connection from the pool if both exist: the second
/// look of whichever side just added itself.
pub fn match_waiting(func: &Function) -> Option<Next> {
    fence(Ordering::SeqCst);
    if func.pool.waiters.queue.is_empty() {
        return None;
    }
    let slot = func.pool.take()?;
    let Some((ticket, waiting)) = func.pool.waiters.pop() else {
        func.pool.push(slot);
        return None;
    };
    serve(slot, func, ticket, waiting).flatten()
}

/// Hands `waiting` to `slot`'s handler; if that fails the connection goes
/// back into the queue (its timer still holds the ticket).
fn serve(slot: Slot, func: &Function, ticket: Ticket, waiting: Waiting) -> Option<Option<Next>> {
    let Waiting {
        client,
        accepted,
        lease,
    } = waiting;
    match slot.hand_over(client.as_raw_fd(), lease) {
        Ok(next) => {
            record_warm(func, accepted);
            Some(awaited(next))
        }
        Err((lease, e)) => {
            tracing::debug!(function = %func.name, error = %e, "returning container gone");
            ticket.put_back(Waiting {
                client,
                accepted,
                lease,
            });
            func.pool.waiters.queue.push(ticket);
            None
        }
    }
}

fn awaited(next: HandedOver) -> Option<Next> {
    match next {
        HandedOver::AwaitNext(reuse, lease) => Some((reuse, lease)),
        HandedOver::Done => None,
    }
}

fn record_warm(func: &Function, accepted: Instant) {
    let took = accepted.elapsed();
    let stats = &func.stats;
    stats.warm_starts.fetch_add(1, Ordering::Relaxed);
    stats.handed_over.fetch_add(1, Ordering::Relaxed);
    stats.latency.record(took);
    func.metrics.handed_over(took, true);
}
