//! `oauth-callback`: `GET /api/integrations/{provider}/oauth/callback` (and
//! `/api/integrations/followupboss/callback`): always a 302 to `POST_CONNECT_URL`, with
//! `?connected=<provider>` or `?error=<code>`, clearing the state cookie.

use crmsync_app::oauth::{self, Callback, CallbackError};
use crmsync_domain::Provider;

use super::oauth_start::{STATE_COOKIE, state_cookie};
use crate::auth::cookie_value;
use crate::http::{Response, redirect};
use crate::request;
use crate::wiring::App;

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    let clear = state_cookie("", 0);
    let base = &app.settings.post_connect_url;
    let sep = if base.contains('?') { '&' } else { '?' };
    match finish(app, &req).await {
        Ok(provider) => redirect(
            &format!("{base}{sep}connected={}", provider.as_str()),
            &[clear],
        ),
        Err(code) => redirect(&format!("{base}{sep}error={}", code.as_str()), &[clear]),
    }
}

async fn finish(app: &App, req: &lambda_http::Request) -> Result<Provider, CallbackError> {
    let provider = request::provider(req).map_err(|_| CallbackError::InvalidRequest)?;
    let ready = app.ready().await.map_err(|_| CallbackError::ServerError)?;
    let caller = ready
        .jwt
        .authenticate(req.headers())
        .map_err(|_| CallbackError::Unauthorized)?;
    let back = Callback {
        code: request::query(req, "code"),
        state: request::query(req, "state"),
        error: request::query(req, "error"),
        response: request::query(req, "response"),
        sealed_state: cookie_value(req.headers(), STATE_COOKIE),
    };
    oauth::finish(&ready.ctx, caller.user_id, provider, &back).await?;
    Ok(provider)
}
