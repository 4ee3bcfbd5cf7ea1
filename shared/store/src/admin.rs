//! What an operator does across users (the `crmsync-admin` command): count the credentials sealed per
//! key and re-seal those of the previous key, list and retry deliveries, list integrations by status,
//! reset a pull cursor.
//!
//! Like the scheduled run, these run as the connecting user (the table owner), so Row Level Security
//! does not apply. None of them returns credentials: a sealed value is read only to re-seal it, in the
//! transaction that writes it back.

use chrono::{DateTime, Utc};
use crmsync_domain::{DeliveryStatus, IntegrationStatus, Provider};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::deliveries::{DELIVERY_COLUMNS, delivery_from_row};
use crate::integrations::{INTEGRATION_COLUMNS, integration_from_row, parse};
use crate::sync::TRY_SYNC_LOCK;
use crate::vault::Vault;
use crate::{DeliveryRecord, Store, StoreError};

/// How many integrations hold credentials sealed by one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    /// The key's id (a fingerprint of the key, not the key).
    pub key_version: String,
    pub integrations: i64,
}

/// What re-sealing one integration's credentials did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// Sealed again with the current key.
    Resealed,
    /// Would have been re-sealed (a dry run): the credentials open with the previous key.
    WouldReseal,
    /// Not sealed by the previous key any more (re-sealed meanwhile, or reconnected): left alone.
    AlreadyCurrent,
    /// The integration was deleted meanwhile.
    Gone,
    /// The credentials do not open (the vault's sentence, never a value): left alone.
    Failed(String),
}

/// A delivery with whose it is and where it goes, for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminDelivery {
    pub delivery: DeliveryRecord,
    pub user_id: Uuid,
    pub integration_id: Uuid,
    pub provider: Provider,
    /// The status of the integration (a paused one's deliveries wait).
    pub integration_status: IntegrationStatus,
}

/// Which deliveries to list or retry; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub user: Option<Uuid>,
    pub integration: Option<Uuid>,
}

/// What an operator's retry of one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Made due now (a failed one `pending` again with a fresh count of attempts).
    Retried,
    /// Not retried: it is `delivered`, `skipped` or `superseded` (its status), or a processor holds
    /// it at this moment (`leased`).
    LeftAlone { leased: bool },
}

/// One delivery an operator's retry looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetriedDelivery {
    pub id: Uuid,
    pub integration_id: Uuid,
    /// The status before the retry.
    pub status: DeliveryStatus,
    pub integration_status: IntegrationStatus,
    pub outcome: RetryOutcome,
}

/// An integration as an operator sees it: no credentials, the id of the key that sealed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIntegration {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: Provider,
    pub status: IntegrationStatus,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_full_sync_at: Option<DateTime<Utc>>,
    pub key_version: String,
    pub created_at: DateTime<Utc>,
}

/// What resetting a pull cursor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorReset {
    /// Cleared; `had_cursor` says whether there was one (else nothing changed).
    Reset {
        user_id: Uuid,
        provider: Provider,
        had_cursor: bool,
    },
    /// A sync of the integration holds its lock: nothing changed (its next page would write the
    /// cursor back).
    Busy,
    /// No such integration.
    NotFound,
}

const ADMIN_INTEGRATION_COLUMNS: &str = "id, user_id, provider, status, consecutive_failures, \
     last_error, last_sync_at, last_full_sync_at, credentials_key_version, created_at";

fn admin_integration_from_row(row: &tokio_postgres::Row) -> Result<AdminIntegration, StoreError> {
    Ok(AdminIntegration {
        id: row.get(0),
        user_id: row.get(1),
        provider: parse(row, 2)?,
        status: parse(row, 3)?,
        consecutive_failures: row.get(4),
        last_error: row.get(5),
        last_sync_at: row.get(6),
        last_full_sync_at: row.get(7),
        key_version: row.get(8),
        created_at: row.get(9),
    })
}

/// `WHERE` conditions for `filter` on `push_deliveries d`, appended to `params`.
fn delivery_conditions<'a>(
    filter: &'a DeliveryFilter,
    status: &'a Option<&'static str>,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
) -> String {
    let mut sql = String::from("TRUE");
    if let Some(status) = status.as_ref() {
        params.push(status);
        sql.push_str(&format!(" AND d.status = ${}", params.len()));
    }
    if let Some(user) = filter.user.as_ref() {
        params.push(user);
        sql.push_str(&format!(" AND d.user_id = ${}", params.len()));
    }
    if let Some(integration) = filter.integration.as_ref() {
        params.push(integration);
        sql.push_str(&format!(" AND d.integration_id = ${}", params.len()));
    }
    sql
}

