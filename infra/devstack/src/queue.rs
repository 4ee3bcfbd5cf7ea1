//! The sync queue of the local stack: moto's SQS holds it and its dead-letter queue (the template's
//! redrive policy), and a poller does for `sync-worker` what Lambda's SQS event source mapping does in
//! the cloud: it long-polls the queue, hands each batch to the function as an SQS event (through
//! `cargo lambda watch`'s invoke endpoint), deletes the messages the function did not report in
//! `batchItemFailures`, and keeps every message of an invocation that failed as a whole (they are
//! received again after the visibility timeout, and after [`MAX_RECEIVES`] receives SQS moves them to
//! the dead-letter queue). At most `concurrency` invocations run at once (the template's
//! `MaximumConcurrency`). Nothing the worker does stops the poller: a failure is a line of output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};

use crate::Error;

/// The queues' names in moto.
pub const QUEUE: &str = "crmsync-dev-sync";
pub const DEAD_LETTER_QUEUE: &str = "crmsync-dev-sync-dlq";
/// Receives before SQS moves a message to the dead-letter queue (the template's `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 4;
/// Messages per invocation (the template's `BatchSize`).
pub const BATCH_SIZE: usize = 1;
/// How long one `ReceiveMessage` waits for a message (SQS's longest long poll).
const WAIT_SECONDS: i32 = 20;
/// The region the stack's AWS calls name.
pub const REGION: &str = "us-east-1";

/// The sync queue and its dead-letter queue, as created in moto.
#[derive(Debug, Clone)]
pub struct SyncQueues {
    pub url: String,
    pub arn: String,
    pub dead_letter_url: String,
    /// After a receive, a message is received again only this long after (unless deleted).
    pub visibility: Duration,
}

impl SyncQueues {
    /// How long a queued integration stays claimed (`SYNC_CLAIM_TTL_SECONDS`): as the template, the
    /// visibility timeout times the receives before the dead-letter queue.
    pub fn claim_ttl(&self) -> Duration {
        self.visibility * MAX_RECEIVES
    }
}

/// Creates the sync queue and its dead-letter queue (idempotent, as SQS's `CreateQueue` is).
pub async fn create(sqs: &aws_sdk_sqs::Client, visibility: Duration) -> Result<SyncQueues, Error> {
    let dead_letter_url = sqs
        .create_queue()
        .queue_name(DEAD_LETTER_QUEUE)
        // The template's: 14 days.
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await?
        .queue_url
        .ok_or("moto created the dead-letter queue without a URL")?;
    let dead_letter_arn = arn_of(sqs, &dead_letter_url).await?;
    let redrive = json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": MAX_RECEIVES});
    let url = sqs
        .create_queue()
        .queue_name(QUEUE)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.as_secs().to_string(),
        )
        // The template's: one day.
        .attributes(QueueAttributeName::MessageRetentionPeriod, "86400")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await?
        .queue_url
        .ok_or("moto created the sync queue without a URL")?;
    let arn = arn_of(sqs, &url).await?;
    Ok(SyncQueues {
        url,
        arn,
        dead_letter_url,
        visibility,
    })
}

async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, Error> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| format!("moto gave no ARN for the queue {url}").into())
}

/// Messages of the sync queue and of its dead-letter queue: (waiting or in flight, dead-lettered).
pub async fn depths(sqs: &aws_sdk_sqs::Client, queues: &SyncQueues) -> Result<(u64, u64), Error> {
    let count = async |url: &str| -> Result<u64, Error> {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        Ok(attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum())
    };
    Ok((
        count(&queues.url).await?,
        count(&queues.dead_letter_url).await?,
    ))
}

