//! CRM credentials in use: opened from the vault, re-sealed after a key rotation, and OAuth tokens
//! refreshed before they expire — single-flight across concurrent Lambdas: the refresher holds the
//! integration's row lock, and whoever waited on it re-reads the row and uses the fresh token, so the
//! CRM sees one refresh.

use chrono::{DateTime, Utc};
use crmsync_adapters::ApiError;
use crmsync_adapters::store::{IntegrationRecord, LockedIntegration};
use crmsync_adapters::vault::{Credentials, Opened};
use crmsync_crm::oauth::{self, OAuthConfig, TokenSet};
use crmsync_crm::{CrmAuth, CrmClient, CrmError};
use crmsync_domain::Provider;

use crate::app::{App, Ready};

/// Tokens are refreshed when they have less than this left.
pub const REFRESH_MARGIN_SECS: i64 = 120;

/// The API error for a CRM failure: never the CRM's body, only our sentence.
pub fn crm_error(provider: Provider, err: CrmError) -> ApiError {
    let crm = provider.label();
    match err {
        CrmError::InvalidCredentials => ApiError::invalid_credentials(format!(
            "{crm} refused the credentials; reconnect the integration."
        )),
        CrmError::RateLimited { retry_after } => ApiError::upstream(format!(
            "{crm} is limiting our requests; try again in {} s.",
            retry_after.as_secs().max(1)
        )),
        CrmError::Upstream { status, message } => {
            tracing::warn!(provider = provider.as_str(), status, error = %message, "CRM call failed");
            ApiError::upstream(format!(
                "{crm} answered with an error (HTTP {status}) after retries."
            ))
        }
        CrmError::Transport(why) => {
            tracing::warn!(provider = provider.as_str(), error = %why, "CRM unreachable");
            ApiError::upstream(format!("{crm} could not be reached."))
        }
        CrmError::Decode(why) => {
            tracing::warn!(provider = provider.as_str(), error = %why, "CRM answer not understood");
            ApiError::upstream(format!("{crm} sent an answer we could not read."))
        }
        CrmError::NotFound => ApiError::upstream(format!("{crm} did not find the record.")),
    }
}

/// The OAuth client of `provider`, from the settings and the secret.
pub fn oauth_config(app: &App, ready: &Ready, provider: Provider) -> Result<OAuthConfig, ApiError> {
    let cfg = match provider {
        Provider::Rex => OAuthConfig::rex(&app.settings, &ready.secrets),
        Provider::FollowUpBoss => OAuthConfig::followupboss(&app.settings, &ready.secrets),
        Provider::Lofty => {
            return Err(ApiError::bad_request(
                "Lofty connects with an API key: POST /api/integrations with {provider, apiKey}.",
            ));
        }
    };
    if cfg.client_id.is_empty() {
        return Err(ApiError::internal(format!(
            "the {} OAuth client id is not configured",
            provider.as_str()
        )));
    }
    Ok(cfg)
}

fn open(ready: &Ready, integration: &IntegrationRecord) -> Result<Opened, ApiError> {
    ready
        .vault
        .open(integration.id, integration.provider, &integration.sealed)
        .map_err(ApiError::internal)
}

fn expiring(expires_at: Option<i64>) -> bool {
    expires_at.is_some_and(|t| t - Utc::now().timestamp() < REFRESH_MARGIN_SECS)
}

/// A client for the integration's CRM account, with a token that is valid now.
pub async fn crm_client(
    app: &App,
    ready: &Ready,
    integration: &IntegrationRecord,
) -> Result<CrmClient, ApiError> {
    let auth = current_auth(app, ready, integration).await?;
    Ok(CrmClient::new(
        &app.http,
        &ready.endpoints,
        integration.provider,
        auth,
    ))
}

