//! `crm-webhook`: `POST /api/webhooks/crm/{provider}/{token}`: a CRM says an account's contacts changed
//! (Follow Up Boss webhooks, Lofty's Lead Info list, REX admin webhooks). The address's secret token
//! says which integration (and Follow Up Boss's signature, where a system key is configured, that Follow
//! Up Boss sent it); the delivery is only a hint: the records it names are read back from the CRM and
//! written, or the account's changes pulled, within the CRM's deadline (Follow Up Boss: 10 s). A
//! delivery done before is answered at once; one that could not be done is answered with an error, and
//! the CRM sends it again.

use std::time::{Duration, Instant};

use crmsync_app::AppError;
use crmsync_app::live;
use crmsync_app::queue::{self, Reason};
use crmsync_domain::{Provider, Trigger};
use http::StatusCode;
use serde::Serialize;

use crate::error::ApiError;
use crate::http::{Response, check_body_size, json};
use crate::request::{self, respond};
use crate::wiring::App;

/// How long a delivery is worked on before the answer (Follow Up Boss wants one within 10 s; the rest
/// of what it named is queued, or, without a queue, left to the scheduled poll).
const BUDGET: Duration = Duration::from_secs(7);

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    accepted: bool,
    /// Done before: nothing was done this time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    #[serde(flatten)]
    applied: live::Applied,
    /// What the deadline left undone (or all of it, while a sync of the integration was running) was
    /// queued: a sync of the account finishes it in the background (the running one syncs again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    queued: bool,
}

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(receive(app, &req).await)
}

async fn receive(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: &[u8] = req.body().as_ref();
    check_body_size(body)?;
    // An unknown CRM is as unknown as an unknown token.
    let unknown = || ApiError::not_found("No integration has this webhook address.");
    let provider: Provider = request::path_param(req, "provider", "crm")
        .and_then(|p| p.parse().ok())
        .ok_or_else(unknown)?;
    let token = request::path_param(req, "token", provider.as_str()).ok_or_else(unknown)?;
    let ctx = app.context().await?;
    let received = live::receive(ctx, provider, &token, req.headers(), body).await?;
    let Some(change) = &received.change else {
        let reply = Reply {
            accepted: true,
            duplicate: true,
            applied: live::Applied {
                complete: true,
                ..live::Applied::default()
            },
            queued: false,
        };
        return Ok(json(StatusCode::OK, &reply));
    };
    let deadline = request::deadline(req).map_or(started + BUDGET, |d| d.min(started + BUDGET));
    let applied = match live::apply(ctx, &received.integration, change, Some(deadline)).await {
        // A sync of the integration is running: with a queue, it is marked to sync again when done
        // (below), which reads this change; without, 409 and the CRM sends the delivery again.
        Err(AppError::Busy(_)) if ctx.queue.is_some() => live::Applied::default(),
        applied => applied?,
    };
    // The rest, with a queue, is a sync of the account in the background (or, when one is queued or
    // running already, that one syncs again when done); without, the next scheduled poll's. Queued
    // before the delivery counts as done: if it cannot be, the CRM sends the delivery again.
    let queued = !applied.complete && ctx.queue.is_some();
    if queued {
        queue::request(
            ctx,
            &received.integration,
            Reason::Webhook,
            Trigger::Webhook,
        )
        .await?;
    }
    live::done(ctx, &received).await?;
    tracing::info!(
        provider = provider.as_str(), integration = %received.integration.id,
        read = applied.read, upserted = applied.upserted, deleted = applied.deleted,
        pulled = applied.pulled, complete = applied.complete, "CRM webhook done"
    );
    Ok(json(
        StatusCode::OK,
        &Reply {
            accepted: true,
            duplicate: false,
            applied,
            queued,
        },
    ))
}
