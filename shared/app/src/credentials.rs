//! CRM credentials in use: opened from the vault, re-sealed after a key rotation, and OAuth tokens
//! refreshed before they expire, and once more when the CRM refuses one — single-flight across
//! concurrent Lambdas: the refresher holds the integration's row lock, and whoever waited on it
//! re-reads the row and uses the fresh token, so the CRM sees one refresh. Credentials the CRM refuses
//! for good (a refused refresh grant, a refused API key) set the integration `needs_reauth`, with a
//! sentence for the user, until they connect again.

use chrono::{DateTime, Utc};
use crmsync_crm::oauth::{self, OAuthConfig, TokenSet};
use crmsync_crm::{CrmAuth, CrmClient, CrmError};
use crmsync_domain::{AuthType, Provider};
use crmsync_store::{Credentials, IntegrationRecord, LockedIntegration, Opened};

use crate::{AppError, Context};

/// Tokens are refreshed when they have less than this left.
pub const REFRESH_MARGIN_SECS: i64 = 120;

/// The OAuth client of `provider`, from the configuration; a CRM that connects by API key only is a
/// bad request.
pub fn oauth_config(ctx: &Context, provider: Provider) -> Result<OAuthConfig, AppError> {
    let Some(cfg) = crmsync_crm::kind(provider).oauth(&ctx.crms.config) else {
        return Err(AppError::BadRequest(format!(
            "{} connects with an API key: POST /api/integrations with {{provider, apiKey}}.",
            provider.label()
        )));
    };
    if cfg.client_id.is_empty() {
        return Err(AppError::internal(format!(
            "the {} OAuth client id is not configured",
            provider.as_str()
        )));
    }
    Ok(cfg)
}

fn open(ctx: &Context, integration: &IntegrationRecord) -> Result<Opened, AppError> {
    Ok(ctx
        .vault
        .open(integration.id, integration.provider, &integration.sealed)?)
}

fn expiring(expires_at: Option<i64>) -> bool {
    expires_at.is_some_and(|t| t - Utc::now().timestamp() < REFRESH_MARGIN_SECS)
}

/// A CRM client that may recover from the CRM refusing its credentials: what the pull and the push
/// loops use (a [`Connection`] in production; a plain client in the loops' unit tests).
pub trait Session: Send {
    fn client(&self) -> &CrmClient;

    /// After the CRM refused the credentials: `Ok` when the client may try again.
    fn recover(&mut self) -> impl std::future::Future<Output = Result<(), AppError>> + Send;
}

impl Session for Connection<'_> {
    fn client(&self) -> &CrmClient {
        &self.client
    }

    async fn recover(&mut self) -> Result<(), AppError> {
        Connection::recover(self).await
    }
}

/// A client for an integration's CRM account, with the credentials it uses, able to recover once
/// from the CRM refusing them.
pub struct Connection<'a> {
    ctx: &'a Context,
    integration: &'a IntegrationRecord,
    pub client: CrmClient,
    auth: CrmAuth,
    recovered: bool,
}

impl<'a> Connection<'a> {
    /// The integration's client, with a token that is valid now.
    pub async fn open(
        ctx: &'a Context,
        integration: &'a IntegrationRecord,
    ) -> Result<Connection<'a>, AppError> {
        let auth = current_auth(ctx, integration).await?;
        Ok(Connection {
            ctx,
            integration,
            client: ctx.crms.client(integration.provider, auth.clone()),
            auth,
            recovered: false,
        })
    }

    /// After the CRM refused the credentials in use: an OAuth token is refreshed (unless another call
    /// has refreshed it meanwhile) and the client replaced, once. Credentials that cannot be recovered
    /// (an API key, a refused refresh, a second refusal) set the integration `needs_reauth`; the error
    /// says so.
    pub async fn recover(&mut self) -> Result<(), AppError> {
        let provider = self.integration.provider;
        if self.recovered {
            return Err(needs_reauth(self.ctx, self.integration).await);
        }
        self.recovered = true;
        let CrmAuth::OAuth { access_token } = &self.auth else {
            return Err(needs_reauth(self.ctx, self.integration).await);
        };
        let refused = access_token.clone();
        let auth = refresh(self.ctx, self.integration, Need::Refused(refused)).await?;
        tracing::info!(
            provider = provider.as_str(),
            "the CRM refused a token; retrying with a fresh one"
        );
        self.client = self.ctx.crms.client(provider, auth.clone());
        self.auth = auth;
        Ok(())
    }
}

