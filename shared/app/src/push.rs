//! The push path: leads recorded in the outbox and pushed to every CRM of their user.
//!
//! A lead version is recorded with one delivery per auto-sync integration (the same version twice is
//! recorded once; a paused integration's deliveries wait for it), then those deliveries are pushed
//! within a time budget. The versions of one lead go to one integration one at a time, newest first
//! (see `crmsync_store::outbox`); whoever pushes one goes on with a newer one that came in meanwhile.
//!
//! A delivery is pushed by finding the CRM person by phone and updating it; else the person crmsync
//! created for the lead before (`push_links`: found by id when its phone changed or the CRM does not
//! show it yet); else by creating it. A create is noted before it is sent: if its answer never comes
//! (a timeout, a dropped connection, a 5xx), it may have been processed, so it is never sent again
//! blindly: the next attempt waits [`Settings::create_settle`](crate::Settings) for the CRM to finish
//! (and Lofty to show the new lead), then looks for the person, and creates it only if it is not there.
//!
//! Every CRM request ends before the push's deadline (`crmsync_crm::with_deadline`), and a delivery's
//! lease covers that deadline, so a push never outlives its claim. Transient failures are retried
//! ([`policy::PUSH_RETRIES`] times, exponential backoff with full jitter, honouring `Retry-After`). What
//! still fails stays in the outbox with its next try ([`policy::retry_delay`]); ten failed leads in a row
//! pause the integration. All Lambdas pushing to one CRM account share one token bucket in DynamoDB,
//! sized from the CRM's documented limit and then from the limit its headers advertise.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use crmsync_aws::{LimiterError, Rate};
use crmsync_crm::{CrmClient, CrmError, PushResult, RetryPolicy};
use crmsync_domain::policy;
use crmsync_domain::{Lead, LeadEvent, PhoneNumber, Region, Trigger};
use crmsync_store::{
    ClaimedDelivery, DeliveryOutcome, Finished, IntegrationRecord, NewLeadEvent, PushLink,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::credentials::{Connection, Session, phone_region};
use crate::pull::{self, SyncMetrics, SyncRequest};
use crate::{AppError, Context};

/// The longest one delivery is pushed for (a drain's deadline may be later): with every CRM request
/// bounded by it, the worst case of a push.
const PUSH_BUDGET: Duration = Duration::from_secs(60);
/// A claim's lease lasts the push's deadline plus this (the final writes, clock differences).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// A turn in the account's bucket must leave at least this long for the call.
const MIN_CALL_TIME: Duration = Duration::from_secs(2);
/// A create is not started with less time than this left before the deadline.
const MIN_CREATE_TIME: Duration = Duration::from_secs(3);
/// Longest backoff between push attempts (the first is `Settings::push_backoff`; it doubles, with
/// jitter).
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Deliveries a manual or scheduled drain takes at most per call.
pub const DRAIN_BATCH: i64 = 500;

/// What recording and pushing one lead event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub event_id: Uuid,
    /// Integrations the lead goes to.
    pub integrations: usize,
    /// This version of the lead was recorded before: nothing new was pushed.
    pub duplicate: bool,
    /// Integrations the push rules skip for this lead.
    pub skipped: usize,
    pub pushed: usize,
    pub failed: usize,
    /// Deliveries left for the scheduled run.
    pub pending: usize,
}

/// A lead event recorded in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Whose lead it is.
    pub user: Uuid,
    pub outbox: crmsync_store::Accepted,
}

/// Records a lead event (validated here: a lead that is not valid is a bad request) with one delivery
/// per integration it goes to; pushes nothing.
pub async fn record(
    ctx: &Context,
    event: LeadEvent,
    trigger: Trigger,
) -> Result<Recorded, AppError> {
    let kind = event.kind;
    let lead = Lead::from_payload(event.payload, ctx.settings.phone_region)
        .map_err(|e| AppError::BadRequest(format!("The lead is not valid: {e}.")))?;
    let payload = serde_json::to_value(&lead).map_err(AppError::internal)?;
    let version = lead.version_key();
    let outbox = ctx
        .store
        .accept_lead_event(
            lead.user_id,
            &NewLeadEvent {
                lead_id: &lead.id,
                version_key: &version,
                event: kind.as_event_name(),
                payload: &payload,
                risk_score: lead.risk_score,
                phone: lead.phone_state(),
                lead_updated_at: lead.updated_at,
            },
            trigger,
        )
        .await?;
    Ok(Recorded {
        user: lead.user_id,
        outbox,
    })
}

