//! The sync queue (SQS): one message per integration to sync, sent by the dispatcher (the scheduled
//! run), "sync now", CRM webhooks and a sync that continues itself; consumed by `sync-worker` through
//! Lambda's event source mapping. This module sends; receiving is Lambda's (or, locally and in the
//! tests, a poller that does what the event source does).

use std::time::Duration;

/// SQS answers in milliseconds; a send that hangs must not hold a request until its Lambda times out.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// All attempts of one send, retries and backoff included.
const SQS_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// SQS's longest message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// Messages in one `SendMessageBatch` call (SQS's most).
pub const BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("cannot send to the sync queue: {0}")]
pub struct QueueError(String);

/// A queue messages are sent to.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    /// The queue at `url` (its `QueueUrl`), reached with `aws`'s configuration, every send bounded in
    /// time.
    pub fn new(aws: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        let timeouts = aws
            .timeout_config()
            .map(|t| t.to_builder())
            .unwrap_or_default()
            .operation_attempt_timeout(SQS_ATTEMPT_TIMEOUT)
            .operation_timeout(SQS_OPERATION_TIMEOUT)
            .build();
        let client = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(aws)
                .timeout_config(timeouts)
                .build(),
        );
        Queue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `body`, to be received after `delay` (at most [`MAX_DELAY`]).
    pub async fn send(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        let delay = delay.min(MAX_DELAY).as_secs() as i32;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
    }

    /// Sends up to [`BATCH`] bodies in one call, each to be received at once: for each body, in order,
    /// whether it was sent.
    pub async fn send_batch(&self, bodies: &[String]) -> Vec<Result<(), QueueError>> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let entries: Result<Vec<_>, _> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
            })
            .collect();
        let failed_all = |why: String| {
            bodies
                .iter()
                .map(|_| Err(QueueError(why.clone())))
                .collect()
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => return failed_all(e.to_string()),
        };
        let out = match self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => return failed_all(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
        };
        let mut results: Vec<Result<(), QueueError>> = bodies
            .iter()
            .map(|_| {
                Err(QueueError(
                    "SQS did not say whether it took the message".into(),
                ))
            })
            .collect();
        for ok in out.successful() {
            if let Some(r) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *r = Ok(());
            }
        }
        for failed in out.failed() {
            if let Some(r) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *r = Err(QueueError(format!(
                    "{} ({})",
                    failed.message().unwrap_or("refused"),
                    failed.code()
                )));
            }
        }
        results
    }
}
