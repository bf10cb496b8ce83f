//! Connections waiting for a function's busy reuse-mode containers, held
//! by our own descriptor until one comes back or a cold start takes them
//! (`handoff` serves them; the queue itself knows nothing of functions).

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::slot::Lease;
use crate::sys::closer::Foreign;

/// A connection not yet handed to a handler, held by our own descriptor.
pub struct Waiting {
    /// Blocking, as handlers expect (it is the same open file they get);
    /// closed by the closer, since a handler may have shaped it.
    pub client: Foreign<TcpStream>,
    pub accepted: Instant,
    pub lease: Lease,
}

/// Connections waiting for one of a function's reuse-mode containers,
/// oldest first. Served by returning containers and, past the scale-out
/// wait, by the watchdog; almost always from one core, so the lock is
/// uncontended.
#[derive(Default)]
pub struct Waiters {
    queue: Mutex<VecDeque<Waiting>>,
    /// Kept beside the queue, so an empty one is seen without the lock.
    len: AtomicUsize,
    /// A watchdog task runs.
    watched: AtomicBool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `waiting`; true when no watchdog runs yet (start one).
    pub(in crate::runtime) fn push(&self, waiting: Waiting) -> bool {
        self.lock().push_back(waiting);
        self.len.fetch_add(1, Ordering::AcqRel);
        !self.watched.swap(true, Ordering::AcqRel)
    }

    pub(in crate::runtime) fn push_front(&self, waiting: Waiting) {
        self.lock().push_front(waiting);
        self.len.fetch_add(1, Ordering::AcqRel);
    }

    pub(in crate::runtime) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// The oldest connection still waiting.
    pub(in crate::runtime) fn pop(&self) -> Option<Waiting> {
        if self.is_empty() {
            return None;
        }
        let popped = self.lock().pop_front();
        if popped.is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        popped
    }

    /// The oldest, if `due` says so of the moment it was accepted.
    pub(in crate::runtime) fn pop_if(&self, due: impl FnOnce(Instant) -> bool) -> Option<Waiting> {
        let mut queue = self.lock();
        let since = queue.front()?.accepted;
        if !due(since) {
            return None;
        }
        self.len.fetch_sub(1, Ordering::AcqRel);
        queue.pop_front()
    }

    pub(in crate::runtime) fn oldest(&self) -> Option<Instant> {
        self.lock().front().map(|w| w.accepted)
    }

    /// The watchdog's end: true if the queue is still empty once it has
    /// said it stops (a connection queued meanwhile started no other).
    pub(in crate::runtime) fn stop_watching(&self) -> bool {
        self.watched.store(false, Ordering::Release);
        fence(Ordering::SeqCst);
        self.is_empty() || self.watched.swap(true, Ordering::AcqRel)
    }
}
