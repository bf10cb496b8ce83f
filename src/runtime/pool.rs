//! The warm pool of one function version: containers already started whose
//! handler is connected to `/control.sock` and waiting. The data plane
//! takes a slot (lock-free) and hands its client socket over with one
//! `sendmsg`; a refiller task on the control runtime keeps the pool at its
//! target, shrinks it to nothing after `pool_idle` without traffic, and
//! backs off when containers fail to start.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::SegQueue;
use tokio::sync::{oneshot, Notify};

use super::handoff::Waiters;
use super::reuse::Reuse;
use super::{fdpass, Function, Lease, Runtime};

/// Longest pause between start attempts of a function whose containers fail.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A waiting container, as the data plane sees it.
pub struct Slot {
    control: UnixStream,
    kind: Kind,
    claimed: Arc<AtomicBool>,
}

enum Kind {
    /// One-shot: the supervisor waits for the connection.
    Once(oneshot::Sender<Taken>),
    /// Reuse mode: whoever hands over keeps the lease until the handler
    /// asks for the next connection (see `reuse::await_next`); the
    /// supervisor is not woken per connection. `None` once used.
    Reuse(Option<Arc<Reuse>>),
}

/// What `hand_over` leaves to the caller.
pub enum HandedOver {
    /// Nothing: the container's supervisor has the lease.
    Done,
    /// Reuse mode: run `reuse::await_next` with these on the caller's runtime.
    AwaitNext(Arc<Reuse>, Lease),
}

/// What a one-shot container's supervisor holds while it serves.
pub struct Taken {
    pub lease: Lease,
    /// Our own copy of the connection (the handler has the same socket),
    /// to answer the client if the handler dies having sent nothing.
    pub client: Option<OwnedFd>,
}

impl Taken {
    /// Keeps a copy of `client` (not kept if that fails: only the
    /// answer to a silent death is lost).
    pub fn new(lease: Lease, client: RawFd) -> Self {
        Self {
            lease,
            client: crate::rawfd::dup(&client).ok(),
        }
    }
}

/// The supervisor's side of a one-shot slot.
pub struct SlotWatch {
    pub handed: oneshot::Receiver<Taken>,
    claimed: Arc<AtomicBool>,
}

impl Slot {
    /// Wraps a connected one-shot handler; the watch tells its supervisor
    /// when the slot is used (`Ok(lease)`) or dropped unused (`Err`).
    pub fn new(control: UnixStream) -> (Slot, SlotWatch) {
        let (tx, rx) = oneshot::channel();
        let claimed = Arc::new(AtomicBool::new(false));
        let slot = Slot {
            control,
            kind: Kind::Once(tx),
            claimed: Arc::clone(&claimed),
        };
        (
            slot,
            SlotWatch {
                handed: rx,
                claimed,
            },
        )
    }

    /// Wraps a connected reuse-mode handler. Dropped unused, it retires the
    /// container.
    pub fn reuse(control: UnixStream, reuse: Arc<Reuse>) -> Slot {
        let claimed = Arc::new(AtomicBool::new(false));
        reuse.set_claim(Arc::clone(&claimed));
        Slot {
            control,
            kind: Kind::Reuse(Some(reuse)),
            claimed,
        }
    }

    /// Sends `client` to the waiting handler: the hot path's one syscall.
    /// On failure (the handler died) the lease comes back.
    pub fn hand_over(
        mut self,
        client: RawFd,
        lease: Lease,
    ) -> Result<HandedOver, (Lease, io::Error)> {
        if let Err(e) = fdpass::send_fd(self.control.as_fd(), client) {
            return Err((lease, e));
        }
        match &mut self.kind {
            Kind::Once(_) => {
                if let Kind::Once(tx) = std::mem::replace(&mut self.kind, Kind::Reuse(None)) {
                    // The supervisor may be gone only if the container already
                    // ended; the handler has the socket either way.
                    let _ = tx.send(Taken::new(lease, client));
                }
                Ok(HandedOver::Done)
            }
            Kind::Reuse(reuse) => match reuse.take() {
                Some(reuse) => {
                    reuse.served.fetch_add(1, Ordering::AcqRel);
                    Ok(HandedOver::AwaitNext(reuse, lease))
                }
                None => Ok(HandedOver::Done),
            },
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A reuse slot dropped unused (pool drained, hand-over failed): the
        // container is retired. (A one-shot's supervisor sees its channel close.)
        if let Kind::Reuse(Some(reuse)) = &self.kind {
            reuse.retire("retired from the pool");
        }
    }
}

impl SlotWatch {
    /// Takes the slot back from the pool (the container died or is retired
    /// while waiting). False when the data plane took it first.
    pub fn withdraw(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }
}

/// Warm containers of one function version.
pub struct Pool {
    target: u32,
    /// Reuse mode: containers come back by themselves, so taking one does
    /// not call for a new start; the target counts live containers.
    reuse: bool,
    slots: SegQueue<Slot>,
    ready: AtomicU32,
    starting: AtomicU32,
    /// Reuse mode: containers alive, parked or serving.
    live: AtomicU32,
    /// Reuse mode: connections waiting for a busy container to come back.
    pub(super) waiters: Waiters,
    /// Reuse mode: cold starts under way for waiting connections.
    pub(super) scaling: AtomicU32,
    failures: AtomicU32,
    closed: AtomicBool,
    wake: Notify,
    epoch: Instant,
    last_used_ms: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("ready", &self.ready())
            .finish()
    }
}

