//! Store operations of the sync paths: the per-integration sync lock, page commits (contacts and cursor
//! in one transaction), the row lock that makes token refreshes single-flight, credentials, and logs.

use chrono::{DateTime, Utc};
use crmsync_domain::{Contact, Provider};
use uuid::Uuid;

use super::tx::OwnedTx;
use super::{
    INTEGRATION_COLUMNS, IntegrationRecord, Store, StoreError, UpsertReport, begin_as,
    integration_from_row, upsert_contacts_in,
};
use crate::vault::Sealed;

/// Direction of a logged sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Pull,
    Push,
}

/// What started a logged sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Webhook,
    Schedule,
}

/// Outcome of a logged sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    Success,
    Failed,
    Skipped,
    Partial,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Webhook => "webhook",
            Trigger::Schedule => "schedule",
        }
    }
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Success => "success",
            LogStatus::Failed => "failed",
            LogStatus::Skipped => "skipped",
            LogStatus::Partial => "partial",
        }
    }
}

/// A row to add to `crm_sync_logs`. `error` must be our own sentence: never a secret or a CRM body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSyncLog {
    pub integration_id: Option<Uuid>,
    pub provider: Provider,
    pub direction: Direction,
    pub trigger: Trigger,
    pub status: LogStatus,
    pub lead_id: Option<String>,
    pub action: Option<String>,
    pub attempts: i32,
    pub metrics: Option<serde_json::Value>,
    pub error: Option<String>,
}

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

/// An integration row locked `FOR UPDATE` (token refresh): whoever waited for the lock reads the row
/// as the holder left it.
#[derive(Debug)]
pub struct LockedIntegration {
    tx: OwnedTx,
    pub record: IntegrationRecord,
}

impl LockedIntegration {
    /// Stores new credentials and releases the lock.
    pub async fn save_credentials(
        self,
        sealed: &Sealed,
        token_expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        set_credentials_in(
            &**self.tx.client()?,
            self.record.id,
            sealed,
            token_expires_at,
        )
        .await?;
        self.tx.commit().await
    }

    /// Releases the lock without changes.
    pub async fn release(self) -> Result<(), StoreError> {
        self.tx.commit().await
    }
}

async fn set_credentials_in(
    client: &impl tokio_postgres::GenericClient,
    id: Uuid,
    sealed: &Sealed,
    token_expires_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE crm_integrations
                SET credentials_ciphertext = $2, credentials_nonce = $3, credentials_key_version = $4,
                    token_expires_at = $5, updated_at = now()
              WHERE id = $1",
            &[&id, &sealed.ciphertext, &sealed.nonce.as_slice(), &sealed.key_version, &token_expires_at],
        )
        .await?;
    Ok(())
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

    /// Adds a log row (and, for a failure, remembers its sentence on the integration).
    pub async fn insert_sync_log(&self, user: Uuid, log: &NewSyncLog) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        insert_log_in(&tx, user, log).await?;
        if let (Some(id), LogStatus::Failed, Some(err)) =
            (log.integration_id, log.status, &log.error)
        {
            tx.execute(
                "UPDATE crm_integrations SET last_error = $2, updated_at = now() WHERE id = $1",
                &[&id, err],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Locks the integration row for a token refresh; `None` if it does not exist for `user`.
    pub async fn lock_integration(
        &self,
        user: Uuid,
        id: Uuid,
    ) -> Result<Option<LockedIntegration>, StoreError> {
        let tx = OwnedTx::begin_as(&self.pool, user).await?;
        let row = tx
            .client()?
            .query_opt(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1 FOR UPDATE"
                ),
                &[&id],
            )
            .await?;
        match row {
            Some(row) => Ok(Some(LockedIntegration {
                record: integration_from_row(&row)?,
                tx,
            })),
            None => {
                tx.commit().await?;
                Ok(None)
            }
        }
    }

    /// Replaces the sealed credentials (re-sealing after a key rotation).
    pub async fn set_credentials(
        &self,
        user: Uuid,
        id: Uuid,
        sealed: &Sealed,
        token_expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        set_credentials_in(&*tx, id, sealed, token_expires_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The integration of `user` with `provider`, if connected.
    pub async fn integration_by_provider(
        &self,
        user: Uuid,
        provider: Provider,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE provider = $1"),
                &[&provider.as_str()],
            )
            .await?;
        let record = row.as_ref().map(integration_from_row).transpose()?;
        tx.commit().await?;
        Ok(record)
    }

    /// Connects (or reconnects) `provider` for `user` with credentials sealed to `id`. A reconnect keeps
    /// the row (and its cursor and settings), replaces the credentials and makes it active again.
    /// Returns `None` if another integration id already holds the provider: seal to that id and retry.
    pub async fn connect_integration(
        &self,
        user: Uuid,
        id: Uuid,
        provider: Provider,
        auth_type: super::AuthType,
        sealed: &Sealed,
        token_expires_at: Option<DateTime<Utc>>,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                &format!(
                    "INSERT INTO crm_integrations
                        (id, user_id, provider, auth_type, credentials_ciphertext, credentials_nonce,
                         credentials_key_version, token_expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (user_id, provider) DO UPDATE SET
                        auth_type = EXCLUDED.auth_type,
                        credentials_ciphertext = EXCLUDED.credentials_ciphertext,
                        credentials_nonce = EXCLUDED.credentials_nonce,
                        credentials_key_version = EXCLUDED.credentials_key_version,
                        token_expires_at = EXCLUDED.token_expires_at,
                        status = 'active', consecutive_failures = 0, last_error = NULL, updated_at = now()
                     WHERE crm_integrations.id = EXCLUDED.id
                     RETURNING {INTEGRATION_COLUMNS}"
                ),
                &[
                    &id,
                    &user,
                    &provider.as_str(),
                    &auth_type.as_str(),
                    &sealed.ciphertext,
                    &sealed.nonce.as_slice(),
                    &sealed.key_version,
                    &token_expires_at,
                ],
            )
            .await?;
        let record = row.as_ref().map(integration_from_row).transpose()?;
        tx.commit().await?;
        Ok(record)
    }
}

impl Store {
    /// Every active integration of every user, least recently synced first: for the scheduled run,
    /// which works across users. Runs as the table owner (Row Level Security does not apply).
    pub async fn active_integrations_all(&self) -> Result<Vec<IntegrationRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE status = 'active'
                      ORDER BY last_sync_at NULLS FIRST, id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(integration_from_row).collect()
    }
}

pub(crate) async fn insert_log_in(
    tx: &deadpool_postgres::Transaction<'_>,
    user: Uuid,
    log: &NewSyncLog,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO crm_sync_logs
            (integration_id, user_id, provider, direction, trigger, status, lead_id, action, attempts,
             metrics, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &log.integration_id,
            &user,
            &log.provider.as_str(),
            &log.direction.as_str(),
            &log.trigger.as_str(),
            &log.status.as_str(),
            &log.lead_id,
            &log.action,
            &log.attempts,
            &log.metrics,
            &log.error,
        ],
    )
    .await?;
    Ok(())
}
