//! `crm-sandbox`: a local simulator of the REX (Rex Software), Follow Up Boss and Lofty
//! HTTP APIs and of their OAuth servers, on one port under the path prefixes `/rex`,
//! `/fub` and `/lofty`, with a control API under `/_sandbox`.
//!
//! In-process use (tests of other crates):
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use crm_sandbox::{Provider, Sandbox, SandboxConfig};
//! let sb = Sandbox::spawn(SandboxConfig::default()).await?;
//! sb.seed(Provider::Fub, 42, 1_000);
//! let people = format!("{}/people", sb.fub_api_base());
//! # let _ = people; Ok(()) }
//! ```
//!
//! See `infra/sandbox/README.md` for every route, the control API and the switches.

// Handlers return early with a ready `Response` (128 bytes) in `Result::Err`; boxing it
// would only add noise to every call site of a test simulator.
#![allow(clippy::result_large_err)]

pub mod config;
mod control;
mod datagen;
mod faults;
mod fub;
mod limits;
mod lofty;
mod oauth;
mod reqlog;
mod rex;
mod store;
mod util;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

pub use config::{
    DuplicateEmailCreate, EventPhoneMatch, FaultConfig, FubConfig, JsonContentTypeRule,
    LoftyConfig, OAuthClient, PhoneSearch, PrimaryFlag, Provider, RexConfig, SandboxConfig,
    WebhookConfig,
};
pub use datagen::DEFAULT_SEED_END_MS;
pub use store::RecordState;

use crate::faults::{Fault, FaultState};
use crate::reqlog::{ProviderStats, RequestLog, bump, loggable_body, loggable_headers};
use crate::store::Store;
use crate::util::{json as json_resp, lock};

/// Largest request body accepted (bigger → 413).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// State shared by every connection.
pub(crate) struct Shared {
    initial: SandboxConfig,
    auto_approve: AtomicBool,
    pub(crate) rex: Mutex<rex::RexState>,
    pub(crate) fub: Mutex<fub::FubState>,
    pub(crate) lofty: Mutex<lofty::LoftyState>,
    pub(crate) faults: [Mutex<FaultState>; 3],
    pub(crate) log: Mutex<RequestLog>,
    webhooks: Mutex<WebhookConfig>,
    stats: [ProviderStats; 3],
    started: Instant,
    pub(crate) local_addr: SocketAddr,
}

pub(crate) type App = Arc<Shared>;

/// Result of seeding one provider.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedReport {
    pub provider: Provider,
    pub seeded: usize,
    pub total: usize,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub took_ms: u64,
}

impl Shared {
    fn new(cfg: SandboxConfig, local_addr: SocketAddr) -> Self {
        Shared {
            auto_approve: AtomicBool::new(cfg.auto_approve),
            rex: Mutex::new(rex::RexState::new(cfg.rex.clone())),
            fub: Mutex::new(fub::FubState::new(cfg.fub.clone())),
            lofty: Mutex::new(lofty::LoftyState::new(cfg.lofty.clone())),
            faults: [
                Mutex::new(FaultState::new(FaultConfig::default())),
                Mutex::new(FaultState::new(FaultConfig::default())),
                Mutex::new(FaultState::new(FaultConfig::default())),
            ],
            log: Mutex::new(RequestLog::new(cfg.request_log_capacity)),
            webhooks: Mutex::new(cfg.webhooks.clone()),
            stats: Default::default(),
            started: Instant::now(),
            local_addr,
            initial: cfg,
        }
    }

    pub(crate) fn auto_approve(&self) -> bool {
        self.auto_approve.load(Ordering::Relaxed)
    }

    pub(crate) fn webhook_config(&self) -> WebhookConfig {
        lock(&self.webhooks).clone()
    }

    pub(crate) fn stats(&self, p: Provider) -> &ProviderStats {
        &self.stats[p.index()]
    }

    /// Runs `f` on the contact store of `p` (under its lock).
    pub(crate) fn with_store<R>(&self, p: Provider, f: impl FnOnce(&mut Store) -> R) -> R {
        match p {
            Provider::Rex => f(&mut lock(&self.rex).store),
            Provider::Fub => f(&mut lock(&self.fub).store),
            Provider::Lofty => f(&mut lock(&self.lofty).store),
        }
    }

