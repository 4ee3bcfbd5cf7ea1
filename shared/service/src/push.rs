//! The push path: the lead webhook, the push engine and manual integration syncs.
//!
//! The webhook authenticates the sender, records the lead version in the outbox with one delivery per
//! eligible integration (the same version twice is recorded once), then pushes those deliveries within
//! a time budget and answers 202. A delivery is pushed by finding the CRM person by phone and updating
//! it, or creating it; transient failures are retried 3 times with exponential backoff and jitter,
//! honouring `Retry-After`. What still fails stays in the outbox for the scheduled run; ten failed leads
//! in a row pause the integration. All Lambdas pushing to one CRM account share one token bucket in
//! DynamoDB, sized from the CRM's documented limit and then from the limit its headers advertise.

use std::time::{Duration, Instant};

use chrono::Utc;
use crmsync_adapters::ApiError;
use crmsync_adapters::http::{MAX_BODY_BYTES, Response, json, parse_json};
use crmsync_adapters::limiter::{LimiterError, Rate};
use crmsync_adapters::store::{
    ClaimedDelivery, DeliveryOutcome, IntegrationRecord, NewLeadEvent, Trigger,
};
use crmsync_crm::{CrmClient, CrmError, PushResult};
use crmsync_domain::{Lead, LeadError, LeadEvent, LeadPayload, PhoneNumber, Provider};
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::json as j;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::app::{App, Ready, limits};
use crate::credentials::{crm_client, crm_error};
use crate::{pull, web};

/// Retries after the first attempt of a push.
pub const PUSH_RETRIES: u32 = 3;
/// How long the webhook spends pushing before it answers (the rest is left to the scheduled run).
const WEBHOOK_BUDGET: Duration = Duration::from_secs(8);
/// How long a claimed delivery is reserved for its processor.
const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Longest backoff between push attempts (the first is `App::push_backoff`; it doubles, with jitter).
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Deliveries a manual or scheduled drain takes at most per call.
pub const DRAIN_BATCH: i64 = 500;

/// Checks the webhook's sender: `x-webhook-secret` equal to the secret (constant time), or a Standard
/// Webhooks signature (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`).
pub fn authenticate_webhook(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if secret.is_empty() {
        return Err(ApiError::internal("webhook_secret is not configured"));
    }
    if let Some(given) = headers.get("x-webhook-secret") {
        let ok: bool = given.as_bytes().ct_eq(secret.as_bytes()).into();
        return if ok {
            Ok(())
        } else {
            Err(ApiError::unauthorized("The webhook secret is wrong."))
        };
    }
    if headers.contains_key(standardwebhooks::HEADER_WEBHOOK_SIGNATURE) {
        // `whsec_<base64>` as the standard says; any other secret is used as raw bytes.
        let verifier = standardwebhooks::Webhook::new(secret)
            .or_else(|_| standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec()))
            .map_err(ApiError::internal)?;
        return verifier.verify(body, headers).map_err(|e| {
            use standardwebhooks::WebhookError as E;
            let why = match e {
                E::TimestampTooOldError | E::FutureTimestampError => {
                    "the webhook timestamp is more than 5 minutes from now"
                }
                E::MissingHeader(_) | E::InvalidHeader(_) | E::InvalidTimestamp => {
                    "the webhook-id, webhook-timestamp or webhook-signature header is missing or malformed"
                }
                _ => "the webhook signature does not match",
            };
            ApiError::unauthorized(format!("Webhook authentication failed: {why}."))
        });
    }
    Err(ApiError::unauthorized(
        "Webhook authentication required: an x-webhook-secret header or a Standard Webhooks signature.",
    ))
}

/// The 202 answer of the webhook.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookReply {
    accepted: bool,
    event_id: Option<Uuid>,
    /// Integrations the lead goes to.
    integrations: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    skipped: usize,
    pushed: usize,
    failed: usize,
    /// Deliveries left for the scheduled run.
    pending: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `POST /api/webhooks/lead-created`.
