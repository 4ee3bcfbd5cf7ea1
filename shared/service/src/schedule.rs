//! The scheduled run (EventBridge): an incremental pull of every active integration, then the push
//! outbox drained of everything due.
//!
//! Pulls run a few at a time, each under its integration's own sync lock (one that is already syncing
//! is skipped), so one slow CRM does not hold up the others. The run keeps the last part of its time for
//! the outbox, and stops at a page boundary before the Lambda's deadline; the next run continues from
//! the saved cursors and the outbox.

use std::time::{Duration, Instant};

use crmsync_adapters::ErrorCode;
use crmsync_adapters::store::Trigger;
use futures::StreamExt;
use serde::Serialize;

use crate::app::App;
use crate::{pull, push};

/// Pulls running at once.
pub const PULL_CONCURRENCY: usize = 4;
/// Share of the run's time given to pulls; the rest drains the outbox.
const PULL_SHARE: f64 = 0.7;
/// How long a run may take when the runtime gives no deadline: a Lambda's longest timeout, less a
/// margin.
const LONGEST_RUN: Duration = Duration::from_secs(900 - 15);

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
    pub failed: usize,
    pub upserted: u64,
    pub pushed: usize,
    pub push_failed: usize,
    pub push_deferred: usize,
}

/// Runs once, until `deadline`.
pub async fn run(app: &App, deadline: Instant) -> Result<RunReport, crmsync_adapters::ApiError> {
    let ready = app.ready().await?;
    let integrations = ready.store.active_integrations_all().await?;
    let started = Instant::now();
    let pull_deadline = started
        + deadline
            .saturating_duration_since(started)
            .mul_f64(PULL_SHARE);
    let mut report = RunReport {
        integrations: integrations.len(),
        ..Default::default()
    };

    let mut pulls = futures::stream::iter(integrations.iter())
        // Boxed: keeps the run's future type shallow (and its size small) whatever the pull holds.
        .map(|integration| {
            Box::pin(async move {
                (
                    integration,
                    pull::sync(
                        app,
                        integration,
                        None,
                        Trigger::Schedule,
                        Some(pull_deadline),
                    )
                    .await,
                )
            })
        })
        .buffer_unordered(PULL_CONCURRENCY);
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
            Err(e) if e.code() == ErrorCode::Conflict => report.busy += 1,
            Err(e) => {
                // Logged in crm_sync_logs by the sync itself; the others go on.
                report.failed += 1;
                tracing::warn!(
                    provider = integration.provider.as_str(), integration = %integration.id,
                    error = e.detail(), "scheduled pull failed"
                );
            }
        }
    }
    let tally = push::drain_all(app, deadline).await?;
    report.pushed = tally.pushed;
    report.push_failed = tally.failed;
    report.push_deferred = tally.deferred;
    tracing::info!(?report, "scheduled run finished");
    Ok(report)
}

/// The `scheduled-sync` function: any EventBridge event starts a run bounded by the Lambda's deadline.
pub async fn handle(
    app: &App,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<RunReport, lambda_runtime::Error> {
    // No usable deadline (a local emulator): as if it had a Lambda's longest timeout.
    let deadline = crate::handlers::deadline_from_ms(event.context.deadline)
        .unwrap_or_else(|| Instant::now() + LONGEST_RUN);
    // An error fails the invocation: Lambda retries it once, then sends the event to the dead-letter
    // queue (template.yaml's EventInvokeConfig).
    Box::pin(run(app, deadline))
        .await
        .map_err(|e| lambda_runtime::Error::from(e.detail().to_owned()))
}
