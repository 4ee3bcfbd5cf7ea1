//! Follow Up Boss: OAuth (`/fub/oauth/*`) and the API under `/fub/v1`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::config::{EventPhoneMatch, FubConfig, PrimaryFlag, Provider};
use crate::datagen::{FullName, FullRec, Point, Text};
use crate::limits::{SlidingWindow, Verdict};
use crate::oauth::{self, Flavor, OAuthState, TokenCheck, TokenEvent};
use crate::reqlog::{add, bump};
use crate::store::{Change, ChangeKind};
use crate::store::{Cursor, IdScheme, ListQuery, Rec, RecordState, SortField, StateFilter, Store};
use crate::util::{
    IsoSecs, b64_decode_lenient, b64url, header_str, json, json_bytes, lock, now_ms, parse_time,
    qget, query_pairs, secret_eq, set_header, to_json_sized, val_string, val_u64,
};
use crate::webhooks::{Hooks, Outgoing, callback_allowed};

pub(crate) struct FubState {
    pub cfg: FubConfig,
    pub store: Store,
    pub oauth: OAuthState,
    rl_global: SlidingWindow,
    rl_events: SlidingWindow,
    pub hooks: Hooks,
}

pub(crate) fn new_store() -> Store {
    Store::new(
        1000,
        IdScheme {
            base: 1,
            max_step: 1,
            salt: 0xF0B,
        },
    )
}

impl FubState {
    pub(crate) fn new(cfg: FubConfig) -> Self {
        FubState {
            cfg,
            store: new_store(),
            oauth: OAuthState::default(),
            rl_global: SlidingWindow::default(),
            rl_events: SlidingWindow::default(),
            hooks: Hooks::default(),
        }
    }

    pub(crate) fn reset_limits(&mut self) {
        self.rl_global = SlidingWindow::default();
        self.rl_events = SlidingWindow::default();
    }

    pub(crate) fn flavor(&self) -> Flavor {
        Flavor {
            provider: Provider::Fub,
            response_type: "auth_code",
            basic_only: true,
            require_state: true,
            pkce: false,
            require_pkce: false,
            include_scope: false,
            response_param: true,
            code_ttl_ms: 15 * 60_000,
            access_ttl_secs: self.cfg.access_token_lifetime_secs,
            rotate_refresh: self.cfg.rotate_refresh_tokens,
            default_scope: String::new(),
            display_name: "Follow Up Boss",
        }
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/fub/oauth/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route("/fub/oauth/token", post(token))
        .route("/fub/v1/people", get(people_list).post(people_create))
        .route("/fub/v1/people/checkDuplicate", get(check_duplicate))
        .route("/fub/v1/people/{id}", get(people_get).put(people_update))
        .route("/fub/v1/events", post(events))
        .route("/fub/v1/me", get(me))
        .route("/fub/v1/identity", get(identity))
        .route("/fub/v1/webhooks", get(webhooks_list).post(webhooks_create))
        .route(
            "/fub/v1/webhooks/{id}",
            get(webhooks_get).delete(webhooks_delete),
        )
}

fn err(status: StatusCode, msg: &str) -> Response {
    json(status, &json!({ "errorMessage": msg }))
}

// ---------------------------------------------------------------------------------------
// OAuth

async fn authorize_get(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let auto = app.auto_approve();
    let mut st = lock(&app.fub);
    let flavor = st.flavor();
    let clients = st.cfg.oauth_clients.clone();
    oauth::authorize(
        &flavor,
        &clients,
        auto,
        &mut st.oauth,
        &query_pairs(q.as_deref()),
    )
}

async fn authorize_post(State(app): State<App>, body: Bytes) -> Response {
    let mut st = lock(&app.fub);
    let flavor = st.flavor();
    oauth::decide(&flavor, &mut st.oauth, &body)
}

async fn token(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = lock(&app.fub);
    let flavor = st.flavor();
    let clients = st.cfg.oauth_clients.clone();
    let (r, ev) = oauth::token(&flavor, &clients, &mut st.oauth, &headers, &body);
    let stats = app.stats(Provider::Fub);
    match ev {
        TokenEvent::CodeExchange => bump(&stats.code_exchanges),
        TokenEvent::Refresh => bump(&stats.refreshes),
        TokenEvent::None => {}
    }
    r
}

// ---------------------------------------------------------------------------------------
// Gate: credentials, system headers, rate limit

#[derive(Debug, Clone, Copy)]
enum Ctx {
    Global,
    Events,
}

struct Rl {
    limit: u32,
    remaining: u32,
    ctx: &'static str,
    window: u32,
}

fn with_rl(mut r: Response, rl: &Rl) -> Response {
    set_header(&mut r, "x-ratelimit-limit", rl.limit);
    set_header(&mut r, "x-ratelimit-remaining", rl.remaining);
    set_header(&mut r, "x-ratelimit-window", rl.window);
    set_header(&mut r, "x-ratelimit-context", rl.ctx);
    r
}

fn strip_scheme<'a>(auth: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = auth.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

fn gate(st: &mut FubState, headers: &HeaderMap, ctx: Ctx) -> Result<Rl, Response> {
    let auth = header_str(headers, "authorization").unwrap_or("").trim();
    let authenticated = if let Some(b) = strip_scheme(auth, "basic") {
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .map(|s| {
                let key = s.split(':').next().unwrap_or("").to_string();
                st.cfg.api_keys.iter().any(|k| secret_eq(k, &key))
            })
            .unwrap_or(false)
    } else if let Some(tok) = strip_scheme(auth, "bearer") {
        match st.oauth.check(tok) {
            TokenCheck::Valid => true,
            TokenCheck::Expired => {
                return Err(err(
                    StatusCode::UNAUTHORIZED,
                    "The access token has expired.",
                ));
            }
            TokenCheck::Unknown => false,
        }
    } else {
        false
    };
    if !authenticated {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            "Invalid API key or access token.",
        ));
    }
    let sys = header_str(headers, "x-system");
    let sys_key = header_str(headers, "x-system-key");
    if st.cfg.require_system_headers && (sys.is_none() || sys_key.is_none()) {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            "The X-System and X-System-Key headers are required in every request.",
        ));
    }
    let (window, limit, name) = match ctx {
        Ctx::Global => (&mut st.rl_global, st.cfg.rate_limit_global, "global"),
        Ctx::Events => (&mut st.rl_events, st.cfg.rate_limit_events, "events"),
    };
    let win_secs = st.cfg.rate_limit_window_secs.max(1);
    let rl = match window.check(now_ms(), win_secs as i64 * 1000, limit) {
        Verdict::Allowed { remaining } => Rl {
            limit,
            remaining,
            ctx: name,
            window: win_secs,
        },
        Verdict::Limited { retry_after_secs } => {
            let rl = Rl {
                limit,
                remaining: 0,
                ctx: name,
                window: win_secs,
            };
            let mut r = with_rl(
                err(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit exceeded. Your request was not processed; retry after the Retry-After delay.",
                ),
                &rl,
            );
            set_header(&mut r, "retry-after", retry_after_secs);
            return Err(r);
        }
    };
    if sys.is_some() || sys_key.is_some() {
        let ok = sys == Some(st.cfg.system.as_str())
            && sys_key.is_some_and(|k| secret_eq(k, &st.cfg.system_key));
        if !ok {
            return Err(with_rl(
                err(
                    StatusCode::FORBIDDEN,
                    "Invalid X-System or X-System-Key: this system is not registered.",
                ),
                &rl,
            ));
        }
    }
    Ok(rl)
}

