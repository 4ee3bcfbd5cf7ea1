//! `scheduled-sync` (the EventBridge schedule): every active integration of every user pulled (a busy
//! one skipped), then the outbox drained; a run cut short by its deadline is finished by the next one.
//! The run is driven through its use case, `crmsync_app::schedule::run`, with the deadline a test
//! chooses (the handler itself runs from its event file in `parts/events.rs`).

use std::time::{Duration, Instant};

use crmsync_domain::Provider;
use serde_json::json;
use uuid::Uuid;

use crate::support::env::{Env, Route, WEBHOOK_SECRET, sandbox_provider};

#[tokio::test]
pub(crate) async fn a_scheduled_run_pulls_every_integration_then_drains_the_outbox() {
    let env = Env::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 1, 300);
    env.sandbox.seed(sandbox_provider(Provider::Rex), 2, 200);
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 3, 100);
    env.connect(alice, Provider::FollowUpBoss).await;
    env.connect(alice, Provider::Lofty).await;
    env.connect(bob, Provider::Rex).await;

    // A lead Lofty could not take when it came in.
    let down = crm_sandbox::FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    env.sandbox
        .set_faults(sandbox_provider(Provider::Lofty), down)
        .unwrap();
    let body = json!({"event": "lead.created", "lead": {"id": "S-1", "userId": alice, "firstName": "Sam",
        "lastName": "Later", "phone": "+14155550777", "riskScore": 4, "updatedAt": "2026-11-01T10:00:00Z"}})
    .to_string();
    let reply = env
        .send(
            Route::LeadWebhook,
            "POST",
            "/api/webhooks/lead-created",
            "",
            &[],
            &[("x-webhook-secret", WEBHOOK_SECRET)],
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(
        reply.body["pushed"], 1,
        "Follow Up Boss took it: {:?}",
        reply.body
    );
    assert_eq!(reply.body["failed"], 1, "Lofty did not");
    env.sandbox
        .set_faults(sandbox_provider(Provider::Lofty), Default::default())
        .unwrap();
    let admin = crmsync_testkit::connect(&env.db.url).await;
    // The failed delivery waits in backoff (a minute); the user retries it, which makes it due (what
    // `POST /api/integrations/{id}/deliveries/retry` does, without pushing it here).
    let lofty = env
        .store
        .integration_by_provider(alice, Provider::Lofty)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        env.store
            .make_deliveries_due(alice, lofty.id)
            .await
            .unwrap(),
        1
    );

    let report =
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(120))
            .await
            .unwrap();
    assert_eq!(report.integrations, 3);
    assert_eq!(report.synced, 3, "{report:?}");
    assert_eq!((report.busy, report.failed, report.partial), (0, 0, 0));
    assert_eq!(report.pushed, 1, "the waiting Lofty delivery went out");
    assert!(!env.store.list_contacts(alice).await.unwrap().is_empty());
    assert!(!env.store.list_contacts(bob).await.unwrap().is_empty());
    let triggers: Vec<String> = admin
        .query(
            "SELECT DISTINCT trigger FROM crm_sync_logs WHERE direction = 'pull'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(triggers, ["schedule"]);
}

#[tokio::test]
async fn a_scheduled_run_skips_an_integration_already_syncing() {
    let env = Env::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 1, 300);
    env.sandbox.seed(sandbox_provider(Provider::Rex), 2, 200);
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 3, 100);
    env.connect(alice, Provider::FollowUpBoss).await;
    env.connect(alice, Provider::Lofty).await;
    env.connect(bob, Provider::Rex).await;

    // An integration already syncing is skipped, the rest go on.
    let rex = env
        .store
        .integration_by_provider(bob, Provider::Rex)
        .await
        .unwrap()
        .unwrap();
    let lease = env.store.try_lock_sync(bob, rex.id).await.unwrap().unwrap();
    let report =
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(120))
            .await
            .unwrap();
    assert_eq!((report.busy, report.synced), (1, 2), "{report:?}");
    lease.release().await.unwrap();
}

#[tokio::test]
async fn a_run_cut_short_by_its_deadline_is_finished_by_the_next() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 8, 1_500);
    env.connect(user, Provider::FollowUpBoss).await;
    // Slow pages and a deadline that has passed: the run stops after its first page.
    env.sandbox
        .set_faults(
            sandbox_provider(Provider::FollowUpBoss),
            crm_sandbox::FaultConfig {
                latency_ms: 30,
                ..Default::default()
            },
        )
        .unwrap();
    let report = crmsync_app::schedule::run(env.ctx().await, Instant::now())
        .await
        .unwrap();
    assert_eq!((report.partial, report.synced), (1, 0), "{report:?}");
    let after_first = env.store.list_contacts(user).await.unwrap().len();
    assert!(after_first > 0 && after_first < 1_000, "{after_first}");

    env.sandbox
        .set_faults(sandbox_provider(Provider::FollowUpBoss), Default::default())
        .unwrap();
    let report =
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(120))
            .await
            .unwrap();
    assert_eq!(report.synced, 1, "{report:?}");
    let rows = env.store.list_contacts(user).await.unwrap();
    let reference = {
        // The same data pulled in one go by a fresh user.
        let other = Uuid::new_v4();
        env.connect(other, Provider::FollowUpBoss).await;
        let reply = env
            .as_user(
                other,
                Route::ContactsSync,
                "POST",
                "/api/integrations/followupboss/contacts/sync",
                "",
            )
            .await;
        assert_eq!(reply.status, http::StatusCode::OK);
        env.store.list_contacts(other).await.unwrap()
    };
    let phones = |rows: &[crmsync_store::StoredContact]| {
        rows.iter()
            .map(|r| (r.phone_number.clone(), r.name.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        phones(&rows),
        phones(&reference),
        "the resumed runs stored exactly what one run stores"
    );
}

/// A live integration (its CRM calls crmsync on every change) is polled as a safety net, once an hour:
/// a run soon after its last sync leaves it alone; a polled-only integration is pulled every run.
#[tokio::test]
async fn a_live_integration_is_polled_only_once_an_hour() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 1, 50);
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 2, 50);
    env.connect(user, Provider::FollowUpBoss).await;
    env.connect(user, Provider::Lofty).await;
    let run = async || {
        crmsync_app::schedule::run(env.ctx().await, Instant::now() + Duration::from_secs(120))
            .await
            .unwrap()
    };
    let fub = env
        .store
        .integration_by_provider(user, Provider::FollowUpBoss)
        .await
        .unwrap()
        .unwrap();
    env.store
        .set_live(
            user,
            fub.id,
            &crmsync_app::live::token_hash("t"),
            &json!({"ids": []}),
        )
        .await
        .unwrap();
    // Live but never synced: polled.
    let report = run().await;
    assert_eq!((report.synced, report.live), (2, 0), "{report:?}");
    // Synced a moment ago: left to its webhooks; the polled one is pulled again.
    let report = run().await;
    assert_eq!(
        (report.integrations, report.synced, report.live),
        (2, 1, 1),
        "{report:?}"
    );
}
