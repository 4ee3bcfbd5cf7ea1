//! Security: forged and foreign JWTs on every route, OAuth callbacks that do not match, webhook
//! signatures tampered, stale or replayed, Row Level Security through every route and every table, no
//! secret in any log line or response, and no credential readable in a database dump.

use crmsync_domain::Provider;
use crmsync_store::Credentials;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::capture::{self, Secret, assert_no_leak};
use crate::env::{
    Env, JWT_SECRET, POST_CONNECT_URL, Reply, Route, WEBHOOK_SECRET, sandbox_provider,
};
use crate::faults::{lead, people_with, post_lead};
use crate::rows::{assert_contract_error, report, sync_path};

/// Every table that holds users' rows, with the column naming the user.
const USER_TABLES: [(&str, &str); 5] = [
    ("contacts", "owner_id"),
    ("crm_integrations", "user_id"),
    ("crm_sync_logs", "user_id"),
    ("lead_events", "user_id"),
    ("push_deliveries", "user_id"),
];

const WEBHOOK: &str = "/api/webhooks/lead-created";

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

/// Every route that needs a caller, with a request for it.
fn authenticated_routes(id: Uuid) -> Vec<(Route, &'static str, String, &'static str)> {
    vec![
        (
            Route::OAuthStart,
            "GET",
            "/api/integrations/rex/oauth/start".into(),
            "",
        ),
        (
            Route::AuthStatus,
            "GET",
            "/api/integrations/lofty/auth/status".into(),
            "",
        ),
        (
            Route::ContactsFetch,
            "GET",
            "/api/integrations/lofty/contacts/fetch".into(),
            "limit=1",
        ),
        (
            Route::ContactsSync,
            "POST",
            "/api/integrations/lofty/contacts/sync".into(),
            "",
        ),
        (Route::Integrations, "GET", "/api/integrations".into(), ""),
        (Route::Integrations, "POST", "/api/integrations".into(), ""),
        (
            Route::Integrations,
            "GET",
            format!("/api/integrations/{id}"),
            "",
        ),
        (
            Route::Integrations,
            "PUT",
            format!("/api/integrations/{id}"),
            "",
        ),
        (
            Route::Integrations,
            "DELETE",
            format!("/api/integrations/{id}"),
            "",
        ),
        (
            Route::IntegrationSync,
            "POST",
            format!("/api/integrations/{id}/sync"),
            "",
        ),
        (
            Route::SyncLogs,
            "GET",
            format!("/api/integrations/{id}/logs"),
            "",
        ),
        (Route::SyncLogs, "GET", "/api/integrations/logs".into(), ""),
    ]
}