fn call(
    app: &App,
    headers: &HeaderMap,
    ctx: Ctx,
    f: impl FnOnce(&App, &mut FubState) -> Response,
) -> Response {
    let mut st = lock(&app.fub);
    let rl = match gate(&mut st, headers, ctx) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let mut r = with_rl(f(app, &mut st), &rl);
    // "Response headers FUB-Account-ID, FUB-User-ID on every response" (crm-apis §1.1,
    // [3P]): on every authenticated one here.
    set_header(&mut r, "fub-account-id", st.cfg.account_id);
    set_header(&mut r, "fub-user-id", st.cfg.user_id);
    r
}

/// Fault responses in FUB's shape (used by the dispatcher).
pub(crate) fn fault_response(status: StatusCode, retry_after: u64, st: &mut FubState) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let limit = st.cfg.rate_limit_global;
        let rl = Rl {
            limit,
            remaining: 0,
            ctx: "global",
            window: st.cfg.rate_limit_window_secs,
        };
        let mut r = with_rl(
            err(
                status,
                "Rate limit exceeded. Your request was not processed.",
            ),
            &rl,
        );
        set_header(&mut r, "retry-after", retry_after);
        r
    } else {
        err(
            status,
            "The server encountered an error. Please retry later.",
        )
    }
}

// ---------------------------------------------------------------------------------------
// Person JSON

#[derive(Serialize)]
#[serde(untagged)]
enum Primary {
    Int(u8),
    Bool(bool),
}

#[derive(Serialize)]
struct PointOut<'a> {
    value: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "isPrimary")]
    is_primary: Primary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PersonOut<'a> {
    id: u64,
    created: IsoSecs,
    updated: IsoSecs,
    created_via: &'static str,
    last_activity: IsoSecs,
    name: FullName<'a>,
    first_name: &'a str,
    last_name: &'a str,
    stage: &'a str,
    source: &'a str,
    emails: Points<'a>,
    phones: Points<'a>,
    tags: &'a [Text],
    background: Option<&'a str>,
    assigned_to: Option<&'static str>,
}

/// `[{value, type, isPrimary}]` serialized straight from the record (no temporary Vec).
struct Points<'a>(&'a [Point], PrimaryFlag);

