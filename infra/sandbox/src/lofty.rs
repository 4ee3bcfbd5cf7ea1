//! Lofty (ex-Chime) Open API under `/lofty/v1.0`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::config::{
    DuplicateEmailCreate, JsonContentTypeRule, LoftyConfig, PhoneSearch, Provider,
};
use crate::datagen::{FullRec, Point, Text};
use crate::limits::FixedWindow;
use crate::reqlog::{add, bump};
use crate::store::{Change, Cursor, IdScheme, ListQuery, Rec, RecordState, SortField, Store};
use crate::util::{
    b64_decode_lenient, b64url, fnv1a, header_str, json, json_bytes, lock, now_ms, qget,
    query_pairs, secret_eq, set_header, val_string,
};
use crate::webhooks::{Hooks, Outgoing, callback_allowed};

pub(crate) struct LoftyState {
    pub cfg: LoftyConfig,
    pub store: Store,
    rl: HashMap<String, FixedWindow>,
    pub hooks: Hooks,
}

pub(crate) fn new_store() -> Store {
    Store::new(
        1,
        IdScheme {
            base: 651_095_960_136_641,
            max_step: 50_000,
            salt: 0x10F7,
        },
    )
}

impl LoftyState {
    pub(crate) fn new(cfg: LoftyConfig) -> Self {
        LoftyState {
            cfg,
            store: new_store(),
            rl: HashMap::new(),
            hooks: Hooks::default(),
        }
    }

    pub(crate) fn reset_limits(&mut self) {
        self.rl.clear();
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/lofty/v1.0/leads", get(leads_list).post(lead_create))
        .route(
            "/lofty/v1.0/leads/{id}",
            get(lead_get).put(lead_update).delete(lead_delete),
        )
        .route("/lofty/v1.0/me", get(me))
        .route("/lofty/v1.0/webhook", post(webhook_create))
        .route("/lofty/v1.0/webhooks", get(webhooks_list))
        .route("/lofty/v1.0/webhook/{id}", delete(webhook_delete))
}

fn err(status: StatusCode, code: impl Into<Value>, msg: &str) -> Response {
    json(status, &json!({ "code": code.into(), "message": msg }))
}

struct Rl {
    limit: u32,
    remaining: u32,
    reset: i64,
}

fn with_rl(mut r: Response, rl: &Rl) -> Response {
    set_header(&mut r, "x-ratelimit-limit", rl.limit);
    set_header(&mut r, "x-ratelimit-remaining", rl.remaining);
    set_header(&mut r, "x-ratelimit-reset", rl.reset);
    r
}

fn gate(st: &mut LoftyState, headers: &HeaderMap, method: &Method) -> Result<Rl, Response> {
    let auth = header_str(headers, "authorization").unwrap_or("").trim();
    let (scheme, cred) = auth.split_once(' ').unwrap_or((auth, ""));
    let cred = cred.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Err(err(
            StatusCode::BAD_REQUEST,
            200058,
            "User in token does not exist.",
        ));
    }
    let key = if scheme.eq_ignore_ascii_case("token")
        && st.cfg.api_keys.iter().any(|k| secret_eq(k, cred))
    {
        cred.to_string()
    } else {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            "BAD_CREDENTIALS",
            "Bad credentials",
        ));
    };
    let limit = st.cfg.rate_limit_per_minute;
    let (ok, remaining, reset) = st.rl.entry(key).or_default().check(now_ms(), 60_000, limit);
    let rl = Rl {
        limit,
        remaining,
        reset,
    };
    if !ok {
        let mut r = with_rl(
            json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"message": "Too Many Requests"}),
            ),
            &rl,
        );
        if st.cfg.retry_after_on_429 {
            set_header(
                &mut r,
                "retry-after",
                (reset * 1000 - now_ms()).max(0) / 1000 + 1,
            );
        }
        return Err(r);
    }
    let has_body = *method == Method::POST || *method == Method::PUT;
    let needs_json = match st.cfg.require_json_content_type {
        JsonContentTypeRule::All => true,
        JsonContentTypeRule::Delete => has_body || *method == Method::DELETE,
        JsonContentTypeRule::BodyOnly => has_body,
    };
    let ct = header_str(headers, "content-type").unwrap_or("");
    if needs_json && !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(with_rl(
            err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Content-Type must be application/json",
            ),
            &rl,
        ));
    }
    Ok(rl)
}

