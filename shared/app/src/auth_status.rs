//! Whether a user's CRM connection works: connected or not, and whether the CRM takes the credentials
//! now (an expired OAuth token is refreshed first).

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_crm::CrmError;
use crmsync_domain::Provider;
use serde::Serialize;
use uuid::Uuid;

use crate::credentials::Connection;
use crate::{AppError, Context};

/// The state of a user's connection to a CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    pub provider: Provider,
    pub connected: bool,
    /// The integration's status, or `disconnected`.
    pub status: String,
    pub token_valid: bool,
    pub expires_at: Option<String>,
    pub last_sync_at: Option<String>,
    pub integration_id: Option<Uuid>,
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The state of `user`'s connection to `provider`, asking the CRM whether it takes the credentials.
pub async fn auth_status(
    ctx: &Context,
    user: Uuid,
    provider: Provider,
) -> Result<AuthStatus, AppError> {
    let Some(integration) = ctx.store.integration_by_provider(user, provider).await? else {
        return Ok(AuthStatus {
            provider,
            connected: false,
            status: "disconnected".into(),
            token_valid: false,
            expires_at: None,
            last_sync_at: None,
            integration_id: None,
        });
    };
    // Refreshes an expired OAuth token, then asks the CRM whether it takes the credentials (a refused
    // token is refreshed once; credentials refused for good set the integration `needs_reauth`).
    let token_valid = match Connection::open(ctx, &integration).await {
        Ok(mut conn) => loop {
            match conn.client.verify_credentials().await {
                Ok(()) => break true,
                Err(CrmError::InvalidCredentials) => {
                    if conn.recover().await.is_err() {
                        break false;
                    }
                }
                Err(e) => return Err(AppError::from_crm(provider, e)),
            }
        },
        Err(AppError::InvalidCredentials(_)) => false,
        Err(e) => return Err(e),
    };
    let current = ctx
        .store
        .get_integration(user, integration.id)
        .await?
        .unwrap_or(integration);
    Ok(AuthStatus {
        provider,
        connected: true,
        status: current.status.as_str().to_owned(),
        token_valid,
        expires_at: rfc3339(current.token_expires_at),
        last_sync_at: rfc3339(current.last_sync_at),
        integration_id: Some(current.id),
    })
}
