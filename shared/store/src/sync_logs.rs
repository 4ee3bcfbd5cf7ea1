//! The `crm_sync_logs` table: a row per sync and per push outcome, written as the user it belongs to, and
//! read newest first by keyset.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use crmsync_domain::{Direction, LogStatus, Provider, Trigger};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{Store, StoreError, begin_as};

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

/// A row of `crm_sync_logs`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncLogRecord {
    pub id: Uuid,
    pub integration_id: Option<Uuid>,
    pub provider: Provider,
    pub direction: String,
    pub trigger: String,
    pub status: String,
    pub lead_id: Option<String>,
    pub action: Option<String>,
    pub attempts: i32,
    pub metrics: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A position in the logs, newest first: the page after it starts with the rows strictly older than
/// `(created_at, id)`. On the wire it is opaque: base64url (no padding) of `<created_at µs>:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl LogCursor {
    /// The cursor of a log row (the last row of a page).
    pub fn after(log: &SyncLogRecord) -> Self {
        LogCursor {
            created_at: log.created_at,
            id: log.id,
        }
    }

    /// The opaque wire form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id.as_simple()
        ))
    }

    /// Parses the wire form; `None` for anything [`LogCursor::encode`] did not make.
    pub fn decode(raw: &str) -> Option<Self> {
        if raw.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        if micros.is_empty() || micros.len() > 18 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // From 1970 to the end of year 9999: what Postgres and we can both represent.
        let micros: i64 = micros.parse().ok().filter(|m| *m < MAX_CURSOR_MICROS)?;
        let created_at = DateTime::from_timestamp_micros(micros)?;
        let id = Uuid::try_parse(id).ok()?;
        Some(LogCursor { created_at, id })
    }
}

/// One page of logs, and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncLogPage {
    pub logs: Vec<SyncLogRecord>,
    pub next_before: Option<LogCursor>,
}

/// 10000-01-01T00:00:00Z in microseconds.
const MAX_CURSOR_MICROS: i64 = 253_402_300_800_000_000;

const LOG_COLUMNS: &str = "id, integration_id, provider, direction, trigger, status, lead_id, \
     action, attempts, metrics, error, created_at";

fn log_from_row(row: &tokio_postgres::Row) -> Result<SyncLogRecord, StoreError> {
    let provider = row
        .get::<_, &str>(2)
        .parse::<Provider>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(SyncLogRecord {
        id: row.get(0),
        integration_id: row.get(1),
        provider,
        direction: row.get(3),
        trigger: row.get(4),
        status: row.get(5),
        lead_id: row.get(6),
        action: row.get(7),
        attempts: row.get(8),
        metrics: row.get(9),
        error: row.get(10),
        created_at: row.get(11),
    })
}

impl Store {
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

    /// A page of `user`'s logs (of one integration, if given, whether or not it still exists), newest
    /// first (`created_at DESC, id DESC`), strictly after `before`, at most `limit` rows.
    pub async fn sync_logs(
        &self,
        user: Uuid,
        integration: Option<Uuid>,
        before: Option<LogCursor>,
        limit: u32,
    ) -> Result<SyncLogPage, StoreError> {
        let limit = limit.max(1);
        let fetch = i64::from(limit) + 1;
        let mut sql = format!("SELECT {LOG_COLUMNS} FROM crm_sync_logs WHERE user_id = $1");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user];
        if let Some(id) = integration.as_ref() {
            params.push(id);
            sql.push_str(&format!(" AND integration_id = ${}", params.len()));
        }
        if let Some(cursor) = before.as_ref() {
            params.push(&cursor.created_at);
            params.push(&cursor.id);
            sql.push_str(&format!(
                " AND (created_at, id) < (${}, ${})",
                params.len() - 1,
                params.len()
            ));
        }
        params.push(&fetch);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            params.len()
        ));

        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let rows = tx.query(&sql, &params).await?;
        tx.commit().await?;
        let mut logs = rows
            .iter()
            .map(log_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if logs.len() > limit as usize {
            logs.truncate(limit as usize);
            logs.last().map(LogCursor::after)
        } else {
            None
        };
        Ok(SyncLogPage { logs, next_before })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_at_microsecond_precision() {
        let cursor = LogCursor {
            created_at: DateTime::from_timestamp_micros(1_795_338_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        let wire = cursor.encode();
        assert!(
            wire.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{wire}"
        );
        assert_eq!(LogCursor::decode(&wire), Some(cursor));
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let id = Uuid::new_v4();
        for raw in [
            String::new(),
            "not base64!".into(),
            URL_SAFE_NO_PAD.encode("123"),
            URL_SAFE_NO_PAD.encode(format!("abc:{id}")),
            URL_SAFE_NO_PAD.encode(format!("+12:{id}")),
            URL_SAFE_NO_PAD.encode("123:not-a-uuid"),
            URL_SAFE_NO_PAD.encode(format!("{}:{id}", i64::MAX)),
            URL_SAFE_NO_PAD.encode(format!("-5:{id}")),
            URL_SAFE_NO_PAD.encode(format!("{MAX_CURSOR_MICROS}:{id}")),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b':']),
            "A".repeat(200),
        ] {
            assert_eq!(LogCursor::decode(&raw), None, "{raw:?}");
        }
    }
}