fn call(
    app: &App,
    headers: &HeaderMap,
    method: Method,
    f: impl FnOnce(&App, &mut LoftyState) -> Response,
) -> Response {
    let mut st = lock(&app.lofty);
    let rl = match gate(&mut st, headers, &method) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let r = f(app, &mut st);
    with_rl(r, &rl)
}

/// Fault responses in Lofty's shape.
pub(crate) fn fault_response(status: StatusCode, retry_after: u64, st: &LoftyState) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        // An injected, transient 429: it says nothing about the window (a real exhausted window is
        // answered by the rate limiter with its true Remaining/Reset). Retry-After per the switch.
        let mut r = json(status, &json!({"message": "Too Many Requests"}));
        set_header(&mut r, "x-ratelimit-limit", st.cfg.rate_limit_per_minute);
        if st.cfg.retry_after_on_429 {
            set_header(&mut r, "retry-after", retry_after);
        }
        r
    } else {
        err(status, status.as_u16(), "Internal Server Error")
    }
}

// ---------------------------------------------------------------------------------------
// Lead JSON

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagOut<'a> {
    lead_id: u64,
    tag_id: u64,
    tag_name: &'a str,
    create_time: i64,
    update_time: i64,
}

/// The documented lead (list-leads reference, crm-apis §2.2) has `createTime` and
/// `assignTime` and no lead-level update time: `updateTime` appears only inside `tags[]`
/// (and `leadInquiry`). It is served only with the `emit_update_time` switch (§4).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeadOut<'a> {
    lead_id: u64,
    first_name: &'a str,
    last_name: &'a str,
    emails: Values<'a>,
    phones: Values<'a>,
    source: &'a str,
    stage: &'a str,
    tags: Tags<'a>,
    create_time: i64,
    /// The sandbox routes every lead at creation.
    assign_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_time: Option<i64>,
    assigned_user_id: Option<u64>,
}

pub(crate) fn tag_id(name: &str) -> u64 {
    100_000 + fnv1a(name.trim().bytes().map(|b| b.to_ascii_lowercase())) % 900_000_000
}

/// Plain string array of the values (emails/phones), without a temporary Vec.
struct Values<'a>(&'a [Point]);

impl Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| p.value.as_str()))
    }
}

/// `[{leadId, tagId, tagName, createTime, updateTime}]` without a temporary Vec. The tag
/// times are those of the tag list (set at creation or by a `PUT` with `tags`), never
/// the lead's own update time.
struct Tags<'a> {
    lead_id: u64,
    at: i64,
    tags: &'a [Text],
}

impl Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.tags.iter().map(|t| TagOut {
            lead_id: self.lead_id,
            tag_id: tag_id(t),
            tag_name: t,
            create_time: self.at,
            update_time: self.at,
        }))
    }
}

fn lead_out<'a>(cfg: &LoftyConfig, rec: &Rec, full: &'a FullRec) -> LeadOut<'a> {
    LeadOut {
        lead_id: rec.id,
        first_name: &full.first,
        last_name: &full.last,
        emails: Values(&full.emails),
        phones: Values(&full.phones),
        source: &full.source,
        stage: &full.stage,
        tags: Tags {
            lead_id: rec.id,
            at: if full.tags_at > 0 {
                full.tags_at
            } else {
                rec.created
            },
            tags: &full.tags,
        },
        create_time: rec.created,
        assign_time: rec.created,
        update_time: cfg.emit_update_time.then_some(rec.updated),
        assigned_user_id: None,
    }
}

// ---------------------------------------------------------------------------------------
// GET /v1.0/leads

#[derive(Serialize, Deserialize, Debug, Clone)]
struct ScrollToken {
    s: String,
    d: bool,
    t: i64,
    i: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

/// The orders the sandbox can produce. `LastActivity` (lead-management guide) is served by
/// the internal update time.
fn parse_sort(s: &str) -> Option<SortField> {
    match s.to_ascii_lowercase().as_str() {
        "updatetime" | "lastactivity" => Some(SortField::Updated),
        "createtime" => Some(SortField::Created),
        "leadid" | "id" => Some(SortField::Id),
        _ => None,
    }
}

fn sort_name(f: SortField) -> &'static str {
    match f {
        SortField::Updated => "updateTime",
        SortField::Created => "createTime",
        SortField::Id => "leadId",
    }
}

async fn leads_list(State(app): State<App>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    call(&app, &headers, Method::GET, |app, st| {
        list(app, st, q.as_deref())
    })
}

