//! `sync-logs`: `GET /api/integrations/{id}/logs` and `GET /api/integrations/logs`: a user's sync logs,
//! newest first, paged by an opaque keyset cursor (`?limit=&before=`).

use chrono::SecondsFormat;
use crmsync_app::integrations;
use crmsync_domain::Provider;
use crmsync_store::{LogCursor, SyncLogRecord};
use http::{Method, StatusCode};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::App;

/// `?limit=` of the logs: default and maximum.
const LOGS_DEFAULT_LIMIT: u32 = 50;
const LOGS_MAX_LIMIT: u32 = 200;

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

/// Which logs a `sync-logs` request asks for: all the caller's (`/api/integrations/logs`), or one
/// integration's (`/api/integrations/{id}/logs`).
fn log_scope(req: &lambda_http::Request) -> Result<Option<Uuid>, ApiError> {
    let tail = request::path_tail(req);
    match request::path_param(req, "id", "integrations") {
        // `/api/integrations/logs` (a literal route, so API Gateway gives no `id`).
        Some(seg) if seg == "logs" && tail.len() == 1 => Ok(None),
        Some(raw) => {
            if tail.len() > 2 || tail.get(1).is_some_and(|s| s != "logs") {
                return Err(request::no_route(req));
            }
            request::integration_id(&raw).map(Some)
        }
        None => Ok(None),
    }
}

/// `GET /api/integrations/{id}/logs`, `GET /api/integrations/logs`.
pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(logs(app, &req).await)
}

async fn logs(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    if req.method() != Method::GET {
        return Err(request::no_route(req));
    }
    let integration = log_scope(req)?;
    let limit = request::limit(req, LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT)?;
    let before = match request::query(req, "before") {
        None => None,
        Some(raw) => Some(LogCursor::decode(&raw).ok_or_else(|| {
            ApiError::bad_request(
                "`before` must be the `nextBefore` value of a previous page of logs.",
            )
        })?),
    };
    let page = integrations::logs(
        app.context().await?,
        caller.user_id,
        integration,
        before,
        limit,
    )
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
}
