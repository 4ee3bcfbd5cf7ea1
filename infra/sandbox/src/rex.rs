//! REX (Rex Software): OAuth (`/rex/oauth/*`) and the RPC API
//! `POST /rex/v1/rex/<Service>/<method>`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::App;
use crate::config::{PhoneSearch, Provider, RexConfig};
use crate::datagen::{FullName, FullRec, Point, Text};
use crate::oauth::{self, AccessToken, Flavor, OAuthState, TokenCheck, TokenEvent};
use crate::reqlog::{add, bump};
use crate::store::{
    Change, ChangeKind, IdScheme, ListQuery, Rec, RecordState, SortField, StateFilter, Store,
    phone_key,
};
use crate::util::{
    AsStr, fnv1a, guid, header_str, json, json_bytes, lock, now_ms, query_pairs, secret_eq,
    set_header, to_json_sized, val_i64, val_str, val_string, val_u64,
};
use crate::webhooks::{Hooks, Outgoing, callback_allowed};

pub(crate) struct RexState {
    pub cfg: RexConfig,
    pub store: Store,
    pub oauth: OAuthState,
    pub hooks: Hooks,
}

pub(crate) fn new_store() -> Store {
    Store::new(
        1000,
        IdScheme {
            base: 36_685_959,
            max_step: 3,
            salt: 0x4E7,
        },
    )
}

impl RexState {
    pub(crate) fn new(cfg: RexConfig) -> Self {
        RexState {
            cfg,
            store: new_store(),
            oauth: OAuthState::default(),
            hooks: Hooks::default(),
        }
    }

    pub(crate) fn flavor(&self) -> Flavor {
        Flavor {
            provider: Provider::Rex,
            response_type: "code",
            basic_only: false,
            require_state: false,
            pkce: true,
            require_pkce: self.cfg.require_pkce,
            include_scope: true,
            response_param: false,
            code_ttl_ms: 10 * 60_000,
            access_ttl_secs: self.cfg.access_token_lifetime_secs,
            rotate_refresh: self.cfg.rotate_refresh_tokens,
            default_scope: self.cfg.default_scope.clone(),
            display_name: "Rex",
        }
    }
}

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/rex/oauth/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route("/rex/oauth/token", post(token))
        .route("/rex/v1/rex/{service}/{method}", post(rpc))
}

async fn authorize_get(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let auto = app.auto_approve();
    let mut st = lock(&app.rex);
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
    let mut st = lock(&app.rex);
    let flavor = st.flavor();
    oauth::decide(&flavor, &mut st.oauth, &body)
}

async fn token(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = lock(&app.rex);
    let flavor = st.flavor();
    let clients = st.cfg.oauth_clients.clone();
    let (r, ev) = oauth::token(&flavor, &clients, &mut st.oauth, &headers, &body);
    let stats = app.stats(Provider::Rex);
    match ev {
        TokenEvent::CodeExchange => bump(&stats.code_exchanges),
        TokenEvent::Refresh => bump(&stats.refreshes),
        TokenEvent::None => {}
    }
    r
}

// ---------------------------------------------------------------------------------------
// Envelope

#[derive(Debug, Default, Clone, Copy)]
struct ApiOptions {
    use_status_codes: bool,
    use_strict_arguments: bool,
    strip_response_prefixes: bool,
    add_request_prefixes: bool,
}

impl ApiOptions {
    fn parse(headers: &HeaderMap) -> Self {
        let mut o = ApiOptions::default();
        if let Some(v) = header_str(headers, "x-api-option") {
            for part in v.split(',') {
                let (k, val) = part.split_once('=').unwrap_or((part, "true"));
                let on = matches!(
                    val.trim().to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes"
                );
                match k.trim().to_ascii_lowercase().as_str() {
                    "use_status_codes" => o.use_status_codes = on,
                    "use_strict_arguments" => o.use_strict_arguments = on,
                    "strip_response_prefixes" => o.strip_response_prefixes = on,
                    "add_request_prefixes" => o.add_request_prefixes = on,
                    _ => {}
                }
            }
        }
        o
    }
}

