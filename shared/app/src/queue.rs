//! Syncs on a queue (SQS): one message per integration to sync, meaning "pull it, then push its due
//! deliveries". The scheduled run ([`dispatch`]) sends one per integration that is due; "sync now" and
//! CRM webhooks send the same ([`request`]); the `sync-worker` function does what a message says
//! ([`work`]), and a sync cut short by its deadline sends its own continuation, so a large account
//! finishes in the background.
//!
//! An integration is queued once at a time: a message is sent only after a conditional `UPDATE` of
//! its row claims it (`crmsync_store::QueueClaim`), and the message carries the claim's token. Two
//! dispatcher runs that overlap, or ten "sync now" calls at once, claim it once; a message whose token
//! is no longer the claim's (a duplicate delivery by SQS, a message of an earlier claim) is dropped.
//! The worker clears the claim when it is done; a claim whose message was lost or dead-lettered expires
//! after the queue's redelivery window ([`SyncQueue::claim_ttl`]; a "sync now" holds its claim only as
//! long as its Lambda may run), and the next dispatcher run queues the integration again. The pull itself holds the integration's sync lock, and resumes from what was
//! saved, so a worker killed mid-sync leaves its message to be received again and the next receive
//! goes on where it stopped; pushes hold their delivery's lease (see [`crate::push`]). CRM pacing is
//! the accounts' DynamoDB buckets, shared by every worker.

use std::time::{Duration, Instant};

use crmsync_domain::{IntegrationStatus, Trigger};
use crmsync_store::{ClaimFinished, IntegrationRecord, QueueClaim};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pull::{self, SyncMetrics, SyncRequest};
use crate::push::{self, DRAIN_BATCH};
use crate::{AppError, Context};

/// The queue the use cases send to, and how long a claim holds.
#[derive(Debug, Clone)]
pub struct SyncQueue {
    pub queue: crmsync_aws::Queue,
    /// How long a claim keeps others from queueing its integration again without its worker clearing
    /// it: at least the queue's visibility timeout times its receives before the dead-letter queue, so
    /// a message that is still to be received again keeps its claim.
    pub claim_ttl: Duration,
}

/// Why a message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The scheduled run found the integration due.
    Schedule,
    /// "Sync now" (`POST /api/integrations/{id}/sync`).
    Now,
    /// A CRM webhook said the account changed.
    Webhook,
    /// The rest of a sync cut short by its deadline (or put off while another sync of the integration
    /// ran).
    Continuation,
    /// A CRM webhook asked for a sync while the integration's claim was held: its holder, done, syncs
    /// it again, as the run it held may have read the account before the change.
    Requested,
}

/// One message of the sync queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncMessage {
    pub integration_id: Uuid,
    pub user_id: Uuid,
    /// The claim this message belongs to.
    pub token: Uuid,
    pub reason: Reason,
    /// What started the work (the sync logs' `trigger`: `schedule`, `manual`, `webhook`); a
    /// continuation keeps its origin's.
    #[serde(with = "trigger_name")]
    pub trigger: Trigger,
    /// Pull before pushing (`false`: only the integration's due deliveries are pushed).
    #[serde(default = "yes")]
    pub pull: bool,
    /// Messages before this one in its chain of continuations.
    #[serde(default)]
    pub part: u32,
}

fn yes() -> bool {
    true
}

