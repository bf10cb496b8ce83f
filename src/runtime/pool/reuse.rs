//! Reuse mode's per-connection cycle, kept off the control runtime: after
//! a hand-over, the thread that made it (a data-plane core, or the control
//! runtime after a cold start) waits for the handler to ask for its next
//! connection, frees the connection's concurrency slot, and gives the
//! container the oldest connection waiting for one (`handoff`) or puts it
//! back into the pool — or, past `--max-requests` or its timeout, lets it
//! go. The container's supervisor only hears of the rare events (kill,
//! end), so a reused connection costs it no wake-up.
//!
//! A handler asks for its next connection by writing one byte on the
//! control connection it already has (`faas-handler` does), or by closing
//! it and connecting to `/control.sock` again (the protocol's older form);
//! both are watched, and the connection that asked is the one the next
//! client socket goes down. The byte's value is how many connections the
//! handler takes in one message (1 to 16; any other value means 1): when
//! connections are waiting, a handler that takes several gets up to that
//! many at once, and serves them in turn before asking again.
//!
//! The cycle, for one container:
//!
//! ```text
//!   parked in the pool ──deliver()──▶ serving ──handler ready──┐
//!        ▲                                                     │
//!        └──── nobody waits ◀── a connection waits? ──yes──▶ serving
//!   (max requests, timeout, retired or gone: the container ends)
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::socket::{recv, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::runtime::fdpass;
use crate::runtime::fdpass::ControlConn;
use crate::runtime::reactor::register_owned;
use crate::sys::closer::Foreign;

/// Ready bytes peeked, or read, at most at once.
const PEEK: usize = 64;
/// Unread ready bytes are read once this many have piled up: one `recv`
/// for many requests (and one useless wake-up of the handler).
const READ_READY_AFTER: u32 = 32;

/// A reuse-mode container, shared by its supervisor and whoever serves it.
pub struct Reuse {
    /// The container's `/control.sock` listener (non-blocking), for
    /// handlers that connect again.
    listener: Foreign<UnixListener>,
    /// The listener on a reactor, registered once on whichever runtime
    /// first waits and kept: re-registering per connection costs syscalls.
    /// Taken out while waited on (one wait at a time).
    watcher: Mutex<Option<AsyncFd<Foreign<UnixListener>>>>,
    /// The handler's control connection, kept between connections.
    control: Mutex<Option<Kept>>,
    /// Ready bytes seen (peeked) and not read yet: see `send`. The control
    /// connection peeks from an offset (`watch_control`), so a peek sees
    /// only bytes that came after these.
    unread: AtomicU32,
    /// How many connections the handler takes at once, from its ready
    /// byte (1 to `fdpass::MAX_BATCH`; anything else means 1).
    batch: AtomicU8,
    pub(in crate::runtime) served: AtomicU32,
    max: u32,
    timeout: Duration,
    /// The claim flag of its slot in the pool, if it is there.
    claim: Mutex<Option<Arc<AtomicBool>>>,
    /// Set with a reason when the container must be killed.
    retired: Mutex<Option<&'static str>>,
    /// Wakes the supervisor (retired).
    pub(in crate::runtime) kill: Notify,
    /// The container ended: whoever waits for its next request stops.
    gone: AtomicBool,
    ended: Notify,
}

/// A control connection, on a reactor once somebody waited on it.
enum Kept {
    Plain(ControlConn),
    Watched(AsyncFd<ControlConn>),
}

impl Kept {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Kept::Plain(s) => s.as_fd(),
            Kept::Watched(w) => w.get_ref().as_fd(),
        }
    }

    fn watched(self) -> io::Result<AsyncFd<ControlConn>> {
        match self {
            Kept::Plain(s) => watch_control(s),
            Kept::Watched(w) => Ok(w),
        }
    }
}

