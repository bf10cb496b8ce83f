//! Our copy of a one-shot container's connection. It is kept to answer
//! the client (502, 504) for a handler that ends or hangs without a word,
//! and it goes as soon as that cannot happen any more: while we hold it,
//! the handler's own close is not the last one, so its client sees the
//! end of the answer only when we let go (and a corked answer, nginx's,
//! is not even sent until then).
//!
//! - A server behind `faas-init` (container port): once faas-init has
//!   read its connection's message it holds the connection until the
//!   server's accept takes it, and answers for a server that ends first;
//!   ours goes at once. A server that accepts and then hangs until its
//!   --timeout: the connection is taken back from it (pidfd_getfd, found
//!   through /proc by its inode) to answer 504 before it is killed.
//! - A handler that has the connection itself (faasd's protocol, stdio):
//!   once it has the connection, its first byte out is looked for closely
//!   for `FINE_FOR` (a small answer is out by then) and at the handler's
//!   end, then now and then; once one is out, the handler has said what
//!   it had to say and ours goes.
//!
//! The handler's read is seen on our side of the control connection: its
//! unread bytes drop to zero (SIOCOUTQ), which wakes epoll (EPOLLOUT).
//! The watch runs as a task of its own; the supervisor takes what is left
//! of the copy when the container ends.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::api::HandlerKind;
use crate::runtime::fdpass::ControlConn;
use crate::runtime::reactor::register_owned;
use crate::sys::rawfd;
use crate::sys::{self, closer::Foreign};

/// How often, and how long after the handler took the connection, its
/// first byte is looked for closely (on a blocking thread: tokio's timers
/// tick in milliseconds).
const FINE_FIRST: Duration = Duration::from_micros(10);
const FINE_MAX: Duration = Duration::from_micros(160);
const FINE_FOR: Duration = Duration::from_millis(3);
/// Then: the first look after the handler took it, and the ones after.
const FIRST_CHECK: Duration = Duration::from_millis(20);
const CHECK: Duration = Duration::from_millis(250);

/// When the copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Once faas-init has the connection (it answers from then on).
    WhenInitHasIt,
    /// Once the handler's first byte is out. `by_init`: faas-init reads
    /// the message and closes its end, placing the connection in the
    /// program itself; a handler of our protocol must still be there
    /// once it has read.
    WhenAnswered { by_init: bool },
}

impl Release {
    pub(super) fn of(kind: HandlerKind) -> Self {
        match kind {
            HandlerKind::ContainerPort(_) => Release::WhenInitHasIt,
            HandlerKind::Stdio => Release::WhenAnswered { by_init: true },
            HandlerKind::ControlSocket | HandlerKind::SocketActivation => {
                Release::WhenAnswered { by_init: false }
            }
        }
    }
}

/// The copy, shared by its watch and the supervisor.
pub(super) struct ClientCopy {
    fd: Arc<Mutex<Option<Foreign<OwnedFd>>>>,
    watch: Option<tokio::task::JoinHandle<()>>,
    /// The connection's socket inode, to find it again.
    inode: Option<u64>,
}

impl ClientCopy {
    pub(super) fn watch(
        fd: Option<Foreign<OwnedFd>>,
        control: ControlConn,
        release: Release,
    ) -> Self {
        let inode = fd
            .as_ref()
            .and_then(|c| nix::sys::stat::fstat(c.as_fd()).ok())
            .map(|st| st.st_ino);
        let fd = Arc::new(Mutex::new(fd));
        let watch = register_owned(control)
            .map_err(|e| tracing::debug!(error = %e, "watching a control connection"))
            .ok()
            .map(|control| tokio::spawn(watch(Arc::clone(&fd), control, release)));
        Self { fd, watch, inode }
    }

    /// What is left of the copy (the watch stops).
    pub(super) fn take(self) -> Option<Foreign<OwnedFd>> {
        if let Some(w) = &self.watch {
            w.abort();
        }
        lock(&self.fd).take()
    }

    /// The copy, or when it went, the connection as one of `procs` (the
    /// container's processes, still running) holds it.
    pub(super) fn take_back(self, procs: &[i32]) -> Option<Foreign<OwnedFd>> {
        let inode = self.inode;
        self.take()
            .or_else(|| inode.and_then(|inode| held_by(procs, inode)))
    }
}

