//! `crm-webhook`: `POST /api/webhooks/crm/{provider}/{token}`. The environment has a public address for
//! CRMs (`CRM_WEBHOOK_BASE_URL`, here a receiver of ours), so connecting an integration subscribes it at
//! the sandbox; each delivery the sandbox makes (following the vendor's documents) is forwarded to the
//! route exactly as it came (path, headers, body), as API Gateway would.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{FUB_KEY, LOFTY_KEY, assert_status, connect, get, item, send_raw};
use crate::support::env::{Env, Reply, Route};
use crate::support::hooks::{deliveries, fub, receiver};

/// Sends a delivery to the route as it came: its path, its CRM headers, its exact body.
async fn forward(env: &Env, d: &wiremock::Request, body: &[u8]) -> Reply {
    let headers: Vec<(String, String)> = d
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() == "fub-signature" || k.as_str() == "content-type")
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.send(
        Route::CrmWebhook,
        "POST",
        d.url.path(),
        "",
        &[],
        &headers,
        Some(body),
    )
    .await
}

/// Creates a lead through Lofty's API (`POST /v1.0/leads`), as an agent's change in Lofty.
async fn create_lofty_lead(env: &Env, first: &str, last: &str, phone: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1.0/leads", env.sandbox.lofty_api_base()))
        .header("Authorization", format!("token {LOFTY_KEY}"))
        .header("Content-Type", "application/json")
        .json(&json!({"firstName": first, "lastName": last, "phones": [phone]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "creating a Lofty lead: {}",
        r.status()
    );
}

async fn contacts(env: &Env, user: Uuid) -> Vec<crmsync_store::StoredContact> {
    env.store.list_contacts(user).await.unwrap()
}

#[tokio::test]
async fn a_follow_up_boss_change_reaches_contacts_through_its_webhook_and_forgeries_change_nothing()
{
    let receiver = receiver().await;
    let env = Env::start_live(&receiver.uri()).await;
    let user = Uuid::new_v4();
    let made = connect(
        &env,
        user,
        json!({"provider": "followupboss", "apiKey": FUB_KEY}),
    )
    .await;
    assert_status(&made, StatusCode::CREATED);
    let id = made.body["id"].as_str().unwrap().to_owned();
    // Connected live: subscribed at the CRM, and the integration says so.
    let read = get(&env, user, &item(&id)).await;
    assert_eq!(read.body["updates"], "live", "{}", read.body);
    assert!(read.body["liveSince"].is_string());
    let hooks: Value = reqwest::get(env.sandbox.url("/_sandbox/fub/webhooks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        hooks["subscriptions"].as_array().map(Vec::len),
        Some(4),
        "{hooks}"
    );

    // A person created in Follow Up Boss: the delivery, forwarded, brings it into contacts.
    let c = reqwest::Client::new();
    let api = env.sandbox.fub_api_base();
    let r = fub(&c, reqwest::Method::POST, format!("{api}/people"))
        .json(&json!({"firstName": "Hook", "lastName": "Person", "phones": [{"value": "(415) 555-0188"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let got = deliveries(&receiver, 1).await;
    let d = got.first().expect("a delivery").clone();
    assert!(
        d.url.path().starts_with("/api/webhooks/crm/followupboss/"),
        "{}",
        d.url
    );

    // Forged (the body changed after signing), another CRM's path, an unknown token: nothing changes.
    let mut forged = d.body.clone();
    forged.extend_from_slice(b" ");
    let r = forward(&env, &d, &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let mut lofty_path = d.clone();
    lofty_path
        .url
        .set_path(&d.url.path().replace("/followupboss/", "/lofty/"));
    assert_eq!(
        forward(&env, &lofty_path, &d.body).await.status,
        StatusCode::NOT_FOUND
    );
    let mut unknown = d.clone();
    unknown
        .url
        .set_path("/api/webhooks/crm/followupboss/not-a-token");
    assert_eq!(
        forward(&env, &unknown, &d.body).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(contacts(&env, user).await.is_empty());

    let logged = crate::support::capture::mark();
    let r = forward(&env, &d, &d.body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["upserted"], 1, "{}", r.body);
    let now = contacts(&env, user).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].phone_number, "+14155550188");
    // The address's token is a secret: never in an answer or a log line.
    let token = d.url.path().rsplit('/').next().unwrap().to_owned();
    crate::support::capture::assert_no_leak(
        &[
            ("the log".into(), crate::support::capture::since(logged)),
            ("the answer".into(), r.text()),
        ],
        &[crate::support::capture::Secret::new(
            "the webhook token",
            token,
        )],
    );

    // The same delivery again (a retry or a replay): nothing is done.
    let r = forward(&env, &d, &d.body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["duplicate"], true, "{}", r.body);
    assert_eq!(r.body["read"], 0);

    // Disconnecting removes the subscriptions at the CRM, and the address stops working.
    let r = send_raw(&env, user, "DELETE", &item(&id), b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let hooks: Value = reqwest::get(env.sandbox.url("/_sandbox/fub/webhooks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        hooks["subscriptions"].as_array().map(Vec::len),
        Some(0),
        "{hooks}"
    );
    assert_eq!(
        forward(&env, &d, &d.body).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_lofty_lead_info_delivery_pulls_the_account_and_without_an_address_integrations_are_polled()
 {
    let receiver = receiver().await;
    let env = Env::start_live(&receiver.uri()).await;
    let user = Uuid::new_v4();
    let made = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    assert_status(&made, StatusCode::CREATED);
    assert_eq!(made.body["updates"], "live", "{}", made.body);
    create_lofty_lead(&env, "Lead", "Info", "4155550199").await;
    let got = deliveries(&receiver, 1).await;
    let d = got.first().expect("a delivery").clone();
    // Lofty persists creates after a while (crm-apis §2.2): the lead may not be readable yet when its
    // delivery comes; the pull then finds it on a later delivery or poll. Wait for it here.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = forward(&env, &d, &d.body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["pulled"], true, "{}", r.body);
    let now = contacts(&env, user).await;
    assert!(
        now.iter().any(|c| c.phone_number == "+14155550199"),
        "{now:?}"
    );

    // Without a public address, a connection is polled and nothing is subscribed.
    let polled = Env::start().await;
    let other = Uuid::new_v4();
    let made = connect(
        &polled,
        other,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    assert_eq!(made.body["updates"], "polled");
    assert_eq!(made.body["liveSince"], Value::Null);
}

#[tokio::test]
async fn a_rex_contact_created_reaches_contacts_through_the_admin_webhook() {
    use crate::support::env::oauth_round;
    let receiver = receiver().await;
    let env = Env::start_live(&receiver.uri()).await;
    let user = Uuid::new_v4();
    let (cookie, path, query) = oauth_round(&env, user, "rex").await;
    let cookies = [
        format!("alto_admin={}", Env::token(user)),
        format!("crm_oauth_state={cookie}"),
    ];
    let r = env
        .call(Route::OAuthCallback, "GET", &path, &query, &cookies, &[])
        .await;
    assert!(r.location().contains("connected=rex"), "{}", r.location());
    let listed = get(&env, user, "/api/integrations").await;
    assert_eq!(
        listed.body["integrations"][0]["updates"], "live",
        "{}",
        listed.body
    );

    // An agent adds a contact in REX (a login session of their own).
    let c = reqwest::Client::new();
    let login: Value = c
        .post(env.sandbox.url("/rex/v1/rex/Authentication/login"))
        .json(&json!({"email": "agent@example.com", "password": "sandbox-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["result"].as_str().unwrap();
    let made: Value = c
        .post(env.sandbox.url("/rex/v1/rex/Contacts/create"))
        .bearer_auth(token)
        .json(&json!({"data": {"type": "person", "related": {
            "contact_names": [{"name_first": "Rex", "name_last": "Hook"}],
            "contact_phones": [{"phone_number": "0412 345 670"}]}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(made["result"]["id"].is_u64(), "{made}");
    let got = deliveries(&receiver, 1).await;
    let d = got.first().expect("a delivery").clone();
    assert!(
        d.url.path().starts_with("/api/webhooks/crm/rex/"),
        "{}",
        d.url
    );
    let r = forward(&env, &d, &d.body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["upserted"], 1, "{}", r.body);
    let now = contacts(&env, user).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].phone_number, "+61412345670");
    // Done before: the same delivery again does nothing.
    let r = forward(&env, &d, &d.body).await;
    assert_eq!(r.body["duplicate"], true, "{}", r.body);
}

/// A delivery whose work the CRM's deadline cuts short (here a Lofty Lead Info delivery, which pulls
/// the whole account, on a slow CRM) answers in time with `complete: false`, and queues a sync of the
/// account that finishes the rest in the background (`sync-worker`).
#[tokio::test]
async fn a_delivery_cut_short_by_the_deadline_queues_the_rest_of_the_account() {
    use crate::support::queue::SyncQueues;
    use crate::support::rows::{assert_same, expected, stored};
    use crmsync_domain::Provider;

    let receiver = receiver().await;
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_live_queued(&receiver.uri(), &queues).await;
    env.sandbox.seed(
        crate::support::env::sandbox_provider(Provider::Lofty),
        9,
        1_200,
    );
    let user = Uuid::new_v4();
    let made = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    assert_status(&made, StatusCode::CREATED);
    create_lofty_lead(&env, "Queued", "Rest", "4155550198").await;
    let got = deliveries(&receiver, 1).await;
    let d = got.first().expect("a delivery").clone();
    // Lofty shows new leads after a while (crm-apis §2.2).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // A slow Lofty: reading the whole account takes longer than the delivery may.
    env.sandbox
        .set_faults(
            crate::support::env::sandbox_provider(Provider::Lofty),
            crm_sandbox::FaultConfig {
                latency_ms: 200,
                ..Default::default()
            },
        )
        .unwrap();
    let started = std::time::Instant::now();
    let r = forward(&env, &d, &d.body).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in time"
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["complete"], false, "{}", r.body);
    assert_eq!(r.body["queued"], true, "{}", r.body);
    assert!(stored(&env, user).await.len() < 1_200);

    env.sandbox
        .set_faults(
            crate::support::env::sandbox_provider(Provider::Lofty),
            Default::default(),
        )
        .unwrap();
    let worked = queues.drain(&env.app, Duration::from_secs(120)).await;
    assert_eq!(worked[0].json()["reason"], "webhook", "{:?}", worked[0]);
    assert_same(
        &stored(&env, user).await,
        &expected(&env, Provider::Lofty).await,
        "the rest of the account, through the queue",
    );
    assert!(
        stored(&env, user).await.contains_key("+14155550198"),
        "the lead the delivery named"
    );
}

/// A delivery that comes while a queued sync of its integration is running (the sync holds the
/// integration, so the delivery cannot be worked on now) is not refused: the running sync is marked,
/// and when it is done it syncs the account again (a `requested` message under the same claim), so the
/// change reaches `contacts` without a scheduled run even if the CRM never sends the delivery again
/// (Lofty's retries are not documented, `crm-apis.md` §2.5: the harsher reading is that it does not).
#[tokio::test]
async fn a_delivery_during_a_running_sync_is_synced_again_after_it_not_refused() {
    use crate::routes::sync_worker::{dispatched, scheduled_run};
    use crate::support::queue::SyncQueues;
    use crate::support::rows::{assert_same, expected, stored};
    use crmsync_domain::Provider;

    let receiver = receiver().await;
    let queues = SyncQueues::create(Duration::from_secs(30), 4).await;
    let env = Env::start_live_queued(&receiver.uri(), &queues).await;
    let lofty = crate::support::env::sandbox_provider(Provider::Lofty);
    env.sandbox.seed(lofty, 17, 1_200);
    let user = Uuid::new_v4();
    let made = connect(
        &env,
        user,
        json!({"provider": "lofty", "apiKey": LOFTY_KEY}),
    )
    .await;
    assert_status(&made, StatusCode::CREATED);
    // A slow Lofty: 12 pages at 600 ms take at least 7.2 s, so the delivery below comes mid-sync on
    // any machine.
    env.sandbox
        .set_faults(
            lofty,
            crm_sandbox::FaultConfig {
                latency_ms: 600,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dispatched(&scheduled_run(&env.app).await).queued, 1);
    let messages = queues.receive_within(Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 1);
    let running = queues.work(&env.app, messages, Duration::from_secs(120));
    let during = async {
        while stored(&env, user).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        create_lofty_lead(&env, "Mid", "Sync", "4155550177").await;
        let got = deliveries(&receiver, 1).await;
        let d = got.first().expect("a delivery").clone();
        let reply = forward(&env, &d, &d.body).await;
        let partial = stored(&env, user).await.len();
        (reply, partial)
    };
    let (first, (reply, partial)) = tokio::join!(running, during);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["queued"], true, "{}", reply.body);
    assert_eq!(reply.body["complete"], false, "{}", reply.body);
    assert!(
        partial < 1_200,
        "the delivery came mid-sync ({partial} stored)"
    );
    let answer = first.answer.expect("the worker answers");
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");

    env.sandbox.set_faults(lofty, Default::default()).unwrap();
    let worked = queues.drain(&env.app, Duration::from_secs(120)).await;
    // One more run (put off and continued if Lofty's pacing says so: the first sync spent its window).
    assert_eq!(worked[0].json()["reason"], "requested", "{:?}", worked[0]);
    assert!(
        worked[1..]
            .iter()
            .all(|m| m.json()["reason"] == "continuation"),
        "{worked:?}"
    );
    let rows = stored(&env, user).await;
    assert!(
        rows.contains_key("+14155550177"),
        "the lead the delivery named"
    );
    assert_same(
        &rows,
        &expected(&env, Provider::Lofty).await,
        "after the run again",
    );
    // Done: the claim is free, and the next delivery queues a sync of its own.
    let (visible, in_flight, dead) = queues.depths().await;
    assert_eq!((visible, in_flight, dead), (0, 0, 0));
    assert!(
        env.store
            .claim_sync(user, made_id(&env, user).await, Duration::from_secs(5))
            .await
            .unwrap()
            .is_some(),
        "the claim was released"
    );
}

async fn made_id(env: &Env, user: Uuid) -> Uuid {
    env.store
        .integration_by_provider(user, crmsync_domain::Provider::Lofty)
        .await
        .unwrap()
        .unwrap()
        .id
}
