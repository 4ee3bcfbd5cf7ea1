//! Webhooks the sandbox sends when its records change, as each CRM sends them: subscriptions made
//! through each CRM's own registration API (its module), a journal of changes kept by the store while a
//! provider has a subscription, and one deliverer that batches those changes, signs and posts them, and
//! retries a delivery the receiver did not take.
//!
//! What every CRM documents the same way (crm-apis §1.6, §2.5, §3.6): payloads are thin or partial,
//! so a receiver reads the records back; deliveries are retried; one change may arrive more than once
//! and changes may arrive out of order. The sandbox does all three on purpose: each change is delivered
//! at least once, a batch names several records, and a failed delivery is retried after later ones.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::App;
use crate::config::{Provider, WebhookConfig};
use crate::store::Change;
use crate::util::{lock, now_ms};

/// A subscription.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Hook {
    pub id: String,
    /// The CRM's name of the event (FUB `peopleUpdated`), or of the list (Lofty `2`).
    pub event: String,
    pub url: String,
    /// Changes one delivery tells at most (Lofty's `limit`); `None`: `webhooks.max_ids`.
    pub limit: Option<usize>,
    pub created_ms: i64,
}

/// What the receiver did with one delivery.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivered {
    pub hook_id: String,
    pub event: String,
    pub url: String,
    /// Records the delivery named.
    pub ids: Vec<u64>,
    pub attempts: u32,
    /// The last answer's status (none: no answer within the deadline, or no connection).
    pub status: Option<u16>,
    pub ok: bool,
    pub at_ms: i64,
}

/// A provider's subscriptions and its recent deliveries.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub list: Vec<Hook>,
    next_id: u64,
    pub delivered: VecDeque<Delivered>,
}

/// Deliveries kept for `GET /_sandbox/{provider}/webhooks`.
const KEEP_DELIVERED: usize = 1000;

impl Hooks {
    /// Adds a subscription; returns it. Ids are `first_id`, `first_id + 1`, …
    pub(crate) fn add(
        &mut self,
        first_id: u64,
        event: &str,
        url: &str,
        limit: Option<usize>,
    ) -> Hook {
        let id = (first_id + self.next_id).to_string();
        self.next_id += 1;
        let hook = Hook {
            id,
            event: event.to_owned(),
            url: url.to_owned(),
            limit,
            created_ms: now_ms(),
        };
        self.list.push(hook.clone());
        hook
    }

    /// Removes a subscription; whether it existed.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|h| h.id != id);
        self.list.len() != before
    }

    fn record(&mut self, d: Delivered) {
        if self.delivered.len() == KEEP_DELIVERED {
            self.delivered.pop_front();
        }
        self.delivered.push_back(d);
    }
}

/// Whether `url` is one a CRM would call: HTTPS (all three require it: crm-apis §1.6, §2.5), or plain
/// HTTP to this machine, so that a local stack can subscribe.
pub(crate) fn callback_allowed(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => matches!(
            u.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        ),
        _ => false,
    }
}

/// One request the deliverer sends.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub hook_id: String,
    pub event: String,
    pub url: String,
    pub ids: Vec<u64>,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Takes the changes of `p` and makes the requests its subscriptions receive.
fn outgoing(app: &App, p: Provider, cfg: &WebhookConfig) -> Vec<Outgoing> {
    match p {
        Provider::Fub => {
            let mut guard = lock(&app.fub);
            let st = &mut *guard;
            let changes = take(&st.hooks, &mut st.store);
            crate::fub::webhook_requests(app, st, &changes, cfg.max_ids)
        }
        Provider::Lofty => {
            let mut guard = lock(&app.lofty);
            let st = &mut *guard;
            let changes = take(&st.hooks, &mut st.store);
            crate::lofty::webhook_requests(st, &changes)
        }
        Provider::Rex => {
            let mut guard = lock(&app.rex);
            let st = &mut *guard;
            let changes = take(&st.hooks, &mut st.store);
            crate::rex::webhook_requests(st, &changes, cfg.max_ids)
        }
    }
}

/// The store's changes, when anything is subscribed (and keeps its journal on exactly then).
fn take(hooks: &Hooks, store: &mut crate::store::Store) -> Vec<Change> {
    store.watch(!hooks.list.is_empty());
    store.take_changes()
}

/// Runs for as long as the sandbox serves: every `batch_ms`, sends what changed.
pub(crate) async fn run(app: App) {
    let client = reqwest::Client::new();
    let mut sending = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let cfg = app.webhook_config();
                next = tokio::time::Instant::now() + Duration::from_millis(cfg.batch_ms.max(10));
                for p in Provider::ALL {
                    for out in outgoing(&app, p, &cfg) {
                        sending.spawn(deliver(client.clone(), app.clone(), p, out, cfg.clone()));
                    }
                }
            }
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
        }
    }
}

/// Posts one delivery, retrying (`retries` more times, the delay doubling from `retry_base_ms`) until
/// the receiver answers 2xx within the deadline.
async fn deliver(
    client: reqwest::Client,
    app: App,
    p: Provider,
    out: Outgoing,
    cfg: WebhookConfig,
) {
    let mut attempts = 0;
    let mut status = None;
    let mut ok = false;
    while attempts <= cfg.retries {
        if attempts > 0 {
            let delay = cfg
                .retry_base_ms
                .saturating_mul(1 << (attempts - 1).min(16));
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        attempts += 1;
        let mut req = client
            .post(&out.url)
            .timeout(Duration::from_millis(cfg.deadline_ms.max(1)))
            .header("content-type", "application/json")
            .body(out.body.clone());
        for (k, v) in &out.headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(r) => {
                status = Some(r.status().as_u16());
                if r.status().is_success() {
                    ok = true;
                    break;
                }
            }
            Err(_) => status = None,
        }
    }
    let d = Delivered {
        hook_id: out.hook_id,
        event: out.event,
        url: out.url,
        ids: out.ids,
        attempts,
        status,
        ok,
        at_ms: now_ms(),
    };
    match p {
        Provider::Fub => lock(&app.fub).hooks.record(d),
        Provider::Lofty => lock(&app.lofty).hooks.record(d),
        Provider::Rex => lock(&app.rex).hooks.record(d),
    }
}

/// The subscriptions and recent deliveries of `p`, for the control API.
pub(crate) fn describe(app: &App, p: Provider) -> serde_json::Value {
    let view = |h: &Hooks| {
        serde_json::json!({
            "subscriptions": h.list,
            "deliveries": h.delivered,
        })
    };
    match p {
        Provider::Fub => view(&lock(&app.fub).hooks),
        Provider::Lofty => view(&lock(&app.lofty).hooks),
        Provider::Rex => view(&lock(&app.rex).hooks),
    }
}