struct Ctx {
    opts: ApiOptions,
    always_status: bool,
    method_name: String,
    args: Value,
    token: Option<String>,
}

#[derive(Serialize)]
struct Correlation {
    request_id: String,
    correlation_id: String,
    async_correlation_id: Option<String>,
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    result: T,
    error: Option<()>,
    correlation: Correlation,
}

fn correlation() -> Correlation {
    Correlation {
        request_id: guid(),
        correlation_id: guid(),
        async_correlation_id: None,
    }
}

fn ok<T: Serialize>(result: T) -> Response {
    ok_sized(result, 1)
}

fn ok_sized<T: Serialize>(result: T, items: usize) -> Response {
    let env = Envelope {
        result,
        error: None,
        correlation: correlation(),
    };
    match to_json_sized(&env, items) {
        Ok(b) => json_bytes(StatusCode::OK, b),
        Err(_) => json_bytes(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"result":null,"error":{"message":"serialization failed","type":"InternalError","code":500}}"#
                .to_vec(),
        ),
    }
}

fn rex_error(ctx: &Ctx, status: StatusCode, kind: &str, message: &str) -> Response {
    let http = if ctx.opts.use_status_codes || ctx.always_status {
        status
    } else {
        StatusCode::OK
    };
    json(
        http,
        &json!({
            "result": null,
            "error": {
                "message": message,
                "type": kind,
                "code": status.as_u16(),
                "extra": {
                    "request_data": {
                        "method": ctx.method_name,
                        "args": ctx.args,
                        "token": ctx.token,
                        "sudo_token": null,
                        "use_status_codes": ctx.opts.use_status_codes,
                        "use_strict_arguments": ctx.opts.use_strict_arguments,
                        "strip_response_prefixes": ctx.opts.strip_response_prefixes,
                        "add_request_prefixes": ctx.opts.add_request_prefixes,
                    }
                }
            },
            "correlation": correlation(),
        }),
    )
}

fn validation(ctx: &Ctx, msg: &str) -> Response {
    rex_error(ctx, StatusCode::BAD_REQUEST, "ValidationError", msg)
}

