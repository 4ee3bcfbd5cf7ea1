//! Live updates: a CRM calls crmsync when an account's contacts change (`POST
//! /api/webhooks/crm/{provider}/{token}`). [`receive`] authenticates and reads the delivery; [`apply`]
//! does what it says: the records it names are read back from the CRM (the delivery is only a hint, and
//! may be late, repeated or out of order) and written as a sync writes them, or, where the delivery does
//! not say which records changed, the account's changes are pulled.

use std::time::Instant;

use crmsync_crm::CrmError;
use crmsync_crm::webhook::{Change, Headers, Refused};
use crmsync_domain::{Mapped, Provider};
use crmsync_store::{IntegrationRecord, SourceBatch};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::credentials::{Connection, phone_region};
use crate::pull::{self, SyncRequest};
use crate::{AppError, Context};
use crmsync_domain::Trigger;

/// The SHA-256 of a callback token: what is stored, and looked up.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A delivery, authenticated and read.
#[derive(Debug, Clone)]
pub struct Received {
    pub integration: IntegrationRecord,
    /// What changed; `None` for a delivery done before (a replay or a retry): nothing to do.
    pub change: Option<Change>,
    /// The CRM's id of the delivery, to record with [`done`] once it is done.
    pub receipt: Option<String>,
}

/// Authenticates a delivery to the callback address with `token` and reads it. An unknown token is
/// `NotFound`; a forged or foreign delivery is refused (`Unauthorized`, `BadRequest`); a delivery
/// done before (its id recorded by [`done`]) is received with nothing to do. Writes nothing.
pub async fn receive(
    ctx: &Context,
    provider: Provider,
    token: &str,
    headers: &(dyn Headers + Sync),
    body: &[u8],
) -> Result<Received, AppError> {
    let unknown = || AppError::NotFound("No integration has this webhook address.".into());
    if token.is_empty() || token.len() > 200 {
        return Err(unknown());
    }
    let integration = ctx
        .store
        .integration_by_webhook_token(provider, &token_hash(token))
        .await?
        .ok_or_else(unknown)?;
    let hint = crmsync_crm::kind(provider)
        .read_webhook(
            &ctx.crms.config,
            headers,
            body,
            integration.account_id.as_deref(),
        )
        .map_err(|e| match e {
            Refused::BadSignature => AppError::Unauthorized(e.to_string()),
            Refused::OtherAccount | Refused::Malformed(_) => AppError::BadRequest(e.to_string()),
        })?;
    if let Some(receipt) = &hint.receipt
        && ctx
            .store
            .receipt_taken(integration.user_id, integration.id, receipt)
            .await?
    {
        return Ok(Received {
            integration,
            change: None,
            receipt: hint.receipt,
        });
    }
    Ok(Received {
        integration,
        change: Some(hint.change),
        receipt: hint.receipt,
    })
}

/// Records that the delivery was done: the same delivery again changes nothing. Recorded only once it
/// was done, so that a delivery that failed half way is done again when the CRM sends it again (doing
/// one twice reads the same records twice, and writes nothing the second time).
pub async fn done(ctx: &Context, received: &Received) -> Result<(), AppError> {
    if let Some(receipt) = &received.receipt {
        let i = &received.integration;
        ctx.store.take_receipt(i.user_id, i.id, receipt).await?;
    }
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Records read back from the CRM.
    pub read: u64,
    /// Contacts written (new or changed).
    pub upserted: u64,
    /// Records now known deleted.
    pub deleted: u64,
    /// Whether the account's changes were pulled instead (the delivery named no records).
    pub pulled: bool,
    /// Whether everything the delivery named was read (`false`: the deadline came first).
    pub complete: bool,
}

/// Does what a delivery said: reads the named records back and writes them (a record the CRM no longer
/// shows, or one deleted, is marked gone), holding the integration's sync lock so that a sync running
/// at the same time cannot write an older version over them; or pulls the account's changes. `Busy`
/// while a sync of the integration runs (the caller tries again later). Past `deadline` no more records
/// are read (`complete: false`): those are left to the scheduled poll.
pub async fn apply(
    ctx: &Context,
    integration: &IntegrationRecord,
    change: &Change,
    deadline: Option<Instant>,
) -> Result<Applied, AppError> {
    let (changed, deleted) = match change {
        Change::Nothing => {
            return Ok(Applied {
                complete: true,
                ..Applied::default()
            });
        }
        Change::Account => {
            let synced = pull::sync(
                ctx,
                integration,
                SyncRequest::default(),
                Trigger::Webhook,
                deadline,
            )
            .await?;
            return Ok(Applied {
                read: synced.total_fetched,
                upserted: synced.upserted,
                deleted: synced.deleted,
                pulled: true,
                complete: synced.complete,
            });
        }
        Change::Records { changed, deleted } => (changed, deleted),
    };
    let (user, id, provider) = (integration.user_id, integration.id, integration.provider);
    let lease = ctx.store.try_lock_sync(user, id).await?.ok_or_else(|| {
        AppError::Busy(format!(
            "A sync of this {} integration is running.",
            provider.label()
        ))
    })?;
    let result = match read_back(ctx, integration, changed, deleted, deadline).await {
        Ok((batch, read, complete)) => ctx
            .store
            .write_records(user, id, batch)
            .await
            .map(|report| Applied {
                read,
                upserted: report.upserted(),
                deleted: report.deleted,
                pulled: false,
                complete,
            })
            .map_err(AppError::from),
        Err(e) => Err(e),
    };
    lease.release().await?;
    result
}

