//! Token buckets in DynamoDB, one item per bucket, shared by every Lambda.
//!
//! An item holds `tokens` (integer milli-tokens), `ts` (milliseconds of the last write) and `expires_at`
//! (epoch seconds, the table's TTL attribute: by then the bucket would be full anyway). Taking a token is
//! one conditional `UpdateItem` guarded by the state the caller last saw; a failed condition returns the
//! current item (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so the retry needs no extra read.
//! Each process remembers the last state it saw of each bucket, so in steady state an admitted request
//! costs exactly one call. A failed condition never admits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

/// A bucket's size and refill: `capacity` tokens, refilled evenly over `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub capacity: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn per_minute(capacity: u32) -> Self {
        Rate {
            capacity,
            period: Duration::from_secs(60),
        }
    }

    fn capacity_milli(self) -> i64 {
        i64::from(self.capacity) * 1000
    }

    fn period_ms(self) -> i64 {
        (self.period.as_millis() as i64).max(1)
    }

    /// Milli-tokens refilled in `elapsed_ms`.
    fn refill(self, elapsed_ms: i64) -> i64 {
        let r = i128::from(elapsed_ms.max(0)) * i128::from(self.capacity_milli())
            / i128::from(self.period_ms());
        r.min(i128::from(i64::MAX)) as i64
    }

    /// Milliseconds until `deficit` milli-tokens have been refilled (rounded up).
    fn time_for(self, deficit: i64) -> i64 {
        if self.capacity == 0 {
            return self.period_ms();
        }
        let num = i128::from(deficit.max(0)) * i128::from(self.period_ms());
        let den = i128::from(self.capacity_milli());
        ((num + den - 1) / den) as i64
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admitted,
    /// Not admitted; a token will be there after this long.
    Wait(Duration),
}

impl Decision {
    pub fn is_admitted(self) -> bool {
        matches!(self, Decision::Admitted)
    }

