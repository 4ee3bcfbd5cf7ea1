//! The `integrations` and `sync-logs` functions as the dashboard calls them: paths, calls, the
//! answers' shapes, and the rows of `crm_integrations` as the table's owner sees them. Used by the route
//! tests of both functions, the event-file tests and the security tests.

use std::collections::BTreeSet;

use crmsync_domain::{Direction, LogStatus, Provider, Trigger};
use crmsync_store::NewSyncLog;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::env::{Env, Reply, Route, sandbox_provider};

pub const LOFTY_KEY: &str = "sandbox-lofty-key";
pub const FUB_KEY: &str = "sandbox-fub-key";

/// Every field of an integration on the wire.
pub const INTEGRATION_FIELDS: [&str; 15] = [
    "id",
    "provider",
    "authType",
    "status",
    "autoSync",
    "riskThreshold",
    "consecutiveFailures",
    "lastSyncAt",
    "tokenExpiresAt",
    "lastError",
    "createdAt",
    "phoneRegion",
    "lastFullSyncAt",
    "updates",
    "liveSince",
];

/// Every field of a sync log on the wire.
pub const LOG_FIELDS: [&str; 12] = [
    "id",
    "integrationId",
    "provider",
    "direction",
    "trigger",
    "status",
    "leadId",
    "action",
    "attempts",
    "metrics",
    "error",
    "createdAt",
];

pub fn item(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}")
}

pub fn logs_of(id: impl std::fmt::Display) -> String {
    format!("/api/integrations/{id}/logs")
}

pub async fn connect(env: &Env, user: Uuid, body: Value) -> Reply {
    env.json_as_user(
        user,
        Route::Integrations,
        "POST",
        "/api/integrations",
        &body,
    )
    .await
}

pub async fn update(env: &Env, user: Uuid, id: &str, body: Value) -> Reply {
    env.json_as_user(user, Route::Integrations, "PUT", &item(id), &body)
        .await
}

/// `user` sends raw bytes as the body.
pub async fn send_raw(env: &Env, user: Uuid, method: &str, path: &str, body: &[u8]) -> Reply {
    env.send(
        Route::Integrations,
        method,
        path,
        "",
        &[format!("alto_admin={}", Env::token(user))],
        &[("content-type", "application/json")],
        Some(body),
    )
    .await
}

pub async fn get(env: &Env, user: Uuid, path: &str) -> Reply {
    env.as_user(user, Route::Integrations, "GET", path, "")
        .await
}

pub async fn logs(env: &Env, user: Uuid, path: &str, query: &str) -> Reply {
    env.as_user(user, Route::SyncLogs, "GET", path, query).await
}

/// Requests the sandbox has served for `provider`.
pub fn crm_requests(env: &Env, provider: Provider) -> u64 {
    env.sandbox.stats()["providers"][sandbox_provider(provider).name()]["requests"]
        .as_u64()
        .expect("sandbox request count")
}

#[track_caller]
pub fn assert_status(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
}

/// Asserts an error answer: `status`, `{"error": code, "detail": <a sentence>}` and nothing else.
#[track_caller]
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    if let Some(problem) = error_problem(reply, status, code) {
        panic!("{problem}");
    }
}

/// What differs from [`assert_error`]'s expectation (`None`: nothing), for tests that try many inputs
/// and report every failure at once.
pub fn error_problem(reply: &Reply, status: StatusCode, code: &str) -> Option<String> {
    let shaped = reply.body["error"] == code
        && reply.body["detail"].as_str().is_some_and(|d| !d.is_empty())
        && reply.body.as_object().map(|o| o.len()) == Some(2);
    (reply.status != status || !shaped).then(|| {
        format!(
            "expected {status} {code:?}, got {}: {:?}",
            reply.status, reply.body
        )
    })
}

#[track_caller]
pub fn assert_integration_shape(v: &Value) {
    let keys: BTreeSet<&str> = v
        .as_object()
        .expect("an integration object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(INTEGRATION_FIELDS), "{v}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["createdAt"].as_str().unwrap()).is_ok(),
        "{v}"
    );
}

/// The rows of `crm_integrations` of `user`, as the table owner sees them.
pub async fn stored_rows(env: &Env, user: Uuid) -> Vec<(Uuid, String, bool, i32, Vec<u8>)> {
    let admin = crmsync_testkit::connect(&env.db.url).await;
    admin
        .query(
            "SELECT id, status, auto_sync, risk_threshold, credentials_ciphertext
               FROM crm_integrations WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// A sync log of `integration`, numbered `n` (a pull when `n` is even, else a push; lead `L-{n}`).
pub fn log(integration: Option<Uuid>, provider: Provider, n: usize) -> NewSyncLog {
    NewSyncLog {
        integration_id: integration,
        provider,
        direction: if n.is_multiple_of(2) {
            Direction::Pull
        } else {
            Direction::Push
        },
        trigger: Trigger::Schedule,
        status: LogStatus::Success,
        lead_id: Some(format!("L-{n}")),
        action: Some("created".into()),
        attempts: 1,
        metrics: Some(json!({ "n": n })),
        error: None,
    }
}

/// One user with one Lofty integration connected by API key (`riskThreshold` 40), and what to compare
/// with after calls that must change nothing.
pub struct OneIntegration {
    pub env: Env,
    pub user: Uuid,
    pub id: String,
    created: Reply,
    rows: Vec<(Uuid, String, bool, i32, Vec<u8>)>,
    calls: u64,
}

impl OneIntegration {
    pub async fn start() -> OneIntegration {
        let env = Env::start().await;
        let user = Uuid::new_v4();
        let created = connect(
            &env,
            user,
            json!({"provider": "lofty", "apiKey": LOFTY_KEY, "riskThreshold": 40}),
        )
        .await;
        assert_status(&created, StatusCode::CREATED);
        let id = created.body["id"].as_str().unwrap().to_owned();
        let rows = stored_rows(&env, user).await;
        let calls =
            crm_requests(&env, Provider::Lofty) + crm_requests(&env, Provider::FollowUpBoss);
        OneIntegration {
            env,
            user,
            id,
            created,
            rows,
            calls,
        }
    }

    /// Nothing changed since [`OneIntegration::start`], and no CRM was asked anything.
    pub async fn assert_unchanged(&self) {
        let env = &self.env;
        assert_eq!(stored_rows(env, self.user).await, self.rows);
        assert_eq!(
            crm_requests(env, Provider::Lofty) + crm_requests(env, Provider::FollowUpBoss),
            self.calls
        );
        let read = get(env, self.user, &item(&self.id)).await;
        assert_eq!(read.body, self.created.body);
    }
}

/// A short description of a request body, for a failure message.
pub fn describe(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() > 80 {
        let head: String = text.chars().take(60).collect();
        format!("{head}... ({} bytes)", body.len())
    } else {
        text.into_owned()
    }
}
