//! The pull path end to end: connect (OAuth through the sandbox, or API key), auth status, contacts
//! fetch, and incremental contacts sync for every CRM, against Postgres, moto and the sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crmsync_domain::{PhoneNumber, Provider, Region};
use http::StatusCode;
use uuid::Uuid;

use crate::env::{Env, Route, sandbox_provider};

const SEEDED: usize = 2_500;

fn path(provider: Provider, tail: &str) -> String {
    format!("/api/integrations/{}/{tail}", provider.as_str())
}

/// What a correct sync must store: per valid phone, the most recently updated record's name.
async fn expected(env: &Env, provider: Provider) -> BTreeMap<String, String> {
    let mut latest: BTreeMap<String, (i64, u64, String)> = BTreeMap::new();
    for r in env.sandbox_records(provider).await {
        let phones: Vec<&str> = r["phones"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        let Some(phone) = phones
            .iter()
            .find_map(|p| PhoneNumber::parse(p, Region::US).ok())
        else {
            continue;
        };
        let key = (
            r["updated_ms"].as_i64().unwrap(),
            r["id"].as_u64().unwrap(),
            r["last_name"].to_string(),
        );
        let entry = latest
            .entry(phone.as_str().to_owned())
            .or_insert(key.clone());
        if (key.0, key.1) > (entry.0, entry.1) {
            *entry = key;
        }
    }
    latest
        .into_iter()
        .map(|(phone, (_, _, last))| (phone, last.trim_matches('"').to_owned()))
        .collect()
}

/// The stored contacts of `user`: phone → name.
async fn stored(env: &Env, user: Uuid) -> BTreeMap<String, String> {
    env.store
        .list_contacts(user)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.phone_number, c.name))
        .collect()
}

/// Asserts the stored contacts are exactly the expected phones, each named after its latest record
/// (stored name ends with the expected last name), printing only what differs.
#[track_caller]
fn assert_same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    let same = got.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| g.ends_with(v.as_str())));
    if same {
        return;
    }
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    let differ: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| {
            got.get(k)
                .filter(|g| !g.ends_with(v.as_str()))
                .map(|g| (k, g, v))
        })
        .take(5)
        .collect();
    panic!(
        "{what}: {} stored, {} expected; missing e.g. {missing:?}; extra e.g. {extra:?}; \
         different (phone, stored, expected) e.g. {differ:?}",
        got.len(),
        want.len()
    );
}

