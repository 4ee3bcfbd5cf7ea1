//! The `crm_integrations` table: connecting and reconnecting (credentials always sealed), integrations
//! as their owner sees them (never the credentials: those columns are not even read), their settings,
//! disconnecting, the row lock that makes token refreshes single-flight, and the scheduled run's list.

use chrono::{DateTime, Utc};
use crmsync_domain::{AuthType, IntegrationStatus, Provider, Region};
use uuid::Uuid;

use crate::tx::OwnedTx;
use crate::vault::Sealed;
use crate::{Store, StoreError, begin_as};

/// A row of `crm_integrations`, credentials still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: Provider,
    pub auth_type: AuthType,
    pub sealed: Sealed,
    pub status: IntegrationStatus,
    pub auto_sync: bool,
    pub risk_threshold: i32,
    pub consecutive_failures: i32,
    pub sync_cursor: Option<serde_json::Value>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The region chosen for this integration; `None`: the CRM's default.
    pub phone_region: Option<Region>,
    /// The CRM's id of the account the credentials belong to, where the CRM tells it.
    pub account_id: Option<String>,
    /// When a sync last read the whole account.
    pub last_full_sync_at: Option<DateTime<Utc>>,
    /// Since when the CRM calls crmsync when the account's contacts change; `None`: polled only.
    pub live_since: Option<DateTime<Utc>>,
}

/// An integration as its owner sees it: the row of `crm_integrations` without its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationView {
    pub id: Uuid,
    pub provider: Provider,
    pub auth_type: AuthType,
    pub status: IntegrationStatus,
    pub auto_sync: bool,
    pub risk_threshold: i32,
    pub consecutive_failures: i32,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The region chosen for this integration; `None`: the CRM's default.
    pub phone_region: Option<Region>,
    /// When a complete read of the account (which detects deletions) last finished.
    pub last_full_sync_at: Option<DateTime<Utc>>,
    /// Since when the CRM calls crmsync when the account's contacts change; `None`: polled only.
    pub live_since: Option<DateTime<Utc>>,
}

/// A change of an integration's settings; `None` leaves a field as it is. Setting the status to
/// `active` also resets the count of consecutive failures. (A user may set `active` or `paused` only:
/// the route checks that.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntegrationPatch {
    pub auto_sync: Option<bool>,
    pub risk_threshold: Option<i32>,
    pub status: Option<IntegrationStatus>,
    pub phone_region: Option<Region>,
}

impl IntegrationPatch {
    pub fn is_empty(&self) -> bool {
        self.auto_sync.is_none()
            && self.risk_threshold.is_none()
            && self.status.is_none()
            && self.phone_region.is_none()
    }
}

/// A column holding one of the domain's wire names.
pub(crate) fn parse<T>(row: &tokio_postgres::Row, column: usize) -> Result<T, StoreError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    row.get::<_, &str>(column)
        .parse::<T>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) const INTEGRATION_COLUMNS: &str =
    "id, user_id, provider, auth_type, credentials_ciphertext, credentials_nonce,
    credentials_key_version, status, auto_sync, risk_threshold, consecutive_failures, sync_cursor,
    token_expires_at, last_sync_at, created_at, phone_region, account_id, last_full_sync_at, live_since";

pub(crate) fn integration_from_row(
    row: &tokio_postgres::Row,
) -> Result<IntegrationRecord, StoreError> {
    let provider = parse::<Provider>(row, 2)?;
    let auth_type = parse::<AuthType>(row, 3)?;
    let nonce: Vec<u8> = row.get(5);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| StoreError::Corrupt("credentials_nonce is not 12 bytes".into()))?;
    Ok(IntegrationRecord {
        id: row.get(0),
        user_id: row.get(1),
        provider,
        auth_type,
        sealed: Sealed {
            ciphertext: row.get(4),
            nonce,
            key_version: row.get(6),
        },
        status: parse(row, 7)?,
        auto_sync: row.get(8),
        risk_threshold: row.get(9),
        consecutive_failures: row.get(10),
        sync_cursor: row.get(11),
        token_expires_at: row.get(12),
        last_sync_at: row.get(13),
        created_at: row.get(14),
        phone_region: parse_opt(row, 15)?,
        account_id: row.get(16),
        last_full_sync_at: row.get(17),
        live_since: row.get(18),
    })
}