fn list(app: &App, st: &mut LoftyState, raw: Option<&str>) -> Response {
    let q = query_pairs(raw);
    let max = st.cfg.max_limit.max(1) as i64;
    // `asked` is echoed in the metadata; `limit` is what is served. One integrator reports
    // pages hard-capped at 25 (crm-apis §2.6): by default a larger `limit` is cut silently.
    let (limit, asked) = match qget(&q, "limit").filter(|s| !s.is_empty()) {
        None => {
            let d = st.cfg.default_limit.max(1) as i64;
            (d.min(max), d)
        }
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => (n, n),
            Ok(n) if n > max && st.cfg.cap_silently => (max, n),
            _ => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "LIMIT_NOT_VALID",
                    &format!("limit must be between 1 and {max}"),
                );
            }
        },
    };
    let limit = limit as usize;
    let token = match qget(&q, "scrollId").filter(|s| !s.is_empty()) {
        Some(s) => match b64_decode_lenient(s)
            .and_then(|b| serde_json::from_slice::<ScrollToken>(&b).ok())
        {
            Some(t) => Some(t),
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER",
                    "scrollId is not valid",
                );
            }
        },
        None => None,
    };
    let (sort, desc, email, phone) = match &token {
        Some(t) => (
            parse_sort(&t.s).unwrap_or(SortField::Id),
            t.d,
            t.e.clone(),
            t.p.clone(),
        ),
        None => {
            // crm-apis §2.6 and §4: unknown sort (and paging) fields are silently ignored, and
            // `sort=updateTime` is not a documented value. Only the `honoured_sorts` are
            // applied; otherwise the default order stands and `desc` changes nothing.
            let default_sort = parse_sort(&st.cfg.default_sort).unwrap_or(SortField::Created);
            let honoured = qget(&q, "sort").map(str::trim).and_then(|s| {
                st.cfg
                    .honoured_sorts
                    .iter()
                    .any(|h| h.trim().eq_ignore_ascii_case(s))
                    .then(|| parse_sort(s))
                    .flatten()
            });
            let (sort, desc) = match honoured {
                Some(sort) => (
                    sort,
                    match qget(&q, "desc").map(|s| s.to_ascii_lowercase()) {
                        Some(s) if s == "true" || s == "1" => true,
                        Some(s) if s == "false" || s == "0" => false,
                        _ => st.cfg.default_desc,
                    },
                ),
                None => (default_sort, st.cfg.default_desc),
            };
            (
                sort,
                desc,
                qget(&q, "email")
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string),
                qget(&q, "phone")
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string),
            )
        }
    };
    let mut cands: Option<Vec<u32>> = None;
    if let Some(e) = &email {
        cands = Some(st.store.find_email(e));
    }
    if let Some(p) = &phone {
        // As REX (crm-apis §4), by default the stored string is compared.
        let v = match st.cfg.phone_search {
            PhoneSearch::Exact => st.store.find_phone_exact(p),
            PhoneSearch::Normalized => st.store.find_phone(p),
        };
        cands = Some(match cands {
            None => v,
            Some(prev) => prev.into_iter().filter(|x| v.contains(x)).collect(),
        });
    }
    let mut lq = ListQuery::new(sort, desc, limit);
    lq.candidates = cands;
    lq.after = token.as_ref().map(|t| Cursor { time: t.t, id: t.i });
    if st.cfg.offset_param && token.is_none() {
        lq.offset = qget(&q, "offset")
            .and_then(|o| o.trim().parse::<usize>().ok())
            .unwrap_or(0);
    }
    let page = st.store.list(&lq);
    let scroll_id = match page.items.last() {
        Some(&last) if page.items.len() == limit => {
            let c = st.store.cursor_of(last, sort);
            let t = ScrollToken {
                s: sort_name(sort).to_string(),
                d: desc,
                t: c.time,
                i: c.id,
                e: email.clone(),
                p: phone.clone(),
            };
            serde_json::to_vec(&t).ok().map(|b| b64url(&b))
        }
        _ => None,
    };
    let fulls: Vec<_> = page
        .items
        .iter()
        .map(|p| (st.store.rec(*p), st.store.rec(*p).full()))
        .collect();
    let leads: Vec<LeadOut> = fulls.iter().map(|(r, f)| lead_out(&st.cfg, r, f)).collect();
    add(
        &app.stats(Provider::Lofty).contacts_served,
        leads.len() as u64,
    );
    let meta = json!({
        "collection": "leads",
        "limit": asked,
        "offset": page.rank,
        "total": page.total,
        "scrollId": scroll_id,
    });
    let key =
        serde_json::to_string(&st.cfg.metadata_key).unwrap_or_else(|_| "\"_metadata\"".into());
    let mut out = Vec::with_capacity(256 + leads.len() * 400);
    out.push(b'{');
    out.extend_from_slice(key.as_bytes());
    out.push(b':');
    if serde_json::to_writer(&mut out, &meta).is_err() {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "serialization failed",
        );
    }
    out.extend_from_slice(b",\"leads\":");
    if serde_json::to_writer(&mut out, &leads).is_err() {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "serialization failed",
        );
    }
    out.push(b'}');
    json_bytes(StatusCode::OK, out)
}

