//! The pull's writes: the per-integration sync lock, page commits (contacts and cursor in one
//! transaction) and the end of a sync (cursor, time and log in one transaction).

use crmsync_domain::Contact;
use uuid::Uuid;

use crate::contacts::{UpsertReport, upsert_contacts_in};
use crate::sync_logs::{NewSyncLog, insert_log_in};
use crate::tx::OwnedTx;
use crate::{Store, StoreError, begin_as};

/// Held while one sync of an integration runs: a transaction-scoped advisory lock, released on
/// [`SyncLease::release`], or when the connection closes if the holder dies.
#[derive(Debug)]
pub struct SyncLease {
    tx: OwnedTx,
}

impl SyncLease {
    pub async fn release(self) -> Result<(), StoreError> {
        self.tx.commit().await
    }
}

impl Store {
    /// Takes the sync lock of `integration_id`, or `None` if a sync of it is running.
    pub async fn try_lock_sync(
        &self,
        user: Uuid,
        integration_id: Uuid,
    ) -> Result<Option<SyncLease>, StoreError> {
        let tx = OwnedTx::begin_as(&self.pool, user).await?;
        let got: bool = tx
            .client()?
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('crmsync:sync:' || $1::uuid::text, 0))",
                &[&integration_id],
            )
            .await?
            .get(0);
        if got {
            Ok(Some(SyncLease { tx }))
        } else {
            tx.commit().await?;
            Ok(None)
        }
    }

    /// Upserts one page of contacts and saves the cursor, in one transaction: a sync that dies after
    /// this resumes after this page, and one that dies before it redoes the page.
    pub async fn commit_page(
        &self,
        user: Uuid,
        integration_id: Uuid,
        contacts: Vec<Contact>,
        cursor: &serde_json::Value,
    ) -> Result<UpsertReport, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let report = upsert_contacts_in(&tx, user, contacts).await?;
        let n = tx
            .execute(
                "UPDATE crm_integrations SET sync_cursor = $2, updated_at = now() WHERE id = $1",
                &[&integration_id, cursor],
            )
            .await?;
        if n != 1 {
            return Err(StoreError::Corrupt(
                "the integration disappeared during the sync".into(),
            ));
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Marks a sync finished: final cursor, `last_sync_at`, and its log row.
    pub async fn finish_sync(
        &self,
        user: Uuid,
        integration_id: Uuid,
        cursor: &serde_json::Value,
        log: &NewSyncLog,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        tx.execute(
            "UPDATE crm_integrations
                SET sync_cursor = $2, last_sync_at = now(), last_error = NULL, updated_at = now()
              WHERE id = $1",
            &[&integration_id, cursor],
        )
        .await?;
        insert_log_in(&tx, user, log).await?;
        tx.commit().await?;
        Ok(())
    }
}
