//! The shared listeners (`faasd --shared-listen`): many functions behind
//! one address, routed by the HTTP `Host` or the TLS `server_name` read
//! with `MSG_PEEK`, so the function receives the very socket, every byte
//! of it still unread, as on its own address.
//!
//! On a core: accept (TCP_DEFER_ACCEPT: the kernel hands over a
//! connection once its first bytes are there), one non-blocking peek, and
//! when that decides and the function has room, the same hand-over as on
//! the function's own address. Everything else (a head still arriving, a
//! function at its limit, an answer for a host nobody serves) continues on
//! the control runtime, so a slow or silent client never holds a core:
//! there further bytes are awaited (each peek starts where the last one
//! ended, `SO_PEEK_OFF`) until `--header-timeout` after the accept.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_uring::net::{TcpListener, TcpStream};

use super::listener::SHARED_DEFER_SECS;
use super::routes::Routes;
use super::sniff::{self, Protocol, Sniffed, PEEK_MAX};
use super::{Ctx, Inflight, Served};
use crate::api::name::FunctionName;
use crate::metrics::Outcome;
use crate::runtime::handoff;
use crate::runtime::respond::{self, Status};
use crate::runtime::Lease;
use crate::sys::closer::Foreign;
use crate::sys::rawfd;

/// Re-check a function's limit at least this often while a routed
/// connection waits for room (a wake-up may slip past).
const RECHECK: Duration = Duration::from_millis(20);

/// What `faasd --shared-listen`, `--default-host` and `--header-timeout` say.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    pub listen: Vec<SocketAddr>,
    /// The function that takes connections naming no host.
    pub default_host: Option<FunctionName>,
    pub header_timeout: Duration,
}

/// The routing state every core reads.
pub struct Shared {
    pub routes: ArcSwap<Routes<Arc<Served>>>,
    pub header_timeout: Duration,
}

impl Shared {
    pub fn new(header_timeout: Duration) -> Self {
        Self {
            routes: ArcSwap::from_pointee(Routes::default()),
            header_timeout,
        }
    }
}

/// Why a connection on a shared listener went to no function (the
/// `reason` of `faas_shared_unrouted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unrouted {
    UnknownHost,
    NoHost,
    Malformed,
    TooLarge,
    Timeout,
    Closed,
}

impl Unrouted {
    fn label(self) -> &'static str {
        match self {
            Unrouted::UnknownHost => "unknown_host",
            Unrouted::NoHost => "no_host",
            Unrouted::Malformed => "malformed",
            Unrouted::TooLarge => "too_large",
            Unrouted::Timeout => "timeout",
            Unrouted::Closed => "closed",
        }
    }
}

/// Accepts on one shared listener (one per core, SO_REUSEPORT) until it
/// is shut down.
pub(super) async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, accepts: metrics::Counter) {
    let mut peeked = vec![0u8; PEEK_MAX];
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                accepts.increment(1);
                route_now(stream, Instant::now(), &ctx, &mut peeked);
            }
            Err(e) => {
                if !super::core::accept_failed(&e).await {
                    return;
                }
            }
        }
    }
}

/// The fast path: what is there already decides, and the function has
/// room; anything else goes to `route_later`.
fn route_now(stream: TcpStream, accepted: Instant, ctx: &Arc<Ctx>, buf: &mut [u8]) {
    let fd = rawfd::uring_stream(&stream);
    let seen = rawfd::peek(fd, buf).unwrap_or(0);
    // Accepted without data, it was held back by the kernel for the
    // listener's deferral: that time counts against the header timeout.
    let connected = if seen == 0 {
        accepted
            .checked_sub(Duration::from_secs(u64::from(SHARED_DEFER_SECS)))
            .unwrap_or(accepted)
    } else {
        accepted
    };
    if seen > 0 {
        if let (_, Sniffed::Name(name)) = sniff::sniff(&buf[..seen]) {
            let routes = ctx.shared.routes.load();
            if let Some(served) = routes.lookup(&name) {
                if served.inflight() < served.func.load().options.concurrency {
                    super::core::dispatch(stream, Vec::new(), accepted, served, ctx);
                    return;
                }
            }
        }
    }
    let Ok(copy) = fd.try_clone_to_owned() else {
        return;
    };
    drop(stream);
    ctx.control.spawn(route_later(
        std::net::TcpStream::from(copy),
        connected,
        accepted,
        Arc::clone(ctx),
    ));
}

