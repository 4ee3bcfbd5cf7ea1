//! The DynamoDB token bucket, against moto.

use std::sync::Arc;
use std::time::Duration;

use crmsync_aws::limiter::{Decision, Rate, RateLimiter};

use crate::support::common::{CallCounter, moto_config, rate_limit_table};

async fn table() -> (String, aws_sdk_dynamodb::Client, CallCounter) {
    let conf = moto_config().await;
    let counter = CallCounter::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&conf)
            .interceptor(counter.clone())
            .build(),
    );
    let name = rate_limit_table(&client).await;
    (name, client, counter)
}

#[tokio::test]
async fn concurrent_requests_on_a_bucket_of_capacity_c_admit_exactly_c() {
    let (table, client, _) = table().await;
    // Four "Lambdas", each with its own limiter and memory, 60 requests at once on one bucket of 10.
    let limiters: Vec<_> = (0..4)
        .map(|_| Arc::new(RateLimiter::new(client.clone(), &table)))
        .collect();
    let rate = Rate {
        capacity: 10,
        period: Duration::from_secs(3600),
    };
    let mut tasks = Vec::new();
    for i in 0..60 {
        let limiter = limiters[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            limiter.acquire("user:alice:sync", rate).await
        }));
    }
    let mut admitted = 0;
    let mut waits = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Decision::Admitted => admitted += 1,
            Decision::Wait(d) => waits.push(d),
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(waits.len(), 50);
    // One token every 6 minutes: every refusal says so (give or take the time the test took).
    assert!(
        waits
            .iter()
            .all(|w| *w > Duration::from_secs(300) && *w <= Duration::from_secs(360)),
        "{waits:?}"
    );

    // Another bucket is independent.
    assert!(
        limiters[0]
            .acquire("user:bob:sync", rate)
            .await
            .unwrap()
            .is_admitted()
    );
}

#[tokio::test]
async fn steady_state_costs_one_update_per_admitted_request() {
    let (table, client, counter) = table().await;
    let limiter = RateLimiter::new(client, &table);
    let rate = Rate::per_minute(1_000);
    let set_up_calls = counter.get();
    for _ in 0..20 {
        assert!(
            limiter
                .acquire("user:carol:fetch", rate)
                .await
                .unwrap()
                .is_admitted()
        );
    }
    assert_eq!(
        counter.get() - set_up_calls,
        20,
        "one UpdateItem per admitted request"
    );

    // A new process (cold start) on the same bucket: one failed condition tells it the state.
    let (cold_counter, cold_client) = {
        let conf = moto_config().await;
        let c = CallCounter::default();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&conf)
                .interceptor(c.clone())
                .build(),
        );
        (c, client)
    };
    let cold = RateLimiter::new(cold_client, &table);
    assert!(
        cold.acquire("user:carol:fetch", rate)
            .await
            .unwrap()
            .is_admitted()
    );
    assert_eq!(
        cold_counter.get(),
        2,
        "a conditional create that fails with the item, then the update"
    );
    assert!(
        cold.acquire("user:carol:fetch", rate)
            .await
            .unwrap()
            .is_admitted()
    );
    assert_eq!(cold_counter.get(), 3);
}

#[tokio::test]
async fn an_empty_bucket_says_how_long_to_wait_and_refills() {
    let (table, client, counter) = table().await;
    let limiter = RateLimiter::new(client.clone(), &table);
    // Two tokens a second: one every 500 ms.
    let rate = Rate {
        capacity: 2,
        period: Duration::from_secs(1),
    };
    assert!(limiter.acquire("k", rate).await.unwrap().is_admitted());
    assert!(limiter.acquire("k", rate).await.unwrap().is_admitted());
    let calls = counter.get();
    let Decision::Wait(wait) = limiter.acquire("k", rate).await.unwrap() else {
        panic!("a third request within the period must wait");
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    assert_eq!(
        counter.get(),
        calls,
        "a refusal known from the last write costs no call"
    );
    assert_eq!(
        limiter.acquire("k", rate).await.unwrap().retry_after_secs(),
        1
    );

    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert!(
        limiter.acquire("k", rate).await.unwrap().is_admitted(),
        "a token came back"
    );

    // The item has the contract's shape: integer milli-tokens and a TTL in the future.
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("k".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let num = |k: &str| item[k].as_n().unwrap().parse::<i64>().unwrap();
    assert!(
        (0..1_000).contains(&num("tokens")),
        "milli-tokens: {}",
        num("tokens")
    );
    assert!(num("expires_at") > chrono::Utc::now().timestamp());
}

#[tokio::test]
async fn a_missing_table_is_an_error_not_an_admission() {
    let conf = moto_config().await;
    let limiter = RateLimiter::new(aws_sdk_dynamodb::Client::new(&conf), "no-such-table");
    let err = limiter.acquire("k", Rate::per_minute(5)).await.unwrap_err();
    assert!(err.to_string().contains("ResourceNotFound"), "{err}");
}

#[tokio::test]
async fn reservations_give_concurrent_callers_their_turns_with_one_call_each() {
    let (table, client, counter) = table().await;
    let limiters: Vec<_> = (0..4)
        .map(|_| Arc::new(RateLimiter::new(client.clone(), &table)))
        .collect();
    // Ten tokens a minute: one every 6 s after the first ten.
    let rate = Rate {
        capacity: 10,
        period: Duration::from_secs(60),
    };
    let calls_before = counter.get();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let limiter = limiters[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            limiter
                .reserve("crm:fub:account", rate, 1, Duration::from_secs(3600))
                .await
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.push(t.await.unwrap().unwrap());
    }
    assert_eq!(
        counter.get() - calls_before,
        40,
        "one UpdateItem per reservation, however contended"
    );
    waits.sort();
    assert!(
        waits[..10].iter().all(Duration::is_zero),
        "the first ten go now: {waits:?}"
    );
    for (k, wait) in waits[10..].iter().enumerate() {
        // The k-th waiter's turn is (k + 1) * 6 s away, less the little time the test itself took.
        let turn = Duration::from_secs(6 * (k as u64 + 1));
        assert!(
            *wait <= turn && *wait + Duration::from_secs(3) >= turn,
            "waiter {k}: {wait:?} vs {turn:?}"
        );
    }

    // A turn past the caller's patience is refused and given back: the next caller's turn is unchanged.
    let probe = limiters[0]
        .reserve("crm:fub:account", rate, 1, Duration::from_secs(1))
        .await;
    let Err(crmsync_aws::LimiterError::WaitTooLong(too_long)) = probe else {
        panic!("expected WaitTooLong, got {probe:?}");
    };
    let next = limiters[1]
        .reserve("crm:fub:account", rate, 1, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        next <= too_long && next + Duration::from_secs(1) >= too_long,
        "{next:?} vs {too_long:?}"
    );
}
