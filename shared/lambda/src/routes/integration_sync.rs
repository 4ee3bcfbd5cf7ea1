//! `integration-sync`: `POST /api/integrations/{id}/sync?since=&full=`: run that integration now — a
//! pull, then the push of its due deliveries.
//!
//! The call claims the integration on the sync queue first (`crmsync_app::queue`): while a sync of it
//! is queued or running, the call answers 202 (it is done by that run; its waiting deliveries are made
//! due for it), so concurrent calls run it once. Otherwise it runs here; cut short by the deadline, the
//! rest is queued and the answer says `complete: false` with the progress so far.

use std::time::{Duration, Instant};

use crmsync_app::integrations;
use crmsync_app::queue::{self, NowRan};
use http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Response, json};
use crate::request::{self, respond};
use crate::wiring::{App, limits};

/// How long a run may take when the runtime gives no deadline (a local emulator).
const NO_DEADLINE: Duration = Duration::from_secs(600);
/// How long the integration stays claimed after this call's deadline (a Lambda killed mid-call leaves
/// its claim to expire then).
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// The answer when the sync ran here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Ran {
    #[serde(flatten)]
    synced: crmsync_app::push::IntegrationSynced,
    /// The rest of a sync cut short goes on in the background.
    queued: bool,
    progress: queue::Progress,
}

/// The answer when a sync of the integration is queued or running already (202).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Queued {
    complete: bool,
    queued: bool,
    /// `true`: queued or running before this call (which added nothing); `false`: queued by it.
    already_queued: bool,
    progress: queue::Progress,
}

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(sync(app, &req).await)
}

async fn sync(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let caller = app.authenticate(req).await?;
    let raw = request::path_param(req, "id", "integrations").unwrap_or_default();
    let id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::bad_request("The integration id is not a valid id."))?;
    let sync = request::sync_request(req)?;
    let ctx = app.context().await?;
    let integration = integrations::record(ctx, caller.user_id, id).await?;
    let deadline = request::deadline(req).unwrap_or_else(|| Instant::now() + NO_DEADLINE);
    let queued = async |already_queued: bool| -> Result<Response, ApiError> {
        let body = Queued {
            complete: false,
            queued: true,
            already_queued,
            progress: queue::progress(ctx, &integration).await?,
        };
        Ok(json(StatusCode::ACCEPTED, &body))
    };
    // Held as long as this call may run, and a little more.
    let hold = deadline.saturating_duration_since(Instant::now()) + CLAIM_MARGIN;
    let Some(claim) = queue::claim_now(ctx, &integration, hold).await? else {
        // Queued or running already (costs no CRM call, so no token of the caller's limit).
        return queued(true).await;
    };
    if let Err(e) = app.limit("integration-sync", &caller, limits::SYNC).await {
        queue::release(ctx, &claim).await?;
        return Err(e);
    }
    match queue::run_now(ctx, &integration, claim, sync.since, sync.full, deadline).await? {
        NowRan::Queued => queued(false).await,
        NowRan::Ran { synced, queued } => {
            let body = Ran {
                progress: queue::progress(ctx, &integration).await?,
                synced,
                queued,
            };
            Ok(json(StatusCode::OK, &body))
        }
    }
}
