//! A whole crmsync environment for one test: the CRM sandbox (in process), a migrated database of its
//! own, a rate-limit table and the configuration secret in moto, and an `App` wired to all of them, as a
//! deployed function would be. Handlers are called with API Gateway (HTTP API, payload 2.0) events.

use std::collections::HashMap;

use crm_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use crmsync_domain::Provider;
use crmsync_lambda::config::Settings;
use crmsync_lambda::{App, routes};
use crmsync_store::Store;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::common::{moto_config, rate_limit_table};

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789-abcdefghij";
/// A Standard Webhooks secret (`whsec_` + base64), also accepted verbatim in `x-webhook-secret`.
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5";
pub const POST_CONNECT_URL: &str = "http://127.0.0.1:3004/settings/integrations";

/// The route a test calls.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    OAuthStart,
    OAuthCallback,
    AuthStatus,
    ContactsFetch,
    ContactsSync,
    Integrations,
    SyncLogs,
    Deliveries,
    LeadWebhook,
    CrmWebhook,
    IntegrationSync,
}

pub struct Env {
    pub app: App,
    pub sandbox: SandboxHandle,
    pub store: Store,
    pub db: crmsync_testkit::TestDb,
    /// What `app` was built from, to build more (another Lambda, or one with a dead DynamoDB).
    pub settings: Settings,
    pub aws: aws_config::SdkConfig,
    /// The `encryption_key` of the secret (64 hex characters).
    pub encryption_key: String,
}

/// A response, read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Everything a caller gets: status, headers and body, as text (for searching it for secrets).
    pub fn text(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        format!("{}\n{}\n{}", self.status, headers.join("\n"), self.body)
    }

    pub fn location(&self) -> String {
        self.headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of cookie `name` set by this response.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                let (pair, _) = c.split_once(';').unwrap_or((c, ""));
                let (k, v) = pair.split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
    }
}

pub fn provider_name(p: Provider) -> &'static str {
    p.as_str()
}

