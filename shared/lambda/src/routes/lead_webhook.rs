//! `lead-webhook`: `POST /api/webhooks/lead-created`: a lead was created or updated; it is recorded in
//! the outbox and pushed to the user's CRMs within a time budget, and the sender gets 202.

use std::time::{Duration, Instant};

use crmsync_app::push;
use crmsync_domain::{LeadError, LeadEvent, Trigger};
use http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Response, check_body_size, json, parse_json};
use crate::request::respond;
use crate::webhook::authenticate_webhook;
use crate::wiring::App;

/// How long the webhook spends pushing before it answers (the rest is left to the scheduled run).
const WEBHOOK_BUDGET: Duration = Duration::from_secs(8);

/// The 202 answer of the webhook.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookReply {
    accepted: bool,
    event_id: Option<Uuid>,
    /// Integrations the lead goes to.
    integrations: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    skipped: usize,
    pushed: usize,
    failed: usize,
    /// Deliveries left for the scheduled run.
    pending: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<push::Accepted> for WebhookReply {
    fn from(a: push::Accepted) -> Self {
        WebhookReply {
            accepted: true,
            event_id: Some(a.event_id),
            integrations: a.integrations,
            duplicate: a.duplicate,
            skipped: a.skipped,
            pushed: a.pushed,
            failed: a.failed,
            pending: a.pending,
            reason: None,
        }
    }
}

pub async fn handle(app: &App, req: lambda_http::Request) -> Response {
    respond(webhook(app, &req).await)
}

async fn webhook(app: &App, req: &lambda_http::Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: &[u8] = req.body().as_ref();
    check_body_size(body)?;
    let ready = app.ready().await?;
    authenticate_webhook(&ready.secrets.webhook_secret, req.headers(), body)?;
    let value: serde_json::Value = parse_json(body)?;
    let event = match LeadEvent::from_json(&value) {
        Ok(event) => event,
        Err(LeadError::UnsupportedEvent(what)) => {
            // A delete, or an event we do not push: acknowledged, so the sender does not retry it.
            let reply = WebhookReply {
                reason: Some(format!("{what} events are not pushed")),
                ..WebhookReply::default()
            };
            return Ok(json(StatusCode::ACCEPTED, &reply));
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "The lead event is not valid: {e}."
            )));
        }
    };
    let accepted = push::accept(
        &ready.ctx,
        event,
        Trigger::Webhook,
        started + WEBHOOK_BUDGET,
    )
    .await?;
    Ok(json(StatusCode::ACCEPTED, &WebhookReply::from(accepted)))
}