/// Fault responses in REX's shape (infrastructure errors always use HTTP status codes).
pub(crate) fn fault_response(status: StatusCode, retry_after: u64) -> Response {
    let mut r = json(
        status,
        &json!({
            "result": null,
            "error": {
                "message": if status == StatusCode::TOO_MANY_REQUESTS { "Too many requests" } else { "Internal server error" },
                "type": if status == StatusCode::TOO_MANY_REQUESTS { "RateLimitError" } else { "InternalServerError" },
                "code": status.as_u16(),
            },
        }),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        set_header(&mut r, "retry-after", retry_after);
    }
    r
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

async fn rpc(
    State(app): State<App>,
    headers: HeaderMap,
    Path((service, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts = ApiOptions::parse(&headers);
    let token = header_str(&headers, "authorization").and_then(|a| {
        let (s, rest) = a.trim().split_once(' ')?;
        s.eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let mut st = lock(&app.rex);
    let mut ctx = Ctx {
        opts,
        always_status: st.cfg.errors_always_use_status_codes,
        method_name: format!("{service}::{method}"),
        args: Value::Object(Map::new()),
        token: token.clone(),
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => ctx.args = v,
            _ => return validation(&ctx, "The request body must be a JSON object."),
        }
    }
    let (svc, m) = (norm(&service), norm(&method));
    if svc == "authentication" && m == "login" {
        return login(&app, &mut st, &ctx);
    }
    let Some(tok) = token.as_deref() else {
        return rex_error(
            &ctx,
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "A valid token is required (Authorization: Bearer <token>).",
        );
    };
    match st.oauth.check(tok) {
        TokenCheck::Valid => {}
        TokenCheck::Expired => {
            return rex_error(
                &ctx,
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                "The token has expired.",
            );
        }
        TokenCheck::Unknown => {
            return rex_error(
                &ctx,
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                "The token is invalid.",
            );
        }
    }
    // REX documents no scopes (crm-apis §3, UNCONFIRMED); the harsher reading: an OAuth token
    // granted `rex.read` only reads, and writes need `rex.write`.
    if matches!(
        (svc.as_str(), m.as_str()),
        ("contacts", "create" | "update") | ("adminwebhooks", "create" | "purge")
    ) && !st.oauth.grants(tok, "rex.write")
    {
        return rex_error(
            &ctx,
            StatusCode::FORBIDDEN,
            "PermissionError",
            "The token's scope does not allow writes.",
        );
    }
    match (svc.as_str(), m.as_str()) {
        ("contacts", "search") | ("contacts", "list") => search(&app, &mut st, &ctx),
        ("contacts", "read") => read(&st, &ctx),
        ("contacts", "create") => create(&app, &mut st, &ctx),
        ("contacts", "update") => update(&app, &mut st, &ctx),
        ("authentication", "logout") => ok(true),
        ("adminwebhooks", "create") => webhook_create(&mut st, &ctx),
        ("adminwebhooks", "purge") => webhook_purge(&mut st, &ctx),
        _ => rex_error(
            &ctx,
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("Unknown service method {service}::{method}"),
        ),
    }
}

fn login(app: &App, st: &mut RexState, ctx: &Ctx) -> Response {
    let email = ctx.args.get("email").and_then(val_str).unwrap_or("");
    let password = ctx.args.get("password").and_then(val_str).unwrap_or("");
    if !(email.eq_ignore_ascii_case(&st.cfg.login_email)
        && secret_eq(password, &st.cfg.login_password))
    {
        return rex_error(
            ctx,
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "Invalid email or password.",
        );
    }
    // Multi-account users name the account (crm-apis §3.2); this user has one.
    if let Some(acc) = ctx.args.get("account_id").filter(|v| !v.is_null())
        && val_u64(acc) != Some(st.cfg.account_id)
    {
        return rex_error(
            ctx,
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "This user has no access to that account.",
        );
    }
    let lifetime = ctx
        .args
        .get("token_lifetime")
        .and_then(val_i64)
        .filter(|l| *l > 0)
        .unwrap_or(st.cfg.login_token_lifetime_secs as i64);
    let token = guid();
    st.oauth.insert_access(
        token.clone(),
        AccessToken {
            expires: now_ms() + lifetime.saturating_mul(1000),
            scope: None,
        },
    );
    bump(&app.stats(Provider::Rex).logins);
    json(StatusCode::OK, &json!({ "result": token, "error": null }))
}

// ---------------------------------------------------------------------------------------
// Contacts

#[derive(Serialize)]
struct Row<'a> {
    id: AsStr<u64>,
    name: FullName<'a>,
    name_first: &'a str,
    name_last: &'a str,
    email_address: Option<&'a str>,
    phone_number: Option<&'a str>,
    system_ctime: AsStr<i64>,
    system_modtime: AsStr<i64>,
}

#[derive(Serialize)]
struct SearchResult<'a> {
    rows: Vec<Row<'a>>,
    total: usize,
    viewstate_id: String,
    criteria: &'a Value,
    order_by: &'a Value,
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn tighten_min(cur: &mut Option<(i64, bool)>, new: (i64, bool)) {
    *cur = Some(match *cur {
        None => new,
        Some(c) if new.0 > c.0 || (new.0 == c.0 && !new.1) => new,
        Some(c) => c,
    });
}

fn tighten_max(cur: &mut Option<(i64, bool)>, new: (i64, bool)) {
    *cur = Some(match *cur {
        None => new,
        Some(c) if new.0 < c.0 || (new.0 == c.0 && !new.1) => new,
        Some(c) => c,
    });
}

fn values_of(v: &Value, op: &str) -> Option<Vec<Value>> {
    match op {
        "=" => Some(vec![v.clone()]),
        "in" => v.as_array().cloned(),
        _ => None,
    }
}

fn search(app: &App, st: &mut RexState, ctx: &Ctx) -> Response {
    let args = &ctx.args;
    let max = st.cfg.search_max_limit.max(1) as i64;
    let limit = match args.get("limit").filter(|v| !v.is_null()) {
        None => st.cfg.search_default_limit.max(1) as i64,
        Some(v) => match val_i64(v) {
            Some(n) if (1..=max).contains(&n) => n,
            _ => {
                return validation(
                    ctx,
                    &format!("limit must be an integer between 1 and {max}"),
                );
            }
        },
    };
    let offset = match args.get("offset").filter(|v| !v.is_null()) {
        None => 0,
        Some(v) => match val_i64(v) {
            Some(n) if n >= 0 => n,
            _ => return validation(ctx, "offset must be a non-negative integer"),
        },
    };
    // `search_state`: active (default) | archive | trash (crm-apis §3.4).
    let filter = match args.get("search_state").filter(|v| !v.is_null()) {
        None => StateFilter::Listed,
        Some(v) => match v.as_str().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("active") => StateFilter::Listed,
            Some("archive" | "archived") => StateFilter::Only(RecordState::Archived),
            Some("trash" | "trashed") => StateFilter::Only(RecordState::Trashed),
            _ => return validation(ctx, "search_state must be active, archive or trash"),
        },
    };
    let empty_arr = Value::Array(Vec::new());
    let criteria = args
        .get("criteria")
        .filter(|v| !v.is_null())
        .unwrap_or(&empty_arr);
    let Some(crit_list) = criteria.as_array() else {
        return validation(ctx, "criteria must be an array");
    };
    let mut umin: Option<(i64, bool)> = None;
    let mut umax: Option<(i64, bool)> = None;
    let mut cands: Option<Vec<u32>> = None;
    let restrict = |v: Vec<u32>, cands: &mut Option<Vec<u32>>| {
        *cands = Some(match cands.take() {
            None => v,
            Some(prev) => prev.into_iter().filter(|p| v.contains(p)).collect(),
        });
    };
    for c in crit_list {
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            return validation(ctx, "each criterion needs a name");
        };
        let op = c
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("=")
            .to_ascii_lowercase();
        let value = c.get("value").cloned().unwrap_or(Value::Null);
        match name.to_ascii_lowercase().as_str() {
            "system_modtime" | "contact.system_modtime" => {
                let bound = |v: &Value| val_i64(v).map(|s| s.saturating_mul(1000));
                match op.as_str() {
                    "between" => {
                        let pair = value.as_array().filter(|a| a.len() == 2);
                        let Some((lo, hi)) =
                            pair.and_then(|a| Some((bound(&a[0])?, bound(&a[1])?)))
                        else {
                            return validation(ctx, "between needs [from, to] epoch seconds");
                        };
                        tighten_min(&mut umin, (lo, true));
                        tighten_max(&mut umax, (hi, true));
                    }
                    _ => {
                        let Some(b) = bound(&value) else {
                            return validation(ctx, "system_modtime needs epoch seconds");
                        };
                        match op.as_str() {
                            "=" => {
                                tighten_min(&mut umin, (b, true));
                                tighten_max(&mut umax, (b, true));
                            }
                            ">" => tighten_min(&mut umin, (b, false)),
                            ">=" => tighten_min(&mut umin, (b, true)),
                            "<" => tighten_max(&mut umax, (b, false)),
                            "<=" => tighten_max(&mut umax, (b, true)),
                            _ => {
                                return validation(
                                    ctx,
                                    &format!("operator {op} is not supported for system_modtime"),
                                );
                            }
                        }
                    }
                }
            }
            "id" | "_id" | "contact.id" => {
                let Some(vals) = values_of(&value, &op) else {
                    return validation(ctx, &format!("operator {op} is not supported for id"));
                };
                let v: Vec<u32> = vals
                    .iter()
                    .filter_map(val_u64)
                    .filter_map(|id| st.store.pos_of(id))
                    .collect();
                restrict(v, &mut cands);
            }
            "contact.phone_number" | "phone_number" | "contact.phone" => {
                let Some(vals) = values_of(&value, &op) else {
                    return validation(ctx, &format!("operator {op} is not supported for {name}"));
                };
                // REX stores phone numbers as typed and compares the stored string (crm-apis
                // §4): `in` with several written forms is how a client finds them.
                let mut v = Vec::new();
                for x in vals.iter().filter_map(val_string) {
                    v.extend(match st.cfg.phone_search {
                        PhoneSearch::Exact => st.store.find_phone_exact(&x),
                        PhoneSearch::Normalized => st.store.find_phone(&x),
                    });
                }
                restrict(v, &mut cands);
            }
            "contact.email_address" | "email_address" | "contact.email" => {
                let Some(vals) = values_of(&value, &op) else {
                    return validation(ctx, &format!("operator {op} is not supported for {name}"));
                };
                let mut v = Vec::new();
                for x in vals.iter().filter_map(val_string) {
                    v.extend(st.store.find_email(&x));
                }
                restrict(v, &mut cands);
            }
            other => {
                return validation(ctx, &format!("Unsupported search field: {other}"));
            }
        }
    }
    let default_order = json!({"id": "asc"});
    let order_by = args
        .get("order_by")
        .filter(|v| !v.is_null())
        .unwrap_or(&default_order);
    let first_order = match order_by {
        Value::Object(m) => m.iter().next().map(|(k, v)| (k.clone(), v.clone())),
        Value::Array(a) => a
            .first()
            .and_then(Value::as_object)
            .and_then(|m| m.iter().next().map(|(k, v)| (k.clone(), v.clone()))),
        _ => return validation(ctx, "order_by must be an object {field: asc|desc}"),
    };
    let (sort, desc) = match first_order {
        None => (SortField::Id, false),
        Some((field, dir)) => {
            let desc = match dir.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("asc") | None => false,
                Some("desc") => true,
                Some(_) => return validation(ctx, "order_by direction must be asc or desc"),
            };
            let f = match field.to_ascii_lowercase().as_str() {
                "system_modtime" | "contact.system_modtime" => SortField::Updated,
                "id" | "_id" | "contact.id" => SortField::Id,
                "system_ctime" | "contact.system_ctime" => SortField::Created,
                other => return validation(ctx, &format!("Unsupported order_by field: {other}")),
            };
            (f, desc)
        }
    };
    let mut lq = ListQuery::new(sort, desc, limit as usize);
    lq.candidates = cands;
    lq.updated_min = umin;
    lq.updated_max = umax;
    lq.offset = offset as usize;
    lq.filter = filter;
    let page = st.store.list(&lq);
    let fulls: Vec<_> = page
        .items
        .iter()
        .map(|p| (st.store.rec(*p), st.store.rec(*p).full()))
        .collect();
    let rows: Vec<Row> = fulls
        .iter()
        .map(|(r, f)| Row {
            id: AsStr(r.id),
            name: f.full_name(),
            name_first: &f.first,
            name_last: &f.last,
            email_address: f.primary_email(),
            phone_number: f.primary_phone(),
            system_ctime: AsStr(secs(r.created)),
            system_modtime: AsStr(secs(r.updated)),
        })
        .collect();
    add(&app.stats(Provider::Rex).contacts_served, rows.len() as u64);
    let viewstate_id = format!("{:016x}", fnv1a(format!("{criteria}|{order_by}").bytes()));
    let n = rows.len();
    ok_sized(
        SearchResult {
            rows,
            total: page.total,
            viewstate_id,
            criteria,
            order_by,
        },
        n,
    )
}

