//! `oauth-start`: `GET /api/integrations/{provider}/oauth/start` (and `/api/integrations/followupboss/authorize`):
//! a 302 to the CRM's consent page, with the flow's sealed state in the `crm_oauth_state` cookie.

use crmsync_app::oauth;

use crate::error::ApiError;
use crate::http::{Response, redirect};
use crate::request::{self, respond};
use crate::wiring::App;

/// The cookie that carries the sealed state between start and callback.
pub const STATE_COOKIE: &str = "crm_oauth_state";
const COOKIE_PATH: &str = "/api/integrations";

/// The `Set-Cookie` value of the state cookie (an empty value with `max_age` 0 clears it).
pub(crate) fn state_cookie(value: &str, max_age: u64) -> String {
    format!(
        "{STATE_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
    )
}

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(start(app, &req).await)
}

async fn start(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = request::provider(req)?;
    let ctx = app.context().await?;
    let started = oauth::start(ctx, caller.user_id, provider).await?;
    let cookie = state_cookie(&started.sealed_state, oauth::STATE_TTL.as_secs());
    Ok(redirect(&started.authorize_url, &[cookie]))
}
