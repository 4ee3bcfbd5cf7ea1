//! The `integrations` and `sync-logs` functions end to end: connect by API key, list, read, update,
//! disconnect; privacy between users; bad input; and the sync logs, paged newest first.

use std::collections::BTreeSet;

use crmsync_domain::Provider;
use crmsync_domain::{Direction, LogStatus, Trigger};
use crmsync_store::NewSyncLog;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::env::{Env, Reply, Route, sandbox_provider};

const LOFTY_KEY: &str = "sandbox-lofty-key";
const FUB_KEY: &str = "sandbox-fub-key";

/// Every field of an integration on the wire.
const INTEGRATION_FIELDS: [&str; 11] = [
    "id",
    "provider",
    "authType",
    "status",
    "autoSync",
    "riskThreshold",
    "consecutiveFailures",
    "lastSyncAt",
    "tokenExpiresAt",
    "lastError",
    "createdAt",
];

/// Every field of a sync log on the wire.
const LOG_FIELDS: [&str; 12] = [
    "id",
    "integrationId",
    "provider",
    "direction",
    "trigger",
    "status",
    "leadId",
    "action",
    "attempts",
    "metrics",
    "error",
    "createdAt",
];

fn item(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}")
}

fn logs_of(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}/logs")
}

async fn connect(env: &Env, user: Uuid, body: Value) -> Reply {
    env.json_as_user(
        user,
        Route::Integrations,
        "POST",
        "/api/integrations",
        &body,
    )
    .await
}

async fn update(env: &Env, user: Uuid, id: &str, body: Value) -> Reply {
    env.json_as_user(user, Route::Integrations, "PUT", &item(id), &body)
        .await
}

/// `user` sends raw bytes as the body.
async fn send_raw(env: &Env, user: Uuid, method: &str, path: &str, body: &[u8]) -> Reply {
    env.send(
        Route::Integrations,
        method,
        path,
        "",
        &[format!("alto_admin={}", Env::token(user))],
        &[("content-type", "application/json")],
        Some(body),
    )
    .await
}

async fn get(env: &Env, user: Uuid, path: &str) -> Reply {
    env.as_user(user, Route::Integrations, "GET", path, "")
        .await
}

async fn logs(env: &Env, user: Uuid, path: &str, query: &str) -> Reply {
    env.as_user(user, Route::SyncLogs, "GET", path, query).await
}

/// Requests the sandbox has served for `provider`.
fn crm_requests(env: &Env, provider: Provider) -> u64 {
    env.sandbox.stats()["providers"][sandbox_provider(provider).name()]["requests"]
        .as_u64()
        .expect("sandbox request count")
}

#[track_caller]
fn assert_status(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
}

#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"], code, "{:?}", reply.body);
    assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(reply.body.as_object().map(|o| o.len()), Some(2));
}

#[track_caller]
fn assert_integration_shape(v: &Value) {
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("an integration object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(INTEGRATION_FIELDS), "{v}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["createdAt"].as_str().unwrap()).is_ok(),
        "{v}"
    );
}