async fn sync(env: &Env, user: Uuid, provider: Provider, query: &str) -> serde_json::Value {
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
    let first = sync(&env, user, provider, "").await;
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
    assert!(first["cursor"].as_str().is_some());
    assert_same(&stored(&env, user).await, &want, "first sync");

    // Second sync, nothing changed: nothing written.
    let second = sync(&env, user, provider, "").await;
    assert_eq!(second["upserted"], 0, "{second}");
    if provider == Provider::Rex {
        assert_eq!(second["totalFetched"], 0, "REX asks only for what changed");
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
    let third = sync(&env, user, provider, "").await;
    assert_eq!(third["upserted"], moved as u64, "{third}");
    if provider == Provider::Rex {
        assert_eq!(third["totalFetched"], 25);
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
async fn followupboss_connects_by_oauth_and_syncs_incrementally() {
    first_second_and_changed_sync(Provider::FollowUpBoss).await;
}

#[tokio::test]
async fn lofty_connects_by_api_key_and_syncs_incrementally() {
    first_second_and_changed_sync(Provider::Lofty).await;
}

#[tokio::test]
async fn a_sync_under_faults_ends_with_the_same_rows() {
    for provider in [Provider::FollowUpBoss, Provider::Rex, Provider::Lofty] {
        let env = Env::start().await;
        env.sandbox.seed(sandbox_provider(provider), 21, 1_500);
        let user = Uuid::new_v4();
        env.connect(user, provider).await;
        let faults = crm_sandbox::FaultConfig {
            error_rate: 0.15,
            rate_429: 0.1,
            retry_after_secs: 1,
            seed: Some(5),
            ..Default::default()
        };
        env.sandbox
            .set_faults(sandbox_provider(provider), faults)
            .unwrap();
        // Lofty's Retry-After is UNCONFIRMED; without it a 429 means waiting out the 60 s window,
        // which the client does not do inside a request (the next run resumes instead).
        env.sandbox
            .update_config(|c| c.lofty.retry_after_on_429 = true);
        let metrics = sync(&env, user, provider, "").await;
        assert_eq!(metrics["totalFetched"], 1_500, "{provider}: {metrics}");
        let faulted = env.sandbox.stats();
        assert!(
            faulted.to_string().contains("429") || faulted.to_string().contains("fault"),
            "{faulted}"
        );
        assert_same(
            &stored(&env, user).await,
            &expected(&env, provider).await,
            provider.as_str(),
        );
    }
}

#[tokio::test]
async fn a_killed_sync_resumes_with_nothing_lost_or_doubled() {
    for provider in [Provider::FollowUpBoss, Provider::Rex] {
        let env = Env::start().await;
        env.sandbox.seed(sandbox_provider(provider), 3, 4_000);
        let user = Uuid::new_v4();
        env.connect(user, provider).await;
        // Slow pages, so the sync can be killed part-way.
        env.sandbox
            .set_faults(
                sandbox_provider(provider),
                crm_sandbox::FaultConfig {
                    latency_ms: 40,
                    ..Default::default()
                },
            )
            .unwrap();

        let stored_before_kill = {
            let sync_path = path(provider, "contacts/sync");
            let sync_call = env.as_user(user, Route::ContactsSync, "POST", &sync_path, "");
            tokio::pin!(sync_call);
            loop {
                tokio::select! {
                    _ = &mut sync_call => panic!("the sync finished before it could be killed"),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        let n = env.store.list_contacts(user).await.unwrap().len();
                        if n > 300 { break n; }
                    }
                }
            }
            // Leaving this block drops the sync's future: killed mid-way, as by a Lambda timeout.
        };
        env.sandbox
            .set_faults(sandbox_provider(provider), Default::default())
            .unwrap();

        let resumed = sync(&env, user, provider, "").await;
        let want = expected(&env, provider).await;
        assert!(stored_before_kill < want.len());
        assert_same(&stored(&env, user).await, &want, provider.as_str());
        // Every row stored before the kill came from a record the resumed sync does not read again.
        assert!(
            resumed["totalFetched"].as_u64().unwrap() <= 4_000 - stored_before_kill as u64,
            "{provider}: the resumed sync continues where the killed one stopped: {resumed}"
        );
    }
}

#[tokio::test]
async fn since_overrides_the_saved_cursor_and_fetch_writes_nothing() {
    let env = Env::start().await;
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 9, 600);
    let user = Uuid::new_v4();
    env.connect(user, provider).await;

    let records = env.sandbox_records(provider).await;
    let mut times: Vec<i64> = records
        .iter()
        .map(|r| r["updated_ms"].as_i64().unwrap())
        .collect();
    times.sort();
    let median = chrono::DateTime::from_timestamp_millis(times[times.len() / 2]).unwrap();
    let since = median.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let newer = records
        .iter()
        .filter(|r| r["updated_ms"].as_i64().unwrap() >= median.timestamp() * 1000)
        .count();

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
            &path(provider, "contacts/fetch"),
            "limit=7",
        )
        .await;
    assert_eq!(limited.body["count"], 7);

    let metrics = sync(&env, user, provider, &format!("since={since}")).await;
    assert_eq!(
        metrics["totalFetched"], 600,
        "Follow Up Boss has no updated-since filter: all are read"
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

#[tokio::test]
async fn one_sync_per_integration_at_a_time() {
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
    let reply = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &path(Provider::Rex, "contacts/sync"),
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["error"], "conflict");
    lease.release().await.unwrap();
    let reply = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &path(Provider::Rex, "contacts/sync"),
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn auth_status_reports_and_refreshes_once_for_many_callers() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let status_path = path(Provider::FollowUpBoss, "auth/status");

    let before = env
        .as_user(user, Route::AuthStatus, "GET", &status_path, "")
        .await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["connected"], false);

    env.connect(user, Provider::FollowUpBoss).await;
    let status = env
        .as_user(user, Route::AuthStatus, "GET", &status_path, "")
        .await;
    assert_eq!(status.body["connected"], true, "{:?}", status.body);
    assert_eq!(status.body["tokenValid"], true);
    assert_eq!(status.body["status"], "active");

    // Make the stored token expired (as an hour passing would), then 12 callers at once.
    let ready = env.app.ready().await.unwrap();
    let record = env
        .store
        .integration_by_provider(user, Provider::FollowUpBoss)
        .await
        .unwrap()
        .unwrap();
    let opened = ready
        .ctx
        .vault
        .open(record.id, record.provider, &record.sealed)
        .unwrap();
    let crmsync_store::Credentials::OAuth {
        access_token,
        refresh_token,
        ..
    } = opened.credentials
    else {
        panic!("OAuth credentials");
    };
    let expired = crmsync_store::Credentials::OAuth {
        access_token,
        refresh_token,
        expires_at: Some(chrono::Utc::now().timestamp() - 60),
    };
    let sealed = ready
        .ctx
        .vault
        .seal(record.id, record.provider, &expired)
        .unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(60);
    env.store
        .set_credentials(user, record.id, &sealed, Some(past))
        .await
        .unwrap();
    env.sandbox
        .expire_tokens(Some(sandbox_provider(Provider::FollowUpBoss)));
    let refreshes_before = refresh_count(&env);

    let calls = (0..12).map(|_| env.as_user(user, Route::AuthStatus, "GET", &status_path, ""));
    let replies = futures::future::join_all(calls).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(
            reply.body["tokenValid"], true,
            "every caller uses a valid token: {:?}",
            reply.body
        );
    }
    assert_eq!(
        refresh_count(&env) - refreshes_before,
        1,
        "the CRM saw exactly one refresh"
    );
    let after = env
        .as_user(user, Route::AuthStatus, "GET", &status_path, "")
        .await;
    let expires_after =
        chrono::DateTime::parse_from_rfc3339(after.body["expiresAt"].as_str().unwrap()).unwrap();
    assert!(
        expires_after > chrono::Utc::now() + chrono::Duration::minutes(50),
        "a fresh hour-long token"
    );
}