/// Sets the integration `needs_reauth` (the CRM refuses its credentials) and returns the error to
/// answer with.
async fn needs_reauth(ctx: &Context, integration: &IntegrationRecord) -> AppError {
    let sentence = format!(
        "{} refused the credentials; reconnect the integration.",
        integration.provider.label()
    );
    match ctx
        .store
        .mark_needs_reauth(integration.user_id, integration.id, &sentence)
        .await
    {
        Ok(()) => tracing::warn!(
            provider = integration.provider.as_str(), integration = %integration.id,
            "the CRM refuses the credentials; the integration needs the user to connect again"
        ),
        Err(e) => tracing::error!(error = %e, "cannot mark an integration needs_reauth"),
    }
    AppError::InvalidCredentials(sentence)
}

/// Why a token is refreshed.
enum Need {
    /// It expires within [`REFRESH_MARGIN_SECS`].
    Expiring,
    /// The CRM refused this access token.
    Refused(String),
}

/// The region numbers written without a country code are read in for `integration`: its own, else its
/// CRM's default.
pub fn phone_region(ctx: &Context, integration: &IntegrationRecord) -> crmsync_domain::Region {
    integration.phone_region.unwrap_or_else(|| {
        crmsync_crm::kind(integration.provider).phone_region(&ctx.crms.config.settings)
    })
}

