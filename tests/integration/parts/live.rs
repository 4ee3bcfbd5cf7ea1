//! Live updates (issue 17): a CRM's webhook delivery, as the sandbox sends it following the vendor's
//! documents, received and applied through `crmsync_app::live` against real Postgres: the records it
//! names reach `contacts`; a forged, replayed or unknown-token delivery changes nothing.

use crmsync_app::live;
use crmsync_crm::webhook::Change;
use crmsync_domain::Provider;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{FUB_KEY, assert_status, connect, stored_rows};
use crate::support::env::Env;
use crate::support::hooks::{deliveries, fub, receiver};

#[tokio::test]
async fn a_fub_delivery_brings_the_person_it_names_and_nothing_else_changes_anything() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let made = connect(
        &env,
        user,
        json!({"provider": "followupboss", "apiKey": FUB_KEY}),
    )
    .await;
    assert_status(&made, StatusCode::CREATED);
    let integration: Uuid = made.body["id"].as_str().unwrap().parse().unwrap();
    let token = "live-token-0123456789abcdef";
    assert!(
        env.store
            .set_live(
                user,
                integration,
                &live::token_hash(token),
                &json!({"ids": []})
            )
            .await
            .unwrap()
    );

    // The sandbox's Follow Up Boss calls a receiver of ours when people change.
    let receiver = receiver().await;
    let c = reqwest::Client::new();
    let api = env.sandbox.fub_api_base();
    for event in ["peopleCreated", "peopleUpdated", "peopleStageUpdated"] {
        let r = fub(&c, reqwest::Method::POST, format!("{api}/webhooks"))
            .json(&json!({"event": event, "url": format!("{}/hook", receiver.uri())}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    let r = fub(&c, reqwest::Method::POST, format!("{api}/people"))
        .json(&json!({"firstName": "Live", "lastName": "Person", "phones": [{"value": "(415) 555-0177"}]}))
        .send()
        .await
        .unwrap();
    let person: Value = r.json().await.unwrap();
    let id = person["id"].as_u64().unwrap();
    let got = deliveries(&receiver, 1).await;
    let delivery = got.first().expect("a delivery").clone();
    let ctx = env.ctx().await;
    let before = stored_rows(&env, user).await;

    // Unknown token, forged body: refused, nothing written.
    let err = live::receive(
        ctx,
        Provider::FollowUpBoss,
        "not-a-token",
        &delivery.headers,
        &delivery.body,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, crmsync_app::AppError::NotFound(_)), "{err:?}");
    let mut forged = delivery.body.clone();
    forged.extend_from_slice(b" ");
    let err = live::receive(
        ctx,
        Provider::FollowUpBoss,
        token,
        &delivery.headers,
        &forged,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, crmsync_app::AppError::Unauthorized(_)),
        "{err:?}"
    );
    // A token is good for its own CRM only.
    assert!(
        live::receive(
            ctx,
            Provider::Lofty,
            token,
            &delivery.headers,
            &delivery.body
        )
        .await
        .is_err()
    );
    assert_eq!(stored_rows(&env, user).await, before);
    assert!(env.store.list_contacts(user).await.unwrap().is_empty());

    // The real delivery: the person is read back and written.
    let received = live::receive(
        ctx,
        Provider::FollowUpBoss,
        token,
        &delivery.headers,
        &delivery.body,
    )
    .await
    .unwrap();
    let change = received.change.clone().expect("a change");
    assert_eq!(
        change,
        Change::Records {
            changed: vec![id.to_string()],
            deleted: vec![]
        }
    );
    let applied = live::apply(ctx, &received.integration, &change, None)
        .await
        .unwrap();
    assert_eq!(
        (applied.read, applied.upserted, applied.complete),
        (1, 1, true)
    );
    live::done(ctx, &received).await.unwrap();
    let contacts = env.store.list_contacts(user).await.unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].phone_number, "+14155550177");
    assert_eq!(contacts[0].name, "Live Person");
    assert_eq!(contacts[0].crm_deleted_at, None);

    // The same delivery again (a retry, or a replay): taken before, nothing to do.
    let again = live::receive(
        ctx,
        Provider::FollowUpBoss,
        token,
        &delivery.headers,
        &delivery.body,
    )
    .await
    .unwrap();
    assert_eq!(again.change, None);

    // Trashed in the CRM: told as a stage change, read back, the contact marked deleted.
    let r = fub(&c, reqwest::Method::PUT, format!("{api}/people/{id}"))
        .json(&json!({"stage": "Trash"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let got = deliveries(&receiver, 2).await;
    let staged = got.get(1).expect("a second delivery").clone();
    let received = live::receive(
        ctx,
        Provider::FollowUpBoss,
        token,
        &staged.headers,
        &staged.body,
    )
    .await
    .unwrap();
    let applied = live::apply(ctx, &received.integration, &received.change.unwrap(), None)
        .await
        .unwrap();
    assert_eq!(applied.deleted, 1);
    let contacts = env.store.list_contacts(user).await.unwrap();
    assert!(contacts[0].crm_deleted_at.is_some());
}
