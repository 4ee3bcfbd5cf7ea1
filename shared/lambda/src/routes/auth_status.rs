//! `auth-status`: `GET /api/integrations/{provider}/auth/status`: whether the user's CRM connection
//! works (an expired OAuth token is refreshed first).

use crmsync_app::auth_status::auth_status;
use http::StatusCode;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::App;

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(status(app, &req).await)
}

async fn status(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = request::provider(req)?;
    let ctx = app.context().await?;
    let status = auth_status(ctx, caller.user_id, provider).await?;
    Ok(json(StatusCode::OK, &status))
}
