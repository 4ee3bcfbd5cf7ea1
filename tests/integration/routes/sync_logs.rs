//! `sync-logs` (`GET /api/integrations/{id}/logs`, `GET /api/integrations/logs`): a user's sync logs,
//! newest first, paged by `?limit=&before=` with none repeated or missed, the fields of a log, logs that
//! outlive a disconnected integration, and the contract's errors. (Another user's logs:
//! `qualities/security.rs`.)

use std::collections::BTreeSet;

use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{
    FUB_KEY, LOFTY_KEY, LOG_FIELDS, OneIntegration, assert_error, assert_status, connect,
    error_problem, get, item, log, logs, logs_of,
};
use crate::support::env::{Env, Route};
use crate::support::rows::assert_no_failures;

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

/// A user with 130 logs of a Lofty integration (100 one by one, 30 sharing one instant, so ties are
/// broken by id) that was then disconnected, 20 of a Follow Up Boss one, and 5 logs of another user.
struct Logged {
    env: Env,
    user: Uuid,
    lofty_id: Uuid,
    fub_id: Uuid,
}

async fn logged() -> Logged {
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
    Logged {
        env,
        user,
        lofty_id,
        fub_id,
    }
}

/// The deleted integration's 130 logs, 25 a page, newest first, none repeated or missed, even though a
/// new log arrives between pages; the first page then starts with the new log, with the stored fields.
#[tokio::test]
pub(crate) async fn logs_page_newest_first_and_outlive_a_disconnect() {
    let Logged {
        env,
        user,
        lofty_id,
        ..
    } = logged().await;
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
}

/// All the user's logs (both integrations, not the other user's): 50 by default, and every page size
/// gives the same order.
#[tokio::test]
async fn all_of_a_users_logs_page_newest_first_with_any_limit() {
    let Logged { env, user, .. } = logged().await;
    let want_all = expected_order(&env, user, None).await;
    assert_eq!(want_all.len(), 150);
    let default_page = logs(&env, user, "/api/integrations/logs", "").await;
    assert_status(&default_page, StatusCode::OK);
    assert_eq!(default_page.body["logs"].as_array().unwrap().len(), 50);
    let got_all = read_all_pages(&env, user, "/api/integrations/logs", 200, async || {}).await;
    assert_eq!(got_all, want_all);
    let got_all = read_all_pages(&env, user, "/api/integrations/logs", 7, async || {}).await;
    assert_eq!(got_all, want_all);
}

/// Exactly a page's worth: one full page and no next one; an id without logs: an empty page.
#[tokio::test]
async fn a_full_last_page_has_no_next_and_an_id_without_logs_is_an_empty_page() {
    let Logged {
        env, user, fub_id, ..
    } = logged().await;
    let got_fub = read_all_pages(&env, user, &logs_of(fub_id), 20, async || {}).await;
    assert_eq!(got_fub, expected_order(&env, user, Some(fub_id)).await);
    let fub_page = logs(&env, user, &logs_of(fub_id), "limit=20").await;
    assert!(fub_page.body["nextBefore"].is_null());

    let none = logs(&env, user, &logs_of(Uuid::new_v4()), "").await;
    assert_eq!(none.body, json!({"logs": [], "nextBefore": null}));
}

#[tokio::test]
async fn log_ids_that_are_not_uuids_are_400() {
    let one = OneIntegration::start().await;
    let mut failures = Vec::new();
    for bad in ["lofty", "123", "not-a-uuid", "%27%20OR%201=1"] {
        let l = logs(&one.env, one.user, &logs_of(bad), "").await;
        if let Some(problem) = error_problem(&l, StatusCode::BAD_REQUEST, "bad_request") {
            failures.push(format!("{}: {problem}", logs_of(bad)));
        }
    }
    assert_no_failures("log ids that are not UUIDs", &failures);
    one.assert_unchanged().await;
}

#[tokio::test]
async fn bad_paging_is_400() {
    let one = OneIntegration::start().await;
    let mut failures = Vec::new();
    for query in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "before=garbage",
        "before=MTIz",
    ] {
        for path in ["/api/integrations/logs".to_owned(), logs_of(&one.id)] {
            let l = logs(&one.env, one.user, &path, query).await;
            if let Some(problem) = error_problem(&l, StatusCode::BAD_REQUEST, "bad_request") {
                failures.push(format!("{path}?{query}: {problem}"));
            }
        }
    }
    assert_no_failures("bad paging", &failures);
    one.assert_unchanged().await;
}

/// No caller, no logs (every kind of forged JWT on every route: `qualities/security.rs`).
#[tokio::test]
async fn logs_without_a_caller_are_401() {
    let one = OneIntegration::start().await;
    let anonymous = one
        .env
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
    one.assert_unchanged().await;
}
