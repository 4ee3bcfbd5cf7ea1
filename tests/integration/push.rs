//! The push path end to end: the lead webhook, the outbox, pushes to every CRM with retries, pausing,
//! pacing under a CRM's rate limit, and manual integration syncs.

use std::time::{Duration, Instant};

use crmsync_domain::{PhoneNumber, Provider, Region};
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::env::{Env, Reply, Route, WEBHOOK_SECRET, sandbox_provider};

const WEBHOOK: &str = "/api/webhooks/lead-created";

fn lead(user: Uuid, id: &str, phone: &str, risk: Option<i32>, last: &str, updated: &str) -> Value {
    json!({
        "event": "lead.created",
        "lead": {
            "id": id, "userId": user, "firstName": "Dana", "lastName": last, "phone": phone,
            "email": format!("{id}@example.com"), "riskScore": risk, "source": "Echo Safe",
            "tags": ["buyer"], "notes": "Asked for a call back", "updatedAt": updated
        }
    })
}

async fn post(env: &Env, body: &Value) -> Reply {
    let body = body.to_string();
    env.send(
        Route::LeadWebhook,
        "POST",
        WEBHOOK,
        "",
        &[],
        &[
            ("x-webhook-secret", WEBHOOK_SECRET),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .await
}

/// The CRM's records whose phones include `phone`.
async fn in_crm(env: &Env, provider: Provider, phone: &str) -> Vec<Value> {
    let want = PhoneNumber::parse(phone, Region::US).unwrap();
    env.sandbox_records(provider)
        .await
        .into_iter()
        .filter(|r| {
            r["phones"].as_array().unwrap().iter().any(|p| {
                p.as_str()
                    .and_then(|p| PhoneNumber::parse(p, Region::US).ok())
                    .as_ref()
                    == Some(&want)
            })
        })
        .collect()
}

/// Push log rows of `user`: (provider, status, action, lead).
async fn push_logs(env: &Env, user: Uuid) -> Vec<(String, String, Option<String>, Option<String>)> {
    let client = crmsync_testkit::connect(&env.db.url).await;
    client
        .query(
            "SELECT provider, status, action, lead_id FROM crm_sync_logs
              WHERE user_id = $1 AND direction = 'push' ORDER BY created_at, provider",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_lead_reaches_every_crm_once_and_is_updated_in_place() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    for p in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
        env.connect(user, p).await;
    }
    let first = post(
        &env,
        &lead(
            user,
            "L-1",
            "(415) 555-0142",
            Some(10),
            "Rivera",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["accepted"], true);
    assert_eq!(first.body["integrations"], 3);
    assert_eq!(first.body["pushed"], 3, "{:?}", first.body);
    assert!(first.body["eventId"].as_str().is_some());

    let mut ids = Vec::new();
    for p in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
        let found = in_crm(&env, p, "+14155550142").await;
        assert_eq!(
            found.len(),
            1,
            "{p}: exactly one person with the lead's phone"
        );
        assert_eq!(found[0]["last_name"], "Rivera", "{p}");
        ids.push(found[0]["id"].clone());
    }

    // A new version of the lead: the same people, updated.
    let mut second = lead(
        user,
        "L-1",
        "+1 415 555 0142",
        Some(10),
        "Rivera-Lopez",
        "2026-11-02T10:00:00Z",
    );
    second["event"] = json!("lead.updated");
    let reply = post(&env, &second).await;
    assert_eq!(reply.body["pushed"], 3, "{:?}", reply.body);
    for (i, p) in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty]
        .into_iter()
        .enumerate()
    {
        let found = in_crm(&env, p, "+14155550142").await;
        assert_eq!(found.len(), 1, "{p}: still one person");
        assert_eq!(found[0]["id"], ids[i], "{p}: updated in place");
        assert_eq!(found[0]["last_name"], "Rivera-Lopez", "{p}");
    }
    let logs = push_logs(&env, user).await;
    assert_eq!(logs.len(), 6);
    assert!(
        logs.iter()
            .all(|(_, status, _, lead)| status == "success" && lead.as_deref() == Some("L-1"))
    );
    let updated = logs
        .iter()
        .filter(|l| l.2.as_deref() == Some("updated"))
        .count();
    assert_eq!(updated, 3, "{logs:?}");
}

#[tokio::test]
async fn risky_phoneless_or_unscored_leads_reach_no_crm() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::FollowUpBoss).await;
    env.connect(user, Provider::Lofty).await;

    let risky = post(
        &env,
        &lead(
            user,
            "R-1",
            "+14155550150",
            Some(21),
            "Risky",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(risky.status, StatusCode::ACCEPTED);
    assert_eq!(
        (
            risky.body["integrations"].as_u64(),
            risky.body["skipped"].as_u64()
        ),
        (Some(0), Some(2))
    );
    let at_threshold = post(
        &env,
        &lead(
            user,
            "R-2",
            "+14155550151",
            Some(20),
            "Edge",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(
        at_threshold.body["pushed"], 2,
        "a score equal to the threshold is pushed"
    );
    let phoneless = post(
        &env,
        &lead(
            user,
            "R-3",
            "not a phone",
            Some(5),
            "NoPhone",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(phoneless.body["skipped"], 2);
    let unscored = post(
        &env,
        &lead(
            user,
            "R-4",
            "+14155550153",
            None,
            "NoScore",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(unscored.body["skipped"], 2);

    for p in [Provider::FollowUpBoss, Provider::Lofty] {
        assert!(
            in_crm(&env, p, "+14155550150").await.is_empty(),
            "{p}: the risky lead is not there"
        );
        assert!(in_crm(&env, p, "+14155550153").await.is_empty());
        assert_eq!(in_crm(&env, p, "+14155550151").await.len(), 1);
    }
    let logs = push_logs(&env, user).await;
    let reasons: Vec<_> = logs
        .iter()
        .filter(|l| l.1 == "skipped")
        .filter_map(|l| l.2.clone())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "risk_above_threshold")
            .count(),
        2
    );
    assert_eq!(reasons.iter().filter(|r| *r == "no_phone").count(), 2);
    assert_eq!(reasons.iter().filter(|r| *r == "no_risk_score").count(), 2);
}

#[tokio::test]
async fn the_same_lead_version_delivered_twice_is_pushed_once() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let body = lead(
        user,
        "D-1",
        "+14155550160",
        Some(3),
        "Twice",
        "2026-11-01T10:00:00Z",
    );
    let first = post(&env, &body).await;
    assert_eq!(first.body["pushed"], 1);

    // The same version again, in our envelope and as a Supabase database webhook, 20 at once.
    let supabase = json!({
        "type": "UPDATE", "table": "leads", "schema": "public", "old_record": null,
        "record": {"id": "D-1", "user_id": user, "first_name": "Dana", "last_name": "Twice",
                   "phone": "+14155550160", "email": "D-1@example.com", "risk_score": 3,
                   "source": "Echo Safe", "tags": ["buyer"], "notes": "Asked for a call back",
                   "updated_at": "2026-11-01T10:00:00+00"}
    });
    let again: Vec<Reply> = futures::future::join_all(
        (0..20).map(|i| post(&env, if i % 2 == 0 { &body } else { &supabase })),
    )
    .await;
    for reply in &again {
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
        assert_eq!(reply.body["duplicate"], true, "{:?}", reply.body);
        assert_eq!(reply.body["eventId"], first.body["eventId"]);
        assert_eq!(reply.body["pushed"], 0);
    }
    assert_eq!(in_crm(&env, Provider::Lofty, "+14155550160").await.len(), 1);
    assert_eq!(
        env.sandbox.stats()["providers"]["lofty"]["contacts_created"],
        1
    );
    assert_eq!(
        push_logs(&env, user).await.len(),
        1,
        "one push, one log row"
    );
}

#[tokio::test]
async fn a_crm_that_fails_then_recovers_gets_the_lead() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    // Three failures (absorbed by the client's retries of its lookup), then five (the push itself is
    // retried).
    for (n, fails) in [(1, 3u32), (2, 5)] {
        env.sandbox
            .set_faults(
                sandbox_provider(Provider::Lofty),
                crm_sandbox::FaultConfig {
                    fail_next: fails,
                    ..Default::default()
                },
            )
            .unwrap();
        let phone = format!("+1415555017{n}");
        let reply = post(
            &env,
            &lead(
                user,
                &format!("F-{n}"),
                &phone,
                Some(1),
                "Flaky",
                "2026-11-01T10:00:00Z",
            ),
        )
        .await;
        assert_eq!(reply.body["pushed"], 1, "{:?}", reply.body);
        assert_eq!(in_crm(&env, Provider::Lofty, &phone).await.len(), 1);
    }
    let stats = env.sandbox.stats();
    assert_eq!(stats["providers"]["lofty"]["faults"]["error"], 8, "{stats}");
    let integration = env
        .store
        .integration_by_provider(user, Provider::Lofty)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(integration.consecutive_failures, 0);
}

#[tokio::test]
async fn a_crm_failing_every_time_is_paused_after_ten_leads_and_nothing_is_lost() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let always = crm_sandbox::FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    env.sandbox
        .set_faults(sandbox_provider(Provider::Lofty), always)
        .unwrap();
    for i in 0..10 {
        let reply = post(
            &env,
            &lead(
                user,
                &format!("P-{i}"),
                &format!("+141555502{i:02}"),
                Some(1),
                "Down",
                "2026-11-01T10:00:00Z",
            ),
        )
        .await;
        assert_eq!(reply.body["failed"], 1, "lead {i}: {:?}", reply.body);
    }
    let integration = env
        .store
        .integration_by_provider(user, Provider::Lofty)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(integration.status, "paused");
    assert_eq!(integration.consecutive_failures, 10);

    // Paused: the next lead is not sent to it at all.
    let requests_before = env.sandbox.stats()["providers"]["lofty"]["requests"].clone();
    let reply = post(
        &env,
        &lead(
            user,
            "P-10",
            "+14155550299",
            Some(1),
            "Down",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(reply.body["integrations"], 0);
    assert_eq!(
        env.sandbox.stats()["providers"]["lofty"]["requests"],
        requests_before
    );
    let failed = push_logs(&env, user)
        .await
        .into_iter()
        .filter(|l| l.1 == "failed")
        .count();
    assert_eq!(failed, 10);

    // The CRM recovers and the user resumes the integration: the ten failed leads are delivered.
    env.sandbox
        .set_faults(sandbox_provider(Provider::Lofty), Default::default())
        .unwrap();
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .execute(
            "UPDATE crm_integrations SET status = 'active', consecutive_failures = 0 WHERE id = $1",
            &[&integration.id],
        )
        .await
        .unwrap();
    admin
        .execute("UPDATE push_deliveries SET next_attempt_at = now()", &[])
        .await
        .unwrap();
    let tally =
        crmsync_app::push::drain_all(env.ctx().await, Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
    assert_eq!(tally.pushed, 10, "{tally:?}");
    for i in 0..10 {
        assert_eq!(
            in_crm(&env, Provider::Lofty, &format!("+141555502{i:02}"))
                .await
                .len(),
            1,
            "lead {i}"
        );
    }
}

#[tokio::test]
async fn two_hundred_leads_at_once_are_paced_under_the_crm_limit() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::FollowUpBoss).await;
    // 50 requests per sliding 2 s window in each context: 25 a second.
    env.sandbox.update_config(|c| {
        c.fub.rate_limit_global = 50;
        c.fub.rate_limit_events = 50;
        c.fub.rate_limit_window_secs = 2;
    });
    let started = Instant::now();
    let bodies: Vec<Value> = (0..200)
        .map(|i| {
            lead(
                user,
                &format!("B-{i}"),
                &format!("+1415556{i:04}"),
                Some(1),
                "Burst",
                "2026-11-01T10:00:00Z",
            )
        })
        .collect();
    let replies = futures::future::join_all(bodies.iter().map(|body| post(&env, body))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::ACCEPTED && r.body["integrations"] == 1)
    );

    // What the webhooks' time budget left over goes out with the scheduled drain.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut pushed: u64 = replies
        .iter()
        .map(|r| r.body["pushed"].as_u64().unwrap())
        .sum();
    while pushed < 200 && Instant::now() < deadline {
        let admin = crmsync_testkit::connect(&env.db.url).await;
        let due: i64 = admin
            .query_one("SELECT count(*) FROM push_deliveries WHERE status = 'pending' AND next_attempt_at <= now()", &[])
            .await
            .unwrap()
            .get(0);
        if due == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let tally =
            crmsync_app::push::drain_all(env.ctx().await, Instant::now() + Duration::from_secs(30))
                .await
                .unwrap();
        pushed += tally.pushed as u64;
    }
    let elapsed = started.elapsed();
    let stats = env.sandbox.stats();
    let served_429 = stats["providers"]["fub"]["served_429"].as_u64().unwrap();
    println!("200 leads through a 50 per 2 s limit: {elapsed:?}, 429s served: {served_429}");
    assert_eq!(pushed, 200, "every lead delivered");
    let people = env.sandbox_records(Provider::FollowUpBoss).await;
    assert_eq!(people.len(), 200, "no lead lost, none doubled");
    let admin = crmsync_testkit::connect(&env.db.url).await;
    let delivered: i64 = admin
        .query_one(
            "SELECT count(*) FROM push_deliveries WHERE status = 'delivered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 200);
    // 400 calls at the limit's pace take at least 400 / 25 = 16 s; pacing kept 429s rare and none
    // was ignored (every lead arrived).
    assert!(
        served_429 <= 20,
        "pacing keeps the CRM's 429s rare: {served_429}"
    );
}

async fn lead_events(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM lead_events", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_webhook_refuses_bad_senders_and_bad_bodies() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let body = lead(
        user,
        "W-1",
        "+14155550180",
        Some(1),
        "Hook",
        "2026-11-01T10:00:00Z",
    )
    .to_string();
    let send = |headers: Vec<(&'static str, String)>, body: String| {
        let env = &env;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.send(
                Route::LeadWebhook,
                "POST",
                WEBHOOK,
                "",
                &[],
                &h,
                Some(body.as_bytes()),
            )
            .await
        }
    };
    let wrong = send(
        vec![("x-webhook-secret", "whsec_nope".into())],
        body.clone(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"], "unauthorized");
    assert_eq!(
        send(vec![], body.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Standard Webhooks.
    let hook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let signed = |ts: i64, signed_body: &str| {
        vec![
            ("webhook-id", "msg_2Lh9".to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                hook.sign("msg_2Lh9", ts, signed_body.as_bytes()).unwrap(),
            ),
        ]
    };
    let now = chrono::Utc::now().timestamp();
    let tampered = body.replace("Hook", "Hack");
    assert_eq!(
        send(signed(now, &body), tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    let stale = send(signed(now - 360, &body), body.clone()).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert!(stale.body["detail"].as_str().unwrap().contains("5 minutes"));
    assert_eq!(
        send(signed(now + 360, &body), body.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let client = crmsync_testkit::connect(&env.db.url).await;
    assert_eq!(
        lead_events(&client).await,
        0,
        "refused deliveries store nothing"
    );

    let good = send(signed(now, &body), body.clone()).await;
    assert_eq!(good.status, StatusCode::ACCEPTED, "{:?}", good.body);
    assert_eq!(good.body["pushed"], 1);

    let secret = || vec![("x-webhook-secret", WEBHOOK_SECRET.to_owned())];
    for bad in [
        "{not json",
        "[]",
        r#"{"event":"lead.created","lead":{"id":"x","userId":"not-a-uuid"}}"#,
    ] {
        let reply = send(secret(), bad.to_owned()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "bad_request");
    }
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 * 1024));
    assert_eq!(send(secret(), huge).await.status, StatusCode::BAD_REQUEST);
    let delete = json!({"type": "DELETE", "table": "leads", "schema": "public", "record": null,
                        "old_record": {"id": "W-1", "user_id": user}});
    let ignored = send(secret(), delete.to_string()).await;
    assert_eq!(ignored.status, StatusCode::ACCEPTED);
    assert_eq!(ignored.body["accepted"], false);
    assert_eq!(
        lead_events(&client).await,
        1,
        "only the good delivery was stored"
    );
}

#[tokio::test]
async fn a_manual_integration_sync_pulls_then_pushes_and_is_private() {
    let env = Env::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.connect(alice, Provider::FollowUpBoss).await;
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 4, 120);
    // A lead the webhook could not deliver (the CRM was down).
    let down = crm_sandbox::FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    env.sandbox
        .set_faults(sandbox_provider(Provider::FollowUpBoss), down)
        .unwrap();
    let reply = post(
        &env,
        &lead(
            alice,
            "M-1",
            "+14155550190",
            Some(2),
            "Manual",
            "2026-11-01T10:00:00Z",
        ),
    )
    .await;
    assert_eq!(reply.body["failed"], 1);
    env.sandbox
        .set_faults(sandbox_provider(Provider::FollowUpBoss), Default::default())
        .unwrap();
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .execute("UPDATE push_deliveries SET next_attempt_at = now()", &[])
        .await
        .unwrap();

    let id = env
        .store
        .integration_by_provider(alice, Provider::FollowUpBoss)
        .await
        .unwrap()
        .unwrap()
        .id;
    let path = format!("/api/integrations/{id}/sync");
    let as_bob = env
        .as_user(bob, Route::IntegrationSync, "POST", &path, "")
        .await;
    assert_eq!(
        as_bob.status,
        StatusCode::NOT_FOUND,
        "Bob cannot sync Alice's integration"
    );
    let bad = env
        .as_user(
            alice,
            Route::IntegrationSync,
            "POST",
            "/api/integrations/12/sync",
            "",
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let synced = env
        .as_user(alice, Route::IntegrationSync, "POST", &path, "")
        .await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    assert_eq!(synced.body["totalFetched"], 120);
    assert!(synced.body["upserted"].as_u64().unwrap() > 0);
    assert_eq!(synced.body["pushed"], 1, "{:?}", synced.body);
    assert_eq!(synced.body["failed"], 0);
    assert_eq!(
        in_crm(&env, Provider::FollowUpBoss, "+14155550190")
            .await
            .len(),
        1
    );
}
