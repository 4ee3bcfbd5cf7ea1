//! The push outbox: lead events (one row per lead version) and their deliveries (one per integration).
//!
//! A webhook writes the event and its deliveries in one transaction before anything is sent; a
//! delivery is claimed with a lease (`next_attempt_at` moved forward) so two processors never push it
//! at once, and a processor that dies only delays it until the lease runs out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsync_domain::policy;
use crmsync_domain::{Direction, IntegrationStatus, LogStatus, Provider, Trigger};
use uuid::Uuid;

use crate::integrations::{INTEGRATION_COLUMNS, IntegrationRecord, integration_from_row, parse};
use crate::sync_logs::{NewSyncLog, insert_log_in};
use crate::{Store, StoreError, begin_as};

/// A lead event to record.
#[derive(Debug, Clone)]
pub struct NewLeadEvent<'a> {
    pub lead_id: &'a str,
    pub version_key: &'a str,
    /// `lead.created` or `lead.updated`.
    pub event: &'a str,
    pub payload: &'a serde_json::Value,
    pub risk_score: Option<i32>,
    pub has_phone: bool,
}

/// What recording a lead event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: Uuid,
    /// This version of the lead was recorded before: nothing new was created.
    pub duplicate: bool,
    /// Deliveries waiting to be pushed.
    pub pending: Vec<Uuid>,
    /// Integrations skipped for this lead (risk above threshold, no phone, no risk score).
    pub skipped: usize,
}

/// A delivery claimed for pushing, with what is needed to push it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: Uuid,
    pub attempts: i32,
    pub lead_id: String,
    pub payload: serde_json::Value,
    pub integration: IntegrationRecord,
}

/// How a push attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The CRM has the lead. `action`: created, updated, unchanged or ignored.
    Delivered {
        external_id: Option<String>,
        action: String,
        attempts: i32,
    },
    /// Failed after retries: counts towards pausing the integration; tried again at `retry_at`.
    Failed {
        error: String,
        attempts: i32,
        retry_at: DateTime<Utc>,
    },
    /// Not tried (pacing): tried again at `retry_at`; counts as nothing.
    Deferred { retry_at: DateTime<Utc> },
}

