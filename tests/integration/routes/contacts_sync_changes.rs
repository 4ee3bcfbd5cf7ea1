//! `contacts-sync` against CRMs that behave as their documents say (the sandbox's harsher readings,
//! `crm-apis.md` §4): an edit to an old record arrives on the next sync, a deletion is marked and a
//! restore undoes it, the cursor cannot be pushed into the future, phones are read in each
//! integration's region, two CRMs holding one phone do not blank each other, refused credentials end
//! in `needs_reauth`, another account behind a reconnect starts afresh, and an incremental sync costs
//! what changed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crmsync_domain::Provider;
use crmsync_store::StoredContact;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{crm_requests, get};
use crate::support::env::{Env, Reply, Route, sandbox_provider};
use crate::support::rows::{assert_same, expected, stored};

const EVERY_CRM: [Provider; 3] = [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty];

/// 2024-01-01T00:00:00Z: older than every seeded record (the seed ends at 2026-01-01).
const OLD_MS: i64 = 1_704_067_200_000;

fn sync_path(provider: Provider) -> String {
    format!("/api/integrations/{}/contacts/sync", provider.as_str())
}

async fn sync_with(env: &Env, user: Uuid, provider: Provider, query: &str) -> Reply {
    env.as_user(
        user,
        Route::ContactsSync,
        "POST",
        &sync_path(provider),
        query,
    )
    .await
}

/// A sync that must answer 200; its metrics.
async fn sync_ok(env: &Env, user: Uuid, provider: Provider, query: &str) -> Value {
    let reply = sync_with(env, user, provider, query).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "sync of {provider} ({query}): {:?}",
        reply.body
    );
    reply.body
}

/// A call to the sandbox's control API.
async fn control(env: &Env, method: &str, path: &str, body: Value) -> Value {
    let url = env.sandbox.url(path);
    let request = match method {
        "POST" => reqwest::Client::new().post(url),
        "PUT" => reqwest::Client::new().put(url),
        _ => reqwest::Client::new().get(url),
    };
    let reply = request.json(&body).send().await.unwrap();
    assert!(
        reply.status().is_success(),
        "{method} {path}: {}",
        reply.status()
    );
    reply.json().await.unwrap()
}

fn records_path(provider: Provider) -> String {
    format!("/_sandbox/{}/records", sandbox_provider(provider).name())
}

/// Creates a record in the CRM (as a person typing it there would), dated `updated_ms`; its id.
async fn create_record(env: &Env, provider: Provider, record: Value) -> u64 {
    let made = control(env, "POST", &records_path(provider), record).await;
    made["id"].as_u64().unwrap()
}

async fn edit_record(env: &Env, provider: Provider, id: u64, patch: Value) {
    let path = format!("{}/{id}", records_path(provider));
    control(env, "PUT", &path, patch).await;
}

/// Deletes a record the way the CRM does (REX archives, FUB trashes, Lofty deletes).
async fn delete_record(env: &Env, provider: Provider, id: u64) {
    let path = format!("{}/{id}/delete", records_path(provider));
    let state = match provider {
        Provider::Rex => json!({"state": "archived"}),
        _ => json!({}),
    };
    control(env, "POST", &path, state).await;
}

async fn restore_record(env: &Env, provider: Provider, id: u64) {
    let path = format!("{}/{id}/restore", records_path(provider));
    control(env, "POST", &path, json!({})).await;
}

async fn contact(env: &Env, user: Uuid, phone: &str) -> Option<StoredContact> {
    env.store
        .list_contacts(user)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.phone_number == phone)
}

/// A phone for `provider` as a person there types it, and its E.164 form.
fn local_phone(provider: Provider, n: u32) -> (String, String) {
    match provider {
        Provider::Rex => (
            format!("0491 570 {:03}", 100 + n),
            format!("+61491570{:03}", 100 + n),
        ),
        _ => (
            format!("(415) 555-01{:02}", n % 100),
            format!("+141555501{:02}", n % 100),
        ),
    }
}