/// The integration's credentials, refreshed if they are about to expire.
pub async fn current_auth(
    ctx: &Context,
    integration: &IntegrationRecord,
) -> Result<CrmAuth, AppError> {
    let opened = open(ctx, integration)?;
    if opened.needs_reseal {
        // Sealed by the previous key: move it to the current one (best effort, it is re-tried next time).
        match ctx
            .vault
            .seal(integration.id, integration.provider, &opened.credentials)
        {
            Ok(sealed) => {
                if let Err(e) = ctx
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
        Credentials::OAuth { .. } => refresh(ctx, integration, Need::Expiring).await,
    }
}

/// Refreshes under the row lock; returns the token to use.
async fn refresh(
    ctx: &Context,
    integration: &IntegrationRecord,
    need: Need,
) -> Result<CrmAuth, AppError> {
    let locked = ctx
        .store
        .lock_integration(integration.user_id, integration.id)
        .await?
        .ok_or_else(|| AppError::NotFound("The integration no longer exists.".into()))?;
    // Re-read under the lock: whoever held it before us may have refreshed already.
    let opened = match open(ctx, &locked.record) {
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
    let still_good = match &need {
        Need::Expiring => !expiring(expires_at),
        // Someone refreshed since the refused token was read: use theirs.
        Need::Refused(refused) => access_token != *refused,
    };
    if still_good {
        release(locked).await;
        return Ok(CrmAuth::OAuth { access_token });
    }
    let provider = locked.record.provider;
    let Some(refresh_token) = refresh_token else {
        release(locked).await;
        return Err(needs_reauth(ctx, integration).await);
    };
    let cfg = match oauth_config(ctx, provider) {
        Ok(cfg) => cfg,
        Err(e) => {
            release(locked).await;
            return Err(e);
        }
    };
    match oauth::refresh(&ctx.crms.http, &cfg, &refresh_token).await {
        Ok(tokens) => {
            let (credentials, expires) = stored_credentials(tokens, Some(refresh_token));
            let access_token = match &credentials {
                Credentials::OAuth { access_token, .. } => access_token.clone(),
                Credentials::ApiKey { key } => key.clone(),
            };
            let sealed = ctx.vault.seal(locked.record.id, provider, &credentials)?;
            locked.save_credentials(&sealed, expires).await?;
            tracing::info!(provider = provider.as_str(), "OAuth token refreshed");
            Ok(CrmAuth::OAuth { access_token })
        }
        // The grant is refused (revoked, expired): only the user can connect again.
        Err(CrmError::InvalidCredentials) => {
            release(locked).await;
            Err(needs_reauth(ctx, integration).await)
        }
        Err(e) => {
            release(locked).await;
            Err(AppError::from_crm(provider, e))
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

/// Credentials to store for a connection.
pub struct NewConnection<'a> {
    pub auth_type: AuthType,
    pub credentials: &'a Credentials,
    pub expires: Option<DateTime<Utc>>,
    /// The CRM's id of the account, where the CRM tells it.
    pub account_id: Option<&'a str>,
}

/// Stores a new connection of `user` to `provider`, sealed to the integration's id: the existing row's
/// on a reconnect (its cursor and settings are kept, unless it is another CRM account). If another
/// request creates the row between our read and our write, the credentials are sealed again to its id.
pub async fn save_connection(
    ctx: &Context,
    user: uuid::Uuid,
    provider: Provider,
    new: NewConnection<'_>,
) -> Result<IntegrationRecord, AppError> {
    for _ in 0..2 {
        let existing = ctx.store.integration_by_provider(user, provider).await?;
        let id = existing.map(|i| i.id).unwrap_or_else(uuid::Uuid::new_v4);
        let sealed = ctx.vault.seal(id, provider, new.credentials)?;
        if let Some(record) = ctx
            .store
            .connect_integration(
                user,
                id,
                provider,
                new.auth_type,
                &sealed,
                new.expires,
                new.account_id,
            )
            .await?
        {
            tracing::info!(provider = provider.as_str(), %user, integration = %id, "CRM connected");
            crate::live::resubscribe(ctx, &record).await;
            return Ok(record);
        }
    }
    Err(AppError::internal(
        "could not store the integration after two attempts",
    ))
}

/// Longest API key accepted.
const MAX_API_KEY_LEN: usize = 1024;

/// Connects `provider` by API key, after checking the key with one cheap CRM call. A refused key is a
/// 422 and nothing is stored.
pub async fn connect_api_key(
    ctx: &Context,
    user: uuid::Uuid,
    provider: Provider,
    api_key: &str,
) -> Result<IntegrationRecord, AppError> {
    if !crmsync_crm::kind(provider).accepts_api_key() {
        return Err(AppError::BadRequest(format!(
            "{} connects through OAuth: GET /api/integrations/{provider}/oauth/start.",
            provider.label()
        )));
    }
    let key = api_key.trim();
    if key.is_empty() || key.len() > MAX_API_KEY_LEN || key.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "`apiKey` must be a non-empty key of at most 1024 printable characters.".into(),
        ));
    }
    let client = ctx.crms.client(provider, CrmAuth::ApiKey(key.to_owned()));
    // Checks the key, and tells the account where the CRM can (else one cheap call checks it).
    let account = client
        .account()
        .await
        .map_err(|e| AppError::from_crm(provider, e))?;
    if account.id.is_none() {
        client
            .verify_credentials()
            .await
            .map_err(|e| AppError::from_crm(provider, e))?;
    }
    let credentials = Credentials::ApiKey {
        key: key.to_owned(),
    };
    let connection = NewConnection {
        auth_type: AuthType::ApiKey,
        credentials: &credentials,
        expires: None,
        account_id: account.id.as_deref(),
    };
    save_connection(ctx, user, provider, connection).await
}
