//! Races, each across several `App`s (as several Lambda instances, each with its own pool and caches):
//! concurrent syncs of one integration, concurrent calls that all need a token refresh, the same lead
//! delivered 1000 times at once, and concurrent drains of one outbox. (The same cases one at a time, as
//! the contract states them, are in `routes/`: a sync while another runs, a refresh, a lead delivered
//! twice.)

use std::time::{Duration, Instant};

use crm_sandbox::FaultConfig;
use crmsync_domain::Provider;
use crmsync_lambda::App;
use http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::env::{Env, Reply, Route, WEBHOOK_SECRET, sandbox_provider};
use crate::support::leads::{WEBHOOK, lead, people_with, post_lead};
use crate::support::rows::{assert_same, expected, report, stored, sync_path};

fn lambdas(env: &Env, n: usize) -> Vec<App> {
    (0..n).map(|_| env.another_app()).collect()
}

async fn call_as(
    env: &Env,
    app: &App,
    user: Uuid,
    route: Route,
    method: &str,
    path: &str,
    query: &str,
) -> Reply {
    let cookies = [format!("alto_admin={}", Env::token(user))];
    env.send_via(app, route, method, path, query, &cookies, &[], None)
        .await
}

#[tokio::test]
async fn ten_concurrent_syncs_of_one_integration_one_runs_the_rest_get_409_or_202() {
    for provider in [Provider::FollowUpBoss, Provider::Rex] {
        let env = Env::start().await;
        env.sandbox.seed(sandbox_provider(provider), 31, 1_000);
        let user = Uuid::new_v4();
        env.connect(user, provider).await;
        let id = env
            .store
            .integration_by_provider(user, provider)
            .await
            .unwrap()
            .unwrap()
            .id;
        // Slow pages: the winner is still syncing when the others arrive.
        env.sandbox
            .set_faults(
                sandbox_provider(provider),
                FaultConfig {
                    latency_ms: 25,
                    ..Default::default()
                },
            )
            .unwrap();
        let apps = lambdas(&env, 10);
        let manual = format!("/api/integrations/{id}/sync");
        // Five through contacts-sync and five through integration-sync (each limited to 6 a minute).
        let calls = apps.iter().enumerate().map(|(i, app)| {
            let (route, path) = if i % 2 == 0 {
                (Route::ContactsSync, sync_path(provider))
            } else {
                (Route::IntegrationSync, manual.clone())
            };
            let env = &env;
            async move { call_as(env, app, user, route, "POST", &path, "").await }
        });
        let replies = futures::future::join_all(calls).await;
        let ok = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        // contacts-sync answers 409 while a sync runs; integration-sync answers 202 (`queued`: the
        // sync running or queued does it) once another "sync now" holds the integration, else 409.
        let conflicts = replies
            .iter()
            .filter(|r| {
                (r.status == StatusCode::CONFLICT && r.body["error"] == "conflict")
                    || (r.status == StatusCode::ACCEPTED && r.body["queued"] == true)
            })
            .count();
        assert_eq!(
            (ok, conflicts),
            (1, 9),
            "{provider}: {:?}",
            replies
                .iter()
                .map(|r| (r.status, &r.body))
                .collect::<Vec<_>>()
        );
        assert_same(
            &stored(&env, user).await,
            &expected(&env, provider).await,
            provider.as_str(),
        );
        let logs: i64 = crmsync_testkit::connect(&env.db.url)
            .await
            .query_one(
                "SELECT count(*) FROM crm_sync_logs WHERE user_id = $1 AND direction = 'pull'",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(logs, 1, "{provider}: one sync ran, one was logged");
        report(format!(
            "races/concurrent-syncs {provider}: 10 at once over 10 App instances: 1 ran (200), 9 got 409 or 202"
        ));
    }
}

#[tokio::test]
async fn fifty_concurrent_calls_needing_a_refresh_cause_one_refresh() {
    for provider in [Provider::FollowUpBoss, Provider::Rex] {
        let env = Env::start().await;
        env.sandbox.seed(sandbox_provider(provider), 2, 50);
        let user = Uuid::new_v4();
        env.connect(user, provider).await;
        env.expire_token(user, provider).await;
        let before = env.refreshes(provider);
        let apps = lambdas(&env, 5);
        let p = provider.as_str();
        let status_path = format!("/api/integrations/{p}/auth/status");
        let fetch_path = format!("/api/integrations/{p}/contacts/fetch");
        // 30 status checks and 20 fetches (the fetch limit is 20 a minute), over 5 instances.
        let calls = (0..50).map(|i| {
            let app = &apps[i % apps.len()];
            let env = &env;
            let (route, path, query) = if i % 5 < 3 {
                (Route::AuthStatus, status_path.clone(), "")
            } else {
                (Route::ContactsFetch, fetch_path.clone(), "limit=5")
            };
            async move { call_as(env, app, user, route, "GET", &path, query).await }
        });
        let replies = futures::future::join_all(calls).await;
        for r in &replies {
            assert_eq!(r.status, StatusCode::OK, "{provider}: {:?}", r.body);
            if let Some(valid) = r.body.get("tokenValid") {
                assert_eq!(valid, true, "{provider}: {:?}", r.body);
            } else {
                assert_eq!(r.body["count"], 5, "{provider}: {:?}", r.body);
            }
        }
        assert_eq!(
            env.refreshes(provider) - before,
            1,
            "{provider}: the CRM saw exactly one refresh"
        );
        report(format!(
            "races/refresh {provider}: 50 concurrent calls with an expired token over 5 App instances: \
             50 answered 200, the CRM saw 1 refresh"
        ));
    }
}

#[tokio::test]
async fn the_same_lead_delivered_1000_times_at_once_is_pushed_once() {
    const DELIVERIES: usize = 1_000;
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let crms = [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty];
    for p in crms {
        env.connect(user, p).await;
    }
    let apps = lambdas(&env, 4);
    let envelope = lead(user, "RACE-1", "+14155550123", "Once");
    let supabase = json!({
        "type": "INSERT", "table": "leads", "schema": "public", "old_record": null,
        "record": {"id": "RACE-1", "user_id": user, "first_name": "Dana", "last_name": "Once",
                   "phone": "+14155550123", "email": "race-1@example.com", "risk_score": 5,
                   "source": "Echo Safe", "tags": ["buyer"], "notes": "Call back",
                   "updated_at": "2026-11-01T10:00:00+00"}
    });
    let hook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let started = Instant::now();
    let calls = (0..DELIVERIES).map(|i| {
        let app = &apps[i % apps.len()];
        let env = &env;
        let hook = &hook;
        let body = if i % 2 == 0 { &envelope } else { &supabase }.to_string();
        async move {
            if i % 3 == 0 {
                // Signed as Standard Webhooks, each delivery with its own message id.
                let id = format!("msg_{i}");
                let ts = chrono::Utc::now().timestamp();
                let sig = hook.sign(&id, ts, body.as_bytes()).unwrap();
                let ts = ts.to_string();
                env.send_via(
                    app,
                    Route::LeadWebhook,
                    "POST",
                    WEBHOOK,
                    "",
                    &[],
                    &[
                        ("webhook-id", &id),
                        ("webhook-timestamp", &ts),
                        ("webhook-signature", &sig),
                    ],
                    Some(body.as_bytes()),
                )
                .await
            } else {
                let value: serde_json::Value = serde_json::from_str(&body).unwrap();
                post_lead(env, app, &value).await
            }
        }
    });
    let replies = futures::future::join_all(calls).await;
    let took = started.elapsed();
    let mut firsts = 0;
    for r in &replies {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        assert_eq!(r.body["eventId"], replies[0].body["eventId"]);
        if r.body["duplicate"] != true {
            firsts += 1;
            assert_eq!(r.body["integrations"], 3, "{:?}", r.body);
        } else {
            assert_eq!(r.body["pushed"], 0);
        }
    }
    assert_eq!(
        firsts, 1,
        "one delivery recorded the lead; the rest were duplicates"
    );
    // Whatever the first webhook's budget left goes out with the scheduled drains: under load a
    // delivery may still be leased by the webhook that claimed it, or waiting for an unanswered create
    // to settle, when the first drain looks; the scheduled run drains again until it is out. Lofty
    // then shows a new lead only after its persistence lag (crm-apis §2.2).
    let admin = crmsync_testkit::connect(&env.db.url).await;
    let until = Instant::now() + Duration::from_secs(60);
    let mut drains = 0;
    loop {
        drains += 1;
        crmsync_app::push::drain_all(env.ctx().await, Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
        let pending: i64 = admin
            .query_one(
                "SELECT count(*) FROM push_deliveries WHERE status <> 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for p in crms {
        let until = Instant::now() + Duration::from_secs(10);
        let mut found = people_with(&env, p, "+14155550123").await;
        while found.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            found = people_with(&env, p, "+14155550123").await;
        }
        assert_eq!(found.len(), 1, "{p}: pushed once");
        let created =
            env.sandbox.stats()["providers"][sandbox_provider(p).name()]["contacts_created"]
                .clone();
        assert_eq!(created, 1, "{p}: created once");
    }
    let (events, deliveries, logs): (i64, i64, i64) = {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM lead_events), \
                        (SELECT count(*) FROM push_deliveries WHERE status = 'delivered'), \
                        (SELECT count(*) FROM crm_sync_logs WHERE direction = 'push')",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((events, deliveries, logs), (1, 3, 3));
    report(format!(
        "races/same-lead: {DELIVERIES} concurrent deliveries of one lead version (envelope, Supabase, \
         Standard Webhooks) over 4 App instances in {took:?}: 1 event, 3 deliveries ({drains} scheduled \
         drain(s) for what the first budget left), each CRM created the person once"
    ));
}

#[tokio::test]
async fn concurrent_drains_push_each_waiting_lead_once() {
    // Under 10, so the failing CRMs are not paused meanwhile.
    const LEADS: usize = 6;
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    env.connect(user, Provider::FollowUpBoss).await;
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        env.sandbox
            .set_faults(
                sandbox_provider(p),
                FaultConfig {
                    error_rate: 1.0,
                    ..Default::default()
                },
            )
            .unwrap();
    }
    // The CRMs are down: the leads wait in the outbox.
    for i in 0..LEADS {
        let reply = post_lead(
            &env,
            &env.app,
            &lead(
                user,
                &format!("DR-{i}"),
                &format!("+1415558{i:04}"),
                "Drain",
            ),
        )
        .await;
        assert_eq!(reply.body["failed"], 2, "{:?}", reply.body);
    }
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        env.sandbox
            .set_faults(sandbox_provider(p), FaultConfig::default())
            .unwrap();
    }
    // The user retries them (what `…/deliveries/retry` and a resume do): due now.
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        let integration = env
            .store
            .integration_by_provider(user, p)
            .await
            .unwrap()
            .unwrap();
        env.store
            .make_deliveries_due(user, integration.id)
            .await
            .unwrap();
    }
    let apps = lambdas(&env, 3);
    let tallies = futures::future::join_all(apps.iter().map(|app| async move {
        let ctx = app.context().await.unwrap();
        crmsync_app::push::drain_all(ctx, Instant::now() + Duration::from_secs(60)).await
    }))
    .await;
    let pushed: usize = tallies.iter().map(|t| t.as_ref().unwrap().pushed).sum();
    let leads = LEADS;
    assert_eq!(pushed, leads * 2, "{tallies:?}");
    for i in 0..leads {
        for p in [Provider::Lofty, Provider::FollowUpBoss] {
            assert_eq!(
                people_with(&env, p, &format!("+1415558{i:04}")).await.len(),
                1,
                "{p}: lead {i}"
            );
        }
    }
    report(format!(
        "races/drains: {} waiting deliveries drained by 3 App instances at once: each pushed once",
        leads * 2
    ));
}