/// Records a lead event ([`record`]), then pushes its deliveries until `deadline`.
pub async fn accept(
    ctx: &Context,
    event: LeadEvent,
    trigger: Trigger,
    deadline: Instant,
) -> Result<Accepted, AppError> {
    let Recorded { user, outbox } = record(ctx, event, trigger).await?;
    let mut accepted = Accepted {
        event_id: outbox.event_id,
        integrations: outbox.pending.len(),
        duplicate: outbox.duplicate,
        skipped: outbox.skipped,
        pushed: 0,
        failed: 0,
        pending: 0,
    };
    if !outbox.duplicate {
        let tally = process(ctx, user, &outbox.pending, trigger, deadline).await;
        accepted.pushed = tally.pushed;
        accepted.failed = tally.failed;
        // (Pushing one version may have pushed a newer one that came in meanwhile.)
        accepted.pending = outbox.pending.len().saturating_sub(tally.pushed);
    }
    Ok(accepted)
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
    ctx: &Context,
    user: Uuid,
    deliveries: &[Uuid],
    trigger: Trigger,
    deadline: Instant,
) -> PushTally {
    let outcomes = futures::future::join_all(
        deliveries
            .iter()
            .map(|id| deliver(ctx, user, *id, trigger, deadline)),
    )
    .await;
    let mut tally = PushTally::default();
    outcomes.iter().flatten().for_each(|o| tally.count(o));
    tally
}

/// The outcomes of pushing these deliveries one after the other.
fn tally_of(outcomes: &[DeliveryOutcome]) -> PushTally {
    let mut tally = PushTally::default();
    outcomes.iter().for_each(|o| tally.count(o));
    tally
}

/// Pushes deliveries one after the other (one CRM account: its pacing decides the speed).
pub async fn process_in_order(
    ctx: &Context,
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
        tally = tally.add(tally_of(&deliver(ctx, user, *id, trigger, deadline).await));
    }
    tally
}

/// Claims, pushes and records a delivery, then any newer version of its lead for its integration that
/// came in meanwhile. What it recorded; empty if nothing could be claimed (or recorded).
async fn deliver(
    ctx: &Context,
    user: Uuid,
    delivery: Uuid,
    trigger: Trigger,
    deadline: Instant,
) -> Vec<DeliveryOutcome> {
    let mut outcomes = Vec::new();
    let mut next = Some(delivery);
    while let Some(id) = next.take() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let push_deadline = deadline.min(now + PUSH_BUDGET);
        let lease = push_deadline.saturating_duration_since(now) + LEASE_MARGIN;
        let claimed = match ctx.store.claim_delivery(user, id, lease).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a delivery");
                break;
            }
        };
        // Boxed: a push's future is large, and the stack of a test thread is not.
        let outcome = Box::pin(crmsync_crm::with_deadline(
            push_deadline,
            push_claimed(ctx, &claimed, push_deadline),
        ))
        .await;
        match ctx
            .store
            .finish_delivery(user, &claimed, &outcome, trigger)
            .await
        {
            Ok(Finished::Recorded { paused }) => {
                crate::metrics::pushed(
                    claimed.integration.provider,
                    match outcome {
                        DeliveryOutcome::Delivered { .. } => crate::metrics::Pushed::Delivered,
                        DeliveryOutcome::Failed { .. } => crate::metrics::Pushed::Failed,
                        DeliveryOutcome::Deferred { .. } => crate::metrics::Pushed::Deferred,
                    },
                );
                if paused {
                    tracing::warn!(
                        provider = claimed.integration.provider.as_str(), integration = %claimed.integration.id,
                        "integration paused after repeated push failures"
                    );
                }
                outcomes.push(outcome);
            }
            Ok(Finished::LeaseLost) => {
                tracing::warn!(
                    provider = claimed.integration.provider.as_str(), integration = %claimed.integration.id,
                    "a delivery's lease ran out before it was recorded; whoever holds it now records it"
                );
                break;
            }
            Err(e) => {
                // The lease runs out and the delivery is tried again; the CRM person is found by
                // phone or by the id remembered for the lead.
                tracing::error!(error = %e, "cannot record a delivery");
                break;
            }
        }
        next = match ctx.store.next_due_of_lead(user, &claimed).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "cannot look for a newer version of a lead");
                None
            }
        };
    }
    outcomes
}

/// When a failed delivery is tried again by the scheduled run ([`policy::retry_delay`]).
fn next_try(total_attempts: i32) -> chrono::DateTime<Utc> {
    Utc::now() + policy::retry_delay(total_attempts)
}

fn after(wait: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(1))
}

