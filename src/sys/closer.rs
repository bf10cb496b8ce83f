//! Closing descriptors a container had its hands on, on a thread that
//! serves no one else.
//!
//! A container can make the last `close` of a descriptor wait in the
//! kernel, in whichever thread makes it: a TCP socket with `SO_LINGER` and
//! data its peer does not take waits up to the linger time
//! (`sk_stream_wait_close`), and a Unix socket's close releases every
//! descriptor still queued on it, each such a close in turn. A data-plane
//! core or a control worker waiting there stalls every function it serves.
//! So each descriptor a container could have shaped (a client connection
//! it was handed, its control connection and listener) is held as a
//! `Foreign`, whose drop hands it here instead of closing it in place.
//!
//! The closer thread clears a positive linger (the close then returns at
//! once and the kernel sends what is left on its own, as after any close
//! without linger; an abortive linger of 0 is kept: it never waits) and
//! closes. Where the kernel lets containers send descriptors, faasd's own
//! end of a Unix socket a container sends on (its control connection and
//! listener: `Foreign::endpoint`) is emptied first: what a container sent
//! and faasd never read (descriptors, where the kernel lacks
//! `SO_PASSRIGHTS`; connections not accepted) is taken out and released
//! the same way, rather than closed inside the socket's close, linger and
//! all. A close that waits anyway (the container set the
//! linger again between the two calls, or sent more than `DRAIN_BUDGET`)
//! is interrupted: a watchdog that sees one close outlast `STUCK` signals
//! the thread (`SIGURG`, caught by a no-op handler), which ends the
//! kernel's wait; the close completes and the socket finishes in the
//! background. Meanwhile every other close waits in the queue, whoever's:
//! hence the emptying, which keeps the queue moving.
//!
//! The queue is unbounded but holds descriptors only, so the descriptor
//! limit bounds it. `faas_closer_*` metrics count what was closed, the
//! lingers cleared and the waits interrupted.

use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// A close running longer than this is interrupted (seen on two ticks of
/// the watchdog: between one and two of these).
const STUCK: Duration = Duration::from_millis(50);
/// The signal that ends a close's wait. Ignored by default and never sent
/// by the kernel to a process that did not ask for it (`F_SETOWN`), so
/// catching it changes nothing else.
const WAKE: Signal = Signal::SIGURG;

/// Most descriptors one close takes out of Unix sockets' queues before
/// it closes them (the watchdog covers a container that sent more).
const DRAIN_BUDGET: usize = 4096;
/// How deep Unix sockets queued in Unix sockets are emptied (the kernel
/// refuses to pass them nested deeper than 4).
const DRAIN_DEPTH: u8 = 8;

/// Control sockets refuse descriptors (`SO_PASSRIGHTS` off): what a
/// container sends on them can hold none, and emptying them first would
/// only cost the closer four system calls per close.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Tells the closer that control sockets refuse descriptors (set once at
/// start, before any container runs).
pub fn descriptors_refused() {
    REFUSED.store(true, Ordering::Release);
}

/// A descriptor a container may also hold or may have shaped: dropping it
/// never closes it here, it goes to the closer.
#[derive(Debug)]
pub struct Foreign<T: Into<OwnedFd>> {
    inner: Option<T>,
    how: How,
}

/// What the closer does before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Clears a positive linger.
    Plain,
    /// Also empties the Unix socket's queue (faasd's only copy of its end).
    Endpoint,
    /// Taken out of such a queue: the container may hold it too, so it is
    /// emptied but not shut.
    Queued,
}

impl<T: Into<OwnedFd>> Foreign<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner: Some(inner),
            how: How::Plain,
        }
    }

    /// faasd's end of a Unix socket a container sends on, held nowhere
    /// else in faasd: at its close, what the container sent and faasd did
    /// not read is taken out first and released on its own (and the
    /// container can send no more). Never for a copy whose original is
    /// still in use: that would take its messages.
    pub fn endpoint(inner: T) -> Self {
        Self {
            inner: Some(inner),
            how: How::Endpoint,
        }
    }

    fn inner(&self) -> &T {
        // Only `drop` takes it out.
        self.inner.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<T: Into<OwnedFd>> Deref for Foreign<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.inner()
    }
}