#[tokio::test]
async fn an_edit_to_the_oldest_record_arrives_on_the_next_sync_in_every_crm() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    for (i, provider) in EVERY_CRM.into_iter().enumerate() {
        env.sandbox.seed(sandbox_provider(provider), 21, 300);
        let (typed, e164) = local_phone(provider, i as u32);
        let id = create_record(
            &env,
            provider,
            json!({"first_name": "Olive", "last_name": "Oldest", "phones": [typed],
                   "created_ms": OLD_MS, "updated_ms": OLD_MS}),
        )
        .await;
        env.connect(user, provider).await;
        sync_ok(&env, user, provider, "").await;
        assert_eq!(
            contact(&env, user, &e164).await.map(|c| c.name),
            Some("Olive Oldest".to_owned()),
            "{provider}: the oldest record is stored by the first sync"
        );

        // Edited in the CRM: the next plain sync brings it (Lofty by its complete read, the others
        // by their changes listing).
        edit_record(&env, provider, id, json!({"last_name": "Edited"})).await;
        let before = crm_requests(&env, provider);
        let metrics = sync_ok(&env, user, provider, "").await;
        let requests = crm_requests(&env, provider) - before;
        assert_eq!(metrics["upserted"], 1, "{provider}: {metrics}");
        assert_eq!(
            contact(&env, user, &e164).await.map(|c| c.name),
            Some("Olive Edited".to_owned()),
            "{provider}"
        );
        println!("REPORT edit-of-oldest {provider}: {requests} request(s), {metrics}");
    }
}

#[tokio::test]
async fn a_deleted_record_is_marked_and_comes_back_when_restored_in_every_crm() {
    let env = Env::start().await;
    for (i, provider) in EVERY_CRM.into_iter().enumerate() {
        // A user per CRM: each makes five syncs (six a minute are allowed).
        let user = Uuid::new_v4();
        env.sandbox.seed(sandbox_provider(provider), 22, 200);
        let (typed, e164) = local_phone(provider, 10 + i as u32);
        let id = create_record(
            &env,
            provider,
            json!({"first_name": "Dana", "last_name": "Gone", "phones": [typed],
                   "updated_ms": OLD_MS}),
        )
        .await;
        env.connect(user, provider).await;
        sync_ok(&env, user, provider, "").await;
        let rows = env.store.list_contacts(user).await.unwrap().len();
        assert!(
            contact(&env, user, &e164)
                .await
                .unwrap()
                .crm_deleted_at
                .is_none()
        );

        // Deleted in the CRM. By default the CRM does not date the deletion (the harsher reading), so
        // the complete read finds it: every Lofty sync is one, the others on `?full=true` (and once a
        // day in the scheduled run).
        delete_record(&env, provider, id).await;
        let query = if provider == Provider::Lofty {
            ""
        } else {
            "full=true"
        };
        let metrics = sync_ok(&env, user, provider, query).await;
        assert_eq!(metrics["fullRead"], true, "{provider}: {metrics}");
        assert_eq!(metrics["deleted"], 1, "{provider}: {metrics}");
        let gone = contact(&env, user, &e164).await.expect("the row stays");
        assert!(
            gone.crm_deleted_at.is_some(),
            "{provider}: the contact is marked deleted in the CRM"
        );
        assert_eq!(
            env.store.list_contacts(user).await.unwrap().len(),
            rows,
            "{provider}: crmsync never deletes a row of contacts"
        );
        // A second complete read changes nothing more.
        let again = sync_ok(&env, user, provider, query).await;
        assert_eq!(
            (again["deleted"].as_u64(), again["upserted"].as_u64()),
            (Some(0), Some(0))
        );

        restore_record(&env, provider, id).await;
        sync_ok(&env, user, provider, query).await;
        let back = contact(&env, user, &e164).await.unwrap();
        assert!(back.crm_deleted_at.is_none(), "{provider}: live again");
        assert_eq!(back.name, "Dana Gone");
        let log = crmsync_testkit::connect(&env.db.url)
            .await
            .query_one(
                "SELECT (metrics->>'deleted')::bigint FROM crm_sync_logs
                  WHERE user_id = $1 AND provider = $2 AND (metrics->>'deleted')::bigint > 0",
                &[&user, &provider.as_str()],
            )
            .await
            .unwrap();
        assert_eq!(
            log.get::<_, i64>(0),
            1,
            "{provider}: the sync log counts it"
        );
    }
}

