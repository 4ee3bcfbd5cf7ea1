//! The push deliveries of one integration as its user and operators see them: read newest first by
//! keyset (the cursor of the sync logs, [`LogCursor`]), and sent again on request ([`Store::retry_deliveries`]).
//!
//! Reads never return the lead's payload: a delivery names its lead by id only.

use chrono::{DateTime, Utc};
use crmsync_domain::DeliveryStatus;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::integrations::parse;
use crate::{LogCursor, Store, StoreError, begin_as};

/// A row of `push_deliveries` with its event's lead id and kind (never the lead's payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub lead_id: String,
    /// `lead.created` or `lead.updated`.
    pub event: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// Our own sentence of the last failure (never a CRM body), until the delivery succeeds.
    pub last_error: Option<String>,
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryRecord {
    /// The cursor that starts the page after this delivery.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// One page of deliveries, and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next_before: Option<LogCursor>,
}

pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.event_id, e.lead_id, e.event, d.status, d.attempts, \
     d.next_attempt_at, d.last_error, d.external_id, d.created_at, d.updated_at";

pub(crate) fn delivery_from_row(row: &tokio_postgres::Row) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: row.get(0),
        event_id: row.get(1),
        lead_id: row.get(2),
        event: row.get(3),
        status: parse::<DeliveryStatus>(row, 4)?,
        attempts: row.get(5),
        next_attempt_at: row.get(6),
        last_error: row.get(7),
        external_id: row.get(8),
        created_at: row.get(9),
        updated_at: row.get(10),
    })
}

/// Whether `user` has integration `id` (Row Level Security hides another user's).
async fn has_integration(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt("SELECT 1 FROM crm_integrations WHERE id = $1", &[&id])
        .await?
        .is_some())
}

impl Store {
    /// A page of the deliveries of `user`'s integration `integration` (of one status, if given),
    /// newest first (`created_at DESC, id DESC`), strictly after `before`, at most `limit` rows.
    /// `None` when `user` has no such integration.
    pub async fn deliveries(
        &self,
        user: Uuid,
        integration: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<LogCursor>,
        limit: u32,
    ) -> Result<Option<DeliveryPage>, StoreError> {
        let limit = limit.max(1);
        let fetch = i64::from(limit) + 1;
        let status = status.map(DeliveryStatus::as_str);
        let mut sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM push_deliveries d JOIN lead_events e ON e.id = d.event_id
              WHERE d.user_id = $1 AND d.integration_id = $2"
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user, &integration];
        if let Some(status) = status.as_ref() {
            params.push(status);
            sql.push_str(&format!(" AND d.status = ${}", params.len()));
        }
        if let Some(cursor) = before.as_ref() {
            params.push(&cursor.created_at);
            params.push(&cursor.id);
            sql.push_str(&format!(
                " AND (d.created_at, d.id) < (${}, ${})",
                params.len() - 1,
                params.len()
            ));
        }
        params.push(&fetch);
        sql.push_str(&format!(
            " ORDER BY d.created_at DESC, d.id DESC LIMIT ${}",
            params.len()
        ));

        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        if !has_integration(&tx, integration).await? {
            tx.commit().await?;
            return Ok(None);
        }
        let rows = tx.query(&sql, &params).await?;
        tx.commit().await?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if deliveries.len() > limit as usize {
            deliveries.truncate(limit as usize);
            deliveries.last().map(DeliveryRecord::cursor)
        } else {
            None
        };
        Ok(Some(DeliveryPage {
            deliveries,
            next_before,
        }))
    }

    /// Makes the `failed` deliveries of `user`'s integration `integration` `pending` again (with a fresh
    /// count of attempts: a user's retry starts afresh) and its waiting `pending` deliveries due now,
    /// leaving alone any delivery a processor holds at this moment (its lease). Returns how many
    /// deliveries it changed, or `None` when `user` has no such integration.
    pub async fn retry_deliveries(
        &self,
        user: Uuid,
        integration: Uuid,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        if !has_integration(&tx, integration).await? {
            tx.commit().await?;
            return Ok(None);
        }
        let changed = tx
            .execute(
                "UPDATE push_deliveries
                    SET status = 'pending', next_attempt_at = now(), updated_at = now(),
                        attempts = CASE WHEN status = 'failed' THEN 0 ELSE attempts END
                  WHERE user_id = $1 AND integration_id = $2
                    AND (status = 'failed'
                         OR (status = 'pending' AND next_attempt_at > now()
                             AND (leased_until IS NULL OR leased_until <= now())))",
                &[&user, &integration],
            )
            .await?;
        tx.commit().await?;
        Ok(Some(changed))
    }
}
