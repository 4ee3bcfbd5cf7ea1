//! `integrations` (`GET`/`POST /api/integrations`, `GET`/`PUT`/`DELETE /api/integrations/{id}`):
//! connect by API key (the key checked with one CRM call, limited so keys cannot be guessed), list,
//! read, update, pause and reactivate, disconnect; the contract's errors for bad input, and no
//! credential in any answer. (Another user's integrations: `qualities/security.rs`; the sync logs:
//! `sync_logs.rs`.)

use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{
    FUB_KEY, LOFTY_KEY, OneIntegration, assert_error, assert_integration_shape, assert_status,
    connect, crm_requests, describe, error_problem, get, item, logs, logs_of, send_raw,
    stored_rows, update,
};
use crate::support::env::{Env, Reply, Route};
use crate::support::rows::assert_no_failures;

/// A user who has just connected `provider` by API key `key` (`autoSync` off, `riskThreshold` 35),
/// with the answers so far.
struct Connected {
    env: Env,
    user: Uuid,
    id: String,
    integration: Value,
    replies: Vec<Reply>,
}

/// Connects `provider` by API key: before, the list is empty; the key is checked with one CRM call;
/// 201 with the integration, its settings and its `Location`.
async fn connected(provider: Provider, key: &str) -> Connected {
    let env = Env::start().await;
    let user = Uuid::new_v4();

    let empty = get(&env, user, "/api/integrations").await;
    assert_status(&empty, StatusCode::OK);
    assert_eq!(empty.body, json!({ "integrations": [] }));

    let calls = crm_requests(&env, provider);
    let created = connect(
        &env,
        user,
        json!({"provider": provider, "apiKey": key, "autoSync": false, "riskThreshold": 35}),
    )
    .await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(
        crm_requests(&env, provider) - calls,
        1,
        "one call checks the key"
    );
    let integration = created.body.clone();
    assert_integration_shape(&integration);
    let id = integration["id"].as_str().unwrap().to_owned();
    assert_eq!(created.location(), item(&id));
    assert_eq!(integration["provider"], provider.as_str());
    assert_eq!(integration["authType"], "api_key");
    assert_eq!(integration["status"], "active");
    assert_eq!(integration["autoSync"], false);
    assert_eq!(integration["riskThreshold"], 35);
    assert_eq!(integration["consecutiveFailures"], 0);
    assert_eq!(integration["lastSyncAt"], Value::Null);
    assert_eq!(integration["tokenExpiresAt"], Value::Null);
    assert_eq!(integration["lastError"], Value::Null);
    Connected {
        env,
        user,
        id,
        integration,
        replies: vec![created],
    }
}

/// No answer holds the API key or anything of the stored credentials.
#[track_caller]
fn assert_no_credentials(replies: &[Reply], key: &str) {
    for reply in replies {
        let text = format!("{:?} {:?}", reply.headers, reply.body);
        assert!(!text.contains(key), "a response holds the API key: {text}");
        assert!(
            !text.contains("ciphertext") && !text.contains("credentials"),
            "{text}"
        );
    }
}

/// Listed and read back the same as connected.
async fn connect_and_read(provider: Provider, key: &str) {
    let Connected {
        env,
        user,
        id,
        integration,
        mut replies,
    } = connected(provider, key).await;
    let listed = get(&env, user, "/api/integrations").await;
    assert_status(&listed, StatusCode::OK);
    assert_eq!(listed.body["integrations"], json!([integration]));
    replies.push(listed);
    let read = get(&env, user, &item(&id)).await;
    assert_status(&read, StatusCode::OK);
    assert_eq!(read.body, integration);
    replies.push(read);
    assert_no_credentials(&replies, key);
}

