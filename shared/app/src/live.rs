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

/// A delivery that was taken.
#[derive(Debug, Clone)]
pub struct Received {
    pub integration: IntegrationRecord,
    /// What changed; `None` for a delivery taken before (a replay or a retry): nothing to do.
    pub change: Option<Change>,
}

/// Authenticates a delivery to the callback address with `token` and reads it. An unknown token is
/// `NotFound`; a forged or foreign delivery is refused (`Unauthorized`, `BadRequest`); a delivery
/// whose id was taken before is received with nothing to do. Nothing is written but the receipt.
pub async fn receive(
    ctx: &Context,
    provider: Provider,
    token: &str,
    headers: &dyn Headers,
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
        && !ctx
            .store
            .take_receipt(integration.user_id, integration.id, receipt)
            .await?
    {
        return Ok(Received {
            integration,
            change: None,
        });
    }
    Ok(Received {
        integration,
        change: Some(hint.change),
    })
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
}

/// Does what a delivery said: reads the named records back and writes them (a record the CRM no longer
/// shows, or one deleted, is marked gone), holding the integration's sync lock so that a sync running
/// at the same time cannot write an older version over them; or pulls the account's changes. `Busy`
/// while a sync of the integration runs (the caller tries again later).
pub async fn apply(
    ctx: &Context,
    integration: &IntegrationRecord,
    change: &Change,
    deadline: Option<Instant>,
) -> Result<Applied, AppError> {
    let (changed, deleted) = match change {
        Change::Nothing => return Ok(Applied::default()),
        Change::Account => {
            pull::sync(
                ctx,
                integration,
                SyncRequest::default(),
                Trigger::Webhook,
                deadline,
            )
            .await?;
            return Ok(Applied {
                pulled: true,
                ..Applied::default()
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
    let result = read_back(ctx, integration, changed, deleted).await;
    lease.release().await?;
    let (batch, read) = result?;
    let report = ctx.store.write_records(user, id, batch).await?;
    Ok(Applied {
        read,
        upserted: report.upserted(),
        deleted: report.deleted,
        pulled: false,
    })
}

/// The records `changed` as the CRM shows them now, and `deleted`, as one batch of sources.
async fn read_back(
    ctx: &Context,
    integration: &IntegrationRecord,
    changed: &[String],
    deleted: &[String],
) -> Result<(SourceBatch, u64), AppError> {
    let provider = integration.provider;
    let region = phone_region(ctx, integration);
    let mut conn = Connection::open(ctx, integration).await?;
    let mut batch = SourceBatch {
        gone: deleted.to_vec(),
        ..SourceBatch::default()
    };
    let mut read = 0;
    for external_id in changed {
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
    Ok((batch, read))
}
