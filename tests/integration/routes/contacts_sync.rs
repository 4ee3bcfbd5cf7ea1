//! `contacts-sync` (`POST /api/integrations/{provider}/contacts/sync`): the incremental pull of every
//! CRM into `contacts` (first run, a run with nothing changed, a run after changes), its metrics and
//! sync logs, `since`, one sync per integration at a time (409), and the contract's errors. Syncs
//! under faults, killed or racing are in `qualities/`.

use std::collections::BTreeSet;
use std::time::Duration;

use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::env::{Env, Route, sandbox_provider};
use crate::support::rows::{assert_same, expected, median_since, stored, sync};

const SEEDED: usize = 2_500;

fn path(provider: Provider, tail: &str) -> String {
    format!("/api/integrations/{}/{tail}", provider.as_str())
}

/// `user` syncs `provider` with `query`, which must answer 200; the metrics.
async fn sync_ok(env: &Env, user: Uuid, provider: Provider, query: &str) -> Value {
    let reply = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &path(provider, "contacts/sync"),
            query,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "sync of {provider}: {:?}",
        reply.body
    );
    reply.body
}

async fn first_second_and_changed_sync(provider: Provider) {
    let env = Env::start().await;
    // Three complete reads of 2,500 Lofty leads at 25 a page are 300 requests: Lofty's production
    // tier (500 a minute, crm-apis §2.3) rather than the sandbox's development tier (100).
    env.sandbox
        .update_config(|c| c.lofty.rate_limit_per_minute = 500);
    env.sandbox.seed(sandbox_provider(provider), 7, SEEDED);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let want = expected(&env, provider).await;
    // Phones in other countries' national formats do not parse with region US, and some are shared.
    assert!(
        want.len() > SEEDED / 3,
        "the seed has many valid, distinct phones: {}",
        want.len()
    );

    // First sync: exactly the distinct valid phones, each with its latest record.
    let first = sync_ok(&env, user, provider, "").await;
    assert_eq!(first["totalFetched"], SEEDED as u64);
    // A phone shared by records on two pages is written twice, so writes are at least the rows.
    let first_writes = first["upserted"].as_u64().unwrap();
    assert!(
        first_writes >= want.len() as u64 && first_writes <= SEEDED as u64,
        "{first}"
    );
    assert!(
        first["skipped"].as_u64().unwrap() > 0,
        "the seed has records without a usable phone"
    );
    // Lofty's leads carry no update time, so there is no time to keep.
    assert_eq!(
        first["cursor"].as_str().is_some(),
        provider != Provider::Lofty,
        "{first}"
    );
    assert_same(&stored(&env, user).await, &want, "first sync");

    // Second sync, nothing changed: nothing written.
    let second = sync_ok(&env, user, provider, "").await;
    assert_eq!(second["upserted"], 0, "{second}");
    assert_eq!(second["deleted"], 0, "{second}");
    match provider {
        Provider::Rex => assert_eq!(second["totalFetched"], 0, "REX asks only for what changed"),
        Provider::FollowUpBoss => assert!(
            second["totalFetched"].as_u64().unwrap() <= 100,
            "Follow Up Boss is read newest first down to the cursor: one page: {second}"
        ),
        Provider::Lofty => assert_eq!(
            second["totalFetched"], SEEDED as u64,
            "Lofty has no update time: every sync reads it all and writes what changed"
        ),
    }

    // Change 25 records in the CRM: only those move.
    let changed = env.change_records(provider, 25, 11).await;
    assert_eq!(changed.len(), 25);
    let want_after = expected(&env, provider).await;
    let moved = want_after
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(*v))
        .count();
    assert!(moved > 0 && moved <= 25, "{moved}");
    let third = sync_ok(&env, user, provider, "").await;
    assert_eq!(third["upserted"], moved as u64, "{third}");
    match provider {
        Provider::Rex => assert_eq!(third["totalFetched"], 25),
        Provider::FollowUpBoss => assert!(third["totalFetched"].as_u64().unwrap() <= 100),
        Provider::Lofty => assert_eq!(third["totalFetched"], SEEDED as u64),
    }
    assert_same(&stored(&env, user).await, &want_after, "after changes");

    // The sync log has the three runs with their metrics.
    let client = crmsync_testkit::connect(&env.db.url).await;
    let rows = client
        .query(
            "SELECT status, direction, trigger, (metrics->>'upserted')::bigint FROM crm_sync_logs
              WHERE user_id = $1 ORDER BY created_at",
            &[&user],
        )
        .await
        .unwrap();
    let logged: Vec<(String, String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(logged.len(), 3);
    assert!(
        logged
            .iter()
            .all(|(s, d, t, _)| s == "success" && d == "pull" && t == "manual")
    );
    assert_eq!(logged[0].3, first_writes as i64);
}

#[tokio::test]
async fn rex_connects_by_oauth_and_syncs_incrementally() {
    first_second_and_changed_sync(Provider::Rex).await;
}

#[tokio::test]
pub(crate) async fn followupboss_connects_by_oauth_and_syncs_incrementally() {
    first_second_and_changed_sync(Provider::FollowUpBoss).await;
}

#[tokio::test]
async fn lofty_connects_by_api_key_and_syncs_incrementally() {
    first_second_and_changed_sync(Provider::Lofty).await;
}