/// Puts a control connection on the reactor, its peeks starting after the
/// bytes already peeked: a handler's unread ready bytes are separate
/// messages, and peeking all of them again for each new one cost the core
/// a fifth of its CPU under load (perf, wrk -c32).
fn watch_control(control: ControlConn) -> io::Result<AsyncFd<ControlConn>> {
    crate::sys::rawfd::peek_from_offset(&control)?;
    register_owned(control)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reuse {
    pub fn new(
        listener: Foreign<UnixListener>,
        control: ControlConn,
        max: u32,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            watcher: Mutex::new(None),
            control: Mutex::new(Some(Kept::Plain(control))),
            unread: AtomicU32::new(0),
            batch: AtomicU8::new(1),
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

    /// Sends `clients` down the handler's control connection. The ready
    /// bytes that asked for them are only peeked (`ask`) and read here, in
    /// bulk, right after a send: reading frees the handler's send buffer,
    /// which wakes everyone waiting on its socket — the handler itself,
    /// blocked in `recvmsg`, for nothing; after a send it is awake anyway.
    pub(in crate::runtime) fn send(&self, clients: &[BorrowedFd<'_>]) -> io::Result<()> {
        let control = lock(&self.control);
        let Some(kept) = control.as_ref() else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        fdpass::send_fds(kept.fd(), clients)?;
        let unread = self.unread.load(Ordering::Acquire);
        if unread >= READ_READY_AFTER {
            let mut bytes = [0u8; PEEK];
            let n = (unread as usize).min(PEEK);
            if let Ok(read) = fdpass::read_ready(kept.fd(), &mut bytes[..n]) {
                self.unread.store(unread - read as u32, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Closes the control connection: a handler waiting on it reads its
    /// end and exits.
    pub(in crate::runtime) fn hang_up(&self) {
        lock(&self.control).take();
    }

    pub(in crate::runtime) fn set_claim(&self, claim: Arc<AtomicBool>) {
        *lock(&self.claim) = Some(claim);
    }

    /// Takes its slot out of the pool if it is still there; true if so.
    pub(in crate::runtime) fn withdraw(&self) -> bool {
        let claim = lock(&self.claim).take();
        claim.is_some_and(|c| !c.swap(true, Ordering::AcqRel))
    }

    /// Asks the supervisor to kill the container.
    pub fn retire(&self, reason: &'static str) {
        lock(&self.retired).get_or_insert(reason);
        self.kill.notify_one();
    }

    pub(in crate::runtime) fn retired(&self) -> Option<&'static str> {
        *lock(&self.retired)
    }

    /// The container ended (called by its supervisor).
    pub(in crate::runtime) fn end(&self) {
        self.gone.store(true, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// How many connections to hand over at once.
    pub(in crate::runtime) fn batch(&self) -> usize {
        usize::from(self.batch.load(Ordering::Acquire))
    }

    pub(in crate::runtime) fn at_limit(&self) -> bool {
        self.max > 0 && self.served.load(Ordering::Acquire) >= self.max
    }
}

/// Waits until the handler asks for its next connection (true), or its
/// timeout passes or it ends (false).
pub(in crate::runtime) async fn wait_ready(reuse: &Reuse) -> bool {
    let ended = reuse.ended.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    if reuse.gone.load(Ordering::Acquire) {
        return false;
    }
    let kept = lock(&reuse.control).take().map(Kept::watched).transpose();
    let listener = lock(&reuse.watcher).take().map(Ok).unwrap_or_else(|| {
        let listener = reuse.listener.try_clone().map(Foreign::new);
        listener.and_then(register_owned)
    });
    let (mut kept, listener) = match (kept, listener) {
        (Ok(k), Ok(l)) => (k, l),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "watching a reused container's control socket");
            reuse.retire("control socket");
            return false;
        }
    };
    let timeout = tokio::time::sleep(reuse.timeout);
    tokio::pin!(timeout);
    let ready = loop {
        tokio::select! {
            asked = ask(kept.as_ref(), &reuse.unread) => match asked {
                Asked::Ready(batch) => {
                    reuse.batch.store(batch, Ordering::Release);
                    break true;
                }
                Asked::Closed => kept = None,
                Asked::Nothing => {}
            },
            accepted = listener.readable() => {
                let Ok(mut guard) = accepted else { break false };
                match guard.try_io(|l| l.get_ref().accept()) {
                    Ok(Ok((control, _))) => {
                        kept = watch_control(Foreign::endpoint(control)).ok();
                        reuse.batch.store(1, Ordering::Release);
                        reuse.unread.store(0, Ordering::Release);
                        break kept.is_some();
                    }
                    Ok(Err(_)) => break false,
                    Err(_would_block) => {}
                }
            }
            _ = &mut timeout => {
                reuse.retire("timeout");
                break false;
            }
            _ = &mut ended => break false,
        }
    };
    *lock(&reuse.watcher) = Some(listener);
    if ready {
        *lock(&reuse.control) = kept.map(Kept::Watched);
    }
    ready
}

enum Asked {
    /// The handler wrote its ready byte: it takes this many connections.
    Ready(u8),
    /// It closed the connection (it may connect again).
    Closed,
    /// A spurious wake-up.
    Nothing,
}

/// What a ready byte says: how many connections the handler takes at once.
fn batch_of(byte: u8) -> u8 {
    u8::try_from(fdpass::batch_of(byte)).unwrap_or(1)
}

/// The handler's word on its control connection (never, without one),
/// peeked: the peek starts after the `unread` bytes counted before, so
/// whatever it sees is new. They are read in bulk after a later send
/// (`Reuse::send`).
async fn ask(kept: Option<&AsyncFd<ControlConn>>, unread: &AtomicU32) -> Asked {
    let Some(kept) = kept else {
        return std::future::pending().await;
    };
    let Ok(mut guard) = kept.readable().await else {
        return Asked::Closed;
    };
    let mut bytes = [0u8; PEEK];
    let peeked = guard.try_io(|s| {
        let peek = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK;
        recv(s.get_ref().as_raw_fd(), &mut bytes, peek).map_err(io::Error::from)
    });
    match peeked {
        Ok(Ok(0)) => Asked::Closed,
        Ok(Ok(n)) => {
            unread.fetch_add(n as u32, Ordering::AcqRel);
            Asked::Ready(batch_of(bytes[n - 1]))
        }
        Ok(Err(_)) => Asked::Closed,
        // Nothing new (try_io cleared the readiness): the next edge.
        Err(_would_block) => Asked::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Each peek counts only the bytes written since the last one, and a
    /// bulk read of the counted bytes leaves later ones to be seen.
    #[test]
    fn a_peek_sees_only_new_ready_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut handler, faasd) = UnixStream::pair().expect("pair");
            faasd.set_nonblocking(true).expect("nonblocking");
            let kept = watch_control(Foreign::new(faasd)).expect("watch");
            let unread = AtomicU32::new(0);
            let mut asked = Vec::new();
            for byte in [3u8, 8, 200] {
                handler.write_all(&[byte]).expect("ready byte");
                asked.push(match ask(Some(&kept), &unread).await {
                    Asked::Ready(batch) => Some(batch),
                    _ => None,
                });
                assert!(
                    matches!(
                        tokio::time::timeout(Duration::from_millis(20), ask(Some(&kept), &unread))
                            .await,
                        Err(_) | Ok(Asked::Nothing)
                    ),
                    "no new byte, no ready"
                );
            }
            assert_eq!(asked, [Some(3), Some(8), Some(1)]);
            assert_eq!(unread.load(Ordering::Acquire), 3);
            let mut bytes = [0u8; 2];
            recv(kept.as_raw_fd(), &mut bytes, MsgFlags::MSG_DONTWAIT).expect("read two");
            handler.write_all(&[5]).expect("ready byte");
            assert!(matches!(ask(Some(&kept), &unread).await, Asked::Ready(5)));
        });
    }
}
