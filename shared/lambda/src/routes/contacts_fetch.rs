//! `contacts-fetch`: `GET /api/integrations/{provider}/contacts/fetch?since=&limit=`: normalized contacts
//! for inspection; writes nothing.

use crmsync_app::pull;
use http::StatusCode;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(fetch(app, &req).await)
}

async fn fetch(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = request::provider(req)?;
    let since = request::since(req)?;
    let limit = request::limit(req, 50, 500)?;
    app.limit("contacts-fetch", &caller, limits::FETCH).await?;
    let ctx = app.context().await?;
    let fetched = pull::fetch(ctx, caller.user_id, provider, since, limit).await?;
    Ok(json(StatusCode::OK, &fetched))
}
