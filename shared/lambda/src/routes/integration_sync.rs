//! `integration-sync`: `POST /api/integrations/{id}/sync?since=&full=`: run that integration now — a
//! pull, then the push of its due deliveries.

use std::time::{Duration, Instant};

use crmsync_app::{integrations, push};
use http::StatusCode;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

/// How long a run may take when the runtime gives no deadline (a local emulator).
const NO_DEADLINE: Duration = Duration::from_secs(600);

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(sync(app, &req).await)
}

async fn sync(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let raw = request::path_param(req, "id", "integrations").unwrap_or_default();
    let id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::bad_request("The integration id is not a valid id."))?;
    let ctx = app.context().await?;
    let integration = integrations::record(ctx, caller.user_id, id).await?;
    app.limit("integration-sync", &caller, limits::SYNC).await?;
    let deadline = request::deadline(req).unwrap_or_else(|| Instant::now() + NO_DEADLINE);
    let sync = request::sync_request(req)?;
    let synced = push::sync_integration(ctx, &integration, sync.since, sync.full, deadline).await?;
    Ok(json(StatusCode::OK, &synced))
}