/// The records `changed` as the CRM shows them now, and `deleted`, as one batch of sources.
async fn read_back(
    ctx: &Context,
    integration: &IntegrationRecord,
    changed: &[String],
    deleted: &[String],
    deadline: Option<Instant>,
) -> Result<(SourceBatch, u64, bool), AppError> {
    let provider = integration.provider;
    let region = phone_region(ctx, integration);
    let mut conn = Connection::open(ctx, integration).await?;
    let mut batch = SourceBatch {
        gone: deleted.to_vec(),
        ..SourceBatch::default()
    };
    let mut read = 0;
    for external_id in changed {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok((batch, read, false));
        }
        let record = loop {
            match conn.client.read(external_id).await {
                Err(CrmError::InvalidCredentials) => conn.recover().await?,
                other => break other,
            }
        };
        match record {
            Ok(value) => {
                read += 1;
                match conn.client.map_record(&value, region) {
                    Mapped::Contact(c) if !c.deleted => batch.live.push(c),
                    // Deleted, trashed or archived, or without a usable phone now: no longer a source.
                    Mapped::Contact(c) => batch
                        .gone
                        .push(c.external_id.unwrap_or_else(|| external_id.clone())),
                    Mapped::Skipped(s) => batch
                        .gone
                        .push(s.external_id.unwrap_or_else(|| external_id.clone())),
                }
            }
            Err(CrmError::NotFound) => batch.gone.push(external_id.clone()),
            Err(e) => return Err(AppError::from_crm(provider, e)),
        }
    }
    Ok((batch, read, true))
}

/// The callback address of an integration of `provider` with `token`.
fn callback(base: &str, provider: Provider, token: &str) -> String {
    format!("{base}/api/webhooks/crm/{}/{token}", provider.as_str())
}

/// After a connect or a reconnect: what the integration had subscribed is removed, and, when crmsync
/// has a public address ([`Context::webhook_base`]), the account is subscribed anew with a new secret
/// token (the old one stops working). Whatever the CRM answers, the connection stands: an integration
/// the CRM will not call is polled (logged).
pub async fn resubscribe(ctx: &Context, integration: &IntegrationRecord) {
    unsubscribe(ctx, integration).await;
    let Some(base) = ctx.webhook_base.as_deref() else {
        return;
    };
    let provider = integration.provider;
    let conn = match Connection::open(ctx, integration).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(provider = provider.as_str(), integration = %integration.id, error = %e,
                "cannot subscribe to the CRM's changes; the integration is polled");
            return;
        }
    };
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    match conn
        .client
        .subscribe(&callback(base, provider, &token))
        .await
    {
        Ok(Some(subscription)) => {
            let value = serde_json::to_value(&subscription).unwrap_or_default();
            let stored = ctx
                .store
                .set_live(
                    integration.user_id,
                    integration.id,
                    &token_hash(&token),
                    &value,
                )
                .await;
            match stored {
                Ok(true) => {
                    tracing::info!(provider = provider.as_str(), integration = %integration.id,
                    "the CRM calls crmsync when contacts change")
                }
                // Disconnected meanwhile, or the write failed: take the subscription back.
                other => {
                    if let Err(e) = other {
                        tracing::error!(error = %e, "cannot store a webhook subscription");
                    }
                    if let Err(e) = conn.client.unsubscribe(&subscription).await {
                        tracing::warn!(provider = provider.as_str(), error = %e,
                            "cannot remove a webhook subscription that was not stored");
                    }
                }
            }
        }
        Ok(None) => tracing::info!(provider = provider.as_str(), integration = %integration.id,
            "the CRM does not allow webhooks for this account; the integration is polled"),
        Err(e) => tracing::warn!(provider = provider.as_str(), integration = %integration.id,
            error = %e, "cannot subscribe to the CRM's changes; the integration is polled"),
    }
}

/// Ends the integration's live updates: its token stops working at once, and what it had subscribed is
/// removed at the CRM (best effort: a CRM that no longer accepts the credentials keeps calling an
/// address that now answers 404).
pub async fn unsubscribe(ctx: &Context, integration: &IntegrationRecord) {
    let provider = integration.provider;
    let stored = match ctx
        .store
        .clear_live(integration.user_id, integration.id)
        .await
    {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot end an integration's live updates");
            return;
        }
    };
    let Ok(subscription) = serde_json::from_value::<crmsync_crm::Subscription>(stored) else {
        return;
    };
    let result = match Connection::open(ctx, integration).await {
        Ok(conn) => conn
            .client
            .unsubscribe(&subscription)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(provider = provider.as_str(), integration = %integration.id, error = %e,
            "cannot remove the CRM's webhook subscription");
    }
}