impl<T: Into<OwnedFd> + AsFd> AsFd for Foreign<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner().as_fd()
    }
}

impl<T: Into<OwnedFd> + AsRawFd> AsRawFd for Foreign<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner().as_raw_fd()
    }
}

impl<T: Into<OwnedFd>> Drop for Foreign<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            submit(Job::Close(inner.into(), self.how));
        }
    }
}

/// Closes `fd` on the closer thread (here, if that thread cannot be had).
pub fn close(fd: OwnedFd) {
    submit(Job::Close(fd, How::Plain));
}

fn submit(job: Job) {
    match closer() {
        Some(c) => c.submit(job),
        None => job.run(),
    }
}

/// Starts the closer thread now (after the metrics recorder is installed,
/// so its counters are real); false if it cannot run.
pub fn start_now() -> bool {
    closer().is_some()
}

/// Waits until everything handed to the closer so far is closed, for at
/// most `within`; false if that was not long enough.
pub fn flush(within: Duration) -> bool {
    let Some(c) = closer() else { return true };
    let deadline = Instant::now() + within;
    let target = c.shared.sent.load(Ordering::Acquire);
    while c.shared.closed.load(Ordering::Acquire) < target {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

struct Closer {
    tx: Sender<Job>,
    shared: &'static Shared,
}

enum Job {
    Close(OwnedFd, How),
    /// A close without clearing the linger first: how a container that
    /// re-sets it in time makes the close wait (the watchdog's test).
    #[cfg(test)]
    Raw(OwnedFd),
}

/// What the closer thread and its watchdog share.
struct Shared {
    /// Descriptors handed over, and closed: equal when idle.
    sent: AtomicU64,
    closed: AtomicU64,
    /// The closer is inside a round of closes.
    busy: AtomicBool,
    /// Closes the watchdog interrupted.
    interrupted: AtomicU64,
    thread: OnceLock<Pthread>,
}

impl Closer {
    fn submit(&self, job: Job) {
        self.shared.sent.fetch_add(1, Ordering::AcqRel);
        if let Err(channel::SendError(job)) = self.tx.send(job) {
            // The closer thread is gone (it never ends by itself).
            self.shared.closed.fetch_add(1, Ordering::AcqRel);
            job.run();
        }
    }
}

impl Job {
    fn run(self) {
        match self {
            Job::Close(fd, how) => {
                let mut budget = DRAIN_BUDGET;
                release(fd, how, &mut budget, 0);
            }
            #[cfg(test)]
            Job::Raw(fd) => drop(fd),
        }
    }
}

static CLOSER: OnceLock<Option<Closer>> = OnceLock::new();

fn closer() -> Option<&'static Closer> {
    CLOSER.get_or_init(start).as_ref()
}

fn start() -> Option<Closer> {
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        sent: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        busy: AtomicBool::new(false),
        interrupted: AtomicU64::new(0),
        thread: OnceLock::new(),
    }));
    if let Err(e) = catch_wake() {
        tracing::warn!(error = %e, "closer: no handler for SIGURG; a lingering close could not be interrupted");
    }
    let (tx, rx) = channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("faasd-closer".into())
        .spawn(move || run(&rx, shared))
        .and_then(|_| {
            std::thread::Builder::new()
                .name("faasd-closer-watch".into())
                .spawn(move || watch(shared))
        });
    match spawned {
        Ok(_) => Some(Closer { tx, shared }),
        Err(e) => {
            tracing::error!(error = %e, "closer thread: closing foreign descriptors in place");
            None
        }
    }
}

fn run(rx: &Receiver<Job>, shared: &Shared) {
    let _ = shared.thread.set(pthread_self());
    // Woken right after a hand-over, at normal priority it preempted the
    // handler that had just got its connection (+50 µs on a warm hit's
    // p50, loadtest/ab.sh); nice 10 runs it beside, never starved.
    if let Err(e) = super::set_priority(0, super::Priority::Low) {
        tracing::debug!(error = %e, "closer: lowering its priority");
    }
    let closed = metrics::counter!(crate::metrics::CLOSER_CLOSED);
    while let Ok(job) = rx.recv() {
        shared.busy.store(true, Ordering::Release);
        let mut next = Some(job);
        while let Some(job) = next {
            job.run();
            closed.increment(1);
            shared.closed.fetch_add(1, Ordering::AcqRel);
            next = rx.try_recv().ok();
        }
        shared.busy.store(false, Ordering::Release);
    }
}

