//! Security: forged, expired and foreign JWTs on every route; OAuth callbacks whose state is missing,
//! wrong, another's, expired, forged or reused, and foreign redirects; webhook deliveries forged,
//! tampered, stale or replayed; Row Level Security through every route and every table; and no secret
//! in any answer, log line or sync log, and no credential readable in a database dump.

use crmsync_domain::Provider;
use crmsync_store::Credentials;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{self, LOFTY_KEY, error_problem, item, logs_of, stored_rows};
use crate::support::capture::{self, Secret, assert_no_leak};
use crate::support::env::{
    Env, JWT_SECRET, POST_CONNECT_URL, Reply, Route, WEBHOOK_SECRET, callback_error, oauth_round,
    query_param, query_without, sandbox_provider,
};
use crate::support::leads::{WEBHOOK, lead, lead_events, people_with, post_lead};
use crate::support::rows::{assert_no_failures, contract_error_problem, report, sync_path};

/// Every table that holds users' rows, with the column naming the user.
const USER_TABLES: [(&str, &str); 5] = [
    ("contacts", "owner_id"),
    ("crm_integrations", "user_id"),
    ("crm_sync_logs", "user_id"),
    ("lead_events", "user_id"),
    ("push_deliveries", "user_id"),
];

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn jwt(alg: Algorithm, secret: &str, sub: &str, exp: i64) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

// Forged, expired and foreign JWTs.

/// Every kind of token that must not get in, by name.
fn bad_tokens(user: Uuid) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let sub = user.to_string();
    let good = jwt(Algorithm::HS256, JWT_SECRET, &sub, now + 600);
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let other_payload = b64(&json!({"sub": Uuid::new_v4().to_string(), "exp": now + 600}));
    vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&json!({"sub": sub, "exp": now + 600}))
            ),
        ),
        (
            "alg none, signature kept",
            format!(
                "{}.{}.{sig}",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                rest.split_once('.').unwrap().0
            ),
        ),
        (
            "HS384 with the right secret",
            jwt(Algorithm::HS384, JWT_SECRET, &sub, now + 600),
        ),
        (
            "HS512 with the right secret",
            jwt(Algorithm::HS512, JWT_SECRET, &sub, now + 600),
        ),
        ("RS256 header on an HMAC signature", {
            let header = b64(&json!({"alg": "RS256", "typ": "JWT"}));
            let payload = rest.split_once('.').unwrap().0;
            format!("{header}.{payload}.{sig}")
        }),
        (
            "signed with another secret",
            jwt(
                Algorithm::HS256,
                "another-secret-another-secret-0123",
                &sub,
                now + 600,
            ),
        ),
        (
            "payload swapped under the signature",
            format!("{head}.{other_payload}.{sig}"),
        ),
        ("signature cut", good[..good.len() - 4].to_owned()),
        (
            "expired an hour ago",
            jwt(Algorithm::HS256, JWT_SECRET, &sub, now - 3600),
        ),
        (
            "sub not a user id",
            jwt(Algorithm::HS256, JWT_SECRET, "admin", now + 600),
        ),
        ("empty", String::new()),
        ("garbage", "x.y.z".into()),
    ]
}

/// A request of a route that needs a caller: (route, method, path, query).
type Request = (Route, &'static str, String, &'static str);

/// A user with a Lofty integration, whose id the requests may name.
async fn user_with_an_integration() -> (Env, Uuid, Uuid) {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let id = env
        .store
        .integration_by_provider(user, Provider::Lofty)
        .await
        .unwrap()
        .unwrap()
        .id;
    (env, user, id)
}

/// The integration is still there, active, and nobody synced it.
async fn assert_integration_untouched(env: &Env, user: Uuid, id: Uuid) {
    let still = env.store.get_integration(user, id).await.unwrap().unwrap();
    assert_eq!(still.status, "active");
    assert!(still.last_sync_at.is_none());
}

/// Every bad token on each request of `function` (made by `requests` from the integration's id), as
/// the cookie and as a Bearer header: 401 `unauthorized` in the contract's shape, every time; nothing
/// changed. Every failure is reported, not only the first.
async fn bad_tokens_get_401(function: &str, requests: fn(Uuid) -> Vec<Request>) {
    let (env, user, id) = user_with_an_integration().await;
    let body =
        json!({"provider": "lofty", "apiKey": "sandbox-lofty-key", "status": "paused"}).to_string();
    let mut tried = 0;
    let mut failures = Vec::new();
    for (kind, token) in bad_tokens(user) {
        for (route, method, path, query) in requests(id) {
            for (how, cookies, headers) in [
                ("cookie", vec![format!("alto_admin={token}")], vec![]),
                (
                    "Bearer",
                    vec![],
                    vec![("authorization".to_owned(), format!("Bearer {token}"))],
                ),
            ] {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let reply = env
                    .send(
                        route,
                        method,
                        &path,
                        query,
                        &cookies,
                        &h,
                        Some(body.as_bytes()),
                    )
                    .await;
                let at = format!("{kind} ({how}): {method} {path}");
                if reply.status != StatusCode::UNAUTHORIZED {
                    failures.push(format!("{at}: {} {:?}", reply.status, reply.body));
                } else if let Some(problem) = contract_error_problem(&reply) {
                    failures.push(format!("{at}: {problem}"));
                }
                tried += 1;
            }
        }
    }
    assert_no_failures(&format!("bad tokens on {function}"), &failures);
    assert_integration_untouched(&env, user, id).await;
    report(format!(
        "security/jwt {function}: {} kinds of bad token x {} requests x (cookie, Bearer): {tried} \
         calls, all 401, nothing changed",
        bad_tokens(user).len(),
        requests(id).len()
    ));
}