/// Where Follow Up Boss dates a trashing (the kinder reading: moving a person to the Trash stage
/// bumps `updated`), a plain incremental sync finds it: its changes listing includes the trash.
/// (REX lists archived contacts only on a separate `search_state`, so there the complete read finds
/// them whichever reading holds.)
#[tokio::test]
async fn a_dated_trashing_is_found_by_a_plain_sync() {
    let env = Env::start().await;
    env.sandbox
        .update_config(|c| c.fub.trash_bumps_updated = true);
    let user = Uuid::new_v4();
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 23, 150);
    let (typed, e164) = local_phone(provider, 30);
    let id = create_record(
        &env,
        provider,
        json!({"last_name": "Trashed", "phones": [typed], "updated_ms": OLD_MS}),
    )
    .await;
    env.connect(user, provider).await;
    sync_ok(&env, user, provider, "").await;
    delete_record(&env, provider, id).await;
    let metrics = sync_ok(&env, user, provider, "").await;
    assert_eq!(metrics["fullRead"], false, "{metrics}");
    assert_eq!(metrics["deleted"], 1, "{metrics}");
    assert!(
        contact(&env, user, &e164)
            .await
            .unwrap()
            .crm_deleted_at
            .is_some()
    );
}

#[tokio::test]
async fn a_future_since_is_refused_and_a_future_dated_record_does_not_stop_later_syncs() {
    let env = Env::start().await;
    for (i, provider) in [Provider::Rex, Provider::FollowUpBoss]
        .into_iter()
        .enumerate()
    {
        let user = Uuid::new_v4();
        env.sandbox.seed(sandbox_provider(provider), 24, 200);
        env.connect(user, provider).await;
        sync_ok(&env, user, provider, "").await;
        let rows = env.store.list_contacts(user).await.unwrap().len();

        let later = (Utc::now() + chrono::Duration::days(3))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let refused = sync_with(&env, user, provider, &format!("since={later}")).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            refused.body
        );
        assert_eq!(refused.body["error"], "bad_request");
        assert!(
            refused.body["detail"].as_str().unwrap().contains("future"),
            "{:?}",
            refused.body
        );

        // A record dated ten days ahead (a CRM's clock, or a bad import).
        let ahead = Utc::now() + chrono::Duration::days(10);
        let (typed, e164) = local_phone(provider, 40 + i as u32);
        create_record(
            &env,
            provider,
            json!({"last_name": "Ahead", "phones": [typed], "updated_ms": ahead.timestamp_millis()}),
        )
        .await;
        let metrics = sync_ok(&env, user, provider, "").await;
        assert!(
            contact(&env, user, &e164).await.is_some(),
            "{provider}: stored"
        );
        let cursor: DateTime<Utc> = metrics["cursor"].as_str().unwrap().parse().unwrap();
        assert!(
            cursor < Utc::now() + chrono::Duration::minutes(10),
            "{provider}: the cursor stays near now: {metrics}"
        );

        // A record edited afterwards (dated now) still arrives.
        let (typed, e164) = local_phone(provider, 50 + i as u32);
        let id = create_record(
            &env,
            provider,
            json!({"last_name": "Before", "phones": [typed], "updated_ms": OLD_MS}),
        )
        .await;
        sync_ok(&env, user, provider, "full=true").await;
        edit_record(&env, provider, id, json!({"last_name": "After"})).await;
        sync_ok(&env, user, provider, "").await;
        assert!(
            contact(&env, user, &e164)
                .await
                .unwrap()
                .name
                .ends_with("After"),
            "{provider}: a later edit is not hidden behind the future-dated record"
        );
        assert_eq!(env.store.list_contacts(user).await.unwrap().len(), rows + 2);
    }
}