// ---------------------------------------------------------------------------------------
// Single lead

/// The lead, unless it is in the trash (a deleted lead answers 404, crm-apis §2.2).
/// Pending leads are found: writes to them work ("follow-up writes unaffected").
fn lookup(st: &mut LoftyState, id: &str) -> Option<u32> {
    let id = id.trim().parse::<u64>().ok()?;
    st.store.promote_pending(now_ms());
    st.store
        .pos_of(id)
        .filter(|p| !st.store.state_of(*p).is_removed())
}

fn not_found() -> Response {
    err(
        StatusCode::NOT_FOUND,
        "LEAD_NOT_EXIST",
        "Lead does not exist.",
    )
}

async fn lead_get(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    call(&app, &headers, Method::GET, |_, st| {
        let Some(pos) = lookup(st, &id) else {
            return not_found();
        };
        // Persistence is asynchronous: GET may 404 right after the create (§2.2).
        if st.store.state_of(pos) == RecordState::Pending {
            return not_found();
        }
        let rec = st.store.rec(pos);
        let full = rec.full();
        let lead = lead_out(&st.cfg, rec, &full);
        if st.cfg.wrap_single_lead {
            json(StatusCode::OK, &json!({ "lead": lead }))
        } else {
            json(StatusCode::OK, &lead)
        }
    })
}

#[derive(Default)]
struct LeadPatch {
    first: Option<String>,
    last: Option<String>,
    emails: Option<Vec<String>>,
    phones: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    source: Option<String>,
    stage: Option<String>,
}

fn bad(code: &str, msg: &str) -> Response {
    err(StatusCode::BAD_REQUEST, code, msg)
}

fn parse_lead(body: &[u8]) -> Result<LeadPatch, Response> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad("INVALID_PARAMETER", "The request body is not valid JSON."))?;
    let o = v
        .as_object()
        .ok_or_else(|| bad("INVALID_PARAMETER", "The request body must be an object."))?;
    let s = |k: &str| -> Result<Option<String>, Response> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => val_string(v)
                .map(Some)
                .ok_or_else(|| bad("INVALID_PARAMETER", &format!("{k} must be a string."))),
        }
    };
    let strings = |k: &str| -> Result<Option<Vec<String>>, Response> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        bad(
                            "INVALID_PARAMETER",
                            &format!("{k} must be an array of strings."),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad(
                "INVALID_PARAMETER",
                &format!("{k} must be an array of strings."),
            )),
        }
    };
    let mut p = LeadPatch {
        first: s("firstName")?,
        last: s("lastName")?,
        emails: strings("emails")?,
        phones: strings("phones")?,
        source: s("source")?,
        stage: s("stage")?,
        tags: None,
    };
    if let Some(t) = o.get("tags").filter(|v| !v.is_null()) {
        let Some(a) = t.as_array() else {
            return Err(bad("INVALID_PARAMETER", "tags must be an array."));
        };
        // Integers become tags named by the integer (a documented integrator pitfall).
        p.tags = Some(a.iter().filter_map(val_string).collect());
    }
    for (k, v) in [("firstName", &p.first), ("lastName", &p.last)] {
        if v.as_ref().is_some_and(|x| x.chars().count() > 30) {
            return Err(bad(
                "PARAMETER_TOO_LONG",
                &format!("{k} must be at most 30 characters."),
            ));
        }
    }
    Ok(p)
}