/// Update one setting at a time, the others stay; connecting again replaces the key of the same
/// integration: 200, the same id, the settings kept.
async fn update_and_reconnect(provider: Provider, key: &str) {
    let Connected {
        env,
        user,
        id,
        mut replies,
        ..
    } = connected(provider, key).await;
    let updated = update(&env, user, &id, json!({"autoSync": true})).await;
    assert_status(&updated, StatusCode::OK);
    assert_eq!(updated.body["autoSync"], true);
    assert_eq!(updated.body["riskThreshold"], 35);
    replies.push(updated);
    let updated = update(&env, user, &id, json!({"riskThreshold": 0})).await;
    assert_status(&updated, StatusCode::OK);
    assert_eq!(updated.body["autoSync"], true);
    assert_eq!(updated.body["riskThreshold"], 0);
    assert_integration_shape(&updated.body);
    replies.push(updated);
    let read = get(&env, user, &item(&id)).await;
    assert_eq!(read.body["riskThreshold"], 0);
    replies.push(read);

    let again = connect(&env, user, json!({"provider": provider, "apiKey": key})).await;
    assert_status(&again, StatusCode::OK);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["autoSync"], true);
    assert_eq!(again.body["riskThreshold"], 0);
    replies.push(again);
    assert_eq!(stored_rows(&env, user).await.len(), 1);
    assert_no_credentials(&replies, key);
}

/// The stored key works (a pull sync through the integration succeeds); disconnecting answers 204,
/// then the integration is gone everywhere, its credentials with it, and its sync log stays.
async fn sync_and_disconnect(provider: Provider, key: &str) {
    let Connected {
        env,
        user,
        id,
        mut replies,
        ..
    } = connected(provider, key).await;
    let sync = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &format!("/api/integrations/{}/contacts/sync", provider.as_str()),
            "",
        )
        .await;
    assert_status(&sync, StatusCode::OK);
    let read = get(&env, user, &item(&id)).await;
    assert!(read.body["lastSyncAt"].is_string(), "{:?}", read.body);
    replies.push(read);

    let deleted = env
        .as_user(user, Route::Integrations, "DELETE", &item(&id), "")
        .await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    assert!(stored_rows(&env, user).await.is_empty());
    assert_error(
        &get(&env, user, &item(&id)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let again = env
        .as_user(user, Route::Integrations, "DELETE", &item(&id), "")
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    let listed = get(&env, user, "/api/integrations").await;
    assert_eq!(listed.body, json!({ "integrations": [] }));
    // The sync's log outlives the integration.
    let kept = logs(&env, user, &logs_of(&id), "").await;
    assert_status(&kept, StatusCode::OK);
    assert_eq!(kept.body["logs"].as_array().unwrap().len(), 1);
    replies.push(kept);
    assert_no_credentials(&replies, key);
}

#[tokio::test]
async fn lofty_api_key_connect_and_read() {
    connect_and_read(Provider::Lofty, LOFTY_KEY).await;
}

#[tokio::test]
async fn lofty_api_key_update_and_reconnect() {
    update_and_reconnect(Provider::Lofty, LOFTY_KEY).await;
}

#[tokio::test]
pub(crate) async fn lofty_api_key_sync_and_disconnect() {
    sync_and_disconnect(Provider::Lofty, LOFTY_KEY).await;
}

#[tokio::test]
async fn followupboss_api_key_connect_and_read() {
    connect_and_read(Provider::FollowUpBoss, FUB_KEY).await;
}

#[tokio::test]
async fn followupboss_api_key_update_and_reconnect() {
    update_and_reconnect(Provider::FollowUpBoss, FUB_KEY).await;
}

#[tokio::test]
async fn followupboss_api_key_sync_and_disconnect() {
    sync_and_disconnect(Provider::FollowUpBoss, FUB_KEY).await;
}

#[tokio::test]
async fn a_refused_key_is_422_and_stores_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    for provider in [Provider::Lofty, Provider::FollowUpBoss] {
        let refused = connect(
            &env,
            user,
            json!({"provider": provider, "apiKey": "wrong-key"}),
        )
        .await;
        assert_error(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_credentials",
        );
        assert!(!refused.body.to_string().contains("wrong-key"));
    }
    assert!(stored_rows(&env, user).await.is_empty());
    assert_eq!(
        get(&env, user, "/api/integrations").await.body,
        json!({ "integrations": [] })
    );
}

