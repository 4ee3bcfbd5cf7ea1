//! Control API under `/_sandbox` (never subject to faults, rate limits or the log).

use std::collections::HashSet;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::config::{FaultConfig, FubConfig, LoftyConfig, Provider, RexConfig, SandboxConfig};
use crate::datagen::{DEFAULT_SEED_END_MS, FullRec, Point, Text};
use crate::store::{ListQuery, Rec, RecordState, SortField, StateFilter, Store};
use crate::util::{
    SplitMix64, iso_millis, json, json_bytes, lock, now_ms, parse_time, qget, query_pairs,
};

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/_sandbox", get(index))
        .route("/_sandbox/reset", post(reset_all))
        .route("/_sandbox/config", get(config_get).put(config_put))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/requests", get(requests).delete(requests_clear))
        .route("/_sandbox/expire-tokens", post(expire_all))
        .route("/_sandbox/{provider}/reset", post(reset_one))
        .route("/_sandbox/{provider}/seed", post(seed))
        .route(
            "/_sandbox/{provider}/faults",
            get(faults_get).put(faults_put),
        )
        .route(
            "/_sandbox/{provider}/config",
            get(pconfig_get).put(pconfig_put),
        )
        .route(
            "/_sandbox/{provider}/records",
            get(records_list).post(record_create),
        )
        .route(
            "/_sandbox/{provider}/records/{id}",
            get(record_get).put(record_put),
        )
        .route(
            "/_sandbox/{provider}/records/{id}/delete",
            post(record_delete),
        )
        .route(
            "/_sandbox/{provider}/records/{id}/restore",
            post(record_restore),
        )
        .route("/_sandbox/{provider}/touch", post(touch))
        .route("/_sandbox/{provider}/webhooks", get(webhooks))
        .route("/_sandbox/{provider}/expire-tokens", post(expire_one))
        .route("/_sandbox/revoke-grants", post(revoke_grants_all))
        .route(
            "/_sandbox/{provider}/revoke-grants",
            post(revoke_grants_one),
        )
        .route("/_sandbox/{provider}/revoke-keys", post(revoke_keys))
        .route(
            "/_sandbox/{provider}/rate-limits/reset",
            post(rate_limits_reset),
        )
        .route("/_sandbox/{provider}/tokens", post(tokens))
}

fn bad(msg: impl std::fmt::Display) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "detail": msg.to_string()}),
    )
}

fn not_found(msg: impl std::fmt::Display) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &json!({"error": "not_found", "detail": msg.to_string()}),
    )
}

fn provider(s: &str) -> Result<Provider, Response> {
    Provider::parse(s).ok_or_else(|| not_found(format!("unknown provider {s}")))
}

fn body_json(body: &[u8]) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// RFC 7386 JSON merge patch (without the null-deletes rule: null sets null).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

async fn index(State(app): State<App>) -> Response {
    let base = format!("http://{}", app.local_addr);
    json(
        StatusCode::OK,
        &json!({
            "service": "crm-sandbox",
            "providers": {
                "rex": {
                    "authorize": format!("{base}/rex/oauth/authorize"),
                    "token": format!("{base}/rex/oauth/token"),
                    "api": format!("{base}/rex/v1/rex/<Service>/<method>"),
                    "contacts_endpoint": format!("{base}/rex/v1/rex/contacts/list"),
                },
                "fub": {
                    "authorize": format!("{base}/fub/oauth/authorize"),
                    "token": format!("{base}/fub/oauth/token"),
                    "api": format!("{base}/fub/v1"),
                },
                "lofty": { "api": format!("{base}/lofty/v1.0") },
            },
            "control": [
                "POST /_sandbox/reset[?provider=]",
                "GET|PUT /_sandbox/config",
                "GET /_sandbox/stats",
                "GET|DELETE /_sandbox/requests[?provider=&limit=]",
                "POST /_sandbox/expire-tokens[?provider=]",
                "POST /_sandbox/{provider}/reset",
                "POST /_sandbox/{provider}/seed",
                "GET|PUT /_sandbox/{provider}/faults",
                "GET|PUT /_sandbox/{provider}/config",
                "GET|POST /_sandbox/{provider}/records",
                "GET|PUT /_sandbox/{provider}/records/{id}",
                "POST /_sandbox/{provider}/records/{id}/delete",
                "POST /_sandbox/{provider}/records/{id}/restore",
                "POST /_sandbox/{provider}/touch",
                "POST /_sandbox/{provider}/expire-tokens",
                "POST /_sandbox/revoke-grants[?provider=]",
                "POST /_sandbox/{provider}/revoke-grants",
                "POST /_sandbox/{provider}/revoke-keys",
                "POST /_sandbox/{provider}/rate-limits/reset",
                "POST /_sandbox/{provider}/tokens",
            ],
        }),
    )
}