/// Interrupts a close that has not ended for a whole tick.
fn watch(shared: &Shared) {
    let interrupted = metrics::counter!(crate::metrics::CLOSER_INTERRUPTED);
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(STUCK);
        let closed = shared.closed.load(Ordering::Acquire);
        let stuck = shared.busy.load(Ordering::Acquire) && closed == last;
        last = closed;
        if !stuck {
            continue;
        }
        if let Some(&thread) = shared.thread.get() {
            tracing::warn!("closer: a close waited over {STUCK:?}; interrupting it");
            interrupted.increment(1);
            shared.interrupted.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = pthread_kill(thread, WAKE) {
                tracing::warn!(error = %e, "closer: signalling the closer thread");
            }
        }
    }
}

/// Closes `fd` without waiting for a lingering socket's peer, nor for
/// what an endpoint's queue holds (taken out while `budget` lasts, and
/// released so in turn, whatever Unix sockets among them emptied too).
fn release(fd: OwnedFd, how: How, budget: &mut usize, depth: u8) {
    clear_linger(&fd);
    let queued = match how {
        _ if depth >= DRAIN_DEPTH => Vec::new(),
        How::Plain => Vec::new(),
        How::Endpoint if REFUSED.load(Ordering::Acquire) => Vec::new(),
        How::Endpoint => drain(&fd, true, budget),
        How::Queued => drain(&fd, false, budget),
    };
    for inner in queued {
        release(inner, How::Queued, budget, depth + 1);
    }
    drop(fd);
}

/// Takes out what Unix socket `fd` holds: a listener's pending
/// connections, a connection's queued descriptors (`end`: faasd's own
/// end, shut for reading first, so its peer can send no more). Nothing
/// for any other kind of descriptor.
fn drain(fd: &OwnedFd, end: bool, budget: &mut usize) -> Vec<OwnedFd> {
    use nix::sys::socket::{
        accept4, getsockname, shutdown, AddressFamily, Shutdown, SockFlag, SockaddrLike,
    };
    let unix = getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
    let mut out = Vec::new();
    if !unix {
        return out;
    }
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    while *budget > 0 {
        let Ok(raw) = accept4(fd.as_raw_fd(), flags) else {
            break;
        };
        *budget -= 1;
        // SAFETY: accept4 just installed this descriptor; nothing else
        // refers to it.
        out.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    }
    if end {
        let _ = shutdown(fd.as_raw_fd(), Shutdown::Read);
    }
    let mut bytes = [0u8; 4096];
    while *budget > 0 {
        match faas_protocol::recv_fds(fd.as_fd(), &mut bytes, faas_protocol::Wait::No) {
            Ok(got) if got.bytes == 0 && got.fds.is_empty() => break,
            Ok(got) => {
                *budget = budget.saturating_sub(got.fds.len());
                out.extend(got.fds);
            }
            Err(_) => break,
        }
    }
    out
}

/// Clears a positive linger (an abortive one, 0, never waits: kept).
fn clear_linger(fd: &OwnedFd) {
    if let Ok(linger) = getsockopt(fd, sockopt::Linger) {
        if linger.l_onoff != 0 && linger.l_linger > 0 {
            let off = libc::linger {
                l_onoff: 0,
                l_linger: 0,
            };
            if setsockopt(&fd, sockopt::Linger, &off).is_ok() {
                metrics::counter!(crate::metrics::CLOSER_LINGER_CLEARED).increment(1);
            }
        }
    }
}

extern "C" fn on_wake(_: libc::c_int) {}

