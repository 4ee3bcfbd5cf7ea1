//! The `integrations` and `sync-logs` functions: a user's integrations (list, connect by API key, read,
//! update, disconnect) and their sync logs, newest first, paged by an opaque keyset cursor.
//!
//! Every call is the caller's: the store runs it under Row Level Security as the JWT's user, so another
//! user's integration id answers exactly as an unknown one does (404). Credentials are never read here
//! except to be replaced, and never written to a response.

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_adapters::ApiError;
use crmsync_adapters::http::{Response, json, no_content, parse_json};
use crmsync_adapters::store::{
    IntegrationPatch, IntegrationView, LogCursor, SyncLogRecord, UserStatus,
};
use crmsync_domain::Provider;
use http::{HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crmsync_adapters::auth::Caller;

use crate::app::{App, limits};
use crate::credentials;
use crate::web;

/// `?limit=` of the logs: default and maximum.
const LOGS_DEFAULT_LIMIT: u32 = 50;
const LOGS_MAX_LIMIT: u32 = 200;

/// An integration on the wire (camelCase; times RFC 3339 in UTC, or null).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IntegrationJson<'a> {
    id: Uuid,
    provider: Provider,
    auth_type: &'static str,
    status: &'a str,
    auto_sync: bool,
    risk_threshold: i32,
    consecutive_failures: i32,
    last_sync_at: Option<String>,
    token_expires_at: Option<String>,
    last_error: Option<&'a str>,
    created_at: String,
}

impl<'a> From<&'a IntegrationView> for IntegrationJson<'a> {
    fn from(v: &'a IntegrationView) -> Self {
        IntegrationJson {
            id: v.id,
            provider: v.provider,
            auth_type: v.auth_type.as_str(),
            status: &v.status,
            auto_sync: v.auto_sync,
            risk_threshold: v.risk_threshold,
            consecutive_failures: v.consecutive_failures,
            last_sync_at: v.last_sync_at.map(secs),
            token_expires_at: v.token_expires_at.map(secs),
            last_error: v.last_error.as_deref(),
            created_at: secs(v.created_at),
        }
    }
}

/// A sync log on the wire.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogJson<'a> {
    id: Uuid,
    integration_id: Option<Uuid>,
    provider: Provider,
    direction: &'a str,
    trigger: &'a str,
    status: &'a str,
    lead_id: Option<&'a str>,
    action: Option<&'a str>,
    attempts: i32,
    metrics: Option<&'a serde_json::Value>,
    error: Option<&'a str>,
    created_at: String,
}

impl<'a> From<&'a SyncLogRecord> for LogJson<'a> {
    fn from(l: &'a SyncLogRecord) -> Self {
        LogJson {
            id: l.id,
            integration_id: l.integration_id,
            provider: l.provider,
            direction: &l.direction,
            trigger: &l.trigger,
            status: &l.status,
            lead_id: l.lead_id.as_deref(),
            action: l.action.as_deref(),
            attempts: l.attempts,
            metrics: l.metrics.as_ref(),
            error: l.error.as_deref(),
            // Several log rows can share a second; milliseconds keep their order visible.
            created_at: l.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `POST /api/integrations`. No `Debug`: it holds the API key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectBody {
    provider: String,
    api_key: String,
    auto_sync: Option<bool>,
    risk_threshold: Option<i64>,
}

/// `PUT /api/integrations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateBody {
    auto_sync: Option<bool>,
    risk_threshold: Option<i64>,
    status: Option<String>,
}

fn risk_threshold(raw: Option<i64>) -> Result<Option<i32>, ApiError> {
    match raw {
        None => Ok(None),
        Some(n) if (0..=100).contains(&n) => Ok(Some(n as i32)),
        Some(_) => Err(ApiError::bad_request(
            "`riskThreshold` must be a whole number from 0 to 100.",
        )),
    }
}

fn user_status(raw: Option<&str>) -> Result<Option<UserStatus>, ApiError> {
    match raw {
        None => Ok(None),
        Some("active") => Ok(Some(UserStatus::Active)),
        Some("paused") => Ok(Some(UserStatus::Paused)),
        Some(_) => Err(ApiError::bad_request(
            "`status` must be \"active\" or \"paused\".",
        )),
    }
}

/// The path segments after `integrations` in the raw path.
fn tail(req: &lambda_http::Request) -> Vec<String> {
    let path = req.uri().path();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    if segments.by_ref().any(|s| s == "integrations") {
        segments.map(str::to_owned).collect()
    } else {
        Vec::new()
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not an integration id (a UUID).",
            raw.chars().take(60).collect::<String>()
        ))
    })
}

fn no_route(req: &lambda_http::Request) -> ApiError {
    ApiError::not_found(format!(
        "There is no route {} {}.",
        req.method(),
        req.uri().path().chars().take(100).collect::<String>()
    ))
}

fn not_found() -> ApiError {
    ApiError::not_found("No such integration.")
}

fn one(status: StatusCode, view: &IntegrationView) -> Response {
    json(status, &IntegrationJson::from(view))
}

/// `GET/POST /api/integrations`, `GET/PUT/DELETE /api/integrations/{id}`.
pub async fn handle(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let user = caller.user_id;
    let tail = tail(req);
    if tail.len() > 1 {
        return Err(no_route(req));
    }
    let id = match web::path_param(req, "id", "integrations") {
        Some(raw) => Some(parse_id(&raw)?),
        None => None,
    };
    let method = req.method();
    match id {
        None if method == Method::GET => list(app, user).await,
        None if method == Method::POST => connect(app, &caller, req.body().as_ref()).await,
        Some(id) if method == Method::GET => read(app, user, id).await,
        Some(id) if method == Method::PUT => update(app, user, id, req.body().as_ref()).await,
        Some(id) if method == Method::DELETE => disconnect(app, user, id).await,
        _ => Err(no_route(req)),
    }
}