    pub(crate) fn config(&self) -> SandboxConfig {
        SandboxConfig {
            auto_approve: self.auto_approve(),
            request_log_capacity: lock(&self.log).capacity(),
            rex: lock(&self.rex).cfg.clone(),
            fub: lock(&self.fub).cfg.clone(),
            lofty: lock(&self.lofty).cfg.clone(),
            webhooks: self.webhook_config(),
        }
    }

    pub(crate) fn set_config(&self, cfg: SandboxConfig) {
        self.auto_approve.store(cfg.auto_approve, Ordering::Relaxed);
        lock(&self.log).set_capacity(cfg.request_log_capacity);
        *lock(&self.webhooks) = cfg.webhooks.clone();
        lock(&self.rex).cfg = cfg.rex;
        lock(&self.fub).cfg = cfg.fub;
        lock(&self.lofty).cfg = cfg.lofty;
    }

    pub(crate) fn set_faults(&self, p: Provider, cfg: FaultConfig) -> Result<(), String> {
        cfg.validate()?;
        *lock(&self.faults[p.index()]) = FaultState::new(cfg);
        Ok(())
    }

    pub(crate) fn faults(&self, p: Provider) -> FaultConfig {
        lock(&self.faults[p.index()]).cfg.clone()
    }

    /// Replaces (or with `append`, extends) the contacts of `p` with `count` generated ones.
    pub(crate) fn seed(
        &self,
        p: Provider,
        seed: u64,
        count: usize,
        append: bool,
        end_ms: i64,
    ) -> SeedReport {
        let t0 = Instant::now();
        let base_ordinal = if append {
            self.with_store(p, |s| s.take_ordinals(0))
        } else {
            0
        };
        let generated = datagen::generate(seed, count, base_ordinal, end_ms);
        self.with_store(p, |s| {
            if !append {
                s.clear();
            }
            s.take_ordinals(count);
            let before = s.len();
            s.append_generated(generated);
            let recs = s.recs();
            SeedReport {
                provider: p,
                seeded: count,
                total: recs.len(),
                first_id: recs.get(before).map(|r| r.id),
                last_id: recs.last().map(|r| r.id),
                took_ms: t0.elapsed().as_millis() as u64,
            }
        })
    }

    /// Back to the start-up state: no contacts, no tokens, no faults, start-up config.
    pub(crate) fn reset(&self, p: Option<Provider>) {
        let all = p.is_none();
        let hit = |x: Provider| p.is_none_or(|p| p == x);
        if hit(Provider::Rex) {
            *lock(&self.rex) = rex::RexState::new(self.initial.rex.clone());
        }
        if hit(Provider::Fub) {
            *lock(&self.fub) = fub::FubState::new(self.initial.fub.clone());
        }
        if hit(Provider::Lofty) {
            *lock(&self.lofty) = lofty::LoftyState::new(self.initial.lofty.clone());
        }
        for x in Provider::ALL {
            if hit(x) {
                *lock(&self.faults[x.index()]) = FaultState::new(FaultConfig::default());
                self.stats(x).reset();
            }
        }
        if all {
            self.auto_approve
                .store(self.initial.auto_approve, Ordering::Relaxed);
            let mut log = lock(&self.log);
            log.set_capacity(self.initial.request_log_capacity);
            log.clear(None);
        } else if let Some(p) = p {
            lock(&self.log).clear(Some(p));
        }
    }

    /// Expires every access token (OAuth and REX login sessions) of `p` (or all).
    pub(crate) fn expire_tokens(&self, p: Option<Provider>) -> usize {
        let mut n = 0;
        if p.is_none_or(|p| p == Provider::Rex) {
            n += lock(&self.rex).oauth.expire_all();
        }
        if p.is_none_or(|p| p == Provider::Fub) {
            n += lock(&self.fub).oauth.expire_all();
        }
        n
    }