impl Store {
    /// Checks that the database answers and holds crmsync's tables.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.query_one("SELECT count(*) FROM crm_integrations WHERE false", &[])
            .await?;
        Ok(())
    }

    /// How many integrations each key sealed, most first.
    pub async fn credential_key_counts(&self) -> Result<Vec<KeyCount>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT credentials_key_version, count(*) FROM crm_integrations
                  GROUP BY credentials_key_version ORDER BY count(*) DESC, credentials_key_version",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyCount {
                key_version: r.get(0),
                integrations: r.get(1),
            })
            .collect())
    }

    /// Up to `limit` ids of integrations whose credentials key `key_version` sealed, in id order,
    /// after `after` (a keyset: the caller passes the last id of the previous batch).
    pub async fn integrations_sealed_with(
        &self,
        key_version: &str,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT id FROM crm_integrations
                  WHERE credentials_key_version = $1 AND ($2::uuid IS NULL OR id > $2)
                  ORDER BY id LIMIT $3",
                &[&key_version, &after, &limit.max(1)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Re-seals the credentials of integration `id` with `vault`'s current key if its previous key
    /// sealed them, in one transaction holding the row lock (`FOR UPDATE`, as a token refresh does),
    /// so a refresh running meanwhile is neither overwritten nor lost: it waits, or it went first and
    /// its credentials are re-read here. `dry_run` opens them and writes nothing.
    pub async fn reseal_credentials(
        &self,
        vault: &Vault,
        id: Uuid,
        dry_run: bool,
    ) -> Result<Resealed, StoreError> {
        let Some(previous) = vault.previous_key_version() else {
            return Ok(Resealed::AlreadyCurrent);
        };
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1 FOR UPDATE"
                ),
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(Resealed::Gone);
        };
        let record = integration_from_row(&row)?;
        if record.sealed.key_version != previous {
            tx.commit().await?;
            return Ok(Resealed::AlreadyCurrent);
        }
        let opened = match vault.open(record.id, record.provider, &record.sealed) {
            Ok(opened) => opened,
            Err(e) => {
                tx.commit().await?;
                return Ok(Resealed::Failed(e.to_string()));
            }
        };
        if dry_run {
            tx.commit().await?;
            return Ok(Resealed::WouldReseal);
        }
        let sealed = match vault.seal(record.id, record.provider, &opened.credentials) {
            Ok(sealed) => sealed,
            Err(e) => {
                tx.commit().await?;
                return Ok(Resealed::Failed(e.to_string()));
            }
        };
        // Same row, same credentials, same expiry: only the ciphertext, nonce and key id change.
        let n = tx
            .execute(
                "UPDATE crm_integrations
                    SET credentials_ciphertext = $2, credentials_nonce = $3,
                        credentials_key_version = $4, updated_at = now()
                  WHERE id = $1 AND credentials_key_version = $5",
                &[
                    &id,
                    &sealed.ciphertext,
                    &sealed.nonce.as_slice(),
                    &sealed.key_version,
                    &previous,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(if n == 1 {
            Resealed::Resealed
        } else {
            Resealed::AlreadyCurrent
        })
    }

    /// The deliveries of every user matching `filter`, newest first, at most `limit`.
    pub async fn admin_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: i64,
    ) -> Result<Vec<AdminDelivery>, StoreError> {
        let status = filter.status.map(DeliveryStatus::as_str);
        let limit = limit.max(1);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let conditions = delivery_conditions(filter, &status, &mut params);
        params.push(&limit);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, d.user_id, d.integration_id, i.provider, i.status
               FROM push_deliveries d
               JOIN lead_events e ON e.id = d.event_id
               JOIN crm_integrations i ON i.id = d.integration_id
              WHERE {conditions}
              ORDER BY d.created_at DESC, d.id DESC LIMIT ${}",
            params.len()
        );
        let conn = self.pool.get().await?;
        let rows = conn.query(&sql, &params).await?;
        rows.iter()
            .map(|row| {
                Ok(AdminDelivery {
                    delivery: delivery_from_row(row)?,
                    user_id: row.get(11),
                    integration_id: row.get(12),
                    provider: parse(row, 13)?,
                    integration_status: parse(row, 14)?,
                })
            })
            .collect()
    }

    /// Makes deliveries due now, as a user's retry does: a `failed` one `pending` again with a fresh
    /// count of attempts, a waiting `pending` one due now; never one a processor holds (its lease),
    /// nor one `delivered`, `skipped` or `superseded`. `ids` selects deliveries by id (every id must
    /// exist, else nothing changes and the unknown ids are the error); without ids, every `failed` or
    /// `pending` delivery matching `filter`. One transaction; returns what it found for each delivery.
    pub async fn admin_retry_deliveries(
        &self,
        ids: &[Uuid],
        filter: &DeliveryFilter,
    ) -> Result<Result<Vec<RetriedDelivery>, Vec<Uuid>>, StoreError> {
        let status = filter.status.map(DeliveryStatus::as_str);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conditions = delivery_conditions(filter, &status, &mut params);
        if ids.is_empty() {
            conditions.push_str(" AND d.status IN ('failed', 'pending')");
        } else {
            params.push(&ids);
            conditions.push_str(&format!(" AND d.id = ANY(${})", params.len()));
        }
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT d.id, d.integration_id, d.status, i.status,
                            d.leased_until IS NOT NULL AND d.leased_until > now()
                       FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                      WHERE {conditions}
                      ORDER BY d.created_at, d.id
                      FOR UPDATE OF d"
                ),
                &params,
            )
            .await?;
        let found: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let unknown: Vec<Uuid> = ids
            .iter()
            .filter(|id| !found.contains(id))
            .copied()
            .collect();
        if !unknown.is_empty() {
            tx.rollback().await?;
            return Ok(Err(unknown));
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut due = Vec::new();
        for row in &rows {
            let id: Uuid = row.get(0);
            let status: DeliveryStatus = parse(row, 2)?;
            let leased: bool = row.get(4);
            let retryable = matches!(status, DeliveryStatus::Failed | DeliveryStatus::Pending);
            let outcome = if retryable && !leased {
                due.push(id);
                RetryOutcome::Retried
            } else {
                RetryOutcome::LeftAlone { leased }
            };
            out.push(RetriedDelivery {
                id,
                integration_id: row.get(1),
                status,
                integration_status: parse(row, 3)?,
                outcome,
            });
        }
        tx.execute(
            "UPDATE push_deliveries
                SET status = 'pending', next_attempt_at = now(), updated_at = now(),
                    attempts = CASE WHEN status = 'failed' THEN 0 ELSE attempts END
              WHERE id = ANY($1)",
            &[&due],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(out))
    }

    /// The integrations of every user (of one status and one user, when given), oldest first,
    /// without credentials.
    pub async fn admin_integrations(
        &self,
        status: Option<IntegrationStatus>,
        user: Option<Uuid>,
    ) -> Result<Vec<AdminIntegration>, StoreError> {
        let status = status.map(IntegrationStatus::as_str);
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {ADMIN_INTEGRATION_COLUMNS} FROM crm_integrations
                      WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR user_id = $2)
                      ORDER BY created_at, id"
                ),
                &[&status, &user],
            )
            .await?;
        rows.iter().map(admin_integration_from_row).collect()
    }

    /// Clears the pull cursor of integration `id`, so that its next sync reads the whole account
    /// (and marks what it no longer holds as deleted). Takes the integration's sync lock for the
    /// moment, so a sync running now is not undone by this (`Busy`), nor this by it.
    pub async fn reset_sync_cursor(&self, id: Uuid) -> Result<CursorReset, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT user_id, provider, sync_cursor IS NOT NULL FROM crm_integrations
                  WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(CursorReset::NotFound);
        };
        let got: bool = tx.query_one(TRY_SYNC_LOCK, &[&id]).await?.get(0);
        if !got {
            tx.commit().await?;
            return Ok(CursorReset::Busy);
        }
        let had_cursor: bool = row.get(2);
        if had_cursor {
            tx.execute(
                "UPDATE crm_integrations SET sync_cursor = NULL, updated_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(CursorReset::Reset {
            user_id: row.get(0),
            provider: parse(&row, 1)?,
            had_cursor,
        })
    }
}