impl Serialize for Points<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (i, p) in self.0.iter().enumerate() {
            seq.serialize_element(&PointOut {
                value: &p.value,
                kind: &p.label,
                is_primary: match self.1 {
                    PrimaryFlag::Int => Primary::Int(u8::from(i == 0)),
                    PrimaryFlag::Bool => Primary::Bool(i == 0),
                },
            })?;
        }
        seq.end()
    }
}

/// A trashed person shows the `Trash` stage (crm-apis §1.3: "Trash stage"); the stage it
/// had is kept for a restore.
fn person_out<'a>(
    cfg: &FubConfig,
    rec: &Rec,
    full: &'a FullRec,
    state: RecordState,
) -> PersonOut<'a> {
    PersonOut {
        id: rec.id,
        created: IsoSecs(rec.created),
        updated: IsoSecs(rec.updated),
        created_via: "API",
        last_activity: IsoSecs(rec.updated),
        name: full.full_name(),
        first_name: &full.first,
        last_name: &full.last,
        stage: if state == RecordState::Trashed {
            TRASH
        } else {
            &full.stage
        },
        source: &full.source,
        emails: Points(&full.emails, cfg.is_primary_format),
        phones: Points(&full.phones, cfg.is_primary_format),
        tags: &full.tags,
        background: full.background.as_deref(),
        assigned_to: None,
    }
}

const TRASH: &str = "Trash";

fn person_response(status: StatusCode, cfg: &FubConfig, store: &Store, pos: u32) -> Response {
    let rec = store.rec(pos);
    let full = rec.full();
    json(status, &person_out(cfg, rec, &full, store.state_of(pos)))
}

// ---------------------------------------------------------------------------------------
// GET /v1/people

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct NextToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sort: Option<String>,
    since_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_after: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    include_trash: bool,
}

fn parse_sort(s: &str) -> Option<(SortField, bool)> {
    let (desc, name) = match s.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, s),
    };
    let f = match name {
        "id" => SortField::Id,
        "created" => SortField::Created,
        "updated" => SortField::Updated,
        _ => return None,
    };
    Some((f, desc))
}

#[derive(Serialize)]
struct Meta {
    collection: &'static str,
    offset: usize,
    limit: u32,
    total: usize,
    next: Option<String>,
    #[serde(rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Serialize)]
struct ListOut<'a> {
    #[serde(rename = "_metadata")]
    metadata: Meta,
    people: Vec<PersonOut<'a>>,
}

async fn people_list(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let host = header_str(&headers, "host")
        .unwrap_or("127.0.0.1")
        .to_string();
    call(&app, &headers, Ctx::Global, |app, st| {
        list_people(app, st, &host, q.as_deref())
    })
}

fn candidates(
    st: &mut FubState,
    ids: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> Result<Option<Vec<u32>>, Response> {
    let mut set: Option<Vec<u32>> = None;
    let mut intersect = |v: Vec<u32>| {
        set = Some(match set.take() {
            None => v,
            Some(prev) => prev.into_iter().filter(|p| v.contains(p)).collect(),
        });
    };
    if let Some(ids) = ids.filter(|s| !s.trim().is_empty()) {
        let mut v = Vec::new();
        for part in ids.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Ok(id) = part.parse::<u64>() else {
                return Err(err(StatusCode::BAD_REQUEST, "Invalid id filter."));
            };
            if let Some(p) = st.store.pos_of(id) {
                v.push(p);
            }
        }
        intersect(v);
    }
    if let Some(ph) = phone.filter(|s| !s.trim().is_empty()) {
        intersect(st.store.find_phone(ph));
    }
    if let Some(em) = email.filter(|s| !s.trim().is_empty()) {
        intersect(st.store.find_email(em));
    }
    Ok(set)
}

