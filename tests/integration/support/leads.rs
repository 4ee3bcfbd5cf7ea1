//! Leads as the dashboard's webhook sends them: the bodies, the delivery to `lead-webhook` (with the
//! shared `x-webhook-secret`), and what a CRM holds afterwards.

use crmsync_domain::{PhoneNumber, Provider, Region};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::env::{Env, Reply, Route, WEBHOOK_SECRET};

/// The path of the `lead-webhook` function.
pub const WEBHOOK: &str = "/api/webhooks/lead-created";

/// A `lead.created` envelope with a low risk score (5) and a fixed update time.
pub fn lead(user: Uuid, id: &str, phone: &str, last: &str) -> Value {
    json!({
        "event": "lead.created",
        "lead": {
            "id": id, "userId": user, "firstName": "Dana", "lastName": last, "phone": phone,
            "email": format!("{}@example.com", id.to_lowercase()), "riskScore": 5, "source": "Echo Safe",
            "tags": ["buyer"], "notes": "Call back", "updatedAt": "2026-11-01T10:00:00Z"
        }
    })
}

/// A `lead.created` envelope with the risk score (or none) and the update time given.
pub fn scored_lead(
    user: Uuid,
    id: &str,
    phone: &str,
    risk: Option<i32>,
    last: &str,
    updated: &str,
) -> Value {
    json!({
        "event": "lead.created",
        "lead": {
            "id": id, "userId": user, "firstName": "Dana", "lastName": last, "phone": phone,
            "email": format!("{id}@example.com"), "riskScore": risk, "source": "Echo Safe",
            "tags": ["buyer"], "notes": "Asked for a call back", "updatedAt": updated
        }
    })
}

/// Delivers `body` to the `lead-webhook` handler of `app`, authenticated by `x-webhook-secret`.
pub async fn post_lead(env: &Env, app: &crmsync_lambda::App, body: &Value) -> Reply {
    let body = body.to_string();
    env.send_via(
        app,
        Route::LeadWebhook,
        "POST",
        WEBHOOK,
        "",
        &[],
        &[
            ("x-webhook-secret", WEBHOOK_SECRET),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .await
}

/// The CRM's people holding `phone`.
pub async fn people_with(env: &Env, provider: Provider, phone: &str) -> Vec<Value> {
    let want = PhoneNumber::parse(phone, Region::US).unwrap();
    env.sandbox_records(provider)
        .await
        .into_iter()
        .filter(|r| {
            r["phones"].as_array().into_iter().flatten().any(|p| {
                p.as_str()
                    .and_then(|p| PhoneNumber::parse(p, Region::US).ok())
                    .as_ref()
                    == Some(&want)
            })
        })
        .collect()
}

/// The number of lead events stored (deliveries recorded, duplicates not counted).
pub async fn lead_events(env: &Env) -> i64 {
    crmsync_testkit::connect(&env.db.url)
        .await
        .query_one("SELECT count(*) FROM lead_events", &[])
        .await
        .unwrap()
        .get(0)
}
