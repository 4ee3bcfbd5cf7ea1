//! The push outbox: lead events (one row per lead version) and their deliveries (one per integration).
//!
//! A webhook writes the event and its deliveries in one transaction before anything is sent: one for
//! every integration with auto-sync on, paused or waiting for a reconnect or not (those wait, and go out
//! when the integration is active again). Deliveries of one lead to one integration are pushed one at a
//! time, newest version first: claiming one supersedes the older versions still pending, and a version
//! older than what was delivered is superseded too. A claimed delivery holds a lease (`leased_until`,
//! `lease_token`): nobody else claims it before the lease runs out, and finishing it checks the token,
//! so a processor whose lease ran out cannot record anything. `push_links` remembers what a lead is in
//! each CRM, and a create sent whose answer never came.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsync_domain::policy::{self, LeadPhone};
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
    pub phone: LeadPhone,
    /// The lead's own update time (`updatedAt`): versions are ordered by it, then by arrival.
    pub lead_updated_at: Option<DateTime<Utc>>,
}

/// What recording a lead event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: Uuid,
    /// This version of the lead was recorded before: nothing new was created.
    pub duplicate: bool,
    /// Deliveries waiting to be pushed (those of paused integrations included).
    pub pending: Vec<Uuid>,
    /// Integrations skipped for this lead (risk out of range or above threshold, no usable phone,
    /// no risk score).
    pub skipped: usize,
}

/// What crmsync knows of a lead in one CRM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushLink {
    /// The CRM's id of the person.
    pub external_id: Option<String>,
    /// A create was sent then and its answer never came: it may have been processed.
    pub create_sent_at: Option<DateTime<Utc>>,
}

/// A delivery claimed for pushing, with what is needed to push it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: Uuid,
    /// Proves the claim: finishing the delivery checks it.
    pub lease_token: Uuid,
    pub attempts: i32,
    pub lead_id: String,
    pub payload: serde_json::Value,
    pub integration: IntegrationRecord,
    pub link: PushLink,
    /// The version's place: its event's `seq` and the lead's update time.
    pub seq: i64,
    pub lead_updated_at: Option<DateTime<Utc>>,
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
    /// Not tried, or not finished for a reason that is no failure (pacing, waiting to learn whether an
    /// unanswered create was processed): tried again at `retry_at`; counts as nothing.
    Deferred { retry_at: DateTime<Utc> },
}

/// How recording a finished delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; whether the integration is paused now.
    Recorded { paused: bool },
    /// The lease ran out and someone else may hold the delivery: nothing was recorded.
    LeaseLost,
}

/// The newest first: a later update time, or with the same (or no) update time a later arrival.
const VERSION_ORDER: &str = "e.lead_updated_at DESC NULLS LAST, e.seq DESC";

/// Whether the version (`seq`, `updated`) is newer than the one delivered (`delivered_seq`,
/// `delivered_updated`): by update time where both have one and they differ, else by arrival.
fn newer_than_delivered(
    seq: i64,
    updated: Option<DateTime<Utc>>,
    delivered_seq: Option<i64>,
    delivered_updated: Option<DateTime<Utc>>,
) -> bool {
    let Some(delivered_seq) = delivered_seq else {
        return true;
    };
    match (updated, delivered_updated) {
        (Some(a), Some(b)) if a != b => a > b,
        _ => seq > delivered_seq,
    }
}

