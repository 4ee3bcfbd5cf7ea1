//! `deliveries` (`GET /api/integrations/{id}/deliveries`, `POST /api/integrations/{id}/deliveries/retry`):
//! an integration's push deliveries, newest first, with each status filter, paged by `?limit=&before=`
//! with none repeated or missed, never the lead's personal data; a CRM outage leaves its deliveries
//! waiting or given up, visible with their last error, and a retry once the CRM is back pushes each
//! lead exactly once; a delivery being pushed at that moment is left alone; retries are limited per
//! user; the contract's errors (400, 401, another user's integration as an unknown one, 404).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crmsync_domain::{LeadEvent, Provider, Trigger};
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{assert_error, assert_status, crm_requests, error_problem, get, item};
use crate::support::env::{Env, Reply, Route, sandbox_provider};
use crate::support::leads::{people_with, post_lead, scored_lead};
use crate::support::rows::assert_no_failures;

/// Every field of a delivery on the wire.
const DELIVERY_FIELDS: [&str; 11] = [
    "id",
    "eventId",
    "leadId",
    "event",
    "status",
    "attempts",
    "nextAttemptAt",
    "lastError",
    "externalId",
    "createdAt",
    "updatedAt",
];

/// The update time of the first version of every lead here.
const T0: &str = "2026-11-01T10:00:00Z";

fn deliveries_of(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}/deliveries")
}

fn retry_of(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}/deliveries/retry")
}

// The handler's future is boxed: nested in the tests' own, its layout is deeper than rustc's default
// query limit.
async fn list(env: &Env, user: Uuid, id: impl std::fmt::Display, query: &str) -> Reply {
    let path = deliveries_of(id);
    Box::pin(env.as_user(user, Route::Deliveries, "GET", &path, query)).await
}

async fn retry(env: &Env, user: Uuid, id: impl std::fmt::Display) -> Reply {
    let path = retry_of(id);
    Box::pin(env.as_user(user, Route::Deliveries, "POST", &path, "")).await
}

/// Records a lead event in the outbox as the webhook does, without pushing it (as when the webhook's
/// Lambda stopped right after recording): its deliveries wait, due now.
async fn record(env: &Env, body: &Value) -> Vec<Uuid> {
    let event = LeadEvent::from_json(body).expect("a lead event");
    crmsync_app::push::record(env.ctx().await, event, Trigger::Webhook)
        .await
        .expect("recorded")
        .outbox
        .pending
}