/// `system_record_state` of a record. The values for archived and trashed records are
/// UNCONFIRMED (the fixture of §3.5 shows `active`).
fn record_state_name(state: RecordState) -> &'static str {
    match state {
        RecordState::Archived => "archived",
        RecordState::Trashed => "trashed",
        RecordState::Active | RecordState::Pending => "active",
    }
}

fn full_record(rec: &Rec, f: &FullRec, state: RecordState) -> Value {
    let base = rec.id.saturating_mul(1000);
    let user = json!({"id": "1", "name": "Sandbox Agent"});
    json!({
        "id": rec.id,
        "type": f.kind,
        "etag": format!("{}-{}", rec.id, secs(rec.updated)),
        "system_record_state": record_state_name(state),
        "system_ctime": secs(rec.created),
        "system_modtime": secs(rec.updated),
        "system_search_key": f.name(),
        "system_owner_user": user,
        "system_modified_user": user,
        "system_created_user": user,
        "address": null,
        "address_postal": null,
        "company_name": null,
        "is_dnd": null,
        "interest_level": null,
        "last_contacted_date": null,
        "marketing_enabled": null,
        "name_legal": null,
        "name_salutation": null,
        "name_addressee": null,
        "related": {
            "contact_names": [{
                "id": base + 1,
                "name_title": null,
                "name_first": f.first,
                "name_middle": null,
                "name_last": f.last,
            }],
            "contact_emails": f.emails.iter().enumerate().map(|(i, e)| json!({
                "id": base + 100 + i as u64,
                "email_address": e.value,
                "email_desc": e.label,
                "email_primary": i == 0,
            })).collect::<Vec<_>>(),
            "contact_phones": f.phones.iter().enumerate().map(|(i, p)| json!({
                "id": base + 300 + i as u64,
                "phone_number": p.value,
                "phone_type": p.label,
                "phone_primary": i == 0,
            })).collect::<Vec<_>>(),
            "contact_tags": f.tags.iter().enumerate().map(|(i, t)| json!({
                "id": base + 600 + i as u64,
                "tag": t,
            })).collect::<Vec<_>>(),
        },
        "security_user_rights": ["read", "update", "archive", "trash", "perms"],
    })
}

