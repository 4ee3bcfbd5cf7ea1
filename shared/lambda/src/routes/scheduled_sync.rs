//! `scheduled-sync`: on an EventBridge schedule. With a sync queue (`SYNC_QUEUE_URL`), a dispatcher:
//! one queue message per active integration that is due, for `sync-worker`
//! (`crmsync_app::queue::dispatch`). Without one, the run itself: an incremental pull of every active
//! integration, then the push outbox drained (`crmsync_app::schedule::run`).

use std::time::{Duration, Instant};

use crmsync_app::queue::{self, Dispatched};
use crmsync_app::schedule::{self, RunReport};
use serde::Serialize;

use crate::error::ApiError;
use crate::request::deadline_from_ms;
use crate::wiring::App;

/// How long a run may take when the runtime gives no deadline: a Lambda's longest timeout, less a
/// margin.
const LONGEST_RUN: Duration = Duration::from_secs(900 - 15);

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// Messages sent to the sync queue.
    Dispatched(Dispatched),
    /// The integrations synced by the run itself (no queue configured).
    Ran(RunReport),
}

impl Report {
    /// Integrations that failed (not queued, or their sync failed).
    pub fn failed(&self) -> usize {
        match self {
            Report::Dispatched(d) => d.failed,
            Report::Ran(r) => r.failed,
        }
    }
}

/// Any EventBridge event starts a run bounded by the Lambda's deadline. An error fails the invocation:
/// Lambda retries it once, then sends the event to the dead-letter queue (template.yaml's
/// EventInvokeConfig).
pub async fn handle(
    app: &App,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<Report, lambda_runtime::Error> {
    // No usable deadline (a local emulator): as if it had a Lambda's longest timeout.
    let deadline =
        deadline_from_ms(event.context.deadline).unwrap_or_else(|| Instant::now() + LONGEST_RUN);
    // Boxed: the first event's set-up (the secret from the AWS SDK) and the run are deep futures.
    Box::pin(async move {
        let ctx = app.context().await?;
        if ctx.queue.is_some() {
            Ok::<_, ApiError>(Report::Dispatched(queue::dispatch(ctx).await?))
        } else {
            Ok(Report::Ran(schedule::run(ctx, deadline).await?))
        }
    })
    .await
    .map_err(|e| lambda_runtime::Error::from(e.detail().to_owned()))
}
