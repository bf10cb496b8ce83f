//! The accept loop of one function: accept, get a container whose handler
//! is connected, hand the socket over, close ours. Failures are answered
//! with 502/504 and counted; the loop itself never stops for one of them.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::respond::{self, Status};
use super::FunctionRef;
use crate::runtime::{Runtime, RuntimeError};

/// Pause after EMFILE/ENFILE so a descriptor shortage does not spin.
const FD_BACKOFF: Duration = Duration::from_millis(100);

pub async fn run(
    listener: TcpListener,
    rt: Arc<Runtime>,
    func: FunctionRef,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((client, _)) => {
                tokio::spawn(handle(client, Arc::clone(&rt), Arc::clone(&func)));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                tracing::warn!(error = %e, "accept: out of file descriptors");
                tokio::time::sleep(FD_BACKOFF).await;
            }
            Err(e) => tracing::debug!(error = %e, "accept"),
        }
    }
}

async fn handle(client: TcpStream, rt: Arc<Runtime>, func: FunctionRef) {
    let func = func.load_full();
    let stats = Arc::clone(&func.stats);
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.inflight.fetch_add(1, Ordering::Relaxed);
    let failure = match rt.start(&func).await {
        Ok(ready) => {
            stats.cold_starts.fetch_add(1, Ordering::Relaxed);
            ready.hand_over(client.as_fd()).await.err()
        }
        Err(e) => Some(e),
    };
    match failure {
        None => {
            stats.handed_over.fetch_add(1, Ordering::Relaxed);
            drop(client);
        }
        Some(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(function = %func.name, error = %e, "request failed");
            let status = match e {
                RuntimeError::ShuttingDown => Status::ServiceUnavailable,
                ref e if e.is_timeout() => Status::GatewayTimeout,
                _ => Status::BadGateway,
            };
            respond::error(client, status, &e.to_string()).await;
        }
    }
    stats.inflight.fetch_sub(1, Ordering::Relaxed);
}
