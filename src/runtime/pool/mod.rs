//! The warm pool of one function version: containers already started whose
//! handler is connected to `/control.sock` and waiting (`slot`), the
//! connections waiting for a busy reuse-mode container (`waiters`), and
//! reuse mode's per-container state (`reuse`), and how many containers
//! it should hold (`demand`). The state only: handing
//! connections over (`runtime::handoff`) and keeping the pool at its
//! target (`runtime::refill`) live above, where the function and the
//! runtime are known.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub mod demand;
pub mod reuse;
pub mod slot;
pub mod waiters;

use demand::Demand;
pub use slot::{Handed, Lease, Slot, SlotWatch, Taken};
use waiters::Waiters;

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

/// Warm containers of one function version.
pub struct WarmPool {
    /// How many it should hold now (`demand`'s target, within the
    /// node's `--pool-memory` share).
    target: AtomicU32,
    demand: Mutex<Demand>,
    /// Its share of `--pool-memory` in containers (`u32::MAX`: unbounded).
    cap: AtomicU32,
    /// Connections that arrived, a running count for `demand`.
    arrivals: AtomicU64,
    /// What one of its waiting containers takes in memory (bytes, as last
    /// measured; 0 until then).
    memory_each: AtomicU64,
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
    pub(in crate::runtime) starting: AtomicU32,
    /// Reuse mode: containers alive, parked or serving.
    live: AtomicU32,
    /// Reuse mode: connections waiting for a busy container to come back.
    pub(in crate::runtime) waiters: Waiters,
    /// Reuse mode: cold starts under way for waiting connections.
    pub(in crate::runtime) scaling: AtomicU32,
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
    pub(in crate::runtime) wake: Notify,
    /// Wakes the supervisors of long-lived (socket-activation) containers
    /// when the pool is closed.
    pub(crate) retired: Notify,
    epoch: Instant,
    last_used_ms: AtomicU64,
    /// The gap between the last two takes (ms).
    last_gap_ms: AtomicU64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("target", &self.target())
            .field("ready", &self.ready())
            .finish()
    }
}

impl WarmPool {
    /// A pool of `floor` containers (`--warm`), following demand up to
    /// `ceiling` (`--warm-max`; no more than `floor`: fixed).
    pub fn new(floor: u32, ceiling: u32, reuse: bool) -> Self {
        Self {
            target: AtomicU32::new(floor),
            demand: Mutex::new(Demand::new(floor, ceiling, reuse, Instant::now())),
            cap: AtomicU32::new(u32::MAX),
            arrivals: AtomicU64::new(0),
            memory_each: AtomicU64::new(0),
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
            last_gap_ms: AtomicU64::new(u64::MAX),
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

    /// Its containers serve many connections each (reuse, zygotes,
    /// servers): taking one does not use it up.
    pub fn serves_many(&self) -> bool {
        self.reuse
    }

    /// Containers being started for it now.
    pub fn starting(&self) -> u32 {
        self.starting.load(Ordering::Acquire)
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
    /// or in reuse mode and socket activation alive; fewer if
    /// `--pool-memory` allows fewer): the version is ready to be announced.
    pub fn filled(&self) -> bool {
        let up = if self.reuse {
            self.live.load(Ordering::Acquire).max(self.ready())
        } else {
            self.ready()
        };
        up >= self.floor().min(self.cap.load(Ordering::Acquire))
    }

    /// How many containers it should hold now.
    pub fn target(&self) -> u32 {
        self.target
            .load(Ordering::Acquire)
            .min(self.cap.load(Ordering::Acquire))
    }

    /// What demand asks for, before the node's memory bound.
    pub fn wanted(&self) -> u32 {
        self.target.load(Ordering::Acquire)
    }

    fn floor(&self) -> u32 {
        self.demand().bounds().0
    }

    pub fn demand(&self) -> std::sync::MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `n` connections arrived (taken from the pool or not).
    pub fn arrived(&self, n: usize) {
        self.arrivals.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Recomputes the target from the demand seen so far (the refiller,
    /// whenever it wakes); a grown target shrinks after `idle`.
    pub(in crate::runtime) fn follow_demand(&self, idle: Duration) -> u32 {
        let mut demand = self.demand();
        if self.reuse {
            demand.busy(self.live().saturating_sub(self.ready()));
        }
        let target = demand.tick(Instant::now(), self.arrivals.load(Ordering::Relaxed), idle);
        self.target.store(target, Ordering::Release);
        target
    }

    /// Sets the node's memory bound on this pool, in containers.
    pub(in crate::runtime) fn set_cap(&self, cap: u32) {
        if self.cap.swap(cap, Ordering::AcqRel) > cap {
            self.wake.notify_one();
        }
    }

    /// A waiting container's memory, as measured (0: not yet).
    pub fn memory_each(&self) -> u64 {
        self.memory_each.load(Ordering::Acquire)
    }

    pub(in crate::runtime) fn measured_memory(&self, bytes: u64) {
        let before = self.memory_each.load(Ordering::Acquire);
        let next = if before == 0 {
            bytes
        } else {
            // Averaged: one container's page cache says little.
            (before * 3 + bytes) / 4
        };
        self.memory_each.store(next, Ordering::Release);
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
    /// replacement starts shortly (`refill::REFILL_AFTER_TAKE`) — woken after the
    /// hand-over, so that waking the refiller costs the connection nothing.
    pub fn taken(&self) {
        if !self.reuse {
            self.wake.notify_one();
        }
    }

    /// Records traffic, so an idle-shrunk pool fills again.
    fn touch(&self) {
        let now = self.now_ms();
        let before = self.last_used_ms.swap(now, Ordering::AcqRel);
        self.last_gap_ms
            .store(now.saturating_sub(before), Ordering::Release);
        if self.target() > 0 && self.have() == 0 {
            self.wake.notify_one();
        }
    }

    /// What counts against the target: waiting containers, or in reuse
    /// mode every live one (busy ones come back).
    pub(in crate::runtime) fn have(&self) -> u32 {
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
        if self.reuse && before == self.target() {
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
    pub(in crate::runtime) fn drain(&self) {
        while self.take_quietly().is_some() {}
    }

    pub(in crate::runtime) fn take_quietly(&self) -> Option<Slot> {
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

    /// The last two takes came this close together (a burst under way).
    pub(in crate::runtime) fn takes_within(&self, gap: Duration) -> bool {
        self.last_gap_ms.load(Ordering::Acquire) < gap.as_millis() as u64
    }

    pub(in crate::runtime) fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_used_ms.load(Ordering::Acquire)),
        )
    }

    /// More waiting containers than the target (reuse mode re-parks
    /// containers that were started cold).
    pub fn surplus(&self) -> bool {
        self.ready() > self.target()
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
    pub(in crate::runtime) fn settled(&self) -> bool {
        self.ever_up.load(Ordering::Acquire)
    }

    /// What went wrong, if a container failed before any came up.
    pub(in crate::runtime) fn first_failure(&self) -> Option<String> {
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
    pub(in crate::runtime) fn backoff(&self) -> Duration {
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
        match (self.crash_looping(), up > 0 || self.target() == 0) {
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
    pub(in crate::runtime) async fn closing(&self) {
        loop {
            let notified = self.wake.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}
