//! Request log (bounded ring buffer, secrets redacted) and counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::Provider;
use crate::util::{form_pairs, iso_millis, now_ms};

/// Headers copied into the log. Credentials are reduced to their scheme or redacted.
const LOGGED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "user-agent",
    "x-system",
    "x-system-key",
    "x-api-option",
    "x-app-identifier",
    "idempotency-key",
];

/// Body fields never logged in clear.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "access_token",
    "token",
    "api_key",
    "apikey",
    "customer_key",
];

const MAX_LOGGED_BODY: usize = 8 * 1024;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogEntry {
    pub seq: u64,
    pub at: String,
    pub provider: Provider,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// HTTP status; 0 when the connection was dropped without a response.
    pub status: u16,
    pub fault: Option<&'static str>,
    pub duration_ms: u64,
}

fn redact_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                    *val = json!("<redacted>");
                } else {
                    redact_value(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// The request body as logged: JSON (redacted), a form (as a redacted object), or text.
pub(crate) fn loggable_body(headers: &HeaderMap, body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let mut m = Map::new();
        for (k, v) in form_pairs(body) {
            m.insert(k, Value::String(v));
        }
        let mut v = Value::Object(m);
        redact_value(&mut v);
        return v;
    }
    if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
        redact_value(&mut v);
        let s = v.to_string();
        if s.len() <= MAX_LOGGED_BODY {
            return v;
        }
        return Value::String(format!("{}…", truncate_utf8(&s, MAX_LOGGED_BODY)));
    }
    let s = String::from_utf8_lossy(body);
    Value::String(truncate_utf8(&s, MAX_LOGGED_BODY).to_string())
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn loggable_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in LOGGED_HEADERS {
        if let Some(v) = headers.get(*name) {
            let v = String::from_utf8_lossy(v.as_bytes()).to_string();
            let shown = match *name {
                "authorization" => v.split_whitespace().next().unwrap_or("").to_string(),
                "x-system-key" => "<redacted>".to_string(),
                _ => v,
            };
            out.insert(name.to_string(), shown);
        }
    }
    out
}

pub(crate) struct RequestLog {
    cap: usize,
    seq: u64,
    entries: VecDeque<LogEntry>,
}

impl RequestLog {
    pub(crate) fn new(cap: usize) -> Self {
        RequestLog {
            cap,
            seq: 0,
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
        while self.entries.len() > cap {
            self.entries.pop_front();
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        provider: Provider,
        method: String,
        path: String,
        query: Option<String>,
        headers: BTreeMap<String, String>,
        body: Value,
        status: u16,
        fault: Option<&'static str>,
        duration_ms: u64,
    ) {
        if self.cap == 0 {
            return;
        }
        self.seq += 1;
        let e = LogEntry {
            seq: self.seq,
            at: iso_millis(now_ms()),
            provider,
            method,
            path,
            query,
            headers,
            body,
            status,
            fault,
            duration_ms,
        };
        while self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// The last `limit` entries (oldest first), optionally of one provider.
    pub(crate) fn recent(&self, provider: Option<Provider>, limit: usize) -> Vec<LogEntry> {
        let mut v: Vec<LogEntry> = self
            .entries
            .iter()
            .rev()
            .filter(|e| provider.is_none_or(|p| e.provider == p))
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        v
    }

    pub(crate) fn clear(&mut self, provider: Option<Provider>) -> usize {
        let before = self.entries.len();
        match provider {
            None => self.entries.clear(),
            Some(p) => self.entries.retain(|e| e.provider != p),
        }
        before - self.entries.len()
    }
}

/// Counters of one provider.
#[derive(Debug, Default)]
pub(crate) struct ProviderStats {
    pub requests: AtomicU64,
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub served_429: AtomicU64,
    pub dropped: AtomicU64,
    pub code_exchanges: AtomicU64,
    pub refreshes: AtomicU64,
    pub logins: AtomicU64,
    pub faults_error: AtomicU64,
    pub faults_429: AtomicU64,
    pub faults_drop: AtomicU64,
    pub faults_truncate: AtomicU64,
    pub contacts_served: AtomicU64,
    pub contacts_created: AtomicU64,
    pub contacts_updated: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ProviderStats {
    pub(crate) fn record_status(&self, status: u16) {
        bump(&self.requests);
        match status {
            0 => bump(&self.dropped),
            200..=299 => bump(&self.status_2xx),
            300..=399 => bump(&self.status_3xx),
            429 => {
                bump(&self.status_4xx);
                bump(&self.served_429);
            }
            400..=499 => bump(&self.status_4xx),
            _ => bump(&self.status_5xx),
        }
    }

    pub(crate) fn snapshot(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "requests": g(&self.requests),
            "status_2xx": g(&self.status_2xx),
            "status_3xx": g(&self.status_3xx),
            "status_4xx": g(&self.status_4xx),
            "status_5xx": g(&self.status_5xx),
            "served_429": g(&self.served_429),
            "dropped_connections": g(&self.dropped),
            "code_exchanges": g(&self.code_exchanges),
            "refreshes": g(&self.refreshes),
            "logins": g(&self.logins),
            "faults": {
                "error": g(&self.faults_error),
                "rate_429": g(&self.faults_429),
                "drop": g(&self.faults_drop),
                "truncate": g(&self.faults_truncate),
            },
            "contacts_served": g(&self.contacts_served),
            "contacts_created": g(&self.contacts_created),
            "contacts_updated": g(&self.contacts_updated),
        })
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.status_2xx,
            &self.status_3xx,
            &self.status_4xx,
            &self.status_5xx,
            &self.served_429,
            &self.dropped,
            &self.code_exchanges,
            &self.refreshes,
            &self.logins,
            &self.faults_error,
            &self.faults_429,
            &self.faults_drop,
            &self.faults_truncate,
            &self.contacts_served,
            &self.contacts_created,
            &self.contacts_updated,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