/// A [`Trigger`] as its wire name.
mod trigger_name {
    use crmsync_domain::Trigger;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Trigger, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Trigger, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl SyncMessage {
    fn claim(&self) -> QueueClaim {
        QueueClaim {
            integration_id: self.integration_id,
            user_id: self.user_id,
            token: self.token,
        }
    }

    /// The message that syncs the integration again under the same claim.
    fn again(&self) -> SyncMessage {
        SyncMessage {
            reason: Reason::Requested,
            pull: true,
            part: self.part.saturating_add(1),
            ..self.clone()
        }
    }

    fn continued(&self) -> SyncMessage {
        SyncMessage {
            reason: Reason::Continuation,
            part: self.part.saturating_add(1),
            ..self.clone()
        }
    }
}

/// The message of a claim.
pub fn message(claim: &QueueClaim, reason: Reason, trigger: Trigger, pull: bool) -> SyncMessage {
    SyncMessage {
        integration_id: claim.integration_id,
        user_id: claim.user_id,
        token: claim.token,
        reason,
        trigger,
        pull,
        part: 0,
    }
}

fn the_queue(ctx: &Context) -> Result<&SyncQueue, AppError> {
    ctx.queue
        .as_ref()
        .ok_or_else(|| AppError::internal("no sync queue is configured (SYNC_QUEUE_URL)"))
}

/// Sends `message` after `delay`.
pub async fn send(ctx: &Context, message: &SyncMessage, delay: Duration) -> Result<(), AppError> {
    let queue = the_queue(ctx)?;
    let body = serde_json::to_string(message).map_err(AppError::internal)?;
    queue
        .queue
        .send(body, delay)
        .await
        .map_err(AppError::internal)
}

/// How long a claim of a queued message holds ([`SyncQueue::claim_ttl`]); without a queue, as long as
/// a Lambda may run.
pub fn claim_ttl(ctx: &Context) -> Duration {
    ctx.queue
        .as_ref()
        .map_or(Duration::from_secs(900), |q| q.claim_ttl)
}

/// What [`request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A message was sent.
    Queued,
    /// The integration is queued or being synced already: it is marked, and that run's holder syncs it
    /// again when it is done.
    AlreadyQueued,
}

/// Queues `integration` (a webhook's rest, say); if it is queued or being synced already, marks it so
/// that the run holding it syncs it again when done.
pub async fn request(
    ctx: &Context,
    integration: &IntegrationRecord,
    reason: Reason,
    trigger: Trigger,
) -> Result<Requested, AppError> {
    the_queue(ctx)?;
    let Some(claim) = ctx
        .store
        .claim_or_request_sync(integration.user_id, integration.id, claim_ttl(ctx))
        .await?
    else {
        return Ok(Requested::AlreadyQueued);
    };
    send_claimed(ctx, &message(&claim, reason, trigger, true)).await?;
    Ok(Requested::Queued)
}

/// Sends the first message of a claim just taken; if it cannot be sent, the claim is released (so the
/// next request queues the integration) and the error returned.
pub async fn send_claimed(ctx: &Context, message: &SyncMessage) -> Result<(), AppError> {
    send_or_release(ctx, message, Duration::ZERO).await
}

/// Sends `message` after `delay`; if it cannot be sent, releases its claim (so the next request
/// queues the integration again) and returns the error.
async fn send_or_release(
    ctx: &Context,
    message: &SyncMessage,
    delay: Duration,
) -> Result<(), AppError> {
    if let Err(e) = send(ctx, message, delay).await {
        if let Err(release) = ctx.store.release_claim(&message.claim()).await {
            tracing::warn!(error = %release, "cannot release a queue claim whose message was not sent");
        }
        return Err(e);
    }
    Ok(())
}

/// What a dispatcher run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatched {
    /// Active integrations.
    pub integrations: usize,
    /// Integrations due (a pull, or deliveries to push).
    pub due: usize,
    /// Messages sent.
    pub queued: usize,
    /// Due integrations already queued or being synced (by an overlapping run, "sync now", a webhook).
    pub already_queued: usize,
    /// Messages that could not be sent (their claims released: the next run tries again).
    pub failed: usize,
}

type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, usize)> + Send + 'a>>;

/// Batches the dispatcher sends at once.
const SEND_CONCURRENCY: usize = 4;

/// Sends the first messages of claims just taken, in one call; the claims of those that could not be
/// sent are released (the next run queues them). How many were sent, and how many not.
async fn send_batch_or_release(ctx: &Context, messages: &[SyncMessage]) -> (usize, usize) {
    let Ok(queue) = the_queue(ctx) else {
        return (0, messages.len());
    };
    let bodies: Vec<String> = messages
        .iter()
        .map(|m| serde_json::to_string(m).unwrap_or_default())
        .collect();
    let results = queue.queue.send_batch(&bodies).await;
    let (mut sent, mut failed) = (0, 0);
    for (message, result) in messages.iter().zip(results) {
        match result {
            Ok(()) => sent += 1,
            Err(e) => {
                failed += 1;
                tracing::warn!(error = %e, integration = %message.integration_id, "cannot queue a due integration");
                if let Err(release) = ctx.store.release_claim(&message.claim()).await {
                    tracing::warn!(error = %release, "cannot release a queue claim whose message was not sent");
                }
            }
        }
    }
    (sent, failed)
}