async fn integration_id(env: &Env, user: Uuid, provider: Provider) -> Uuid {
    env.store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// The delivery rows of `user` as the table owner sees them: (id, status, attempts, next attempt,
/// last change, last error).
type DeliveryRow = (
    Uuid,
    String,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
);

async fn delivery_rows(env: &Env, user: Uuid) -> Vec<DeliveryRow> {
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .query(
            "SELECT id, status, attempts, next_attempt_at, updated_at, last_error
               FROM push_deliveries WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// The ids of an integration's deliveries (of one status) in the order the API must give them.
async fn expected_order(env: &Env, integration: Uuid, status: Option<&str>) -> Vec<String> {
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .query(
            "SELECT id FROM push_deliveries
              WHERE integration_id = $1 AND ($2::text IS NULL OR status = $2)
              ORDER BY created_at DESC, id DESC",
            &[&integration, &status],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Uuid>(0).to_string())
        .collect()
}

/// Checks one delivery on the wire: its fields, its times, and `nextAttemptAt` only while pending.
#[track_caller]
fn assert_delivery_shape(d: &Value) {
    let keys: BTreeSet<&str> = d
        .as_object()
        .expect("a delivery object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(DELIVERY_FIELDS), "{d}");
    for t in ["createdAt", "updatedAt"] {
        assert!(
            DateTime::parse_from_rfc3339(d[t].as_str().unwrap_or_default()).is_ok(),
            "{t}: {d}"
        );
    }
    assert!(Uuid::try_parse(d["eventId"].as_str().unwrap_or_default()).is_ok());
    assert!(["lead.created", "lead.updated"].contains(&d["event"].as_str().unwrap()));
    if d["status"] == "pending" {
        assert!(
            DateTime::parse_from_rfc3339(d["nextAttemptAt"].as_str().unwrap_or_default()).is_ok(),
            "a pending delivery says when it is tried next: {d}"
        );
    } else {
        assert!(d["nextAttemptAt"].is_null(), "{d}");
    }
}

/// Reads every page of an integration's deliveries with `query` and `limit`, checking each page and
/// each delivery; returns the deliveries in order and the text of every page. `between_pages` runs
/// after the first page.
async fn read_all_pages(
    env: &Env,
    user: Uuid,
    id: Uuid,
    query: &str,
    limit: u32,
    between_pages: impl AsyncFnOnce(),
) -> (Vec<Value>, String) {
    let mut got = Vec::new();
    let mut text = String::new();
    let mut before: Option<String> = None;
    let mut hook = Some(between_pages);
    loop {
        let mut q = format!("limit={limit}");
        if !query.is_empty() {
            q = format!("{query}&{q}");
        }
        if let Some(c) = &before {
            q.push_str(&format!("&before={c}"));
        }
        let page = list(env, user, id, &q).await;
        assert_status(&page, StatusCode::OK);
        text.push_str(&page.text());
        let rows = page.body["deliveries"]
            .as_array()
            .expect("deliveries")
            .clone();
        assert!(rows.len() <= limit as usize);
        rows.iter().for_each(assert_delivery_shape);
        got.extend(rows.iter().cloned());
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
                return (got, text);
            }
        }
    }
}

fn ids(deliveries: &[Value]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A user with a Lofty integration holding deliveries of every status but `failed`: 4 leads pushed
/// (delivered), 3 above the risk threshold (skipped), 60 recorded and not yet pushed (pending, 20 of
/// them sharing one instant so that ties are broken by id) and a new version of a pushed lead
/// (pending, `lead.updated`). Another user has a Lofty integration with 3 pending deliveries.
struct Listed {
    env: Env,
    user: Uuid,
    id: Uuid,
    other: Uuid,
    other_id: Uuid,
}

async fn listed() -> Listed {
    let env = Env::start().await;
    env.lofty_production_tier();
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    env.connect(user, Provider::Lofty).await;
    env.connect(other, Provider::Lofty).await;
    let id = integration_id(&env, user, Provider::Lofty).await;
    let other_id = integration_id(&env, other, Provider::Lofty).await;

    for n in 0..4 {
        let body = scored_lead(
            user,
            &format!("D-{n}"),
            &format!("+14155570{n:03}"),
            Some(5),
            "Rowe",
            T0,
        );
        let reply = post_lead(&env, &env.app, &body).await;
        assert_eq!(reply.body["pushed"], 1, "{:?}", reply.body);
    }
    for n in 0..3 {
        let body = scored_lead(
            user,
            &format!("S-{n}"),
            &format!("+14155571{n:03}"),
            Some(90),
            "Risky",
            T0,
        );
        let reply = post_lead(&env, &env.app, &body).await;
        assert_eq!(reply.body["skipped"], 1, "{:?}", reply.body);
    }
    for n in 0..60 {
        let body = scored_lead(
            user,
            &format!("P-{n}"),
            &format!("+14155572{n:03}"),
            Some(5),
            "Waits",
            T0,
        );
        assert_eq!(record(&env, &body).await.len(), 1);
    }
    let mut updated = scored_lead(
        user,
        "D-0",
        "+14155570000",
        Some(5),
        "Rowe-Lee",
        "2026-11-02T10:00:00Z",
    );
    updated["event"] = json!("lead.updated");
    assert_eq!(record(&env, &updated).await.len(), 1);
    // A fixture of ties: deliveries recorded in one transaction share their `created_at`.
    let admin = crmsync_testkit::connect(&env.db.url).await;
    let tied = admin
        .execute(
            "UPDATE push_deliveries SET created_at = now() - interval '1 hour'
              WHERE id IN (SELECT d.id FROM push_deliveries d JOIN lead_events e ON e.id = d.event_id
                            WHERE d.integration_id = $1 AND e.lead_id LIKE 'P-%'
                            ORDER BY d.created_at LIMIT 20)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(tied, 20);
    for n in 0..3 {
        let body = scored_lead(
            other,
            &format!("O-{n}"),
            &format!("+14155573{n:03}"),
            Some(5),
            "Other",
            T0,
        );
        assert_eq!(record(&env, &body).await.len(), 1);
    }
    Listed {
        env,
        user,
        id,
        other,
        other_id,
    }
}

/// 68 deliveries, 7 a page, newest first, none repeated or missed although a lead arrives between
/// pages; each status filter gives exactly that status's deliveries in the same order; 50 by default;
/// the fields of each status; nothing of the leads beyond their ids.
#[tokio::test]
pub(crate) async fn deliveries_page_newest_first_with_each_status_filter() {
    let Listed { env, user, id, .. } = listed().await;
    let want = expected_order(&env, id, None).await;
    assert_eq!(want.len(), 68);
    let (got, mut text) = read_all_pages(&env, user, id, "", 7, async || {
        let late = scored_lead(user, "P-late", "+14155572999", Some(5), "Waits", T0);
        assert_eq!(record(&env, &late).await.len(), 1);
    })
    .await;
    assert_eq!(ids(&got), want);

    let first = list(&env, user, id, "limit=1").await;
    assert_eq!(first.body["deliveries"][0]["leadId"], "P-late");
    let default_page = list(&env, user, id, "").await;
    assert_status(&default_page, StatusCode::OK);
    assert_eq!(
        default_page.body["deliveries"].as_array().unwrap().len(),
        50
    );
    assert!(default_page.body["nextBefore"].is_string());

    for (status, count) in [
        ("pending", 62),
        ("delivered", 4),
        ("skipped", 3),
        ("failed", 0),
    ] {
        let want = expected_order(&env, id, Some(status)).await;
        assert_eq!(want.len(), count, "{status}");
        let (got, page_text) =
            read_all_pages(&env, user, id, &format!("status={status}"), 5, async || {}).await;
        assert_eq!(ids(&got), want, "{status}");
        text.push_str(&page_text);
        for d in &got {
            assert_eq!(d["status"], status, "{d}");
            match status {
                "delivered" => {
                    assert!(d["leadId"].as_str().unwrap().starts_with("D-"), "{d}");
                    assert_eq!(d["event"], "lead.created");
                    assert_eq!(d["attempts"], 1);
                    assert!(
                        d["externalId"].as_str().is_some_and(|e| !e.is_empty()),
                        "{d}"
                    );
                    assert!(d["lastError"].is_null(), "{d}");
                }
                "skipped" => {
                    assert!(d["leadId"].as_str().unwrap().starts_with("S-"), "{d}");
                    assert_eq!(d["attempts"], 0);
                    assert!(d["externalId"].is_null() && d["lastError"].is_null(), "{d}");
                }
                "pending" => {
                    assert_eq!(d["attempts"], 0);
                    assert!(d["externalId"].is_null() && d["lastError"].is_null(), "{d}");
                }
                _ => unreachable!("no delivery has failed"),
            }
        }
        if status == "pending" {
            let versions: Vec<&Value> = got.iter().filter(|d| d["leadId"] == "D-0").collect();
            assert_eq!(versions.len(), 1);
            assert_eq!(versions[0]["event"], "lead.updated");
        }
    }
    let failed = list(&env, user, id, "status=failed").await;
    assert_eq!(failed.body, json!({"deliveries": [], "nextBefore": null}));

    // The leads' personal data stays in the outbox.
    for personal in [
        "+1415557",
        "Dana",
        "Rowe",
        "Waits",
        "Risky",
        "@example.com",
        "Echo Safe",
        "call back",
        "buyer",
    ] {
        assert!(
            !text.contains(personal),
            "`{personal}` is in an answer of the deliveries"
        );
    }
}

/// Another user's integration, an unknown one and a disconnected one answer both routes with the
/// same 404 as the `integrations` routes, and change nothing; a user sees only their own deliveries.
#[tokio::test]
async fn another_users_or_an_unknown_integration_is_404_and_changes_nothing() {
    let Listed {
        env,
        user,
        id,
        other,
        other_id,
    } = listed().await;
    let (mine, theirs) = (
        delivery_rows(&env, user).await,
        delivery_rows(&env, other).await,
    );
    let calls = crm_requests(&env, Provider::Lofty);
    let mut failures = Vec::new();
    for target in [id, Uuid::new_v4()] {
        let integrations_404 = get(&env, other, &item(target)).await;
        assert_error(&integrations_404, StatusCode::NOT_FOUND, "not_found");
        for reply in [
            list(&env, other, target, "").await,
            list(&env, other, target, "status=pending&limit=5").await,
            retry(&env, other, target).await,
        ] {
            if let Some(problem) = error_problem(&reply, StatusCode::NOT_FOUND, "not_found") {
                failures.push(format!("{target}: {problem}"));
            } else if reply.body != integrations_404.body {
                failures.push(format!(
                    "{target}: {:?}, not the integrations route's {:?}",
                    reply.body, integrations_404.body
                ));
            }
        }
    }
    assert_no_failures("another user's or an unknown integration", &failures);
    assert_eq!(delivery_rows(&env, user).await, mine);
    assert_eq!(delivery_rows(&env, other).await, theirs);
    assert_eq!(crm_requests(&env, Provider::Lofty), calls);

    // Each sees their own.
    let own = list(&env, other, other_id, "").await;
    assert_status(&own, StatusCode::OK);
    let leads: BTreeSet<&str> = own.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["leadId"].as_str().unwrap())
        .collect();
    assert_eq!(leads, BTreeSet::from(["O-0", "O-1", "O-2"]));

    // A disconnected integration's deliveries go with it.
    let deleted = env
        .as_user(other, Route::Integrations, "DELETE", &item(other_id), "")
        .await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    assert_error(
        &list(&env, other, other_id, "").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// A user with a Lofty integration and two deliveries waiting.
async fn small() -> (Env, Uuid, Uuid) {
    let env = Env::start().await;
    env.lofty_production_tier();
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let id = integration_id(&env, user, Provider::Lofty).await;
    for n in 0..2 {
        let body = scored_lead(
            user,
            &format!("W-{n}"),
            &format!("+14155574{n:03}"),
            Some(5),
            "Waits",
            T0,
        );
        assert_eq!(record(&env, &body).await.len(), 1);
    }
    (env, user, id)
}

#[tokio::test]
async fn bad_statuses_limits_cursors_and_ids_are_400_and_change_nothing() {
    let (env, user, id) = small().await;
    let before = delivery_rows(&env, user).await;
    let calls = crm_requests(&env, Provider::Lofty);
    let mut failures = Vec::new();
    for query in [
        "status=done",
        "status=PENDING",
        "status=pending,failed",
        "status=%00",
        "limit=0",
        "limit=201",
        "limit=ten",
        "limit=-1",
        "before=garbage",
        "before=MTIz",
        "status=pending&before=not-a-cursor",
    ] {
        let reply = list(&env, user, id, query).await;
        if let Some(problem) = error_problem(&reply, StatusCode::BAD_REQUEST, "bad_request") {
            failures.push(format!("?{query}: {problem}"));
        }
    }
    for bad in ["lofty", "123", "not-a-uuid", "%27%20OR%201=1"] {
        for reply in [
            list(&env, user, bad, "").await,
            retry(&env, user, bad).await,
        ] {
            if let Some(problem) = error_problem(&reply, StatusCode::BAD_REQUEST, "bad_request") {
                failures.push(format!("id {bad}: {problem}"));
            }
        }
    }
    // Another method or path under the function is no route.
    for (method, path) in [
        ("POST", deliveries_of(id)),
        ("GET", retry_of(id)),
        ("DELETE", deliveries_of(id)),
        ("POST", format!("{}/now", retry_of(id))),
    ] {
        let reply = env
            .as_user(user, Route::Deliveries, method, &path, "")
            .await;
        if let Some(problem) = error_problem(&reply, StatusCode::NOT_FOUND, "not_found") {
            failures.push(format!("{method} {path}: {problem}"));
        }
    }
    assert_no_failures("bad input", &failures);
    assert_eq!(delivery_rows(&env, user).await, before);
    assert_eq!(crm_requests(&env, Provider::Lofty), calls);

    // The same queries, well formed, answer.
    let ok = list(&env, user, id, "status=pending&limit=200").await;
    assert_status(&ok, StatusCode::OK);
    assert_eq!(ok.body["deliveries"].as_array().unwrap().len(), 2);
}

/// No caller (or a caller with a token that is not ours), no deliveries and no retry. (Every kind of
/// forged JWT: `qualities/security.rs`.)
#[tokio::test]
async fn deliveries_without_a_caller_are_401() {
    let (env, user, id) = small().await;
    let before = delivery_rows(&env, user).await;
    for (method, path) in [("GET", deliveries_of(id)), ("POST", retry_of(id))] {
        let anonymous = env
            .call(Route::Deliveries, method, &path, "", &[], &[])
            .await;
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
        let garbage = env
            .call(
                Route::Deliveries,
                method,
                &path,
                "",
                &[],
                &[("authorization", "Bearer not.a.jwt")],
            )
            .await;
        assert_error(&garbage, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(delivery_rows(&env, user).await, before);
}

/// Follow Up Boss is down (every request a 5xx). A lead's delivery fails round after round until it
/// is given up (`failed`, after 40 attempts), which also pauses the integration; two more leads after
/// the user resumes it wait for their next try. All of it is visible, with the last error. A retry
/// while paused makes the given-up delivery pending and pushes nothing. Once the CRM is back, one
/// retry pushes the three: each lead is in the CRM exactly once and every delivery is `delivered`;
/// another retry finds nothing to do.
#[tokio::test]
pub(crate) async fn a_crm_outage_leaves_deliveries_visible_and_a_retry_pushes_them_once() {
    let env = Env::start().await;
    env.lofty_production_tier();
    let user = Uuid::new_v4();
    env.connect(user, Provider::FollowUpBoss).await;
    let id = integration_id(&env, user, Provider::FollowUpBoss).await;
    let fub = sandbox_provider(Provider::FollowUpBoss);
    let down = crm_sandbox::FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    env.sandbox.set_faults(fub, down).unwrap();
    let phones = ["+14155575001", "+14155575002", "+14155575003"];
    let lead = |n: usize| scored_lead(user, &format!("A-{n}"), phones[n], Some(3), "Outage", T0);

    // Lead A-0: the webhook's round fails; it waits for its next try, with the error.
    let reply = post_lead(&env, &env.app, &lead(0)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["failed"], 1, "{:?}", reply.body);
    let page = list(&env, user, id, "").await;
    assert_status(&page, StatusCode::OK);
    let waiting = &page.body["deliveries"][0];
    assert_delivery_shape(waiting);
    assert_eq!(waiting["leadId"], "A-0");
    assert_eq!(waiting["status"], "pending");
    assert_eq!(waiting["attempts"], 4);
    let next: DateTime<Utc> = waiting["nextAttemptAt"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() + chrono::Duration::minutes(10), "{next}");
    let error = waiting["lastError"].as_str().unwrap_or_default().to_owned();
    assert!(error.starts_with("Follow Up Boss"), "{error}");

    // A retry while the CRM is down: made due, tried, failed again.
    let again = retry(&env, user, id).await;
    assert_status(&again, StatusCode::OK);
    assert_eq!(
        again.body,
        json!({"retried": 1, "pushed": 0, "failed": 1, "pending": 0})
    );
    // Eight more rounds (the use case behind the route: the route allows 6 calls a minute): the
    // 40th attempt gives the delivery up, and the 10th failure in a row pauses the integration.
    for round in 3..=10 {
        let r = crmsync_app::deliveries::retry(
            env.ctx().await,
            user,
            id,
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!((r.retried, r.failed), (1, 1), "round {round}: {r:?}");
    }
    let given_up = list(&env, user, id, "status=failed").await;
    let given_up = given_up.body["deliveries"].as_array().unwrap().clone();
    assert_eq!(given_up.len(), 1);
    assert_delivery_shape(&given_up[0]);
    assert_eq!(given_up[0]["leadId"], "A-0");
    assert_eq!(given_up[0]["attempts"], 40);
    assert!(given_up[0]["nextAttemptAt"].is_null());
    assert!(
        given_up[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.starts_with("Follow Up Boss"))
    );
    let integration = get(&env, user, &item(id)).await;
    assert_eq!(integration.body["status"], "paused");

    // Paused: a retry makes the given-up delivery pending again but pushes nothing.
    let requests = crm_requests(&env, Provider::FollowUpBoss);
    let paused = retry(&env, user, id).await;
    assert_eq!(
        paused.body,
        json!({"retried": 1, "pushed": 0, "failed": 0, "pending": 0})
    );
    assert_eq!(crm_requests(&env, Provider::FollowUpBoss), requests);
    let pending = list(&env, user, id, "status=pending").await;
    assert_eq!(pending.body["deliveries"][0]["leadId"], "A-0");
    assert!(pending.body["deliveries"][0]["lastError"].is_string());

    // The user resumes it; two more leads fail while the CRM is still down.
    let resumed = env
        .json_as_user(
            user,
            Route::Integrations,
            "PUT",
            &item(id),
            &json!({"status": "active"}),
        )
        .await;
    assert_status(&resumed, StatusCode::OK);
    for n in [1, 2] {
        let reply = post_lead(&env, &env.app, &lead(n)).await;
        assert_eq!(reply.body["failed"], 1, "{:?}", reply.body);
    }
    let (all, _) = read_all_pages(&env, user, id, "", 2, async || {}).await;
    let leads: Vec<&str> = all.iter().map(|d| d["leadId"].as_str().unwrap()).collect();
    assert_eq!(leads, ["A-2", "A-1", "A-0"]);
    for d in &all {
        assert_eq!(d["status"], "pending", "{d}");
        assert!(
            d["lastError"]
                .as_str()
                .is_some_and(|e| e.starts_with("Follow Up Boss")),
            "{d}"
        );
    }

    // The CRM is back (and holds none of the leads): one retry pushes all three, each once.
    env.sandbox.set_faults(fub, Default::default()).unwrap();
    for phone in phones {
        assert!(
            people_with(&env, Provider::FollowUpBoss, phone)
                .await
                .is_empty()
        );
    }
    let pushed = retry(&env, user, id).await;
    assert_status(&pushed, StatusCode::OK);
    assert_eq!(
        pushed.body,
        json!({"retried": 2, "pushed": 3, "failed": 0, "pending": 0})
    );
    let (all, _) = read_all_pages(&env, user, id, "", 50, async || {}).await;
    assert_eq!(all.len(), 3);
    for (n, phone) in phones.iter().enumerate() {
        let people = people_with(&env, Provider::FollowUpBoss, phone).await;
        assert_eq!(people.len(), 1, "A-{n} is in the CRM exactly once");
        let d = all
            .iter()
            .find(|d| d["leadId"] == format!("A-{n}"))
            .unwrap();
        assert_eq!(d["status"], "delivered", "{d}");
        assert!(
            d["lastError"].is_null() && d["nextAttemptAt"].is_null(),
            "{d}"
        );
        let person = match &people[0]["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(d["externalId"], person.as_str(), "{d}");
    }
    for status in ["pending", "failed"] {
        let none = list(&env, user, id, &format!("status={status}")).await;
        assert_eq!(none.body, json!({"deliveries": [], "nextBefore": null}));
    }

    // Nothing left: a second retry pushes nothing, and nothing is doubled.
    let idle = retry(&env, user, id).await;
    assert_eq!(
        idle.body,
        json!({"retried": 0, "pushed": 0, "failed": 0, "pending": 0})
    );
    assert_eq!(env.sandbox_records(Provider::FollowUpBoss).await.len(), 3);
}

/// A delivery a processor has claimed and is pushing is not touched by a retry (neither made due nor
/// pushed a second time); the other waiting delivery is pushed.
#[tokio::test]
async fn a_delivery_being_pushed_is_left_alone_by_a_retry() {
    let env = Env::start().await;
    env.lofty_production_tier();
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let id = integration_id(&env, user, Provider::Lofty).await;
    let phones = ["+14155576001", "+14155576002"];
    let mut deliveries = Vec::new();
    for (n, phone) in phones.iter().enumerate() {
        let body = scored_lead(user, &format!("C-{n}"), phone, Some(5), "Claimed", T0);
        deliveries.extend(record(&env, &body).await);
    }
    // Another Lambda is pushing C-0 right now.
    let claimed = env
        .store
        .claim_delivery(user, deliveries[0], Duration::from_secs(120))
        .await
        .unwrap()
        .expect("claimed");
    let row_of = async |d: Uuid| {
        delivery_rows(&env, user)
            .await
            .into_iter()
            .find(|r| r.0 == d)
            .unwrap()
    };
    let claimed_row = row_of(claimed.delivery_id).await;

    let reply = retry(&env, user, id).await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"retried": 0, "pushed": 1, "failed": 0, "pending": 0})
    );
    assert_eq!(row_of(claimed.delivery_id).await, claimed_row);
    assert!(
        people_with(&env, Provider::Lofty, phones[0])
            .await
            .is_empty(),
        "C-0 is its claimant's to push"
    );
    assert_eq!(people_with(&env, Provider::Lofty, phones[1]).await.len(), 1);
    let page = list(&env, user, id, "status=pending").await;
    let shown = &page.body["deliveries"];
    assert_eq!(shown.as_array().unwrap().len(), 1);
    assert_eq!(shown[0]["leadId"], "C-0");
    // Still pending (its claimant records it), and no second claim is possible while it is held.
    assert!(shown[0]["nextAttemptAt"].as_str().is_some());
    assert!(
        env.store
            .claim_delivery(user, deliveries[0], Duration::from_secs(120))
            .await
            .unwrap()
            .is_none(),
        "held by its claimant"
    );
}

/// Retries: 6 a minute per user; the 7th gets 429 with `Retry-After` and changes nothing. Reading is
/// not limited.
#[tokio::test]
async fn retries_are_limited_to_6_calls_a_minute_per_user() {
    let (env, user, id) = small().await;
    for i in 0..6 {
        let ok = retry(&env, user, id).await;
        assert_eq!(ok.status, StatusCode::OK, "call {i}: {:?}", ok.body);
    }
    let before = delivery_rows(&env, user).await;
    let limited = retry(&env, user, id).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = limited.headers[http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "one call every 10 s: {wait}");
    assert_eq!(delivery_rows(&env, user).await, before);
    for _ in 0..10 {
        assert_status(&list(&env, user, id, "").await, StatusCode::OK);
    }
}