#[tokio::test]
async fn each_crm_reads_phones_in_its_own_region_in_one_deployment() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    // As typed in each CRM: an Australian mobile in REX, a US number without +1 in Follow Up Boss.
    create_record(
        &env,
        Provider::Rex,
        json!({"last_name": "Sydney", "phones": ["0412 345 678"]}),
    )
    .await;
    create_record(
        &env,
        Provider::FollowUpBoss,
        json!({"last_name": "Boston", "phones": ["(617) 555-0123"]}),
    )
    .await;
    create_record(
        &env,
        Provider::Lofty,
        json!({"last_name": "Austin", "phones": ["512-555-0188"]}),
    )
    .await;
    for provider in EVERY_CRM {
        env.connect(user, provider).await;
        let metrics = sync_ok(&env, user, provider, "").await;
        assert_eq!(metrics["skipped"], 0, "{provider}: {metrics}");
    }
    let phones: Vec<(String, String)> = env
        .store
        .list_contacts(user)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.phone_number, c.name))
        .collect();
    for (phone, name) in [
        ("+61412345678", "Sydney"),
        ("+16175550123", "Boston"),
        ("+15125550188", "Austin"),
    ] {
        assert!(
            phones.iter().any(|(p, n)| p == phone && n.ends_with(name)),
            "{phone} {name} in {phones:?}"
        );
    }
    let listed = get(&env, user, "/api/integrations").await;
    let regions: Vec<(String, String)> = listed.body["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["provider"].as_str().unwrap().to_owned(),
                i["phoneRegion"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        regions.contains(&("rex".into(), "AU".into())),
        "{regions:?}"
    );
    assert!(regions.contains(&("followupboss".into(), "US".into())));

    // A Follow Up Boss account of a New Zealand office: its region is set by PUT, and the next
    // complete read stores its national numbers.
    let fub = listed.body["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == "followupboss")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    create_record(
        &env,
        Provider::FollowUpBoss,
        json!({"last_name": "Auckland", "phones": ["021 555 0199"]}),
    )
    .await;
    let skipped = sync_ok(&env, user, Provider::FollowUpBoss, "").await;
    assert_eq!(skipped["skipped"], 1, "not a US number: {skipped}");
    let bad = crate::support::api::update(&env, user, &fub, json!({"phoneRegion": "Kiwi"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    let put = crate::support::api::update(&env, user, &fub, json!({"phoneRegion": "NZ"})).await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["phoneRegion"], "NZ");
    sync_ok(&env, user, Provider::FollowUpBoss, "full=true").await;
    assert!(contact(&env, user, "+64215550199").await.is_some());
}

#[tokio::test]
async fn two_crms_holding_one_phone_do_not_blank_each_other() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let phone = "+1 415 555 0166";
    let e164 = "+14155550166";
    // Follow Up Boss holds the full record; REX has the same person, newer, without a name or email.
    create_record(
        &env,
        Provider::FollowUpBoss,
        json!({"first_name": "Ada", "last_name": "Full", "phones": [phone],
               "emails": ["ada@example.com"], "updated_ms": OLD_MS}),
    )
    .await;
    let rex = create_record(
        &env,
        Provider::Rex,
        json!({"phones": [phone], "updated_ms": OLD_MS + 86_400_000}),
    )
    .await;
    for provider in [Provider::FollowUpBoss, Provider::Rex] {
        env.connect(user, provider).await;
        sync_ok(&env, user, provider, "").await;
    }
    let c = contact(&env, user, e164).await.unwrap();
    assert_eq!(c.name, "Ada Full", "a nameless record writes no name");
    assert_eq!(c.email.as_deref(), Some("ada@example.com"));
    // And in the other order (a fresh sync of Follow Up Boss after REX) it is the same.
    sync_ok(&env, user, Provider::FollowUpBoss, "full=true").await;
    let c = contact(&env, user, e164).await.unwrap();
    assert_eq!(c.name, "Ada Full");

    // REX gets a name later: the most recently updated live source names the contact; the e-mail
    // only Follow Up Boss has stays.
    edit_record(
        &env,
        Provider::Rex,
        rex,
        json!({"first_name": "Ada", "last_name": "Newer"}),
    )
    .await;
    sync_ok(&env, user, Provider::Rex, "").await;
    let c = contact(&env, user, e164).await.unwrap();
    assert_eq!(c.name, "Ada Newer");
    assert_eq!(c.email.as_deref(), Some("ada@example.com"));
    assert_eq!(c.source_provider.as_deref(), Some("rex"));

    // REX archives it: Follow Up Boss still holds the person, so the contact is live, from FUB.
    delete_record(&env, Provider::Rex, rex).await;
    sync_ok(&env, user, Provider::Rex, "full=true").await;
    let c = contact(&env, user, e164).await.unwrap();
    assert!(c.crm_deleted_at.is_none());
    assert_eq!(c.name, "Ada Full");
    assert_eq!(c.source_provider.as_deref(), Some("followupboss"));
}

#[tokio::test]
async fn refused_credentials_end_in_needs_reauth_and_the_scheduled_run_skips_them() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 25, 120);
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 26, 60);
    env.connect(user, Provider::FollowUpBoss).await;
    env.connect(user, Provider::Lofty).await;

    // A token the CRM expired early is refreshed once after its 401, and the sync goes on.
    let refreshes = env.refreshes(Provider::FollowUpBoss);
    env.sandbox
        .expire_tokens(Some(sandbox_provider(Provider::FollowUpBoss)));
    sync_ok(&env, user, Provider::FollowUpBoss, "").await;
    assert_eq!(env.refreshes(Provider::FollowUpBoss), refreshes + 1);

    // The grant is revoked (refresh answers invalid_grant), and Lofty's key is revoked.
    env.sandbox
        .revoke_grants(Some(sandbox_provider(Provider::FollowUpBoss)));
    env.sandbox
        .revoke_api_keys(sandbox_provider(Provider::Lofty));
    for provider in [Provider::FollowUpBoss, Provider::Lofty] {
        let reply = sync_with(&env, user, provider, "").await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{provider}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "invalid_credentials");
    }
    let listed = get(&env, user, "/api/integrations").await;
    for i in listed.body["integrations"].as_array().unwrap() {
        assert_eq!(i["status"], "needs_reauth", "{i}");
        let sentence = i["lastError"].as_str().unwrap();
        assert!(
            sentence.contains("reconnect") || sentence.contains("Reconnect"),
            "{sentence}"
        );
    }

    // The scheduled run leaves them alone: no request reaches either CRM.
    let before = (
        crm_requests(&env, Provider::FollowUpBoss),
        crm_requests(&env, Provider::Lofty),
    );
    let report =
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
    assert_eq!(report.integrations, 0, "{report:?}");
    assert_eq!(
        (
            crm_requests(&env, Provider::FollowUpBoss),
            crm_requests(&env, Provider::Lofty)
        ),
        before
    );

    // Connecting again makes them active, and the next scheduled run syncs them.
    env.sandbox.reset(Some(sandbox_provider(Provider::Lofty)));
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 26, 60);
    env.connect(user, Provider::FollowUpBoss).await;
    env.connect(user, Provider::Lofty).await;
    let listed = get(&env, user, "/api/integrations").await;
    for i in listed.body["integrations"].as_array().unwrap() {
        assert_eq!(i["status"], "active", "{i}");
        assert_eq!(i["lastError"], Value::Null);
    }
    let report =
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
    assert_eq!((report.integrations, report.synced), (2, 2), "{report:?}");
}