#[tokio::test]
async fn bad_jwts_get_401_from_oauth_start() {
    bad_tokens_get_401("oauth-start", |_| {
        vec![(
            Route::OAuthStart,
            "GET",
            "/api/integrations/rex/oauth/start".into(),
            "",
        )]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_auth_status() {
    bad_tokens_get_401("auth-status", |_| {
        vec![(
            Route::AuthStatus,
            "GET",
            "/api/integrations/lofty/auth/status".into(),
            "",
        )]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_contacts_fetch() {
    bad_tokens_get_401("contacts-fetch", |_| {
        vec![(
            Route::ContactsFetch,
            "GET",
            "/api/integrations/lofty/contacts/fetch".into(),
            "limit=1",
        )]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_contacts_sync() {
    bad_tokens_get_401("contacts-sync", |_| {
        vec![(
            Route::ContactsSync,
            "POST",
            "/api/integrations/lofty/contacts/sync".into(),
            "",
        )]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_integrations() {
    bad_tokens_get_401("integrations", |id| {
        vec![
            (Route::Integrations, "GET", "/api/integrations".into(), ""),
            (Route::Integrations, "POST", "/api/integrations".into(), ""),
            (Route::Integrations, "GET", item(id), ""),
            (Route::Integrations, "PUT", item(id), ""),
            (Route::Integrations, "DELETE", item(id), ""),
        ]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_integration_sync() {
    bad_tokens_get_401("integration-sync", |id| {
        vec![(
            Route::IntegrationSync,
            "POST",
            format!("/api/integrations/{id}/sync"),
            "",
        )]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_sync_logs() {
    bad_tokens_get_401("sync-logs", |id| {
        vec![
            (Route::SyncLogs, "GET", logs_of(id), ""),
            (Route::SyncLogs, "GET", "/api/integrations/logs".into(), ""),
        ]
    })
    .await;
}

#[tokio::test]
async fn bad_jwts_get_401_from_deliveries() {
    bad_tokens_get_401("deliveries", |id| {
        vec![
            (
                Route::Deliveries,
                "GET",
                format!("/api/integrations/{id}/deliveries"),
                "",
            ),
            (
                Route::Deliveries,
                "POST",
                format!("/api/integrations/{id}/deliveries/retry"),
                "",
            ),
        ]
    })
    .await;
}

/// The callback always redirects: with a bad token, to `?error=unauthorized`, storing nothing.
#[tokio::test]
async fn bad_jwts_send_the_oauth_callback_back_with_unauthorized() {
    let (env, user, id) = user_with_an_integration().await;
    let mut failures = Vec::new();
    for (kind, token) in bad_tokens(user) {
        let reply = env
            .call(
                Route::OAuthCallback,
                "GET",
                "/api/integrations/rex/oauth/callback",
                "code=x&state=y",
                &[format!("alto_admin={token}")],
                &[],
            )
            .await;
        if !reply.location().ends_with("?error=unauthorized") {
            failures.push(format!("{kind}: {}", reply.location()));
        }
    }
    assert_no_failures("bad tokens on oauth-callback", &failures);
    assert_integration_untouched(&env, user, id).await;
    assert_eq!(
        env.store.list_integrations(user).await.unwrap().len(),
        1,
        "no REX connection stored"
    );
    report(format!(
        "security/jwt oauth-callback: {} kinds of bad token: all sent back with ?error=unauthorized, \
         nothing stored",
        bad_tokens(user).len()
    ));
}

// OAuth callbacks whose state does not match.

/// A user's OAuth flow of `provider` up to the callback: the CRM approved and redirected back.
struct Flow {
    env: Env,
    user: Uuid,
    /// The user's JWT cookie.
    jwt: String,
    /// The `crm_oauth_state` cookie oauth-start set.
    state_cookie: String,
    path: String,
    query: String,
}

async fn flow(provider: &str) -> Flow {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let (cookie, path, query) = oauth_round(&env, user, provider).await;
    Flow {
        jwt: format!("alto_admin={}", Env::token(user)),
        state_cookie: format!("crm_oauth_state={cookie}"),
        env,
        user,
        path,
        query,
    }
}

impl Flow {
    /// The JWT and the state cookie, as the browser sends them back.
    fn both(&self) -> Vec<String> {
        vec![self.jwt.clone(), self.state_cookie.clone()]
    }

    async fn callback(&self, query: &str, cookies: &[String]) -> Reply {
        self.env
            .call(Route::OAuthCallback, "GET", &self.path, query, cookies, &[])
            .await
    }

    /// The callback goes back to the dashboard with `?error=invalid_state`, and nothing is stored.
    async fn assert_refused(&self, query: &str, cookies: &[String], what: &str) {
        let reply = self.callback(query, cookies).await;
        assert_eq!(callback_error(&reply), "invalid_state", "{what}");
        assert!(
            self.env
                .store
                .list_integrations(self.user)
                .await
                .unwrap()
                .is_empty(),
            "{what}: nothing stored"
        );
        report(format!(
            "security/oauth: a callback with {what}: ?error=invalid_state, nothing stored"
        ));
    }
}

#[tokio::test]
async fn an_oauth_callback_without_a_state_is_refused() {
    let f = flow("followupboss").await;
    let no_state = query_without(&f.query, "state");
    f.assert_refused(&no_state, &f.both(), "no state in the query")
        .await;
    f.assert_refused(&format!("{no_state}&state="), &f.both(), "an empty state")
        .await;
}

#[tokio::test]
async fn an_oauth_callback_with_a_wrong_state_is_refused() {
    let f = flow("followupboss").await;
    let wrong = format!("{}&state=AAAA", query_without(&f.query, "state"));
    f.assert_refused(&wrong, &f.both(), "a wrong state").await;
    let prefixed = f.query.replace("state=", "state=x");
    f.assert_refused(&prefixed, &f.both(), "a state with a character added")
        .await;
}

#[tokio::test]
async fn an_oauth_callback_without_the_state_cookie_is_refused() {
    let f = flow("rex").await;
    f.assert_refused(&f.query, std::slice::from_ref(&f.jwt), "no state cookie")
        .await;
}

#[tokio::test]
async fn an_oauth_callback_in_another_users_session_is_refused() {
    let f = flow("rex").await;
    let other = format!("alto_admin={}", Env::token(Uuid::new_v4()));
    f.assert_refused(
        &f.query,
        &[other, f.state_cookie.clone()],
        "another user's session and this user's state cookie",
    )
    .await;
}

/// A state and cookie made for another provider (REX) with this callback (Follow Up Boss).
#[tokio::test]
async fn an_oauth_callback_with_another_providers_state_is_refused() {
    let f = flow("followupboss").await;
    let (rex_cookie, _, rex_query) = oauth_round(&f.env, f.user, "rex").await;
    let rex_state = query_param(&rex_query, "state");
    let crossed = format!("{}&state={rex_state}", query_without(&f.query, "state"));
    f.assert_refused(
        &crossed,
        &[f.jwt.clone(), format!("crm_oauth_state={rex_cookie}")],
        "another provider's state and cookie",
    )
    .await;
}

/// An expired state cookie, sealed with the right key (as if kept past its 10 minutes).
#[tokio::test]
async fn an_expired_state_cookie_is_refused() {
    let f = flow("followupboss").await;
    let ready = f.env.app.ready().await.unwrap();
    let stale = ready
        .ctx
        .vault
        .seal_token(
            "oauth-state",
            json!({"state": query_param(&f.query, "state"), "provider": "followupboss",
                   "user": f.user, "expires": chrono::Utc::now().timestamp() - 1})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    f.assert_refused(
        &f.query,
        &[f.jwt.clone(), format!("crm_oauth_state={stale}")],
        "an expired state cookie",
    )
    .await;
}

#[tokio::test]
async fn a_state_cookie_sealed_by_another_deployment_is_refused() {
    let f = flow("followupboss").await;
    let foreign_vault = crmsync_store::Vault::new(&"7e".repeat(32), None).unwrap();
    let foreign = foreign_vault
        .seal_token(
            "oauth-state",
            json!({"state": query_param(&f.query, "state"), "provider": "followupboss",
                   "user": f.user, "expires": chrono::Utc::now().timestamp() + 600})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    f.assert_refused(
        &f.query,
        &[f.jwt.clone(), format!("crm_oauth_state={foreign}")],
        "a state cookie sealed by another deployment's key",
    )
    .await;
}

/// Foreign redirects in the query are ignored: the answer still goes to `POST_CONNECT_URL`. The same
/// callback again is refused.
#[tokio::test]
async fn foreign_redirects_in_a_callback_are_ignored_and_its_replay_is_refused() {
    let f = flow("followupboss").await;
    let foreign_redirect = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.example%2Fsteal&next=https%3A%2F%2Fevil.example&return_to=%2F%2Fevil.example",
        f.query
    );
    let reply = f.callback(&foreign_redirect, &f.both()).await;
    assert_eq!(
        reply.location(),
        format!("{POST_CONNECT_URL}?connected=followupboss")
    );
    let replay = f.callback(&f.query, &f.both()).await;
    assert_eq!(
        callback_error(&replay),
        "invalid_state",
        "replayed callback"
    );
    let integrations = f.env.store.list_integrations(f.user).await.unwrap();
    assert_eq!(
        integrations.len(),
        1,
        "only the one good callback stored anything"
    );
    assert_eq!(integrations[0].provider, Provider::FollowUpBoss);
    report(
        "security/oauth: a callback with foreign redirect_uri/next/return_to went to \
         POST_CONNECT_URL and connected; its replay: ?error=invalid_state; 1 connection stored",
    );
}

/// A REX callback (with PKCE) that connected, replayed: refused, still one connection.
#[tokio::test]
async fn a_used_rex_callback_replayed_is_refused() {
    let f = flow("rex").await;
    let first = f.callback(&f.query, &f.both()).await;
    assert_eq!(
        first.location(),
        format!("{POST_CONNECT_URL}?connected=rex")
    );
    let replay = f.callback(&f.query, &f.both()).await;
    assert_eq!(callback_error(&replay), "invalid_state");
    assert_eq!(
        f.env.store.list_integrations(f.user).await.unwrap().len(),
        1
    );
}

/// oauth-start ignores a redirect in its query: the CRM is sent our registered redirect URI only.
#[tokio::test]
async fn oauth_start_ignores_a_redirect_in_its_query() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let start = env
        .as_user(
            user,
            Route::OAuthStart,
            "GET",
            "/api/integrations/rex/oauth/start",
            "redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        )
        .await;
    let location = start.location();
    assert!(!location.contains("evil.example"), "{location}");
    assert!(location.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A3004%2Fapi%2Fintegrations%2Frex%2Foauth%2Fcallback"), "{location}");
    report("security/oauth: a start with a foreign redirect_uri sent the CRM ours only");
}

// Webhook deliveries forged, tampered, stale or replayed.

/// A Lofty user and a lead of theirs, as the body of a delivery.
async fn webhook_user() -> (Env, Uuid, String) {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let body = lead(user, "SIG-1", "+14155550191", "Signed").to_string();
    (env, user, body)
}

async fn deliver(env: &Env, headers: &[(&str, String)], body: &str) -> Reply {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.send(
        Route::LeadWebhook,
        "POST",
        WEBHOOK,
        "",
        &[],
        &h,
        Some(body.as_bytes()),
    )
    .await
}

/// Standard Webhooks headers for `body`, signed by `hook`.
fn signed(
    hook: &standardwebhooks::Webhook,
    id: &str,
    ts: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            hook.sign(id, ts, body.as_bytes()).unwrap(),
        ),
    ]
}

#[tokio::test]
async fn forged_tampered_or_stale_webhook_deliveries_get_401_and_store_nothing() {
    let (env, _, body) = webhook_user().await;
    let hook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let other =
        standardwebhooks::Webhook::new("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0wMTIz").unwrap();
    let now = chrono::Utc::now().timestamp();
    let good = signed(&hook, "msg_1", now, &body);
    let with = |i: usize, v: String| {
        let mut h = good.clone();
        h[i].1 = v;
        h
    };
    type Headers = Vec<(&'static str, String)>;
    let refused: Vec<(&str, Headers, String)> = vec![
        ("no credentials", vec![], body.clone()),
        (
            "a wrong secret header",
            vec![("x-webhook-secret", "whsec_nope".to_owned())],
            body.clone(),
        ),
        (
            "body tampered",
            good.clone(),
            body.replace("Signed", "Hacked"),
        ),
        ("id tampered", with(0, "msg_2".into()), body.clone()),
        (
            "timestamp tampered",
            with(1, (now + 1).to_string()),
            body.clone(),
        ),
        (
            "signature of another secret",
            signed(&other, "msg_1", now, &body),
            body.clone(),
        ),
        (
            "stale by 6 minutes",
            signed(&hook, "msg_1", now - 360, &body),
            body.clone(),
        ),
        (
            "6 minutes ahead",
            signed(&hook, "msg_1", now + 360, &body),
            body.clone(),
        ),
        ("signature garbage", with(2, "v1,AAAA".into()), body.clone()),
        (
            "signature of v2 scheme",
            with(2, good[2].1.replacen("v1,", "v2,", 1)),
            body.clone(),
        ),
        (
            "no timestamp",
            good[..1].iter().chain(&good[2..]).cloned().collect(),
            body.clone(),
        ),
        (
            "secret header with a prefix",
            vec![("x-webhook-secret", WEBHOOK_SECRET[..20].to_owned())],
            body.clone(),
        ),
        (
            "secret header with the raw key",
            vec![(
                "x-webhook-secret",
                WEBHOOK_SECRET.trim_start_matches("whsec_").to_owned(),
            )],
            body.clone(),
        ),
        (
            "wrong secret header beside a good signature",
            good.iter()
                .cloned()
                .chain([("x-webhook-secret", "nope".to_owned())])
                .collect(),
            body.clone(),
        ),
    ];
    let mut failures = Vec::new();
    for (what, headers, b) in &refused {
        let reply = deliver(&env, headers, b).await;
        if reply.status != StatusCode::UNAUTHORIZED {
            failures.push(format!("{what}: {} {:?}", reply.status, reply.body));
        } else if let Some(problem) = contract_error_problem(&reply) {
            failures.push(format!("{what}: {problem}"));
        } else if what.starts_with("stale")
            && !reply.body["detail"].as_str().unwrap().contains("5 minutes")
        {
            failures.push(format!(
                "{what}: the detail names no tolerance: {:?}",
                reply.body
            ));
        }
    }
    assert_no_failures("refused deliveries", &failures);
    assert_eq!(
        lead_events(&env).await,
        0,
        "refused deliveries store nothing"
    );
    report(format!(
        "security/webhook: {} forged, stale or tampered deliveries refused (401, nothing stored)",
        refused.len()
    ));
}

/// The good delivery, then replays of it (as a sender retrying) within the tolerance: pushed once.
#[tokio::test]
async fn a_signed_delivery_replayed_within_the_tolerance_is_pushed_once() {
    let (env, _, body) = webhook_user().await;
    let hook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let good = signed(&hook, "msg_1", chrono::Utc::now().timestamp(), &body);
    let first = deliver(&env, &good, &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["pushed"], 1);
    for _ in 0..5 {
        let again = deliver(&env, &good, &body).await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(again.body["duplicate"], true);
    }
    assert_eq!(lead_events(&env).await, 1);
    assert_eq!(
        people_with(&env, Provider::Lofty, "+14155550191")
            .await
            .len(),
        1
    );
    report(
        "security/webhook: a signed delivery replayed 5 times within the tolerance: pushed once",
    );
}

// Row Level Security.

/// Alice with Lofty and Follow Up Boss connected, synced and a lead pushed to both (so she has rows in
/// every table); Bob, who saw nothing of hers before, with a Lofty integration of his own.
struct AliceAndBob {
    env: Env,
    alice: Uuid,
    bob: Uuid,
    alice_ids: Vec<Uuid>,
    admin: tokio_postgres::Client,
    /// Alice's rows per table, before Bob did anything.
    before: Vec<(String, i64)>,
}

async fn alice_and_bob() -> AliceAndBob {
    let env = Env::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 3, 150);
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 4, 150);
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        env.connect(alice, p).await;
    }
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        let r = env
            .as_user(alice, Route::ContactsSync, "POST", &sync_path(p), "")
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let pushed = post_lead(&env, &env.app, &lead(alice, "A-1", "+14155550192", "Alice")).await;
    assert_eq!(pushed.body["pushed"], 2);
    let alice_ids: Vec<Uuid> = env
        .store
        .list_integrations(alice)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();

    // Bob sees nothing of Alice's; connecting the same CRM gives him an integration of his own.
    assert_eq!(
        api::get(&env, bob, "/api/integrations").await.body,
        json!({ "integrations": [] })
    );
    let own = api::connect(&env, bob, json!({"provider": "lofty", "apiKey": LOFTY_KEY})).await;
    api::assert_status(&own, StatusCode::CREATED);
    let own_id = Uuid::parse_str(own.body["id"].as_str().unwrap()).unwrap();
    assert!(!alice_ids.contains(&own_id));

    let admin = crmsync_testkit::connect(&env.db.url).await;
    let before = rows_of(&admin, alice).await;
    AliceAndBob {
        env,
        alice,
        bob,
        alice_ids,
        admin,
        before,
    }
}

/// `user`'s rows per table: how many, and (where rows change) when the last changed.
async fn rows_of(admin: &tokio_postgres::Client, user: Uuid) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for (table, owner) in USER_TABLES {
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {owner} = $1"),
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        let changed: Option<chrono::DateTime<chrono::Utc>> =
            if table == "crm_sync_logs" || table == "lead_events" {
                None
            } else {
                admin
                    .query_one(
                        &format!("SELECT max(updated_at) FROM {table} WHERE {owner} = $1"),
                        &[&user],
                    )
                    .await
                    .unwrap()
                    .get(0)
            };
        counts.push((format!("{table} (last change {changed:?})"), n));
    }
    counts
}

impl AliceAndBob {
    async fn assert_alice_untouched(&self) {
        assert_eq!(
            rows_of(&self.admin, self.alice).await,
            self.before,
            "Bob changed nothing of Alice's"
        );
    }
}

/// Bob calls every route on Alice's integrations: each answers exactly as for an id that does not
/// exist, and Alice's integrations, settings, credentials and logs are as they were.
#[tokio::test]
async fn another_users_integrations_answer_every_route_as_unknown_ids() {
    let world = alice_and_bob().await;
    let (env, alice, bob) = (&world.env, world.alice, world.bob);
    let integrations_before = stored_rows(env, alice).await;
    let mut alice_logs = Vec::new();
    for id in &world.alice_ids {
        let page = api::logs(env, alice, &logs_of(id), "").await;
        alice_logs.push(page.body["logs"].as_array().unwrap().len());
    }
    assert!(alice_logs.iter().all(|n| *n > 0), "{alice_logs:?}");

    let mut calls = 0;
    let mut failures = Vec::new();
    let targets: Vec<Uuid> = world
        .alice_ids
        .iter()
        .copied()
        .chain([Uuid::new_v4()])
        .collect();
    for id in &targets {
        for (route, method, path, body) in [
            (Route::Integrations, "GET", item(id), None),
            (
                Route::Integrations,
                "PUT",
                item(id),
                Some(json!({"status": "paused", "riskThreshold": 100})),
            ),
            (Route::Integrations, "DELETE", item(id), None),
            (
                Route::IntegrationSync,
                "POST",
                format!("/api/integrations/{id}/sync"),
                None,
            ),
            (
                Route::Deliveries,
                "GET",
                format!("/api/integrations/{id}/deliveries"),
                None,
            ),
            (
                Route::Deliveries,
                "POST",
                format!("/api/integrations/{id}/deliveries/retry"),
                None,
            ),
        ] {
            let reply = match body {
                Some(b) => env.json_as_user(bob, route, method, &path, &b).await,
                None => env.as_user(bob, route, method, &path, "").await,
            };
            if let Some(problem) = error_problem(&reply, StatusCode::NOT_FOUND, "not_found") {
                failures.push(format!("{method} {path}: {problem}"));
            }
            calls += 1;
        }
        let logs = api::logs(env, bob, &logs_of(id), "").await;
        if logs.status != StatusCode::OK || logs.body != json!({"logs": [], "nextBefore": null}) {
            failures.push(format!("{}: {} {:?}", logs_of(id), logs.status, logs.body));
        }
        calls += 1;
    }
    assert_no_failures("Bob on Alice's integrations", &failures);

    world.assert_alice_untouched().await;
    assert_eq!(stored_rows(env, alice).await, integrations_before);
    for (id, before) in world.alice_ids.iter().zip(&alice_logs) {
        let page = api::logs(env, alice, &logs_of(id), "").await;
        assert_eq!(page.body["logs"].as_array().unwrap().len(), *before);
    }
    assert_eq!(
        api::get(env, alice, "/api/integrations").await.body["integrations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    report(format!(
        "security/rls: {calls} calls by one user naming another's integrations (and an unknown id): \
         all answered as for an unknown id; 0 rows of the other user seen or changed"
    ));
}

/// Bob's own routes show only Bob's rows: his list, his logs, his status, fetch and sync of a CRM only
/// Alice has; a lead of Bob's reaches Bob's integrations only.
#[tokio::test]
async fn each_users_own_routes_show_only_their_rows() {
    let world = alice_and_bob().await;
    let (env, alice, bob) = (&world.env, world.alice, world.bob);
    let listed = env
        .as_user(bob, Route::Integrations, "GET", "/api/integrations", "")
        .await;
    let listed_ids: Vec<&str> = listed.body["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids.len(), 1);
    assert!(
        world
            .alice_ids
            .iter()
            .all(|a| !listed_ids.contains(&a.to_string().as_str()))
    );
    let all_logs = env
        .as_user(bob, Route::SyncLogs, "GET", "/api/integrations/logs", "")
        .await;
    assert_eq!(all_logs.body, json!({"logs": [], "nextBefore": null}));
    let status = env
        .as_user(
            bob,
            Route::AuthStatus,
            "GET",
            "/api/integrations/followupboss/auth/status",
            "",
        )
        .await;
    assert_eq!(
        status.body["connected"], false,
        "Alice's Follow Up Boss is not Bob's"
    );
    let sync = env
        .as_user(
            bob,
            Route::ContactsSync,
            "POST",
            &sync_path(Provider::FollowUpBoss),
            "",
        )
        .await;
    assert_eq!(sync.status, StatusCode::NOT_FOUND);
    let fetch = env
        .as_user(
            bob,
            Route::ContactsFetch,
            "GET",
            "/api/integrations/followupboss/contacts/fetch",
            "",
        )
        .await;
    assert_eq!(fetch.status, StatusCode::NOT_FOUND);
    let own = env
        .as_user(
            bob,
            Route::ContactsSync,
            "POST",
            &sync_path(Provider::Lofty),
            "",
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    // A lead of Bob's goes to Bob's integrations only (a lead naming Alice is hers, whoever posts it:
    // the webhook is the trusted sender).
    let bobs = post_lead(env, &env.app, &lead(bob, "B-1", "+14155550193", "Bob")).await;
    assert_eq!(bobs.body["integrations"], 1);

    // Alice's rows are as they were; Bob's contacts are Bob's.
    world.assert_alice_untouched().await;
    let alice_contacts = env.store.list_contacts(alice).await.unwrap();
    let bob_contacts = env.store.list_contacts(bob).await.unwrap();
    assert!(alice_contacts.iter().all(|c| c.owner_id == alice));
    assert!(!bob_contacts.is_empty() && bob_contacts.iter().all(|c| c.owner_id == bob));
    report(
        "security/rls: 8 calls by one user on their own routes (list, logs, status, fetch and sync of \
         a CRM only the other has, own sync, a lead): only their own rows; 0 rows of the other \
         user seen or changed",
    );
}

/// At the database: as the application role with Bob's id set, no table shows a row of Alice's, and
/// none can be changed or deleted for her.
#[tokio::test]
async fn the_app_role_with_one_users_id_sees_and_changes_no_row_of_another() {
    let world = alice_and_bob().await;
    let (env, alice, bob) = (&world.env, world.alice, world.bob);
    let role = format!("probe_{}", Uuid::new_v4().simple());
    world
        .admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT crmsync_app TO {role}"
        ))
        .await
        .unwrap();
    let probe = crmsync_testkit::connect(&env.db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://{role}@"),
        1,
    ))
    .await;
    probe.batch_execute("SET ROLE crmsync_app").await.unwrap();
    probe
        .execute(
            "SELECT set_config('crmsync.user_id', $1, false)",
            &[&bob.to_string()],
        )
        .await
        .unwrap();
    let mut failures = Vec::new();
    for (table, owner) in USER_TABLES {
        let seen: i64 = probe
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {owner} <> $1"),
                &[&bob],
            )
            .await
            .unwrap()
            .get(0);
        let touched = probe
            .execute(
                &format!("UPDATE {table} SET {owner} = $1 WHERE {owner} = $2"),
                &[&bob, &alice],
            )
            .await
            .unwrap();
        let deleted = probe
            .execute(
                &format!("DELETE FROM {table} WHERE {owner} = $1"),
                &[&alice],
            )
            .await
            .unwrap();
        if (seen, touched, deleted) != (0, 0, 0) {
            failures.push(format!(
                "{table}: Bob saw {seen} of Alice's rows, updated {touched}, deleted {deleted}"
            ));
        }
    }
    assert_no_failures("Row Level Security at the database", &failures);
    world.assert_alice_untouched().await;
    report(
        "security/rls: 5 tables read, updated and deleted as the app role with one user set: 0 rows \
         of another user seen or changed",
    );
}

// Secrets in answers, logs, sync logs and a database dump.

/// The credentials the app holds for `user`'s integration with `provider`, as secrets to search for.
async fn stored_secrets(env: &Env, user: Uuid, provider: Provider) -> Vec<Secret> {
    let ready = env.app.ready().await.unwrap();
    let Some(record) = env
        .store
        .integration_by_provider(user, provider)
        .await
        .unwrap()
    else {
        return vec![];
    };
    match ready
        .ctx
        .vault
        .open(record.id, provider, &record.sealed)
        .unwrap()
        .credentials
    {
        Credentials::OAuth {
            access_token,
            refresh_token,
            ..
        } => {
            let mut s = vec![Secret::new(
                format!("{provider} access token"),
                access_token,
            )];
            if let Some(r) = refresh_token {
                s.push(Secret::new(format!("{provider} refresh token"), r));
            }
            s
        }
        Credentials::ApiKey { key } => vec![Secret::new(format!("{provider} API key"), key)],
    }
}

fn jwt_forged(user: Uuid) -> String {
    jwt(
        Algorithm::HS256,
        "attacker-secret-attacker-secret-0123",
        &user.to_string(),
        chrono::Utc::now().timestamp() + 60,
    )
}

/// A user connected to every CRM (REX by OAuth, Follow Up Boss by API key after a refused key, Lofty),
/// with every secret used so far and every answer got so far; each step below adds its own.
struct Secrets {
    env: Env,
    user: Uuid,
    /// Where the captured log stood when the environment started.
    mark: usize,
    secrets: Vec<Secret>,
    replies: Vec<Reply>,
}

impl Secrets {
    async fn connected() -> Secrets {
        let env = Env::start().await;
        let mark = capture::mark();
        let user = Uuid::new_v4();
        let mut replies: Vec<Reply> = Vec::new();
        let mut secrets = vec![
            Secret::new("JWT secret", JWT_SECRET),
            Secret::new("webhook secret", WEBHOOK_SECRET),
            Secret::new(
                "webhook secret key",
                WEBHOOK_SECRET.trim_start_matches("whsec_"),
            ),
            Secret::new("encryption key", env.encryption_key.clone()),
            Secret::new("REX client secret", "sandbox-rex-secret"),
            Secret::new("FUB client secret", "sandbox-fub-secret"),
            Secret::new("FUB system key", "sandbox-system-key"),
            Secret::new("Lofty API key", "sandbox-lofty-key"),
            Secret::new("FUB API key", "sandbox-fub-key"),
            Secret::new("a caller's JWT", Env::token(user)),
        ];
        for p in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
            env.sandbox.seed(sandbox_provider(p), 5, 120);
        }
        // Connect REX by OAuth by hand, keeping the code and state it used.
        let (cookie, path, query) = oauth_round(&env, user, "rex").await;
        for key in ["code", "state"] {
            secrets.push(Secret::new(
                format!("REX OAuth {key}"),
                query_param(&query, key),
            ));
        }
        let jwt = format!("alto_admin={}", Env::token(user));
        replies.push(
            env.call(
                Route::OAuthCallback,
                "GET",
                &path,
                &query,
                &[jwt, format!("crm_oauth_state={cookie}")],
                &[],
            )
            .await,
        );
        env.connect(user, Provider::Lofty).await;
        // Follow Up Boss by API key: first a wrong key (422), then the right one.
        for key in ["wrong-fub-key-0123456789", "sandbox-fub-key"] {
            secrets.push(Secret::new("a FUB key tried", key));
            replies.push(
                env.json_as_user(
                    user,
                    Route::Integrations,
                    "POST",
                    "/api/integrations",
                    &json!({"provider": "followupboss", "apiKey": key}),
                )
                .await,
            );
        }
        for p in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
            secrets.extend(stored_secrets(&env, user, p).await);
        }
        Secrets {
            env,
            user,
            mark,
            secrets,
            replies,
        }
    }

    /// A sync, a fetch and a status check of every CRM; the list of integrations and of sync logs.
    async fn sync_fetch_and_status(&mut self) {
        let (env, user) = (&self.env, self.user);
        for p in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
            self.replies.push(
                env.as_user(user, Route::ContactsSync, "POST", &sync_path(p), "")
                    .await,
            );
            self.replies.push(
                env.as_user(
                    user,
                    Route::ContactsFetch,
                    "GET",
                    &format!("/api/integrations/{}/contacts/fetch", p.as_str()),
                    "limit=3",
                )
                .await,
            );
            self.replies.push(
                env.as_user(
                    user,
                    Route::AuthStatus,
                    "GET",
                    &format!("/api/integrations/{}/auth/status", p.as_str()),
                    "",
                )
                .await,
            );
        }
        self.replies.push(
            env.as_user(user, Route::Integrations, "GET", "/api/integrations", "")
                .await,
        );
        self.replies.push(
            env.as_user(
                user,
                Route::SyncLogs,
                "GET",
                "/api/integrations/logs",
                "limit=200",
            )
            .await,
        );
    }

    /// A lead pushed to every CRM.
    async fn push_a_lead(&mut self) {
        let body = lead(self.user, "SEC-1", "+14155550194", "Secret");
        self.replies
            .push(post_lead(&self.env, &self.env.app, &body).await);
    }

    /// CRM errors whose bodies are the CRM's: REX revokes its token (REX's error body echoes it), a
    /// push to REX then fails, and Follow Up Boss refuses every call of a sync.
    async fn crm_errors(&mut self) {
        let (env, user) = (&self.env, self.user);
        // The grant is revoked (an expired token alone is now refreshed after its 401).
        env.sandbox
            .revoke_grants(Some(sandbox_provider(Provider::Rex)));
        let revoked = env
            .as_user(
                user,
                Route::ContactsSync,
                "POST",
                &sync_path(Provider::Rex),
                "",
            )
            .await;
        assert_eq!(
            revoked.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            revoked.body
        );
        self.replies.push(revoked);
        // A push to REX with the revoked token fails and is logged with our sentence only.
        let body = lead(user, "SEC-2", "+14155550195", "Secret");
        self.replies.push(post_lead(env, &env.app, &body).await);
        env.sandbox
            .set_faults(
                sandbox_provider(Provider::FollowUpBoss),
                crm_sandbox::FaultConfig {
                    error_rate: 1.0,
                    ..Default::default()
                },
            )
            .unwrap();
        self.replies.push(
            env.as_user(
                user,
                Route::ContactsSync,
                "POST",
                &sync_path(Provider::FollowUpBoss),
                "",
            )
            .await,
        );
        env.sandbox
            .set_faults(sandbox_provider(Provider::FollowUpBoss), Default::default())
            .unwrap();
    }

    /// REX's stored token expired: a status check refreshes it; the new tokens are secrets too.
    async fn refresh_rex(&mut self) {
        let (env, user) = (&self.env, self.user);
        let rex = env
            .store
            .integration_by_provider(user, Provider::Rex)
            .await
            .unwrap()
            .unwrap();
        let ready = env.app.ready().await.unwrap();
        if let Credentials::OAuth {
            access_token,
            refresh_token,
            ..
        } = ready
            .ctx
            .vault
            .open(rex.id, Provider::Rex, &rex.sealed)
            .unwrap()
            .credentials
        {
            let expired = Credentials::OAuth {
                access_token,
                refresh_token,
                expires_at: Some(chrono::Utc::now().timestamp() - 10),
            };
            let sealed = ready
                .ctx
                .vault
                .seal(rex.id, Provider::Rex, &expired)
                .unwrap();
            env.store
                .set_credentials(user, rex.id, &sealed, None)
                .await
                .unwrap();
        }
        self.replies.push(
            env.as_user(
                user,
                Route::AuthStatus,
                "GET",
                "/api/integrations/rex/auth/status",
                "",
            )
            .await,
        );
        self.secrets
            .extend(stored_secrets(env, user, Provider::Rex).await);
    }

    /// Bad callers, whose tokens are secrets too: a forged JWT, a wrong webhook secret.
    async fn bad_callers(&mut self) {
        let env = &self.env;
        let forged = jwt_forged(self.user);
        self.secrets
            .push(Secret::new("a forged JWT", forged.clone()));
        self.replies.push(
            env.call(
                Route::Integrations,
                "GET",
                "/api/integrations",
                "",
                &[format!("alto_admin={forged}")],
                &[],
            )
            .await,
        );
        self.replies.push(
            env.send(
                Route::LeadWebhook,
                "POST",
                WEBHOOK,
                "",
                &[],
                &[("x-webhook-secret", "whsec_wrong-guess-0123456789")],
                Some(b"{}"),
            )
            .await,
        );
        self.secrets.push(Secret::new(
            "a wrong webhook secret",
            "whsec_wrong-guess-0123456789",
        ));
    }

    /// The sync logs users read (errors and metrics), all of them.
    async fn sync_logs_text(&self) -> String {
        let admin = crmsync_testkit::connect(&self.env.db.url).await;
        let errors: Vec<String> = admin
            .query(
                "SELECT coalesce(error, '') || coalesce(metrics::text, '') FROM crm_sync_logs",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        errors.join("\n")
    }

    /// No secret in any answer so far, in the captured log since the start, nor (with `sync_logs`) in
    /// the sync logs; every leak is listed. Returns the size of the log searched.
    async fn assert_no_leak(&self, what: &str, sync_logs: bool) -> usize {
        let logs = capture::since(self.mark);
        // The sealed state cookie of oauth-start is sealed, and not among these answers.
        let mut places: Vec<(String, String)> = self
            .replies
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("answer {i}"), r.text()))
            .collect();
        places.push(("the captured log".into(), logs.clone()));
        if sync_logs {
            places.push(("crm_sync_logs".into(), self.sync_logs_text().await));
        }
        assert_no_leak(&places, &self.secrets);
        report(format!(
            "security/secrets {what}: {} secrets (6 forms each) searched in {} responses, {} bytes \
             of captured logs{}: 0 found",
            self.secrets.len(),
            self.replies.len(),
            logs.len(),
            if sync_logs { " and the sync logs" } else { "" }
        ));
        logs.len()
    }
}

#[tokio::test]
async fn connecting_leaks_no_secret_into_answers_or_logs() {
    let world = Secrets::connected().await;
    world.assert_no_leak("connecting", false).await;
}

#[tokio::test]
async fn syncs_fetches_and_status_checks_leak_no_secret() {
    let mut world = Secrets::connected().await;
    world.sync_fetch_and_status().await;
    assert!(
        capture::since(world.mark).contains("CRM call done"),
        "debug lines of crmsync are captured too"
    );
    world.assert_no_leak("syncs, fetches, status", true).await;
}

#[tokio::test]
async fn a_pushed_lead_leaks_no_secret() {
    let mut world = Secrets::connected().await;
    world.push_a_lead().await;
    world.assert_no_leak("a pushed lead", true).await;
}

/// REX's error bodies echo the token (`request_data`); neither an answer, nor a log line, nor a sync
/// log has it, and no raw REX error body is logged.
#[tokio::test]
async fn crm_error_bodies_that_echo_a_token_reach_no_answer_log_or_sync_log() {
    let mut world = Secrets::connected().await;
    world.crm_errors().await;
    let logs = capture::since(world.mark);
    assert!(logs.contains("CRM"), "the CRM failures above were logged");
    let raw: Vec<&str> = [
        "request_data",
        "correlation",
        "sudo_token",
        "use_status_codes",
    ]
    .into_iter()
    .filter(|marker| logs.contains(marker))
    .collect();
    assert!(raw.is_empty(), "a raw REX error body was logged ({raw:?})");
    world.assert_no_leak("CRM error bodies", true).await;
}

#[tokio::test]
async fn a_token_refresh_leaks_neither_the_old_nor_the_new_token() {
    let mut world = Secrets::connected().await;
    world.refresh_rex().await;
    world.assert_no_leak("a token refresh", false).await;
}

#[tokio::test]
async fn a_bad_callers_jwt_or_webhook_secret_is_not_echoed() {
    let mut world = Secrets::connected().await;
    world.bad_callers().await;
    world.assert_no_leak("bad callers", false).await;
}

/// After every step above, a database dump shows no credential, in any encoding, and the sync logs
/// no secret.
#[tokio::test]
async fn a_database_dump_shows_no_credential() {
    let mut world = Secrets::connected().await;
    world.sync_fetch_and_status().await;
    world.push_a_lead().await;
    world.crm_errors().await;
    world.refresh_rex().await;
    world.bad_callers().await;
    let sync_logs = world.sync_logs_text().await;
    let pg_dump = std::env::var("PATH")
        .ok()
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pg_dump"))
                .find(|f| f.is_file())
        })
        .or_else(|| {
            let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/pg_dump"))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        })
        .expect("pg_dump (installed with the Postgres server binaries)");
    let dump = std::process::Command::new(pg_dump)
        .args(["--no-owner", "--dbname", &world.env.db.direct_url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains("crm_integrations"),
        "the dump has the integrations"
    );
    let credentials: Vec<Secret> = world
        .secrets
        .iter()
        .filter(|s| !s.name.starts_with("a ") || s.name.contains("FUB key"))
        .cloned()
        .collect();
    assert_no_leak(&[("crm_sync_logs".into(), sync_logs)], &world.secrets);
    assert_no_leak(
        &[("a pg_dump of the database".into(), dump.clone())],
        &credentials,
    );
    report(format!(
        "security/secrets dump: after connecting, syncs, a pushed lead, CRM errors, a refresh and \
         bad callers, {} credentials (6 forms each) searched in a {}-byte pg_dump and {} secrets in \
         the sync logs: 0 found",
        credentials.len(),
        dump.len(),
        world.secrets.len()
    ));
}
