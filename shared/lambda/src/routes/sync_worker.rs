//! `sync-worker`: consumes the sync queue through Lambda's SQS event source mapping. Each message is
//! one integration to pull, then push its due deliveries (`crmsync_app::queue::work`). The answer
//! reports partial batch failures (`batchItemFailures`, with the template's
//! `FunctionResponseTypes: [ReportBatchItemFailures]`): a message that failed is received again after
//! the queue's visibility timeout, and after a few receives goes to the dead-letter queue; the others
//! are deleted. A sync cut short by the deadline sent its own continuation and counts as done.

use std::time::{Duration, Instant};

use crmsync_app::queue::{self, SyncMessage, Worked};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::request::deadline_from_ms;
use crate::wiring::App;

/// How long a batch may take when the runtime gives no deadline (a local emulator): the template's
/// timeout, less a margin.
const NO_DEADLINE: Duration = Duration::from_secs(300 - 15);

/// How long a batch may take without a deadline from the runtime: `FUNCTION_TIMEOUT_SECONDS` (the
/// emulator's own cut-off, which the local stack sets: `cargo lambda watch` answers an invocation with
/// an error after its `--timeout`) less a fifth, at most 15 s; else [`NO_DEADLINE`].
fn no_deadline(timeout_secs: Option<&str>) -> Duration {
    match timeout_secs.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) if secs > 0 => {
            let timeout = Duration::from_secs(secs);
            timeout.saturating_sub((timeout / 5).min(Duration::from_secs(15)))
        }
        _ => NO_DEADLINE,
    }
}

/// The SQS event Lambda's event source mapping sends (the fields crmsync reads).
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

/// One message of an [`SqsEvent`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    #[serde(default)]
    pub body: Option<String>,
}

/// The answer that reports partial batch failures: the messages to receive again.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
}

type WorkFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<BatchItemFailure>> + Send + 'a>>;

/// Works on each message of the batch (a few at a time), until the Lambda's deadline. An event that
/// is not an SQS batch fails the invocation (its messages are received again).
pub async fn handle(
    app: &App,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<BatchResponse, lambda_runtime::Error> {
    let deadline = deadline_from_ms(event.context.deadline).unwrap_or_else(|| {
        let timeout = std::env::var("FUNCTION_TIMEOUT_SECONDS").ok();
        Instant::now() + no_deadline(timeout.as_deref())
    });
    let batch: SqsEvent = serde_json::from_value(event.payload)
        .map_err(|e| lambda_runtime::Error::from(format!("not an SQS event: {e}")))?;
    // Boxed: the first event's set-up (the secret from the AWS SDK) and the syncs are deep futures.
    Box::pin(async move {
        let ctx = app.context().await?;
        let at_once = crmsync_app::schedule::pull_concurrency(&ctx.store);
        // Boxed, each owning its record: that keeps the batch's future `Send` provable.
        let works: Vec<WorkFuture<'_>> = batch
            .records
            .into_iter()
            .map(|record| -> WorkFuture<'_> {
                Box::pin(async move {
                    match work_on(ctx, &record, deadline).await {
                        Ok(()) => None,
                        Err(()) => Some(BatchItemFailure {
                            item_identifier: record.message_id,
                        }),
                    }
                })
            })
            .collect();
        let failures: Vec<BatchItemFailure> = futures::stream::iter(works)
            .buffer_unordered(at_once)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        Ok::<_, ApiError>(BatchResponse {
            batch_item_failures: failures,
        })
    })
    .await
    .map_err(|e| lambda_runtime::Error::from(e.detail().to_owned()))
}

/// One message: `Err` to have it received again.
async fn work_on(
    ctx: &crmsync_app::Context,
    record: &SqsRecord,
    deadline: Instant,
) -> Result<(), ()> {
    let message: SyncMessage = match record.body.as_deref().map(serde_json::from_str).transpose() {
        Ok(Some(message)) => message,
        Ok(None) | Err(_) => {
            // Not ours (nor anything to retry): left to fail until it is dead-lettered, for an
            // operator to look at. Its body is not logged.
            tracing::error!(message = %record.message_id, "a sync queue message that is not a sync message");
            return Err(());
        }
    };
    match queue::work(ctx, &message, deadline).await {
        Ok(worked) => {
            tracing::info!(
                message = %record.message_id, integration = %message.integration_id,
                reason = ?message.reason, part = message.part, outcome = ?worked_name(&worked),
                "sync message done"
            );
            Ok(())
        }
        Err(e) => {
            let e = ApiError::from(e);
            tracing::warn!(
                message = %record.message_id, integration = %message.integration_id,
                reason = ?message.reason, error = e.detail(), "sync message failed; it is received again"
            );
            Err(())
        }
    }
}

fn worked_name(worked: &Worked) -> &'static str {
    match worked {
        Worked::Done(_) => "done",
        Worked::Continued(_) => "continued",
        Worked::PutOff => "put off",
        Worked::Stale => "stale",
        Worked::Inactive => "inactive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_deadline_the_emulators_timeout_less_a_margin_bounds_a_batch() {
        assert_eq!(no_deadline(None), NO_DEADLINE);
        assert_eq!(no_deadline(Some("120")), Duration::from_secs(105));
        assert_eq!(no_deadline(Some("10")), Duration::from_secs(8));
        for bad in ["", "0", "-5", "two minutes"] {
            assert_eq!(no_deadline(Some(bad)), NO_DEADLINE, "{bad:?}");
        }
    }
}