fn list_people(app: &App, st: &mut FubState, host: &str, raw: Option<&str>) -> Response {
    let q = query_pairs(raw);
    let limit = match qget(&q, "limit") {
        None | Some("") => st.cfg.default_limit,
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) => n.clamp(1, st.cfg.max_limit.max(1) as i64) as u32,
            Err(_) => return err(StatusCode::BAD_REQUEST, "Invalid value for limit."),
        },
    };
    let mut token = match qget(&q, "next").filter(|s| !s.is_empty()) {
        Some(n) => {
            match b64_decode_lenient(n).and_then(|b| serde_json::from_slice::<NextToken>(&b).ok()) {
                Some(t) => Some(t),
                None => return err(StatusCode::BAD_REQUEST, "Invalid value for next."),
            }
        }
        None => None,
    };
    let offset = if token.is_some() {
        0
    } else {
        match qget(&q, "offset") {
            None | Some("") => 0,
            Some(o) => match o.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => return err(StatusCode::BAD_REQUEST, "Invalid value for offset."),
            },
        }
    };
    if offset > st.cfg.deep_pagination_max_offset {
        return err(
            StatusCode::BAD_REQUEST,
            &format!(
                "Deep pagination disabled. Use the 'next' parameter (or 'nextLink') to page beyond offset {}.",
                st.cfg.deep_pagination_max_offset
            ),
        );
    }
    let sort_str = match &token {
        Some(t) => t.sort.clone().unwrap_or_else(|| "-id".to_string()),
        None => qget(&q, "sort")
            .filter(|s| !s.is_empty())
            .unwrap_or(&st.cfg.default_sort)
            .to_string(),
    };
    let Some((sort, desc)) = parse_sort(&sort_str) else {
        return err(
            StatusCode::BAD_REQUEST,
            "Invalid sort. Supported: id, created, updated (prefix - for descending).",
        );
    };
    let (ids, phone, email, updated_after, include_trash) = match &token {
        Some(t) => (
            t.id.clone(),
            t.phone.clone(),
            t.email.clone(),
            t.updated_after,
            t.include_trash,
        ),
        None => {
            let ua = if st.cfg.updated_after_filter {
                match qget(&q, "updatedAfter").filter(|s| !s.is_empty()) {
                    Some(s) => match parse_time(s) {
                        Some(t) => Some(t),
                        None => {
                            return err(StatusCode::BAD_REQUEST, "Invalid value for updatedAfter.");
                        }
                    },
                    None => None,
                }
            } else {
                None
            };
            (
                qget(&q, "id").map(str::to_string),
                qget(&q, "phone").map(str::to_string),
                qget(&q, "email").map(str::to_string),
                ua,
                // "Trash stage excluded unless includeTrash=true" (crm-apis §1.3).
                qget(&q, "includeTrash")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            )
        }
    };
    let cands = match candidates(st, ids.as_deref(), phone.as_deref(), email.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut lq = ListQuery::new(sort, desc, limit as usize);
    lq.candidates = cands;
    lq.offset = offset as usize;
    if include_trash {
        lq.filter = StateFilter::Any;
    }
    lq.updated_min = updated_after.map(|t| (t, false));
    lq.after = token.as_ref().map(|t| Cursor {
        time: t.since_time.unwrap_or(0),
        id: t.since_id,
    });
    let page = st.store.list(&lq);
    // `next` is returned "when keyset pagination is possible" (pagination reference); the
    // harsher reading: for id-ordered lists only. Other sorts page by `offset` (refused
    // beyond `deep_pagination_max_offset`) and get `next: null`, `nextLink: null`.
    let keyset = sort == SortField::Id || st.cfg.keyset_for_all_sorts;
    let next = match (page.more && keyset, page.items.last()) {
        (true, Some(&last)) => {
            let c = st.store.cursor_of(last, sort);
            let t = token.get_or_insert_with(NextToken::default);
            t.sort = (sort_str != "-id").then(|| sort_str.clone());
            t.since_id = c.id;
            t.since_time = (sort != SortField::Id).then_some(c.time);
            t.id = ids.clone();
            t.phone = phone.clone();
            t.email = email.clone();
            t.updated_after = updated_after;
            t.include_trash = include_trash;
            serde_json::to_vec(&t).ok().map(|b| b64url(&b))
        }
        _ => None,
    };
    let next_link = next
        .as_ref()
        .map(|n| format!("http://{host}/fub/v1/people?limit={limit}&&next={n}"));
    let fulls: Vec<_> = page
        .items
        .iter()
        .map(|p| (st.store.rec(*p), st.store.rec(*p).full()))
        .collect();
    let people: Vec<PersonOut> = fulls
        .iter()
        .zip(&page.items)
        .map(|((rec, full), pos)| person_out(&st.cfg, rec, full, st.store.state_of(*pos)))
        .collect();
    add(
        &app.stats(Provider::Fub).contacts_served,
        people.len() as u64,
    );
    let out = ListOut {
        metadata: Meta {
            collection: "people",
            offset: page.rank,
            limit,
            total: page.total,
            next,
            next_link,
        },
        people,
    };
    let n = out.people.len();
    match to_json_sized(&out, n) {
        Ok(b) => json_bytes(StatusCode::OK, b),
        Err(_) => err(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed"),
    }
}

// ---------------------------------------------------------------------------------------
// Single person, duplicates, create, update

fn parse_id(s: &str) -> Option<u64> {
    s.trim().parse::<u64>().ok()
}

async fn people_get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        match parse_id(&id).and_then(|id| st.store.pos_of(id)) {
            Some(pos) => person_response(StatusCode::OK, &st.cfg, &st.store, pos),
            None => err(StatusCode::NOT_FOUND, "Person not found."),
        }
    })
}