pub async fn webhook(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::bad_request(format!(
            "The request body is {} bytes; the limit is {MAX_BODY_BYTES} bytes.",
            body.len()
        )));
    }
    let ready = app.ready().await?;
    authenticate_webhook(&ready.secrets.webhook_secret, req.headers(), body)?;
    let value: serde_json::Value = parse_json(body)?;
    let event = match LeadEvent::from_json(&value) {
        Ok(event) => event,
        Err(LeadError::UnsupportedEvent(what)) => {
            // A delete, or an event we do not push: acknowledged, so the sender does not retry it.
            return Ok(json(
                StatusCode::ACCEPTED,
                &WebhookReply {
                    accepted: false,
                    event_id: None,
                    integrations: 0,
                    duplicate: false,
                    skipped: 0,
                    pushed: 0,
                    failed: 0,
                    pending: 0,
                    reason: Some(format!("{what} events are not pushed")),
                },
            ));
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "The lead event is not valid: {e}."
            )));
        }
    };
    let kind = event.kind;
    let lead = Lead::from_payload(event.payload, app.settings.default_phone_region)
        .map_err(|e| ApiError::bad_request(format!("The lead is not valid: {e}.")))?;
    let payload = serde_json::to_value(&lead).map_err(ApiError::internal)?;
    let version = lead.version_key();
    let accepted = ready
        .store
        .accept_lead_event(
            lead.user_id,
            &NewLeadEvent {
                lead_id: &lead.id,
                version_key: &version,
                event: kind.as_event_name(),
                payload: &payload,
                risk_score: lead.risk_score,
                has_phone: lead.phone.is_some(),
            },
            Trigger::Webhook,
        )
        .await?;
    let mut reply = WebhookReply {
        accepted: true,
        event_id: Some(accepted.event_id),
        integrations: accepted.pending.len(),
        duplicate: accepted.duplicate,
        skipped: accepted.skipped,
        pushed: 0,
        failed: 0,
        pending: 0,
        reason: None,
    };
    if !accepted.duplicate {
        let tally = process(
            app,
            ready,
            lead.user_id,
            &accepted.pending,
            Trigger::Webhook,
            started + WEBHOOK_BUDGET,
        )
        .await;
        reply.pushed = tally.pushed;
        reply.failed = tally.failed;
        reply.pending = accepted.pending.len() - tally.pushed;
    }
    Ok(json(StatusCode::ACCEPTED, &reply))
}

/// What a round of pushes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PushTally {
    pub pushed: usize,
    pub failed: usize,
    pub deferred: usize,
}

impl PushTally {
    fn count(&mut self, outcome: &DeliveryOutcome) {
        match outcome {
            DeliveryOutcome::Delivered { .. } => self.pushed += 1,
            DeliveryOutcome::Failed { .. } => self.failed += 1,
            DeliveryOutcome::Deferred { .. } => self.deferred += 1,
        }
    }

    fn add(self, other: PushTally) -> PushTally {
        PushTally {
            pushed: self.pushed + other.pushed,
            failed: self.failed + other.failed,
            deferred: self.deferred + other.deferred,
        }
    }
}

/// Pushes these deliveries of `user`, concurrently, each claimed first (a delivery someone else is
/// pushing, or that is not due, is left alone).
pub async fn process(
    app: &App,
    ready: &Ready,
    user: Uuid,
    deliveries: &[Uuid],
    trigger: Trigger,
    deadline: Instant,
) -> PushTally {
    let outcomes = futures::future::join_all(
        deliveries
            .iter()
            .map(|id| deliver(app, ready, user, *id, trigger, deadline)),
    )
    .await;
    let mut tally = PushTally::default();
    outcomes.iter().flatten().for_each(|o| tally.count(o));
    tally
}

/// Pushes deliveries one after the other (one CRM account: its pacing decides the speed).
pub async fn process_in_order(
    app: &App,
    ready: &Ready,
    user: Uuid,
    deliveries: &[Uuid],
    trigger: Trigger,
    deadline: Instant,
) -> PushTally {
    let mut tally = PushTally::default();
    for id in deliveries {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(outcome) = deliver(app, ready, user, *id, trigger, deadline).await {
            tally.count(&outcome);
        }
    }
    tally
}