async fn reset_all(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let p = match qget(&q, "provider") {
        Some(s) => match provider(s) {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    app.reset(p);
    json(
        StatusCode::OK,
        &json!({"reset": p.map(|p| p.name()).unwrap_or("all")}),
    )
}

async fn reset_one(State(app): State<App>, Path(p): Path<String>) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    app.reset(Some(p));
    json(StatusCode::OK, &json!({"reset": p.name()}))
}

async fn config_get(State(app): State<App>) -> Response {
    json(StatusCode::OK, &app.config())
}

async fn config_put(State(app): State<App>, body: Bytes) -> Response {
    let patch = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut cur = match serde_json::to_value(app.config()) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    merge(&mut cur, &patch);
    match serde_json::from_value::<SandboxConfig>(cur) {
        Ok(cfg) => {
            app.set_config(cfg);
            json(StatusCode::OK, &app.config())
        }
        Err(e) => bad(format!("invalid config: {e}")),
    }
}

fn provider_config(app: &App, p: Provider) -> Value {
    let v = match p {
        Provider::Rex => serde_json::to_value(&lock(&app.rex).cfg),
        Provider::Fub => serde_json::to_value(&lock(&app.fub).cfg),
        Provider::Lofty => serde_json::to_value(&lock(&app.lofty).cfg),
    };
    v.unwrap_or(Value::Null)
}

async fn pconfig_get(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => json(StatusCode::OK, &provider_config(&app, p)),
        Err(r) => r,
    }
}

async fn pconfig_put(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let patch = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut cur = provider_config(&app, p);
    merge(&mut cur, &patch);
    let res = match p {
        Provider::Rex => serde_json::from_value::<RexConfig>(cur).map(|c| lock(&app.rex).cfg = c),
        Provider::Fub => serde_json::from_value::<FubConfig>(cur).map(|c| lock(&app.fub).cfg = c),
        Provider::Lofty => {
            serde_json::from_value::<LoftyConfig>(cur).map(|c| lock(&app.lofty).cfg = c)
        }
    };
    match res {
        Ok(()) => json(StatusCode::OK, &provider_config(&app, p)),
        Err(e) => bad(format!("invalid {p} config: {e}")),
    }
}

async fn stats(State(app): State<App>) -> Response {
    json(StatusCode::OK, &app.stats_json())
}

async fn requests(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let p = match qget(&q, "provider") {
        Some(s) => match provider(s) {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    let limit = qget(&q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let entries = lock(&app.log).recent(p, limit);
    json(
        StatusCode::OK,
        &json!({"count": entries.len(), "requests": entries}),
    )
}

async fn requests_clear(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let p = match qget(&q, "provider") {
        Some(s) => match provider(s) {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    let n = lock(&app.log).clear(p);
    json(StatusCode::OK, &json!({"cleared": n}))
}

async fn expire_all(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let p = match qget(&q, "provider") {
        Some(s) => match provider(s) {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    let n = app.expire_tokens(p);
    json(StatusCode::OK, &json!({"expired": n}))
}

async fn expire_one(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => json(
            StatusCode::OK,
            &json!({"expired": app.expire_tokens(Some(p))}),
        ),
        Err(r) => r,
    }
}

async fn rate_limits_reset(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => {
            app.reset_rate_limits(Some(p));
            json(StatusCode::OK, &json!({"reset": p.name()}))
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedBody {
    #[serde(default)]
    seed: u64,
    count: usize,
    #[serde(default)]
    append: bool,
    /// RFC 3339 time or epoch milliseconds; default 2026-01-01T00:00:00Z.
    #[serde(default)]
    end: Option<Value>,
}

async fn seed(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b: SeedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("expected {{\"seed\":u64,\"count\":n}}: {e}")),
    };
    if b.count > 20_000_000 {
        return bad("count is limited to 20,000,000");
    }
    let end = match &b.end {
        None | Some(Value::Null) => DEFAULT_SEED_END_MS,
        Some(Value::String(s)) if s == "now" => now_ms(),
        Some(Value::String(s)) => match parse_time(s) {
            Some(t) => t,
            None => return bad("end must be RFC 3339, \"now\" or epoch milliseconds"),
        },
        Some(v) => match v.as_i64() {
            Some(t) => t,
            None => return bad("end must be RFC 3339, \"now\" or epoch milliseconds"),
        },
    };
    // Generation happens outside the provider lock.
    let report =
        tokio::task::spawn_blocking(move || app.seed(p, b.seed, b.count, b.append, end)).await;
    match report {
        Ok(r) => json(StatusCode::OK, &r),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "internal", "detail": "seeding failed"}),
        ),
    }
}

async fn faults_get(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => json(StatusCode::OK, &app.faults(p)),
        Err(r) => r,
    }
}

async fn faults_put(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let cfg: FaultConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad(format!("invalid faults: {e}")),
    };
    match app.set_faults(p, cfg) {
        Ok(()) => json(StatusCode::OK, &app.faults(p)),
        Err(e) => bad(e),
    }
}

// ---------------------------------------------------------------------------------------
// Records in a neutral shape

#[derive(Serialize)]
struct Neutral<'a> {
    id: u64,
    first_name: &'a str,
    last_name: &'a str,
    name: String,
    emails: Vec<&'a str>,
    phones: Vec<&'a str>,
    tags: &'a [Text],
    stage: &'a str,
    source: &'a str,
    background: Option<&'a str>,
    created_ms: i64,
    updated_ms: i64,
    created: String,
    updated: String,
    /// `active`, `pending` (Lofty, not persisted yet), `archived` (REX), `trashed`.
    state: &'static str,
    /// Archived or trashed: out of the CRM's default lists.
    deleted: bool,
}