fn read(st: &RexState, ctx: &Ctx) -> Response {
    let Some(id) = ctx.args.get("id").and_then(val_u64) else {
        return validation(ctx, "id is required");
    };
    match st.store.pos_of(id) {
        // `read` returns archived and trashed records too, with their state.
        Some(pos) => {
            let rec = st.store.rec(pos);
            ok(full_record(rec, &rec.full(), st.store.state_of(pos)))
        }
        None => rex_error(
            ctx,
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("Contact {id} not found"),
        ),
    }
}

struct Related {
    names: Option<(String, String)>,
    emails: Vec<Point>,
    phones: Vec<Point>,
    tags: Vec<String>,
}

fn parse_related(data: &Value) -> Result<Related, String> {
    let rel = data.get("related").cloned().unwrap_or(Value::Null);
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match rel.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(format!("related.{k} must be an array")),
        }
    };
    let names = list("contact_names")?.first().map(|n| {
        (
            n.get("name_first").and_then(val_string).unwrap_or_default(),
            n.get("name_last").and_then(val_string).unwrap_or_default(),
        )
    });
    let mut emails = Vec::new();
    for e in list("contact_emails")? {
        let v = e
            .get("email_address")
            .and_then(val_string)
            .ok_or("contact_emails entries need email_address")?;
        let label = e
            .get("email_desc")
            .and_then(val_string)
            .unwrap_or_else(|| "home".into());
        emails.push(Point::new(v, label));
    }
    let mut phones = Vec::new();
    for p in list("contact_phones")? {
        let v = p
            .get("phone_number")
            .and_then(val_string)
            .ok_or("contact_phones entries need phone_number")?;
        let label = p
            .get("phone_type")
            .and_then(val_string)
            .unwrap_or_else(|| "mobile".into());
        phones.push(Point::new(v, label));
    }
    let tags = list("contact_tags")?
        .iter()
        .filter_map(|t| t.get("tag").and_then(val_string))
        .collect();
    Ok(Related {
        names,
        emails,
        phones,
        tags,
    })
}