/// Claims, pushes and records one delivery. `None` if it could not be claimed (or recorded).
async fn deliver(
    app: &App,
    ready: &Ready,
    user: Uuid,
    delivery: Uuid,
    trigger: Trigger,
    deadline: Instant,
) -> Option<DeliveryOutcome> {
    let claimed = match ready
        .store
        .claim_delivery(user, delivery, CLAIM_LEASE)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim a delivery");
            return None;
        }
    };
    let outcome = push_claimed(app, ready, &claimed, deadline).await;
    match ready
        .store
        .finish_delivery(user, &claimed, &outcome, trigger)
        .await
    {
        Ok(paused) => {
            if paused {
                tracing::warn!(
                    provider = claimed.integration.provider.as_str(), integration = %claimed.integration.id,
                    "integration paused after repeated push failures"
                );
            }
            Some(outcome)
        }
        Err(e) => {
            // The lease runs out and the delivery is tried again; the CRM finds the person by phone.
            tracing::error!(error = %e, "cannot record a delivery");
            None
        }
    }
}

/// When a failed delivery is tried again by the scheduled run: doubling from a minute, at most 6 h.
fn next_try(total_attempts: i32) -> chrono::DateTime<Utc> {
    let minutes = 1i64 << total_attempts.clamp(0, 9);
    Utc::now() + chrono::Duration::minutes(minutes.min(360))
}

fn after(wait: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(1))
}

/// Full-jitter exponential backoff for retry `n` (1-based).
fn backoff(base: Duration, n: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << n.min(10)).min(BACKOFF_CAP);
    ceiling.mul_f64(rand::random::<f64>())
}

/// The documented limit of a CRM account, until its headers say otherwise.
fn documented_rate(provider: Provider) -> (u32, Duration) {
    match provider {
        // 250 requests per 10 s for a registered system (third-party figures vary; headers correct it).
        Provider::FollowUpBoss => (250, Duration::from_secs(10)),
        // Production apps: 500 a minute; development apps 100. Take the lower.
        Provider::Lofty => (100, Duration::from_secs(60)),
        // Not documented: one a second.
        Provider::Rex => (60, Duration::from_secs(60)),
    }
}

/// The shared bucket for `limit` requests per `window`: a burst of a twentieth of the limit (at least
/// one), refilled at the rest of it per window, so no sliding window of that length ever sees more
/// than `limit` requests from us (burst + refill = limit) while the steady rate stays at 95% of the
/// limit (90% for a limit of 10). Turns missed while a push was busy elsewhere are made up from the
/// burst.
fn account_rate((limit, window): (u32, Duration)) -> Rate {
    let limit = limit.max(2);
    let burst = (limit / 20).max(1);
    Rate {
        capacity: burst,
        period: window.mul_f64(f64::from(burst) / f64::from(limit - burst)),
    }
}

