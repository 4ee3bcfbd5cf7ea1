//! `integration-sync` (`POST /api/integrations/{id}/sync`): runs one integration now, a pull and then
//! a push of its waiting leads, with the metrics of both; an id that is not a UUID is 400. (Another
//! user's integration: `qualities/security.rs`; ten at once: `qualities/races.rs`.)

use crmsync_domain::Provider;
use http::StatusCode;
use uuid::Uuid;

use crate::support::env::{Env, Route, sandbox_provider};
use crate::support::leads::{people_with, post_lead, scored_lead};

#[tokio::test]
pub(crate) async fn an_integration_sync_pulls_then_pushes_the_waiting_leads() {
    let env = Env::start().await;
    let alice = Uuid::new_v4();
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
    let reply = post_lead(
        &env,
        &env.app,
        &scored_lead(
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
    // The failed delivery waits in backoff; "sync now" makes it due at once.
    let id = env
        .store
        .integration_by_provider(alice, Provider::FollowUpBoss)
        .await
        .unwrap()
        .unwrap()
        .id;
    let path = format!("/api/integrations/{id}/sync");
    let synced = env
        .as_user(alice, Route::IntegrationSync, "POST", &path, "")
        .await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    assert_eq!(synced.body["totalFetched"], 120);
    assert!(synced.body["upserted"].as_u64().unwrap() > 0);
    assert_eq!(synced.body["pushed"], 1, "{:?}", synced.body);
    assert_eq!(synced.body["failed"], 0);
    assert_eq!(
        people_with(&env, Provider::FollowUpBoss, "+14155550190")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_integration_sync_of_an_id_that_is_not_a_uuid_is_400() {
    let env = Env::start().await;
    let alice = Uuid::new_v4();
    env.connect(alice, Provider::FollowUpBoss).await;
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
}