    /// Moves the record `id` of `p` to `state` the way that CRM does it: REX archives or
    /// trashes (`search_state`), FUB moves the person to the `Trash` stage, Lofty's DELETE
    /// moves the lead to the trash; `Active` restores. `bump` (default: the CRM's switch,
    /// `rex.archive_bumps_modtime` / `fub.trash_bumps_updated`; Lofty serves no update
    /// time) says whether the record's update time changes. Returns the previous state.
    pub(crate) fn set_record_state(
        &self,
        p: Provider,
        id: u64,
        state: RecordState,
        bump: Option<bool>,
    ) -> Result<RecordState, String> {
        let allowed = match p {
            Provider::Rex => state != RecordState::Pending,
            Provider::Fub | Provider::Lofty => {
                matches!(state, RecordState::Active | RecordState::Trashed)
            }
        };
        if !allowed {
            return Err(format!("{p} has no {} state", state.name()));
        }
        let apply = |s: &mut Store, default_bump: bool| {
            let pos = s.pos_of(id).ok_or_else(|| format!("no {p} record {id}"))?;
            let old = s.state_of(pos);
            if old != state && bump.unwrap_or(default_bump) {
                let t = util::now_ms().max(s.rec(pos).updated + s.res_ms);
                s.set_updated(pos, t);
            }
            s.set_state(pos, state);
            Ok(old)
        };
        match p {
            Provider::Rex => {
                let mut st = lock(&self.rex);
                let b = st.cfg.archive_bumps_modtime;
                apply(&mut st.store, b)
            }
            Provider::Fub => {
                let mut st = lock(&self.fub);
                let b = st.cfg.trash_bumps_updated;
                apply(&mut st.store, b)
            }
            Provider::Lofty => apply(&mut lock(&self.lofty).store, false),
        }
    }

    /// Revokes every OAuth grant (access and refresh tokens, REX login sessions) of `p` (or
    /// all). Lofty's sandbox has no OAuth. Returns how many tokens there were.
    pub(crate) fn revoke_grants(&self, p: Option<Provider>) -> usize {
        let mut n = 0;
        if p.is_none_or(|p| p == Provider::Rex) {
            n += lock(&self.rex).oauth.revoke_all();
        }
        if p.is_none_or(|p| p == Provider::Fub) {
            n += lock(&self.fub).oauth.revoke_all();
        }
        n
    }

    /// Revokes API keys of FUB or Lofty (these, or all): they then answer 401. REX has none.
    /// Returns how many were revoked.
    pub(crate) fn revoke_api_keys(&self, p: Provider, keys: Option<&[String]>) -> usize {
        let revoke = |list: &mut Vec<String>| {
            let before = list.len();
            match keys {
                Some(k) => list.retain(|x| !k.contains(x)),
                None => list.clear(),
            }
            before - list.len()
        };
        match p {
            Provider::Rex => 0,
            Provider::Fub => revoke(&mut lock(&self.fub).cfg.api_keys),
            Provider::Lofty => revoke(&mut lock(&self.lofty).cfg.api_keys),
        }
    }

    /// Clears the rate-limit windows of `p` (or all).
    pub(crate) fn reset_rate_limits(&self, p: Option<Provider>) {
        if p.is_none_or(|p| p == Provider::Fub) {
            lock(&self.fub).reset_limits();
        }
        if p.is_none_or(|p| p == Provider::Lofty) {
            lock(&self.lofty).reset_limits();
        }
    }

    pub(crate) fn stats_json(&self) -> Value {
        let mut providers = serde_json::Map::new();
        for p in Provider::ALL {
            let mut s = self.stats(p).snapshot();
            s["records"] = json!(self.with_store(p, |st| st.len()));
            providers.insert(p.name().to_string(), s);
        }
        json!({
            "uptime_secs": self.started.elapsed().as_secs(),
            "providers": providers,
        })
    }
}

/// The simulator, in process.
pub struct Sandbox;