/// Waits for this call's turn in the CRM account's shared bucket. `Err(wait)` when the turn is past
/// the deadline (the reservation is given back).
async fn pace(
    app: &App,
    client: &CrmClient,
    integration: &IntegrationRecord,
    deadline: Instant,
) -> Result<(), Duration> {
    let provider = integration.provider;
    let rate = account_rate(
        client
            .advertised_rate()
            .unwrap_or_else(|| documented_rate(provider)),
    );
    let key = format!("crm:{}:{}", provider.as_str(), integration.id);
    let max_wait = deadline.saturating_duration_since(Instant::now());
    match app.limiter.reserve(&key, rate, 1, max_wait).await {
        Ok(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Err(LimiterError::WaitTooLong(wait)) => Err(wait),
        Err(e) => {
            // The CRM's own limits (and our client's pacing on its headers) still apply.
            tracing::warn!(error = %e, "outbound pacing unavailable; pushing unpaced");
            Ok(())
        }
    }
}

/// One push: find by phone, then update or create. Each CRM call takes a token of the account's bucket.
async fn push_once(
    app: &App,
    client: &CrmClient,
    integration: &IntegrationRecord,
    lead: &Lead,
    phone: &PhoneNumber,
    deadline: Instant,
) -> Result<Result<PushResult, CrmError>, Duration> {
    pace(app, client, integration, deadline).await?;
    let found = match client.find_by_phone(phone).await {
        Ok(found) => found,
        Err(e) => return Ok(Err(e)),
    };
    pace(app, client, integration, deadline).await?;
    Ok(match found {
        Some((id, existing)) => client.update(&id, &existing, lead).await,
        None => client.create(lead).await,
    })
}

/// Pushes a claimed delivery with retries; never fails, it says how it went.
async fn push_claimed(
    app: &App,
    ready: &Ready,
    claimed: &ClaimedDelivery,
    deadline: Instant,
) -> DeliveryOutcome {
    let integration = &claimed.integration;
    let provider = integration.provider;
    let failed = |error: String, attempts: i32| DeliveryOutcome::Failed {
        error,
        attempts,
        retry_at: next_try(claimed.attempts + attempts),
    };
    let lead = match serde_json::from_value::<LeadPayload>(claimed.payload.clone())
        .map_err(|e| e.to_string())
        .and_then(|p| {
            Lead::from_payload(p, app.settings.default_phone_region).map_err(|e| e.to_string())
        }) {
        Ok(lead) => lead,
        Err(e) => return failed(format!("The stored lead cannot be read: {e}."), 1),
    };
    let Some(phone) = lead.phone.clone() else {
        return failed("The lead has no phone number.".into(), 1);
    };
    let client = match crm_client(app, ready, integration).await {
        Ok(c) => c,
        Err(e) => return failed(e.detail().to_owned(), 1),
    };
    let mut attempts: i32 = 0;
    loop {
        let result = match push_once(app, &client, integration, &lead, &phone, deadline).await {
            Ok(result) => result,
            Err(wait) if attempts == 0 => {
                return DeliveryOutcome::Deferred {
                    retry_at: after(wait),
                };
            }
            Err(wait) => {
                return DeliveryOutcome::Failed {
                    error: format!(
                        "{} was paced out before the retries were done.",
                        provider.label()
                    ),
                    attempts,
                    retry_at: after(wait),
                };
            }
        };
        attempts += 1;
        match result {
            Ok(done) => {
                return DeliveryOutcome::Delivered {
                    external_id: done.external_id,
                    action: done.action.as_str().to_owned(),
                    attempts,
                };
            }
            Err(e) => {
                let retryable = e.is_retryable();
                let wait = match &e {
                    CrmError::RateLimited { retry_after } => *retry_after,
                    _ => backoff(app.push_backoff, attempts as u32),
                };
                let sentence = crm_error(provider, e).detail().to_owned();
                if !retryable || attempts > PUSH_RETRIES as i32 {
                    return failed(sentence, attempts);
                }
                if Instant::now() + wait > deadline {
                    return DeliveryOutcome::Failed {
                        error: sentence,
                        attempts,
                        retry_at: after(wait),
                    };
                }
                tracing::info!(
                    provider = provider.as_str(),
                    attempt = attempts,
                    "push failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Pushes every user's due deliveries until `deadline` (the scheduled run).
pub async fn drain_all(app: &App, deadline: Instant) -> Result<PushTally, ApiError> {
    let ready = app.ready().await?;
    let due = ready.store.due_deliveries_all(DRAIN_BATCH).await?;
    let mut by_user: std::collections::BTreeMap<Uuid, Vec<Uuid>> = Default::default();
    for (user, delivery) in due {
        by_user.entry(user).or_default().push(delivery);
    }
    // Users side by side; each user's deliveries in order (their accounts' pacing sets the pace).
    let tallies =
        futures::future::join_all(by_user.iter().map(|(user, ids)| {
            process_in_order(app, ready, *user, ids, Trigger::Schedule, deadline)
        }))
        .await;
    Ok(tallies
        .into_iter()
        .fold(PushTally::default(), PushTally::add))
}

/// `POST /api/integrations/{id}/sync`: pull, then push the integration's pending leads.
pub async fn integration_sync(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let raw = web::path_param(req, "id", "integrations").unwrap_or_default();
    let id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::bad_request("The integration id is not a valid id."))?;
    let ready = app.ready().await?;
    let integration = ready
        .store
        .get_integration(caller.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such integration."))?;
    app.limit("integration-sync", &caller, limits::SYNC).await?;
    let deadline =
        crate::handlers::deadline(req).unwrap_or_else(|| Instant::now() + Duration::from_secs(600));
    let metrics = pull::sync(
        app,
        &integration,
        web::since(req)?,
        Trigger::Manual,
        Some(deadline),
    )
    .await?;
    let due = ready
        .store
        .due_deliveries(caller.user_id, Some(id), DRAIN_BATCH)
        .await?;
    let tally = process_in_order(app, ready, caller.user_id, &due, Trigger::Manual, deadline).await;
    let mut body = serde_json::to_value(&metrics).map_err(ApiError::internal)?;
    body["pushed"] = j!(tally.pushed);
    body["failed"] = j!(tally.failed);
    body["pending"] = j!(due.len() - tally.pushed - tally.failed);
    Ok(json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_bucket_never_exceeds_the_limit_in_a_window() {
        for limit in [10u32, 50, 100, 250] {
            let window = Duration::from_secs(10);
            let rate = account_rate((limit, window));
            let refill_per_window =
                f64::from(rate.capacity) * window.as_secs_f64() / rate.period.as_secs_f64();
            let most = f64::from(rate.capacity) + refill_per_window;
            assert!(most <= f64::from(limit) + 1e-6, "{limit}: {most}");
            assert!(
                refill_per_window >= 0.9 * f64::from(limit) - 1e-6,
                "{limit}: at least 90% of the limit"
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 1..20 {
            assert!(backoff(Duration::from_millis(250), n) <= BACKOFF_CAP);
        }
        assert!(next_try(0) > Utc::now());
        assert!(
            next_try(30) <= Utc::now() + chrono::Duration::hours(6) + chrono::Duration::seconds(1)
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_webhook_takes_the_shared_secret_or_a_standard_signature() {
        let body = br#"{"event":"lead.created"}"#;
        assert!(
            authenticate_webhook("s3cret", &headers(&[("x-webhook-secret", "s3cret")]), body)
                .is_ok()
        );
        assert!(
            authenticate_webhook("s3cret", &headers(&[("x-webhook-secret", "s3cre")]), body)
                .is_err()
        );
        assert!(authenticate_webhook("s3cret", &HeaderMap::new(), body).is_err());

        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let hook = standardwebhooks::Webhook::new(secret).unwrap();
        let now = Utc::now().timestamp();
        let sign = |ts: i64, body: &[u8]| hook.sign("msg_1", ts, body).unwrap();
        let signed = |ts: i64, sig: &str| {
            headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", sig),
            ])
        };
        assert!(authenticate_webhook(secret, &signed(now, &sign(now, body)), body).is_ok());
        // Rotation: several signatures, one of them ours.
        let several = format!("v1,bm90IG91cnM= {}", sign(now, body));
        assert!(authenticate_webhook(secret, &signed(now, &several), body).is_ok());
        // Tampered body, stale or future timestamps.
        assert!(authenticate_webhook(secret, &signed(now, &sign(now, body)), b"{}").is_err());
        let stale = authenticate_webhook(secret, &signed(now - 301, &sign(now - 301, body)), body)
            .unwrap_err();
        assert!(stale.detail().contains("5 minutes"), "{}", stale.detail());
        assert!(
            authenticate_webhook(secret, &signed(now + 301, &sign(now + 301, body)), body).is_err()
        );
    }
}
