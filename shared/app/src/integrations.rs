//! A user's integrations (list, connect by API key, read, change, disconnect) and their sync logs.
//!
//! Every call is the user's: the store runs it under Row Level Security as that user, so another user's
//! integration answers exactly as an unknown one does (`NotFound`). Credentials are never read here
//! except to be replaced.

use crmsync_domain::Provider;
use crmsync_store::{IntegrationPatch, IntegrationRecord, IntegrationView, LogCursor, SyncLogPage};
use uuid::Uuid;

use crate::{AppError, Context, credentials};

fn not_found() -> AppError {
    AppError::NotFound("No such integration.".into())
}

/// The integrations of `user`, oldest first.
pub async fn list(ctx: &Context, user: Uuid) -> Result<Vec<IntegrationView>, AppError> {
    Ok(ctx.store.integration_views(user).await?)
}

/// One integration of `user`.
pub async fn get(ctx: &Context, user: Uuid, id: Uuid) -> Result<IntegrationView, AppError> {
    ctx.store
        .integration_view(user, id)
        .await?
        .ok_or_else(not_found)
}

/// One integration of `user` as the sync works with it.
pub async fn record(ctx: &Context, user: Uuid, id: Uuid) -> Result<IntegrationRecord, AppError> {
    ctx.store
        .get_integration(user, id)
        .await?
        .ok_or_else(not_found)
}

/// A connection by API key, with the settings to apply once it is stored.
pub struct ApiKeyConnection<'a> {
    pub provider: Provider,
    pub api_key: &'a str,
    /// Settings given with the connection (a reconnect keeps the others).
    pub settings: IntegrationPatch,
}

/// What connecting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub integration: IntegrationView,
    /// A new integration, not a new key for the user's existing one.
    pub created: bool,
}

/// Connects `provider` for `user` by API key (checked with one CRM call first: a refused key stores
/// nothing), or replaces the key of the user's existing integration with that CRM.
pub async fn connect(
    ctx: &Context,
    user: Uuid,
    connection: ApiKeyConnection<'_>,
) -> Result<Connected, AppError> {
    let existing = ctx
        .store
        .integration_by_provider(user, connection.provider)
        .await?;
    let record =
        credentials::connect_api_key(ctx, user, connection.provider, connection.api_key).await?;
    let view = if connection.settings.is_empty() {
        ctx.store.integration_view(user, record.id).await?
    } else {
        ctx.store
            .update_integration(user, record.id, &connection.settings)
            .await?
    }
    // Disconnected by a concurrent request in between.
    .ok_or_else(not_found)?;
    let created = existing.is_none_or(|e| e.id != view.id);
    Ok(Connected {
        integration: view,
        created,
    })
}

/// Changes an integration's settings (at least one).
pub async fn update(
    ctx: &Context,
    user: Uuid,
    id: Uuid,
    patch: &IntegrationPatch,
) -> Result<IntegrationView, AppError> {
    if patch.is_empty() {
        return Err(AppError::BadRequest(
            "Nothing to change: give at least one of `autoSync`, `riskThreshold`, `status`, `phoneRegion`."
                .into(),
        ));
    }
    let view = ctx
        .store
        .update_integration(user, id, patch)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(%user, integration = %id, status = %view.status, "integration updated");
    Ok(view)
}

/// Disconnects an integration: the row and its sealed credentials are deleted; its logs stay.
pub async fn disconnect(ctx: &Context, user: Uuid, id: Uuid) -> Result<(), AppError> {
    // The CRM stops calling first (best effort: the token stops working with the row either way).
    if let Some(integration) = ctx.store.get_integration(user, id).await? {
        crate::live::unsubscribe(ctx, &integration).await;
    }
    if !ctx.store.delete_integration(user, id).await? {
        return Err(not_found());
    }
    tracing::info!(%user, integration = %id, "integration disconnected");
    Ok(())
}

/// A page of `user`'s sync logs (of one integration, when given), newest first, strictly older than
/// `before`.
pub async fn logs(
    ctx: &Context,
    user: Uuid,
    integration: Option<Uuid>,
    before: Option<LogCursor>,
    limit: u32,
) -> Result<SyncLogPage, AppError> {
    Ok(ctx
        .store
        .sync_logs(user, integration, before, limit)
        .await?)
}
