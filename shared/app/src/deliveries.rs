//! The push deliveries of one integration: what is waiting, failed, delivered or skipped ([`list`]),
//! and sending the failed and waiting ones again now ([`retry`]).
//!
//! Every call is the user's: another user's integration answers exactly as an unknown one does
//! (`NotFound`, the sentence of [`crate::integrations`]).

use std::time::Instant;

use crmsync_domain::{DeliveryStatus, Trigger};
use crmsync_store::{DeliveryPage, LogCursor};
use serde::Serialize;
use uuid::Uuid;

use crate::push::{self, DRAIN_BATCH};
use crate::{AppError, Context};

fn not_found() -> AppError {
    AppError::NotFound("No such integration.".into())
}

/// A page of the deliveries of `user`'s integration `integration` (of one status, when given),
/// newest first, strictly older than `before`.
pub async fn list(
    ctx: &Context,
    user: Uuid,
    integration: Uuid,
    status: Option<DeliveryStatus>,
    before: Option<LogCursor>,
    limit: u32,
) -> Result<DeliveryPage, AppError> {
    ctx.store
        .deliveries(user, integration, status, before, limit)
        .await?
        .ok_or_else(not_found)
}

/// What a retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retried {
    /// Deliveries made due again: failed ones made pending, waiting ones brought forward to now.
    pub retried: u64,
    /// Deliveries now in the CRM.
    pub pushed: usize,
    /// Deliveries that failed again (tried again later, or given up).
    pub failed: usize,
    /// Due deliveries not pushed in this call (deferred by the CRM's pacing, or left at the
    /// deadline): the scheduled run takes them.
    pub pending: usize,
}

/// Makes the failed deliveries of `user`'s integration `integration` pending again and its waiting
/// ones due now (not one being pushed at this moment), then pushes its due deliveries until
/// `deadline`, as `POST /api/integrations/{id}/sync` does after its pull. A paused integration (or
/// one that needs its credentials again) pushes nothing: its deliveries go out once it is active.
pub async fn retry(
    ctx: &Context,
    user: Uuid,
    integration: Uuid,
    deadline: Instant,
) -> Result<Retried, AppError> {
    let retried = ctx
        .store
        .retry_deliveries(user, integration)
        .await?
        .ok_or_else(not_found)?;
    let due = ctx
        .store
        .due_deliveries(user, Some(integration), DRAIN_BATCH)
        .await?;
    let tally = push::process_in_order(ctx, user, &due, Trigger::Manual, deadline).await;
    tracing::info!(
        %user, %integration, retried, pushed = tally.pushed, failed = tally.failed,
        "deliveries retried"
    );
    Ok(Retried {
        retried,
        pushed: tally.pushed,
        failed: tally.failed,
        pending: due.len().saturating_sub(tally.pushed + tally.failed),
    })
}