/// `since` overrides the saved cursor: the sync stores exactly what `contacts-fetch` shows for the same
/// `since` (what fetch itself answers is tested in `contacts_fetch.rs`).
#[tokio::test]
async fn a_sync_since_a_time_stores_exactly_what_fetch_shows_for_it() {
    let env = Env::start().await;
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 9, 600);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let (since, _) = median_since(&env, provider).await;

    let fetched = env
        .as_user(
            user,
            Route::ContactsFetch,
            "GET",
            &path(provider, "contacts/fetch"),
            &format!("since={since}&limit=500"),
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK, "{:?}", fetched.body);
    let contacts = fetched.body["contacts"].as_array().unwrap();

    let metrics = sync_ok(&env, user, provider, &format!("since={since}")).await;
    let read = metrics["totalFetched"].as_u64().unwrap();
    assert!(
        (300..=400).contains(&read),
        "Follow Up Boss is read newest first down to `since` (the newer half, and the rest of the \
         last page): {metrics}"
    );
    let phones: BTreeSet<String> = env
        .store
        .list_contacts(user)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.phone_number)
        .collect();
    let fetched_phones: BTreeSet<String> = contacts
        .iter()
        .map(|c| c["phoneNumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        phones, fetched_phones,
        "the sync stored exactly what fetch showed for the same `since`"
    );
}

/// A sync while another holds the integration's sync lock is 409 `conflict`; once it is released the
/// next one runs. (Ten at once over ten `App`s: `qualities/races.rs`.)
#[tokio::test]
pub(crate) async fn one_sync_per_integration_at_a_time() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Rex).await;
    let integration = env
        .store
        .integration_by_provider(user, Provider::Rex)
        .await
        .unwrap()
        .unwrap();
    let lease = env
        .store
        .try_lock_sync(user, integration.id)
        .await
        .unwrap()
        .expect("lock");
    let reply = sync(&env, user, Provider::Rex).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["error"], "conflict");
    lease.release().await.unwrap();
    let reply = sync(&env, user, Provider::Rex).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn a_sync_without_a_caller_or_with_a_forged_jwt_is_401() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let sync_path = path(Provider::Rex, "contacts/sync");

    let anonymous = env
        .call(Route::ContactsSync, "POST", &sync_path, "", &[], &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["error"], "unauthorized");

    let forged =
        crmsync_lambda::auth::mint_token("another-secret-another-secret-0123", user, 60).unwrap();
    let reply = env
        .call(
            Route::ContactsSync,
            "POST",
            &sync_path,
            "",
            &[format!("alto_admin={forged}")],
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// A caller authenticated by `Authorization: Bearer` who has not connected the CRM gets 404.
#[tokio::test]
async fn a_sync_of_a_crm_not_connected_is_404() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let bearer = format!("Bearer {}", Env::token(user));
    let not_connected = env
        .call(
            Route::ContactsSync,
            "POST",
            &path(Provider::Rex, "contacts/sync"),
            "",
            &[],
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(not_connected.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sync_of_an_unknown_provider_is_400_naming_it() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let unknown = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            "/api/integrations/hubspot/contacts/sync",
            "",
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body["detail"].as_str().unwrap().contains("hubspot"));
}

#[tokio::test]
async fn a_sync_with_a_malformed_since_is_400_and_writes_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Rex).await;
    let malformed = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &path(Provider::Rex, "contacts/sync"),
            "since=last-tuesday",
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["error"], "bad_request");
    assert!(env.store.list_contacts(user).await.unwrap().is_empty());
}

/// Found by the crash soak: REX is paged by `system_modtime >= since` with an offset of the records
/// already stored at `since`. When such a record changes again (it moves to a later time), the offset
/// outgrows the records still at `since` and the next sync skips a change it never stored.
#[tokio::test]
async fn rex_a_changed_boundary_record_does_not_hide_another_change() {
    let env = Env::start().await;
    let provider = Provider::Rex;
    env.sandbox.seed(sandbox_provider(provider), 91, 300);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;
    let first = sync(&env, user, provider).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    // The record(s) of the last second synced (the cursor's boundary), and another record.
    let records = env.sandbox_records(provider).await;
    let last_ms = records
        .iter()
        .filter_map(|r| r["updated_ms"].as_i64())
        .max()
        .unwrap();
    let boundary: Vec<u64> = records
        .iter()
        .filter(|r| r["updated_ms"].as_i64().unwrap() / 1000 == last_ms / 1000)
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let other = records
        .iter()
        .filter(|r| !boundary.contains(&r["id"].as_u64().unwrap()))
        .find(|r| {
            r["phones"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|p| crmsync_domain::PhoneNumber::parse(p, crmsync_domain::Region::US).is_ok())
        })
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    // `other` changes first, then the boundary records change too.
    let touch = |ids: Vec<u64>, last: &str| {
        let url = env.sandbox.url("/_sandbox/rex/touch");
        let body = serde_json::json!({"ids": ids, "set": {"last_name": last}});
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    touch(vec![other], "ChangedFirst").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    touch(boundary.clone(), "ChangedAfter").await;
    let second = sync(&env, user, provider).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_same(
        &stored(&env, user).await,
        &expected(&env, provider).await,
        &format!(
            "after {} boundary record(s) and one other changed",
            boundary.len()
        ),
    );
}
