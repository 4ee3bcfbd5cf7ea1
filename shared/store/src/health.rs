//! The numbers an operator watches across all users (the scheduled run reports them as metrics, and
//! the alarms of `template.yaml` fire on them): the push outbox's due and waiting deliveries, and the
//! integrations that need someone.

use crate::{Store, StoreError};

/// The outbox and the integrations, counted across users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Pending deliveries due now for an active integration (the scheduled run pushes them).
    pub outbox_due: i64,
    /// Pending deliveries waiting for a paused or `needs_reauth` integration (they go when it is
    /// resumed or reconnected).
    pub outbox_paused: i64,
    /// Integrations paused after repeated push failures.
    pub integrations_paused: i64,
    /// Integrations whose CRM refused their credentials (the user must reconnect).
    pub integrations_needs_reauth: i64,
}

impl Store {
    /// Counts [`Health`] across users, in one statement (the scheduled run's view).
    pub async fn health(&self) -> Result<Health, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT
                   (SELECT count(*) FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                     WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND i.status = 'active'),
                   (SELECT count(*) FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                     WHERE d.status = 'pending' AND i.status IN ('paused', 'needs_reauth')),
                   (SELECT count(*) FROM crm_integrations WHERE status = 'paused'),
                   (SELECT count(*) FROM crm_integrations WHERE status = 'needs_reauth')",
                &[],
            )
            .await?;
        Ok(Health {
            outbox_due: row.get(0),
            outbox_paused: row.get(1),
            integrations_paused: row.get(2),
            integrations_needs_reauth: row.get(3),
        })
    }
}
