//! etcd calls tried again where that is safe. The client balances over
//! every member and goes on picking one that died until it notices, so a
//! call can fail at once for want of a connection while the others serve:
//! a read is tried again whenever etcd was unavailable, a change only when
//! it never left this node (no connection), as etcd's own Go client does.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Error, GetOptions, GetResponse, Txn, TxnResponse};

/// Tries in all, the pause between two, and how long after the first try
/// another may start.
const ATTEMPTS: u32 = 5;
const PAUSE: Duration = Duration::from_millis(50);
const BUDGET: Duration = super::REQUEST_TIMEOUT;

/// A read, tried again while etcd is unavailable.
pub(super) async fn read<T, F, Fut>(op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    again(op, unavailable).await
}

/// A change, tried again only if it was never sent.
pub(super) async fn write<T, F, Fut>(op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    again(op, never_sent).await
}

async fn again<T, F, Fut>(mut op: F, retry: fn(&Error) -> bool) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = std::time::Instant::now();
    let mut tries = 1;
    loop {
        match op().await {
            // Within one request's time: a connection that times out
            // rather than being refused is not tried five times over.
            Err(e) if tries < ATTEMPTS && started.elapsed() < BUDGET && retry(&e) => {
                tries += 1;
                tokio::time::sleep(PAUSE).await;
            }
            done => return done,
        }
    }
}

fn unavailable(e: &Error) -> bool {
    matches!(e, Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

/// No connection to the member picked: the request did not leave.
fn never_sent(e: &Error) -> bool {
    matches!(e, Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unavailable && s.message().contains("connect error"))
}

impl super::Cluster {
    /// A `get`, tried again while etcd is unavailable.
    pub(super) async fn get_again(
        &self,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Error> {
        read(|| {
            let (mut client, key, options) =
                (self.client.clone(), key.to_string(), options.clone());
            async move { client.get(key, options).await }
        })
        .await
    }

    /// A transaction, tried again if it was never sent.
    pub(super) async fn txn_again(&self, txn: Txn) -> Result<TxnResponse, Error> {
        write(|| {
            let (mut client, txn) = (self.client.clone(), txn.clone());
            async move { client.txn(txn).await }
        })
        .await
    }
}
