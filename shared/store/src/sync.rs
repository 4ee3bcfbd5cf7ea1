//! The pull's writes: the per-integration sync lock, page commits (contacts and cursor in one
//! transaction) and the end of a sync (cursor, time and log in one transaction).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::contacts::{SourceBatch, UpsertReport, mark_unseen_in, write_sources_in};
use crate::sync_logs::{NewSyncLog, insert_log_in};
use crate::tx::OwnedTx;
use crate::{Store, StoreError, begin_as};

/// Takes the sync lock of integration `$1` for the transaction, if no one holds it: one boolean.
pub(crate) const TRY_SYNC_LOCK: &str =
    "SELECT pg_try_advisory_xact_lock(hashtextextended('crmsync:sync:' || $1::uuid::text, 0))";

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
            .query_one(TRY_SYNC_LOCK, &[&integration_id])
            .await?
            .get(0);
        if got {
            Ok(Some(SyncLease { tx }))
        } else {
            tx.commit().await?;
            Ok(None)
        }
    }

    /// Writes records read outside a listing (the records a CRM webhook named, read back), in one
    /// transaction, leaving the sync's cursor alone. Takes no lock: a caller that may race a sync of the
    /// same integration holds its [`SyncLease`].
    pub async fn write_records(
        &self,
        user: Uuid,
        integration_id: Uuid,
        batch: SourceBatch,
    ) -> Result<UpsertReport, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let report = write_sources_in(&tx, user, integration_id, batch).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Writes one batch of records and saves the sync's state, in one transaction: a sync that dies
    /// after this resumes after this batch, and one that dies before it redoes the batch.
    pub async fn commit_page(
        &self,
        user: Uuid,
        integration_id: Uuid,
        batch: SourceBatch,
        cursor: &serde_json::Value,
    ) -> Result<UpsertReport, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let report = write_sources_in(&tx, user, integration_id, batch).await?;
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

    /// Marks a sync finished: final cursor, `last_sync_at`, and its log row (made by `log` from the
    /// number of records marked deleted). When the sync read the whole account (`complete_read`, the
    /// read's start), every record it did not see is marked deleted first, and `last_full_sync_at`
    /// is set. Returns how many records that marked deleted.
    pub async fn finish_sync(
        &self,
        user: Uuid,
        integration_id: Uuid,
        cursor: &serde_json::Value,
        complete_read: Option<DateTime<Utc>>,
        log: impl FnOnce(u64) -> NewSyncLog,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let deleted = match complete_read {
            Some(started) => mark_unseen_in(&tx, integration_id, started).await?,
            None => 0,
        };
        tx.execute(
            "UPDATE crm_integrations
                SET sync_cursor = $2, last_sync_at = now(), last_error = NULL, updated_at = now(),
                    last_full_sync_at = CASE WHEN $3 THEN now() ELSE last_full_sync_at END
              WHERE id = $1",
            &[&integration_id, cursor, &complete_read.is_some()],
        )
        .await?;
        insert_log_in(&tx, user, &log(deleted)).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