/// A copy of socket `inode` from the first of `procs` holding it.
fn held_by(procs: &[i32], inode: u64) -> Option<Foreign<OwnedFd>> {
    let name = format!("socket:[{inode}]");
    procs.iter().find_map(|&pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let fd: i32 = fds.flatten().find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            (target.as_os_str() == name.as_str())
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })?;
        // The pid may have been reused since the listing: what we got is
        // checked to be the connection.
        let pidfd = sys::pidfd_open(pid).ok()?;
        let got = sys::pidfd_getfd(pidfd.as_fd(), fd).ok()?;
        let same = nix::sys::stat::fstat(got.as_fd()).is_ok_and(|st| st.st_ino == inode);
        same.then(|| Foreign::new(got))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn watch(
    copy: Arc<Mutex<Option<Foreign<OwnedFd>>>>,
    control: AsyncFd<ControlConn>,
    release: Release,
) {
    let by_init = match release {
        Release::WhenInitHasIt => true,
        Release::WhenAnswered { by_init } => by_init,
    };
    if !taken(&control, by_init).await {
        // Gone: one that answered before it went leaves nothing to cover
        // (the common case: a quick handler is done by the first look).
        let mut copy = lock(&copy);
        if copy.as_ref().is_some_and(sent) {
            copy.take();
        }
        return;
    }
    if release == Release::WhenInitHasIt {
        lock(&copy).take();
        return;
    }
    // Copies to look through from the blocking thread (closed by the
    // closer: either may be the last one).
    let peek = lock(&copy)
        .as_ref()
        .and_then(|c| c.as_fd().try_clone_to_owned().ok())
        .map(Foreign::new);
    let hangup = control
        .get_ref()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(Foreign::new);
    let (Some(peek), Some(hangup)) = (peek, hangup) else {
        return;
    };
    let mut answered = tokio::task::spawn_blocking(move || answered_soon(&peek, &hangup))
        .await
        .unwrap_or(false);
    let mut pause = FIRST_CHECK;
    while !answered {
        // The handler's end (it may have answered just before) or the
        // next look, whichever comes first.
        tokio::select! {
            ready = control.readable() => {
                if let Ok(mut ready) = ready {
                    ready.clear_ready();
                }
            }
            _ = tokio::time::sleep(pause) => pause = CHECK,
        }
        let copy = lock(&copy);
        answered = copy.as_ref().is_none_or(sent);
        if !answered && gone(control.get_ref()) {
            // Ended silent: the supervisor answers with the copy.
            return;
        }
        drop(copy);
    }
    lock(&copy).take();
}

/// Looks closely for the handler's first byte, for `FINE_FOR` after it
/// took the connection: every `FINE_FIRST`, twice as long each time up
/// to `FINE_MAX`, and at once when its control connection ends (most end
/// right after answering).
fn answered_soon(peek: &impl AsFd, control: &impl AsFd) -> bool {
    use nix::poll::{ppoll, PollFd, PollFlags};
    // Sleeps this short are otherwise stretched by the default 50 µs
    // timer slack.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let until = Instant::now() + FINE_FOR;
    let mut step = FINE_FIRST;
    loop {
        if sent(peek) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        let wait = step.min(until - now);
        // A hang-up is reported whatever is asked for.
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::empty())];
        let ended = ppoll(&mut fds, Some(wait.into()), None).is_ok_and(|n| n > 0);
        if ended {
            return sent(peek);
        }
        step = (step * 2).min(FINE_MAX);
    }
}

/// Whether the peer of `control` is gone.
fn gone(control: &impl AsFd) -> bool {
    !rawfd::peer_open(control.as_fd())
}

/// Whether anything went out on the connection (by whoever holds it).
fn sent(fd: &impl AsFd) -> bool {
    rawfd::bytes_sent(fd.as_fd()).is_some_and(|n| n > 0)
}

/// Waits until the handler has read the message on `control` (true), or
/// until it is gone (false: whether it read is not known: a peer that
/// closes drops what it did not read; the supervisor hears its end and
/// answers for a silent one). faas-init reads at once and closes its end
/// (`by_init`): a read is all there is to see.
async fn taken(control: &AsyncFd<ControlConn>, by_init: bool) -> bool {
    loop {
        let Ok(mut ready) = control.writable().await else {
            return false;
        };
        let fd = control.get_ref().as_fd();
        let unread = rawfd::unsent(fd).unwrap_or(1);
        let there = by_init || rawfd::peer_open(fd);
        match (unread, there) {
            (0, true) => return true,
            (_, false) => return false,
            // Woken before its read: the next change.
            _ => ready.clear_ready(),
        }
    }
}
