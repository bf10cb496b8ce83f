//! A waiting container as the data plane sees it: its handler's
//! `/control.sock` connection and what to do once a client socket went
//! down it. `Slot::hand_over` is the hot path's one syscall.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::reuse::Reuse;
use crate::runtime::fdpass;
use crate::runtime::fdpass::ControlConn;
use crate::sys::closer::Foreign;

/// Whatever the data plane wants kept alive while a connection is being
/// served (its concurrency slot); dropped when the container is done with it.
pub type Lease = Box<dyn std::any::Any + Send>;

/// A container waiting in the pool.
pub struct Slot {
    kind: Kind,
    /// Set by whoever takes the slot out of the pool first: the data plane
    /// (to use it) or its supervisor (it died or is retired).
    pub(super) claimed: Arc<AtomicBool>,
}

enum Kind {
    /// One-shot: the handler's control connection, and the supervisor
    /// waiting for the connection.
    Once(ControlConn, oneshot::Sender<Taken>),
    /// Reuse mode (the control connection is the container's): whoever
    /// hands over keeps the lease until the handler asks for the next
    /// connection (`handoff::await_next`); the supervisor is not woken per
    /// connection. `None` once used.
    Reuse(Option<Arc<Reuse>>),
}

/// What is left to do after a hand-over.
#[must_use = "a reuse-mode container must be followed to its next request"]
pub enum Handed {
    /// Nothing: the container's supervisor holds the lease.
    Done,
    /// Reuse mode: wait for the handler's next request, holding the lease.
    AwaitNext(Arc<Reuse>, Lease),
}

/// What a one-shot container's supervisor holds while it serves.
pub struct Taken {
    pub lease: Lease,
    /// Our own copy of the connection (the handler has the same socket),
    /// to answer the client if the handler dies before it took it.
    pub client: Option<Foreign<OwnedFd>>,
    /// The handler's control connection, the connection on its way down
    /// it: once the handler has read it, the copy goes.
    pub control: ControlConn,
}

impl Taken {
    /// Keeps a copy of `client` (not kept if that fails: only the
    /// answer to a silent death is lost).
    pub fn new(lease: Lease, client: BorrowedFd<'_>, control: ControlConn) -> Self {
        Self {
            lease,
            client: client.try_clone_to_owned().ok().map(Foreign::new),
            control,
        }
    }
}

/// The supervisor's side of a one-shot slot.
pub struct SlotWatch {
    pub handed: oneshot::Receiver<Taken>,
    claimed: Arc<AtomicBool>,
}

impl SlotWatch {
    /// Takes the slot back from the pool (the container died or is retired
    /// while waiting). False when the data plane took it first.
    pub fn withdraw(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }
}

impl Slot {
    /// Wraps a connected one-shot handler; the watch tells its supervisor
    /// when the slot is used (`Ok(taken)`) or dropped unused (`Err`).
    pub fn new(control: ControlConn) -> (Slot, SlotWatch) {
        let (tx, rx) = oneshot::channel();
        let claimed = Arc::new(AtomicBool::new(false));
        let slot = Slot {
            kind: Kind::Once(control, tx),
            claimed: Arc::clone(&claimed),
        };
        let watch = SlotWatch {
            handed: rx,
            claimed,
        };
        (slot, watch)
    }

    /// Wraps a reuse-mode handler ready for a connection. Dropped unused,
    /// it retires the container.
    pub fn reuse(reuse: Arc<Reuse>) -> Slot {
        let claimed = Arc::new(AtomicBool::new(false));
        reuse.set_claim(Arc::clone(&claimed));
        Slot {
            kind: Kind::Reuse(Some(reuse)),
            claimed,
        }
    }

    /// Takes the slot for a cold start's own connection: it never was
    /// in the pool, and no one else may take it out.
    pub fn claim(&self) {
        self.claimed.store(true, Ordering::Release);
    }

    /// Sends `client` to the waiting handler. On failure (the handler
    /// died) the lease comes back.
    pub fn hand_over(
        mut self,
        client: BorrowedFd<'_>,
        lease: Lease,
    ) -> Result<Handed, (Lease, io::Error)> {
        let sent = match &self.kind {
            Kind::Once(control, _) => fdpass::send_fd(control.as_fd(), client),
            Kind::Reuse(Some(reuse)) => reuse.send(&[client]),
            Kind::Reuse(None) => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        if let Err(e) = sent {
            return Err((lease, e));
        }
        match std::mem::replace(&mut self.kind, Kind::Reuse(None)) {
            Kind::Once(control, tx) => {
                // The supervisor may be gone only if the container already
                // ended; the handler has the socket either way.
                let _ = tx.send(Taken::new(lease, client, control));
                Ok(Handed::Done)
            }
            Kind::Reuse(Some(reuse)) => {
                reuse.served.fetch_add(1, Ordering::AcqRel);
                Ok(Handed::AwaitNext(reuse, lease))
            }
            Kind::Reuse(None) => Ok(Handed::Done),
        }
    }
}

impl Slot {
    /// How many connections its handler takes at once.
    pub fn batch(&self) -> usize {
        match &self.kind {
            Kind::Reuse(Some(reuse)) => reuse.batch(),
            _ => 1,
        }
    }

    /// Sends `clients` with their leases: one as `hand_over` does, or
    /// several in one message to a handler that takes them at once.
    pub fn hand_over_many(
        self,
        clients: &[BorrowedFd<'_>],
        mut leases: Vec<Lease>,
    ) -> Result<Handed, (Vec<Lease>, io::Error)> {
        if let ([client], 1) = (clients, leases.len()) {
            if let Some(lease) = leases.pop() {
                return self
                    .hand_over(*client, lease)
                    .map_err(|(lease, e)| (vec![lease], e));
            }
        }
        self.hand_over_batch(clients, leases)
    }

    /// Sends several clients in one message to a reuse-mode handler that
    /// takes them at once (`batch`); their leases are held together until
    /// it asks again. On failure the leases come back.
    pub fn hand_over_batch(
        mut self,
        clients: &[BorrowedFd<'_>],
        leases: Vec<Lease>,
    ) -> Result<Handed, (Vec<Lease>, io::Error)> {
        let Kind::Reuse(Some(reuse)) = std::mem::replace(&mut self.kind, Kind::Reuse(None)) else {
            return Err((leases, io::Error::from(io::ErrorKind::Unsupported)));
        };
        if let Err(e) = reuse.send(clients) {
            self.kind = Kind::Reuse(Some(reuse));
            return Err((leases, e));
        }
        let n = u32::try_from(clients.len()).unwrap_or(u32::MAX);
        reuse.served.fetch_add(n, Ordering::AcqRel);
        Ok(Handed::AwaitNext(reuse, Box::new(leases)))
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