async fn list(app: &App, user: Uuid) -> Result<Response, ApiError> {
    let views = app.ready().await?.store.integration_views(user).await?;
    let integrations: Vec<IntegrationJson<'_>> = views.iter().map(IntegrationJson::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "integrations": integrations }),
    ))
}

async fn connect(app: &App, caller: &Caller, body: &[u8]) -> Result<Response, ApiError> {
    let user = caller.user_id;
    // Everything is checked before the CRM is called, so a bad request stores nothing.
    let body: ConnectBody = parse_json(body)?;
    let provider = body
        .provider
        .parse::<Provider>()
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    let patch = IntegrationPatch {
        auto_sync: body.auto_sync,
        risk_threshold: risk_threshold(body.risk_threshold)?,
        status: None,
    };
    let store = &app.ready().await?.store;
    let existing = store.integration_by_provider(user, provider).await?;
    // Each connect costs a CRM call with a caller-chosen key: limited, so keys cannot be guessed.
    app.limit("integrations-connect", caller, limits::CONNECT)
        .await?;
    let record = credentials::connect_api_key(app, user, provider, &body.api_key).await?;
    let view = if patch.is_empty() {
        store.integration_view(user, record.id).await?
    } else {
        store.update_integration(user, record.id, &patch).await?
    }
    // Disconnected by a concurrent request in between.
    .ok_or_else(not_found)?;
    if existing.is_some_and(|e| e.id == view.id) {
        return Ok(one(StatusCode::OK, &view));
    }
    let mut resp = one(StatusCode::CREATED, &view);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/integrations/{}", view.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

async fn read(app: &App, user: Uuid, id: Uuid) -> Result<Response, ApiError> {
    let view = app
        .ready()
        .await?
        .store
        .integration_view(user, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(one(StatusCode::OK, &view))
}

async fn update(app: &App, user: Uuid, id: Uuid, body: &[u8]) -> Result<Response, ApiError> {
    let body: UpdateBody = parse_json(body)?;
    let patch = IntegrationPatch {
        auto_sync: body.auto_sync,
        risk_threshold: risk_threshold(body.risk_threshold)?,
        status: user_status(body.status.as_deref())?,
    };
    if patch.is_empty() {
        return Err(ApiError::bad_request(
            "Nothing to change: give at least one of `autoSync`, `riskThreshold`, `status`.",
        ));
    }
    let view = app
        .ready()
        .await?
        .store
        .update_integration(user, id, &patch)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(%user, integration = %id, status = view.status, "integration updated");
    Ok(one(StatusCode::OK, &view))
}

async fn disconnect(app: &App, user: Uuid, id: Uuid) -> Result<Response, ApiError> {
    if !app
        .ready()
        .await?
        .store
        .delete_integration(user, id)
        .await?
    {
        return Err(not_found());
    }
    tracing::info!(%user, integration = %id, "integration disconnected");
    Ok(no_content())
}

/// Which logs a `sync-logs` request asks for: all the caller's (`/api/integrations/logs`), or one
/// integration's (`/api/integrations/{id}/logs`).
fn log_scope(req: &lambda_http::Request) -> Result<Option<Uuid>, ApiError> {
    let tail = tail(req);
    match web::path_param(req, "id", "integrations") {
        // `/api/integrations/logs` (a literal route, so API Gateway gives no `id`).
        Some(seg) if seg == "logs" && tail.len() == 1 => Ok(None),
        Some(raw) => {
            if tail.len() > 2 || tail.get(1).is_some_and(|s| s != "logs") {
                return Err(no_route(req));
            }
            parse_id(&raw).map(Some)
        }
        None => Ok(None),
    }
}

/// `GET /api/integrations/{id}/logs`, `GET /api/integrations/logs`.
pub async fn logs(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    if req.method() != Method::GET {
        return Err(no_route(req));
    }
    let integration = log_scope(req)?;
    let limit = web::limit(req, LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT)?;
    let before = match web::query(req, "before") {
        None => None,
        Some(raw) => Some(LogCursor::decode(&raw).ok_or_else(|| {
            ApiError::bad_request(
                "`before` must be the `nextBefore` value of a previous page of logs.",
            )
        })?),
    };
    let page = app
        .ready()
        .await?
        .store
        .sync_logs(caller.user_id, integration, before, limit)
        .await?;
    let logs: Vec<LogJson<'_>> = page.logs.iter().map(LogJson::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "logs": logs,
            "nextBefore": page.next_before.map(|c| c.encode()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str) -> lambda_http::Request {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(lambda_http::Body::Empty)
            .unwrap()
    }

    #[test]
    fn log_routes_are_told_apart() {
        let id = Uuid::new_v4();
        assert_eq!(
            log_scope(&req("GET", "https://x/api/integrations/logs")).unwrap(),
            None
        );
        assert_eq!(
            log_scope(&req(
                "GET",
                &format!("https://x/api/integrations/{id}/logs")
            ))
            .unwrap(),
            Some(id)
        );
        let err = log_scope(&req("GET", "https://x/api/integrations/nope/logs")).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = log_scope(&req(
            "GET",
            &format!("https://x/api/integrations/{id}/sync"),
        ))
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(risk_threshold(Some(0)).unwrap(), Some(0));
        assert_eq!(risk_threshold(Some(100)).unwrap(), Some(100));
        assert!(risk_threshold(Some(101)).is_err());
        assert!(risk_threshold(Some(-1)).is_err());
        assert_eq!(
            user_status(Some("paused")).unwrap(),
            Some(UserStatus::Paused)
        );
        assert!(user_status(Some("error")).is_err());
    }
}