fn neutral<'a>(rec: &Rec, f: &'a FullRec, state: RecordState) -> Neutral<'a> {
    Neutral {
        id: rec.id,
        first_name: &f.first,
        last_name: &f.last,
        name: f.name(),
        emails: f.emails.iter().map(|e| e.value.as_str()).collect(),
        phones: f.phones.iter().map(|e| e.value.as_str()).collect(),
        tags: &f.tags,
        stage: &f.stage,
        source: &f.source,
        background: f.background.as_deref(),
        created_ms: rec.created,
        updated_ms: rec.updated,
        created: iso_millis(rec.created),
        updated: iso_millis(rec.updated),
        state: state.name(),
        deleted: state.is_removed(),
    }
}

/// Partial neutral record (control API writes).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct NeutralPatch {
    first_name: Option<String>,
    last_name: Option<String>,
    emails: Option<Vec<String>>,
    phones: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    stage: Option<String>,
    source: Option<String>,
    background: Option<String>,
    updated_ms: Option<i64>,
    created_ms: Option<i64>,
}

impl NeutralPatch {
    fn apply(&self, f: &mut FullRec) {
        if let Some(x) = &self.first_name {
            f.first = x.clone().into();
        }
        if let Some(x) = &self.last_name {
            f.last = x.clone().into();
        }
        if let Some(x) = &self.emails {
            f.emails = x.iter().map(|e| Point::new(e.clone(), "home")).collect();
        }
        if let Some(x) = &self.phones {
            f.phones = x.iter().map(|e| Point::new(e.clone(), "mobile")).collect();
        }
        if let Some(x) = &self.tags {
            f.tags = x.iter().map(|t| Text::from(t.clone())).collect();
            f.tags_at = self.updated_ms.unwrap_or_else(now_ms);
        }
        if let Some(x) = &self.stage {
            f.stage = x.clone().into();
        }
        if let Some(x) = &self.source {
            f.source = x.clone().into();
        }
        if let Some(x) = &self.background {
            f.background = Some(x.clone());
        }
    }
}

async fn records_list(
    State(app): State<App>,
    Path(p): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = query_pairs(q.as_deref());
    let offset = qget(&q, "offset")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = qget(&q, "limit")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let sort = match qget(&q, "sort") {
        Some("updated") => SortField::Updated,
        _ => SortField::Id,
    };
    let res = app.with_store(p, |s: &mut Store| {
        let mut lq = ListQuery::new(sort, false, limit);
        lq.offset = offset;
        lq.filter = StateFilter::Any;
        let page = s.list(&lq);
        let fulls: Vec<_> = page
            .items
            .iter()
            .map(|pos| (s.rec(*pos), s.rec(*pos).full(), s.state_of(*pos)))
            .collect();
        let records: Vec<Neutral> = fulls.iter().map(|(r, f, st)| neutral(r, f, *st)).collect();
        serde_json::to_vec(&json!({
            "provider": p.name(),
            "total": page.total,
            "offset": page.rank,
            "count": records.len(),
            "records": records,
        }))
    });
    match res {
        Ok(b) => json_bytes(StatusCode::OK, b),
        Err(e) => bad(e),
    }
}