async fn lead_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    call(&app, &headers, Method::POST, |app, st| {
        let p = match parse_lead(&body) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let empty = p.first.as_deref().unwrap_or("").is_empty()
            && p.last.as_deref().unwrap_or("").is_empty()
            && p.emails.as_ref().is_none_or(Vec::is_empty)
            && p.phones.as_ref().is_none_or(Vec::is_empty);
        if empty {
            return bad(
                "MISSING_PARAMETER",
                "A lead needs a name, an email address or a phone number.",
            );
        }
        if st.cfg.duplicate_email_on_create != DuplicateEmailCreate::Create {
            // Leads still being persisted (and trashed ones) are not seen: a create retried
            // during `visibility_lag_ms` makes a duplicate (crm-apis §4).
            st.store.promote_pending(now_ms());
            for e in p.emails.iter().flatten() {
                let found = st.store.find_email(e);
                let active = found
                    .iter()
                    .find(|p| st.store.state_of(**p) == RecordState::Active);
                if let Some(&pos) = active {
                    return match st.cfg.duplicate_email_on_create {
                        DuplicateEmailCreate::Error => bad(
                            "LEAD_ALREADY_EXIST",
                            "A lead with this email address already exists.",
                        ),
                        _ => json(StatusCode::OK, &json!({ "leadId": st.store.rec(pos).id })),
                    };
                }
            }
        }
        let now = now_ms();
        let full = FullRec {
            first: p.first.unwrap_or_default().into(),
            last: p.last.unwrap_or_default().into(),
            emails: p
                .emails
                .unwrap_or_default()
                .into_iter()
                .map(|e| Point::new(e, "home"))
                .collect(),
            phones: p
                .phones
                .unwrap_or_default()
                .into_iter()
                .map(|e| Point::new(e, "mobile"))
                .collect(),
            tags: p
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(Text::from)
                .collect(),
            stage: p.stage.map(Text::from).unwrap_or("New".into()),
            source: p.source.map(Text::from).unwrap_or("Open API".into()),
            background: None,
            kind: "person".into(),
            tags_at: 0,
        };
        let pos = st.store.create(full, None, now);
        if st.cfg.visibility_lag_ms > 0 {
            st.store
                .mark_pending(pos, now + st.cfg.visibility_lag_ms as i64);
        }
        bump(&app.stats(Provider::Lofty).contacts_created);
        json(StatusCode::OK, &json!({ "leadId": st.store.rec(pos).id }))
    })
}

async fn lead_update(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    call(&app, &headers, Method::PUT, |app, st| {
        let Some(pos) = lookup(st, &id) else {
            return not_found();
        };
        let p = match parse_lead(&body) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let now = now_ms();
        st.store.modify(pos, now, |f| {
            if let Some(x) = p.first {
                f.first = x.into();
            }
            if let Some(x) = p.last {
                f.last = x.into();
            }
            if let Some(x) = p.emails {
                f.emails = x.into_iter().map(|e| Point::new(e, "home")).collect();
            }
            if let Some(x) = p.phones {
                f.phones = x.into_iter().map(|e| Point::new(e, "mobile")).collect();
            }
            if let Some(x) = p.tags {
                f.tags = x.into_iter().map(Text::from).collect();
                f.tags_at = now;
            }
            if let Some(x) = p.source {
                f.source = x.into();
            }
            if let Some(x) = p.stage {
                f.stage = x.into();
            }
        });
        bump(&app.stats(Provider::Lofty).contacts_updated);
        let rec = st.store.rec(pos);
        let full = rec.full();
        json(StatusCode::OK, &lead_out(&st.cfg, rec, &full))
    })
}

