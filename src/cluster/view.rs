//! How far this node's view of the cluster has come: the etcd revision of
//! the last function record it applied, the cluster's id, and, while it
//! does not follow etcd, why. Reads that carry a revision (`faas` sends
//! the last one it saw) and changes that build on etcd's record wait here,
//! bounded, until this node has applied it: a write through one node is
//! then seen by the next read through any other.
//!
//! Only function records' revisions are handed out (a deploy's, an
//! update's, an rm's, and this view's own), and the watch delivers every
//! one of those in order, so reaching a revision needs no more than the
//! watch.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use super::ClusterError;

pub struct View {
    applied: watch::Sender<i64>,
    /// Why this node does not follow etcd now (`None`: it does).
    cut_off: Mutex<Option<String>>,
    id: OnceLock<String>,
}

impl View {
    pub(super) fn new() -> Self {
        crate::metrics::cluster_following(false);
        Self {
            applied: watch::Sender::new(0),
            cut_off: Mutex::new(Some("not yet in the cluster".into())),
            id: OnceLock::new(),
        }
    }

    /// The revision applied last (0: none yet).
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// The cluster this node joined (once it has).
    pub fn id(&self) -> Option<&str> {
        self.id.get().map(String::as_str)
    }

    pub(super) fn named(&self, id: &str) {
        let _ = self.id.set(id.to_string());
    }

    /// Everything up to `revision` is applied here.
    pub(super) fn advance(&self, revision: i64) {
        self.applied.send_if_modified(|at| {
            let newer = revision > *at;
            if newer {
                *at = revision;
                crate::metrics::cluster_revision(revision);
            }
            newer
        });
    }

    pub(super) fn follows(&self) {
        *self.cut_off.lock().unwrap_or_else(|p| p.into_inner()) = None;
        crate::metrics::cluster_following(true);
    }

    pub(super) fn lost(&self, why: String) {
        *self.cut_off.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        crate::metrics::cluster_following(false);
    }

    /// Waits until `revision` is applied here, at most `within`.
    pub async fn reach(&self, revision: i64, within: Duration) -> Result<(), ClusterError> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(within, applied.wait_for(|at| *at >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ClusterError::Behind {
                at: self.applied(),
                wanted: revision,
                why: self
                    .cut_off
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .map(|why| format!("it lost etcd: {why}"))
                    .unwrap_or_else(|| format!("still applying after {within:?}")),
            }),
        }
    }
}
