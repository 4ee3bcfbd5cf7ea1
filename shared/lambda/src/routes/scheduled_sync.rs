//! `scheduled-sync`: on an EventBridge schedule, an incremental pull of every active integration, then
//! the push outbox drained.

use std::time::{Duration, Instant};

use crmsync_app::schedule::{self, RunReport};

use crate::error::ApiError;
use crate::request::deadline_from_ms;
use crate::wiring::App;

/// How long a run may take when the runtime gives no deadline: a Lambda's longest timeout, less a
/// margin.
const LONGEST_RUN: Duration = Duration::from_secs(900 - 15);

/// Any EventBridge event starts a run bounded by the Lambda's deadline. An error fails the invocation:
/// Lambda retries it once, then sends the event to the dead-letter queue (template.yaml's
/// EventInvokeConfig).
pub async fn handle(
    app: &App,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<RunReport, lambda_runtime::Error> {
    // No usable deadline (a local emulator): as if it had a Lambda's longest timeout.
    let deadline =
        deadline_from_ms(event.context.deadline).unwrap_or_else(|| Instant::now() + LONGEST_RUN);
    // Boxed: the first event's set-up (the secret from the AWS SDK) and the run are deep futures.
    Box::pin(async move {
        let ctx = app.context().await?;
        Ok::<_, ApiError>(schedule::run(ctx, deadline).await?)
    })
    .await
    .map_err(|e| lambda_runtime::Error::from(e.detail().to_owned()))
}