    /// Whole seconds to put in `Retry-After` (at least 1).
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Decision::Admitted => 0,
            Decision::Wait(d) => d.as_millis().div_ceil(1000).max(1) as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("DynamoDB call failed: {0}")]
    Dynamo(String),
    #[error("the bucket item is malformed: {0}")]
    Malformed(String),
    #[error("the bucket stayed contended for {0} attempts")]
    Contended(u32),
    #[error("the next free slot is {0:?} away")]
    WaitTooLong(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BucketState {
    tokens: i64,
    ts: i64,
}

/// The token-bucket limiter. Build it once per cold start; it is safe to share.
#[derive(Debug)]
pub struct RateLimiter {
    client: Client,
    table: String,
    seen: Mutex<HashMap<String, BucketState>>,
    /// Calls to DynamoDB in flight from this process at most (see [`MAX_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
}

/// DynamoDB calls one process has in flight at most. A burst of pushes (hundreds of leads posted at
/// once) would otherwise send all its reservations together; an endpoint that answers them one after
/// the other (moto does) then answers the last ones after their attempt timeout, and pacing falls back
/// to unpaced pushes exactly when it is needed. Queued here, each call is answered promptly.
const MAX_IN_FLIGHT: usize = 8;

/// Attempts per request before giving up. Every failed condition means another request was admitted
/// (or the bucket changed), so this bounds contention, not progress.
const MAX_ATTEMPTS: u32 = 64;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RateLimiter {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        RateLimiter {
            client,
            table: table.into(),
            seen: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Sends one DynamoDB call once fewer than [`MAX_IN_FLIGHT`] are in flight.
    async fn send<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        // The semaphore is never closed: a failed acquire cannot happen, and would only skip the wait.
        let _permit = self.in_flight.acquire().await.ok();
        call.await
    }

    /// Takes one token from bucket `key`.
    pub async fn acquire(&self, key: &str, rate: Rate) -> Result<Decision, LimiterError> {
        self.acquire_n(key, rate, 1).await
    }

    /// Takes `cost` tokens from bucket `key`, or says how long until they are there.
    pub async fn acquire_n(
        &self,
        key: &str,
        rate: Rate,
        cost: u32,
    ) -> Result<Decision, LimiterError> {
        let cost_milli = i64::from(cost) * 1000;
        let mut seen = self.remembered(key);
        for _ in 0..MAX_ATTEMPTS {
            let now = now_ms();
            let (tokens_now, ts_now) = match seen {
                // First sight of the bucket in this process: assume it is new and full.
                None => (rate.capacity_milli(), now),
                Some(s) => {
                    // Clocks of different Lambdas may disagree: time never runs backwards for a bucket.
                    let ts = now.max(s.ts);
                    (
                        (s.tokens + rate.refill(ts - s.ts)).min(rate.capacity_milli()),
                        ts,
                    )
                }
            };
            if tokens_now < cost_milli {
                // What this process saw can only overstate the tokens left (others only take), so
                // refusing without a call is safe.
                let wait = rate.time_for(cost_milli - tokens_now);
                return Ok(Decision::Wait(Duration::from_millis(wait.max(1) as u64)));
            }
            let next = BucketState {
                tokens: tokens_now - cost_milli,
                ts: ts_now,
            };
            match self.write(key, rate, seen, next).await? {
                None => {
                    self.remember(key, next);
                    return Ok(Decision::Admitted);
                }
                Some(current) => seen = current,
            }
        }
        Err(LimiterError::Contended(MAX_ATTEMPTS))
    }

    fn remembered(&self, key: &str) -> Option<BucketState> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn remember(&self, key: &str, state: BucketState) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(key.to_owned(), state);
    }

    /// Writes `next` if the item is still `expected`. `Ok(None)` when written; `Ok(Some(current))` when
    /// the condition failed, with what the item holds now (`None` if it does not exist).
    async fn write(
        &self,
        key: &str,
        rate: Rate,
        expected: Option<BucketState>,
        next: BucketState,
    ) -> Result<Option<Option<BucketState>>, LimiterError> {
        let until_full = rate.time_for(rate.capacity_milli() - next.tokens);
        let expires_at = (next.ts + until_full) / 1000 + 60;
        let n = |v: i64| AttributeValue::N(v.to_string());
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression("SET tokens = :tokens, ts = :ts, expires_at = :exp")
            .expression_attribute_values(":tokens", n(next.tokens))
            .expression_attribute_values(":ts", n(next.ts))
            .expression_attribute_values(":exp", n(expires_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        req = match expected {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(old) => req
                .condition_expression("tokens = :old_tokens AND ts = :old_ts")
                .expression_attribute_values(":old_tokens", n(old.tokens))
                .expression_attribute_values(":old_ts", n(old.ts)),
        };
        match self.send(req.send()).await {
            Ok(_) => Ok(None),
            Err(err) if err.as_service_error().is_none() => {
                Err(LimiterError::Dynamo(unreachable_text(&err)))
            }
            Err(err) => match err.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(e) => match e.item() {
                    Some(item) => Ok(Some(Some(parse_state(item)?))),
                    None => Ok(Some(None)),
                },
                other => Err(LimiterError::Dynamo(dynamo_error_text(&other))),
            },
        }
    }
}

/// Reservations for outbound pacing, where many callers wait their turn instead of being refused.
///
/// The item holds `base_mt` (milli-tokens at `ts`) and `used_mt` (milli-tokens taken since).
/// A reservation is ONE unconditional `UpdateItem` (`ADD used_mt`), so any number of concurrent
/// callers each succeed with one call; the answer tells each caller how long to wait for its turn:
/// available = min(capacity, base + refill since `ts`) − consumed. When the bucket has been left alone
/// for a period, the first caller folds the refill into `base` (a conditional write; losing that race
/// is harmless), so an idle bucket never earns more than its capacity.
impl RateLimiter {
    /// Reserves `cost` tokens of bucket `key` and returns how long to wait before using them (zero:
    /// go now). A reservation whose wait would exceed `max_wait` is given back and reported as
    /// `Err(LimiterError::WaitTooLong(wait))`.
    pub async fn reserve(
        &self,
        key: &str,
        rate: Rate,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Duration, LimiterError> {
        let cost_milli = i64::from(cost) * 1000;
        let now = now_ms();
        let n = |v: i64| AttributeValue::N(v.to_string());
        let out = self
            .send(
                self.client
                    .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression(
                "SET base_mt = if_not_exists(base_mt, :cap), ts = if_not_exists(ts, :now), expires_at = :exp \
                 ADD used_mt :cost",
            )
            .expression_attribute_values(":cap", n(rate.capacity_milli()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now / 1000 + 2 * rate.period.as_secs() as i64 + 3600))
            .expression_attribute_values(":cost", n(cost_milli))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                    .send(),
            )
            .await
            .map_err(|e| {
                if e.as_service_error().is_none() {
                    LimiterError::Dynamo(unreachable_text(&e))
                } else {
                    LimiterError::Dynamo(dynamo_error_text(&e.into_service_error()))
                }
            })?;
        let item = out
            .attributes()
            .ok_or_else(|| LimiterError::Malformed("no attributes returned".into()))?;
        let num = |name: &str| -> Result<i64, LimiterError> {
            match item.get(name) {
                Some(AttributeValue::N(v)) => v
                    .parse()
                    .map_err(|_| LimiterError::Malformed(format!("{name} is not an integer"))),
                _ => Err(LimiterError::Malformed(format!("{name} is missing"))),
            }
        };
        let (base, ts, consumed) = (num("base_mt")?, num("ts")?, num("used_mt")?);
        let elapsed = now.max(ts) - ts;
        let available = (base + rate.refill(elapsed)).min(rate.capacity_milli()) - consumed;
        if elapsed >= rate.period_ms() {
            // Fold the refill in, so idle time never counts for more than a full bucket.
            let _ = self
                .send(
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .key("pk", AttributeValue::S(key.to_owned()))
                        .update_expression("SET base_mt = :base, ts = :now, used_mt = :zero")
                        .condition_expression("ts = :ts AND used_mt = :consumed")
                        .expression_attribute_values(":base", n(available))
                        .expression_attribute_values(":now", n(now))
                        .expression_attribute_values(":zero", n(0))
                        .expression_attribute_values(":ts", n(ts))
                        .expression_attribute_values(":consumed", n(consumed))
                        .send(),
                )
                .await;
        }
        if available >= 0 {
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_millis(rate.time_for(-available) as u64);
        if wait > max_wait {
            // Give the tokens back: the caller will not use them.
            let _ = self
                .send(
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .key("pk", AttributeValue::S(key.to_owned()))
                        .update_expression("ADD used_mt :back")
                        .expression_attribute_values(":back", n(-cost_milli))
                        .send(),
                )
                .await;
            return Err(LimiterError::WaitTooLong(wait));
        }
        Ok(wait)
    }
}

/// Keys that can be claimed once (a used OAuth state, a delivered event), kept in the same table
/// until `expires_at`.
impl RateLimiter {
    /// Claims `key` for `ttl`: `true` the first time, `false` while an earlier claim is alive.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, LimiterError> {
        let now = now_ms() / 1000;
        let n = |v: i64| AttributeValue::N(v.to_string());
        let result = self
            .send(
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", AttributeValue::S(key.to_owned()))
                    .item("expires_at", n(now + ttl.as_secs() as i64))
                    // DynamoDB deletes expired items lazily: an expired claim counts as free.
                    .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                    .expression_attribute_values(":now", n(now))
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_none() => {
                Err(LimiterError::Dynamo(unreachable_text(&err)))
            }
            Err(err) => {
                use aws_sdk_dynamodb::operation::put_item::PutItemError;
                match err.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(_) => Ok(false),
                    other => {
                        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                        Err(LimiterError::Dynamo(format!(
                            "{}: {}",
                            other.code().unwrap_or("error"),
                            other.message().unwrap_or("no message")
                        )))
                    }
                }
            }
        }
    }
}

fn parse_state(item: &HashMap<String, AttributeValue>) -> Result<BucketState, LimiterError> {
    let num = |name: &str| -> Result<i64, LimiterError> {
        match item.get(name) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| LimiterError::Malformed(format!("{name} is not an integer"))),
            _ => Err(LimiterError::Malformed(format!("{name} is missing"))),
        }
    };
    Ok(BucketState {
        tokens: num("tokens")?,
        ts: num("ts")?,
    })
}

