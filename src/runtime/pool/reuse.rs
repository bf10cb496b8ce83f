//! Reuse mode's per-connection cycle, kept off the control runtime: after
//! a hand-over, the thread that made it (a data-plane core, or the control
//! runtime after a cold start) waits for the handler to connect to
//! `/control.sock` again, frees the connection's concurrency slot, and
//! gives the container the oldest connection waiting for one (`handoff`)
//! or puts it back into the pool — or, past `--max-requests` or its
//! timeout, lets it go. The container's supervisor only hears of the rare
//! events (kill, end), so a reused connection costs it no wake-up.
//!
//! The cycle, for one container:
//!
//! ```text
//!   parked in the pool ──deliver()──▶ serving ──handler reconnects──┐
//!        ▲                                                         │
//!        └──── nobody waits ◀── a connection waits? ──yes──▶ serving
//!   (max requests, timeout, retired or gone: the container ends)
//! ```

use std::future::Future;
use std::os::unix::net::UnixListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::handoff;
use super::slot::{Handed, Slot};
use crate::runtime::container::control::register;
use crate::runtime::{Function, Lease};

/// A reuse-mode container, shared by its supervisor and whoever serves it.
pub struct Reuse {
    /// The container's `/control.sock` listener (non-blocking).
    listener: UnixListener,
    /// The listener on a reactor, registered once on whichever runtime
    /// first waits and kept: re-registering per connection costs four
    /// syscalls. Taken out while waited on (one wait at a time).
    watcher: Mutex<Option<AsyncFd<UnixListener>>>,
    pub(in crate::runtime) served: AtomicU32,
    max: u32,
    timeout: Duration,
    /// The claim flag of its slot in the pool, if it is there.
    claim: Mutex<Option<Arc<AtomicBool>>>,
    /// Set with a reason when the container must be killed.
    retired: Mutex<Option<&'static str>>,
    /// Wakes the supervisor (retired).
    pub(in crate::runtime) kill: Notify,
    /// The container ended: whoever waits for its reconnect stops.
    gone: AtomicBool,
    ended: Notify,
}

impl Reuse {
    pub fn new(listener: UnixListener, max: u32, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            listener,
            watcher: Mutex::new(None),
            served: AtomicU32::new(0),
            max,
            timeout,
            claim: Mutex::new(None),
            retired: Mutex::new(None),
            kill: Notify::new(),
            gone: AtomicBool::new(false),
            ended: Notify::new(),
        })
    }

    pub(in crate::runtime) fn set_claim(&self, claim: Arc<AtomicBool>) {
        *self.claim.lock().unwrap_or_else(|p| p.into_inner()) = Some(claim);
    }

    /// Takes its slot out of the pool if it is still there; true if so.
    pub(in crate::runtime) fn withdraw(&self) -> bool {
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner()).take();
        claim.is_some_and(|c| !c.swap(true, Ordering::AcqRel))
    }

    /// Asks the supervisor to kill the container.
    pub fn retire(&self, reason: &'static str) {
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.kill.notify_one();
    }

    pub(in crate::runtime) fn retired(&self) -> Option<&'static str> {
        *self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container ended (called by its supervisor).
    pub(in crate::runtime) fn end(&self) {
        self.gone.store(true, Ordering::Release);
        self.ended.notify_waiters();
    }

    fn at_limit(&self) -> bool {
        self.max > 0 && self.served.load(Ordering::Acquire) >= self.max
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
        let next = wait_reconnect(&reuse).await;
        // The handler is done with the connection (or gone): free its slot.
        drop(lease);
        let Some(control) = next else { return };
        if reuse.at_limit() || func.pool.is_closed() || reuse.retired().is_some() {
            // Closing its control connection unanswered tells the handler to exit.
            return;
        }
        match handoff::to_waiter(Slot::reuse(control, Arc::clone(&reuse)), &func) {
            // Served a waiting connection: wait for this one in turn.
            Ok(Handed::AwaitNext(_, next_lease)) => lease = next_lease,
            Ok(Handed::Done) => return,
            Err(slot) => {
                func.pool.push(slot);
                handoff::match_waiting(&func);
                return;
            }
        }
    }
}

/// The handler's next connect; `None` at its timeout or end.
async fn wait_reconnect(reuse: &Reuse) -> Option<std::os::unix::net::UnixStream> {
    let ended = reuse.ended.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    if reuse.gone.load(Ordering::Acquire) {
        return None;
    }
    let cached = reuse
        .watcher
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let listener = match cached
        .map(Ok)
        .unwrap_or_else(|| reuse.listener.try_clone().and_then(register))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "watching a reused container's control socket");
            reuse.retire("control socket");
            return None;
        }
    };
    let next = wait_on(reuse, &listener, ended).await;
    *reuse.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    next
}

async fn wait_on(
    reuse: &Reuse,
    listener: &AsyncFd<UnixListener>,
    mut ended: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> Option<std::os::unix::net::UnixStream> {
    let timeout = tokio::time::sleep(reuse.timeout);
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            ready = listener.readable() => {
                let Ok(mut ready) = ready else { return None };
                match ready.try_io(|l| l.get_ref().accept()) {
                    Ok(Ok((control, _))) => return Some(control),
                    Ok(Err(_)) => return None,
                    Err(_would_block) => continue,
                }
            }
            _ = &mut timeout => {
                reuse.retire("timeout");
                return None;
            }
            _ = &mut ended => return None,
        }
    }
}
