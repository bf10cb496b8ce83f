//! How far this node's view of the cluster has come: the etcd revision of
//! the last function record it applied (held back below a record it could
//! not serve), the cluster's id, and, while it does not follow etcd, why.
//! Reads that carry a revision (`faas` sends the last one it saw) and
//! changes that build on etcd's record wait here, bounded, until this node
//! has applied it: a write through one node is then seen by the next read
//! through any other.
//!
//! Only function records' revisions are handed out (a deploy's, an
//! update's, an rm's, and this view's own), and the watch delivers every
//! one of those in order, so reaching a revision needs no more than the
//! watch.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use super::ClusterError;

pub struct View {
    /// Every function record up to this revision has been seen and tried.
    watched: watch::Sender<i64>,
    /// ... and is served: `watched`, held below the first record this node
    /// could not serve (a read that carries a later revision must not be
    /// answered from the older state this node kept).
    applied: watch::Sender<i64>,
    /// Records this node could not serve: function → (revision, why).
    held: Mutex<BTreeMap<String, (i64, String)>>,
    /// Why this node does not follow etcd now (`None`: it does).
    cut_off: Mutex<Option<String>>,
    id: OnceLock<String>,
}

impl View {
    pub(super) fn new() -> Self {
        crate::metrics::cluster_following(false);
        Self {
            watched: watch::Sender::new(0),
            applied: watch::Sender::new(0),
            held: Mutex::new(BTreeMap::new()),
            cut_off: Mutex::new(Some("not yet in the cluster".into())),
            id: OnceLock::new(),
        }
    }

    /// The revision this node serves everything up to (0: none yet).
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// The revision this node has seen every record up to, served or not.
    pub(super) fn watched(&self) -> i64 {
        *self.watched.borrow()
    }

    /// The cluster this node joined (once it has).
    pub fn id(&self) -> Option<&str> {
        self.id.get().map(String::as_str)
    }

    pub(super) fn named(&self, id: &str) {
        let _ = self.id.set(id.to_string());
    }

    /// Every record up to `revision` has been tried here.
    pub(super) fn advance(&self, revision: i64) {
        self.watched.send_if_modified(|at| {
            let newer = revision > *at;
            *at = (*at).max(revision);
            newer
        });
        self.publish();
    }

    /// `name`'s record at `revision` could not be served here, for `why`.
    pub(super) fn hold(&self, name: &str, revision: i64, why: &str) {
        self.held_map()
            .insert(name.to_string(), (revision, why.to_string()));
        self.publish();
    }

    /// `name` serves its record, or the cluster removed it.
    pub(super) fn release(&self, name: &str) {
        if self.held_map().remove(name).is_some() {
            self.publish();
        }
    }

    fn held_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (i64, String)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self) {
        let watched = self.watched();
        let applied = self
            .held_map()
            .values()
            .map(|(at, _)| at - 1)
            .fold(watched, i64::min);
        self.applied.send_if_modified(|at| {
            let moved = *at != applied;
            if moved {
                *at = applied;
                crate::metrics::cluster_revision(applied);
            }
            moved
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

    /// Waits until everything up to `revision` is served here, at most
    /// `within`.
    pub async fn reach(&self, revision: i64, within: Duration) -> Result<(), ClusterError> {
        self.wait(&self.applied, revision, within).await
    }

    /// Waits until every record up to `revision` has been tried here.
    pub(super) async fn reach_watched(
        &self,
        revision: i64,
        within: Duration,
    ) -> Result<(), ClusterError> {
        self.wait(&self.watched, revision, within).await
    }

    async fn wait(
        &self,
        progress: &watch::Sender<i64>,
        revision: i64,
        within: Duration,
    ) -> Result<(), ClusterError> {
        let mut seen = progress.subscribe();
        let reached = tokio::time::timeout(within, seen.wait_for(|at| *at >= revision)).await;
        if let Ok(Ok(_)) = reached {
            return Ok(());
        }
        let at = *progress.borrow();
        let cut_off = self
            .cut_off
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let first_held = self
            .held_map()
            .iter()
            .filter(|(_, (r, _))| *r <= revision)
            .min_by_key(|(_, (r, _))| *r)
            .map(|(name, (r, why))| format!("it could not serve {name} at revision {r}: {why}"));
        let why = match (cut_off, first_held) {
            (Some(why), _) => format!("it lost etcd: {why}"),
            (None, Some(held)) => held,
            (None, None) => format!("still applying after {within:?}"),
        };
        Err(ClusterError::Behind {
            at,
            wanted: revision,
            why,
        })
    }
}