fn parse_id(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

async fn record_get(State(app): State<App>, Path((p, id)): Path<(String, String)>) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    app.with_store(p, |s| match parse_id(&id).and_then(|id| s.pos_of(id)) {
        Some(pos) => {
            let rec = s.rec(pos);
            let f = rec.full();
            json(StatusCode::OK, &neutral(rec, &f, s.state_of(pos)))
        }
        None => not_found(format!("no {p} record {id}")),
    })
}

/// The update time a control-API change gets: the given one, else now, but always later
/// than the previous one (so an incremental sync sees it).
fn bumped(s: &Store, pos: u32, explicit: Option<i64>) -> i64 {
    match explicit {
        Some(t) => t,
        None => {
            let old = s.rec(pos).updated;
            now_ms().max(old + s.res_ms)
        }
    }
}

async fn record_put(
    State(app): State<App>,
    Path((p, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let patch: NeutralPatch = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(e) => return bad(format!("invalid record patch: {e}")),
    };
    app.with_store(p, |s| {
        let Some(pos) = parse_id(&id).and_then(|id| s.pos_of(id)) else {
            return not_found(format!("no {p} record {id}"));
        };
        let t = bumped(s, pos, patch.updated_ms);
        s.modify(pos, t, |f| patch.apply(f));
        let rec = s.rec(pos);
        let f = rec.full();
        json(StatusCode::OK, &neutral(rec, &f, s.state_of(pos)))
    })
}

async fn record_create(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let patch: NeutralPatch = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(e) => return bad(format!("invalid record: {e}")),
    };
    app.with_store(p, |s| {
        let mut f = FullRec {
            stage: "Lead".into(),
            source: "Sandbox".into(),
            kind: "person".into(),
            ..FullRec::default()
        };
        patch.apply(&mut f);
        let now = now_ms();
        let pos = s.create(f, patch.created_ms, now);
        if let Some(u) = patch.updated_ms {
            s.set_updated(pos, u);
        }
        let rec = s.rec(pos);
        let f = rec.full();
        json(StatusCode::CREATED, &neutral(rec, &f, s.state_of(pos)))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateBody {
    /// `trashed` (default) or `archived` (REX only).
    state: Option<RecordState>,
    /// Change the update time (default: the CRM's switch).
    bump: Option<bool>,
}

fn state_body(body: &[u8]) -> Result<StateBody, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StateBody::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| bad(format!("expected {{\"state\"?, \"bump\"?}}: {e}")))
}

fn change_state(app: &App, p: &str, id: &str, state: RecordState, bump: Option<bool>) -> Response {
    let p = match provider(p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(id) = parse_id(id) else {
        return not_found(format!("no {p} record {id}"));
    };
    if app.with_store(p, |s| s.pos_of(id)).is_none() {
        return not_found(format!("no {p} record {id}"));
    }
    match app.set_record_state(p, id, state, bump) {
        Ok(old) => app.with_store(p, |s| match s.pos_of(id) {
            Some(pos) => {
                let rec = s.rec(pos);
                let f = rec.full();
                let mut v =
                    serde_json::to_value(neutral(rec, &f, s.state_of(pos))).unwrap_or(Value::Null);
                v["previous_state"] = json!(old.name());
                json(StatusCode::OK, &v)
            }
            None => not_found(format!("no {p} record {id}")),
        }),
        Err(e) => bad(e),
    }
}

/// Deletes a record the way the CRM does: trash (every CRM; FUB's `Trash` stage, Lofty's
/// DELETE) or, for REX, `{"state":"archived"}`.
async fn record_delete(
    State(app): State<App>,
    Path((p, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let b = match state_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let state = b.state.unwrap_or(RecordState::Trashed);
    if !state.is_removed() {
        return bad("state must be trashed or archived (use /restore to restore)");
    }
    change_state(&app, &p, &id, state, b.bump)
}

/// Back to `active` (REX recover, FUB out of the Trash stage, Lofty out of the trash).
async fn record_restore(
    State(app): State<App>,
    Path((p, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let b = match state_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.state.is_some() {
        return bad("restore takes no state");
    }
    change_state(&app, &p, &id, RecordState::Active, b.bump)
}

async fn revoke_grants_all(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let p = match qget(&q, "provider") {
        Some(s) => match provider(s) {
            Ok(p) => Some(p),
            Err(r) => return r,
        },
        None => None,
    };
    json(StatusCode::OK, &json!({"revoked": app.revoke_grants(p)}))
}

async fn revoke_grants_one(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => json(
            StatusCode::OK,
            &json!({"revoked": app.revoke_grants(Some(p))}),
        ),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeKeysBody {
    keys: Option<Vec<String>>,
}

async fn revoke_keys(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b: RevokeKeysBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeKeysBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(x) => x,
            Err(e) => return bad(format!("expected {{\"keys\"?: [..]}}: {e}")),
        }
    };
    if p == Provider::Rex {
        return bad("REX has no API keys: use revoke-grants (it also ends login sessions)");
    }
    let n = app.revoke_api_keys(p, b.keys.as_deref());
    json(StatusCode::OK, &json!({"revoked": n}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TouchBody {
    ids: Option<Vec<u64>>,
    count: Option<usize>,
    seed: Option<u64>,
    set: Option<NeutralPatch>,
    updated_ms: Option<i64>,
}

/// Bumps (and optionally changes) the given records; returns how many existed.
pub(crate) fn touch_ids(app: &App, p: Provider, ids: &[u64], set: Option<&NeutralPatch>) -> usize {
    app.with_store(p, |s| {
        let mut n = 0;
        for id in ids {
            if let Some(pos) = s.pos_of(*id) {
                let explicit = set.and_then(|x| x.updated_ms);
                let t = bumped(s, pos, explicit);
                match set {
                    Some(patch) => s.modify(pos, t, |f| patch.apply(f)),
                    None => s.set_updated(pos, t),
                }
                n += 1;
            }
        }
        n
    })
}

async fn touch(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b: TouchBody = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(e) => return bad(format!("expected {{\"ids\":[…]}} or {{\"count\":k}}: {e}")),
    };
    let ids: Vec<u64> = match (&b.ids, b.count) {
        (Some(ids), _) => ids.clone(),
        (None, Some(k)) => app.with_store(p, |s| {
            let n = s.len();
            let k = k.min(n);
            let mut rng = match b.seed {
                Some(seed) => SplitMix64::new(seed),
                None => SplitMix64::from_entropy(),
            };
            let mut chosen: HashSet<usize> = HashSet::with_capacity(k);
            // Floyd's algorithm: k distinct indexes in 0..n.
            for j in (n - k)..n {
                let t = rng.below(j as u64 + 1) as usize;
                if !chosen.insert(t) {
                    chosen.insert(j);
                }
            }
            let mut v: Vec<u64> = chosen.into_iter().map(|i| s.recs()[i].id).collect();
            v.sort_unstable();
            v
        }),
        (None, None) => return bad("give ids or count"),
    };
    let mut set = b.set.clone();
    if let Some(u) = b.updated_ms {
        set.get_or_insert_with(NeutralPatch::default).updated_ms = Some(u);
    }
    let n = touch_ids(&app, p, &ids, set.as_ref());
    json(StatusCode::OK, &json!({"touched": n, "ids": ids}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokensBody {
    client_id: Option<String>,
    scope: Option<String>,
}

async fn tokens(State(app): State<App>, Path(p): Path<String>, body: Bytes) -> Response {
    let p = match provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b: TokensBody = if body.iter().all(u8::is_ascii_whitespace) {
        TokensBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(x) => x,
            Err(e) => return bad(format!("invalid body: {e}")),
        }
    };
    match p {
        Provider::Rex => {
            let mut st = lock(&app.rex);
            let flavor = st.flavor();
            let client = b
                .client_id
                .or_else(|| st.cfg.oauth_clients.first().map(|c| c.client_id.clone()))
                .unwrap_or_default();
            let scope = b.scope.unwrap_or_else(|| st.cfg.default_scope.clone());
            let (a, r) = st.oauth.issue(&flavor, &client, &scope);
            json(
                StatusCode::OK,
                &st.oauth.token_body(&flavor, &a, &r, &scope),
            )
        }
        Provider::Fub => {
            let mut st = lock(&app.fub);
            let flavor = st.flavor();
            let client = b
                .client_id
                .or_else(|| st.cfg.oauth_clients.first().map(|c| c.client_id.clone()))
                .unwrap_or_default();
            let (a, r) = st.oauth.issue(&flavor, &client, "");
            json(StatusCode::OK, &st.oauth.token_body(&flavor, &a, &r, ""))
        }
        Provider::Lofty => {
            bad("Lofty uses API keys (Authorization: token <key>), not OAuth tokens")
        }
    }
}

/// The provider's webhook subscriptions and its last deliveries (what the receiver answered).
async fn webhooks(State(app): State<App>, Path(p): Path<String>) -> Response {
    match provider(&p) {
        Ok(p) => json(StatusCode::OK, &crate::webhooks::describe(&app, p)),
        Err(r) => r,
    }
}