/// A nullable column holding one of the domain's wire names.
fn parse_opt<T>(row: &tokio_postgres::Row, column: usize) -> Result<Option<T>, StoreError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    row.get::<_, Option<&str>>(column)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
}

const VIEW_COLUMNS: &str = "id, provider, auth_type, status, auto_sync, risk_threshold, \
     consecutive_failures, last_sync_at, token_expires_at, last_error, created_at, phone_region, \
     last_full_sync_at, live_since";

fn view_from_row(row: &tokio_postgres::Row) -> Result<IntegrationView, StoreError> {
    let provider = parse::<Provider>(row, 1)?;
    let auth_type = parse::<AuthType>(row, 2)?;
    Ok(IntegrationView {
        id: row.get(0),
        provider,
        auth_type,
        status: parse(row, 3)?,
        auto_sync: row.get(4),
        risk_threshold: row.get(5),
        consecutive_failures: row.get(6),
        last_sync_at: row.get(7),
        token_expires_at: row.get(8),
        last_error: row.get(9),
        created_at: row.get(10),
        phone_region: parse_opt(row, 11)?,
        last_full_sync_at: row.get(12),
        live_since: row.get(13),
    })
}

impl Store {
    /// One integration of `user`, or `None` if it does not exist or belongs to someone else.
    pub async fn get_integration(
        &self,
        user: Uuid,
        id: Uuid,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1"),
                &[&id],
            )
            .await?;
        let record = row.as_ref().map(integration_from_row).transpose()?;
        tx.commit().await?;
        Ok(record)
    }

    /// All integrations of `user`, oldest first.
    pub async fn list_integrations(
        &self,
        user: Uuid,
    ) -> Result<Vec<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations ORDER BY created_at, id"
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(integration_from_row).collect()
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
    /// the row (and its cursor and settings), replaces the credentials and makes it active again; a
    /// reconnect to another CRM account (`account_id`, where the CRM tells it) starts its sync afresh:
    /// no cursor, and the previous account's records are no longer sources of any contact.
    /// Returns `None` if another integration id already holds the provider: seal to that id and retry.
    #[allow(clippy::too_many_arguments)]
    pub async fn connect_integration(
        &self,
        user: Uuid,
        id: Uuid,
        provider: Provider,
        auth_type: AuthType,
        sealed: &Sealed,
        token_expires_at: Option<DateTime<Utc>>,
        account_id: Option<&str>,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let switched: bool = tx
            .query_opt(
                "SELECT account_id IS NOT NULL AND $3::text IS NOT NULL AND account_id <> $3
                   FROM crm_integrations WHERE id = $1 AND provider = $2 FOR UPDATE",
                &[&id, &provider.as_str(), &account_id],
            )
            .await?
            .is_some_and(|r| r.get(0));
        if switched {
            tx.execute(
                "DELETE FROM contact_sources WHERE integration_id = $1",
                &[&id],
            )
            .await?;
            tracing::info!(provider = provider.as_str(), integration = %id, "reconnected to another CRM account; its sync starts afresh");
        }
        let row = tx
            .query_opt(
                &format!(
                    "INSERT INTO crm_integrations
                        (id, user_id, provider, auth_type, credentials_ciphertext, credentials_nonce,
                         credentials_key_version, token_expires_at, account_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id, provider) DO UPDATE SET
                        auth_type = EXCLUDED.auth_type,
                        credentials_ciphertext = EXCLUDED.credentials_ciphertext,
                        credentials_nonce = EXCLUDED.credentials_nonce,
                        credentials_key_version = EXCLUDED.credentials_key_version,
                        token_expires_at = EXCLUDED.token_expires_at,
                        account_id = COALESCE(EXCLUDED.account_id, crm_integrations.account_id),
                        sync_cursor = CASE WHEN $10 THEN NULL ELSE crm_integrations.sync_cursor END,
                        last_full_sync_at =
                            CASE WHEN $10 THEN NULL ELSE crm_integrations.last_full_sync_at END,
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
                    &account_id,
                    &switched,
                ],
            )
            .await?;
        let record = row.as_ref().map(integration_from_row).transpose()?;
        if record.is_some() {
            // Connected again: what waited for it goes out at once.
            crate::outbox::make_due_in(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    /// Sets the integration `needs_reauth` (the CRM refuses its credentials) with a sentence for the
    /// user. The scheduled run skips it until the user connects again.
    pub async fn mark_needs_reauth(
        &self,
        user: Uuid,
        id: Uuid,
        sentence: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        tx.execute(
            "UPDATE crm_integrations SET status = $2, last_error = $3, updated_at = now() WHERE id = $1",
            &[&id, &IntegrationStatus::NeedsReauth.as_str(), &sentence],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
    /// Every active integration of every user, least recently synced first: for the scheduled run,
    /// which works across users. Runs as the table owner (Row Level Security does not apply).
    pub async fn active_integrations_all(&self) -> Result<Vec<IntegrationRecord>, StoreError> {
        let conn = self.pool.get().await?;
        // Outside a transaction: one unnamed statement (safe through a transaction-mode pooler).
        let rows = conn
            .query_typed(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE status = 'active'
                      ORDER BY last_sync_at NULLS FIRST, id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(integration_from_row).collect()
    }
    /// The integrations of `user`, oldest first, without credentials.
    pub async fn integration_views(&self, user: Uuid) -> Result<Vec<IntegrationView>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let rows = tx
            .query(
                &format!("SELECT {VIEW_COLUMNS} FROM crm_integrations ORDER BY created_at, id"),
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(view_from_row).collect()
    }

    /// One integration of `user` without credentials; `None` if it does not exist or is someone
    /// else's.
    pub async fn integration_view(
        &self,
        user: Uuid,
        id: Uuid,
    ) -> Result<Option<IntegrationView>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {VIEW_COLUMNS} FROM crm_integrations WHERE id = $1"),
                &[&id],
            )
            .await?;
        tx.commit().await?;
        row.as_ref().map(view_from_row).transpose()
    }

    /// Applies `patch` to an integration of `user` in one statement and returns the result; `None`
    /// if it does not exist or is someone else's.
    pub async fn update_integration(
        &self,
        user: Uuid,
        id: Uuid,
        patch: &IntegrationPatch,
    ) -> Result<Option<IntegrationView>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let status = patch.status.map(IntegrationStatus::as_str);
        let region = patch.phone_region.map(|r| r.as_str().to_owned());
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE crm_integrations
                        SET auto_sync = COALESCE($2, auto_sync),
                            risk_threshold = COALESCE($3, risk_threshold),
                            status = COALESCE($4::text, status),
                            consecutive_failures =
                                CASE WHEN $4::text = 'active' THEN 0 ELSE consecutive_failures END,
                            phone_region = COALESCE($5, phone_region),
                            updated_at = now()
                      WHERE id = $1
                  RETURNING {VIEW_COLUMNS}"
                ),
                &[
                    &id,
                    &patch.auto_sync,
                    &patch.risk_threshold,
                    &status,
                    &region,
                ],
            )
            .await?;
        let view = row.as_ref().map(view_from_row).transpose()?;
        if view.is_some() && patch.status == Some(IntegrationStatus::Active) {
            // Resumed: what waited (paused, or in backoff) goes out at once.
            crate::outbox::make_due_in(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(view)
    }

    /// Deletes an integration of `user`, and with it its sealed credentials and pending deliveries.
    /// Its logs stay. `false` if it does not exist or is someone else's.
    pub async fn delete_integration(&self, user: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let n = tx
            .execute("DELETE FROM crm_integrations WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(n == 1)
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
