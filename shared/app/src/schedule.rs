//! The scheduled run (EventBridge): an incremental pull of every active integration, then the push
//! outbox drained of everything due.
//!
//! Pulls run a few at a time, each under its integration's own sync lock (one that is already syncing
//! is skipped), so one slow CRM does not hold up the others. The run keeps the last part of its time for
//! the outbox, and stops at a page boundary before the Lambda's deadline; the next run continues from
//! the saved cursors and the outbox.

use std::time::Instant;

use crmsync_domain::Trigger;
use crmsync_store::IntegrationRecord;
use futures::StreamExt;
use serde::Serialize;

use crate::{AppError, Context, pull, push};

/// Pulls running at once (at most; see [`pull_concurrency`]).
pub const PULL_CONCURRENCY: usize = 4;

/// Pulls to run at once with `store`'s connections: each pull holds its lease's connection for as
/// long as it runs, so at least one must stay free for the pulls' writes, or they would all wait.
pub fn pull_concurrency(store: &crmsync_store::Store) -> usize {
    PULL_CONCURRENCY.min(store.max_connections().saturating_sub(1).max(1))
}
/// How often a live integration (its CRM calls crmsync on every change, [`crate::live`]) is polled all
/// the same: the safety net for a delivery that never came.
pub const LIVE_POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the scheduled run polls `integration` now: always when it is polled only; when it is live,
/// once [`LIVE_POLL_EVERY`] has passed since its last sync.
pub(crate) fn due(integration: &IntegrationRecord, now: chrono::DateTime<chrono::Utc>) -> bool {
    let every = chrono::Duration::from_std(LIVE_POLL_EVERY).unwrap_or(chrono::Duration::MAX);
    match (integration.live_since, integration.last_sync_at) {
        (Some(_), Some(last)) => now - last >= every,
        _ => true,
    }
}

/// Share of the run's time given to pulls; the rest drains the outbox.
const PULL_SHARE: f64 = 0.7;

/// What a scheduled run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub integrations: usize,
    /// Pulls that finished.
    pub synced: usize,
    /// Pulls stopped at the time limit (they continue next run).
    pub partial: usize,
    /// Integrations skipped because a sync of them was already running.
    pub busy: usize,
    /// Live integrations not polled this time (polled every [`LIVE_POLL_EVERY`]).
    pub live: usize,
    pub failed: usize,
    pub upserted: u64,
    pub pushed: usize,
    pub push_failed: usize,
    pub push_deferred: usize,
}

type PullFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (IntegrationRecord, Result<pull::SyncMetrics, AppError>)>
            + Send
            + 'a,
    >,
>;

/// Runs once, until `deadline`.
pub async fn run(ctx: &Context, deadline: Instant) -> Result<RunReport, AppError> {
    let all = ctx.store.active_integrations_all().await?;
    let total = all.len();
    let now = chrono::Utc::now();
    let integrations: Vec<IntegrationRecord> = all.into_iter().filter(|i| due(i, now)).collect();
    let started = Instant::now();
    let pull_deadline = started
        + deadline
            .saturating_duration_since(started)
            .mul_f64(PULL_SHARE);
    let mut report = RunReport {
        integrations: total,
        live: total - integrations.len(),
        ..Default::default()
    };
    // Each pull owns its integration, and is boxed: that keeps the run's future type shallow (and its
    // size small) whatever the pull holds, and its `Send` provable.
    let pulls: Vec<PullFuture<'_>> = integrations
        .into_iter()
        .map(|integration| -> PullFuture<'_> {
            Box::pin(async move {
                let result = pull::sync(
                    ctx,
                    &integration,
                    pull::SyncRequest::default(),
                    Trigger::Schedule,
                    Some(pull_deadline),
                )
                .await;
                (integration, result)
            })
        })
        .collect();
    let mut pulls = futures::stream::iter(pulls).buffer_unordered(pull_concurrency(&ctx.store));
    while let Some((integration, result)) = pulls.next().await {
        match result {
            Ok(metrics) => {
                report.upserted += metrics.upserted;
                if metrics.complete {
                    report.synced += 1;
                } else {
                    report.partial += 1;
                }
            }
            Err(AppError::Busy(_)) => report.busy += 1,
            Err(e) => {
                // Logged in crm_sync_logs by the sync itself; the others go on.
                report.failed += 1;
                tracing::warn!(
                    provider = integration.provider.as_str(), integration = %integration.id,
                    error = %e, "scheduled pull failed"
                );
            }
        }
    }
    let tally = push::drain_all(ctx, deadline).await?;
    report.pushed = tally.pushed;
    report.push_failed = tally.failed;
    report.push_deferred = tally.deferred;
    match ctx.store.health().await {
        Ok(health) => crate::metrics::health(&health),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the outbox and integrations for metrics")
        }
    }
    tracing::info!(?report, "scheduled run finished");
    Ok(report)
}
