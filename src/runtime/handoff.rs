//! Handing an accepted connection to a container that is already running
//! (`deliver`, the data plane's one call) — one waiting in the pool, or,
//! in reuse mode when none waits but some are busy, the first busy one to
//! come back — and the one place that decides that a connection needs a
//! container of its own (`Runtime::serve_cold`). A fast handler comes back within tens of microseconds,
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

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cold::ScaleOut;
use super::pool::reuse::{self, Reuse};
use super::pool::waiters::Waiting;
use super::pool::{Handed, Lease, Slot};
use super::{Function, Runtime};
use crate::metrics::Outcome;
use crate::sys::closer::Foreign;

/// How long a connection waits for a busy reuse-mode container before a
/// cold start serves it instead.
pub const SCALE_OUT_AFTER: Duration = Duration::from_millis(10);
/// The longest a connection waits for a container before it gets one of
/// its own, whatever else is starting.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// Offers the connection `conn`, accepted at `accepted`, to the function's
/// running containers; one that none of them can take gets a container of
/// its own. `lease` (its concurrency slot) goes with it.
pub fn deliver(
    rt: &Arc<Runtime>,
    func: &Arc<Function>,
    conn: BorrowedFd<'_>,
    accepted: Instant,
    lease: Lease,
) {
    func.pool.arrived(1);
    if let Err(lease) = from_pool(func, conn, accepted, lease) {
        without_pool(rt, func, conn, accepted, lease);
    }
}

