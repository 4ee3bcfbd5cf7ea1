//! `contacts-fetch` (`GET /api/integrations/{provider}/contacts/fetch`): normalized contacts since a
//! time, `limit`, nothing written, bad input, and the limit of 20 calls a minute per user.

use crmsync_domain::Provider;
use http::StatusCode;
use uuid::Uuid;

use crate::support::env::{Env, Route, sandbox_provider};
use crate::support::rows::median_since;

fn fetch_path(provider: Provider) -> String {
    format!("/api/integrations/{}/contacts/fetch", provider.as_str())
}

#[tokio::test]
async fn fetch_shows_normalized_contacts_since_a_time_and_writes_nothing() {
    let env = Env::start().await;
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 9, 600);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let (since, newer) = median_since(&env, provider).await;

    let fetched = env
        .as_user(
            user,
            Route::ContactsFetch,
            "GET",
            &fetch_path(provider),
            &format!("since={since}&limit=500"),
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK, "{:?}", fetched.body);
    let contacts = fetched.body["contacts"].as_array().unwrap();
    assert_eq!(fetched.body["count"], contacts.len());
    assert_eq!(
        contacts.len() as u64 + fetched.body["skipped"].as_u64().unwrap(),
        newer as u64
    );
    let first = &contacts[0];
    for key in [
        "externalId",
        "name",
        "email",
        "phoneNumber",
        "notes",
        "updatedAt",
    ] {
        assert!(
            first.get(key).is_some(),
            "normalized contact has {key}: {first}"
        );
    }
    assert!(first["phoneNumber"].as_str().unwrap().starts_with('+'));
    assert!(
        env.store.list_contacts(user).await.unwrap().is_empty(),
        "fetch writes nothing"
    );

    let limited = env
        .as_user(
            user,
            Route::ContactsFetch,
            "GET",
            &fetch_path(provider),
            "limit=7",
        )
        .await;
    assert_eq!(limited.body["count"], 7);
}

#[tokio::test]
async fn a_fetch_with_a_bad_limit_is_400_and_writes_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Rex).await;
    let bad_limit = env
        .as_user(
            user,
            Route::ContactsFetch,
            "GET",
            &fetch_path(Provider::Rex),
            "limit=zero",
        )
        .await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert!(env.store.list_contacts(user).await.unwrap().is_empty());
}

/// Fetch: 20 a minute per user; the 21st gets 429 with `Retry-After`. Another user is not affected.
#[tokio::test]
async fn fetch_is_limited_to_20_calls_a_minute_per_user() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Rex).await;
    let path = fetch_path(Provider::Rex);
    for i in 0..20 {
        let ok = env
            .as_user(user, Route::ContactsFetch, "GET", &path, "limit=1")
            .await;
        assert_eq!(ok.status, StatusCode::OK, "call {i}: {:?}", ok.body);
    }
    let limited = env
        .as_user(user, Route::ContactsFetch, "GET", &path, "limit=1")
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"], "rate_limited");
    let retry: u64 = limited.headers[http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "one token every 3 s: {retry}");
    let other = env
        .as_user(
            Uuid::new_v4(),
            Route::ContactsFetch,
            "GET",
            &path,
            "limit=1",
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another user has their own bucket (and no integration)"
    );
}
