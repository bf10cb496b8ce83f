//! One data-plane core: a thread running its own io_uring runtime
//! (tokio-uring, current-thread; its types are `!Send`, hence one per
//! core). It owns the accept loops of the listeners sharded to it, takes
//! commands from the control side over a channel, and hands each accepted
//! connection to the runtime (`handover::dispatch`: the hot path is
//! `handoff::deliver`, one `sendmsg` to a waiting container, which also
//! decides a cold start for a connection none can take).
//!
//! Under load connections queue in the kernel faster than one accept at a
//! time takes them: behind each accept the loop takes what else waits
//! (up to `MAX_TAKEN`, within the limit) and offers them together, so a
//! handler that takes several gets them in one message.
//!
//! The accept loop enforces the function's concurrency limit: at the limit
//! it stops taking connections, so they wait in the kernel's backlog; one
//! connection at most is held here meanwhile, and a connection that has
//! waited longer than the queue deadline is answered 503.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_uring::net::{TcpListener, TcpStream};

use super::handover::{accept_failed, dispatch, MAX_TAKEN};
use super::{Command, Ctx, Served};
use crate::sys::rawfd;
use crate::sys::timer::sleep_until_opt;

/// Re-check the limit at least this often (a wake-up may slip past us).
const RECHECK: Duration = Duration::from_millis(20);
const RING_ENTRIES: u32 = 256;
/// Thread body: builds the ring, reports whether that worked, serves commands.
pub(super) fn run(
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Command>,
    ctx: Arc<Ctx>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let mut ring = tokio_uring::uring_builder();
    // Completions are reaped when we next enter the kernel anyway; not
    // interrupting the task for each one is measurably faster.
    ring.setup_coop_taskrun();
    let runtime = match tokio_uring::Runtime::new(
        tokio_uring::builder()
            .entries(RING_ENTRIES)
            .uring_builder(&ring),
    ) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(async move {
        let mut releases: HashMap<crate::api::name::FunctionName, Vec<watch::Sender<bool>>> =
            HashMap::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Listen {
                    name,
                    listener,
                    served,
                } => {
                    let (release_tx, release_rx) = watch::channel(false);
                    releases.entry(name).or_default().push(release_tx);
                    let listener = TcpListener::from_std(listener);
                    let accepts = crate::metrics::core_accepts(index);
                    tokio_uring::spawn(accept_loop(
                        listener,
                        served,
                        Arc::clone(&ctx),
                        release_rx,
                        accepts,
                    ));
                }
                Command::Release { name } => {
                    if let Some(senders) = releases.remove(&name) {
                        for s in senders {
                            s.send_replace(true);
                        }
                    }
                }
                Command::Shared { listener } => {
                    let listener = TcpListener::from_std(listener);
                    let accepts = crate::metrics::core_accepts(index);
                    tokio_uring::spawn(super::shared::accept_loop(
                        listener,
                        Arc::clone(&ctx),
                        accepts,
                    ));
                }
                Command::Stop => break,
            }
        }
        tracing::debug!(core = index, "data-plane core stopping");
    });
}

type AcceptFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<(TcpStream, std::net::SocketAddr)>> + 'a>>;

/// A connection taken while the function was at its limit.
struct Held {
    stream: TcpStream,
    accepted: Instant,
    /// When it stops being worth serving.
    deadline: Instant,
}