impl Store {
    /// Records a lead event for `user` with one delivery per active auto-sync integration, all in one
    /// transaction; the integrations the push rules skip (`policy::skip_reason`) get a skipped
    /// delivery and a log row instead. The same lead version recorded twice is a duplicate and creates
    /// nothing.
    pub async fn accept_lead_event(
        &self,
        user: Uuid,
        event: &NewLeadEvent<'_>,
        trigger: Trigger,
    ) -> Result<Accepted, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let inserted = tx
            .query_opt(
                "INSERT INTO lead_events (user_id, lead_id, version_key, event, payload)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, lead_id, version_key) DO NOTHING
                 RETURNING id",
                &[
                    &user,
                    &event.lead_id,
                    &event.version_key,
                    &event.event,
                    event.payload,
                ],
            )
            .await?;
        let Some(row) = inserted else {
            let existing = tx
                .query_one(
                    "SELECT id FROM lead_events WHERE user_id = $1 AND lead_id = $2 AND version_key = $3",
                    &[&user, &event.lead_id, &event.version_key],
                )
                .await?;
            tx.commit().await?;
            return Ok(Accepted {
                event_id: existing.get(0),
                duplicate: true,
                pending: vec![],
                skipped: 0,
            });
        };
        let event_id: Uuid = row.get(0);
        let integrations = tx
            .query(
                "SELECT id, provider, risk_threshold FROM crm_integrations
                  WHERE status = 'active' AND auto_sync ORDER BY created_at, id",
                &[],
            )
            .await?;
        let mut pending = Vec::new();
        let mut skipped = 0;
        for row in &integrations {
            let (integration_id, threshold): (Uuid, i32) = (row.get(0), row.get(2));
            let reason = policy::skip_reason(event.risk_score, threshold, event.has_phone);
            let status = if reason.is_some() {
                "skipped"
            } else {
                "pending"
            };
            let delivery: Uuid = tx
                .query_one(
                    "INSERT INTO push_deliveries (event_id, integration_id, user_id, status)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&event_id, &integration_id, &user, &status],
                )
                .await?
                .get(0);
            match reason {
                None => pending.push(delivery),
                Some(reason) => {
                    skipped += 1;
                    let provider = parse::<Provider>(row, 1)?;
                    let log = NewSyncLog {
                        integration_id: Some(integration_id),
                        provider,
                        direction: Direction::Push,
                        trigger,
                        status: LogStatus::Skipped,
                        lead_id: Some(event.lead_id.to_owned()),
                        action: Some(reason.as_str().to_owned()),
                        attempts: 0,
                        metrics: None,
                        error: None,
                    };
                    insert_log_in(&tx, user, &log).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(Accepted {
            event_id,
            duplicate: false,
            pending,
            skipped,
        })
    }

    /// Claims a due delivery of an active integration for `lease`; `None` if it is not due, already
    /// claimed, finished, or its integration is paused.
    pub async fn claim_delivery(
        &self,
        user: Uuid,
        delivery_id: Uuid,
        lease: Duration,
    ) -> Result<Option<ClaimedDelivery>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let lease_secs = lease.as_secs_f64();
        let claimed = tx
            .query_opt(
                "UPDATE push_deliveries d
                    SET next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
                   FROM crm_integrations i
                  WHERE d.id = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
                    AND i.id = d.integration_id AND i.status = 'active'
                 RETURNING d.attempts, d.event_id, d.integration_id",
                &[&delivery_id, &lease_secs],
            )
            .await?;
        let Some(claimed) = claimed else {
            tx.commit().await?;
            return Ok(None);
        };
        let (attempts, event_id, integration_id): (i32, Uuid, Uuid) =
            (claimed.get(0), claimed.get(1), claimed.get(2));
        let event = tx
            .query_one(
                "SELECT lead_id, payload FROM lead_events WHERE id = $1",
                &[&event_id],
            )
            .await?;
        let integration = tx
            .query_one(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1"),
                &[&integration_id],
            )
            .await?;
        let integration = integration_from_row(&integration)?;
        tx.commit().await?;
        Ok(Some(ClaimedDelivery {
            delivery_id,
            attempts,
            lead_id: event.get(0),
            payload: event.get(1),
            integration,
        }))
    }

    /// Records how a claimed delivery went, with its log row. A failure adds one to the integration's
    /// consecutive failures and pauses it when `policy::pauses` says so (a delivery given up per
    /// `policy::gives_up` is `failed`); a delivery resets the count.
    /// Returns whether the integration is paused now.
    pub async fn finish_delivery(
        &self,
        user: Uuid,
        claimed: &ClaimedDelivery,
        outcome: &DeliveryOutcome,
        trigger: Trigger,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let integration_id = claimed.integration.id;
        let log = |status: LogStatus,
                   action: Option<String>,
                   attempts: i32,
                   error: Option<String>| NewSyncLog {
            integration_id: Some(integration_id),
            provider: claimed.integration.provider,
            direction: Direction::Push,
            trigger,
            status,
            lead_id: Some(claimed.lead_id.clone()),
            action,
            attempts,
            metrics: None,
            error,
        };
        let paused = match outcome {
            DeliveryOutcome::Delivered {
                external_id,
                action,
                attempts,
            } => {
                tx.execute(
                    "UPDATE push_deliveries SET status = 'delivered', external_id = $2, attempts = attempts + $3,
                            last_error = NULL, updated_at = now()
                      WHERE id = $1",
                    &[&claimed.delivery_id, external_id, attempts],
                )
                .await?;
                tx.execute(
                    "UPDATE crm_integrations SET consecutive_failures = 0, last_error = NULL, updated_at = now()
                      WHERE id = $1",
                    &[&integration_id],
                )
                .await?;
                insert_log_in(
                    &tx,
                    user,
                    &log(LogStatus::Success, Some(action.clone()), *attempts, None),
                )
                .await?;
                false
            }
            DeliveryOutcome::Failed {
                error,
                attempts,
                retry_at,
            } => {
                let total: i32 = tx
                    .query_one(
                        "UPDATE push_deliveries
                            SET attempts = attempts + $2, last_error = $3, next_attempt_at = $4, updated_at = now()
                          WHERE id = $1
                      RETURNING attempts",
                        &[&claimed.delivery_id, attempts, error, retry_at],
                    )
                    .await?
                    .get(0);
                if policy::gives_up(total) {
                    tx.execute(
                        "UPDATE push_deliveries SET status = 'failed' WHERE id = $1",
                        &[&claimed.delivery_id],
                    )
                    .await?;
                }
                let row = tx
                    .query_one(
                        "UPDATE crm_integrations
                            SET consecutive_failures = consecutive_failures + 1, last_error = $2, updated_at = now()
                          WHERE id = $1
                      RETURNING consecutive_failures, status",
                        &[&integration_id, error],
                    )
                    .await?;
                let failures: i32 = row.get(0);
                let mut status = parse::<IntegrationStatus>(&row, 1)?;
                if policy::pauses(failures) && status != IntegrationStatus::Paused {
                    tx.execute(
                        "UPDATE crm_integrations SET status = $2 WHERE id = $1",
                        &[&integration_id, &IntegrationStatus::Paused.as_str()],
                    )
                    .await?;
                    status = IntegrationStatus::Paused;
                }
                insert_log_in(
                    &tx,
                    user,
                    &log(LogStatus::Failed, None, *attempts, Some(error.clone())),
                )
                .await?;
                status == IntegrationStatus::Paused
            }
            DeliveryOutcome::Deferred { retry_at } => {
                tx.execute(
                    "UPDATE push_deliveries SET next_attempt_at = $2, updated_at = now() WHERE id = $1",
                    &[&claimed.delivery_id, retry_at],
                )
                .await?;
                false
            }
        };
        tx.commit().await?;
        Ok(paused)
    }

    /// Deliveries of `user` due now, of active integrations (optionally one), oldest first.
    pub async fn due_deliveries(
        &self,
        user: Uuid,
        integration: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let rows = tx
            .query(
                "SELECT d.id FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                  WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND i.status = 'active'
                    AND ($1::uuid IS NULL OR d.integration_id = $1)
                  ORDER BY d.next_attempt_at, d.id LIMIT $2",
                &[&integration, &limit],
            )
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every user's due deliveries, oldest first: for the scheduled run, which works across users.
    /// Runs as the table owner (Row Level Security does not apply).
    pub async fn due_deliveries_all(&self, limit: i64) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT d.user_id, d.id FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                  WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND i.status = 'active'
                  ORDER BY d.next_attempt_at, d.id LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