async fn check_duplicate(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        let q = query_pairs(q.as_deref());
        let email = qget(&q, "email").filter(|s| !s.trim().is_empty());
        let phone = qget(&q, "phone").filter(|s| !s.trim().is_empty());
        if email.is_none() && phone.is_none() {
            return err(
                StatusCode::BAD_REQUEST,
                "Either email or phone is required.",
            );
        }
        let mut hit: Option<(u32, &str)> = None;
        if let Some(e) = email {
            hit = st.store.find_email(e).first().map(|p| (*p, "email"));
        }
        if hit.is_none()
            && let Some(p) = phone
        {
            hit = st.store.find_phone(p).first().map(|p| (*p, "phone"));
        }
        match hit {
            Some((pos, on)) => json(
                StatusCode::OK,
                &json!({
                    "duplicate": true,
                    "matchedOn": on,
                    "personId": st.store.rec(pos).id,
                    "assignedTo": "Sandbox Agent",
                    "assignedUserId": 1,
                }),
            ),
            None => json(StatusCode::OK, &json!({ "duplicate": false })),
        }
    })
}

#[derive(Default, Debug)]
struct PersonPatch {
    id: Option<u64>,
    first: Option<String>,
    last: Option<String>,
    emails: Option<Vec<Point>>,
    phones: Option<Vec<Point>>,
    tags: Option<Vec<String>>,
    stage: Option<String>,
    source: Option<String>,
    background: Option<Option<String>>,
    created: Option<i64>,
}

fn parse_points(v: &Value, what: &str, default_label: &'static str) -> Result<Vec<Point>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{what} must be an array."))?;
    let mut out = Vec::new();
    for item in arr {
        match item {
            Value::String(s) => out.push(Point::new(s.clone(), default_label)),
            Value::Object(o) => {
                let value = o
                    .get("value")
                    .and_then(val_string)
                    .ok_or_else(|| format!("Each entry of {what} needs a value."))?;
                let label: Text = match o.get("type").and_then(Value::as_str) {
                    Some(t) => t.to_string().into(),
                    None => default_label.into(),
                };
                out.push(Point::new(value, label));
            }
            _ => return Err(format!("Invalid entry in {what}.")),
        }
    }
    Ok(out)
}

fn opt_string(o: &serde_json::Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => val_string(v)
            .map(Some)
            .ok_or_else(|| format!("{k} must be a string.")),
    }
}

fn parse_person(v: &Value) -> Result<PersonPatch, String> {
    let o = v
        .as_object()
        .ok_or_else(|| "The body must be a JSON object.".to_string())?;
    let mut p = PersonPatch {
        id: o.get("id").and_then(val_u64),
        first: opt_string(o, "firstName")?,
        last: opt_string(o, "lastName")?,
        stage: opt_string(o, "stage")?,
        source: opt_string(o, "source")?,
        ..PersonPatch::default()
    };
    if o.contains_key("id") && p.id.is_none() && !o.get("id").is_some_and(Value::is_null) {
        return Err("id must be a number.".into());
    }
    if let Some(name) = opt_string(o, "name")?
        && p.first.is_none()
        && p.last.is_none()
    {
        let name = name.trim();
        match name.split_once(char::is_whitespace) {
            Some((f, l)) => {
                p.first = Some(f.to_string());
                p.last = Some(l.trim().to_string());
            }
            None => p.first = Some(name.to_string()),
        }
    }
    if let Some(e) = o.get("emails").filter(|v| !v.is_null()) {
        p.emails = Some(parse_points(e, "emails", "home")?);
    }
    if let Some(ph) = o.get("phones").filter(|v| !v.is_null()) {
        p.phones = Some(parse_points(ph, "phones", "mobile")?);
    }
    if let Some(t) = o.get("tags").filter(|v| !v.is_null()) {
        let arr = t.as_array().ok_or("tags must be an array.")?;
        p.tags = Some(arr.iter().filter_map(val_string).collect());
    }
    if o.contains_key("background") {
        p.background = Some(opt_string(o, "background")?);
    }
    if let Some(c) = o.get("created").filter(|v| !v.is_null()) {
        let s = c.as_str().ok_or("created must be a date string.")?;
        p.created = Some(parse_time(s).ok_or("Invalid created date.")?);
    }
    Ok(p)
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        )
    })
}

fn find_existing(
    st: &mut FubState,
    p: &PersonPatch,
    phone_rule: EventPhoneMatch,
) -> Option<(u32, &'static str)> {
    for e in p.emails.iter().flatten() {
        if let Some(pos) = st.store.find_email(&e.value).first() {
            return Some((*pos, "email"));
        }
    }
    if phone_rule == EventPhoneMatch::Off {
        return None;
    }
    for ph in p.phones.iter().flatten() {
        for pos in st.store.find_phone(&ph.value) {
            if phone_rule == EventPhoneMatch::PhoneAndName {
                let full = st.store.rec(pos).full();
                let same = |a: &Option<String>, b: &str| {
                    a.as_deref()
                        .is_some_and(|a| a.trim().eq_ignore_ascii_case(b.trim()))
                };
                if !(same(&p.first, &full.first) && same(&p.last, &full.last)) {
                    continue;
                }
            }
            return Some((pos, "phone"));
        }
    }
    None
}

