//! One handler per HTTP function: request in, response out. Errors become `{error, detail}`.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_adapters::ApiError;
use crmsync_adapters::ErrorCode;
use crmsync_adapters::http::{Response, json};
use crmsync_adapters::store::{IntegrationRecord, Trigger};
use crmsync_crm::CrmError;
use crmsync_domain::Provider;
use http::StatusCode;
use lambda_http::RequestExt;
use serde_json::json as j;

use crate::app::{App, limits};
use crate::credentials::{crm_client, crm_error};
use crate::web::{self, respond};
use crate::{oauth_flow, pull};

/// A sync stops at a page boundary once the Lambda has less than this left (or a fifth of its time,
/// when that is less: a function with a short timeout still gets most of it).
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// `GET /api/integrations/{provider}/oauth/start`.
pub async fn oauth_start(app: &App, req: lambda_http::Request) -> Response {
    respond(oauth_flow::start(app, &req).await)
}

/// `GET /api/integrations/{provider}/oauth/callback`.
pub async fn oauth_callback(app: &App, req: lambda_http::Request) -> Response {
    oauth_flow::callback(app, &req).await
}

/// The caller's integration with `provider`, or 404.
async fn connected(
    app: &App,
    user: uuid::Uuid,
    provider: Provider,
) -> Result<IntegrationRecord, ApiError> {
    app.ready()
        .await?
        .store
        .integration_by_provider(user, provider)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("No {} integration is connected.", provider.label()))
        })
}

/// `GET /api/integrations/{provider}/auth/status`.
pub async fn auth_status(app: &App, req: lambda_http::Request) -> Response {
    respond(auth_status_inner(app, &req).await)
}

async fn auth_status_inner(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = web::provider(req)?;
    let ready = app.ready().await?;
    let Some(integration) = ready
        .store
        .integration_by_provider(caller.user_id, provider)
        .await?
    else {
        return Ok(json(
            StatusCode::OK,
            &j!({"provider": provider, "connected": false, "status": "disconnected", "tokenValid": false,
                 "expiresAt": null, "lastSyncAt": null, "integrationId": null}),
        ));
    };
    // Refreshes an expired OAuth token, then asks the CRM whether it takes the credentials.
    let token_valid = match crm_client(app, ready, &integration).await {
        Ok(client) => match client.verify_credentials().await {
            Ok(()) => true,
            Err(CrmError::InvalidCredentials) => false,
            Err(e) => return Err(crm_error(provider, e)),
        },
        Err(e) if e.code() == ErrorCode::InvalidCredentials => false,
        Err(e) => return Err(e),
    };
    let current = ready
        .store
        .get_integration(caller.user_id, integration.id)
        .await?
        .unwrap_or(integration);
    Ok(json(
        StatusCode::OK,
        &j!({
            "provider": provider,
            "connected": true,
            "status": current.status,
            "tokenValid": token_valid,
            "expiresAt": rfc3339(current.token_expires_at),
            "lastSyncAt": rfc3339(current.last_sync_at),
            "integrationId": current.id,
        }),
    ))
}

/// `GET /api/integrations/{provider}/contacts/fetch?since=&limit=`.
pub async fn contacts_fetch(app: &App, req: lambda_http::Request) -> Response {
    respond(contacts_fetch_inner(app, &req).await)
}

async fn contacts_fetch_inner(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = web::provider(req)?;
    let since = web::since(req)?;
    let limit = web::limit(req, 50, 500)?;
    app.limit("contacts-fetch", &caller, limits::FETCH).await?;
    let integration = connected(app, caller.user_id, provider).await?;
    let fetched = pull::fetch(app, &integration, since, limit).await?;
    Ok(json(StatusCode::OK, &fetched))
}

/// `POST /api/integrations/{provider}/contacts/sync?since=`.
pub async fn contacts_sync(app: &App, req: lambda_http::Request) -> Response {
    respond(contacts_sync_inner(app, &req).await)
}

async fn contacts_sync_inner(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = web::provider(req)?;
    let since = web::since(req)?;
    app.limit("contacts-sync", &caller, limits::SYNC).await?;
    let integration = connected(app, caller.user_id, provider).await?;
    let metrics = pull::sync(app, &integration, since, Trigger::Manual, deadline(req)).await?;
    Ok(json(StatusCode::OK, &metrics))
}

/// When to stop starting new pages: the Lambda's deadline less a margin. `None` when the runtime gave
/// no usable deadline (local emulators send 0).
pub fn deadline(req: &lambda_http::Request) -> Option<Instant> {
    deadline_from_ms(req.lambda_context_ref()?.deadline)
}

/// The instant to stop at for a Lambda deadline given in epoch milliseconds.
pub fn deadline_from_ms(deadline_ms: u64) -> Option<Instant> {
    let now_ms = Utc::now().timestamp_millis();
    let left_ms = i64::try_from(deadline_ms).ok()? - now_ms;
    tracing::debug!(left_ms, "time left before the Lambda deadline");
    if left_ms < -60_000 {
        return None;
    }
    let left = Duration::from_millis(left_ms.max(0) as u64);
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN.min(left / 5)))
}

/// `integrations` function.
pub async fn integrations(app: &App, req: lambda_http::Request) -> Response {
    respond(crate::integrations::handle(app, &req).await)
}
/// `sync-logs` function.
pub async fn sync_logs(app: &App, req: lambda_http::Request) -> Response {
    respond(crate::integrations::logs(app, &req).await)
}
/// `lead-webhook` function.
pub async fn lead_webhook(app: &App, req: lambda_http::Request) -> Response {
    respond(crate::push::webhook(app, &req).await)
}
/// `integration-sync` function.
pub async fn integration_sync(app: &App, req: lambda_http::Request) -> Response {
    respond(crate::push::integration_sync(app, &req).await)
}
