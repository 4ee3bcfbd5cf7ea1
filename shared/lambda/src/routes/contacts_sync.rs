//! `contacts-sync`: `POST /api/integrations/{provider}/contacts/sync?since=&full=`: a pull into
//! `contacts` (of the changes since the saved cursor, or of the whole account with `full=true`); 409
//! while a sync of the same integration runs.

use crmsync_app::pull;
use crmsync_domain::Trigger;
use http::StatusCode;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(sync(app, &req).await)
}

async fn sync(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = request::provider(req)?;
    let sync = request::sync_request(req)?;
    app.limit("contacts-sync", &caller, limits::SYNC).await?;
    let ctx = app.context().await?;
    let metrics = pull::sync_provider(
        ctx,
        caller.user_id,
        provider,
        sync,
        Trigger::Manual,
        request::deadline(req),
    )
    .await?;
    Ok(json(StatusCode::OK, &metrics))
}