fn new_full(p: &PersonPatch, default_source: &str) -> FullRec {
    FullRec {
        first: p.first.clone().unwrap_or_default().into(),
        last: p.last.clone().unwrap_or_default().into(),
        emails: p.emails.clone().unwrap_or_default(),
        phones: p.phones.clone().unwrap_or_default(),
        tags: p
            .tags
            .iter()
            .flatten()
            .map(|t| Text::from(t.clone()))
            .collect(),
        stage: p.stage.clone().map(Text::from).unwrap_or("Lead".into()),
        source: p
            .source
            .clone()
            .unwrap_or_else(|| default_source.to_string())
            .into(),
        background: p.background.clone().flatten(),
        kind: "person".into(),
        tags_at: 0,
    }
}

async fn people_create(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    call(&app, &headers, Ctx::Global, |app, st| {
        let q = query_pairs(q.as_deref());
        let dedupe =
            qget(&q, "deduplicate").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let v = match parse_body(&body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let p = match parse_person(&v) {
            Ok(p) => p,
            Err(m) => return err(StatusCode::BAD_REQUEST, &m),
        };
        let empty = p.first.as_deref().unwrap_or("").is_empty()
            && p.last.as_deref().unwrap_or("").is_empty()
            && p.emails.as_ref().is_none_or(Vec::is_empty)
            && p.phones.as_ref().is_none_or(Vec::is_empty);
        if empty {
            return err(
                StatusCode::BAD_REQUEST,
                "A person needs at least a name, an email address or a phone number.",
            );
        }
        if dedupe && let Some((pos, on)) = find_existing(st, &p, EventPhoneMatch::Phone) {
            let mut r = person_response(StatusCode::OK, &st.cfg, &st.store, pos);
            set_header(&mut r, "x-sandbox-dedupe", on);
            return r;
        }
        let full = new_full(&p, "API");
        let pos = st.store.create(full, p.created, now_ms());
        bump(&app.stats(Provider::Fub).contacts_created);
        person_response(StatusCode::CREATED, &st.cfg, &st.store, pos)
    })
}

async fn people_update(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    call(&app, &headers, Ctx::Global, |app, st| {
        let q = query_pairs(q.as_deref());
        let merge_tags =
            qget(&q, "mergeTags").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let Some(pos) = parse_id(&id).and_then(|id| st.store.pos_of(id)) else {
            return err(StatusCode::NOT_FOUND, "Person not found.");
        };
        let v = match parse_body(&body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let p = match parse_person(&v) {
            Ok(p) => p,
            Err(m) => return err(StatusCode::BAD_REQUEST, &m),
        };
        // Trash is a stage (crm-apis §1.3): `{"stage":"Trash"}` trashes the person, another
        // stage restores a trashed one. Whether that changes `updated` is not documented:
        // only with `trash_bumps_updated`, unless the PUT changes something else too.
        let to_trash = p
            .stage
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(TRASH));
        let was_trashed = st.store.state_of(pos) == RecordState::Trashed;
        let moves = (to_trash && !was_trashed) || (was_trashed && p.stage.is_some() && !to_trash);
        let other = p.first.is_some()
            || p.last.is_some()
            || p.emails.is_some()
            || p.phones.is_some()
            || p.tags.is_some()
            || p.background.is_some();
        let t = if moves && !other && !st.cfg.trash_bumps_updated {
            st.store.rec(pos).updated
        } else {
            now_ms()
        };
        // Webhooks (§1.6): a PUT that only moves the stage is `peopleStageUpdated`, not `peopleUpdated`
        // (a move into or out of the trash is told by `set_state` below).
        let told = match (p.stage.is_some() && !other, moves) {
            (false, _) => Some(ChangeKind::Updated),
            (true, false) => Some(ChangeKind::Stage),
            (true, true) => None,
        };
        st.store.modify_as(pos, t, told, |f| {
            if let Some(x) = &p.first {
                f.first = x.clone().into();
            }
            if let Some(x) = &p.last {
                f.last = x.clone().into();
            }
            if let Some(x) = &p.emails {
                f.emails = x.clone();
            }
            if let Some(x) = &p.phones {
                f.phones = x.clone();
            }
            if let Some(tags) = &p.tags {
                if merge_tags {
                    for t in tags {
                        if !f.tags.iter().any(|e| e.eq_ignore_ascii_case(t)) {
                            f.tags.push(t.clone().into());
                        }
                    }
                } else {
                    f.tags = tags.iter().map(|t| Text::from(t.clone())).collect();
                }
            }
            if let Some(x) = p.stage.as_ref().filter(|_| !to_trash) {
                f.stage = x.clone().into();
            }
            if let Some(x) = &p.background {
                f.background = x.clone();
            }
            // `source` is only settable at creation: ignored here.
        });
        if to_trash {
            st.store.set_state(pos, RecordState::Trashed);
        } else if p.stage.is_some() {
            st.store.set_state(pos, RecordState::Active);
        }
        bump(&app.stats(Provider::Fub).contacts_updated);
        person_response(StatusCode::OK, &st.cfg, &st.store, pos)
    })
}

// ---------------------------------------------------------------------------------------
// POST /v1/events

async fn events(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    call(&app, &headers, Ctx::Events, |app, st| {
        let v = match parse_body(&body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(o) = v.as_object() else {
            return err(StatusCode::BAD_REQUEST, "The body must be a JSON object.");
        };
        let source = o
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
        if o.get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t.trim().is_empty())
        {
            return err(StatusCode::BAD_REQUEST, "type is required.");
        }
        let Some(person) = o.get("person").filter(|p| p.is_object()) else {
            return err(StatusCode::BAD_REQUEST, "person is required.");
        };
        if !source.is_empty()
            && st
                .cfg
                .archived_sources
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&source))
        {
            // Lead flow archived for this source: ignored.
            return crate::util::empty(StatusCode::NO_CONTENT);
        }
        let p = match parse_person(person) {
            Ok(p) => p,
            Err(m) => return err(StatusCode::BAD_REQUEST, &m),
        };
        let existing = match p.id {
            Some(id) => match st.store.pos_of(id) {
                Some(pos) => Some((pos, "id")),
                None => return err(StatusCode::NOT_FOUND, "Person not found."),
            },
            None => {
                let rule = st.cfg.events_phone_match;
                find_existing(st, &p, rule)
            }
        };
        match existing {
            Some((pos, on)) => {
                st.store.modify(pos, now_ms(), |f| {
                    if f.first.is_empty()
                        && let Some(x) = &p.first
                    {
                        f.first = x.clone().into();
                    }
                    if f.last.is_empty()
                        && let Some(x) = &p.last
                    {
                        f.last = x.clone().into();
                    }
                    for e in p.emails.iter().flatten() {
                        if !f
                            .emails
                            .iter()
                            .any(|x| x.value.eq_ignore_ascii_case(&e.value))
                        {
                            f.emails.push(e.clone());
                        }
                    }
                    for ph in p.phones.iter().flatten() {
                        let k = crate::store::phone_key(&ph.value);
                        let dup = f.phones.iter().any(|x| {
                            x.value == ph.value
                                || (k.is_some() && crate::store::phone_key(&x.value) == k)
                        });
                        if !dup {
                            f.phones.push(ph.clone());
                        }
                    }
                    for t in p.tags.iter().flatten() {
                        if !f.tags.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                            f.tags.push(t.clone().into());
                        }
                    }
                });
                bump(&app.stats(Provider::Fub).contacts_updated);
                let mut r = person_response(StatusCode::OK, &st.cfg, &st.store, pos);
                set_header(&mut r, "x-sandbox-dedupe", on);
                r
            }
            None => {
                let src = if source.is_empty() { "API" } else { &source };
                let mut full = new_full(&p, src);
                if p.source.is_none() {
                    full.source = src.to_string().into();
                }
                let pos = st.store.create(full, None, now_ms());
                bump(&app.stats(Provider::Fub).contacts_created);
                person_response(StatusCode::CREATED, &st.cfg, &st.store, pos)
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Identity

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        json(
            StatusCode::OK,
            &json!({
                "id": st.cfg.user_id,
                "name": "Sandbox Owner",
                "firstName": "Sandbox",
                "lastName": "Owner",
                "email": "owner@example.com",
                "role": "Owner",
                "status": "Active",
            }),
        )
    })
}