impl Sandbox {
    /// Binds `127.0.0.1:0` and serves in a background task until the handle is dropped.
    pub async fn spawn(cfg: SandboxConfig) -> std::io::Result<SandboxHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::spawn_on(listener, cfg)
    }

    /// Serves on an already bound listener in a background task.
    pub fn spawn_on(listener: TcpListener, cfg: SandboxConfig) -> std::io::Result<SandboxHandle> {
        let addr = listener.local_addr()?;
        let app: App = Arc::new(Shared::new(cfg, addr));
        let task = tokio::spawn(serve_app(listener, app.clone()));
        Ok(SandboxHandle {
            base_url: format!("http://{addr}"),
            addr,
            app,
            task,
        })
    }
}

/// A running in-process sandbox. Dropping it stops the server and closes its connections.
pub struct SandboxHandle {
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub addr: SocketAddr,
    app: App,
    task: JoinHandle<()>,
}

impl SandboxHandle {
    /// `base_url` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
    /// Value for `REX_AUTH_URL`.
    pub fn rex_auth_url(&self) -> String {
        self.url("/rex/oauth/authorize")
    }
    /// Value for `REX_TOKEN_URL`.
    pub fn rex_token_url(&self) -> String {
        self.url("/rex/oauth/token")
    }
    /// Base of the RPC API: append `/<Service>/<method>`.
    pub fn rex_api_base(&self) -> String {
        self.url("/rex/v1/rex")
    }
    /// Value for `REX_CONTACTS_ENDPOINT`.
    pub fn rex_contacts_endpoint(&self) -> String {
        self.url("/rex/v1/rex/contacts/list")
    }
    /// Value for `FOLLOWUPBOSS_AUTH_URL`.
    pub fn fub_auth_url(&self) -> String {
        self.url("/fub/oauth/authorize")
    }
    /// Value for `FOLLOWUPBOSS_TOKEN_URL`.
    pub fn fub_token_url(&self) -> String {
        self.url("/fub/oauth/token")
    }
    /// Value for `FOLLOWUPBOSS_API_BASE` (`…/fub/v1`; append `/people`, `/events`).
    pub fn fub_api_base(&self) -> String {
        self.url("/fub/v1")
    }
    /// Value for `LOFTY_API_BASE` (`…/lofty`; append `/v1.0/leads`).
    pub fn lofty_api_base(&self) -> String {
        self.url("/lofty")
    }

    /// Replaces the contacts of `provider` with `count` generated from `seed`
    /// (update times end at [`DEFAULT_SEED_END_MS`]). Returns the number of contacts.
    pub fn seed(&self, provider: Provider, seed: u64, count: usize) -> usize {
        self.app
            .seed(provider, seed, count, false, DEFAULT_SEED_END_MS)
            .total
    }

    /// Seeds with every option.
    pub fn seed_with(
        &self,
        provider: Provider,
        seed: u64,
        count: usize,
        append: bool,
        end_ms: i64,
    ) -> SeedReport {
        self.app.seed(provider, seed, count, append, end_ms)
    }

    /// Number of contacts of `provider` that are neither archived nor trashed (Lofty leads
    /// still being persisted count).
    pub fn record_count(&self, provider: Provider) -> usize {
        self.app.with_store(provider, |s| s.live_len())
    }

    /// Ids of the contacts of `provider` that are neither archived nor trashed, ascending.
    pub fn record_ids(&self, provider: Provider) -> Vec<u64> {
        self.app.with_store(provider, |s| {
            s.recs()
                .iter()
                .enumerate()
                .filter(|(pos, _)| !s.state_of(*pos as u32).is_removed())
                .map(|(_, r)| r.id)
                .collect()
        })
    }

    /// The state of a contact (`None`: no such id).
    pub fn record_state(&self, provider: Provider, id: u64) -> Option<RecordState> {
        self.app
            .with_store(provider, |s| s.pos_of(id).map(|p| s.state_of(p)))
    }

    /// Archives, trashes or restores a contact as `POST /_sandbox/{p}/records/{id}/delete`
    /// and `/restore` do (the update time follows the CRM's switch).
    pub fn set_record_state(
        &self,
        provider: Provider,
        id: u64,
        state: RecordState,
    ) -> Result<(), String> {
        self.app
            .set_record_state(provider, id, state, None)
            .map(drop)
    }