/// The rows of `crm_integrations` of `user`, as the table owner sees them.
async fn stored_rows(env: &Env, user: Uuid) -> Vec<(Uuid, String, bool, i32, Vec<u8>)> {
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .query(
            "SELECT id, status, auto_sync, risk_threshold, credentials_ciphertext
               FROM crm_integrations WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn log(integration: Option<Uuid>, provider: Provider, n: usize) -> NewSyncLog {
    NewSyncLog {
        integration_id: integration,
        provider,
        direction: if n.is_multiple_of(2) {
            Direction::Pull
        } else {
            Direction::Push
        },
        trigger: Trigger::Schedule,
        status: LogStatus::Success,
        lead_id: Some(format!("L-{n}")),
        action: Some("created".into()),
        attempts: 1,
        metrics: Some(json!({ "n": n })),
        error: None,
    }
}

/// Reads every page of `path` with `limit`, checking each page; returns the log ids in order.
/// `between_pages` runs after the first page.
async fn read_all_pages(
    env: &Env,
    user: Uuid,
    path: &str,
    limit: u32,
    between_pages: impl AsyncFnOnce(),
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    let mut hook = Some(between_pages);
    loop {
        let query = match &before {
            Some(c) => format!("limit={limit}&before={c}"),
            None => format!("limit={limit}"),
        };
        let page = logs(env, user, path, &query).await;
        assert_status(&page, StatusCode::OK);
        let rows = page.body["logs"].as_array().expect("logs").clone();
        assert!(rows.len() <= limit as usize);
        for row in &rows {
            let keys: BTreeSet<&str> = row
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, BTreeSet::from(LOG_FIELDS), "{row}");
            ids.push(row["id"].as_str().unwrap().to_owned());
        }
        if let Some(hook) = hook.take() {
            hook().await;
        }
        match page.body["nextBefore"].as_str() {
            Some(next) => {
                assert_eq!(
                    rows.len(),
                    limit as usize,
                    "only a full page has a next one"
                );
                before = Some(next.to_owned());
            }
            None => {
                assert!(page.body["nextBefore"].is_null());
                return ids;
            }
        }
    }
}

/// The ids of `user`'s logs (of one integration) in the order the API must give them.
async fn expected_order(env: &Env, user: Uuid, integration: Option<Uuid>) -> Vec<String> {
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .query(
            "SELECT id FROM crm_sync_logs
              WHERE user_id = $1 AND ($2::uuid IS NULL OR integration_id = $2)
              ORDER BY created_at DESC, id DESC",
            &[&user, &integration],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Uuid>(0).to_string())
        .collect()
}

async fn api_key_round_trip(provider: Provider, key: &str) {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let mut replies = Vec::new();

    let empty = get(&env, user, "/api/integrations").await;
    assert_status(&empty, StatusCode::OK);
    assert_eq!(empty.body, json!({ "integrations": [] }));

    // Connect: one CRM call checks the key; 201 with the integration and its settings.
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
    replies.push(created);

    // Listed and read back the same.
    let listed = get(&env, user, "/api/integrations").await;
    assert_status(&listed, StatusCode::OK);
    assert_eq!(listed.body["integrations"], json!([integration]));
    replies.push(listed);
    let read = get(&env, user, &item(&id)).await;
    assert_status(&read, StatusCode::OK);
    assert_eq!(read.body, integration);
    replies.push(read);

    // Update one setting at a time; the others stay.
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

    // Connecting again replaces the key of the same integration: 200, same id, settings kept.
    let again = connect(&env, user, json!({"provider": provider, "apiKey": key})).await;
    assert_status(&again, StatusCode::OK);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["autoSync"], true);
    assert_eq!(again.body["riskThreshold"], 0);
    replies.push(again);
    assert_eq!(stored_rows(&env, user).await.len(), 1);

    // The stored key works: a pull sync through the connected integration succeeds.
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

    // Disconnect: 204, then gone everywhere; the credentials go with the row.
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

    for reply in &replies {
        let text = format!("{:?} {:?}", reply.headers, reply.body);
        assert!(!text.contains(key), "a response holds the API key: {text}");
        assert!(
            !text.contains("ciphertext") && !text.contains("credentials"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn lofty_api_key_connect_read_update_disconnect() {
    api_key_round_trip(Provider::Lofty, LOFTY_KEY).await;
}

#[tokio::test]
async fn followupboss_api_key_connect_read_update_disconnect() {
    api_key_round_trip(Provider::FollowUpBoss, FUB_KEY).await;
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

    // REX connects by OAuth only.
    let rex = connect(&env, user, json!({"provider": "rex", "apiKey": "anything"})).await;
    assert_error(&rex, StatusCode::BAD_REQUEST, "bad_request");

    // A refused key does not disturb a working connection.
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
async fn users_cannot_see_or_touch_each_others_integrations() {
    let env = Env::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let created = connect(&env, a, json!({"provider": "lofty", "apiKey": LOFTY_KEY})).await;
    assert_status(&created, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let a_id = Uuid::parse_str(&id).unwrap();
    env.store
        .insert_sync_log(a, &log(Some(a_id), Provider::Lofty, 1))
        .await
        .unwrap();
    let before = stored_rows(&env, a).await;

    // B sees nothing, and A's id answers B exactly as an id that does not exist.
    assert_eq!(
        get(&env, b, "/api/integrations").await.body,
        json!({ "integrations": [] })
    );
    let unknown = Uuid::new_v4().to_string();
    for target in [id.as_str(), unknown.as_str()] {
        assert_error(
            &get(&env, b, &item(target)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        let put = update(
            &env,
            b,
            target,
            json!({"status": "paused", "riskThreshold": 90}),
        )
        .await;
        assert_error(&put, StatusCode::NOT_FOUND, "not_found");
        let del = env
            .as_user(b, Route::Integrations, "DELETE", &item(target), "")
            .await;
        assert_error(&del, StatusCode::NOT_FOUND, "not_found");
        let seen = logs(&env, b, &logs_of(target), "").await;
        assert_status(&seen, StatusCode::OK);
        assert_eq!(seen.body, json!({"logs": [], "nextBefore": null}));
    }
    let all = logs(&env, b, "/api/integrations/logs", "").await;
    assert_eq!(all.body, json!({"logs": [], "nextBefore": null}));
    // B connecting the same CRM gets an integration of their own.
    let own = connect(&env, b, json!({"provider": "lofty", "apiKey": LOFTY_KEY})).await;
    assert_status(&own, StatusCode::CREATED);
    assert_ne!(own.body["id"], id.as_str());

    // A's integration and logs are untouched.
    assert_eq!(stored_rows(&env, a).await, before);
    let mine = logs(&env, a, &logs_of(&id), "").await;
    assert_eq!(mine.body["logs"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&env, a, "/api/integrations").await.body["integrations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_requests_are_400_and_change_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let created = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY, "riskThreshold": 40}),
    )
    .await;
    assert_status(&created, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let rows = stored_rows(&env, user).await;
    let calls = crm_requests(&env, Provider::Lofty) + crm_requests(&env, Provider::FollowUpBoss);
    let huge = format!(
        r#"{{"provider":"followupboss","apiKey":"{FUB_KEY}","pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let huge_put = format!(r#"{{"autoSync":false,"pad":"{}"}}"#, "x".repeat(300 * 1024));

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
        huge.clone().into_bytes(),
    ];
    for body in &post_bodies {
        let reply = send_raw(&env, user, "POST", "/api/integrations", body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }

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
    for body in &put_bodies {
        let reply = send_raw(&env, user, "PUT", &item(&id), body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }

    // Ids that are not UUIDs.
    for bad in ["lofty", "123", "not-a-uuid", "%27%20OR%201=1"] {
        assert_error(
            &get(&env, user, &item(bad)).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
        let put = update(&env, user, bad, json!({"autoSync": false})).await;
        assert_error(&put, StatusCode::BAD_REQUEST, "bad_request");
        let del = env
            .as_user(user, Route::Integrations, "DELETE", &item(bad), "")
            .await;
        assert_error(&del, StatusCode::BAD_REQUEST, "bad_request");
        let l = logs(&env, user, &logs_of(bad), "").await;
        assert_error(&l, StatusCode::BAD_REQUEST, "bad_request");
    }

    // Bad paging.
    for query in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "before=garbage",
        "before=MTIz",
    ] {
        let l = logs(&env, user, "/api/integrations/logs", query).await;
        assert_error(&l, StatusCode::BAD_REQUEST, "bad_request");
        let l = logs(&env, user, &logs_of(&id), query).await;
        assert_error(&l, StatusCode::BAD_REQUEST, "bad_request");
    }

    // No caller, no answer.
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
    let anonymous = env
        .call(
            Route::SyncLogs,
            "GET",
            "/api/integrations/logs",
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
            &item(&id),
            "",
            &["alto_admin=not.a.jwt".into()],
            &[],
        )
        .await;
    assert_error(&forged, StatusCode::UNAUTHORIZED, "unauthorized");

    // Routes the function does not serve.
    let patch = env
        .as_user(user, Route::Integrations, "PATCH", &item(&id), "")
        .await;
    assert_error(&patch, StatusCode::NOT_FOUND, "not_found");

    // Nothing changed, and no CRM was asked anything.
    assert_eq!(stored_rows(&env, user).await, rows);
    assert_eq!(
        crm_requests(&env, Provider::Lofty) + crm_requests(&env, Provider::FollowUpBoss),
        calls
    );
    let read = get(&env, user, &item(&id)).await;
    assert_eq!(read.body, created.body);
}

#[tokio::test]
async fn logs_page_newest_first_and_outlive_a_disconnect() {
    let env = Env::start().await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let lofty = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    let fub = connect(
        &env,
        user,
        json!({"provider": "followupboss", "apiKey": FUB_KEY}),
    )
    .await;
    let lofty_id = Uuid::parse_str(lofty.body["id"].as_str().unwrap()).unwrap();
    let fub_id = Uuid::parse_str(fub.body["id"].as_str().unwrap()).unwrap();

    // 100 Lofty logs one by one, 30 more sharing one instant (ties broken by id), 20 of FUB, and
    // some of another user.
    for n in 0..100 {
        env.store
            .insert_sync_log(user, &log(Some(lofty_id), Provider::Lofty, n))
            .await
            .unwrap();
    }
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .execute(
            "INSERT INTO crm_sync_logs (integration_id, user_id, provider, direction, trigger, status, created_at)
             SELECT $1, $2, 'lofty', 'push', 'webhook', 'failed', now() - interval '1 hour'
               FROM generate_series(1, 30)",
            &[&lofty_id, &user],
        )
        .await
        .unwrap();
    for n in 0..20 {
        env.store
            .insert_sync_log(user, &log(Some(fub_id), Provider::FollowUpBoss, n))
            .await
            .unwrap();
    }
    for n in 0..5 {
        env.store
            .insert_sync_log(other, &log(Some(lofty_id), Provider::Lofty, n))
            .await
            .unwrap();
    }

    // Disconnecting Lofty keeps its logs.
    let deleted = env
        .as_user(user, Route::Integrations, "DELETE", &item(lofty_id), "")
        .await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    assert_error(
        &get(&env, user, &item(lofty_id)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // The deleted integration's 130 logs, 25 a page, newest first, none repeated or missed, even
    // though a new log arrives between pages.
    let want = expected_order(&env, user, Some(lofty_id)).await;
    assert_eq!(want.len(), 130);
    let got = read_all_pages(&env, user, &logs_of(lofty_id), 25, async || {
        env.store
            .insert_sync_log(user, &log(Some(lofty_id), Provider::Lofty, 999))
            .await
            .unwrap();
    })
    .await;
    assert_eq!(got, want);

    // The first page now starts with the new log; its fields are the stored ones.
    let first = logs(&env, user, &logs_of(lofty_id), "limit=1").await;
    let newest = &first.body["logs"][0];
    assert_eq!(newest["integrationId"], lofty_id.to_string());
    assert_eq!(newest["provider"], "lofty");
    assert_eq!(newest["direction"], "push");
    assert_eq!(newest["trigger"], "schedule");
    assert_eq!(newest["status"], "success");
    assert_eq!(newest["leadId"], "L-999");
    assert_eq!(newest["action"], "created");
    assert_eq!(newest["attempts"], 1);
    assert_eq!(newest["metrics"], json!({"n": 999}));
    assert_eq!(newest["error"], Value::Null);
    assert!(chrono::DateTime::parse_from_rfc3339(newest["createdAt"].as_str().unwrap()).is_ok());
    assert!(first.body["nextBefore"].is_string());

    // All the user's logs (both integrations, not the other user's), with the default limit of 50.
    let want_all = expected_order(&env, user, None).await;
    assert_eq!(want_all.len(), 151);
    let default_page = logs(&env, user, "/api/integrations/logs", "").await;
    assert_status(&default_page, StatusCode::OK);
    assert_eq!(default_page.body["logs"].as_array().unwrap().len(), 50);
    let got_all = read_all_pages(&env, user, "/api/integrations/logs", 200, async || {}).await;
    assert_eq!(got_all, want_all);
    let got_all = read_all_pages(&env, user, "/api/integrations/logs", 7, async || {}).await;
    assert_eq!(got_all, want_all);

    // Exactly a page's worth: one full page and no next one.
    let got_fub = read_all_pages(&env, user, &logs_of(fub_id), 20, async || {}).await;
    assert_eq!(got_fub, expected_order(&env, user, Some(fub_id)).await);
    let fub_page = logs(&env, user, &logs_of(fub_id), "limit=20").await;
    assert!(fub_page.body["nextBefore"].is_null());

    // An id without logs: an empty page.
    let none = logs(&env, user, &logs_of(Uuid::new_v4()), "").await;
    assert_eq!(none.body, json!({"logs": [], "nextBefore": null}));
}

#[tokio::test]
async fn pausing_keeps_failures_and_reactivating_resets_them() {
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

/// The event files of the two functions, as `cargo lambda invoke` sends them, work against the
/// handlers (with a real JWT and id put in place of their placeholders).
#[tokio::test]
async fn the_event_files_drive_the_handlers() {
    const PLACEHOLDER_ID: &str = "9b2f4c1e-5d6a-4e8b-9c0d-1a2b3c4d5e6f";
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let run = async |file: &str, id: Option<&str>| -> Reply {
        let text = std::fs::read_to_string(format!("{events}/{file}")).expect(file);
        let mut text = text.replace("REPLACE_WITH_A_DEV_JWT", &Env::token(user));
        text = text.replace("REPLACE_WITH_A_LOFTY_API_KEY", LOFTY_KEY);
        if let Some(id) = id {
            text = text.replace(PLACEHOLDER_ID, id);
        }
        let req = lambda_http::request::from_str(&text).expect(file);
        let resp = if file.starts_with("sync-logs") {
            crmsync_lambda::routes::sync_logs::handle(&env.app, req).await
        } else {
            crmsync_lambda::routes::integrations::handle(&env.app, req).await
        };
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    };

    // As shipped, the id is one nobody has.
    assert_error(
        &run("integrations-get.json", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let created = run("integrations-connect.json", None).await;
    assert_status(&created, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let listed = run("integrations-list.json", None).await;
    assert_status(&listed, StatusCode::OK);
    assert_eq!(listed.body["integrations"][0]["id"], id.as_str());
    let read = run("integrations-get.json", Some(&id)).await;
    assert_status(&read, StatusCode::OK);
    let updated = run("integrations-update.json", Some(&id)).await;
    assert_status(&updated, StatusCode::OK);
    assert_eq!(updated.body["status"], "paused");
    env.store
        .insert_sync_log(user, &log(Uuid::parse_str(&id).ok(), Provider::Lofty, 1))
        .await
        .unwrap();
    let logs = run("sync-logs.json", Some(&id)).await;
    assert_status(&logs, StatusCode::OK);
    assert_eq!(logs.body["logs"].as_array().unwrap().len(), 1);
    let deleted = run("integrations-delete.json", Some(&id)).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn connecting_by_api_key_is_limited_so_keys_cannot_be_guessed() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let guess = |n: usize| json!({"provider": "lofty", "apiKey": format!("guess-{n}")});
    for n in 0..10 {
        let reply = env
            .json_as_user(
                user,
                Route::Integrations,
                "POST",
                "/api/integrations",
                &guess(n),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "guess {n}: {:?}",
            reply.body
        );
    }
    let limited = env
        .json_as_user(
            user,
            Route::Integrations,
            "POST",
            "/api/integrations",
            &guess(10),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key(http::header::RETRY_AFTER));
    let calls = env.sandbox.stats()["providers"]["lofty"]["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(calls, 10, "the eleventh guess never reached the CRM");
}
