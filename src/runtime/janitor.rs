//! Cleanup that can wait: one thread at `SCHED_IDLE` removes what ended
//! containers and retired versions leave (runtime state, cgroups, bundles,
//! rootfs trees), so that work only ever runs on CPU time no connection
//! wants. Jobs run in order; each caller may await its job's result.

use std::io;
use std::thread::JoinHandle;

use crossbeam::channel::{unbounded, Sender};
use tokio::sync::oneshot;

use crate::sys::{self, Priority};

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the cleanup thread; cheap to clone.
#[derive(Clone)]
pub struct Janitor {
    tx: Sender<Job>,
}

impl Janitor {
    /// Starts the thread. It ends when every handle is gone.
    pub fn start() -> io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name("faasd-janitor".into())
            .spawn(move || {
                if let Err(e) = sys::set_priority(0, Priority::Idle) {
                    tracing::warn!(error = %e, "cleanup thread keeps normal priority");
                }
                for job in rx {
                    job();
                }
            })?;
        Ok((Self { tx }, thread))
    }

    /// Runs `job` on the cleanup thread; the result comes back through the
    /// receiver (dropped unread if nobody waits).
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        if let Err(unsent) = self.tx.send(job) {
            // The thread is gone (shutdown): do it here rather than never.
            (unsent.into_inner())();
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_in_order_at_idle_priority() {
        let (janitor, _thread) = Janitor::start().expect("start");
        let first = janitor.run(|| 1);
        let priority = janitor.run(|| sys::priority_of(0));
        assert_eq!(first.blocking_recv().expect("first"), 1);
        assert_eq!(
            priority.blocking_recv().expect("priority"),
            Some(Priority::Idle)
        );
    }
}