/// The retries of one push: [`policy::PUSH_RETRIES`] after the first attempt, full-jitter exponential
/// backoff from `base` (the CRM transport's one retry policy).
fn push_retry(base: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: policy::PUSH_RETRIES + 1,
        base,
        cap: BACKOFF_CAP,
        max_wait: BACKOFF_CAP,
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
/// the deadline (the reservation is given back). Once the bucket cannot be reached (`unavailable`),
/// the rest of the push goes unpaced without asking again: an outage costs one timeout per push, not
/// one per call.
async fn pace(
    ctx: &Context,
    client: &CrmClient,
    integration: &IntegrationRecord,
    deadline: Instant,
    unavailable: &std::sync::atomic::AtomicBool,
) -> Result<(), Duration> {
    use std::sync::atomic::Ordering;
    if unavailable.load(Ordering::Relaxed) {
        return Ok(());
    }
    let provider = integration.provider;
    let rate = account_rate(
        client
            .advertised_rate()
            .unwrap_or_else(|| client.kind().documented_rate()),
    );
    let key = format!("crm:{}:{}", provider.as_str(), integration.id);
    // A turn that leaves no time for the call itself is no turn.
    let max_wait = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(MIN_CALL_TIME);
    match ctx.buckets.reserve(&key, rate, 1, max_wait).await {
        Ok(wait) => {
            if !wait.is_zero() {
                crate::metrics::pacing_wait(provider, wait);
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Err(LimiterError::WaitTooLong(wait)) => Err(wait),
        Err(e) => {
            // The CRM's own limits (and our client's pacing on its headers) still apply.
            tracing::warn!(error = %e, "outbound pacing unavailable; pushing unpaced");
            unavailable.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// Why a push stopped without an answer of the CRM to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Its turn in the account's bucket would come after the deadline, in this long.
    Paced(Duration),
    /// An unanswered create may still land: the person is looked for from this time on.
    Settling(chrono::DateTime<Utc>),
    /// Too little time is left to send a create.
    NoTime,
    /// The claim's lease is no longer held: nothing more may be sent.
    LeaseLost,
}

/// One push: find the person by phone, else by the id remembered for the lead, and update it, else
/// create it. Each CRM call first waits for its turn (`pace`); a create is first noted (`note`, which
/// says whether the lease is still held).
async fn push_once<P, F, N, G>(
    client: &CrmClient,
    lead: &Lead,
    phone: &PhoneNumber,
    link: &mut PushLink,
    attempt: &Attempt,
    pace: &mut P,
    note: &mut N,
) -> Result<Result<PushResult, CrmError>, Halt>
where
    P: FnMut() -> F,
    F: Future<Output = Result<(), Duration>>,
    N: FnMut() -> G,
    G: Future<Output = bool>,
{
    // A create whose answer never came: give the CRM time to finish it (and show it).
    if let Some(sent) = link.create_sent_at {
        let ready = sent + chrono::Duration::from_std(attempt.settle).unwrap_or_default();
        let wait = (ready - Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            if Instant::now() + wait + MIN_CREATE_TIME > attempt.deadline {
                return Err(Halt::Settling(ready));
            }
            tokio::time::sleep(wait).await;
        }
    }
    // Each search (a CRM may need one per form the phone may have been typed in) takes its turn.
    let found = match client
        .find_by_phone_paced(phone, attempt.region, pace)
        .await
        .map_err(Halt::Paced)?
    {
        Ok(found) => found,
        Err(e) => return Ok(Err(e)),
    };
    if let Some((id, existing)) = found {
        pace().await.map_err(Halt::Paced)?;
        return Ok(client.update(&id, &existing, lead).await);
    }
    if let Some(id) = link.external_id.clone() {
        // The person crmsync made for this lead, not found by phone: the lead's phone changed, or
        // the CRM does not show the person yet.
        pace().await.map_err(Halt::Paced)?;
        match client.read(&id).await {
            Ok(existing) => {
                pace().await.map_err(Halt::Paced)?;
                return Ok(client.update(&id, &existing, lead).await);
            }
            Err(CrmError::NotFound) if client.kind().writes_before_visible() => {
                pace().await.map_err(Halt::Paced)?;
                match client.update(&id, &Value::Null, lead).await {
                    Err(CrmError::NotFound) => link.external_id = None,
                    other => return Ok(other),
                }
            }
            // Deleted in the CRM: the lead is created again.
            Err(CrmError::NotFound) => link.external_id = None,
            Err(e) => return Ok(Err(e)),
        }
    }
    if Instant::now() + MIN_CREATE_TIME > attempt.deadline {
        return Err(Halt::NoTime);
    }
    pace().await.map_err(Halt::Paced)?;
    if !note().await {
        return Err(Halt::LeaseLost);
    }
    link.create_sent_at = Some(Utc::now());
    let created = client.create(lead).await;
    match &created {
        Err(e) if e.may_have_been_processed() => {}
        _ => link.create_sent_at = None,
    }
    Ok(created)
}

/// Pushes a claimed delivery with retries; never fails, it says how it went.
async fn push_claimed(
    ctx: &Context,
    claimed: &ClaimedDelivery,
    deadline: Instant,
) -> DeliveryOutcome {
    let integration = &claimed.integration;
    let failed = |error: String| DeliveryOutcome::Failed {
        error,
        attempts: 1,
        retry_at: next_try(claimed.attempts + 1),
    };
    // The outbox holds the lead as validated when it was accepted.
    let lead = match serde_json::from_value::<Lead>(claimed.payload.clone()) {
        Ok(lead) => lead,
        Err(e) => return failed(format!("The stored lead cannot be read: {e}.")),
    };
    let Some(phone) = lead.phone.clone() else {
        return failed("The lead has no phone number.".into());
    };
    let mut conn = match Connection::open(ctx, integration).await {
        Ok(c) => c,
        Err(e) => return failed(e.detail()),
    };
    let attempt = Attempt {
        retry: push_retry(ctx.settings.push_backoff),
        previous_attempts: claimed.attempts,
        deadline,
        settle: ctx.settings.create_settle,
        region: phone_region(ctx, integration),
    };
    let client = conn.client.clone();
    let limiter_down = std::sync::atomic::AtomicBool::new(false);
    let mut pace = || pace(ctx, &client, integration, deadline, &limiter_down);
    let user = integration.user_id;
    let mut note = || async move {
        match ctx.store.note_create_sent(user, claimed).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "cannot note a create before sending it; not sending it");
                false
            }
        }
    };
    let mut link = claimed.link.clone();
    Box::pin(push_with_retries(
        &mut conn, &lead, &phone, &mut link, &attempt, &mut pace, &mut note,
    ))
    .await
}

/// The terms of one round of attempts at a push.
struct Attempt {
    retry: RetryPolicy,
    /// Attempts of earlier rounds (they set when a failed delivery is tried again).
    previous_attempts: i32,
    deadline: Instant,
    /// See `Settings::create_settle`.
    settle: Duration,
    /// The integration's phone region (the forms the phone is searched in).
    region: Region,
}

/// Pushes `lead` until it is delivered, a failure is not worth retrying, the retries are spent or the
/// next try would be past the deadline. A failure waits for the CRM's `Retry-After`, else for the retry
/// policy's backoff; a push that cannot get its turn before the deadline (`pace`), or that must wait
/// past it for an unanswered create to settle, is deferred.
async fn push_with_retries<P, F, N, G>(
    conn: &mut impl Session,
    lead: &Lead,
    phone: &PhoneNumber,
    link: &mut PushLink,
    attempt: &Attempt,
    pace: &mut P,
    note: &mut N,
) -> DeliveryOutcome
where
    P: FnMut() -> F,
    F: Future<Output = Result<(), Duration>>,
    N: FnMut() -> G,
    G: Future<Output = bool>,
{
    let provider = conn.client().provider();
    let retry = attempt.retry;
    let mut attempts: i32 = 0;
    let mut recovered = false;
    let mut last_error: Option<String> = None;
    loop {
        let halted = |halt: Halt, attempts: i32, last_error: Option<String>| {
            let retry_at = match halt {
                Halt::Paced(wait) => after(wait),
                Halt::Settling(at) => at,
                Halt::NoTime | Halt::LeaseLost => Utc::now(),
            };
            match (attempts, last_error) {
                // Nothing was tried (or what was tried is not over): no failure to count.
                (0, _) | (_, None) => DeliveryOutcome::Deferred { retry_at },
                (attempts, Some(error)) => DeliveryOutcome::Failed {
                    error: match halt {
                        Halt::Paced(_) => format!(
                            "{} was paced out before the retries were done.",
                            provider.label()
                        ),
                        _ => error,
                    },
                    attempts,
                    retry_at,
                },
            }
        };
        let result = match Box::pin(push_once(
            conn.client(),
            lead,
            phone,
            link,
            attempt,
            pace,
            note,
        ))
        .await
        {
            Ok(result) => result,
            Err(halt) => return halted(halt, attempts, last_error),
        };
        if matches!(result, Err(CrmError::OutOfTime)) {
            // Nothing was sent: not a failure of the CRM.
            return halted(Halt::NoTime, attempts, last_error);
        }
        attempts += 1;
        match result {
            Ok(done) => {
                return DeliveryOutcome::Delivered {
                    external_id: done.external_id.or_else(|| link.external_id.clone()),
                    action: done.action.as_str().to_owned(),
                    attempts,
                };
            }
            // Refused credentials: a fresh token is tried once; credentials that cannot be recovered
            // leave the integration `needs_reauth`.
            Err(CrmError::InvalidCredentials) if !recovered => {
                recovered = true;
                if let Err(e) = conn.recover().await {
                    return DeliveryOutcome::Failed {
                        error: e.detail(),
                        attempts,
                        retry_at: next_try(attempt.previous_attempts + attempts),
                    };
                }
            }
            Err(e) => {
                let retryable = e.is_retryable();
                let wait = match &e {
                    CrmError::RateLimited { retry_after } => *retry_after,
                    _ => retry.backoff(attempts as u32),
                };
                let sentence = AppError::from_crm(provider, e).detail();
                // After an unanswered create, the next try is no sooner than the CRM may show it.
                let settled = link.create_sent_at.map(|sent| {
                    sent + chrono::Duration::from_std(attempt.settle).unwrap_or_default()
                });
                if !retryable || attempts >= retry.max_attempts as i32 {
                    let retry_at = next_try(attempt.previous_attempts + attempts);
                    return DeliveryOutcome::Failed {
                        error: sentence,
                        attempts,
                        retry_at: settled.map_or(retry_at, |s| s.max(retry_at)),
                    };
                }
                if Instant::now() + wait > attempt.deadline {
                    return DeliveryOutcome::Failed {
                        error: sentence,
                        attempts,
                        retry_at: settled.map_or(after(wait), |s| s.max(after(wait))),
                    };
                }
                tracing::info!(
                    provider = provider.as_str(),
                    attempt = attempts,
                    "push failed; retrying"
                );
                last_error = Some(sentence);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Pushes every user's due deliveries until `deadline` (the scheduled run).
pub async fn drain_all(ctx: &Context, deadline: Instant) -> Result<PushTally, AppError> {
    let due = ctx.store.due_deliveries_all(DRAIN_BATCH).await?;
    let mut by_user: std::collections::BTreeMap<Uuid, Vec<Uuid>> = Default::default();
    for (user, delivery) in due {
        by_user.entry(user).or_default().push(delivery);
    }
    // Users side by side; each user's deliveries in order (their accounts' pacing sets the pace).
    let tallies = futures::future::join_all(
        by_user
            .iter()
            .map(|(user, ids)| process_in_order(ctx, *user, ids, Trigger::Schedule, deadline)),
    )
    .await;
    Ok(tallies
        .into_iter()
        .fold(PushTally::default(), PushTally::add))
}

/// What running an integration now did: the pull's metrics, then the pushes of its due deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationSynced {
    #[serde(flatten)]
    pub pull: SyncMetrics,
    pub pushed: usize,
    pub failed: usize,
    /// Due deliveries left for the scheduled run.
    pub pending: usize,
}

/// Runs `integration` now: a pull (`since` replaces its cursor; `full` reads the whole account), then
/// its due deliveries, until `deadline`.
pub async fn sync_integration(
    ctx: &Context,
    integration: &IntegrationRecord,
    since: Option<chrono::DateTime<Utc>>,
    full: bool,
    deadline: Instant,
) -> Result<IntegrationSynced, AppError> {
    let user = integration.user_id;
    let request = SyncRequest { since, full };
    let metrics = pull::sync(ctx, integration, request, Trigger::Manual, Some(deadline)).await?;
    // "Sync now": what waits in backoff goes now.
    ctx.store.make_deliveries_due(user, integration.id).await?;
    let due = ctx
        .store
        .due_deliveries(user, Some(integration.id), DRAIN_BATCH)
        .await?;
    let tally = process_in_order(ctx, user, &due, Trigger::Manual, deadline).await;
    Ok(IntegrationSynced {
        pull: metrics,
        pushed: tally.pushed,
        failed: tally.failed,
        pending: due.len().saturating_sub(tally.pushed + tally.failed),
    })
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

    mod loop_rules {
        //! The rules of one round of attempts, against a fake CRM and a pacer that says yes or no.
        use super::super::*;
        use crate::fake::{Call, FakeCrm};
        use crmsync_domain::{LeadPayload, Region};
        use serde_json::json;

        fn lead() -> (Lead, PhoneNumber) {
            let payload: LeadPayload = serde_json::from_value(json!({
                "id": "L1", "userId": "6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f",
                "firstName": "Ann", "phone": "+14155550123", "riskScore": 5
            }))
            .unwrap();
            let lead = Lead::from_payload(payload, Region::US).unwrap();
            let phone = lead.phone.clone().unwrap();
            (lead, phone)
        }

        fn attempt(deadline: Duration) -> Attempt {
            Attempt {
                retry: push_retry(Duration::from_millis(1)),
                previous_attempts: 2,
                deadline: Instant::now() + deadline,
                settle: Duration::from_millis(50),
                region: Region::US,
            }
        }

        /// A client that cannot recover from refused credentials.
        struct Plain(CrmClient);

        impl Session for Plain {
            fn client(&self) -> &CrmClient {
                &self.0
            }

            async fn recover(&mut self) -> Result<(), AppError> {
                Err(AppError::InvalidCredentials(
                    "Follow Up Boss refused the credentials; reconnect the integration.".into(),
                ))
            }
        }

        async fn push(crm: &std::sync::Arc<FakeCrm>, attempt: &Attempt) -> DeliveryOutcome {
            push_linked(crm, attempt, &mut PushLink::default()).await
        }

        async fn push_linked(
            crm: &std::sync::Arc<FakeCrm>,
            attempt: &Attempt,
            link: &mut PushLink,
        ) -> DeliveryOutcome {
            let (lead, phone) = lead();
            let mut pace = || async { Ok(()) };
            let mut note = || async { true };
            let mut session = Plain(crm.client());
            push_with_retries(
                &mut session,
                &lead,
                &phone,
                link,
                attempt,
                &mut pace,
                &mut note,
            )
            .await
        }

        fn transport() -> CrmError {
            CrmError::Transport("Follow Up Boss: the connection failed".into())
        }

        #[tokio::test]
        async fn a_person_found_by_phone_is_updated_and_a_missing_one_created() {
            let crm = FakeCrm::new();
            crm.find(Ok(Some(("77".into(), json!({"id": 77})))));
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            assert!(
                matches!(&outcome, DeliveryOutcome::Delivered { action, attempts: 1, .. } if action == "updated"),
                "{outcome:?}"
            );
            assert_eq!(
                crm.calls(),
                [
                    Call::Find,
                    Call::Update {
                        external_id: "77".into()
                    }
                ]
            );

            let crm = FakeCrm::new();
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            assert!(
                matches!(&outcome, DeliveryOutcome::Delivered { action, .. } if action == "created"),
                "{outcome:?}"
            );
            assert_eq!(crm.calls(), [Call::Find, Call::Create]);

            // A write the CRM refuses for good (a 4xx) is not tried again in this round.
            let crm = FakeCrm::new();
            crm.write(Err(CrmError::Upstream {
                status: 400,
                message: "Follow Up Boss answered with an error".into(),
            }));
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            assert!(
                matches!(outcome, DeliveryOutcome::Failed { attempts: 1, .. }),
                "{outcome:?}"
            );
            assert_eq!(crm.calls(), [Call::Find, Call::Create]);
        }

        #[tokio::test]
        async fn a_transient_failure_is_retried_then_delivered() {
            let crm = FakeCrm::new();
            crm.find(Err(transport())).find(Ok(None));
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            assert!(
                matches!(outcome, DeliveryOutcome::Delivered { attempts: 2, .. }),
                "{outcome:?}"
            );
            assert_eq!(crm.calls(), [Call::Find, Call::Find, Call::Create]);
        }

        #[tokio::test]
        async fn refused_credentials_are_not_retried() {
            let crm = FakeCrm::new();
            crm.find(Err(CrmError::InvalidCredentials));
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            let DeliveryOutcome::Failed {
                attempts,
                error,
                retry_at,
            } = outcome
            else {
                panic!("{outcome:?}");
            };
            assert_eq!(attempts, 1);
            assert!(error.contains("reconnect"), "{error}");
            // The outbox tries again after the delay of the delivery's third attempt in all.
            let delay = retry_at - Utc::now();
            assert!(
                delay <= policy::retry_delay(3) && delay > policy::retry_delay(2),
                "{delay}"
            );
            assert_eq!(crm.calls(), [Call::Find]);
        }

        #[tokio::test]
        async fn retries_end_after_the_policy_s_attempts() {
            let crm = FakeCrm::new();
            for _ in 0..10 {
                crm.find(Err(transport()));
            }
            let outcome = push(&crm, &attempt(Duration::from_secs(5))).await;
            assert!(
                matches!(outcome, DeliveryOutcome::Failed { attempts, .. } if attempts == policy::PUSH_RETRIES as i32 + 1),
                "{outcome:?}"
            );
            assert_eq!(crm.calls().len(), policy::PUSH_RETRIES as usize + 1);
        }

        #[tokio::test]
        async fn a_retry_after_beyond_the_deadline_is_left_to_the_outbox_at_that_time() {
            let crm = FakeCrm::new();
            crm.find(Err(CrmError::RateLimited {
                retry_after: Duration::from_secs(30),
            }));
            let outcome = push(&crm, &attempt(Duration::from_secs(1))).await;
            let DeliveryOutcome::Failed {
                attempts: 1,
                retry_at,
                ..
            } = outcome
            else {
                panic!("{outcome:?}");
            };
            let delay = (retry_at - Utc::now()).num_seconds();
            assert!((28..=30).contains(&delay), "{delay}");
            assert_eq!(crm.calls(), [Call::Find]);
        }

        #[tokio::test]
        async fn a_push_that_cannot_get_its_turn_is_deferred_untouched() {
            let crm = FakeCrm::new();
            let (lead, phone) = lead();
            let mut pace = || async { Err(Duration::from_secs(60)) };
            let mut note = || async { true };
            let outcome = push_with_retries(
                &mut Plain(crm.client()),
                &lead,
                &phone,
                &mut PushLink::default(),
                &attempt(Duration::from_secs(5)),
                &mut pace,
                &mut note,
            )
            .await;
            assert!(
                matches!(outcome, DeliveryOutcome::Deferred { .. }),
                "{outcome:?}"
            );
            assert!(crm.calls().is_empty(), "no CRM call without a turn");

            // Paced out after an attempt: a failure (it counts), tried again when the turn comes.
            let crm = FakeCrm::new();
            crm.find(Err(transport()));
            let turns = std::cell::Cell::new(0);
            let mut pace = || {
                turns.set(turns.get() + 1);
                let first = turns.get() == 1;
                async move {
                    if first {
                        Ok(())
                    } else {
                        Err(Duration::from_secs(60))
                    }
                }
            };
            let outcome = push_with_retries(
                &mut Plain(crm.client()),
                &lead,
                &phone,
                &mut PushLink::default(),
                &attempt(Duration::from_secs(5)),
                &mut pace,
                &mut note,
            )
            .await;
            let DeliveryOutcome::Failed {
                attempts: 1, error, ..
            } = outcome
            else {
                panic!("{outcome:?}");
            };
            assert!(error.contains("paced out"), "{error}");
        }
    }

    mod unanswered_writes {
        //! A write that may have been processed is never blindly sent again.
        use super::super::*;
        use crate::fake::{Call, FakeCrm};
        use crmsync_domain::{LeadPayload, Region};
        use serde_json::json;

        fn lead() -> (Lead, PhoneNumber) {
            let payload: LeadPayload = serde_json::from_value(json!({
                "id": "L2", "userId": "6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f",
                "firstName": "Bo", "phone": "+14155550124", "riskScore": 5
            }))
            .unwrap();
            let lead = Lead::from_payload(payload, Region::US).unwrap();
            let phone = lead.phone.clone().unwrap();
            (lead, phone)
        }

        struct Plain(CrmClient);

        impl Session for Plain {
            fn client(&self) -> &CrmClient {
                &self.0
            }

            async fn recover(&mut self) -> Result<(), AppError> {
                Err(AppError::InvalidCredentials("no".into()))
            }
        }

        fn attempt(deadline: Duration, settle: Duration) -> Attempt {
            Attempt {
                retry: push_retry(Duration::from_millis(1)),
                previous_attempts: 0,
                deadline: Instant::now() + deadline,
                settle,
                region: Region::US,
            }
        }

        async fn push(
            crm: &std::sync::Arc<FakeCrm>,
            attempt: &Attempt,
            link: &mut PushLink,
            notes: &std::cell::Cell<u32>,
        ) -> DeliveryOutcome {
            let (lead, phone) = lead();
            let mut pace = || async { Ok(()) };
            let mut note = || {
                notes.set(notes.get() + 1);
                async { true }
            };
            push_with_retries(
                &mut Plain(crm.client()),
                &lead,
                &phone,
                link,
                attempt,
                &mut pace,
                &mut note,
            )
            .await
        }

        fn lost() -> CrmError {
            CrmError::Unanswered("Lofty: the connection was dropped".into())
        }

        #[tokio::test]
        async fn an_unanswered_create_is_looked_for_after_the_settle_time_not_repeated() {
            // The create was processed, its answer lost; after the settle time the person is found.
            let crm = FakeCrm::new();
            crm.find(Ok(None))
                .write(Err(lost()))
                .find(Ok(Some(("501".into(), json!({"id": 501})))));
            let notes = std::cell::Cell::new(0);
            let mut link = PushLink::default();
            let started = Instant::now();
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(10), Duration::from_millis(300)),
                &mut link,
                &notes,
            )
            .await;
            assert!(
                matches!(&outcome, DeliveryOutcome::Delivered { external_id: Some(id), attempts: 2, .. } if id == "501"),
                "{outcome:?}"
            );
            assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
            assert_eq!(notes.get(), 1, "one create noted before it was sent");
            assert_eq!(
                crm.calls(),
                [
                    Call::Find,
                    Call::Create,
                    Call::Find,
                    Call::Update {
                        external_id: "501".into()
                    }
                ]
            );
        }

        #[tokio::test]
        async fn a_settle_time_past_the_deadline_leaves_it_to_the_outbox_then() {
            let crm = FakeCrm::new();
            crm.find(Ok(None)).write(Err(lost()));
            let notes = std::cell::Cell::new(0);
            let mut link = PushLink::default();
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(5), Duration::from_secs(60)),
                &mut link,
                &notes,
            )
            .await;
            let DeliveryOutcome::Failed {
                attempts: 1,
                retry_at,
                ..
            } = outcome
            else {
                panic!("{outcome:?}");
            };
            assert!(
                retry_at >= Utc::now() + chrono::Duration::seconds(55),
                "{retry_at}"
            );
            assert_eq!(crm.calls(), [Call::Find, Call::Create], "no second create");
            assert!(link.create_sent_at.is_some());

            // The next round, with the create noted long ago: the person is not there, so it is
            // created (the first one did not land).
            let crm = FakeCrm::new();
            let mut link = PushLink {
                external_id: None,
                create_sent_at: Some(Utc::now() - chrono::Duration::seconds(61)),
            };
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(5), Duration::from_secs(60)),
                &mut link,
                &notes,
            )
            .await;
            assert!(
                matches!(outcome, DeliveryOutcome::Delivered { .. }),
                "{outcome:?}"
            );
            assert_eq!(crm.calls(), [Call::Find, Call::Create]);
        }

        #[tokio::test]
        async fn a_refused_create_is_not_waited_for() {
            let crm = FakeCrm::new();
            crm.find(Ok(None)).write(Err(CrmError::Upstream {
                status: 400,
                message: "bad".into(),
            }));
            let notes = std::cell::Cell::new(0);
            let mut link = PushLink::default();
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(5), Duration::from_secs(60)),
                &mut link,
                &notes,
            )
            .await;
            assert!(
                matches!(outcome, DeliveryOutcome::Failed { .. }),
                "{outcome:?}"
            );
            assert_eq!(link.create_sent_at, None, "a 400 was not processed");
        }

        #[tokio::test]
        async fn the_person_made_for_the_lead_is_updated_when_the_phone_search_misses() {
            // Found by id (the lead's phone changed since).
            let crm = FakeCrm::new();
            crm.find(Ok(None));
            let notes = std::cell::Cell::new(0);
            let mut link = PushLink {
                external_id: Some("77".into()),
                create_sent_at: None,
            };
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(5), Duration::from_secs(60)),
                &mut link,
                &notes,
            )
            .await;
            assert!(
                matches!(outcome, DeliveryOutcome::Delivered { .. }),
                "{outcome:?}"
            );
            assert_eq!(
                crm.calls(),
                [
                    Call::Find,
                    Call::Read {
                        external_id: "77".into()
                    },
                    Call::Update {
                        external_id: "77".into()
                    }
                ]
            );
            assert_eq!(notes.get(), 0, "no create");

            // Deleted in the CRM since (this fake is Follow Up Boss, which shows what it stores):
            // created again.
            let crm = FakeCrm::new();
            crm.find(Ok(None)).read(Err(CrmError::NotFound));
            let outcome = push(
                &crm,
                &attempt(Duration::from_secs(5), Duration::from_secs(60)),
                &mut link,
                &notes,
            )
            .await;
            assert!(
                matches!(outcome, DeliveryOutcome::Delivered { .. }),
                "{outcome:?}"
            );
            assert_eq!(
                crm.calls(),
                [
                    Call::Find,
                    Call::Read {
                        external_id: "77".into()
                    },
                    Call::Create
                ]
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = push_retry(Duration::from_millis(250));
        for n in 1..20 {
            assert!(retry.backoff(n) <= BACKOFF_CAP);
        }
        assert!(next_try(0) > Utc::now());
        assert!(
            next_try(30) <= Utc::now() + chrono::Duration::hours(6) + chrono::Duration::seconds(1)
        );
    }
}
