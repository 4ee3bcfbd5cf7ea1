//! Connecting a CRM account by OAuth: the start of the flow and the callback.
//!
//! Start makes a 256-bit random `state` (and a PKCE S256 pair where the CRM takes it) and binds state,
//! verifier, provider and user in a token sealed by the vault, valid for 10 minutes, that the caller
//! keeps (the edge puts it in a cookie) while the user is at the CRM. The callback checks the token and
//! the state (constant time), claims the state once (a replayed callback is refused), exchanges the code
//! and stores the tokens sealed. Every failure says which [`CallbackError`] it was and stores nothing.

use std::time::Duration;

use chrono::Utc;
use crmsync_crm::oauth;
use crmsync_domain::{AuthType, Provider};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::credentials::{NewConnection, oauth_config, save_connection, stored_credentials};
use crate::{AppError, Context};

/// How long a started flow may take: the lifetime of its state.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// The vault context of the sealed state (a token sealed for anything else does not open here).
const STATE_CONTEXT: &str = "oauth-state";

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The state sent to the CRM.
    state: String,
    /// The PKCE verifier, when a challenge was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verifier: Option<String>,
    provider: Provider,
    user: Uuid,
    /// Unix seconds after which the state is void.
    expires: i64,
}

/// A started flow: where to send the user, and the sealed state to keep until the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub authorize_url: String,
    pub sealed_state: String,
}

/// Starts connecting `provider` for `user`.
pub async fn start(ctx: &Context, user: Uuid, provider: Provider) -> Result<Started, AppError> {
    let cfg = oauth_config(ctx, provider)?;
    let state = oauth::new_state();
    let pkce = cfg.uses_pkce().then(oauth::pkce_pair);
    let authorize_url = oauth::authorize_url(
        &cfg,
        &state,
        pkce.as_ref().map(|(_, challenge)| challenge.as_str()),
    );
    let sealed = State {
        state,
        verifier: pkce.map(|(verifier, _)| verifier),
        provider,
        user,
        expires: Utc::now().timestamp() + STATE_TTL.as_secs() as i64,
    };
    let json = serde_json::to_vec(&sealed).map_err(AppError::internal)?;
    let sealed_state = ctx.vault.seal_token(STATE_CONTEXT, &json)?;
    tracing::info!(provider = provider.as_str(), %user, "OAuth flow started");
    Ok(Started {
        authorize_url,
        sealed_state,
    })
}

/// What the CRM sent back to the callback, and the sealed state the caller kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The standard `error` (`access_denied`).
    pub error: Option<String>,
    /// Follow Up Boss's `response` (`approved` or `denied`).
    pub response: Option<String>,
    pub sealed_state: Option<String>,
}

/// Why a callback failed: the `?error=` code the dashboard gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackError {
    /// The user denied access at the CRM.
    AccessDenied,
    /// No valid caller.
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

/// Finishes connecting `provider` for `user` (the caller, already authenticated).
pub async fn finish(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
    back: &Callback,
) -> Result<(), CallbackError> {
    // Denied at the CRM: standard `error=access_denied`, or Follow Up Boss's `response=denied`.
    if back.error.is_some() || back.response.as_deref().is_some_and(|r| r != "approved") {
        tracing::info!(
            provider = provider.as_str(),
            "OAuth access denied by the user"
        );
        return Err(CallbackError::AccessDenied);
    }

    let raw = back
        .sealed_state
        .as_deref()
        .ok_or(CallbackError::InvalidState)?;
    let json = ctx
        .vault
        .open_token(STATE_CONTEXT, raw)
        .map_err(|_| CallbackError::InvalidState)?;
    let sealed: State = serde_json::from_slice(&json).map_err(|_| CallbackError::InvalidState)?;
    let returned = back.state.as_deref().ok_or(CallbackError::InvalidState)?;
    let state_matches: bool = sealed.state.as_bytes().ct_eq(returned.as_bytes()).into();
    if !state_matches
        || sealed.provider != provider
        || sealed.user != user
        || sealed.expires < Utc::now().timestamp()
    {
        tracing::warn!(
            provider = provider.as_str(),
            "OAuth callback with a state that does not match"
        );
        return Err(CallbackError::InvalidState);
    }
    // Single use: a replay of this callback (same sealed state and state) is refused.
    match ctx
        .buckets
        .claim_once(&format!("oauth-state:{}", sealed.state), STATE_TTL)
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
    let code = back.code.as_deref().ok_or(CallbackError::InvalidRequest)?;

    let cfg = oauth_config(ctx, provider).map_err(|_| CallbackError::ServerError)?;
    let tokens = oauth::exchange_code(
        &ctx.crms.http,
        &cfg,
        code,
        &sealed.state,
        sealed.verifier.as_deref(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(provider = provider.as_str(), error = %e, "OAuth code exchange failed");
        CallbackError::ExchangeFailed
    })?;
    // Which account the token belongs to, where the CRM tells it: a reconnect to another account
    // starts the sync afresh. A CRM that cannot say now does not stop the connection.
    let client = ctx.crms.client(
        provider,
        crmsync_crm::CrmAuth::OAuth {
            access_token: tokens.access_token.clone(),
        },
    );
    let account = match client.account().await {
        Ok(account) => account,
        Err(e) => {
            tracing::warn!(provider = provider.as_str(), error = %e, "cannot tell the account of a new connection");
            Default::default()
        }
    };
    let (credentials, expires) = stored_credentials(tokens, None);
    let connection = NewConnection {
        auth_type: AuthType::OAuth,
        credentials: &credentials,
        expires,
        account_id: account.id.as_deref(),
    };
    save_connection(ctx, user, provider, connection)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store an OAuth connection");
            CallbackError::ServerError
        })?;
    Ok(())
}