async fn identity(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        let (account, user) = (st.cfg.account_id, st.cfg.user_id);
        json(
            StatusCode::OK,
            &json!({
                "account": {"id": account, "name": "Sandbox Realty", "domain": "sandbox", "owner": {"id": user, "name": "Sandbox Owner"}},
                "user": {"id": user, "name": "Sandbox Owner", "email": "owner@example.com", "role": "Owner"},
            }),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Webhooks (crm-apis §1.6)

/// The people events a subscription can name (crm-apis §1.6; the other families are not simulated and
/// are refused).
const PEOPLE_EVENTS: &[&str] = &[
    "peopleCreated",
    "peopleUpdated",
    "peopleDeleted",
    "peopleTagsCreated",
    "peopleStageUpdated",
    "peopleRelationshipCreated",
    "peopleRelationshipUpdated",
    "peopleRelationshipDeleted",
];

/// The event a change of a person is told as. Trash is a stage (§1.3), so trashing or restoring a person
/// is `peopleStageUpdated`. Whether FUB also sends `peopleUpdated` for it is not documented; the harsher
/// reading is that it does not, so a receiver that wants to see trashings subscribes to both.
fn event_of(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Created => "peopleCreated",
        ChangeKind::Updated => "peopleUpdated",
        ChangeKind::Removed | ChangeKind::Restored | ChangeKind::Stage => "peopleStageUpdated",
    }
}

/// Webhooks belong to a system (its `X-System-Key` signs them, §1.6): registering one without the
/// system headers is refused even where other calls may omit them.
fn require_system(headers: &HeaderMap) -> Result<(), Response> {
    if header_str(headers, "x-system").is_none() || header_str(headers, "x-system-key").is_none() {
        return Err(err(
            StatusCode::FORBIDDEN,
            "Webhooks are registered by a system: send X-System and X-System-Key.",
        ));
    }
    Ok(())
}

fn hook_out(st: &FubState, h: &crate::webhooks::Hook) -> Value {
    json!({
        "id": h.id.parse::<u64>().unwrap_or_default(),
        "event": h.event,
        "url": h.url,
        "status": "Active",
        "system": st.cfg.system,
    })
}

#[derive(Deserialize)]
struct HookIn {
    event: Option<String>,
    url: Option<String>,
}

async fn webhooks_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_system(&headers) {
        return r;
    }
    call(&app, &headers, Ctx::Global, |_, st| {
        let Ok(b) = serde_json::from_slice::<HookIn>(&body) else {
            return err(StatusCode::BAD_REQUEST, "Invalid JSON body.");
        };
        let Some(event) = b.event.filter(|e| PEOPLE_EVENTS.contains(&e.as_str())) else {
            return err(StatusCode::BAD_REQUEST, "Invalid value for event.");
        };
        let Some(url) = b.url.filter(|u| callback_allowed(u)) else {
            return err(
                StatusCode::BAD_REQUEST,
                "Invalid value for url: an https:// address is required.",
            );
        };
        let same = st.hooks.list.iter().filter(|h| h.event == event).count();
        if same >= st.cfg.webhooks_per_event as usize {
            return err(
                StatusCode::BAD_REQUEST,
                "The maximum number of webhooks for this event has been reached.",
            );
        }
        let hook = st.hooks.add(1, &event, &url, None);
        // Changes from now on are told.
        st.store.watch(true);
        json(StatusCode::CREATED, &hook_out(st, &hook))
    })
}