async fn lead_delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    call(&app, &headers, Method::DELETE, |_, st| {
        let Some(pos) = lookup(st, &id) else {
            return not_found();
        };
        let q = query_pairs(q.as_deref());
        let from_body = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(val_string));
        let reason = qget(&q, "reason").map(str::to_string).or(from_body);
        if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return bad("MISSING_PARAMETER", "reason is required.");
        }
        // "moves to trash" (§2.2): gone from lists and GET, restorable by the control API.
        let lead_id = st.store.rec(pos).id;
        st.store.set_state(pos, RecordState::Trashed);
        json(StatusCode::OK, &json!({ "leadId": lead_id }))
    })
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Method::GET, |_, st| {
        json(
            StatusCode::OK,
            &json!({
                "userId": st.cfg.user_id,
                "teamId": st.cfg.account_id,
                "firstName": "Sandbox",
                "lastName": "Agent",
                "email": "agent@example.com",
                "role": "Team Owner",
            }),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Webhooks (crm-apis §2.5)

/// The event types (`listId`) a subscription may name: 1 to 12. Only 2, Lead Info ("lead created,
/// updated, or deleted"), is delivered here.
const LIST_IDS: std::ops::RangeInclusive<u64> = 1..=12;
const LEAD_INFO: u64 = 2;
/// The vendor id a subscription reports (the sandbox's own).
const VENDOR_ID: u64 = 9001;

/// The subscription ids start here.
const FIRST_SUBSCRIBE_ID: u64 = 1234;

fn hook_out(st: &LoftyState, h: &crate::webhooks::Hook) -> Value {
    json!({
        "subscribeId": h.id.parse::<u64>().unwrap_or_default(),
        "teamId": st.cfg.account_id,
        "listId": h.event.parse::<u64>().unwrap_or_default(),
        "callbackUrl": h.url,
        "vendorId": VENDOR_ID,
        "limit": h.limit.unwrap_or(100),
    })
}

/// `POST /v1.0/webhook {"listId","callbackUrl","limit"?}` → the subscription (§2.5). `callbackUrl` must
/// be HTTPS ("HTTP endpoints are rejected"; here also plain HTTP to this machine, for a local stack);
/// `limit` is 1 to 5000, default 100.
async fn webhook_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    call(&app, &headers, Method::POST, |_, st| {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return bad("PARAM_INVALID", "request body is not valid JSON.");
        };
        let Some(list_id) = v
            .get("listId")
            .and_then(Value::as_u64)
            .filter(|l| LIST_IDS.contains(l))
        else {
            return bad("PARAM_INVALID", "listId must be one of 1 to 12.");
        };
        let Some(url) = v
            .get("callbackUrl")
            .and_then(Value::as_str)
            .filter(|u| callback_allowed(u))
        else {
            return bad("PARAM_INVALID", "callbackUrl must be an HTTPS URL.");
        };
        let limit = match v.get("limit") {
            None | Some(Value::Null) => 100,
            Some(l) => match l.as_u64().filter(|l| (1..=5000).contains(l)) {
                Some(l) => l as usize,
                None => return bad("PARAM_INVALID", "limit must be between 1 and 5000."),
            },
        };
        let hook = st
            .hooks
            .add(FIRST_SUBSCRIBE_ID, &list_id.to_string(), url, Some(limit));
        if list_id == LEAD_INFO {
            st.store.watch(true);
        }
        json(StatusCode::OK, &hook_out(st, &hook))
    })
}

async fn webhooks_list(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Method::GET, |_, st| {
        let list: Vec<Value> = st.hooks.list.iter().map(|h| hook_out(st, h)).collect();
        json(StatusCode::OK, &Value::Array(list))
    })
}

async fn webhook_delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    call(&app, &headers, Method::DELETE, |_, st| {
        if st.hooks.remove(id.trim()) {
            let watched = st
                .hooks
                .list
                .iter()
                .any(|h| h.event == LEAD_INFO.to_string());
            st.store.watch(watched);
            json(StatusCode::OK, &json!({}))
        } else {
            err(
                StatusCode::NOT_FOUND,
                "SUBSCRIBE_NOT_EXIST",
                "subscription does not exist.",
            )
        }
    })
}

/// The deliveries `changes` make. Lofty documents only the fields every payload carries, `teamId` and
/// `listId` (§2.5), and no signature: the harsher reading is that a delivery says only that leads of
/// the team changed, so the receiver must find which. One delivery per `limit` changes. A lead created
/// a moment ago may still be invisible when its delivery arrives (persistence is asynchronous, §2.2).
pub(crate) fn webhook_requests(st: &LoftyState, changes: &[Change]) -> Vec<Outgoing> {
    let mut out = Vec::new();
    if changes.is_empty() {
        return out;
    }
    let body = serde_json::to_vec(&json!({"teamId": st.cfg.account_id, "listId": LEAD_INFO}))
        .unwrap_or_default();
    for hook in st
        .hooks
        .list
        .iter()
        .filter(|h| h.event == LEAD_INFO.to_string())
    {
        let mut ids: Vec<u64> = changes.iter().map(|c| c.id).collect();
        ids.dedup();
        for chunk in ids.chunks(hook.limit.unwrap_or(100).max(1)) {
            out.push(Outgoing {
                hook_id: hook.id.clone(),
                event: hook.event.clone(),
                url: hook.url.clone(),
                ids: chunk.to_vec(),
                body: body.clone(),
                headers: Vec::new(),
            });
        }
    }
    out
}
