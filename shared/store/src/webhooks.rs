//! CRM webhooks in: the integrations whose CRM calls crmsync (the SHA-256 of the secret token in the
//! callback address, what was subscribed at the CRM, since when), and the deliveries already taken.

use chrono::{DateTime, Utc};
use crmsync_domain::Provider;
use uuid::Uuid;

use crate::integrations::{INTEGRATION_COLUMNS, IntegrationRecord, integration_from_row};
use crate::{Store, StoreError, begin_as};

impl Store {
    /// Marks the integration live: its CRM calls the address holding the token whose SHA-256 is
    /// `token_hash`, through the subscriptions `subscription` (kept for the disconnect). Returns
    /// whether the integration exists.
    pub async fn set_live(
        &self,
        user: Uuid,
        integration: Uuid,
        token_hash: &[u8; 32],
        subscription: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let n = tx
            .execute(
                "UPDATE crm_integrations
                    SET webhook_token_hash = $2, webhook_subscription = $3, live_since = now(),
                        updated_at = now()
                  WHERE id = $1",
                &[&integration, &token_hash.as_slice(), subscription],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Ends the integration's live updates: its token stops working at once. Returns what was
    /// subscribed at the CRM, for the caller to remove there.
    pub async fn clear_live(
        &self,
        user: Uuid,
        integration: Uuid,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                "UPDATE crm_integrations i
                    SET webhook_token_hash = NULL, webhook_subscription = NULL, live_since = NULL,
                        updated_at = now()
                   FROM (SELECT id, webhook_subscription FROM crm_integrations WHERE id = $1 FOR UPDATE) old
                  WHERE i.id = old.id
              RETURNING old.webhook_subscription",
                &[&integration],
            )
            .await?;
        tx.commit().await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// The integration of `provider` whose callback token hashes to `token_hash`, whoever owns it (the
    /// caller is a CRM, not a user). Runs as the table owner.
    pub async fn integration_by_webhook_token(
        &self,
        provider: Provider,
        token_hash: &[u8; 32],
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query_typed(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations
                      WHERE webhook_token_hash = $1 AND provider = $2"
                ),
                &[
                    (&token_hash.as_slice(), tokio_postgres::types::Type::BYTEA),
                    (&provider.as_str(), tokio_postgres::types::Type::TEXT),
                ],
            )
            .await?;
        rows.first().map(integration_from_row).transpose()
    }

    /// Records that the delivery `key` (the CRM's id of it) was taken. `false` when it was taken
    /// before: a replay or a retry, which changes nothing.
    pub async fn take_receipt(
        &self,
        user: Uuid,
        integration: Uuid,
        key: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let n = tx
            .execute(
                "INSERT INTO crm_webhook_receipts (integration_id, owner_id, receipt_key)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&integration, &user, &key],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Whether the delivery `key` was taken before.
    pub async fn receipt_taken(
        &self,
        user: Uuid,
        integration: Uuid,
        key: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM crm_webhook_receipts
                                 WHERE integration_id = $1 AND receipt_key = $2)",
                &[&integration, &key],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    /// Forgets the deliveries taken before `before`, for every user. Returns how many.
    pub async fn prune_receipts(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        Ok(conn
            .execute_typed(
                "DELETE FROM crm_webhook_receipts WHERE received_at < $1",
                &[(&before, tokio_postgres::types::Type::TIMESTAMPTZ)],
            )
            .await?)
    }
}