impl Store {
    /// Records a lead event for `user` with one delivery per auto-sync integration (whatever its
    /// status), all in one transaction; the integrations the push rules skip (`policy::skip_reason`)
    /// get a skipped delivery and a log row instead. The same lead version recorded twice is a
    /// duplicate and creates nothing.
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
                "INSERT INTO lead_events (user_id, lead_id, version_key, event, payload, lead_updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, lead_id, version_key) DO NOTHING
                 RETURNING id",
                &[
                    &user,
                    &event.lead_id,
                    &event.version_key,
                    &event.event,
                    event.payload,
                    &event.lead_updated_at,
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
                  WHERE auto_sync ORDER BY created_at, id",
                &[],
            )
            .await?;
        let mut pending = Vec::new();
        let mut skipped = 0;
        for row in &integrations {
            let (integration_id, threshold): (Uuid, i32) = (row.get(0), row.get(2));
            let reason = policy::skip_reason(event.risk_score, threshold, event.phone);
            let status = if reason.is_some() {
                "skipped"
            } else {
                "pending"
            };
            let delivery: Uuid = tx
                .query_one(
                    "INSERT INTO push_deliveries (event_id, integration_id, user_id, status, lead_id)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&event_id, &integration_id, &user, &status, &event.lead_id],
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

    /// Claims the newest pending version of the lead of `delivery_id` for its integration, for
    /// `lease`: the older pending versions (perhaps `delivery_id` itself) are superseded, and so is
    /// the newest when a newer one was delivered already. `None` when there is nothing to push now:
    /// the lead's versions are being pushed by someone else (who goes on with the newer ones), the
    /// newest is not due, the integration is not active, or nothing is pending.
    pub async fn claim_delivery(
        &self,
        user: Uuid,
        delivery_id: Uuid,
        lease: Duration,
    ) -> Result<Option<ClaimedDelivery>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT d.integration_id, d.lead_id, i.status FROM push_deliveries d
                   JOIN crm_integrations i ON i.id = d.integration_id
                  WHERE d.id = $1 AND d.status = 'pending'",
                &[&delivery_id],
            )
            .await?
        else {
            tx.commit().await?;
            return Ok(None);
        };
        let (integration_id, lead_id): (Uuid, String) = (row.get(0), row.get(1));
        if parse::<IntegrationStatus>(&row, 2)? != IntegrationStatus::Active {
            tx.commit().await?;
            return Ok(None);
        }
        // One claim of a lead's versions for an integration at a time.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text || '/' || $2::text, 1414))",
            &[&integration_id, &lead_id],
        )
        .await?;
        let busy = tx
            .query_opt(
                "SELECT 1 FROM push_deliveries
                  WHERE integration_id = $1 AND lead_id = $2 AND status = 'pending'
                    AND leased_until > now()",
                &[&integration_id, &lead_id],
            )
            .await?
            .is_some();
        if busy {
            tx.commit().await?;
            return Ok(None);
        }
        let versions = tx
            .query(
                &format!(
                    "SELECT d.id, d.next_attempt_at <= now(), d.attempts, e.seq, e.lead_updated_at,
                            e.lead_id, e.payload
                       FROM push_deliveries d JOIN lead_events e ON e.id = d.event_id
                      WHERE d.integration_id = $1 AND d.lead_id = $2 AND d.status = 'pending'
                      ORDER BY {VERSION_ORDER}"
                ),
                &[&integration_id, &lead_id],
            )
            .await?;
        let link = tx
            .query_opt(
                "SELECT external_id, create_sent_at, delivered_seq, delivered_updated_at
                   FROM push_links WHERE integration_id = $1 AND lead_id = $2",
                &[&integration_id, &lead_id],
            )
            .await?;
        let (push_link, delivered_seq, delivered_updated) = match &link {
            Some(l) => (
                PushLink {
                    external_id: l.get(0),
                    create_sent_at: l.get(1),
                },
                l.get::<_, Option<i64>>(2),
                l.get::<_, Option<DateTime<Utc>>>(3),
            ),
            None => (PushLink::default(), None, None),
        };
        let Some((newest, older)) = versions.split_first() else {
            tx.commit().await?;
            return Ok(None);
        };
        let mut superseded: Vec<Uuid> = older.iter().map(|r| r.get(0)).collect();
        let (seq, updated): (i64, Option<DateTime<Utc>>) = (newest.get(3), newest.get(4));
        let current = newer_than_delivered(seq, updated, delivered_seq, delivered_updated);
        if !current {
            superseded.push(newest.get(0));
        }
        if !superseded.is_empty() {
            tx.execute(
                "UPDATE push_deliveries SET status = 'superseded', updated_at = now()
                  WHERE id = ANY($1) AND status = 'pending'",
                &[&superseded],
            )
            .await?;
        }
        let due: bool = newest.get(1);
        if !current || !due {
            tx.commit().await?;
            return Ok(None);
        }
        let claimed_id: Uuid = newest.get(0);
        let lease_secs = lease.as_secs_f64();
        let token: Uuid = tx
            .query_one(
                "UPDATE push_deliveries
                    SET leased_until = now() + make_interval(secs => $2),
                        lease_token = gen_random_uuid(), updated_at = now()
                  WHERE id = $1
              RETURNING lease_token",
                &[&claimed_id, &lease_secs],
            )
            .await?
            .get(0);
        let integration = tx
            .query_one(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM crm_integrations WHERE id = $1"),
                &[&integration_id],
            )
            .await?;
        let integration = integration_from_row(&integration)?;
        tx.commit().await?;
        Ok(Some(ClaimedDelivery {
            delivery_id: claimed_id,
            lease_token: token,
            attempts: newest.get(2),
            lead_id: newest.get(5),
            payload: newest.get(6),
            integration,
            link: push_link,
            seq,
            lead_updated_at: updated,
        }))
    }

    /// Notes, before a create is sent, that it is about to be: if its answer never comes, the next
    /// attempt knows it may have been processed. `false` (and nothing noted) when the claim's lease
    /// is no longer held: the create must not be sent.
    pub async fn note_create_sent(
        &self,
        user: Uuid,
        claimed: &ClaimedDelivery,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM push_deliveries
                  WHERE id = $1 AND lease_token = $2 AND status = 'pending' AND leased_until > now()
                    FOR UPDATE",
                &[&claimed.delivery_id, &claimed.lease_token],
            )
            .await?
            .is_some();
        if held {
            tx.execute(
                "INSERT INTO push_links (integration_id, lead_id, user_id, create_sent_at)
                 VALUES ($1, $2, $3, now())
                 ON CONFLICT (integration_id, lead_id) DO UPDATE
                    SET create_sent_at = now(), updated_at = now()",
                &[&claimed.integration.id, &claimed.lead_id, &user],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    /// Records how a claimed delivery went, with its log row, if its lease is still held (else
    /// nothing: [`Finished::LeaseLost`]). A delivery resets the integration's consecutive failures and
    /// remembers the CRM's person for the lead; a failure adds one to them and pauses the integration
    /// when `policy::pauses` says so (a delivery given up per `policy::gives_up` is `failed`).
    pub async fn finish_delivery(
        &self,
        user: Uuid,
        claimed: &ClaimedDelivery,
        outcome: &DeliveryOutcome,
        trigger: Trigger,
    ) -> Result<Finished, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        // The fence: the lease this processor was given, still its own.
        let held = tx
            .query_opt(
                "UPDATE push_deliveries SET leased_until = NULL, lease_token = NULL, updated_at = now()
                  WHERE id = $1 AND lease_token = $2 AND status = 'pending'
              RETURNING id",
                &[&claimed.delivery_id, &claimed.lease_token],
            )
            .await?
            .is_some();
        if !held {
            tx.commit().await?;
            return Ok(Finished::LeaseLost);
        }
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
                    "INSERT INTO push_links
                        (integration_id, lead_id, user_id, external_id, delivered_seq, delivered_updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (integration_id, lead_id) DO UPDATE SET
                        external_id = COALESCE(EXCLUDED.external_id, push_links.external_id),
                        create_sent_at = NULL,
                        delivered_seq = EXCLUDED.delivered_seq,
                        delivered_updated_at = EXCLUDED.delivered_updated_at,
                        updated_at = now()",
                    &[
                        &integration_id,
                        &claimed.lead_id,
                        &user,
                        external_id,
                        &claimed.seq,
                        &claimed.lead_updated_at,
                    ],
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
                if policy::pauses(failures) && status == IntegrationStatus::Active {
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
        Ok(Finished::Recorded { paused })
    }

    /// A pending delivery of the lead of `claimed` to its integration that is due now (a newer
    /// version that arrived while it was pushed), if any.
    pub async fn next_due_of_lead(
        &self,
        user: Uuid,
        claimed: &ClaimedDelivery,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let row = tx
            .query_opt(
                "SELECT id FROM push_deliveries
                  WHERE integration_id = $1 AND lead_id = $2 AND status = 'pending'
                    AND next_attempt_at <= now() AND (leased_until IS NULL OR leased_until <= now())
                  LIMIT 1",
                &[&claimed.integration.id, &claimed.lead_id],
            )
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Makes the waiting deliveries of the integration `id` due now (not those being pushed): what
    /// resuming it, connecting it again or "sync now" does. Returns how many.
    pub async fn make_deliveries_due(&self, user: Uuid, id: Uuid) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = begin_as(&mut conn, user).await?;
        let n = make_due_in(&tx, id).await?;
        tx.commit().await?;
        Ok(n)
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
                    AND (d.leased_until IS NULL OR d.leased_until <= now())
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
        // Outside a transaction: one unnamed statement (safe through a transaction-mode pooler).
        let rows = conn
            .query_typed(
                "SELECT d.user_id, d.id FROM push_deliveries d JOIN crm_integrations i ON i.id = d.integration_id
                  WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND i.status = 'active'
                    AND (d.leased_until IS NULL OR d.leased_until <= now())
                  ORDER BY d.next_attempt_at, d.id LIMIT $1",
                &[(&limit, tokio_postgres::types::Type::INT8)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Makes the waiting deliveries of the integration `id` due now, in `tx`.
pub(crate) async fn make_due_in(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "UPDATE push_deliveries SET next_attempt_at = now(), updated_at = now()
              WHERE integration_id = $1 AND status = 'pending' AND next_attempt_at > now()
                AND (leased_until IS NULL OR leased_until <= now())",
            &[&id],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_by_update_time_then_arrival() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert!(
            newer_than_delivered(1, None, None, None),
            "nothing delivered"
        );
        assert!(newer_than_delivered(
            5,
            t("2026-01-02T00:00:00Z"),
            Some(9),
            t("2026-01-01T00:00:00Z")
        ));
        assert!(!newer_than_delivered(
            9,
            t("2026-01-01T00:00:00Z"),
            Some(5),
            t("2026-01-02T00:00:00Z")
        ));
        assert!(newer_than_delivered(
            9,
            t("2026-01-01T00:00:00Z"),
            Some(5),
            t("2026-01-01T00:00:00Z")
        ));
        assert!(!newer_than_delivered(
            5,
            None,
            Some(9),
            t("2026-01-01T00:00:00Z")
        ));
        assert!(
            !newer_than_delivered(5, None, Some(5), None),
            "the same version"
        );
    }
}
