//! The shared listeners (`faasd --shared-listen`): many functions behind
//! one address, routed by the HTTP `Host` or the TLS `server_name` read
//! with `MSG_PEEK`, so the function receives the very socket, every byte
//! of it still unread, as on its own address.
//!
//! On the listener's core: accept (TCP_DEFER_ACCEPT: the kernel hands over a
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
use tokio_uring::net::TcpListener;

use super::listener::SHARED_DEFER_SECS;
use super::routes::Routes;
use super::sniff::{self, Protocol, Sniffed, PEEK_MAX};
use super::{Ctx, Served};
use crate::api::name::FunctionName;
use crate::runtime::respond::{self, Status};
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

/// Accepts on one shared listener until it is shut down; behind each accept it takes what else waits, so a burst
/// reaches each function's handlers in few offers, as on its own address.
pub(super) async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, accepts: metrics::Counter) {
    let mut peeked = vec![0u8; PEEK_MAX];
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let accepted = Instant::now();
                let first = rawfd::uring_stream(&stream).try_clone_to_owned();
                drop(stream);
                let Ok(first) = first else {
                    continue;
                };
                let mut conns = vec![std::net::TcpStream::from(first)];
                conns.extend(super::listener::accept_queued(
                    rawfd::uring_listener(&listener),
                    super::handover::MAX_TAKEN,
                ));
                accepts.increment(conns.len() as u64);
                route_now(conns, accepted, &ctx, &mut peeked);
            }
            Err(e) => {
                if !super::handover::accept_failed(&e).await {
                    return;
                }
            }
        }
    }
}

/// The fast path: each connection whose first bytes already decide, for
/// a function with room, is handed over here (grouped by function); any
/// other goes on in `route_later`.
fn route_now(conns: Vec<std::net::TcpStream>, accepted: Instant, ctx: &Arc<Ctx>, buf: &mut [u8]) {
    let routes = ctx.shared.routes.load();
    let mut batches: Vec<(&Arc<Served>, Vec<std::net::TcpStream>)> = Vec::new();
    for conn in conns {
        let seen = rawfd::peek(conn.as_fd(), buf).unwrap_or(0);
        let served = match sniff::sniff(&buf[..seen]) {
            (_, Sniffed::Name(name) | Sniffed::Encrypted(Some(name))) => routes.lookup(&name),
            _ => None,
        };
        if let Some(served) = served {
            let i = match batches.iter().position(|(s, _)| Arc::ptr_eq(s, served)) {
                Some(i) => i,
                None => {
                    batches.push((served, Vec::new()));
                    batches.len() - 1
                }
            };
            let batch = &mut batches[i].1;
            let limit = served.func.load().options.concurrency;
            let taken = u32::try_from(batch.len()).unwrap_or(u32::MAX);
            if served.inflight().saturating_add(taken) < limit {
                batch.push(conn);
                continue;
            }
        }
        // Accepted without data, it was held back by the kernel for the
        // listener's deferral: that time counts against the header timeout.
        let connected = if seen == 0 {
            accepted
                .checked_sub(Duration::from_secs(u64::from(SHARED_DEFER_SECS)))
                .unwrap_or(accepted)
        } else {
            accepted
        };
        ctx.control
            .spawn(route_later(conn, connected, accepted, Arc::clone(ctx)));
    }
    for (served, conns) in batches {
        let mut conns = conns.into_iter();
        if let Some(first) = conns.next() {
            super::handover::deliver(first, conns.collect(), accepted, served, ctx);
        }
    }
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
        Sniffed::Encrypted(outer) => (
            outer
                .as_deref()
                .and_then(|name| routes.lookup(name))
                .or_else(|| routes.default_route()),
            "the hello's name is encrypted (ECH), and faasd has no --default-host".to_string(),
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
        super::handover::deliver(conn, Vec::new(), accepted, served, &ctx);
    } else {
        super::handover::reject(conn, served, &ctx);
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
fn handler_ready(conn: tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    let conn = conn.into_std().ok()?;
    rawfd::set_peek_offset(&conn, -1).ok()?;
    conn.set_nonblocking(false).ok()?;
    Some(conn)
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

/// Answers a connection no function takes: an HTTP error, or a TLS alert.
async fn refuse(conn: tokio::net::TcpStream, protocol: Protocol, reason: Unrouted, why: &str) {
    count(reason);
    tracing::debug!(reason = reason.label(), why, "shared listener: not routed");
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
