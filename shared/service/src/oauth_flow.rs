//! The OAuth connect flow: `oauth-start` and `oauth-callback`.
//!
//! Start makes a 256-bit random `state` (and a PKCE S256 pair where the CRM takes it), binds state,
//! verifier, provider and user in the `crm_oauth_state` cookie — sealed by the vault, 10 minutes — and
//! redirects to the CRM. The callback checks the caller, the cookie and the state (constant time), claims
//! the state once (a replayed callback is refused), exchanges the code, stores the tokens sealed, clears
//! the cookie and redirects to `POST_CONNECT_URL`. Every failure redirects with `?error=<code>` and stores
//! nothing.

use chrono::Utc;
use crmsync_adapters::ApiError;
use crmsync_adapters::auth::cookie_value;
use crmsync_adapters::http::{Response, redirect};
use crmsync_adapters::store::AuthType;
use crmsync_crm::oauth;
use crmsync_domain::Provider;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::app::{App, limits};
use crate::credentials::{oauth_config, stored_credentials};
use crate::web;

/// The cookie that carries the sealed state between start and callback.
pub const STATE_COOKIE: &str = "crm_oauth_state";
const COOKIE_CONTEXT: &str = "oauth-state";
const COOKIE_PATH: &str = "/api/integrations";

#[derive(Debug, Serialize, Deserialize)]
struct StateCookie {
    /// The state sent to the CRM.
    state: String,
    /// The PKCE verifier, when a challenge was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verifier: Option<String>,
    provider: Provider,
    user: Uuid,
    /// Unix seconds after which the cookie is void.
    expires: i64,
}

fn set_cookie(value: &str, max_age: u64) -> String {
    format!(
        "{STATE_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
    )
}

/// `GET /api/integrations/{provider}/oauth/start` (and `/followupboss/authorize`).
pub async fn start(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let provider = start_provider(req)?;
    let ready = app.ready().await?;
    let cfg = oauth_config(app, ready, provider)?;

    let state = oauth::new_state();
    let pkce = (provider == Provider::Rex && app.settings.rex.pkce).then(oauth::pkce_pair);
    let url = oauth::authorize_url(
        provider,
        &cfg,
        &state,
        pkce.as_ref().map(|(_, challenge)| challenge.as_str()),
    );
    let ttl = limits::OAUTH_STATE_TTL.as_secs();
    let cookie = StateCookie {
        state,
        verifier: pkce.map(|(verifier, _)| verifier),
        provider,
        user: caller.user_id,
        expires: Utc::now().timestamp() + ttl as i64,
    };
    let json = serde_json::to_vec(&cookie).map_err(ApiError::internal)?;
    let sealed = ready
        .vault
        .seal_token(COOKIE_CONTEXT, &json)
        .map_err(ApiError::internal)?;
    tracing::info!(provider = provider.as_str(), user = %caller.user_id, "OAuth flow started");
    Ok(redirect(&url, &[set_cookie(&sealed, ttl)]))
}

/// The provider of a start or callback path; the Follow Up Boss aliases name it in the path itself.
fn start_provider(req: &lambda_http::Request) -> Result<Provider, ApiError> {
    web::provider(req)
}

/// `GET /api/integrations/{provider}/oauth/callback` (and `/followupboss/callback`): always a redirect.
pub async fn callback(app: &App, req: &lambda_http::Request) -> Response {
    let clear = set_cookie("", 0);
    let base = app.settings.post_connect_url.clone();
    let sep = if base.contains('?') { '&' } else { '?' };
    match finish(app, req).await {
        Ok(provider) => redirect(
            &format!("{base}{sep}connected={}", provider.as_str()),
            &[clear],
        ),
        Err(code) => redirect(&format!("{base}{sep}error={}", code.as_str()), &[clear]),
    }
}

/// Why a callback failed: the `?error=` code the dashboard gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackError {
    /// The user denied access at the CRM.
    AccessDenied,
    /// No valid caller JWT.
    Unauthorized,
    /// Missing, expired, foreign, tampered or reused state.
    InvalidState,
    /// The CRM sent no code.
    InvalidRequest,
    /// The CRM refused the code exchange.
    ExchangeFailed,
    /// Our side failed (logged).
    ServerError,
}

impl CallbackError {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackError::AccessDenied => "access_denied",
            CallbackError::Unauthorized => "unauthorized",
            CallbackError::InvalidState => "invalid_state",
            CallbackError::InvalidRequest => "invalid_request",
            CallbackError::ExchangeFailed => "exchange_failed",
            CallbackError::ServerError => "server_error",
        }
    }
}

async fn finish(app: &App, req: &lambda_http::Request) -> Result<Provider, CallbackError> {
    let provider = start_provider(req).map_err(|_| CallbackError::InvalidRequest)?;
    let ready = app.ready().await.map_err(|_| CallbackError::ServerError)?;
    let caller = ready
        .jwt
        .authenticate(req.headers())
        .map_err(|_| CallbackError::Unauthorized)?;

    // Denied at the CRM: standard `error=access_denied`, or Follow Up Boss's `response=denied`.
    if web::query(req, "error").is_some()
        || web::query(req, "response").is_some_and(|r| r != "approved")
    {
        tracing::info!(
            provider = provider.as_str(),
            "OAuth access denied by the user"
        );
        return Err(CallbackError::AccessDenied);
    }

    let raw = cookie_value(req.headers(), STATE_COOKIE).ok_or(CallbackError::InvalidState)?;
    let json = ready
        .vault
        .open_token(COOKIE_CONTEXT, &raw)
        .map_err(|_| CallbackError::InvalidState)?;
    let cookie: StateCookie =
        serde_json::from_slice(&json).map_err(|_| CallbackError::InvalidState)?;
    let returned = web::query(req, "state").ok_or(CallbackError::InvalidState)?;
    let state_matches: bool = cookie.state.as_bytes().ct_eq(returned.as_bytes()).into();
    if !state_matches
        || cookie.provider != provider
        || cookie.user != caller.user_id
        || cookie.expires < Utc::now().timestamp()
    {
        tracing::warn!(
            provider = provider.as_str(),
            "OAuth callback with a state that does not match"
        );
        return Err(CallbackError::InvalidState);
    }
    // Single use: a replay of this callback (same cookie and state) is refused.
    match app
        .limiter
        .claim_once(
            &format!("oauth-state:{}", cookie.state),
            limits::OAUTH_STATE_TTL,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(provider = provider.as_str(), "OAuth state used twice");
            return Err(CallbackError::InvalidState);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the OAuth state as used");
            return Err(CallbackError::ServerError);
        }
    }
    let code = web::query(req, "code").ok_or(CallbackError::InvalidRequest)?;

    let cfg = oauth_config(app, ready, provider).map_err(|_| CallbackError::ServerError)?;
    let tokens = oauth::exchange_code(
        &app.http,
        &cfg,
        &code,
        &cookie.state,
        cookie.verifier.as_deref(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(provider = provider.as_str(), error = %e, "OAuth code exchange failed");
        CallbackError::ExchangeFailed
    })?;
    let (credentials, expires) = stored_credentials(tokens, None);

    crate::credentials::save_connection(
        ready,
        caller.user_id,
        provider,
        AuthType::OAuth,
        &credentials,
        expires,
    )
    .await
    .map_err(|_| CallbackError::ServerError)?;
    Ok(provider)
}