/// A batch of received messages as the SQS event Lambda's event source mapping sends it.
pub fn event(messages: &[Message], arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id().unwrap_or_default(),
                "receiptHandle": m.receipt_handle().unwrap_or_default(),
                "body": m.body().unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body().unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// What the function's answer says of a batch, read as Lambda reads a `ReportBatchItemFailures`
/// answer: the message ids to keep, or `None` when the answer fails the whole batch (not JSON of that
/// shape, or naming a message that is not in the batch, or an empty id).
pub fn failures(answer: &[u8], batch: &[Message]) -> Option<Vec<String>> {
    let value: Value = if answer.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(answer).ok()?
    };
    if !value.is_object() && !value.is_null() {
        return None;
    }
    let items = match value.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return None,
    };
    let mut ids = Vec::new();
    for item in items {
        let id = item.get("itemIdentifier")?.as_str()?;
        if id.is_empty() || !batch.iter().any(|m| m.message_id() == Some(id)) {
            return None;
        }
        ids.push(id.to_owned());
    }
    Some(ids)
}

/// Feeds the sync queue to `sync-worker`.
pub struct Poller {
    pub sqs: aws_sdk_sqs::Client,
    pub queues: SyncQueues,
    /// `cargo lambda watch`'s invoke endpoint of `sync-worker`.
    pub invoke_url: String,
    /// How long an invocation may take before it counts as failed (past `cargo lambda watch`'s own
    /// timeout, which answers first).
    pub invoke_timeout: Duration,
    /// At most this many invocations at once.
    pub concurrency: usize,
}

impl Poller {
    /// Runs until the task is aborted (when the stack stops).
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let http = match reqwest::Client::builder()
            .timeout(self.invoke_timeout)
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                println!("sync queue: cannot make an HTTP client ({e}); nothing feeds the queue");
                return;
            }
        };
        let this = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(this.concurrency.max(1)));
        let mut failing_since: Option<Instant> = None;
        loop {
            // One slot at least before receiving, then every other free one (ten messages at most).
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut held = vec![first];
            while held.len() * BATCH_SIZE < 10 {
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => held.push(slot),
                    Err(_) => break,
                }
            }
            let received = this
                .sqs
                .receive_message()
                .queue_url(&this.queues.url)
                .max_number_of_messages((held.len() * BATCH_SIZE) as i32)
                .wait_time_seconds(WAIT_SECONDS)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await;
            let messages = match received {
                Ok(out) => {
                    if failing_since.take().is_some() {
                        println!("sync queue: receiving again");
                    }
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    if failing_since.is_none() {
                        println!(
                            "sync queue: cannot receive ({}); trying again every second",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        );
                        failing_since = Some(Instant::now());
                    }
                    drop(held);
                    // A pause between attempts at an emulator that is down, not a wait for an outcome.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut slots_held = held.into_iter();
            for batch in messages.chunks(BATCH_SIZE) {
                let Some(slot) = slots_held.next() else {
                    break;
                };
                let this = this.clone();
                let http = http.clone();
                let batch = batch.to_vec();
                tokio::spawn(async move {
                    this.work(&http, batch).await;
                    drop(slot);
                });
            }
        }
    }

    /// One invocation of `sync-worker` with `batch`, then the deletes; one line of output.
    async fn work(&self, http: &reqwest::Client, batch: Vec<Message>) {
        let started = Instant::now();
        let event = event(&batch, &self.queues.arn);
        let answer = match http.post(&self.invoke_url).json(&event).send().await {
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(body) => failures(&body, &batch).ok_or_else(|| {
                    "its answer is not a batchItemFailures report of this batch".to_owned()
                }),
                Err(e) => Err(format!("its answer could not be read ({e})")),
            },
            Ok(resp) => {
                let status = resp.status();
                // A function error is {errorType, errorMessage}: the message alone, never a body.
                let detail = resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["errorMessage"].as_str().map(str::to_owned))
                    .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                Err(format!("the invocation failed (HTTP {status}{detail})"))
            }
            Err(e) if e.is_timeout() => Err(format!(
                "the invocation did not answer within {} s",
                self.invoke_timeout.as_secs()
            )),
            Err(e) => Err(format!("the invocation failed ({e})")),
        };
        let took = started.elapsed().as_secs_f64();
        let what = describe(&batch);
        match answer {
            Ok(failed) => {
                let mut deleted = 0;
                let mut not_deleted = Vec::new();
                for m in &batch {
                    let id = m.message_id().unwrap_or_default();
                    if failed.iter().any(|f| f == id) {
                        continue;
                    }
                    let delete = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queues.url)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .send()
                        .await;
                    match delete {
                        Ok(_) => deleted += 1,
                        Err(e) => not_deleted.push(format!(
                            "{}: {}",
                            short(id),
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )),
                    }
                }
                let mut line = format!(
                    "sync queue: sync-worker took {what} in {took:.1} s: {deleted} done and deleted"
                );
                if !failed.is_empty() {
                    line.push_str(&format!(
                        ", {} failed (kept: received again after the visibility timeout)",
                        failed.len()
                    ));
                }
                if !not_deleted.is_empty() {
                    line.push_str(&format!(
                        ", not deleted: {} (received again)",
                        not_deleted.join("; ")
                    ));
                }
                println!("{line}");
            }
            Err(why) => println!(
                "sync queue: sync-worker took {what} in {took:.1} s: {why}; kept: received again after the visibility timeout"
            ),
        }
    }
}