    /// Revokes every OAuth grant of `provider` (or all): access and refresh tokens and REX
    /// login sessions. Returns how many tokens there were.
    pub fn revoke_grants(&self, provider: Option<Provider>) -> usize {
        self.app.revoke_grants(provider)
    }

    /// Revokes every API key of `provider` (FUB, Lofty): they then answer 401.
    pub fn revoke_api_keys(&self, provider: Provider) -> usize {
        self.app.revoke_api_keys(provider, None)
    }

    /// Bumps the update time of these contacts (as `POST /_sandbox/{p}/touch`); returns
    /// how many existed.
    pub fn touch(&self, provider: Provider, ids: &[u64]) -> usize {
        control::touch_ids(&self.app, provider, ids, None)
    }

    pub fn config(&self) -> SandboxConfig {
        self.app.config()
    }

    pub fn set_config(&self, cfg: SandboxConfig) {
        self.app.set_config(cfg)
    }

    /// Changes the configuration in place.
    pub fn update_config(&self, f: impl FnOnce(&mut SandboxConfig)) {
        let mut c = self.app.config();
        f(&mut c);
        self.app.set_config(c);
    }

    pub fn set_faults(&self, provider: Provider, faults: FaultConfig) -> Result<(), String> {
        self.app.set_faults(provider, faults)
    }

    /// `None` = every provider.
    pub fn reset(&self, provider: Option<Provider>) {
        self.app.reset(provider)
    }

    /// Expires every access token; returns how many there were.
    pub fn expire_tokens(&self, provider: Option<Provider>) -> usize {
        self.app.expire_tokens(provider)
    }

    /// The `GET /_sandbox/stats` document.
    pub fn stats(&self) -> Value {
        self.app.stats_json()
    }

    /// Stops the server now.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the sandbox on `listener` until the task is dropped or an unrecoverable
/// accept error occurs.
pub async fn serve(listener: TcpListener, cfg: SandboxConfig) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app: App = Arc::new(Shared::new(cfg, addr));
    serve_app(listener, app).await;
    Ok(())
}

/// Like [`serve`], seeding every provider with `count` contacts from `seed` first.
pub async fn serve_seeded(
    listener: TcpListener,
    cfg: SandboxConfig,
    seed: Option<(u64, usize)>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app: App = Arc::new(Shared::new(cfg, addr));
    if let Some((seed, count)) = seed {
        for p in Provider::ALL {
            app.seed(p, seed, count, false, DEFAULT_SEED_END_MS);
        }
    }
    serve_app(listener, app).await;
    Ok(())
}

fn build_router(app: App) -> Router {
    Router::new()
        .merge(rex::routes())
        .merge(fub::routes())
        .merge(lofty::routes())
        .merge(control::routes())
        .fallback(fallback)
        .with_state(app)
}

async fn fallback(req: Request<Body>) -> Response {
    let path = req.uri().path();
    match provider_of_path(path) {
        Some(Provider::Fub) => json_resp(
            StatusCode::NOT_FOUND,
            &json!({"errorMessage": "Resource not found."}),
        ),
        Some(Provider::Lofty) => json_resp(
            StatusCode::NOT_FOUND,
            &json!({"code": "NOT_FOUND", "message": "Resource not found."}),
        ),
        Some(Provider::Rex) => json_resp(
            StatusCode::NOT_FOUND,
            &json!({"result": null, "error": {"message": "Not found", "type": "NotFoundError", "code": 404}}),
        ),
        None => json_resp(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "detail": format!("no route for {path}")}),
        ),
    }
}

