//! The pulls under way, by function: what `GET /v1/functions/NAME/pull`
//! answers and `faas deploy --image` draws, layer by layer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::download::Progress;
use crate::api::name::FunctionName;
use crate::api::{LayerPull, PullProgress};

/// Each function's pull under way: its reference and its layers.
type Table = Arc<Mutex<HashMap<FunctionName, (String, Arc<Progress>)>>>;

#[derive(Default)]
pub struct Pulling(Table);

/// Shown until dropped.
pub struct Shown {
    all: Table,
    name: FunctionName,
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

impl Pulling {
    /// Shows `progress` as `name`'s pull of `reference` until the guard goes.
    pub fn show(&self, name: &FunctionName, reference: &str, progress: Arc<Progress>) -> Shown {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), (reference.to_string(), progress));
        Shown {
            all: Arc::clone(&self.0),
            name: name.clone(),
        }
    }

    pub fn get(&self, name: &FunctionName) -> Option<PullProgress> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (reference, progress) = all.get(name)?;
        let layers = progress
            .layers
            .iter()
            .map(|l| {
                let ended = l
                    .outcome
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(Result::is_ok);
                let state = match (l.fetched, ended, l.attempt.load(Ordering::Relaxed)) {
                    (false, _, _) => "here",
                    (true, Some(true), _) => "done",
                    (true, Some(false), _) => "failed",
                    (true, None, 0) => "waiting",
                    (true, None, _) => "downloading",
                };
                LayerPull {
                    digest: l.digest.clone(),
                    size: l.size,
                    bytes: l.done.load(Ordering::Relaxed),
                    state: state.into(),
                }
            })
            .collect();
        Some(PullProgress {
            reference: reference.clone(),
            layers,
        })
    }
}