#[tokio::test]
async fn forged_expired_and_foreign_jwts_get_401_on_every_route() {
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
    let body =
        json!({"provider": "lofty", "apiKey": "sandbox-lofty-key", "status": "paused"}).to_string();
    let mut tried = 0;
    for (kind, token) in bad_tokens(user) {
        for (route, method, path, query) in authenticated_routes(id) {
            for (cookies, headers) in [
                (vec![format!("alto_admin={token}")], vec![]),
                (
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
                assert_eq!(
                    reply.status,
                    StatusCode::UNAUTHORIZED,
                    "{kind}: {method} {path}: {:?}",
                    reply.body
                );
                assert_contract_error(&reply);
                tried += 1;
            }
        }
        // The callback always redirects: with a bad token, to ?error=unauthorized, storing nothing.
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
        assert!(
            reply.location().ends_with("?error=unauthorized"),
            "{kind}: {}",
            reply.location()
        );
        tried += 1;
    }
    // Nothing changed: the integration is still there, active, and nobody synced it.
    let still = env.store.get_integration(user, id).await.unwrap().unwrap();
    assert_eq!(still.status, "active");
    assert!(still.last_sync_at.is_none());
    report(format!(
        "security/jwt: {} kinds of bad token x 13 routes x (cookie, Bearer): {tried} calls, all 401 \
         (callback: ?error=unauthorized), nothing changed",
        bad_tokens(user).len()
    ));
}

/// Starts an OAuth flow of `provider` for `user` and follows the consent: (state cookie, callback
/// path, callback query).
async fn oauth_round(env: &Env, user: Uuid, provider: &str) -> (String, String, String) {
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
    let back = crate::env::follow_consent(&start.location()).await;
    let (path, query) = back.split_once('?').unwrap();
    (
        cookie,
        path.trim_start_matches("http://127.0.0.1:3004").to_owned(),
        query.to_owned(),
    )
}

fn query_without(query: &str, key: &str) -> String {
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

#[tokio::test]
async fn oauth_callbacks_with_a_missing_wrong_reused_or_expired_state_or_a_foreign_redirect_store_nothing()
 {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    let jwt = format!("alto_admin={}", Env::token(user));
    let error_of = |reply: &Reply| {
        assert_eq!(reply.status, StatusCode::FOUND);
        let location = reply.location();
        assert!(
            location.starts_with(POST_CONNECT_URL),
            "every callback goes back to the dashboard only: {location}"
        );
        location.split("error=").nth(1).unwrap_or("").to_owned()
    };
    let (cookie, path, query) = oauth_round(&env, user, "followupboss").await;
    let state_cookie = format!("crm_oauth_state={cookie}");
    let mut tried = 0;
    let mut expect = async |query: &str, cookies: &[String], want: &str, what: &str| {
        let reply = env
            .call(Route::OAuthCallback, "GET", &path, query, cookies, &[])
            .await;
        assert_eq!(error_of(&reply), want, "{what}");
        tried += 1;
    };
    let both = [jwt.clone(), state_cookie.clone()];
    expect(
        &query_without(&query, "state"),
        &both,
        "invalid_state",
        "no state in the query",
    )
    .await;
    expect(
        &format!("{}&state=", query_without(&query, "state")),
        &both,
        "invalid_state",
        "empty state",
    )
    .await;
    expect(
        &format!("{}&state=AAAA", query_without(&query, "state")),
        &both,
        "invalid_state",
        "wrong state",
    )
    .await;
    // No code (with a state that matches a flow of its own: the state is then spent).
    let (c2, p2, q2) = oauth_round(&env, user, "followupboss").await;
    let reply = env
        .call(
            Route::OAuthCallback,
            "GET",
            &p2,
            &query_without(&q2, "code"),
            &[jwt.clone(), format!("crm_oauth_state={c2}")],
            &[],
        )
        .await;
    assert_eq!(error_of(&reply), "invalid_request", "no code");
    // A state cookie made for another provider (REX) with this callback (Follow Up Boss).
    let (rex_cookie, _, rex_query) = oauth_round(&env, user, "rex").await;
    let rex_state: String = form_urlencoded::parse(rex_query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let crossed = format!("{}&state={rex_state}", query_without(&query, "state"));
    expect(
        &crossed,
        &[jwt.clone(), format!("crm_oauth_state={rex_cookie}")],
        "invalid_state",
        "another provider's state",
    )
    .await;
    // An expired state cookie, sealed with the right key (as if kept past its 10 minutes).
    let ready = env.app.ready().await.unwrap();
    let state: String = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let stale = ready
        .ctx
        .vault
        .seal_token(
            "oauth-state",
            json!({"state": state, "provider": "followupboss", "user": user,
                   "expires": chrono::Utc::now().timestamp() - 1})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    expect(
        &query,
        &[jwt.clone(), format!("crm_oauth_state={stale}")],
        "invalid_state",
        "expired state cookie",
    )
    .await;
    // A cookie sealed by another deployment's key.
    let foreign_vault = crmsync_store::Vault::new(&"7e".repeat(32), None).unwrap();
    let foreign = foreign_vault
        .seal_token(
            "oauth-state",
            json!({"state": state, "provider": "followupboss", "user": user,
                   "expires": chrono::Utc::now().timestamp() + 600})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    expect(
        &query,
        &[jwt.clone(), format!("crm_oauth_state={foreign}")],
        "invalid_state",
        "foreign key",
    )
    .await;
    // Foreign redirects in the query are ignored: the answer still goes to POST_CONNECT_URL.
    let foreign_redirect = format!(
        "{query}&redirect_uri=https%3A%2F%2Fevil.example%2Fsteal&next=https%3A%2F%2Fevil.example&return_to=%2F%2Fevil.example"
    );
    let reply = env
        .call(
            Route::OAuthCallback,
            "GET",
            &path,
            &foreign_redirect,
            &both,
            &[],
        )
        .await;
    assert_eq!(
        reply.location(),
        format!("{POST_CONNECT_URL}?connected=followupboss")
    );
    tried += 1;
    // Reused: the same callback again, and the same state under a fresh cookie of its own.
    let reply = env
        .call(Route::OAuthCallback, "GET", &path, &query, &both, &[])
        .await;
    assert_eq!(error_of(&reply), "invalid_state", "replayed callback");
    tried += 1;
    // oauth-start ignores a redirect in its query: the CRM is sent our registered redirect URI only.
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
    tried += 1;

    let integrations = env.store.list_integrations(user).await.unwrap();
    assert_eq!(
        integrations.len(),
        1,
        "only the one good callback stored anything"
    );
    assert_eq!(integrations[0].provider, Provider::FollowUpBoss);
    report(format!(
        "security/oauth: {tried} callbacks (missing, empty, wrong, cross-provider, expired, foreign-key \
         state; no code; foreign redirect params; replay) and a start with a foreign redirect: \
         1 connection stored (the good one), every other one refused"
    ));
}

#[tokio::test]
async fn webhook_signatures_tampered_stale_or_replayed_push_nothing_twice() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let body = lead(user, "SIG-1", "+14155550191", "Signed").to_string();
    let hook = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    let other =
        standardwebhooks::Webhook::new("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0wMTIz").unwrap();
    let now = chrono::Utc::now().timestamp();
    let send = async |headers: Vec<(&str, String)>, body: &str| {
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
    };
    let signed = |hook: &standardwebhooks::Webhook, id: &str, ts: i64, b: &str| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                hook.sign(id, ts, b.as_bytes()).unwrap(),
            ),
        ]
    };
    let good = signed(&hook, "msg_1", now, &body);
    let with = |i: usize, v: String| {
        let mut h = good.clone();
        h[i].1 = v;
        h
    };
    type Headers<'a> = Vec<(&'a str, String)>;
    let refused: Vec<(&str, Headers, String)> = vec![
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
    for (what, headers, b) in &refused {
        let reply = send(headers.clone(), b).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {:?}",
            reply.body
        );
        assert_contract_error(&reply);
    }
    let admin = crmsync_testkit::connect(&env.db.url).await;
    let events = async || -> i64 {
        admin
            .query_one("SELECT count(*) FROM lead_events", &[])
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(events().await, 0, "refused deliveries store nothing");
    // The good one, then replays of it (as a sender retrying), within the tolerance: pushed once.
    let first = send(good.clone(), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["pushed"], 1);
    for _ in 0..5 {
        let again = send(good.clone(), &body).await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(again.body["duplicate"], true);
    }
    assert_eq!(events().await, 1);
    assert_eq!(
        people_with(&env, Provider::Lofty, "+14155550191")
            .await
            .len(),
        1
    );
    report(format!(
        "security/webhook: {} forged, stale or tampered deliveries refused (401, nothing stored); a \
         signed delivery replayed 5 times within the tolerance: pushed once",
        refused.len()
    ));
}

#[tokio::test]
async fn row_level_security_keeps_users_apart_through_every_route_and_table() {
    let env = Env::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    env.sandbox.seed(sandbox_provider(Provider::Lofty), 3, 150);
    env.sandbox
        .seed(sandbox_provider(Provider::FollowUpBoss), 4, 150);
    for p in [Provider::Lofty, Provider::FollowUpBoss] {
        env.connect(alice, p).await;
    }
    env.connect(bob, Provider::Lofty).await;
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
    let admin = crmsync_testkit::connect(&env.db.url).await;
    let snapshot = async || -> Vec<(String, i64)> {
        let mut counts = Vec::new();
        for (table, owner) in USER_TABLES {
            let n: i64 = admin
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE {owner} = $1"),
                    &[&alice],
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
                            &[&alice],
                        )
                        .await
                        .unwrap()
                        .get(0)
                };
            counts.push((format!("{table} (last change {changed:?})"), n));
        }
        counts
    };
    let before = snapshot().await;

    // Bob calls every route on Alice's integrations: each answers as for an id that does not exist.
    let mut calls = 0;
    for id in &alice_ids {
        for (route, method, path, body) in [
            (
                Route::Integrations,
                "GET",
                format!("/api/integrations/{id}"),
                None,
            ),
            (
                Route::Integrations,
                "PUT",
                format!("/api/integrations/{id}"),
                Some(json!({"status": "paused", "riskThreshold": 100})),
            ),
            (
                Route::Integrations,
                "DELETE",
                format!("/api/integrations/{id}"),
                None,
            ),
            (
                Route::IntegrationSync,
                "POST",
                format!("/api/integrations/{id}/sync"),
                None,
            ),
        ] {
            let reply = match body {
                Some(b) => env.json_as_user(bob, route, method, &path, &b).await,
                None => env.as_user(bob, route, method, &path, "").await,
            };
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {:?}",
                reply.body
            );
            calls += 1;
        }
        let logs = env
            .as_user(
                bob,
                Route::SyncLogs,
                "GET",
                &format!("/api/integrations/{id}/logs"),
                "",
            )
            .await;
        assert_eq!(logs.body, json!({"logs": [], "nextBefore": null}));
        calls += 1;
    }
    // Bob's own routes show only Bob's rows.
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
        alice_ids
            .iter()
            .all(|a| !listed_ids.contains(&a.to_string().as_str()))
    );
    let all_logs = env
        .as_user(bob, Route::SyncLogs, "GET", "/api/integrations/logs", "")
        .await;
    assert_eq!(all_logs.body["logs"], json!([]));
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
    // A lead of Bob's goes to Bob's integrations only; a lead naming Alice is hers, whoever posts it
    // (the webhook is the trusted sender), and it reaches no integration of Bob's.
    let bobs = post_lead(&env, &env.app, &lead(bob, "B-1", "+14155550193", "Bob")).await;
    assert_eq!(bobs.body["integrations"], 1);
    calls += 8;

    // Alice's rows are as they were; Bob's contacts are Bob's.
    assert_eq!(snapshot().await, before, "Bob changed nothing of Alice's");
    let alice_contacts = env.store.list_contacts(alice).await.unwrap();
    let bob_contacts = env.store.list_contacts(bob).await.unwrap();
    assert!(alice_contacts.iter().all(|c| c.owner_id == alice));
    assert!(!bob_contacts.is_empty() && bob_contacts.iter().all(|c| c.owner_id == bob));

    // At the database: as the application role with Bob's id set, no table shows a row of Alice's,
    // and none can be written for her.
    let role = format!("probe_{}", Uuid::new_v4().simple());
    admin
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
    for (table, owner) in USER_TABLES {
        let seen: i64 = probe
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {owner} <> $1"),
                &[&bob],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "{table}: Bob sees none of Alice's rows");
        let touched = probe
            .execute(
                &format!("UPDATE {table} SET {owner} = $1 WHERE {owner} = $2"),
                &[&bob, &alice],
            )
            .await
            .unwrap();
        assert_eq!(touched, 0, "{table}");
        let deleted = probe
            .execute(
                &format!("DELETE FROM {table} WHERE {owner} = $1"),
                &[&alice],
            )
            .await
            .unwrap();
        assert_eq!(deleted, 0, "{table}");
    }
    assert_eq!(snapshot().await, before);
    report(format!(
        "security/rls: {calls} calls by one user on another's integrations and routes, 5 tables read, \
         updated and deleted as the app role: 0 rows of the other user seen or changed"
    ));
}

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