/// The scheduled run as a dispatcher: claims every active integration that is due (a pull by
/// [`crate::schedule::due`], or deliveries due) and is not queued, and sends one message for each.
pub async fn dispatch(ctx: &Context) -> Result<Dispatched, AppError> {
    the_queue(ctx)?;
    let all = ctx.store.active_integrations_all().await?;
    let now = chrono::Utc::now();
    let with_deliveries: std::collections::HashSet<Uuid> = ctx
        .store
        .integrations_with_due_deliveries()
        .await?
        .into_iter()
        .collect();
    // A sync requested while a claim held it, whose holder vanished before it could sync again, is due.
    let requested: std::collections::HashSet<Uuid> = ctx
        .store
        .integrations_requested()
        .await?
        .into_iter()
        .collect();
    let pull_due: std::collections::HashSet<Uuid> = all
        .iter()
        .filter(|i| crate::schedule::due(i, now) || requested.contains(&i.id))
        .map(|i| i.id)
        .collect();
    let due: Vec<Uuid> = all
        .iter()
        .map(|i| i.id)
        .filter(|id| pull_due.contains(id) || with_deliveries.contains(id))
        .collect();
    let claims = ctx.store.claim_syncs_all(&due, claim_ttl(ctx)).await?;
    let mut report = Dispatched {
        integrations: all.len(),
        due: due.len(),
        already_queued: due.len() - claims.len(),
        ..Default::default()
    };
    // Ten messages a call (SendMessageBatch), a few calls at once; each batch boxed and owning its
    // messages, which keeps the run's future `Send` provable (as the scheduled run's pulls).
    let batches: Vec<SendFuture<'_>> = claims
        .chunks(crmsync_aws::queue::BATCH)
        .map(|chunk| -> SendFuture<'_> {
            let messages: Vec<SyncMessage> = chunk
                .iter()
                .map(|claim| {
                    let pull = pull_due.contains(&claim.integration_id);
                    message(claim, Reason::Schedule, Trigger::Schedule, pull)
                })
                .collect();
            Box::pin(async move { send_batch_or_release(ctx, &messages).await })
        })
        .collect();
    let mut sends = futures::stream::iter(batches).buffer_unordered(SEND_CONCURRENCY);
    while let Some((sent, failed)) = sends.next().await {
        report.queued += sent;
        report.failed += failed;
    }
    drop(sends);
    match ctx.store.health().await {
        Ok(health) => crate::metrics::health(&health),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the outbox and integrations for metrics")
        }
    }
    tracing::info!(?report, "dispatcher run finished");
    if report.failed > 0 && report.queued == 0 {
        return Err(AppError::internal(
            "no due integration could be queued: the sync queue refused every message",
        ));
    }
    Ok(report)
}

/// How long a message put off while another sync of its integration runs waits.
pub const BUSY_DELAY: Duration = Duration::from_secs(30);

/// What [`work`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Worked {
    /// Synced to the end: the claim is cleared.
    Done(Synced),
    /// Cut short by the deadline: the continuation is queued.
    Continued(Synced),
    /// Another sync of the integration was running: the message is sent again after a while.
    PutOff,
    /// The message's claim is no longer the integration's (a duplicate, or an earlier claim's), or the
    /// integration is gone: nothing done.
    Stale,
    /// The integration is not active (paused, or needing its user to connect again): nothing done, the
    /// claim cleared.
    Inactive,
}

/// What one message's work did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Synced {
    /// The pull's metrics (`None`: the message asked for pushes only).
    pub pull: Option<SyncMetrics>,
    pub pushed: usize,
    pub failed: usize,
    pub pending: usize,
}

