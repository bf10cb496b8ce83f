//! Deadlines inside `select!`: an optional deadline that, when absent,
//! never fires.

use std::time::Instant;

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