/// The batch in a few words: each message's id (shortened), receive count, reason and integration;
/// never its claim token.
fn describe(batch: &[Message]) -> String {
    let one = |m: &Message| {
        let body: Value = m
            .body()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        let receives = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .map_or("?", String::as_str);
        format!(
            "{} (receive {receives}, {} of integration {})",
            short(m.message_id().unwrap_or_default()),
            body["reason"].as_str().unwrap_or("not a sync message"),
            body["integrationId"].as_str().unwrap_or("?"),
        )
    };
    match batch {
        [m] => format!("message {}", one(m)),
        _ => format!(
            "{} messages [{}]",
            batch.len(),
            batch.iter().map(one).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("rh-{id}"))
            .body(r#"{"integrationId":"i","reason":"schedule","token":"t"}"#)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .build()
    }

    #[test]
    fn the_event_is_the_event_source_mappings() {
        let event = event(&[message("m1")], "arn:aws:sqs:us-east-1:123456789012:q");
        let r = &event["Records"][0];
        assert_eq!(r["messageId"], "m1");
        assert_eq!(r["receiptHandle"], "rh-m1");
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["eventSourceARN"], "arn:aws:sqs:us-east-1:123456789012:q");
        assert_eq!(r["awsRegion"], "us-east-1");
        assert_eq!(r["attributes"]["ApproximateReceiveCount"], "2");
        assert!(r["body"].as_str().unwrap().contains("schedule"));
    }

    #[test]
    fn answers_are_read_as_lambda_reads_them() {
        let batch = [message("m1"), message("m2")];
        assert_eq!(failures(b"", &batch), Some(vec![]));
        assert_eq!(failures(b"null", &batch), Some(vec![]));
        assert_eq!(failures(b"{}", &batch), Some(vec![]));
        assert_eq!(
            failures(br#"{"batchItemFailures":[]}"#, &batch),
            Some(vec![])
        );
        assert_eq!(
            failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"m2"}]}"#,
                &batch
            ),
            Some(vec!["m2".to_owned()])
        );
        // The whole batch fails: not JSON, an unknown or empty id, a bad key.
        assert_eq!(failures(b"oops", &batch), None);
        assert_eq!(failures(br#""done""#, &batch), None);
        assert_eq!(
            failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"m9"}]}"#,
                &batch
            ),
            None
        );
        assert_eq!(
            failures(br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#, &batch),
            None
        );
        assert_eq!(
            failures(br#"{"batchItemFailures":[{"id":"m1"}]}"#, &batch),
            None
        );
    }

    #[test]
    fn a_line_names_no_token() {
        let line = describe(&[message("0123456789abcdef")]);
        assert!(line.contains("01234567 (receive 2, schedule of integration i)"));
        assert!(!line.contains("\"t\""));
    }
}
