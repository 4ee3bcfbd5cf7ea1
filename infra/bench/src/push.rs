//! Push pacing: leads delivered to a sandbox Follow Up Boss whose rate limit is set low, against the
//! rate that limit allows at the requests each lead took (the searches of its lookup by phone, then the create).
//!
//! * **webhook**: the leads are posted one after the other to the real `lead-webhook` handler, which
//!   records each in the outbox and pushes it within its time budget.
//! * **outbox drain**: the leads are recorded in the outbox first (as the webhook does), then one
//!   `push::drain_all` (the scheduled run's push) delivers them.
//!
//! Both go through the account's shared token bucket in DynamoDB (moto), sized from the limit the
//! sandbox advertises in its headers. Afterwards every lead must be in the CRM exactly once.

use std::time::{Duration, Instant};

use crmsync_app::push;
use crmsync_domain::{LeadEvent, PhoneNumber, Region, Trigger};
use crmsync_lambda::routes;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Error;
use crate::stack::{Stack, WEBHOOK_SECRET, connect_fub, event};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Webhook,
    Drain,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Webhook => "lead-webhook, one lead after the other",
            Mode::Drain => "outbox drained by `push::drain_all`",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PushRun {
    pub mode: Mode,
    pub leads: usize,
    /// From the first push to the last delivery.
    pub secs: f64,
    /// Leads found in the CRM afterwards, exactly once each.
    pub delivered: usize,
    pub missing: usize,
    pub doubled: usize,
    /// What the sandbox counted during the run.
    pub crm_requests: u64,
    pub served_429: u64,
}

/// A valid US number per lead, none of them in the seeded data (the sandbox was reset).
fn lead_phone(i: usize) -> String {
    format!("+1 646 {:03} {:04}", 200 + i / 10_000, i % 10_000)
}

fn lead_body(i: usize, user: Uuid, run: &str) -> Value {
    json!({"event": "lead.created", "lead": {
        "id": format!("bench-{run}-{i}"),
        "userId": user,
        "firstName": "Bench",
        "lastName": format!("Lead{i}"),
        "phone": lead_phone(i),
        "email": format!("lead{i}.{run}@example.com"),
        "riskScore": 10,
        "source": "crmsync bench",
        "updatedAt": "2026-11-21T09:00:00Z",
    }})
}

fn stat(stats: &Value, name: &str) -> u64 {
    stats["providers"]["fub"][name].as_u64().unwrap_or(0)
}

pub async fn run(
    stack: &Stack,
    mode: Mode,
    leads: usize,
    limit: u32,
    window_secs: u32,
) -> Result<PushRun, Error> {
    for i in 0..leads {
        PhoneNumber::parse(&lead_phone(i), Region::default())
            .map_err(|e| format!("bench phone {} is not valid: {e}", lead_phone(i)))?;
    }
    stack
        .control(reqwest::Method::POST, "/_sandbox/fub/reset", None)
        .await?;
    stack
        .control(
            reqwest::Method::PUT,
            "/_sandbox/fub/config",
            Some(
                json!({"rate_limit_global": limit, "rate_limit_events": limit,
                        "rate_limit_window_secs": window_secs}),
            ),
        )
        .await?;
    let d = stack.deploy().await?;
    let app = d.wiring.app().await?;
    let user = Uuid::new_v4();
    connect_fub(&app, &stack.http, user).await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let bodies: Vec<Value> = (0..leads).map(|i| lead_body(i, user, &run_id)).collect();
    let ctx = app.context().await.map_err(|e| e.detail().to_owned())?;

    if mode == Mode::Drain {
        for body in &bodies {
            let event = LeadEvent::from_json(body)?;
            let lead_id = event.payload.id.clone().unwrap_or_default();
            let recorded = push::record(ctx, event, Trigger::Webhook)
                .await
                .map_err(|e| e.detail())?;
            if recorded.outbox.pending.len() != 1 {
                return Err(format!("lead {lead_id} got no delivery").into());
            }
        }
    }

    // Fresh windows: the connect's calls do not count against the run.
    stack
        .control(
            reqwest::Method::POST,
            "/_sandbox/fub/rate-limits/reset",
            None,
        )
        .await?;
    let before = stack
        .control(reqwest::Method::GET, "/_sandbox/stats", None)
        .await?;
    let started = Instant::now();
    match mode {
        Mode::Webhook => {
            for body in &bodies {
                let text = body.to_string();
                let req = event(
                    "POST",
                    "/api/webhooks/lead-created",
                    "",
                    &[],
                    &[
                        ("x-webhook-secret", WEBHOOK_SECRET),
                        ("content-type", "application/json"),
                    ],
                    Some(&text),
                )?;
                let resp = routes::lead_webhook::handle(&app, req).await;
                if resp.status() != http::StatusCode::ACCEPTED {
                    return Err(format!("lead-webhook answered {}", resp.status()).into());
                }
            }
        }
        Mode::Drain => {
            push::drain_all(ctx, Instant::now() + Duration::from_secs(1800))
                .await
                .map_err(|e| e.detail().to_owned())?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = stack
        .control(reqwest::Method::GET, "/_sandbox/stats", None)
        .await?;

    let records = stack
        .control(reqwest::Method::GET, "/_sandbox/fub/records", None)
        .await?;
    let records = records["records"].as_array().cloned().unwrap_or_default();
    let (mut delivered, mut missing, mut doubled) = (0, 0, 0);
    for i in 0..leads {
        let phone = PhoneNumber::parse(&lead_phone(i), Region::default())?;
        let found = records
            .iter()
            .filter(|r| {
                r["phones"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .filter_map(Value::as_str)
                        .any(|p| phone.matches(p))
                })
            })
            .count();
        match found {
            0 => missing += 1,
            1 => delivered += 1,
            _ => doubled += 1,
        }
    }
    drop(app);
    stack.drop_deployment(&d).await?;
    Ok(PushRun {
        mode,
        leads,
        secs,
        delivered,
        missing,
        doubled,
        crm_requests: stat(&after, "requests") - stat(&before, "requests"),
        served_429: stat(&after, "served_429") - stat(&before, "served_429"),
    })
}