/// Does what `message` says until `deadline`: pulls the integration (resuming a read cut short
/// before), then pushes its due deliveries. An error is one to retry (the message is received again,
/// and after a few receives goes to the dead-letter queue); everything else is acknowledged: a
/// sync cut short or put off sends its own continuation, and a stale message or an integration that
/// is not active is dropped.
pub async fn work(
    ctx: &Context,
    message: &SyncMessage,
    deadline: Instant,
) -> Result<Worked, AppError> {
    let claim = message.claim();
    if !ctx.store.renew_claim(&claim, claim_ttl(ctx)).await? {
        return Ok(Worked::Stale);
    }
    let Some(integration) = ctx
        .store
        .get_integration(message.user_id, message.integration_id)
        .await?
    else {
        return Ok(Worked::Stale);
    };
    if integration.status != IntegrationStatus::Active {
        ctx.store.release_claim(&claim).await?;
        return Ok(Worked::Inactive);
    }
    let pulled = if message.pull {
        match pull::sync(
            ctx,
            &integration,
            SyncRequest::default(),
            message.trigger,
            Some(deadline),
        )
        .await
        {
            Ok(metrics) => Some(metrics),
            Err(AppError::Busy(_)) => {
                send(ctx, &message.clone(), BUSY_DELAY).await?;
                return Ok(Worked::PutOff);
            }
            Err(AppError::CrmRateLimited { retry_after, .. }) => {
                // The account's pacing says when: not a failure of the message.
                ctx.store.renew_claim(&claim, claim_ttl(ctx)).await?;
                send(ctx, &message.continued(), retry_after.max(BUSY_DELAY)).await?;
                return Ok(Worked::PutOff);
            }
            Err(e @ (AppError::InvalidCredentials(_) | AppError::NotFound(_))) => {
                // The integration needs its user now (or is gone): retrying cannot help.
                ctx.store.release_claim(&claim).await?;
                tracing::info!(integration = %integration.id, error = %e, "queued sync ended");
                return Ok(Worked::Inactive);
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let due = ctx
        .store
        .due_deliveries(integration.user_id, Some(integration.id), DRAIN_BATCH)
        .await?;
    let tally =
        push::process_in_order(ctx, integration.user_id, &due, message.trigger, deadline).await;
    let synced = Synced {
        pending: due.len().saturating_sub(tally.pushed + tally.failed),
        pull: pulled,
        pushed: tally.pushed,
        failed: tally.failed,
    };
    let cut_short = synced.pull.as_ref().is_some_and(|m| !m.complete)
        || (synced.pending > 0 && Instant::now() >= deadline);
    if cut_short {
        ctx.store.renew_claim(&claim, claim_ttl(ctx)).await?;
        send(ctx, &message.continued(), Duration::ZERO).await?;
        return Ok(Worked::Continued(synced));
    }
    if ctx.store.finish_claim(&claim, claim_ttl(ctx)).await? == ClaimFinished::Again {
        // Asked for while this ran. Not sent: the message is received again and, its claim still held,
        // runs again.
        send(ctx, &message.again(), Duration::ZERO).await?;
    }
    Ok(Worked::Done(synced))
}

/// How far a sync that goes on in the background has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The integration's records stored so far (live ones, across syncs).
    pub records_stored: u64,
}

/// The progress of `integration`'s sync.
pub async fn progress(
    ctx: &Context,
    integration: &IntegrationRecord,
) -> Result<Progress, AppError> {
    Ok(Progress {
        records_stored: ctx
            .store
            .stored_records(integration.user_id, integration.id)
            .await?,
    })
}

/// "Sync now", first step: claims `integration` for this call, for `hold` (as long as the call may
/// run: a Lambda killed mid-call leaves a claim that expires soon). `None`: it is queued or being
/// synced already (that run does it; its waiting deliveries are made due now for it). Unlike a
/// webhook's request it does not mark the run to sync again: concurrent calls run it once.
pub async fn claim_now(
    ctx: &Context,
    integration: &IntegrationRecord,
    hold: Duration,
) -> Result<Option<QueueClaim>, AppError> {
    let (user, id) = (integration.user_id, integration.id);
    let claim = ctx.store.claim_sync(user, id, hold).await?;
    if claim.is_none() {
        ctx.store.make_deliveries_due(user, id).await?;
    }
    Ok(claim)
}

/// Gives up a claim of [`claim_now`] (the call was refused after it).
pub async fn release(ctx: &Context, claim: &QueueClaim) -> Result<(), AppError> {
    ctx.store.release_claim(claim).await?;
    Ok(())
}

/// What "sync now" did with its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NowRan {
    /// It ran here (to the end, or cut short by the deadline); `queued`: the rest goes on in the
    /// background, as a queue message.
    Ran {
        synced: push::IntegrationSynced,
        queued: bool,
    },
    /// Another sync of the integration (not a queued one) was running: queued to run after it.
    Queued,
}

/// "Sync now", second step: runs `integration` here under `claim` (a pull, `since` and `full` as
/// asked, then its due deliveries) until `deadline`. Cut short, the rest is queued (with a queue), so
/// it finishes in the background; done, the claim is cleared.
pub async fn run_now(
    ctx: &Context,
    integration: &IntegrationRecord,
    claim: QueueClaim,
    since: Option<chrono::DateTime<chrono::Utc>>,
    full: bool,
    deadline: Instant,
) -> Result<NowRan, AppError> {
    let result = push::sync_integration(ctx, integration, since, full, deadline).await;
    let rest = message(&claim, Reason::Continuation, Trigger::Manual, true);
    let outcome = match result {
        Err(AppError::Busy(detail)) => {
            if ctx.queue.is_some() {
                // A contacts-sync or a webhook holds the sync lock: the claim's message runs after it.
                send_claimed_after(ctx, &rest, BUSY_DELAY).await?;
                return Ok(NowRan::Queued);
            }
            Err(AppError::Busy(detail))
        }
        Ok(synced) if !synced.pull.complete && ctx.queue.is_some() => {
            let rest = SyncMessage { part: 1, ..rest };
            match send_claimed_after(ctx, &rest, Duration::ZERO).await {
                Ok(()) => {
                    return Ok(NowRan::Ran {
                        synced,
                        queued: true,
                    });
                }
                Err(e) => {
                    // The saved read resumes with the next sync all the same.
                    tracing::warn!(error = %e, integration = %integration.id, "cannot queue the rest of a sync");
                    return Ok(NowRan::Ran {
                        synced,
                        queued: false,
                    });
                }
            }
        }
        Ok(synced) => Ok(NowRan::Ran {
            synced,
            queued: false,
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = finish_now(ctx, &claim).await {
        tracing::warn!(error = %e, integration = %integration.id, "cannot release a queue claim");
    }
    outcome
}

/// Lets go of the claim of a "sync now" that ran to its end; a sync requested while it ran is queued
/// under the same claim (without a queue, the next scheduled run does it).
async fn finish_now(ctx: &Context, claim: &QueueClaim) -> Result<(), AppError> {
    if ctx.store.finish_claim(claim, claim_ttl(ctx)).await? == ClaimFinished::Again {
        if ctx.queue.is_some() {
            let again = message(claim, Reason::Requested, Trigger::Manual, true);
            return send_or_release(ctx, &again, Duration::ZERO).await;
        }
        ctx.store.release_claim(claim).await?;
    }
    Ok(())
}

/// Sends a message of a claim held, after `delay`; if it cannot be sent, the claim is released.
async fn send_claimed_after(
    ctx: &Context,
    message: &SyncMessage,
    delay: Duration,
) -> Result<(), AppError> {
    ctx.store
        .renew_claim(&message.claim(), claim_ttl(ctx))
        .await?;
    send_or_release(ctx, message, delay).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_in_camel_case_and_a_foreign_body_is_refused() {
        let claim = QueueClaim {
            integration_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            token: Uuid::new_v4(),
        };
        let first = message(&claim, Reason::Now, Trigger::Manual, true);
        let next = first.continued();
        let text = serde_json::to_string(&next).unwrap();
        assert!(text.contains("\"integrationId\""), "{text}");
        assert!(text.contains("\"reason\":\"continuation\""), "{text}");
        assert!(text.contains("\"trigger\":\"manual\""), "{text}");
        assert_eq!(serde_json::from_str::<SyncMessage>(&text).unwrap(), next);
        assert_eq!((next.part, next.token), (1, claim.token));
        // `pull` and `part` may be left out; anything else is not a sync message.
        let minimal = serde_json::json!({"integrationId": claim.integration_id,
            "userId": claim.user_id, "token": claim.token, "reason": "webhook", "trigger": "webhook"});
        let parsed: SyncMessage = serde_json::from_value(minimal).unwrap();
        assert!(parsed.pull && parsed.part == 0);
        for bad in [
            serde_json::json!({"hello": "world"}),
            serde_json::json!({"integrationId": claim.integration_id, "userId": claim.user_id,
                "token": claim.token, "reason": "webhook", "trigger": "cron"}),
            serde_json::json!({"integrationId": claim.integration_id, "userId": claim.user_id,
                "token": claim.token, "reason": "webhook", "trigger": "webhook", "extra": 1}),
        ] {
            assert!(
                serde_json::from_value::<SyncMessage>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
