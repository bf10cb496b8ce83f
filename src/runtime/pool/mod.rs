//! The warm pool of one function version: containers already started whose
//! handler is connected to `/control.sock` and waiting (`slot`). The data
//! plane hands a connection to one of them (`handoff`), in reuse mode
//! waiting briefly for a busy one; reuse-mode containers come back after
//! each connection (`reuse`). A refiller task on the control runtime keeps
//! the pool at its target, shrinks it to nothing after `pool_idle` without
//! traffic, and backs off when containers fail to start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Function, Ready, Runtime, RuntimeError};
use crate::sys::Priority;

pub mod handoff;
pub mod reuse;
pub mod slot;

use handoff::Waiters;
pub use slot::{Handed, Slot, SlotWatch, Taken};

/// A socket-activated server is up once it has run this long after it
/// got the listener and then sat idle (its container's CPU time grew by
/// less than `SERVER_IDLE_CPU` in `SERVER_IDLE_FOR`: waiting for
/// connections, not still loading, which on a busy host can take many
/// seconds before it fails, as gunicorn does without its app); or once it
/// has run `SERVER_BUSY_MAX`, for a server that is never idle. Before
/// that, its end is a failed start.
pub const SERVER_SETTLE: Duration = Duration::from_secs(1);
pub const SERVER_IDLE_FOR: Duration = Duration::from_millis(200);
pub const SERVER_IDLE_CPU: Duration = Duration::from_millis(2);
pub const SERVER_BUSY_MAX: Duration = Duration::from_secs(10);
/// Longest pause between start attempts of a function whose containers fail.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Containers failing in a row before the function counts as crash-looping.
const CRASH_LOOP: u32 = 3;
/// How long after a one-shot take its replacement waits to start: the
/// connection is served in the meantime (a warm hit takes 0.3–1 ms here).
/// The refiller runs at `SCHED_IDLE`, yet the scheduler still lets it
/// take a CPU from a runnable container process for up to a slice
/// (EEVDF picks it whenever it is owed time, and the containers' work
/// is one entity against it, in faasd's cgroup); starting at once, its
/// ~0.9 ms of preparation ran in the middle of the hit (measured with
/// `perf sched`: a `--container-port` hit's faas-init waited 0.94 ms
/// behind it).
const REFILL_AFTER_TAKE: Duration = Duration::from_millis(3);

/// Warm containers of one function version.
pub struct WarmPool {
    target: u32,
    /// Reuse mode and socket activation: containers live on (they come
    /// back, or accept by themselves), so the target counts live
    /// containers and taking one does not call for a new start.
    reuse: bool,
    /// One-shot: a hit takes the container that started most recently,
    /// whose pages and caches are warmest (measured: oldest-first had the
    /// longer tail). Reuse: the one that came back longest ago, so the load
    /// spreads over the containers (each is held to one CPU). The lock is
    /// held for a push or a pop only.
    slots: Mutex<VecDeque<Slot>>,
    ready: AtomicU32,
    starting: AtomicU32,
    /// Reuse mode: containers alive, parked or serving.
    live: AtomicU32,
    /// Reuse mode: connections waiting for a busy container to come back.
    waiters: Waiters,
    /// Reuse mode: cold starts under way for waiting connections.
    scaling: AtomicU32,
    /// Containers that failed in a row (reset by one that came up).
    failures: AtomicU32,
    /// Containers that ended unasked and were started again.
    restarts: AtomicU64,
    /// When the last failure was (ms since `epoch`), and what it was.
    last_failure_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// A container of this version came up once.
    ever_up: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
    /// Wakes the supervisors of long-lived (socket-activation) containers
    /// when the pool is closed.
    pub(crate) retired: Notify,
    epoch: Instant,
    last_used_ms: AtomicU64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("target", &self.target)
            .field("ready", &self.ready())
            .finish()
    }
}