#[tokio::test]
async fn reconnecting_another_crm_account_starts_its_sync_afresh() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 27, 200);
    env.connect(user, provider).await;
    sync_ok(&env, user, provider, "").await;

    // The same account again: the cursor stays (the next sync reads only what changed).
    env.connect(user, provider).await;
    let same = sync_ok(&env, user, provider, "").await;
    assert_eq!(same["fullRead"], false, "{same}");

    // Another Follow Up Boss account, whose people are all older than the first one's cursor.
    env.sandbox.update_config(|c| c.fub.account_id = 77);
    env.sandbox.seed_with(
        sandbox_provider(provider),
        28,
        150,
        false,
        OLD_MS + 86_400_000,
    );
    env.connect(user, provider).await;
    let other = sync_ok(&env, user, provider, "").await;
    assert_eq!(other["fullRead"], true, "{other}");
    let want = expected(&env, provider).await;
    let got = stored(&env, user).await;
    let of_new: std::collections::BTreeMap<String, String> = got
        .into_iter()
        .filter(|(phone, _)| want.contains_key(phone))
        .collect();
    assert_same(&of_new, &want, "the new account's people, all of them");
}

/// Requests per incremental sync, per CRM, with 10 changes in a large account. Follow Up Boss: 10,000
/// people, newest first with an early stop. REX: 10,000 contacts, changes since the cursor. Lofty has no
/// update time, so each sync reads the account (2,000 leads, 25 a page).
#[tokio::test]
async fn an_incremental_sync_costs_what_changed() {
    let env = Env::start().await;
    // Lofty's production tier (500 a minute, crm-apis §2.3): two complete reads of 80 pages.
    env.sandbox
        .update_config(|c| c.lofty.rate_limit_per_minute = 500);
    for (provider, people) in [
        (Provider::FollowUpBoss, 10_000),
        (Provider::Rex, 10_000),
        (Provider::Lofty, 2_000),
    ] {
        let user = Uuid::new_v4();
        env.sandbox.seed(sandbox_provider(provider), 29, people);
        env.connect(user, provider).await;
        let before = crm_requests(&env, provider);
        let first = sync_ok(&env, user, provider, "").await;
        let full = crm_requests(&env, provider) - before;
        env.change_records(provider, 10, 31).await;
        let before = crm_requests(&env, provider);
        let metrics = sync_ok(&env, user, provider, "").await;
        let requests = crm_requests(&env, provider) - before;
        println!(
            "REPORT incremental-sync {provider}: {people} records, 10 changed: {requests} requests \
             (the first, complete sync: {full}); fetched {}, upserted {}",
            metrics["totalFetched"], metrics["upserted"]
        );
        assert_eq!(first["totalFetched"], people as u64);
        assert!(metrics["upserted"].as_u64().unwrap() >= 1, "{metrics}");
        match provider {
            Provider::Lofty => assert!(requests <= (people as u64).div_ceil(25) + 1, "{requests}"),
            _ => assert!(
                requests <= 2,
                "{provider}: {requests} requests for 10 changes"
            ),
        }
        assert_same(
            &stored(&env, user).await,
            &expected(&env, provider).await,
            "after",
        );
    }
}