/// The integration's credentials, refreshed if they are about to expire.
pub async fn current_auth(
    app: &App,
    ready: &Ready,
    integration: &IntegrationRecord,
) -> Result<CrmAuth, ApiError> {
    let opened = open(ready, integration)?;
    if opened.needs_reseal {
        // Sealed by the previous key: move it to the current one (best effort, it is re-tried next time).
        match ready
            .vault
            .seal(integration.id, integration.provider, &opened.credentials)
        {
            Ok(sealed) => {
                if let Err(e) = ready
                    .store
                    .set_credentials(
                        integration.user_id,
                        integration.id,
                        &sealed,
                        integration.token_expires_at,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "re-sealing credentials failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "re-sealing credentials failed"),
        }
    }
    match opened.credentials {
        Credentials::ApiKey { key } => Ok(CrmAuth::ApiKey(key)),
        Credentials::OAuth {
            access_token,
            expires_at,
            ..
        } if !expiring(expires_at) => Ok(CrmAuth::OAuth { access_token }),
        Credentials::OAuth { .. } => refresh(app, ready, integration).await,
    }
}

/// Refreshes under the row lock; returns the token to use.
async fn refresh(
    app: &App,
    ready: &Ready,
    integration: &IntegrationRecord,
) -> Result<CrmAuth, ApiError> {
    let locked = ready
        .store
        .lock_integration(integration.user_id, integration.id)
        .await?
        .ok_or_else(|| ApiError::not_found("The integration no longer exists."))?;
    // Re-read under the lock: whoever held it before us may have refreshed already.
    let opened = match open(ready, &locked.record) {
        Ok(o) => o,
        Err(e) => {
            release(locked).await;
            return Err(e);
        }
    };
    let (access_token, refresh_token, expires_at) = match opened.credentials {
        Credentials::ApiKey { key } => {
            release(locked).await;
            return Ok(CrmAuth::ApiKey(key));
        }
        Credentials::OAuth {
            access_token,
            refresh_token,
            expires_at,
        } => (access_token, refresh_token, expires_at),
    };
    if !expiring(expires_at) {
        release(locked).await;
        return Ok(CrmAuth::OAuth { access_token });
    }
    let provider = locked.record.provider;
    let Some(refresh_token) = refresh_token else {
        release(locked).await;
        return Err(ApiError::invalid_credentials(format!(
            "The {} token has expired and cannot be refreshed; reconnect the integration.",
            provider.label()
        )));
    };
    let cfg = match oauth_config(app, ready, provider) {
        Ok(cfg) => cfg,
        Err(e) => {
            release(locked).await;
            return Err(e);
        }
    };
    match oauth::refresh(&app.http, &cfg, &refresh_token).await {
        Ok(tokens) => {
            let (credentials, expires) = stored_credentials(tokens, Some(refresh_token));
            let access_token = match &credentials {
                Credentials::OAuth { access_token, .. } => access_token.clone(),
                Credentials::ApiKey { key } => key.clone(),
            };
            let sealed = ready
                .vault
                .seal(locked.record.id, provider, &credentials)
                .map_err(ApiError::internal)?;
            locked.save_credentials(&sealed, expires).await?;
            tracing::info!(provider = provider.as_str(), "OAuth token refreshed");
            Ok(CrmAuth::OAuth { access_token })
        }
        Err(e) => {
            release(locked).await;
            Err(crm_error(provider, e))
        }
    }
}

async fn release(locked: LockedIntegration) {
    if let Err(e) = locked.release().await {
        tracing::warn!(error = %e, "releasing the integration lock failed");
    }
}

/// What to store from a token response: a refresh token that did not come back is kept.
pub fn stored_credentials(
    tokens: TokenSet,
    previous_refresh: Option<String>,
) -> (Credentials, Option<DateTime<Utc>>) {
    let expires = tokens.expires_at;
    (
        Credentials::OAuth {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.or(previous_refresh),
            expires_at: expires.map(|t| t.timestamp()),
        },
        expires,
    )
}

/// Stores a new connection of `user` to `provider`, sealed to the integration's id: the existing row's
/// on a reconnect (its cursor and settings are kept). If another request creates the row between our
/// read and our write, the credentials are sealed again to its id.
pub async fn save_connection(
    ready: &Ready,
    user: uuid::Uuid,
    provider: Provider,
    auth_type: crmsync_adapters::store::AuthType,
    credentials: &Credentials,
    expires: Option<DateTime<Utc>>,
) -> Result<IntegrationRecord, ApiError> {
    for _ in 0..2 {
        let existing = ready.store.integration_by_provider(user, provider).await?;
        let id = existing.map(|i| i.id).unwrap_or_else(uuid::Uuid::new_v4);
        let sealed = ready
            .vault
            .seal(id, provider, credentials)
            .map_err(ApiError::internal)?;
        if let Some(record) = ready
            .store
            .connect_integration(user, id, provider, auth_type, &sealed, expires)
            .await?
        {
            tracing::info!(provider = provider.as_str(), %user, integration = %id, "CRM connected");
            return Ok(record);
        }
    }
    Err(ApiError::internal(
        "could not store the integration after two attempts",
    ))
}

/// Longest API key accepted.
const MAX_API_KEY_LEN: usize = 1024;

/// Connects `provider` by API key, after checking the key with one cheap CRM call. A refused key is a
/// 422 and nothing is stored.
pub async fn connect_api_key(
    app: &App,
    user: uuid::Uuid,
    provider: Provider,
    api_key: &str,
) -> Result<IntegrationRecord, ApiError> {
    if provider == Provider::Rex {
        return Err(ApiError::bad_request(
            "REX connects through OAuth: GET /api/integrations/rex/oauth/start.",
        ));
    }
    let key = api_key.trim();
    if key.is_empty() || key.len() > MAX_API_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`apiKey` must be a non-empty key of at most 1024 printable characters.",
        ));
    }
    let ready = app.ready().await?;
    let client = CrmClient::new(
        &app.http,
        &ready.endpoints,
        provider,
        CrmAuth::ApiKey(key.to_owned()),
    );
    client
        .verify_credentials()
        .await
        .map_err(|e| crm_error(provider, e))?;
    let credentials = Credentials::ApiKey {
        key: key.to_owned(),
    };
    save_connection(
        ready,
        user,
        provider,
        crmsync_adapters::store::AuthType::ApiKey,
        &credentials,
        None,
    )
    .await
}