fn create(app: &App, st: &mut RexState, ctx: &Ctx) -> Response {
    let Some(data) = ctx.args.get("data").filter(|d| d.is_object()) else {
        return validation(ctx, "data is required");
    };
    let rel = match parse_related(data) {
        Ok(r) => r,
        Err(m) => return validation(ctx, &m),
    };
    let kind = data
        .get("type")
        .and_then(val_string)
        .unwrap_or_else(|| "person".into());
    let (first, last) = rel.names.unwrap_or_default();
    let full = FullRec {
        first: first.into(),
        last: last.into(),
        emails: rel.emails,
        phones: rel.phones,
        tags: rel.tags.into_iter().map(Text::from).collect(),
        stage: "Lead".into(),
        source: "API".into(),
        background: None,
        kind: kind.into(),
        tags_at: 0,
    };
    let pos = st.store.create(full, None, now_ms());
    bump(&app.stats(Provider::Rex).contacts_created);
    let rec = st.store.rec(pos);
    ok(full_record(rec, &rec.full(), st.store.state_of(pos)))
}

fn update(app: &App, st: &mut RexState, ctx: &Ctx) -> Response {
    let Some(data) = ctx.args.get("data").filter(|d| d.is_object()) else {
        return validation(ctx, "data is required");
    };
    let Some(id) = data.get("_id").or_else(|| data.get("id")).and_then(val_u64) else {
        return validation(ctx, "data._id is required");
    };
    let Some(pos) = st.store.pos_of(id) else {
        return rex_error(
            ctx,
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("Contact {id} not found"),
        );
    };
    let rel = match parse_related(data) {
        Ok(r) => r,
        Err(m) => return validation(ctx, &m),
    };
    let exact = st.cfg.phone_search == PhoneSearch::Exact;
    st.store.modify(pos, now_ms(), |f| {
        if let Some((first, last)) = rel.names {
            f.first = first.into();
            f.last = last.into();
        }
        for e in rel.emails {
            if !f
                .emails
                .iter()
                .any(|x| x.value.eq_ignore_ascii_case(&e.value))
            {
                f.emails.push(e);
            }
        }
        // A phone is new unless the contact holds the same string (`exact`, REX compares
        // stored strings, crm-apis §4) or the same number (`normalized`).
        for p in rel.phones {
            let k = phone_key(&p.value);
            let same = |x: &Point| {
                if exact {
                    x.value.trim().eq_ignore_ascii_case(p.value.trim())
                } else {
                    x.value == p.value || (k.is_some() && phone_key(&x.value) == k)
                }
            };
            if !f.phones.iter().any(same) {
                f.phones.push(p);
            }
        }
        for t in rel.tags {
            if !f.tags.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
                f.tags.push(t.into());
            }
        }
        if let Some(k) = data.get("type").and_then(val_string) {
            f.kind = k.into();
        }
    });
    bump(&app.stats(Provider::Rex).contacts_updated);
    let rec = st.store.rec(pos);
    ok(full_record(rec, &rec.full(), st.store.state_of(pos)))
}

