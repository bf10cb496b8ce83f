//! Starting containers for a function's warm pool: a new version's first
//! container (whose start decides whether the version is deployed), and
//! the refiller that keeps the pool at its target on the idle-priority
//! runtime, shrinks it after `pool_idle` without traffic and backs off
//! while containers fail.

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