async fn webhooks_list(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        let q = query_pairs(q.as_deref());
        let event = qget(&q, "event");
        let hooks: Vec<Value> = st
            .hooks
            .list
            .iter()
            .filter(|h| event.is_none_or(|e| h.event == e))
            .map(|h| hook_out(st, h))
            .collect();
        json(StatusCode::OK, &json!({ "webhooks": hooks }))
    })
}

async fn webhooks_get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    call(&app, &headers, Ctx::Global, |_, st| {
        match st.hooks.list.iter().find(|h| h.id == id.trim()) {
            Some(h) => json(StatusCode::OK, &hook_out(st, h)),
            None => err(StatusCode::NOT_FOUND, "Webhook not found."),
        }
    })
}

async fn webhooks_delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = require_system(&headers) {
        return r;
    }
    call(&app, &headers, Ctx::Global, |_, st| {
        if st.hooks.remove(id.trim()) {
            st.store.watch(!st.hooks.list.is_empty());
            json(StatusCode::OK, &json!({}))
        } else {
            err(StatusCode::NOT_FOUND, "Webhook not found.")
        }
    })
}

/// `FUB-Signature`: lowercase hex HMAC-SHA256 keyed with the system's `X-System-Key` over the base64 of
/// the body's bytes (crm-apis §1.6).
pub(crate) fn signature(system_key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(system_key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(
        base64::engine::general_purpose::STANDARD
            .encode(body)
            .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

/// The deliveries `changes` make: per subscription, one request per event and up to `max_ids` people,
/// thin as FUB's are (`{eventId, eventCreated, event, resourceIds, uri}`, §1.6): the receiver reads the
/// people back through `uri`.
pub(crate) fn webhook_requests(
    app: &App,
    st: &FubState,
    changes: &[Change],
    max_ids: usize,
) -> Vec<Outgoing> {
    let mut out = Vec::new();
    if changes.is_empty() {
        return out;
    }
    for hook in &st.hooks.list {
        let mut ids: Vec<u64> = Vec::new();
        for c in changes {
            if event_of(c.kind) == hook.event && !ids.contains(&c.id) {
                ids.push(c.id);
            }
        }
        for chunk in ids.chunks(hook.limit.unwrap_or(max_ids).max(1)) {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let body = json!({
                "eventId": crate::util::guid(),
                "eventCreated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "event": hook.event,
                "resourceIds": chunk,
                "uri": format!("http://{}/fub/v1/people?id={}", app.local_addr, list.join(",")),
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            out.push(Outgoing {
                hook_id: hook.id.clone(),
                event: hook.event.clone(),
                url: hook.url.clone(),
                ids: chunk.to_vec(),
                headers: vec![("fub-signature", signature(&st.cfg.system_key, &body))],
                body,
            });
        }
    }
    out
}