#[tokio::test]
async fn no_secret_reaches_a_log_line_a_response_or_a_database_dump() {
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
        let v: String = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap();
        secrets.push(Secret::new(format!("REX OAuth {key}"), v));
    }
    let jwt = format!("alto_admin={}", Env::token(user));
    replies.push(
        env.call(
            Route::OAuthCallback,
            "GET",
            &path,
            &query,
            &[jwt.clone(), format!("crm_oauth_state={cookie}")],
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
        replies.push(
            env.as_user(user, Route::ContactsSync, "POST", &sync_path(p), "")
                .await,
        );
        replies.push(
            env.as_user(
                user,
                Route::ContactsFetch,
                "GET",
                &format!("/api/integrations/{}/contacts/fetch", p.as_str()),
                "limit=3",
            )
            .await,
        );
        replies.push(
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
    replies.push(
        post_lead(
            &env,
            &env.app,
            &lead(user, "SEC-1", "+14155550194", "Secret"),
        )
        .await,
    );
    replies.push(
        env.as_user(user, Route::Integrations, "GET", "/api/integrations", "")
            .await,
    );
    replies.push(
        env.as_user(
            user,
            Route::SyncLogs,
            "GET",
            "/api/integrations/logs",
            "limit=200",
        )
        .await,
    );

    // REX revokes its token: REX's error body echoes the token; neither the answer nor a log has it.
    env.sandbox
        .expire_tokens(Some(sandbox_provider(Provider::Rex)));
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
    replies.push(revoked);
    // A push to REX with the revoked token fails and is logged with our sentence only.
    replies.push(
        post_lead(
            &env,
            &env.app,
            &lead(user, "SEC-2", "+14155550195", "Secret"),
        )
        .await,
    );
    // Follow Up Boss refuses a write (a 4xx whose body is the CRM's).
    env.sandbox
        .set_faults(
            sandbox_provider(Provider::FollowUpBoss),
            crm_sandbox::FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
    replies.push(
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
    // Refreshes: expired tokens in Follow Up Boss... (by API key here) and REX's refresh token used.
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
    replies.push(
        env.as_user(
            user,
            Route::AuthStatus,
            "GET",
            "/api/integrations/rex/auth/status",
            "",
        )
        .await,
    );
    secrets.extend(stored_secrets(&env, user, Provider::Rex).await);
    // Bad callers, whose tokens are secrets too.
    let forged = jwt_forged(user);
    secrets.push(Secret::new("a forged JWT", forged.clone()));
    replies.push(
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
    replies.push(
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
    secrets.push(Secret::new(
        "a wrong webhook secret",
        "whsec_wrong-guess-0123456789",
    ));

    // Responses: none holds a secret (the sealed state cookie of oauth-start is sealed, and not here).
    for reply in &replies {
        assert_no_leak("a response", &reply.text(), &secrets);
    }
    // Logs: none either, and no raw REX error body (its request_data echoes the token).
    let logs = capture::since(mark);
    assert!(logs.contains("CRM"), "the CRM failures above were logged");
    assert!(
        logs.contains("CRM call done"),
        "debug lines of crmsync are captured too"
    );
    assert_no_leak("the captured log", &logs, &secrets);
    for marker in [
        "request_data",
        "correlation",
        "sudo_token",
        "use_status_codes",
    ] {
        assert!(
            !logs.contains(marker),
            "a raw REX error body was logged ({marker})"
        );
    }
    // The sync logs users read hold our sentences only.
    let admin = crmsync_testkit::connect(&env.db.url).await;
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
    assert_no_leak("crm_sync_logs", &errors.join("\n"), &secrets);

    // A database dump shows no credential, in any encoding.
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
        .args(["--no-owner", "--dbname", &env.db.url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("crm_integrations"),
        "the dump has the integrations"
    );
    let credentials: Vec<Secret> = secrets
        .iter()
        .filter(|s| !s.name.starts_with("a ") || s.name.contains("FUB key"))
        .cloned()
        .collect();
    assert_no_leak("a pg_dump of the database", &dump, &credentials);
    report(format!(
        "security/secrets: {} secrets ({} forms each) searched in {} responses, {} bytes of captured \
         logs, the sync logs and a {}-byte pg_dump: 0 found",
        secrets.len(),
        6,
        replies.len(),
        logs.len(),
        dump.len()
    ));
}

fn jwt_forged(user: Uuid) -> String {
    jwt(
        Algorithm::HS256,
        "attacker-secret-attacker-secret-0123",
        &user.to_string(),
        chrono::Utc::now().timestamp() + 60,
    )
}
