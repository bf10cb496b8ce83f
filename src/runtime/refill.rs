//! Starting containers for a function's warm pool: a new version's first
//! container (whose start decides whether the version is deployed), and
//! the refiller that keeps the pool at its target on the idle-priority
//! runtime: the target follows demand (`pool::demand`, each start timed
//! for it) within the node's `--pool-memory` share (`budget`), a grown
//! pool shrinks back after `pool_idle` without demand for it, and starts
//! back off while containers fail.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::container::Ready;
use super::pool::{SERVER_BUSY_MAX, SERVER_SETTLE};
use super::{Function, Runtime, RuntimeError};
use crate::sys::Priority;

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
/// In a burst (the last two takes closer than `BURST_GAP`) while a
/// quarter of the pool still waits, refills wait until no take came for
/// this long: the burst is served first, by the containers waiting for
/// it, and the starts (whose runtime and disk work a container's cgroup
/// priority does not cover) come after it. Measured with bursts of eight back-to-back
/// single-use connections: p90 of the hits 10 ms starting at once, 7.7 ms
/// starting after the burst. Not for connections spaced wider: a refill
/// 50 ms after every take met the next one of a client 50 ms apart (p99
/// 0.7 → 5.8 ms).
const BURST_QUIET: Duration = Duration::from_millis(30);
const BURST_GAP: Duration = Duration::from_millis(10);
/// How often a pool that follows demand looks at it while traffic flows.
const DEMAND_TICK: Duration = Duration::from_millis(250);

impl Runtime {
    /// Keeps `func`'s warm pool filled (until it is closed), at idle priority.
    pub fn refill(self: &Arc<Self>, func: &Arc<Function>) {
        self.background
            .spawn(keep_filled(Arc::clone(self), Arc::clone(func)));
    }
}

/// Keeps `func`'s pool filled until the pool is closed. Runs on the
/// control runtime; sleeps (no CPU) while the pool is full or idle.
async fn keep_filled(rt: Arc<Runtime>, func: Arc<Function>) {
    let pool = &func.pool;
    // Zero: a grown pool never shrinks back.
    let idle_limit = match rt.config.pool_idle {
        Duration::ZERO => Duration::MAX,
        idle => idle,
    };
    rt.budget.register(&func);
    loop {
        if pool.is_closed() || *rt.stopping.borrow() {
            return;
        }
        // Measured from the last take (`touch`, ms granularity: 2–3 ms of
        // real time).
        let burst = !pool.serves_many()
            && pool.takes_within(BURST_GAP)
            && pool.ready() * 4 >= pool.target();
        let after = match burst {
            true => BURST_QUIET,
            false => REFILL_AFTER_TAKE,
        };
        let since = pool.idle_for();
        if since < after {
            tokio::time::sleep(after - since).await;
            continue;
        }
        pool.follow_demand(idle_limit);
        let want = pool.target();
        if !pool.serves_many() {
            // Shrunk (demand fell, or the node's memory bound): one-shot
            // containers beyond the target go now.
            while pool.ready() > want {
                match pool.take_quietly() {
                    Some(slot) => drop(slot),
                    None => break,
                }
            }
        }
        let backoff = pool.backoff();
        if !backoff.is_zero() {
            // A retired version stops trying at once.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = pool.closing() => return,
            }
        }
        let starting = pool.starting.load(Ordering::Acquire);
        let have = pool.have() + starting;
        // At most `starts_at_once` at a time: more in parallel on the same
        // CPUs would each take longer, none would be ready sooner, and the
        // start time demand is measured by would grow with the target.
        let room = starts_at_once().saturating_sub(starting);
        for _ in have..want.min(have + room) {
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
        if let Some(due) = pool.demand().shrink_due(Instant::now(), idle_limit) {
            wait = Some(due);
        }
        if pool.idle_for() < Duration::from_secs(1) {
            // Traffic: the rate is measured while it flows, not only
            // when containers are taken.
            wait = Some(wait.map_or(DEMAND_TICK, |w| w.min(DEMAND_TICK)));
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

/// Refills of one pool under way at once: two per CPU (a start waits on
/// the runtime and the disk part of the time).
fn starts_at_once() -> u32 {
    static AT_ONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *AT_ONCE.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        u32::try_from(cpus * 2).unwrap_or(u32::MAX)
    })
}

async fn start_one(rt: Arc<Runtime>, func: Arc<Function>) {
    // Nothing waits on a pool refill: the runtime works on idle CPU time.
    let t0 = Instant::now();
    let started = rt.start_for_pool(&func, Priority::Idle).await;
    if started.is_ok() {
        func.pool.demand().started(t0.elapsed());
    }
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
            func.ledger.container_failed();
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
        if func.pool.target() == 0 {
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