/// A CRM that keeps answering 429 with a long `Retry-After`: the caller gets 429 `rate_limited` with
/// that `Retry-After` and a sentence naming the CRM (not a 502), and crmsync keeps to it.
#[tokio::test]
async fn a_crm_s_rate_limit_reaches_the_caller_as_429_with_retry_after() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let provider = Provider::FollowUpBoss;
    env.sandbox.seed(sandbox_provider(provider), 33, 150);
    env.connect(user, provider).await;
    env.sandbox
        .set_faults(
            sandbox_provider(provider),
            crm_sandbox::FaultConfig {
                rate_429: 1.0,
                retry_after_secs: 120,
                ..Default::default()
            },
        )
        .unwrap();
    let reply = sync_with(&env, user, provider, "").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"], "rate_limited");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("Follow Up Boss"),
        "{:?}",
        reply.body
    );
    let retry_after: u64 = reply.headers[http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&retry_after), "{retry_after}");

    // Asked again before that time, crmsync keeps to it without calling the CRM.
    let before = crm_requests(&env, provider);
    let again = sync_with(&env, user, provider, "").await;
    assert_eq!(
        again.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        again.body
    );
    assert!(again.headers.contains_key(http::header::RETRY_AFTER));
    assert_eq!(
        crm_requests(&env, provider),
        before,
        "no call before Retry-After"
    );
}
