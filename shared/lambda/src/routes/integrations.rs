//! `integrations`: `GET/POST /api/integrations` and `GET/PUT/DELETE /api/integrations/{id}`: list,
//! connect by API key, read, update and disconnect a user's integrations.
//!
//! Every call is the caller's: another user's integration id answers exactly as an unknown one does
//! (404). Responses never hold credentials.

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_app::integrations::{self, ApiKeyConnection};
use crmsync_crm::CrmSettings;
use crmsync_domain::{IntegrationStatus, Provider, Region};
use crmsync_store::{IntegrationPatch, IntegrationView};
use http::{HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{Response, json, no_content, parse_json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

/// An integration on the wire (camelCase; times RFC 3339 in UTC, or null).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IntegrationJson<'a> {
    id: Uuid,
    provider: Provider,
    auth_type: &'static str,
    status: &'static str,
    auto_sync: bool,
    risk_threshold: i32,
    consecutive_failures: i32,
    last_sync_at: Option<String>,
    token_expires_at: Option<String>,
    last_error: Option<&'a str>,
    created_at: String,
    /// The region numbers written without a country code are read in: the integration's own, else
    /// its CRM's default.
    phone_region: Region,
    /// When a complete read (which also finds what was deleted in the CRM) last finished.
    last_full_sync_at: Option<String>,
    /// `live`: the CRM calls crmsync when the account's contacts change (since `liveSince`), and the
    /// scheduled poll is only the safety net; `polled`: changes arrive with the scheduled poll or a sync.
    updates: &'static str,
    live_since: Option<String>,
}

impl<'a> IntegrationJson<'a> {
    fn of(v: &'a IntegrationView, crm: &CrmSettings) -> Self {
        IntegrationJson {
            id: v.id,
            provider: v.provider,
            auth_type: v.auth_type.as_str(),
            status: v.status.as_str(),
            auto_sync: v.auto_sync,
            risk_threshold: v.risk_threshold,
            consecutive_failures: v.consecutive_failures,
            last_sync_at: v.last_sync_at.map(secs),
            token_expires_at: v.token_expires_at.map(secs),
            last_error: v.last_error.as_deref(),
            created_at: secs(v.created_at),
            phone_region: v
                .phone_region
                .unwrap_or_else(|| crmsync_crm::kind(v.provider).phone_region(crm)),
            last_full_sync_at: v.last_full_sync_at.map(secs),
            updates: if v.live_since.is_some() {
                "live"
            } else {
                "polled"
            },
            live_since: v.live_since.map(secs),
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
    phone_region: Option<String>,
}

/// `PUT /api/integrations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateBody {
    auto_sync: Option<bool>,
    risk_threshold: Option<i64>,
    status: Option<String>,
    phone_region: Option<String>,
}

/// `phoneRegion`: an ISO 3166-1 alpha-2 code.
fn phone_region(raw: Option<&str>) -> Result<Option<Region>, ApiError> {
    raw.map(|r| {
        r.parse::<Region>()
            .map_err(|e| ApiError::bad_request(format!("`phoneRegion`: {e}.")))
    })
    .transpose()
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

fn user_status(raw: Option<&str>) -> Result<Option<IntegrationStatus>, ApiError> {
    match raw {
        None => Ok(None),
        Some("active") => Ok(Some(IntegrationStatus::Active)),
        Some("paused") => Ok(Some(IntegrationStatus::Paused)),
        Some(_) => Err(ApiError::bad_request(
            "`status` must be \"active\" or \"paused\".",
        )),
    }
}

fn one(app: &App, status: StatusCode, view: &IntegrationView) -> Response {
    json(status, &IntegrationJson::of(view, &app.settings.crm))
}

/// `GET/POST /api/integrations`, `GET/PUT/DELETE /api/integrations/{id}`.
pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(route(app, &req).await)
}

async fn route(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let user = caller.user_id;
    let tail = request::path_tail(req);
    if tail.len() > 1 {
        return Err(request::no_route(req));
    }
    let id = match request::path_param(req, "id", "integrations") {
        Some(raw) => Some(request::integration_id(&raw)?),
        None => None,
    };
    let method = req.method();
    match id {
        None if method == Method::GET => list(app, user).await,
        None if method == Method::POST => connect(app, &caller, req.body().as_ref()).await,
        Some(id) if method == Method::GET => read(app, user, id).await,
        Some(id) if method == Method::PUT => update(app, user, id, req.body().as_ref()).await,
        Some(id) if method == Method::DELETE => disconnect(app, user, id).await,
        _ => Err(request::no_route(req)),
    }
}

async fn list(app: &App, user: Uuid) -> Result<Response, ApiError> {
    let views = integrations::list(app.context().await?, user).await?;
    let integrations: Vec<IntegrationJson<'_>> = views
        .iter()
        .map(|v| IntegrationJson::of(v, &app.settings.crm))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "integrations": integrations }),
    ))
}

async fn connect(app: &App, caller: &Caller, body: &[u8]) -> Result<Response, ApiError> {
    // Everything is checked before the CRM is called, so a bad request stores nothing.
    let body: ConnectBody = parse_json(body)?;
    let provider = body
        .provider
        .parse::<Provider>()
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    let settings = IntegrationPatch {
        auto_sync: body.auto_sync,
        risk_threshold: risk_threshold(body.risk_threshold)?,
        status: None,
        phone_region: phone_region(body.phone_region.as_deref())?,
    };
    let ctx = app.context().await?;
    // Each connect costs a CRM call with a caller-chosen key: limited, so keys cannot be guessed.
    app.limit("integrations-connect", caller, limits::CONNECT)
        .await?;
    let connection = ApiKeyConnection {
        provider,
        api_key: &body.api_key,
        settings,
    };
    let connected = integrations::connect(ctx, caller.user_id, connection).await?;
    let view = &connected.integration;
    if !connected.created {
        return Ok(one(app, StatusCode::OK, view));
    }
    let mut resp = one(app, StatusCode::CREATED, view);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/integrations/{}", view.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

async fn read(app: &App, user: Uuid, id: Uuid) -> Result<Response, ApiError> {
    let view = integrations::get(app.context().await?, user, id).await?;
    Ok(one(app, StatusCode::OK, &view))
}

async fn update(app: &App, user: Uuid, id: Uuid, body: &[u8]) -> Result<Response, ApiError> {
    let body: UpdateBody = parse_json(body)?;
    let patch = IntegrationPatch {
        auto_sync: body.auto_sync,
        risk_threshold: risk_threshold(body.risk_threshold)?,
        status: user_status(body.status.as_deref())?,
        phone_region: phone_region(body.phone_region.as_deref())?,
    };
    let view = integrations::update(app.context().await?, user, id, &patch).await?;
    Ok(one(app, StatusCode::OK, &view))
}

async fn disconnect(app: &App, user: Uuid, id: Uuid) -> Result<Response, ApiError> {
    integrations::disconnect(app.context().await?, user, id).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert_eq!(risk_threshold(Some(0)).unwrap(), Some(0));
        assert_eq!(risk_threshold(Some(100)).unwrap(), Some(100));
        assert!(risk_threshold(Some(101)).is_err());
        assert!(risk_threshold(Some(-1)).is_err());
        assert_eq!(
            user_status(Some("paused")).unwrap(),
            Some(IntegrationStatus::Paused)
        );
        assert!(user_status(Some("error")).is_err());
    }
}