/// Creates the rate-limit table as `template.yaml` declares it (partition key `pk`, on-demand
/// billing, TTL on `expires_at`). For local stacks, tests and benchmarks against moto; a deployment
/// gets its table from the template.
pub async fn create_table(client: &Client, name: &str) -> Result<(), LimiterError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let built = |e: aws_sdk_dynamodb::error::BuildError| LimiterError::Dynamo(e.to_string());
    let sent = |e: String| LimiterError::Dynamo(format!("cannot create table {name}: {e}"));
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(built)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(|e| sent(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(|e| sent(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}

/// Why a call got no answer from DynamoDB (no service error): without this the log said only
/// "error: no message".
fn unreachable_text<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String {
    use aws_sdk_dynamodb::error::SdkError;
    match err {
        SdkError::TimeoutError(_) => "DynamoDB did not answer in time".into(),
        SdkError::DispatchFailure(f) if f.is_timeout() => "DynamoDB did not answer in time".into(),
        SdkError::DispatchFailure(f) if f.is_io() => "DynamoDB could not be reached".into(),
        SdkError::DispatchFailure(_) => "the request to DynamoDB could not be sent".into(),
        SdkError::ResponseError(_) => "DynamoDB's answer could not be read".into(),
        SdkError::ConstructionFailure(_) => "the DynamoDB request could not be built".into(),
        _ => "DynamoDB call failed".into(),
    }
}

fn dynamo_error_text(err: &UpdateItemError) -> String {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    format!(
        "{}: {}",
        err.code().unwrap_or("error"),
        err.message().unwrap_or("no message")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_and_wait_use_integer_milli_tokens() {
        let rate = Rate::per_minute(20);
        // 20 tokens a minute: one token every 3 s.
        assert_eq!(rate.refill(3_000), 1_000);
        assert_eq!(rate.refill(1), 0);
        assert_eq!(rate.refill(150), 50);
        assert_eq!(rate.time_for(1_000), 3_000);
        assert_eq!(rate.time_for(1), 3, "rounded up, never zero for a deficit");
        assert_eq!(rate.refill(-5), 0);
        let six = Rate::per_minute(6);
        assert_eq!(six.time_for(1_000), 10_000);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(
            Decision::Wait(Duration::from_millis(1)).retry_after_secs(),
            1
        );
        assert_eq!(
            Decision::Wait(Duration::from_millis(2_001)).retry_after_secs(),
            3
        );
        assert_eq!(Decision::Admitted.retry_after_secs(), 0);
    }
}
