//! Changes through this node under way, and the reads that must not see
//! them. A change is made here before etcd records it (`commit`), so
//! until etcd has decided, a read of that function through this node
//! answers the function as it was before the change: the state etcd
//! holds, which a refused change leaves as it is. The data plane is not
//! held back (see `docs/network.md`).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{Cluster, ClusterError};
use crate::api::name::FunctionName;
use crate::api::FunctionInfo;

/// Tries of a read before it settles for what it saw (a change began or
/// ended meanwhile each time): changes take etcd round trips, reads do
/// not, so more than a few in a row do not happen.
const TRIES: usize = 100;

#[derive(Default)]
pub(super) struct Flights {
    /// Changes begun and ended so far: a read that saw none between its
    /// two looks read a state no change was making or unmaking.
    moves: u64,
    /// Each function being changed: as it was before (`None`: new).
    before: BTreeMap<String, Option<FunctionInfo>>,
}

/// A change of one function through this node, under way: the change
/// lock held (by the caller's guard, dropped with this), and the function
/// marked until this is dropped.
pub(super) struct InFlight<'a> {
    pub(super) _one: tokio::sync::MutexGuard<'a, ()>,
    name: FunctionName,
    flights: &'a Mutex<Flights>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.flights);
        flights.moves += 1;
        flights.before.remove(self.name.as_str());
    }
}

fn lock(flights: &Mutex<Flights>) -> MutexGuard<'_, Flights> {
    flights.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Marks `name` as being changed, its state now kept for reads.
    pub(super) async fn take_off<'a>(
        &'a self,
        one: tokio::sync::MutexGuard<'a, ()>,
        name: &FunctionName,
    ) -> InFlight<'a> {
        let before = self.manager.inspect(name).await.ok();
        let mut flights = lock(&self.flights);
        flights.moves += 1;
        flights.before.insert(name.to_string(), before);
        InFlight {
            _one: one,
            name: name.clone(),
            flights: &self.flights,
        }
    }

    /// `name` as reads through this node see it.
    pub async fn function(&self, name: &FunctionName) -> Result<FunctionInfo, ClusterError> {
        let mut tries = 0;
        loop {
            let (moves, before) = {
                let flights = lock(&self.flights);
                (flights.moves, flights.before.get(name.as_str()).cloned())
            };
            if let Some(before) = before {
                return before.ok_or_else(|| not_found(name));
            }
            let now = self.manager.inspect(name).await;
            tries += 1;
            if lock(&self.flights).moves == moves || tries >= TRIES {
                return now.map_err(Into::into);
            }
        }
    }

    /// Every function as reads through this node see them.
    pub async fn functions(&self) -> Vec<FunctionInfo> {
        let mut tries = 0;
        loop {
            let moves = lock(&self.flights).moves;
            let mut all = self.manager.list().await;
            let flights = lock(&self.flights);
            tries += 1;
            if flights.moves != moves && tries < TRIES {
                continue;
            }
            all.retain(|f| !flights.before.contains_key(&f.name));
            all.extend(flights.before.values().flatten().cloned());
            all.sort_by(|a, b| a.name.cmp(&b.name));
            return all;
        }
    }
}

fn not_found(name: &FunctionName) -> ClusterError {
    crate::manager::ManagerError::NotFound(name.clone()).into()
}
