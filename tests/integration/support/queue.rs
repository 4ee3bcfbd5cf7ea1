//! The sync queue in moto, and a poller that does what Lambda's SQS event source mapping does: receives
//! a batch, hands it to `sync-worker` as an SQS event, then deletes the messages the worker did not
//! report in `batchItemFailures` (those become visible again after the visibility timeout, and after
//! `max_receives` receives SQS moves them to the dead-letter queue).

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use crmsync_lambda::App;
use crmsync_lambda::routes::sync_worker::{self, BatchResponse};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::common::moto_config;

/// A sync queue and its dead-letter queue.
pub struct SyncQueues {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub dead_letter_url: String,
    pub visibility: Duration,
    pub max_receives: u32,
}

/// A message as the worker got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct Polled {
    pub received: Vec<Received>,
    /// The worker's answer (`None`: the invocation failed as a whole).
    pub answer: Option<BatchResponse>,
}

impl SyncQueues {
    /// A new pair of queues in moto: a message is received again `visibility` after a receive, and
    /// goes to the dead-letter queue after `max_receives` receives.
    pub async fn create(visibility: Duration, max_receives: u32) -> SyncQueues {
        let sqs = aws_sdk_sqs::Client::new(&moto_config().await);
        let name = format!("crmsync-sync-{}", Uuid::new_v4().simple());
        let dead_letter_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create the dead-letter queue")
            .queue_url
            .expect("a queue URL");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dead_letter_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("the dead-letter queue's ARN");
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives});
        let url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .expect("create the sync queue")
            .queue_url
            .expect("a queue URL");
        SyncQueues {
            sqs,
            url,
            dead_letter_url,
            visibility,
            max_receives,
        }
    }

    /// The claim TTL the template derives: visibility timeout times receives.
    pub fn claim_ttl_secs(&self) -> u64 {
        self.visibility.as_secs().max(1) * u64::from(self.max_receives)
    }

    /// Up to 10 messages of `url` visible now (none is waited for).
    pub async fn receive_from(&self, url: &str) -> Vec<Received> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .expect("receive");
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Received {
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                message_id: m.message_id.unwrap_or_default(),
                receipt_handle: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect()
    }

    /// Receives from the sync queue until something comes, for at most `wait`.
    pub async fn receive_within(&self, wait: Duration) -> Vec<Received> {
        let until = Instant::now() + wait;
        loop {
            let got = self.receive_from(&self.url).await;
            if !got.is_empty() || Instant::now() >= until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The messages of the sync queue and its dead-letter queue: (visible, in flight, dead-lettered).
    pub async fn depths(&self) -> (u64, u64, u64) {
        let count = async |url: &str| -> (u64, u64) {
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .expect("queue attributes")
                .attributes
                .unwrap_or_default();
            let n = |k: QueueAttributeName| -> u64 {
                attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0)
            };
            (
                n(QueueAttributeName::ApproximateNumberOfMessages)
                    + n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
                n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            )
        };
        let (visible, in_flight) = count(&self.url).await;
        let (dead, dead_in_flight) = count(&self.dead_letter_url).await;
        (visible, in_flight, dead + dead_in_flight)
    }

    /// `messages` as the SQS event Lambda's event source sends.
    pub fn event(messages: &[Received]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:crmsync-sync",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Runs `sync-worker` of `app` on `messages` with `time` before its deadline, then deletes what it
    /// did not report failed.
    pub async fn work(&self, app: &App, messages: Vec<Received>, time: Duration) -> Polled {
        if messages.is_empty() {
            return Polled::default();
        }
        let mut context = lambda_runtime::Context::default();
        context.deadline = (chrono::Utc::now() + time).timestamp_millis() as u64;
        let event = lambda_runtime::LambdaEvent::new(Self::event(&messages), context);
        let answer = sync_worker::handle(app, event).await.ok();
        if let Some(answer) = &answer {
            for m in &messages {
                let failed = answer
                    .batch_item_failures
                    .iter()
                    .any(|f| f.item_identifier == m.message_id);
                if !failed {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(&m.receipt_handle)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        }
        Polled {
            received: messages,
            answer,
        }
    }

    /// One poll: what is visible now, to `sync-worker`.
    pub async fn poll(&self, app: &App) -> Polled {
        let messages = self.receive_from(&self.url).await;
        self.work(app, messages, Duration::from_secs(60)).await
    }

    /// Polls until the sync queue is empty (nothing visible, delayed or in flight), for at most `wait`.
    /// Returns the messages worked on.
    pub async fn drain(&self, app: &App, wait: Duration) -> Vec<Received> {
        let until = Instant::now() + wait;
        let mut worked = Vec::new();
        loop {
            let polled = self.poll(app).await;
            let idle = polled.received.is_empty();
            worked.extend(polled.received);
            if idle {
                let (visible, in_flight, _) = self.depths().await;
                if visible == 0 && in_flight == 0 {
                    return worked;
                }
                assert!(
                    Instant::now() < until,
                    "the sync queue did not empty within {wait:?}: {visible} visible, {in_flight} in flight"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