/// Offers connections accepted together (`conns`, a lease each) to the
/// running containers. A handler that takes several at once gets its
/// share in one message — shared among the handlers waiting now, so none
/// idles while another has a queue — and a burst costs a wake-up per
/// handler instead of one per connection. The rest, once the pool is
/// empty, go on as in `deliver`.
pub fn deliver_many(
    rt: &Arc<Runtime>,
    func: &Arc<Function>,
    conns: &[BorrowedFd<'_>],
    accepted: Instant,
    leases: Vec<Lease>,
) {
    func.pool.arrived(conns.len());
    let mut leases = VecDeque::from(leases);
    let mut next = 0;
    // A lease per connection not yet handed over (the caller's and
    // `settle`'s doing); checked, so a caller's slip cannot panic a core.
    while next < conns.len() && leases.len() == conns.len() - next {
        let Some(slot) = func.pool.take() else { break };
        let handlers = func.pool.ready() as usize + 1;
        let n = slot
            .batch()
            .min((conns.len() - next).div_ceil(handlers))
            .max(1);
        let chunk = &conns[next..next + n];
        let handed = slot.hand_over_many(chunk, leases.drain(..n).collect());
        match settle(func, handed, n, accepted) {
            Ok(()) => next += n,
            Err(back) => {
                for lease in back.into_iter().rev() {
                    leases.push_front(lease);
                }
            }
        }
    }
    for (client, lease) in conns[next..].iter().zip(leases) {
        without_pool(rt, func, *client, accepted, lease);
    }
}

/// Hands `client` to a container waiting in the pool; the lease comes
/// back if none is waiting.
fn from_pool(
    func: &Arc<Function>,
    client: BorrowedFd<'_>,
    accepted: Instant,
    mut lease: Lease,
) -> Result<(), Lease> {
    while let Some(slot) = func.pool.take() {
        match settle(func, slot.hand_over(client, lease), 1, accepted) {
            Ok(()) => return Ok(()),
            Err(back) => lease = back,
        }
    }
    Err(lease)
}

/// What follows a hand-over of `count` connections accepted at `accepted`
/// to a container taken from the pool: the hits counted and the
/// container followed, or, from a handler that died while waiting (its
/// supervisor replaces it), the leases back.
fn settle<L>(
    func: &Arc<Function>,
    handed: Result<Handed, (L, io::Error)>,
    count: usize,
    accepted: Instant,
) -> Result<(), L> {
    func.pool.taken();
    match handed {
        Ok(handed) => {
            for _ in 0..count {
                func.ledger.handed_over(accepted.elapsed(), true);
            }
            handed.follow(func);
            Ok(())
        }
        Err((back, e)) => {
            tracing::debug!(function = %func.name, error = %e, "warm container gone");
            Err(back)
        }
    }
}

/// A connection no waiting container took: it waits for a busy reuse-mode
/// container to come back, or gets a container started for it. The one
/// place a connection's cold start is decided (the watchdog below decides
/// it for those that wait).
fn without_pool(
    rt: &Arc<Runtime>,
    func: &Arc<Function>,
    conn: BorrowedFd<'_>,
    accepted: Instant,
    lease: Lease,
) {
    let client = match conn.try_clone_to_owned() {
        Ok(fd) => Foreign::new(TcpStream::from(fd)),
        Err(e) => {
            tracing::debug!(function = %func.name, error = %e, "keeping a connection");
            func.ledger.failed(Outcome::HandlerError);
            return;
        }
    };
    let waiting = Waiting {
        client,
        accepted,
        lease,
    };
    if func.pool.expects_returns() {
        wait_for_return(rt, func, waiting);
    } else {
        rt.serve_cold(Arc::clone(func), waiting, None);
    }
}

/// Reuse mode, every container busy: the connection queues for the first
/// to come back. One watchdog per function (not a timer per connection)
/// sends the oldest to a cold start once it has waited `SCALE_OUT_AFTER`
/// with no other waiter's cold start under way, or `MAX_WAIT` regardless.
fn wait_for_return(rt: &Arc<Runtime>, func: &Arc<Function>, waiting: Waiting) {
    let start_watchdog = func.pool.waiters.push(waiting);
    match_waiting(func);
    if start_watchdog {
        tokio::spawn(watchdog(Arc::clone(rt), Arc::clone(func)));
    }
}

/// Runs while connections wait: scales out for the oldest when it has
/// waited too long, and ends when the queue is empty.
async fn watchdog(rt: Arc<Runtime>, func: Arc<Function>) {
    let waiters = &func.pool.waiters;
    loop {
        let next = match waiters.oldest() {
            Some(since) => since + SCALE_OUT_AFTER,
            None => {
                if waiters.stop_watching() {
                    return;
                }
                continue;
            }
        };
        tokio::time::sleep_until(next.into()).await;
        let Some(waiting) = waiters
            .pop_if(|since| since.elapsed() >= SCALE_OUT_AFTER && should_scale_out(&func, since))
        else {
            // Served meanwhile, or another scale-out is under way: look
            // again in a while.
            tokio::time::sleep(SCALE_OUT_AFTER).await;
            continue;
        };
        let client = waiting.client.as_fd();
        if let Err(lease) = from_pool(&func, client, waiting.accepted, waiting.lease) {
            let waiting = Waiting { lease, ..waiting };
            let scaling = ScaleOut::new(Arc::clone(&func));
            rt.serve_cold(Arc::clone(&func), waiting, Some(scaling));
        }
    }
}

/// Whether a connection that has waited since `since` should start a
/// container of its own now. A `--fork` zygote serves many connections at
/// once, so one more is added at a time, however long the queue has
/// waited: with a container per connection that waited `MAX_WAIT`, 200
/// connections opened at once started 100 zygote containers (a zygote
/// prepares two children ahead, the rest of a burst waits for more).
fn should_scale_out(func: &Function, since: Instant) -> bool {
    let scaling = func.pool.scaling.load(Ordering::Acquire);
    if func.options.fork {
        return scaling == 0;
    }
    scaling == 0 || since.elapsed() >= MAX_WAIT
}

/// Gives a reuse-mode container that came back the oldest waiting
/// connection — or, if its handler takes several at once, up to that
/// many; the slot comes back if nobody waits.
pub fn to_waiter(slot: Slot, func: &Arc<Function>) -> Result<Handed, Slot> {
    let Some(first) = func.pool.waiters.pop() else {
        return Err(slot);
    };
    let batch = slot.batch();
    let mut taken = vec![first];
    while taken.len() < batch {
        match func.pool.waiters.pop() {
            Some(next) => taken.push(next),
            None => break,
        }
    }
    Ok(serve(slot, func, taken))
}

/// Serves a waiting connection from the pool if both exist: the second
/// look of whichever side just added itself.
pub fn match_waiting(func: &Arc<Function>) {
    fence(Ordering::SeqCst);
    if func.pool.waiters.is_empty() {
        return;
    }
    let Some(slot) = func.pool.take() else { return };
    match func.pool.waiters.pop() {
        Some(waiting) => serve(slot, func, vec![waiting]).follow(func),
        None => func.pool.push(slot),
    }
}

/// Hands `taken` (one or a batch of waiting connections) to `slot`'s
/// handler in one message. If that fails (the handler is gone) they go
/// back to the head of the queue and nothing follows.
fn serve(slot: Slot, func: &Arc<Function>, taken: Vec<Waiting>) -> Handed {
    let mut clients = Vec::with_capacity(taken.len());
    let mut accepted = Vec::with_capacity(taken.len());
    let mut leases = Vec::with_capacity(taken.len());
    for w in taken {
        clients.push(w.client);
        accepted.push(w.accepted);
        leases.push(w.lease);
    }
    let handed = {
        let fds: Vec<BorrowedFd<'_>> = clients.iter().map(|c| c.as_fd()).collect();
        slot.hand_over_many(&fds, leases)
    };
    match handed {
        Ok(handed) => {
            for at in accepted {
                func.ledger.handed_over(at.elapsed(), true);
            }
            handed
        }
        Err((leases, e)) => {
            tracing::debug!(function = %func.name, error = %e, "returning container gone");
            let back = clients.into_iter().zip(accepted).zip(leases).rev();
            for ((client, accepted), lease) in back {
                func.pool.waiters.push_front(Waiting {
                    client,
                    accepted,
                    lease,
                });
            }
            Handed::Done
        }
    }
}

impl Handed {
    /// Starts whatever follows the hand-over on the current runtime (a
    /// data-plane core, or the control runtime after a cold start).
    pub fn follow(self, func: &Arc<Function>) {
        if let Handed::AwaitNext(reuse, lease) = self {
            tokio::spawn(await_next(reuse, lease, Arc::clone(func)));
        }
    }
}

/// Waits for the handler to ask for its next connection, holding `lease`
/// (the connection just handed over) until then; gives it a connection
/// that waits for it, or parks it.
pub fn await_next(
    reuse: Arc<Reuse>,
    lease: Lease,
    func: Arc<Function>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    // Boxed: it spawns itself for another container.
    Box::pin(cycle(reuse, lease, func))
}

async fn cycle(reuse: Arc<Reuse>, mut lease: Lease, func: Arc<Function>) {
    loop {
        let ready = reuse::wait_ready(&reuse).await;
        // The handler is done with the connection (or gone): free its slot.
        drop(lease);
        if !ready {
            return;
        }
        if reuse.at_limit() || func.pool.is_closed() || reuse.retired().is_some() {
            reuse.hang_up();
            return;
        }
        match to_waiter(Slot::reuse(Arc::clone(&reuse)), &func) {
            // Served a waiting connection: wait for this one in turn.
            Ok(Handed::AwaitNext(_, next_lease)) => lease = next_lease,
            Ok(Handed::Done) => return,
            Err(slot) => {
                func.pool.push(slot);
                match_waiting(&func);
                return;
            }
        }
    }
}