#[tokio::test]
async fn rex_connects_by_oauth_only() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let rex = connect(&env, user, json!({"provider": "rex", "apiKey": "anything"})).await;
    assert_error(&rex, StatusCode::BAD_REQUEST, "bad_request");
    assert!(stored_rows(&env, user).await.is_empty());
}

#[tokio::test]
async fn a_refused_key_does_not_disturb_a_working_connection() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let ok = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    assert_status(&ok, StatusCode::CREATED);
    let before = stored_rows(&env, user).await;
    let refused = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": "wrong-key"}),
    )
    .await;
    assert_error(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    );
    assert_eq!(stored_rows(&env, user).await, before);
}

#[tokio::test]
async fn bad_connect_bodies_are_400_and_change_nothing() {
    let one = OneIntegration::start().await;
    let huge = format!(
        r#"{{"provider":"followupboss","apiKey":"{FUB_KEY}","pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let post_bodies: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        json!({"provider": "followupboss", "apiKey": FUB_KEY, "extra": 1})
            .to_string()
            .into(),
        json!({"provider": "followupboss", "apiKey": FUB_KEY, "riskThreshold": 101})
            .to_string()
            .into(),
        json!({"provider": "followupboss", "apiKey": FUB_KEY, "riskThreshold": -1})
            .to_string()
            .into(),
        json!({"provider": "followupboss", "apiKey": FUB_KEY, "riskThreshold": 2.5})
            .to_string()
            .into(),
        json!({"provider": "followupboss", "apiKey": FUB_KEY, "autoSync": "yes"})
            .to_string()
            .into(),
        json!({"provider": "salesforce", "apiKey": FUB_KEY})
            .to_string()
            .into(),
        json!({"provider": "followupboss"}).to_string().into(),
        json!({"provider": "followupboss", "apiKey": "  "})
            .to_string()
            .into(),
        json!({"provider": "followupboss", "api_key": FUB_KEY})
            .to_string()
            .into(),
        huge.into_bytes(),
    ];
    let mut failures = Vec::new();
    for body in &post_bodies {
        let reply = send_raw(&one.env, one.user, "POST", "/api/integrations", body).await;
        if let Some(problem) = error_problem(&reply, StatusCode::BAD_REQUEST, "bad_request") {
            failures.push(format!("POST {}: {problem}", describe(body)));
        }
    }
    assert_no_failures("bad connect bodies", &failures);
    one.assert_unchanged().await;
}

#[tokio::test]
async fn bad_update_bodies_are_400_and_change_nothing() {
    let one = OneIntegration::start().await;
    let huge_put = format!(r#"{{"autoSync":false,"pad":"{}"}}"#, "x".repeat(300 * 1024));
    let put_bodies: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"".to_vec(),
        b"{}".to_vec(),
        json!({"autoSync": null}).to_string().into(),
        json!({"autoSync": false, "apiKey": "x"}).to_string().into(),
        json!({"riskThreshold": 101}).to_string().into(),
        json!({"status": "error"}).to_string().into(),
        json!({"status": "ACTIVE"}).to_string().into(),
        json!({"consecutiveFailures": 0}).to_string().into(),
        huge_put.into_bytes(),
    ];
    let mut failures = Vec::new();
    for body in &put_bodies {
        let reply = send_raw(&one.env, one.user, "PUT", &item(&one.id), body).await;
        if let Some(problem) = error_problem(&reply, StatusCode::BAD_REQUEST, "bad_request") {
            failures.push(format!("PUT {}: {problem}", describe(body)));
        }
    }
    assert_no_failures("bad update bodies", &failures);
    one.assert_unchanged().await;
}