async fn accept_loop(
    listener: TcpListener,
    served: Arc<Served>,
    ctx: Arc<Ctx>,
    release: watch::Receiver<bool>,
    accepts: metrics::Counter,
) {
    // An accept in flight is never dropped: dropping it would leave the
    // operation in the ring and lose the connection it accepts.
    let mut accepting: Option<AcceptFuture<'_>> = None;
    let mut held: Option<Held> = None;
    // Connections can only have queued long if the limit was hit lately;
    // otherwise asking the kernel (TCP_INFO) would be a wasted syscall.
    let mut last_saturated: Option<Instant> = None;
    loop {
        let limit = served.func.load().options.concurrency;
        let saturated = served.inflight() >= limit;
        // Checked again each loop and with a timer, so a wake-up that races
        // with setting this is only late, never lost.
        served
            .held_back
            .store(saturated, std::sync::atomic::Ordering::Release);
        if saturated {
            last_saturated = Some(Instant::now());
        }
        let queued_recently = last_saturated.is_some_and(|t| t.elapsed() < ctx.queue_timeout);
        if !saturated {
            if let Some(h) = held.take() {
                dispatch(h.stream, Vec::new(), h.accepted, &served, &ctx);
                continue;
            }
        }
        let want_accept = !saturated || held.is_none();
        if want_accept && accepting.is_none() {
            accepting = Some(Box::pin(listener.accept()));
        }
        let held_deadline = held.as_ref().map(|h| h.deadline);
        tokio::select! {
            accepted = poll_opt(&mut accepting), if want_accept => {
                accepting = None;
                match accepted {
                    Ok((stream, _)) => {
                        accepts.increment(1);
                        let accepted = Instant::now();
                        if let Some(stream) = admit(stream, saturated, queued_recently, &mut held, &served, &ctx) {
                            // After a recent wait at the limit, queued
                            // connections need admit's deadline check.
                            let more = if queued_recently {
                                Vec::new()
                            } else {
                                take_queued(&listener, &served, limit)
                            };
                            accepts.increment(more.len() as u64);
                            dispatch(stream, more, accepted, &served, &ctx);
                        }
                        if *release.borrow() {
                            // Moved to another core: a connection held back
                            // here is served rather than dropped.
                            if let Some(h) = held.take() {
                                dispatch(h.stream, Vec::new(), h.accepted, &served, &ctx);
                            }
                            return;
                        }
                    }
                    Err(e) => {
                        if !accept_failed(&e).await {
                            // The socket was closed for good (rm, shutdown).
                            if let Some(h) = held.take() {
                                reject(h.stream, &served, &ctx);
                            }
                            return;
                        }
                    }
                }
            }
            _ = served.freed.notified(), if saturated => {}
            _ = tokio::time::sleep(RECHECK), if saturated => {}
            _ = sleep_until_opt(held_deadline), if held_deadline.is_some() => {
                if let Some(h) = held.take() {
                    reject(h.stream, &served, &ctx);
                }
            }
        }
    }
}

/// Decides what happens to a fresh connection: rejected if it already
/// waited past the deadline, held if the function is at its limit,
/// otherwise returned for dispatch.
fn admit(
    stream: TcpStream,
    saturated: bool,
    queued_recently: bool,
    held: &mut Option<Held>,
    served: &Arc<Served>,
    ctx: &Arc<Ctx>,
) -> Option<TcpStream> {
    let waited = if saturated || queued_recently {
        rawfd::idle_in_kernel(rawfd::uring_stream(&stream)).unwrap_or_default()
    } else {
        Duration::ZERO
    };
    if waited >= ctx.queue_timeout {
        reject(stream, served, ctx);
        return None;
    }
    if saturated {
        *held = Some(Held {
            stream,
            accepted: Instant::now(),
            deadline: Instant::now() + (ctx.queue_timeout - waited),
        });
        return None;
    }
    Some(stream)
}

/// What else waits in `listener`'s queue behind a connection just
/// accepted, as much as the function's limit leaves room for.
fn take_queued(listener: &TcpListener, served: &Served, limit: u32) -> Vec<std::net::TcpStream> {
    let room = limit.saturating_sub(served.inflight().saturating_add(1));
    let room = usize::try_from(room).unwrap_or(usize::MAX).min(MAX_TAKEN);
    super::listener::accept_queued(rawfd::uring_listener(listener), room)
}

/// Answers 503: the connection waited past the queue deadline.
fn reject(stream: TcpStream, served: &Arc<Served>, ctx: &Arc<Ctx>) {
    let Ok(client) = rawfd::uring_stream(&stream).try_clone_to_owned() else {
        return;
    };
    super::handover::reject(client.into(), served, ctx);
}

async fn poll_opt(
    fut: &mut Option<AcceptFuture<'_>>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match fut.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