impl Pool {
    pub fn new(target: u32, reuse: bool) -> Self {
        Self {
            target,
            reuse,
            slots: SegQueue::new(),
            ready: AtomicU32::new(0),
            starting: AtomicU32::new(0),
            live: AtomicU32::new(0),
            waiters: Waiters::default(),
            scaling: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            epoch: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        }
    }

    /// Containers waiting right now.
    pub fn ready(&self) -> u32 {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A waiting container, if any. Lock-free; never blocks.
    pub fn take(&self) -> Option<Slot> {
        self.touch();
        while let Some(slot) = self.slots.pop() {
            if !slot.claimed.swap(true, Ordering::AcqRel) {
                self.ready.fetch_sub(1, Ordering::AcqRel);
                if !self.reuse {
                    // Its replacement starts now.
                    self.wake.notify_one();
                }
                return Some(slot);
            }
            // Withdrawn by its supervisor (dead or retired): skip it.
        }
        None
    }

    /// Records traffic, so an idle-shrunk pool fills again.
    fn touch(&self) {
        self.last_used_ms.store(self.now_ms(), Ordering::Release);
        if self.target > 0 && self.have() == 0 {
            self.wake.notify_one();
        }
    }

    /// What counts against the target: waiting containers, or in reuse
    /// mode every live one (busy ones come back).
    fn have(&self) -> u32 {
        if self.reuse {
            self.live.load(Ordering::Acquire)
        } else {
            self.ready()
        }
    }

    /// Reuse mode: some containers are serving and will come back.
    pub fn expects_returns(&self) -> bool {
        self.reuse && self.live.load(Ordering::Acquire) > self.ready()
    }

    /// A reuse-mode container started (`Guard::reuse`).
    pub fn reuse_started(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// A reuse-mode container ended; below the target, another starts.
    pub fn reuse_ended(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Offers a waiting container. Refused (and so dropped, which retires
    /// the container) once the pool is closed.
    pub fn push(&self, slot: Slot) {
        if self.is_closed() {
            return;
        }
        let before = self.ready.fetch_add(1, Ordering::AcqRel);
        self.slots.push(slot);
        if self.reuse && before == self.target {
            // The first container beyond the target: the refiller times
            // the surplus's retirement (once per surge, not per request).
            self.wake.notify_one();
        }
        self.failures.store(0, Ordering::Release);
    }

    /// A container left the pool without being used.
    pub fn withdrawn(&self) {
        self.ready.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Retires the pool: waiting containers go, none are started again.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drain();
        self.wake.notify_one();
    }

    /// Drops every waiting slot: their supervisors kill the containers.
    fn drain(&self) {
        while self.take_quietly().is_some() {}
    }

    fn take_quietly(&self) -> Option<Slot> {
        while let Some(slot) = self.slots.pop() {
            if !slot.claimed.swap(true, Ordering::AcqRel) {
                self.ready.fetch_sub(1, Ordering::AcqRel);
                return Some(slot);
            }
        }
        None
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_used_ms.load(Ordering::Acquire)),
        )
    }

    /// More waiting containers than the target (reuse mode re-parks
    /// containers that were started cold).
    pub fn surplus(&self) -> bool {
        self.ready() > self.target
    }
}

/// Keeps `func`'s pool filled until the pool is closed. Runs on the
/// control runtime; sleeps (no CPU) while the pool is full or idle.
pub async fn refill(rt: Arc<Runtime>, func: Arc<Function>) {
    let pool = &func.pool;
    let idle_limit = rt.config.pool_idle;
    loop {
        if pool.is_closed() || *rt.stopping.borrow() {
            return;
        }
        let idle = idle_limit > Duration::ZERO && pool.idle_for() >= idle_limit;
        let want = if idle { 0 } else { pool.target };
        if idle && pool.ready() > 0 {
            tracing::debug!(function = %func.name, "pool idle: shrinking to zero");
            pool.drain();
        }
        let failures = pool.failures.load(Ordering::Acquire);
        if failures > 0 {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << failures.min(10))
                .min(MAX_BACKOFF);
            tokio::time::sleep(backoff).await;
        }
        let have = pool.have() + pool.starting.load(Ordering::Acquire);
        for _ in have..want {
            pool.starting.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(start_one(Arc::clone(&rt), Arc::clone(&func)));
        }
        // Reused containers beyond the target retire after the function's
        // idle timeout without traffic.
        let surplus_idle = Duration::from_secs(func.options.idle_timeout_secs);
        if pool.surplus() && pool.idle_for() >= surplus_idle {
            while pool.surplus() {
                match pool.take_quietly() {
                    Some(slot) => drop(slot),
                    None => break,
                }
            }
        }
        let mut wait: Option<Duration> = None;
        if want > 0 && idle_limit > Duration::ZERO {
            wait = Some(idle_limit.saturating_sub(pool.idle_for()));
        }
        if pool.surplus() {
            let until = surplus_idle.saturating_sub(pool.idle_for());
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        let notified = pool.wake.notified();
        match wait {
            Some(w) => {
                let _ = tokio::time::timeout(w + Duration::from_millis(10), notified).await;
            }
            None => notified.await,
        }
    }
}

async fn start_one(rt: Arc<Runtime>, func: Arc<Function>) {
    match rt.start(&func).await {
        Ok(ready) => {
            ready.park();
        }
        Err(e) => {
            func.pool.failures.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(function = %func.name, error = %e, "starting a warm container");
        }
    }
    func.pool.starting.fetch_sub(1, Ordering::AcqRel);
    func.pool.wake.notify_one();
}