fn catch_wake() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_wake),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all, so it is async-signal-safe;
    // no other part of faasd installs a handler for this signal.
    unsafe { sigaction(WAKE, &action) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A connection whose peer takes nothing, with its send buffer full.
    fn stuffed() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let small: libc::c_int = 2048;
        setsockopt(&listener, sockopt::RcvBuf, &(small as usize)).expect("rcvbuf");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("nonblocking");
        let chunk = vec![b'x'; 64 * 1024];
        while (&ours).write(&chunk).is_ok() {}
        (ours, peer)
    }

    fn linger(sock: &TcpStream, secs: i32) {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: secs,
        };
        setsockopt(sock, sockopt::Linger, &l).expect("linger");
    }

    /// The tests share the one closer thread: one at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one() -> std::sync::MutexGuard<'static, ()> {
        ONE.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interrupted() -> u64 {
        closer()
            .map(|c| c.shared.interrupted.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    #[test]
    fn a_lingering_socket_closes_at_once() {
        let _one = one();
        let (ours, _peer) = stuffed();
        linger(&ours, 30);
        let before = interrupted();
        close(OwnedFd::from(ours));
        assert!(flush(Duration::from_secs(5)), "closer still busy");
        assert_eq!(interrupted(), before, "the close waited until interrupted");
    }

    #[test]
    fn an_abortive_linger_is_kept() {
        let _one = one();
        let (ours, mut peer) = stuffed();
        linger(&ours, 0);
        close(OwnedFd::from(ours));
        assert!(flush(Duration::from_secs(5)), "closer still busy");
        // A reset, not a FIN after the data: the peer's read fails.
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut sink = vec![0u8; 1 << 20];
        let mut outcome = Ok(1);
        while matches!(outcome, Ok(n) if n > 0) {
            outcome = std::io::Read::read(&mut peer, &mut sink);
        }
        assert_eq!(
            outcome.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
    }

    /// The watchdog's part: a close that waits despite everything (here:
    /// one made without clearing the linger) ends within a few ticks, not
    /// after the linger's 30 s.
    #[test]
    fn a_waiting_close_is_interrupted() {
        let _one = one();
        let before = interrupted();
        let c = closer().expect("closer thread");
        let (ours, _peer) = stuffed();
        linger(&ours, 30);
        let t0 = Instant::now();
        c.submit(Job::Raw(OwnedFd::from(ours)));
        assert!(flush(Duration::from_secs(10)), "the close still waits");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(interrupted() > before);
    }

    /// Where the kernel lets a container send descriptors over its control
    /// connection, faasd's end is emptied before its close: a lingering
    /// socket queued there (and one queued inside a Unix socket queued
    /// there) is released on its own, its linger cleared, and nothing
    /// waits for the watchdog.
    #[test]
    fn an_endpoint_is_emptied_before_its_close() {
        use std::os::unix::net::UnixStream;
        let _one = one();
        let before = interrupted();
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let (inner_ours, inner_theirs) = UnixStream::pair().expect("inner pair");
        let (lingering, _peer) = stuffed();
        linger(&lingering, 30);
        let (nested, _nested_peer) = stuffed();
        linger(&nested, 30);
        faas_protocol::send_fds(inner_theirs.as_fd(), &[nested.as_fd()]).expect("send nested");
        faas_protocol::send_fds(theirs.as_fd(), &[lingering.as_fd(), inner_ours.as_fd()])
            .expect("send");
        drop((lingering, nested, inner_ours, inner_theirs));
        let t0 = Instant::now();
        drop(Foreign::endpoint(ours));
        assert!(flush(Duration::from_secs(10)), "the close still waits");
        assert!(t0.elapsed() < STUCK, "{:?}", t0.elapsed());
        assert_eq!(interrupted(), before, "a close waited until interrupted");
        // The container can send no more on it.
        assert!(faas_protocol::send_ready(theirs.as_fd(), 1).is_ok_and(|sent| !sent));
    }

    #[test]
    fn foreign_descriptors_go_to_the_closer() {
        let _one = one();
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let before = closer().map(|c| c.shared.sent.load(Ordering::Acquire));
        drop(Foreign::new(a));
        let after = closer().map(|c| c.shared.sent.load(Ordering::Acquire));
        assert!(after > before, "{before:?} → {after:?}");
        assert!(flush(Duration::from_secs(5)));
    }
}