impl WarmPool {
    pub fn new(target: u32, reuse: bool) -> Self {
        Self {
            target,
            reuse,
            slots: Mutex::new(VecDeque::new()),
            ready: AtomicU32::new(0),
            starting: AtomicU32::new(0),
            live: AtomicU32::new(0),
            waiters: Waiters::default(),
            scaling: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            ever_up: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            retired: Notify::new(),
            epoch: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        }
    }

    fn pop_next(&self) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if self.reuse {
            slots.pop_front()
        } else {
            slots.pop_back()
        }
    }

    /// Containers waiting right now.
    pub fn ready(&self) -> u32 {
        self.ready.load(Ordering::Acquire)
    }

    /// Containers alive in reuse mode or socket activation.
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether as many containers as `--warm` asks for are up (waiting,
    /// or in reuse mode and socket activation alive): the version is ready
    /// to be announced.
    pub fn filled(&self) -> bool {
        let up = if self.reuse {
            self.live.load(Ordering::Acquire).max(self.ready())
        } else {
            self.ready()
        };
        up >= self.target
    }

    /// The next waiting container (see `slots`), if any; never waits. Call `taken`
    /// once the connection went down it.
    pub fn take(&self) -> Option<Slot> {
        self.touch();
        while let Some(slot) = self.pop_next() {
            if !slot.claimed.swap(true, Ordering::AcqRel) {
                self.ready.fetch_sub(1, Ordering::AcqRel);
                return Some(slot);
            }
            // Withdrawn by its supervisor (dead or retired): skip it.
        }
        None
    }

    /// A taken one-shot container is used (or turned out dead): its
    /// replacement starts shortly (`REFILL_AFTER_TAKE`) — woken after the
    /// hand-over, so that waking the refiller costs the connection nothing.
    pub fn taken(&self) {
        if !self.reuse {
            self.wake.notify_one();
        }
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
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(slot);
        if self.reuse && before == self.target {
            // The first container beyond the target: the refiller times
            // the surplus's retirement (once per surge, not per request).
            self.wake.notify_one();
        }
        self.came_up();
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
        self.retired.notify_waiters();
    }

    /// Drops every waiting slot: their supervisors kill the containers.
    fn drain(&self) {
        while self.take_quietly().is_some() {}
    }

    fn take_quietly(&self) -> Option<Slot> {
        while let Some(slot) = self.pop_next() {
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

    /// A container of this version failed (did not start, ended before
    /// serving, or ended a long-lived server): the next start backs off,
    /// `why` is its `last_error`.
    pub fn failed(&self, why: String) {
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.restarts.fetch_add(1, Ordering::AcqRel);
        self.last_failure_ms.store(self.now_ms(), Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.wake.notify_one();
    }

    /// A container came up (its handler connected, or a server outlived
    /// its start): the failures in a row are over.
    pub fn came_up(&self) {
        self.failures.store(0, Ordering::Release);
        self.ever_up.store(true, Ordering::Release);
    }

    /// Whether a container of this version ever came up.
    fn settled(&self) -> bool {
        self.ever_up.load(Ordering::Acquire)
    }

    /// What went wrong, if a container failed before any came up.
    fn first_failure(&self) -> Option<String> {
        if self.settled() || self.restarts() == 0 {
            return None;
        }
        self.last_error()
    }

    /// Containers keep failing and none serves.
    pub fn crash_looping(&self) -> bool {
        self.failures.load(Ordering::Acquire) >= CRASH_LOOP && self.ready() == 0
    }

    /// The pause before the next start after the failures so far.
    fn backoff(&self) -> Duration {
        match self.failures.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1 << n.min(10))
                .min(MAX_BACKOFF),
        }
    }

    /// Whether a connection may have a container started for it now: not
    /// while the function crash-loops, but for one try per back-off
    /// period (so a function with no pool recovers too).
    pub fn may_start_cold(&self) -> bool {
        if !self.crash_looping() {
            return true;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last_failure_ms.load(Ordering::Acquire));
        Duration::from_millis(since) >= self.backoff()
    }

    /// `ready`, `starting` or `crash-looping`, as `faas inspect` says.
    pub fn state(&self) -> &'static str {
        let up = if self.reuse {
            self.live()
        } else {
            self.ready()
        };
        match (self.crash_looping(), up > 0 || self.target == 0) {
            (true, _) => "crash-looping",
            (false, true) => "ready",
            (false, false) => "starting",
        }
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the pool is closed (at once if it is).
    async fn closing(&self) {
        loop {
            let notified = self.wake.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
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
        // The last take (`touch`, ms granularity: 2–3 ms of real time).
        let since = pool.idle_for();
        if since < REFILL_AFTER_TAKE {
            tokio::time::sleep(REFILL_AFTER_TAKE - since).await;
        }
        let idle = idle_limit > Duration::ZERO && pool.idle_for() >= idle_limit;
        let want = if idle { 0 } else { pool.target };
        if idle && pool.ready() > 0 {
            tracing::debug!(function = %func.name, "pool idle: shrinking to zero");
            pool.drain();
        }
        let backoff = pool.backoff();
        if !backoff.is_zero() {
            // A retired version stops trying at once.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = pool.closing() => return,
            }
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
    // Nothing waits on a pool refill: the runtime works on idle CPU time.
    let started = rt.start_for_pool(&func, Priority::Idle).await;
    parked(&func, started);
}

/// Parks a container started for the pool (counted in `starting` until now).
fn parked(func: &Function, started: Result<Ready, RuntimeError>) {
    match started {
        Ok(ready) => ready.park(),
        Err(RuntimeError::ShuttingDown) | Err(RuntimeError::Retired) => {}
        Err(e) => {
            let why = e.for_operator(func);
            func.say(&format!("starting a container: {why}"));
            func.pool.failed(why);
            tracing::warn!(function = %func.name, error = %e, "starting a warm container");
        }
    }
    func.pool.starting.fetch_sub(1, Ordering::AcqRel);
    func.pool.wake.notify_one();
}

impl Runtime {
    /// Starts a new version's first container and waits until its handler
    /// is connected (for a server on a container port: once it listens):
    /// what the runtime and the program say of it decides whether the
    /// version is deployed at all, the version before serving on. It then
    /// joins the pool (or goes, when the pool's target is zero) and the
    /// pool is kept filled. A socket-activated server is up only once it
    /// got the listener and settled (`server_up`).
    pub async fn first_start(self: &Arc<Self>, func: &Arc<Function>) -> Result<(), RuntimeError> {
        let ready = match self.start(func, Priority::Normal).await {
            Ok(ready) => ready,
            Err(e @ (RuntimeError::ShuttingDown | RuntimeError::Start { .. })) => {
                func.say(&format!("the first container of this version: {e}"));
                return Err(e);
            }
            Err(e) => {
                let why = e.for_operator(func);
                func.say(&format!("the first container of this version: {why}"));
                return Err(RuntimeError::NotUp {
                    function: func.name.to_string(),
                    why,
                });
            }
        };
        if func.pool.target == 0 {
            ready.discard();
        } else {
            ready.park();
        }
        self.refill(func);
        Ok(())
    }

    /// Waits until a socket-activated version's first server is up (it got
    /// the listener, which the data plane binds after `first_start`, and
    /// has settled, see `SERVER_SETTLE`); its failure, or none in time, is
    /// the error.
    pub async fn server_up(&self, func: &Function) -> Result<(), RuntimeError> {
        let within = self.config.connect_timeout + SERVER_BUSY_MAX + SERVER_SETTLE;
        let deadline = Instant::now() + within;
        loop {
            if func.pool.settled() {
                return Ok(());
            }
            if let Some(why) = func.pool.first_failure() {
                return Err(RuntimeError::NotUp {
                    function: func.name.to_string(),
                    why,
                });
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::NotUp {
                    function: func.name.to_string(),
                    why: format!("no server up within {:.0} s", within.as_secs_f64()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