/// The slow path, on the control runtime: waits for the head until the
/// header deadline, routes it or answers why not.
async fn route_later(
    conn: std::net::TcpStream,
    connected: Instant,
    accepted: Instant,
    ctx: Arc<Ctx>,
) {
    let deadline = tokio::time::Instant::from_std(connected + ctx.shared.header_timeout);
    let conn = match watch_head(conn) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "shared listener: preparing a connection");
            return;
        }
    };
    let mut head = vec![0u8; PEEK_MAX];
    let mut len = 0;
    let (protocol, sniffed) = loop {
        let got = tokio::time::timeout_at(deadline, conn.peek(&mut head[len..])).await;
        match got {
            Err(_) => return count(Unrouted::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return count(Unrouted::Closed),
            Ok(Ok(n)) => len += n,
        }
        match sniff::sniff(&head[..len]) {
            (protocol, Sniffed::More) if len == PEEK_MAX => {
                return refuse(
                    conn,
                    protocol,
                    Unrouted::TooLarge,
                    "the request head is larger than 16 KiB",
                )
                .await;
            }
            (_, Sniffed::More) => continue,
            decided => break decided,
        }
    };
    let routes = ctx.shared.routes.load_full();
    let (served, why) = match &sniffed {
        Sniffed::Name(name) => (
            routes.lookup(name),
            format!("no function answers to host {name} here"),
        ),
        Sniffed::Nameless => (
            routes.default_route(),
            "the request names no host, and faasd has no --default-host".to_string(),
        ),
        Sniffed::Malformed(why) => {
            return refuse(conn, protocol, Unrouted::Malformed, why).await;
        }
        Sniffed::More => return,
    };
    let Some(served) = served else {
        let reason = match sniffed {
            Sniffed::Name(_) => Unrouted::UnknownHost,
            _ => Unrouted::NoHost,
        };
        return refuse(conn, protocol, reason, &why).await;
    };
    let Some(conn) = handler_ready(conn) else {
        return;
    };
    if wait_for_room(served, ctx.queue_timeout).await {
        deliver(conn, accepted, served, &ctx);
    } else {
        reject(conn, served).await;
    }
}

/// `conn` registered with the control runtime, each peek from where the
/// last one ended.
fn watch_head(conn: std::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    rawfd::set_peek_offset(&conn, 0)?;
    conn.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(conn)
}

/// The connection as a handler gets it: blocking, peeks from the start.
fn handler_ready(conn: tokio::net::TcpStream) -> Option<Foreign<std::net::TcpStream>> {
    let conn = conn.into_std().ok()?;
    rawfd::set_peek_offset(&conn, -1).ok()?;
    conn.set_nonblocking(false).ok()?;
    Some(Foreign::new(conn))
}

/// Waits while `served` is at its concurrency limit, up to the queue
/// deadline; whether there is room now.
async fn wait_for_room(served: &Arc<Served>, queue_timeout: Duration) -> bool {
    let deadline = Instant::now() + queue_timeout;
    loop {
        if served.inflight() < served.func.load().options.concurrency {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        served
            .held_back
            .store(true, std::sync::atomic::Ordering::Release);
        tokio::select! {
            _ = served.freed.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Hands a routed connection over, as the function's own listener would.
fn deliver(conn: Foreign<std::net::TcpStream>, accepted: Instant, served: &Arc<Served>, ctx: &Ctx) {
    let func = served.func.load_full();
    func.ledger.accepted();
    let lease: Lease = Box::new(Inflight::new(served));
    handoff::deliver(&ctx.rt, &func, conn.as_fd(), accepted, lease);
}

/// 503: the function stayed at its limit past the queue deadline.
async fn reject(conn: Foreign<std::net::TcpStream>, served: &Arc<Served>) {
    let func = served.func.load();
    func.ledger.accepted();
    func.ledger.failed(Outcome::Rejected);
    respond::error_std(
        conn,
        Status::ServiceUnavailable,
        "function is at its concurrency limit; try again",
    )
    .await;
}

/// Answers a connection no function takes: an HTTP error, or a TLS alert.
async fn refuse(conn: tokio::net::TcpStream, protocol: Protocol, reason: Unrouted, why: &str) {
    count(reason);
    tracing::debug!(reason = reason.label(), why, "shared listener: not routed");
    let _ = rawfd::set_peek_offset(&conn, -1);
    match protocol {
        Protocol::Http => {
            let status = match reason {
                Unrouted::Malformed => Status::BadRequest,
                Unrouted::TooLarge => Status::HeaderFieldsTooLarge,
                _ => Status::NotFound,
            };
            respond::send_and_close(conn, respond::render(status, why).as_bytes()).await;
        }
        Protocol::Tls => {
            let alert = match reason {
                Unrouted::Malformed | Unrouted::TooLarge => DECODE_ERROR,
                _ => UNRECOGNIZED_NAME,
            };
            // A fatal alert record, TLS 1.0 framing as before a version is
            // agreed.
            respond::send_and_close(conn, &[21, 3, 1, 0, 2, 2, alert]).await;
        }
    }
}

const UNRECOGNIZED_NAME: u8 = 112;
const DECODE_ERROR: u8 = 50;

fn count(reason: Unrouted) {
    crate::metrics::shared_unrouted(reason.label());
}