fn refresh_count(env: &Env) -> u64 {
    let stats = env.sandbox.stats();
    stats["providers"]["fub"]["refreshes"]
        .as_u64()
        .unwrap_or_else(|| panic!("refreshes in {stats}"))
}

#[tokio::test]
async fn bad_calls_get_the_contract_errors_and_change_nothing() {
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

    let bearer = format!("Bearer {}", Env::token(user));
    let not_connected = env
        .call(
            Route::ContactsSync,
            "POST",
            &sync_path,
            "",
            &[],
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(not_connected.status, StatusCode::NOT_FOUND);

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

    env.connect(user, Provider::Rex).await;
    let malformed = env
        .as_user(
            user,
            Route::ContactsSync,
            "POST",
            &sync_path,
            "since=last-tuesday",
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["error"], "bad_request");
    let bad_limit = env
        .as_user(
            user,
            Route::ContactsFetch,
            "GET",
            &path(Provider::Rex, "contacts/fetch"),
            "limit=zero",
        )
        .await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert!(env.store.list_contacts(user).await.unwrap().is_empty());

    // Fetch: 20 a minute per user; the 21st gets 429 with Retry-After. Another user is not affected.
    let fetch_path = path(Provider::Rex, "contacts/fetch");
    for i in 0..20 {
        let ok = env
            .as_user(user, Route::ContactsFetch, "GET", &fetch_path, "limit=1")
            .await;
        assert_eq!(ok.status, StatusCode::OK, "call {i}: {:?}", ok.body);
    }
    let limited = env
        .as_user(user, Route::ContactsFetch, "GET", &fetch_path, "limit=1")
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
            &fetch_path,
            "limit=1",
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another user has their own bucket (and no integration)"
    );
}

#[tokio::test]
async fn oauth_callbacks_that_do_not_match_store_nothing() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let start = env
        .as_user(
            user,
            Route::OAuthStart,
            "GET",
            "/api/integrations/rex/oauth/start",
            "",
        )
        .await;
    assert_eq!(start.status, StatusCode::FOUND);
    let location = start.location();
    assert!(
        location.contains("code_challenge_method=S256"),
        "{location}"
    );
    assert!(location.contains("state="));
    let set_cookie = start.headers[http::header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=600"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = start.set_cookie("crm_oauth_state").unwrap();
    let back = crate::env::follow_consent(&location).await;
    let (cb_path, query) = back.split_once('?').unwrap();
    let cb_path = cb_path.trim_start_matches("http://127.0.0.1:3004");
    let jwt = format!("alto_admin={}", Env::token(user));
    let state_cookie = format!("crm_oauth_state={cookie}");
    let error_of = |reply: &crate::env::Reply| {
        assert_eq!(reply.status, StatusCode::FOUND);
        reply
            .location()
            .split("error=")
            .nth(1)
            .unwrap_or("")
            .to_owned()
    };

    // Wrong state.
    let wrong = query.replace("state=", "state=x");
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            &wrong,
            &[jwt.clone(), state_cookie.clone()],
            &[],
        )
        .await;
    assert_eq!(error_of(&r), "invalid_state");
    // No cookie.
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            query,
            std::slice::from_ref(&jwt),
            &[],
        )
        .await;
    assert_eq!(error_of(&r), "invalid_state");
    // Another user's session with this user's cookie.
    let other = format!("alto_admin={}", Env::token(Uuid::new_v4()));
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            query,
            &[other, state_cookie.clone()],
            &[],
        )
        .await;
    assert_eq!(error_of(&r), "invalid_state");
    // Denied at the CRM.
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            "error=access_denied",
            &[jwt.clone(), state_cookie.clone()],
            &[],
        )
        .await;
    assert_eq!(error_of(&r), "access_denied");
    assert!(
        env.store.list_integrations(user).await.unwrap().is_empty(),
        "nothing stored"
    );

    // The right one connects, and clears the cookie.
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            query,
            &[jwt.clone(), state_cookie.clone()],
            &[],
        )
        .await;
    assert_eq!(
        r.location(),
        format!("{}?connected=rex", crate::env::POST_CONNECT_URL)
    );
    assert!(
        r.headers[http::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // A replay of the same callback is refused.
    let r = env
        .call(
            Route::OAuthCallback,
            "GET",
            cb_path,
            query,
            &[jwt, state_cookie],
            &[],
        )
        .await;
    assert_eq!(error_of(&r), "invalid_state");
    assert_eq!(env.store.list_integrations(user).await.unwrap().len(), 1);
}
