//! `deliveries`: `GET /api/integrations/{id}/deliveries?status=&limit=&before=`, the push deliveries of
//! one of the caller's integrations, newest first, paged by an opaque keyset cursor; and
//! `POST /api/integrations/{id}/deliveries/retry`, which makes its failed and waiting deliveries due
//! now and pushes them (6 calls a minute per user).
//!
//! A delivery names its lead by id only: the lead's personal data never leaves the outbox here.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_app::deliveries;
use crmsync_domain::DeliveryStatus;
use crmsync_store::{DeliveryRecord, LogCursor};
use http::{Method, StatusCode};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

/// `?limit=` of the deliveries: default and maximum.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// How long a retry may push when the runtime gives no deadline (a local emulator).
const NO_DEADLINE: Duration = Duration::from_secs(600);

/// A delivery on the wire.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryJson<'a> {
    id: Uuid,
    event_id: Uuid,
    lead_id: &'a str,
    event: &'a str,
    status: &'static str,
    attempts: i32,
    /// When a pending delivery is tried next; null once it is delivered, skipped or given up.
    next_attempt_at: Option<String>,
    last_error: Option<&'a str>,
    external_id: Option<&'a str>,
    created_at: String,
    updated_at: String,
}

/// Milliseconds, as the sync logs: deliveries of one lead often share a second.
fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl<'a> From<&'a DeliveryRecord> for DeliveryJson<'a> {
    fn from(d: &'a DeliveryRecord) -> Self {
        DeliveryJson {
            id: d.id,
            event_id: d.event_id,
            lead_id: &d.lead_id,
            event: &d.event,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| millis(d.next_attempt_at)),
            last_error: d.last_error.as_deref(),
            external_id: d.external_id.as_deref(),
            created_at: millis(d.created_at),
            updated_at: millis(d.updated_at),
        }
    }
}

/// The two routes of the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    List(Uuid),
    Retry(Uuid),
}

/// Which route a request is: `GET /api/integrations/{id}/deliveries` or
/// `POST /api/integrations/{id}/deliveries/retry`; any other path or method is a 404, and an id that
/// is not a UUID a 400.
fn call(req: &lambda_http::Request) -> Result<Call, ApiError> {
    let tail = request::path_tail(req);
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let retry = match tail.get(1..) {
        Some(["deliveries"]) if req.method() == Method::GET => false,
        Some(["deliveries", "retry"]) if req.method() == Method::POST => true,
        _ => return Err(request::no_route(req)),
    };
    let raw = request::path_param(req, "id", "integrations").unwrap_or_default();
    let id = request::integration_id(&raw)?;
    Ok(if retry {
        Call::Retry(id)
    } else {
        Call::List(id)
    })
}

/// `?status=`: one of the delivery statuses, or none.
fn status(req: &lambda_http::Request) -> Result<Option<DeliveryStatus>, ApiError> {
    request::query(req, "status")
        .map(|raw| {
            raw.parse::<DeliveryStatus>().map_err(|_| {
                ApiError::bad_request(
                    "`status` must be one of pending, failed, delivered, skipped or superseded.",
                )
            })
        })
        .transpose()
}

/// `?before=`: the `nextBefore` of a previous page.
fn before(req: &lambda_http::Request) -> Result<Option<LogCursor>, ApiError> {
    request::query(req, "before")
        .map(|raw| {
            LogCursor::decode(&raw).ok_or_else(|| {
                ApiError::bad_request(
                    "`before` must be the `nextBefore` value of a previous page of deliveries.",
                )
            })
        })
        .transpose()
}

/// `GET /api/integrations/{id}/deliveries`, `POST /api/integrations/{id}/deliveries/retry`.
pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    match call(req)? {
        Call::List(id) => {
            let status = status(req)?;
            let limit = request::limit(req, DEFAULT_LIMIT, MAX_LIMIT)?;
            let before = before(req)?;
            let ctx = app.context().await?;
            let page = deliveries::list(ctx, caller.user_id, id, status, before, limit).await?;
            let items: Vec<DeliveryJson<'_>> =
                page.deliveries.iter().map(DeliveryJson::from).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "deliveries": items,
                    "nextBefore": page.next_before.map(|c| c.encode()),
                }),
            ))
        }
        Call::Retry(id) => {
            let ctx = app.context().await?;
            // The integration must be the caller's before a token of their limit is spent.
            crmsync_app::integrations::get(ctx, caller.user_id, id).await?;
            app.limit("deliveries-retry", &caller, limits::SYNC).await?;
            let deadline = request::deadline(req).unwrap_or_else(|| Instant::now() + NO_DEADLINE);
            let retried = deliveries::retry(ctx, caller.user_id, id, deadline).await?;
            Ok(json(StatusCode::OK, &retried))
        }
    }
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
    fn the_two_routes_are_told_apart() {
        let id = Uuid::new_v4();
        let list = format!("https://x/api/integrations/{id}/deliveries");
        let retry = format!("https://x/api/integrations/{id}/deliveries/retry");
        assert_eq!(call(&req("GET", &list)).unwrap(), Call::List(id));
        assert_eq!(call(&req("POST", &retry)).unwrap(), Call::Retry(id));
        for (method, uri) in [
            ("POST", list.clone()),
            ("GET", retry.clone()),
            ("DELETE", list.clone()),
            ("GET", format!("{list}/other")),
            ("GET", format!("https://x/api/integrations/{id}")),
            ("GET", format!("https://x/api/integrations/{id}/logs")),
        ] {
            let err = call(&req(method, &uri)).unwrap_err();
            assert_eq!(err.status(), StatusCode::NOT_FOUND, "{method} {uri}");
        }
        let err = call(&req("GET", "https://x/api/integrations/nope/deliveries")).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn status_filters_are_the_four_statuses() {
        let uri = |q: &str| format!("https://x/api/integrations/x/deliveries?{q}");
        assert_eq!(status(&req("GET", &uri(""))).unwrap(), None);
        assert_eq!(
            status(&req("GET", &uri("status=failed"))).unwrap(),
            Some(DeliveryStatus::Failed)
        );
        for bad in ["status=done", "status=FAILED", "status=pending,failed"] {
            let err = status(&req("GET", &uri(bad))).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