async fn serve_app(listener: TcpListener, app: App) {
    let router = build_router(app.clone());
    let mut conns = tokio::task::JoinSet::new();
    // Dropped (and so stopped) with this task.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(webhooks::run(app.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        let app = app.clone();
                        let router = router.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                dispatch(app.clone(), router.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .keep_alive(true)
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Err(_) => {
                        // Out of file descriptors and the like: back off and go on.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) fn provider_of_path(path: &str) -> Option<Provider> {
    let first = path.trim_start_matches('/').split('/').next()?;
    match first {
        "rex" => Some(Provider::Rex),
        "fub" => Some(Provider::Fub),
        "lofty" => Some(Provider::Lofty),
        _ => None,
    }
}

/// A request that changes CRM data (counted by `drop_next_after_processing`): REX
/// `Contacts/create|update`, and every POST/PUT/DELETE/PATCH of the FUB and Lofty APIs.
/// Token endpoints and REX logins are not writes.
fn is_write(p: Provider, method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let writes = *method == Method::POST
        || *method == Method::PUT
        || *method == Method::DELETE
        || *method == Method::PATCH;
    match p {
        Provider::Rex => {
            let norm: String = path
                .chars()
                .filter(|c| *c != '-' && *c != '_')
                .flat_map(char::to_lowercase)
                .collect();
            writes
                && norm.starts_with("/rex/v1/rex/")
                && (norm.ends_with("/contacts/create") || norm.ends_with("/contacts/update"))
        }
        Provider::Fub => writes && path.starts_with("/fub/v1/"),
        Provider::Lofty => writes && path.starts_with("/lofty/v1.0/"),
    }
}

/// The consent pages are for people, not API clients: no faults there.
fn is_consent_path(path: &str) -> bool {
    path.ends_with("/oauth/authorize")
}

fn fault_response(app: &App, p: Provider, status: StatusCode, retry_after: u64) -> Response {
    match p {
        Provider::Rex => rex::fault_response(status, retry_after),
        Provider::Fub => fub::fault_response(status, retry_after, &mut lock(&app.fub)),
        Provider::Lofty => lofty::fault_response(status, retry_after, &lock(&app.lofty)),
    }
}

async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let cut = if bytes.len() > 1 {
        bytes.slice(..bytes.len() / 2)
    } else {
        bytes
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

async fn dispatch(
    app: App,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response, DropConnection> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Ok(json_resp(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "payload_too_large"}),
            ));
        }
    };
    let path = parts.uri.path().to_string();
    let Some(p) = provider_of_path(&path) else {
        let req = Request::from_parts(parts, Body::from(bytes));
        return Ok(call_router(router, req).await);
    };
    let (fault, latency, after, retry_after) = if is_consent_path(&path) {
        (Fault::None, 0, false, 0)
    } else {
        let mut f = lock(&app.faults[p.index()]);
        let (fault, latency, after) = f.draw(is_write(p, &parts.method, &path));
        (fault, latency, after, f.cfg.retry_after_secs)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let method = parts.method.to_string();
    let query = parts.uri.query().map(str::to_string);
    let log_headers = loggable_headers(&parts.headers);
    let log_body = loggable_body(&parts.headers, &bytes);
    let stats = app.stats(p);
    match fault {
        Fault::Drop => bump(&stats.faults_drop),
        Fault::Error(_) => bump(&stats.faults_error),
        Fault::TooMany => bump(&stats.faults_429),
        Fault::Truncate => bump(&stats.faults_truncate),
        Fault::None => {}
    }
    let pre = match fault {
        Fault::Drop if !after => Some(None),
        Fault::Error(s) if !after => Some(Some(fault_response(&app, p, s, retry_after))),
        Fault::TooMany => Some(Some(fault_response(
            &app,
            p,
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
        ))),
        _ => None,
    };
    let resp = match pre {
        Some(r) => r,
        None => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let r = call_router(router, req).await;
            match fault {
                Fault::Drop => None,
                Fault::Error(s) => Some(fault_response(&app, p, s, retry_after)),
                Fault::Truncate => Some(truncate(r).await),
                _ => Some(r),
            }
        }
    };
    let status = resp.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
    stats.record_status(status);
    lock(&app.log).push(
        p,
        method,
        path,
        query,
        log_headers,
        log_body,
        status,
        fault.name(),
        started.elapsed().as_millis() as u64,
    );
    resp.ok_or(DropConnection)
}

async fn call_router(router: Router, req: Request<Body>) -> Response {
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