/// Ids that are not UUIDs, on read, update and disconnect (on the logs: `sync_logs.rs`).
#[tokio::test]
async fn ids_that_are_not_uuids_are_400_and_change_nothing() {
    let one = OneIntegration::start().await;
    let (env, user) = (&one.env, one.user);
    let mut failures = Vec::new();
    for bad in ["lofty", "123", "not-a-uuid", "%27%20OR%201=1"] {
        let read = get(env, user, &item(bad)).await;
        let put = update(env, user, bad, json!({"autoSync": false})).await;
        let del = env
            .as_user(user, Route::Integrations, "DELETE", &item(bad), "")
            .await;
        for (method, reply) in [("GET", read), ("PUT", put), ("DELETE", del)] {
            if let Some(problem) = error_problem(&reply, StatusCode::BAD_REQUEST, "bad_request") {
                failures.push(format!("{method} {}: {problem}", item(bad)));
            }
        }
    }
    assert_no_failures("ids that are not UUIDs", &failures);
    one.assert_unchanged().await;
}

/// No caller, no answer (on the logs: `sync_logs.rs`; every kind of forged JWT on every route:
/// `qualities/security.rs`).
#[tokio::test]
async fn no_caller_or_a_malformed_jwt_is_401_and_changes_nothing() {
    let one = OneIntegration::start().await;
    let env = &one.env;
    let anonymous = env
        .call(
            Route::Integrations,
            "GET",
            "/api/integrations",
            "",
            &[],
            &[],
        )
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    let forged = env
        .call(
            Route::Integrations,
            "DELETE",
            &item(&one.id),
            "",
            &["alto_admin=not.a.jwt".into()],
            &[],
        )
        .await;
    assert_error(&forged, StatusCode::UNAUTHORIZED, "unauthorized");
    one.assert_unchanged().await;
}

/// A method the function does not serve.
#[tokio::test]
async fn patch_is_404_and_changes_nothing() {
    let one = OneIntegration::start().await;
    let patch = one
        .env
        .as_user(one.user, Route::Integrations, "PATCH", &item(&one.id), "")
        .await;
    assert_error(&patch, StatusCode::NOT_FOUND, "not_found");
    one.assert_unchanged().await;
}

#[tokio::test]
pub(crate) async fn pausing_keeps_failures_and_reactivating_resets_them() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let created = connect(
        &env,
        user,
        json!({"provider": "followupboss", "apiKey": FUB_KEY}),
    )
    .await;
    assert_status(&created, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .execute(
            "UPDATE crm_integrations SET consecutive_failures = 7, last_error = 'Follow Up Boss could not be reached.'
              WHERE id = $1",
            &[&Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    let read = get(&env, user, &item(&id)).await;
    assert_eq!(read.body["consecutiveFailures"], 7);
    assert_eq!(
        read.body["lastError"],
        "Follow Up Boss could not be reached."
    );

    let paused = update(&env, user, &id, json!({"status": "paused"})).await;
    assert_status(&paused, StatusCode::OK);
    assert_eq!(paused.body["status"], "paused");
    assert_eq!(paused.body["consecutiveFailures"], 7);

    let active = update(
        &env,
        user,
        &id,
        json!({"status": "active", "autoSync": false}),
    )
    .await;
    assert_status(&active, StatusCode::OK);
    assert_eq!(active.body["status"], "active");
    assert_eq!(active.body["consecutiveFailures"], 0);
    assert_eq!(active.body["autoSync"], false);
    assert_integration_shape(&active.body);
    assert_eq!(get(&env, user, &item(&id)).await.body, active.body);
}

#[tokio::test]
async fn connecting_by_api_key_is_limited_so_keys_cannot_be_guessed() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let guess = |n: usize| json!({"provider": "lofty", "apiKey": format!("guess-{n}")});
    for n in 0..10 {
        let reply = connect(&env, user, guess(n)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "guess {n}: {:?}",
            reply.body
        );
    }
    let limited = connect(&env, user, guess(10)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key(http::header::RETRY_AFTER));
    let calls = crm_requests(&env, Provider::Lofty);
    assert_eq!(calls, 10, "the eleventh guess never reached the CRM");
}