// ---------------------------------------------------------------------------------------
// Admin webhooks (crm-apis §3.6)

/// The events whose deliveries the sandbox makes; other event ids are accepted and never sent.
const CONTACTS_CREATED: &str = "contacts.created";
const CONTACTS_UPDATED: &str = "contacts.updated";

/// The subscription ids start here.
const FIRST_WEBHOOK_ID: u64 = 4100;

/// `AdminWebhooks::create {"data":{"name","url","is_enabled","send_format_id","events":[{"event_id"}]}}`
/// → `result.id` (§3.6). The URL must be HTTPS (or plain HTTP to this machine).
fn webhook_create(st: &mut RexState, ctx: &Ctx) -> Response {
    let data = ctx.args.get("data");
    let Some(url) = data
        .and_then(|d| d.get("url"))
        .and_then(Value::as_str)
        .filter(|u| callback_allowed(u))
    else {
        return validation(ctx, "data.url must be an https URL");
    };
    let events: Vec<String> = data
        .and_then(|d| d.get("events"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| e.get("event_id").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if events.is_empty() {
        return validation(ctx, "data.events must name at least one event_id");
    }
    let enabled = data
        .and_then(|d| d.get("is_enabled"))
        .is_none_or(|v| v.as_bool().unwrap_or(true));
    // A disabled webhook is kept and sends nothing.
    let told = if enabled {
        events.join(",")
    } else {
        String::new()
    };
    let hook = st.hooks.add(FIRST_WEBHOOK_ID, &told, url, None);
    st.store.watch(true);
    ok(json!({"id": hook.id.parse::<u64>().unwrap_or_default()}))
}

/// `AdminWebhooks::purge {"id"}`.
fn webhook_purge(st: &mut RexState, ctx: &Ctx) -> Response {
    let Some(id) = ctx.args.get("id").and_then(val_u64) else {
        return validation(ctx, "id is required");
    };
    if st.hooks.remove(&id.to_string()) {
        st.store.watch(!st.hooks.list.is_empty());
        ok(true)
    } else {
        rex_error(
            ctx,
            StatusCode::NOT_FOUND,
            "NotFoundError",
            "No such webhook",
        )
    }
}

/// The deliveries `changes` make: per subscription, one `POST` of `{"data":[event, …]}` with up to
/// `max_ids` events, each `{id, type, created_at, payload:{format:"v1_full_change_detail", context:{account_id,
/// service:"Contacts", record_id, triggered_by_user}, data:{pre, post, changes}}}` (§3.6) with the
/// record in its webhook shape (times as integers, §3.5) as it is when the delivery is made. The sandbox
/// does not compute `pre` and `changes` (null and `{}`): a receiver reads the record back. REX names only
/// `contacts.created` and `contacts.updated`; archiving, trashing and recovering are not told (the
/// harsher reading: a receiver learns of them from its reads). No signature is documented (§3.6), so
/// none is sent.
pub(crate) fn webhook_requests(st: &RexState, changes: &[Change], max_ids: usize) -> Vec<Outgoing> {
    let mut out = Vec::new();
    for hook in &st.hooks.list {
        let wants: Vec<&str> = hook.event.split(',').collect();
        let mut told: Vec<(u64, &'static str)> = Vec::new();
        for c in changes {
            let kind = match c.kind {
                ChangeKind::Created => CONTACTS_CREATED,
                ChangeKind::Updated | ChangeKind::Stage => CONTACTS_UPDATED,
                ChangeKind::Removed | ChangeKind::Restored => continue,
            };
            if wants.contains(&kind) && !told.contains(&(c.id, kind)) {
                told.push((c.id, kind));
            }
        }
        for chunk in told.chunks(max_ids.max(1)) {
            let events: Vec<Value> = chunk
                .iter()
                .filter_map(|(id, kind)| {
                    let pos = st.store.pos_of(*id)?;
                    let rec = st.store.rec(pos);
                    let post = full_record(rec, &rec.full(), st.store.state_of(pos));
                    Some(json!({
                        "id": guid(),
                        "type": kind,
                        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "payload": {
                            "format": "v1_full_change_detail",
                            "context": {
                                "account_id": st.cfg.account_id,
                                "service": "Contacts",
                                "record_id": id,
                                "triggered_by_user": {"id": "1"},
                            },
                            "data": {"pre": null, "post": post, "changes": {}},
                        },
                    }))
                })
                .collect();
            if events.is_empty() {
                continue;
            }
            out.push(Outgoing {
                hook_id: hook.id.clone(),
                event: hook.event.clone(),
                url: hook.url.clone(),
                ids: chunk.iter().map(|(id, _)| *id).collect(),
                body: serde_json::to_vec(&json!({ "data": events })).unwrap_or_default(),
                headers: Vec::new(),
            });
        }
    }
    out
}
