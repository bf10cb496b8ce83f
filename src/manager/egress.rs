//! A function's egress rules follow its serving version: in place before
//! its first container starts, replaced when a version changes them,
//! gone at `rm`.

use std::sync::Arc;

use super::{Manager, ManagerError};
use crate::image::owners;
use crate::registry::FunctionRecord;

impl Manager {
    /// Puts `record`'s egress rules in place (or takes them away if it
    /// has none and `previous` had).
    pub(super) async fn egress_rules(
        &self,
        record: &FunctionRecord,
        previous: Option<&FunctionRecord>,
    ) -> Result<(), ManagerError> {
        if !record.options.egress {
            if previous.is_some_and(|p| p.options.egress) {
                self.forget_egress(record).await;
            }
            return Ok(());
        }
        let runtime = Arc::clone(&self.runtime);
        let slot = record.id_slot.unwrap_or_default();
        let allow = record.options.egress_allow.clone();
        tokio::task::spawn_blocking(move || runtime.egress.allow(slot, &allow))
            .await
            .map_err(|e| ManagerError::Io {
                op: "setting egress rules".into(),
                source: std::io::Error::other(e),
            })??;
        Ok(())
    }

    /// After a version failed to switch: the rules of the one that
    /// still serves (`previous`), or none.
    pub(super) async fn restore_egress(
        &self,
        failed: &FunctionRecord,
        previous: Option<&FunctionRecord>,
    ) {
        let restored = match previous {
            Some(p) => self.egress_rules(p, Some(failed)).await,
            None if failed.options.egress => {
                self.forget_egress(failed).await;
                Ok(())
            }
            None => Ok(()),
        };
        if let Err(e) = restored {
            tracing::warn!(function = %failed.name, error = %e, "restoring egress rules");
        }
    }

    pub(super) async fn forget_egress(&self, record: &FunctionRecord) {
        let runtime = Arc::clone(&self.runtime);
        let slot = record.id_slot.unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || runtime.egress.forget(slot)).await;
        tracing::debug!(function = %record.name, slot = owners::base(slot), "egress rules removed");
    }
}