pub fn sandbox_provider(p: Provider) -> crm_sandbox::config::Provider {
    match p {
        Provider::Rex => crm_sandbox::config::Provider::Rex,
        Provider::FollowUpBoss => crm_sandbox::config::Provider::Fub,
        Provider::Lofty => crm_sandbox::config::Provider::Lofty,
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(crate::support::common::migrated_store().await).await
    }

    /// An environment on a database of the caller's (migrated), e.g. on a Postgres it restarts.
    pub async fn start_with(db_store: (crmsync_testkit::TestDb, Store)) -> Env {
        Self::start_full(db_store, None, None, &[]).await
    }

    /// [`Env::start_live`] with a sync queue (see [`Env::start_queued`]).
    pub async fn start_live_queued(
        webhook_base: &str,
        queues: &crate::support::queue::SyncQueues,
    ) -> Env {
        Self::start_full(
            crate::support::common::migrated_store().await,
            None,
            Some(webhook_base.to_owned()),
            &[
                ("SYNC_QUEUE_URL", queues.url.clone()),
                (
                    "SYNC_CLAIM_TTL_SECONDS",
                    queues.claim_ttl_secs().to_string(),
                ),
            ],
        )
        .await
    }

    /// An environment with a sync queue (`SYNC_QUEUE_URL`): `scheduled-sync` dispatches to it, "sync
    /// now" and CRM webhooks queue their rest on it; `queues` made by
    /// [`crate::support::queue::SyncQueues::create`].
    pub async fn start_queued(queues: &crate::support::queue::SyncQueues) -> Env {
        Self::start_full(
            crate::support::common::migrated_store().await,
            None,
            None,
            &[
                ("SYNC_QUEUE_URL", queues.url.clone()),
                (
                    "SYNC_CLAIM_TTL_SECONDS",
                    queues.claim_ttl_secs().to_string(),
                ),
            ],
        )
        .await
    }

    /// An environment whose integrations subscribe to their CRM's changes, with callback addresses
    /// under `webhook_base` (`CRM_WEBHOOK_BASE_URL`).
    pub async fn start_live(webhook_base: &str) -> Env {
        Self::start_full(
            crate::support::common::migrated_store().await,
            None,
            Some(webhook_base.to_owned()),
            &[],
        )
        .await
    }

    /// An environment whose `App` talks to the CRM sandbox at `sandbox_url` (a `crm-sandbox` process),
    /// not the in-process one (still there, unused).
    pub async fn start_against(sandbox_url: &str) -> Env {
        Self::start_full(
            crate::support::common::migrated_store().await,
            Some(sandbox_url.to_owned()),
            None,
            &[],
        )
        .await
    }

    async fn start_full(
        (db, store): (crmsync_testkit::TestDb, Store),
        sandbox_url: Option<String>,
        webhook_base: Option<String>,
        extra: &[(&'static str, String)],
    ) -> Env {
        crate::support::capture::install();
        let sandbox = Sandbox::spawn(SandboxConfig {
            auto_approve: true,
            ..Default::default()
        })
        .await
        .expect("sandbox");
        let conf = moto_config().await;
        let table = rate_limit_table(&aws_sdk_dynamodb::Client::new(&conf)).await;
        let secret_id = format!("crmsync/test/{}", Uuid::new_v4().simple());
        let encryption_key = hex_key();
        let secret = json!({
            "database_url": db.url,
            "jwt_secret": JWT_SECRET,
            "encryption_key": encryption_key,
            "webhook_secret": WEBHOOK_SECRET,
            "rex_client_id": "sandbox-rex-client",
            "rex_client_secret": "sandbox-rex-secret",
            "followupboss_client_id": "sandbox-fub-client",
            "followupboss_client_secret": "sandbox-fub-secret",
            "followupboss_system": "crmsync",
            "followupboss_system_key": "sandbox-system-key",
        });
        aws_sdk_secretsmanager::Client::new(&conf)
            .create_secret()
            .name(&secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("create secret");
        let mut vars: HashMap<&str, String> = HashMap::from([
            (
                "CRM_SANDBOX_URL",
                sandbox_url.unwrap_or_else(|| sandbox.base_url.clone()),
            ),
            ("APP_SECRET_ID", secret_id.clone()),
            ("RATE_LIMIT_TABLE", table),
            ("NEXT_PUBLIC_BASE_URL", "http://127.0.0.1:3004".into()),
            ("POST_CONNECT_URL", POST_CONNECT_URL.into()),
        ]);
        if let Some(base) = webhook_base {
            vars.insert("CRM_WEBHOOK_BASE_URL", base);
        }
        vars.extend(extra.iter().cloned());
        let settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("settings");
        let app = test_app(settings.clone(), &conf, &conf);
        Env {
            app,
            sandbox,
            store,
            db,
            settings,
            aws: conf,
            encryption_key,
        }
    }

    /// Another `App` on the same configuration: another Lambda instance (its own caches and pool).
    pub fn another_app(&self) -> App {
        test_app(self.settings.clone(), &self.aws, &self.aws)
    }

    /// An `App` whose secret comes from moto but whose DynamoDB calls go to `dynamo` (e.g. a dead
    /// endpoint).
    pub fn app_with_dynamo(&self, dynamo: &aws_config::SdkConfig) -> App {
        test_app(self.settings.clone(), &self.aws, dynamo)
    }

    /// The use cases' context of `app` (made on first use, as a function makes it on its first event).
    pub async fn ctx(&self) -> &crmsync_app::Context {
        self.app.context().await.expect("the context is made")
    }

    pub fn token(user: Uuid) -> String {
        crmsync_lambda::auth::mint_token(JWT_SECRET, user, 3600).expect("token")
    }

    /// Calls `route` as API Gateway would: `path` and `query` raw, `cookies` as `name=value`.
    pub async fn call(
        &self,
        route: Route,
        method: &str,
        path: &str,
        query: &str,
        cookies: &[String],
        extra_headers: &[(&str, &str)],
    ) -> Reply {
        self.send(route, method, path, query, cookies, extra_headers, None)
            .await
    }

    /// [`Env::call`] with a request body (sent as text when it is UTF-8, else base64, as API Gateway does).
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        route: Route,
        method: &str,
        path: &str,
        query: &str,
        cookies: &[String],
        extra_headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.send_via(
            &self.app,
            route,
            method,
            path,
            query,
            cookies,
            extra_headers,
            body,
        )
        .await
    }

    /// [`Env::send`] to the handlers of another `App` (another Lambda instance).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_via(
        &self,
        app: &App,
        route: Route,
        method: &str,
        path: &str,
        query: &str,
        cookies: &[String],
        extra_headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let req = api_gateway_request(method, path, query, cookies, extra_headers, body);
        call_handler(app, route, req).await
    }
}

/// The event API Gateway (HTTP API, payload 2.0) sends for this request, as the runtime hands it over.
pub fn api_gateway_request(
    method: &str,
    path: &str,
    query: &str,
    cookies: &[String],
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> lambda_http::Request {
    {
        let mut headers = serde_json::Map::new();
        headers.insert("host".into(), json!("api.example.com"));
        for (k, v) in extra_headers {
            headers.insert(k.to_string(), json!(v));
        }
        let query_params: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
            .collect();
        let mut event = json!({
            "version": "2.0",
            "routeKey": format!("{method} {path}"),
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "test", "domainName": "api.example.com",
                "domainPrefix": "api", "requestId": Uuid::new_v4().to_string(), "routeKey": format!("{method} {path}"),
                "stage": "$default", "time": "21/Nov/2026:09:00:00 +0000", "timeEpoch": 1_795_338_000_000u64,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"}
            },
            "isBase64Encoded": false
        });
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if !query_params.is_empty() {
            event["queryStringParameters"] = Value::Object(query_params);
        }
        if let Some(body) = body {
            match std::str::from_utf8(body) {
                Ok(text) => event["body"] = json!(text),
                Err(_) => {
                    use base64::Engine as _;
                    event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
                    event["isBase64Encoded"] = json!(true);
                }
            }
        }
        lambda_http::request::from_str(&event.to_string()).expect("valid API Gateway event")
    }
}

/// Runs the handler of `route` on `app`, and reads its response.
pub async fn call_handler(app: &App, route: Route, req: lambda_http::Request) -> Reply {
    let resp = match route {
        Route::OAuthStart => routes::oauth_start::handle(app, req).await,
        Route::OAuthCallback => routes::oauth_callback::handle(app, req).await,
        Route::AuthStatus => routes::auth_status::handle(app, req).await,
        Route::ContactsFetch => routes::contacts_fetch::handle(app, req).await,
        Route::ContactsSync => routes::contacts_sync::handle(app, req).await,
        Route::Integrations => routes::integrations::handle(app, req).await,
        Route::SyncLogs => routes::sync_logs::handle(app, req).await,
        Route::Deliveries => routes::deliveries::handle(app, req).await,
        Route::LeadWebhook => routes::lead_webhook::handle(app, req).await,
        Route::CrmWebhook => routes::crm_webhook::handle(app, req).await,
        Route::IntegrationSync => routes::integration_sync::handle(app, req).await,
    };
    let (parts, body) = resp.into_parts();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

impl Env {
    /// `user` sends a JSON body to `route` with their JWT cookie.
    pub async fn json_as_user(
        &self,
        user: Uuid,
        route: Route,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Reply {
        let cookies = [format!("alto_admin={}", Self::token(user))];
        let body = body.to_string();
        self.send(
            route,
            method,
            path,
            "",
            &cookies,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await
    }

    /// `user` calls `route` with their JWT cookie.
    pub async fn as_user(
        &self,
        user: Uuid,
        route: Route,
        method: &str,
        path: &str,
        query: &str,
    ) -> Reply {
        self.call(
            route,
            method,
            path,
            query,
            &[format!("alto_admin={}", Self::token(user))],
            &[],
        )
        .await
    }

    /// Connects `provider` for `user` the way a person does: OAuth through the sandbox's consent page
    /// (auto-approved), or the sandbox's API key for Lofty.
    pub async fn connect(&self, user: Uuid, provider: Provider) {
        if provider == Provider::Lofty {
            crmsync_app::credentials::connect_api_key(
                self.ctx().await,
                user,
                provider,
                "sandbox-lofty-key",
            )
            .await
            .expect("Lofty connects by API key");
            return;
        }
        let p = provider_name(provider);
        let start = self
            .as_user(
                user,
                Route::OAuthStart,
                "GET",
                &format!("/api/integrations/{p}/oauth/start"),
                "",
            )
            .await;
        assert_eq!(start.status, StatusCode::FOUND, "{:?}", start.body);
        let state_cookie = start.set_cookie("crm_oauth_state").expect("state cookie");
        let back = follow_consent(&start.location()).await;
        let (path, query) = back.split_once('?').expect("callback with a query");
        let path = path.trim_start_matches("http://127.0.0.1:3004");
        let cookies = [
            format!("alto_admin={}", Self::token(user)),
            format!("crm_oauth_state={state_cookie}"),
        ];
        let done = self
            .call(Route::OAuthCallback, "GET", path, query, &cookies, &[])
            .await;
        assert_eq!(done.status, StatusCode::FOUND);
        assert_eq!(
            done.location(),
            format!("{POST_CONNECT_URL}?connected={p}"),
            "connect {p}"
        );
    }

    /// The sandbox's records of `provider`, in its neutral shape.
    pub async fn sandbox_records(&self, provider: Provider) -> Vec<Value> {
        let url = self.sandbox.url(&format!(
            "/_sandbox/{}/records",
            sandbox_provider(provider).name()
        ));
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["records"].as_array().cloned().unwrap_or_default()
    }

    /// Changes `count` records of `provider` (chosen by `seed`): a new last name, a new update time.
    pub async fn change_records(&self, provider: Provider, count: usize, seed: u64) -> Vec<u64> {
        let url = self.sandbox.url(&format!(
            "/_sandbox/{}/touch",
            sandbox_provider(provider).name()
        ));
        let body =
            json!({"count": count, "seed": seed, "set": {"last_name": format!("Changed{seed}")}});
        let reply: Value = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

impl Env {
    /// Makes the stored OAuth token of `user`'s `provider` integration expired (as an hour passing
    /// would), and the CRM's tokens too, so that the next call needs a refresh.
    pub async fn expire_token(&self, user: Uuid, provider: Provider) {
        let ready = self.app.ready().await.unwrap();
        let record = self
            .store
            .integration_by_provider(user, provider)
            .await
            .unwrap()
            .unwrap();
        let opened = ready
            .ctx
            .vault
            .open(record.id, provider, &record.sealed)
            .unwrap();
        let crmsync_store::Credentials::OAuth {
            access_token,
            refresh_token,
            ..
        } = opened.credentials
        else {
            panic!("OAuth credentials");
        };
        let expired = crmsync_store::Credentials::OAuth {
            access_token,
            refresh_token,
            expires_at: Some(chrono::Utc::now().timestamp() - 60),
        };
        let sealed = ready.ctx.vault.seal(record.id, provider, &expired).unwrap();
        let past = chrono::Utc::now() - chrono::Duration::seconds(60);
        self.store
            .set_credentials(user, record.id, &sealed, Some(past))
            .await
            .unwrap();
        self.sandbox.expire_tokens(Some(sandbox_provider(provider)));
    }

    /// Lofty at its production tier, 500 calls a minute (crm-apis §2.3), instead of the sandbox's
    /// default development tier (100): for tests of something else than Lofty's limit that push
    /// several new leads in a row (each costs a search per form its phone may be typed in, then a
    /// create) or read Lofty in full several times.
    pub fn lofty_production_tier(&self) {
        self.sandbox
            .update_config(|c| c.lofty.rate_limit_per_minute = 500);
    }

    /// The token refreshes the sandbox has served for `provider`.
    pub fn refreshes(&self, provider: Provider) -> u64 {
        let stats = self.sandbox.stats();
        stats["providers"][sandbox_provider(provider).name()]["refreshes"]
            .as_u64()
            .unwrap_or_else(|| panic!("refreshes in {stats}"))
    }
}

/// An `App` as a deployed function builds it, with retries as in production but without real seconds
/// of backoff (`Retry-After` still applies).
pub fn test_app(
    settings: Settings,
    secrets_aws: &aws_config::SdkConfig,
    dynamo_aws: &aws_config::SdkConfig,
) -> App {
    let mut app = App::with_aws(settings, secrets_aws, dynamo_aws).expect("app");
    app.http = app.http.clone().with_retry(crmsync_crm::RetryPolicy {
        max_attempts: 4,
        base: std::time::Duration::from_millis(1),
        cap: std::time::Duration::from_millis(20),
        max_wait: std::time::Duration::from_secs(10),
    });
    app.push_backoff = std::time::Duration::from_millis(1);
    // The tests send concurrent events (several syncs at once, say) to one `App`, which in the cloud
    // would be as many instances, each with its own connections: give it as many as they need.
    app.db_pool_size = 8;
    // Longer than the sandbox's Lofty persistence lag (1.5 s), much shorter than production's.
    app.create_settle = std::time::Duration::from_secs(2);
    app
}

/// Follows the CRM's authorize URL (auto-approved by the sandbox) to the redirect back to us.
pub async fn follow_consent(authorize_url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(authorize_url).send().await.unwrap();
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::FOUND,
        "the sandbox approves and redirects"
    );
    resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

fn hex_key() -> String {
    let a = Uuid::new_v4().simple().to_string();
    let b = Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// Starts an OAuth flow of `provider` for `user` and follows the consent: (state cookie, callback
/// path, callback query).
pub async fn oauth_round(env: &Env, user: Uuid, provider: &str) -> (String, String, String) {
    let start = env
        .as_user(
            user,
            Route::OAuthStart,
            "GET",
            &format!("/api/integrations/{provider}/oauth/start"),
            "",
        )
        .await;
    assert_eq!(start.status, StatusCode::FOUND, "{:?}", start.body);
    let cookie = start.set_cookie("crm_oauth_state").unwrap();
    let back = follow_consent(&start.location()).await;
    let (path, query) = back.split_once('?').unwrap();
    (
        cookie,
        path.trim_start_matches("http://127.0.0.1:3004").to_owned(),
        query.to_owned(),
    )
}

/// The `error` an OAuth callback's answer redirects with (empty if none), after checking it is a
/// redirect to the dashboard (`POST_CONNECT_URL`) and nowhere else.
#[track_caller]
pub fn callback_error(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::FOUND, "{:?}", reply.body);
    let location = reply.location();
    assert!(
        location.starts_with(POST_CONNECT_URL),
        "every callback goes back to the dashboard only: {location}"
    );
    location.split("error=").nth(1).unwrap_or("").to_owned()
}

/// The value of `key` in a query string.
pub fn query_param(query: &str, key: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {key} in {query}"))
}

/// A query string without `key`.
pub fn query_without(query: &str, key: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != key)
        .fold(
            form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(&k, &v);
                s
            },
        )
        .finish()
}
