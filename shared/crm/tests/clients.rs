//! The CRM clients against `wiremock` servers, asserting the exact requests each CRM gets.
//!
//! Waits are recorded by a test [`Sleeper`] instead of slept, so that a `Retry-After: 1` or a
//! pacing window is asserted as the delay the client decided on, without wall-clock timing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crmsync_crm::followupboss::mapping as fub;
use crmsync_crm::lofty::mapping as lofty;
use crmsync_crm::oauth::{self, OAuthConfig};
use crmsync_crm::rex::mapping as rex;
use crmsync_crm::{
    Common, CrmAuth, CrmClient, CrmConfig, CrmError, CrmHttp, CrmSecrets, CrmSettings, Listing,
    PageRequest, PushAction, RetryPolicy, Sleeper, Timeouts,
};
use crmsync_domain::{Lead, LeadPayload, Mapped, PhoneNumber, Provider, Region, SyncCursor};
use serde_json::{Value, json};
use wiremock::matchers::{
    basic_auth, bearer_token, body_json, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const FUB_KEY: &str = "fub-api-key-123";
const LOFTY_KEY: &str = "lofty-api-key-456";
const REX_TOKEN: &str = "rex-session-token-789";
const SYSTEM: &str = "crmsync-test";
const SYSTEM_KEY: &str = "system-key-abc";

// ---------------------------------------------------------------------------------------------
// Harness

/// Records every wait the client decides on, and returns at once.
#[derive(Default)]
struct Waits(Mutex<Vec<Duration>>);

impl Waits {
    fn all(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

impl Sleeper for Waits {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.0.lock().unwrap().push(d);
        Box::pin(async {})
    }
}

/// Tiny backoff so retries are fast; a generous max wait so Retry-After/pacing are honoured.
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        max_wait: Duration::from_secs(30),
    }
}

struct Env {
    server: MockServer,
    http: CrmHttp,
    waits: Arc<Waits>,
    config: CrmConfig,
}

impl Env {
    async fn start() -> Env {
        Self::with_http(CrmHttp::new().unwrap()).await
    }

    async fn with_http(http: CrmHttp) -> Env {
        let server = MockServer::start().await;
        let uri = server.uri();
        let common = Common {
            base_url: "https://dash.example.com".into(),
            sandbox_url: Some(uri.clone()),
            default_sandbox_url: uri.clone(),
        };
        let settings = CrmSettings::from_lookup(&|_| None, &common).unwrap();
        let secrets: CrmSecrets = serde_json::from_value(json!({
            "rex_client_id": "rex-client",
            "rex_client_secret": "rex-secret",
            "followupboss_client_id": "fub-client",
            "followupboss_client_secret": "fub-secret",
            "followupboss_system": SYSTEM,
            "followupboss_system_key": SYSTEM_KEY,
        }))
        .unwrap();
        let waits = Arc::new(Waits::default());
        let http = http.with_retry(policy()).with_sleeper(waits.clone());
        Env {
            server,
            http,
            waits,
            config: CrmConfig::new(settings, secrets),
        }
    }

    fn client(&self, provider: Provider, auth: CrmAuth) -> CrmClient {
        CrmClient::new(&self.http, &self.config, provider, auth)
    }

    fn oauth(&self, provider: Provider) -> OAuthConfig {
        crmsync_crm::kind(provider)
            .oauth(&self.config)
            .expect("the CRM connects by OAuth")
    }

    fn fub(&self) -> CrmClient {
        self.client(Provider::FollowUpBoss, CrmAuth::ApiKey(FUB_KEY.into()))
    }

    fn lofty(&self) -> CrmClient {
        self.client(Provider::Lofty, CrmAuth::ApiKey(LOFTY_KEY.into()))
    }

    fn rex(&self) -> CrmClient {
        self.client(
            Provider::Rex,
            CrmAuth::OAuth {
                access_token: REX_TOKEN.into(),
            },
        )
    }

    async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap()
    }
}

fn lead(v: Value) -> Lead {
    let mut v = v;
    v["id"] = json!("lead-1");
    v["userId"] = json!("6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f");
    Lead::from_payload(
        serde_json::from_value::<LeadPayload>(v).unwrap(),
        Region::US,
    )
    .unwrap()
}

fn jane() -> Lead {
    lead(
        json!({"firstName": "Jane", "lastName": "Doe", "phone": "(415) 555-0123",
                "email": "jane@example.com", "tags": ["buyer"], "notes": "Wants 3 beds"}),
    )
}

fn phone() -> PhoneNumber {
    PhoneNumber::parse("+14155550123", Region::US).unwrap()
}

fn ok_json(v: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(v)
}

fn form(req: &Request) -> HashMap<String, String> {
    url_pairs(std::str::from_utf8(&req.body).unwrap())
}

fn url_pairs(s: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{s}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn ids(records: &[Mapped]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.external_id().unwrap_or("-"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// OAuth

#[tokio::test]
async fn fub_authorize_url_uses_auth_code_and_no_pkce() {
    let env = Env::start().await;
    let cfg = env.oauth(Provider::FollowUpBoss);
    let url = oauth::authorize_url(&cfg, "st4te", Some("challenge-x"));
    assert!(
        url.starts_with(&format!("{}/fub/oauth/authorize?", env.server.uri())),
        "{url}"
    );
    let q = query(&url);
    assert_eq!(q["response_type"], "auth_code");
    assert_eq!(q["client_id"], "fub-client");
    assert_eq!(q["state"], "st4te");
    assert_eq!(
        q["redirect_uri"],
        "https://dash.example.com/api/integrations/followupboss/oauth/callback"
    );
    for absent in [
        "code_challenge",
        "code_challenge_method",
        "scope",
        "client_secret",
    ] {
        assert!(!q.contains_key(absent), "{absent} in {url}");
    }
}

#[tokio::test]
async fn fub_code_exchange_sends_state_basic_client_auth_and_grant_type() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/oauth/token"))
        .and(basic_auth("fub-client", "fub-secret"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ok_json(
            json!({"access_token": "at-1", "token_type": "Bearer",
            "expires_in": 3600, "refresh_token": "rt-1"}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let cfg = env.oauth(Provider::FollowUpBoss);
    let tokens = oauth::exchange_code(&env.http, &cfg, "code-1", "st4te", Some("ignored-verifier"))
        .await
        .unwrap();
    assert_eq!(tokens.access_token, "at-1");
    assert_eq!(tokens.refresh_token.as_deref(), Some("rt-1"));
    let left = (tokens.expires_at.unwrap() - chrono::Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&left), "{left}");

    let body = form(&env.requests().await[0]);
    assert_eq!(
        body,
        HashMap::from([
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), "code-1".to_owned()),
            ("state".to_owned(), "st4te".to_owned()),
            (
                "redirect_uri".to_owned(),
                "https://dash.example.com/api/integrations/followupboss/oauth/callback".to_owned()
            ),
        ]),
        "FUB gets no PKCE verifier and no client secret in the body"
    );
}

#[tokio::test]
async fn fub_legacy_token_shape_is_accepted() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/oauth/token"))
        .respond_with(ok_json(
            json!({"success": true, "data": {"access_token": "at-legacy",
            "token_type": "bearer", "refresh_token": "rt-legacy", "ttl": 3600}}),
        ))
        .mount(&env.server)
        .await;
    let cfg = env.oauth(Provider::FollowUpBoss);
    let tokens = oauth::exchange_code(&env.http, &cfg, "c", "s", None)
        .await
        .unwrap();
    assert_eq!(tokens.access_token, "at-legacy");
    assert_eq!(tokens.refresh_token.as_deref(), Some("rt-legacy"));
    assert!(tokens.expires_at.is_some());
}

#[tokio::test]
async fn rex_authorize_url_has_s256_challenge_and_exchange_sends_the_verifier() {
    let env = Env::start().await;
    let cfg = env.oauth(Provider::Rex);
    assert!(cfg.pkce, "REX_PKCE defaults to on");
    let (verifier, challenge) = oauth::pkce_pair();
    let state = oauth::new_state();
    let url = oauth::authorize_url(&cfg, &state, Some(&challenge));
    let q = query(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge"], challenge);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid profile rex.read rex.write");
    assert_eq!(q["state"], state);
    assert_eq!(q["client_id"], "rex-client");

    Mock::given(method("POST"))
        .and(path("/rex/oauth/token"))
        .and(basic_auth("rex-client", "rex-secret"))
        .respond_with(ok_json(
            json!({"access_token": "rex-at", "token_type": "Bearer",
            "expires_in": 3600, "refresh_token": "rex-rt", "scope": "openid profile rex.read"}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let tokens = oauth::exchange_code(&env.http, &cfg, "rex-code", &state, Some(&verifier))
        .await
        .unwrap();
    assert_eq!(tokens.access_token, "rex-at");
    let body = form(&env.requests().await[0]);
    assert_eq!(body["grant_type"], "authorization_code");
    assert_eq!(body["code"], "rex-code");
    assert_eq!(body["code_verifier"], verifier);
    assert_eq!(
        body["redirect_uri"],
        "https://dash.example.com/api/integrations/rex/oauth/callback"
    );
    assert!(!body.contains_key("client_secret"));
}

#[tokio::test]
async fn refresh_sends_the_refresh_grant_and_keeps_an_unrotated_token() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/oauth/token"))
        .and(basic_auth("fub-client", "fub-secret"))
        .respond_with(ok_json(
            json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/oauth/token"))
        .and(basic_auth("rex-client", "rex-secret"))
        .respond_with(ok_json(
            json!({"access_token": "rex-at-2", "token_type": "Bearer",
            "expires_in": 600, "refresh_token": "rex-rt-rotated"}),
        ))
        .mount(&env.server)
        .await;

    let fub_cfg = env.oauth(Provider::FollowUpBoss);
    let t = oauth::refresh(&env.http, &fub_cfg, "rt-old").await.unwrap();
    assert_eq!(t.access_token, "at-2");
    assert_eq!(
        t.refresh_token.as_deref(),
        Some("rt-old"),
        "FUB sent none back: keep ours"
    );

    let rex_cfg = env.oauth(Provider::Rex);
    let t = oauth::refresh(&env.http, &rex_cfg, "rex-rt-old")
        .await
        .unwrap();
    assert_eq!(t.refresh_token.as_deref(), Some("rex-rt-rotated"));

    let reqs = env.requests().await;
    for (req, rt) in reqs.iter().zip(["rt-old", "rex-rt-old"]) {
        assert_eq!(
            form(req),
            HashMap::from([
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), rt.to_owned()),
            ])
        );
    }
}

#[tokio::test]
async fn refused_grant_means_reconnect_and_token_5xx_is_not_retried() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "invalid_grant", "error_description": "code rt-secret-zzz expired"}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/oauth/token"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"))
        .expect(1)
        .mount(&env.server)
        .await;
    let fub_cfg = env.oauth(Provider::FollowUpBoss);
    let err = oauth::refresh(&env.http, &fub_cfg, "rt-secret-zzz")
        .await
        .unwrap_err();
    assert_eq!(err, CrmError::InvalidCredentials);

    let rex_cfg = env.oauth(Provider::Rex);
    let err = oauth::exchange_code(&env.http, &rex_cfg, "c", "s", Some("v"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CrmError::Upstream { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

/// The position of a listing that has read nothing yet.
static START: SyncCursor = SyncCursor {
    since: None,
    boundary_ids: Vec::new(),
};

/// A page of a complete read.
fn whole(page_token: Option<&str>, limit: u32) -> PageRequest<'_> {
    PageRequest {
        listing: Listing::All,
        position: &START,
        page_token,
        limit,
        region: Region::US,
    }
}

/// A page of the changes since `position`.
fn changes<'a>(
    position: &'a SyncCursor,
    page_token: Option<&'a str>,
    limit: u32,
) -> PageRequest<'a> {
    PageRequest {
        listing: Listing::Changes {
            since: position.since,
        },
        position,
        page_token,
        limit,
        region: Region::US,
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn fub_sends_system_headers_and_basic_key_on_every_call() {
    let env = Env::start().await;
    let person = json!({"id": 77, "firstName": "Jane", "phones": [{"value": "(415) 555-0123"}]});
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ok_json(
            json!({"_metadata": {"next": null}, "people": [person]}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 78})))
        .mount(&env.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/fub/v1/people/77"))
        .respond_with(ok_json(json!({"id": 77})))
        .mount(&env.server)
        .await;

    let c = env.fub();
    c.verify_credentials().await.unwrap();
    c.list_page(whole(None, 10)).await.unwrap();
    let (id, existing) = c
        .find_by_phone(&phone(), Region::US)
        .await
        .unwrap()
        .unwrap();
    c.create(&jane()).await.unwrap();
    c.update(&id, &existing, &jane()).await.unwrap();

    let reqs = env.requests().await;
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        assert_eq!(r.headers["x-system"], SYSTEM, "{} {}", r.method, r.url);
        assert_eq!(
            r.headers["x-system-key"], SYSTEM_KEY,
            "{} {}",
            r.method, r.url
        );
        // base64("fub-api-key-123:")
        assert_eq!(r.headers["authorization"], "Basic ZnViLWFwaS1rZXktMTIzOg==");
    }
}

#[tokio::test]
async fn fub_oauth_token_is_sent_as_bearer() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(bearer_token("fub-access"))
        .and(header("x-system", SYSTEM))
        .and(query_param("limit", "1"))
        .respond_with(ok_json(json!({"people": []})))
        .expect(1)
        .mount(&env.server)
        .await;
    let c = env.client(
        Provider::FollowUpBoss,
        CrmAuth::OAuth {
            access_token: "fub-access".into(),
        },
    );
    c.verify_credentials().await.unwrap();
}

#[tokio::test]
async fn lofty_uses_the_token_scheme_and_json_content_type_on_every_call() {
    let env = Env::start().await;
    let existing =
        json!({"leadId": 651095960136641_i64, "firstName": "Old", "phones": ["415.555.0123"]});
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(
            json!({"_metadata": {"scrollId": null}, "leads": [existing]}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/lofty/v1.0/leads"))
        .and(body_json(lofty::create_body(&jane())))
        .respond_with(ok_json(json!({"leadId": 651095960136642_i64})))
        .mount(&env.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/lofty/v1.0/leads/651095960136641"))
        .and(body_json(lofty::update_body(&jane(), &existing)))
        .respond_with(ok_json(json!({})))
        .mount(&env.server)
        .await;

    let c = env.lofty();
    c.verify_credentials().await.unwrap();
    let (id, found) = c
        .find_by_phone(&phone(), Region::US)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "651095960136641", "int64 id kept exactly");
    let created = c.create(&jane()).await.unwrap();
    assert_eq!(created.external_id.as_deref(), Some("651095960136642"));
    assert_eq!(created.action, PushAction::Created);
    let updated = c.update(&id, &found, &jane()).await.unwrap();
    assert_eq!(updated.action, PushAction::Updated);

    let reqs = env.requests().await;
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(r.headers["authorization"], format!("token {LOFTY_KEY}"));
        let types: Vec<_> = r.headers.get_all("content-type").iter().collect();
        assert_eq!(types, ["application/json"], "{} {}", r.method, r.url);
    }
    let find = query(reqs[1].url.as_str());
    assert_eq!(find["phone"], "+14155550123");
}

#[tokio::test]
async fn lofty_update_with_nothing_new_makes_no_call() {
    let env = Env::start().await;
    let c = env.lofty();
    let existing = json!({"leadId": 5, "firstName": "Jane", "lastName": "Doe",
        "emails": ["jane@example.com"], "phones": ["+14155550123"], "tags": [{"tagName": "buyer"}]});
    let r = c.update("5", &existing, &jane()).await.unwrap();
    assert_eq!(r.action, PushAction::Unchanged);
    assert_eq!(r.external_id.as_deref(), Some("5"));
    assert!(env.requests().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Pull

#[tokio::test]
async fn rex_search_body_comes_from_the_cursor() {
    let env = Env::start().await;
    let mut cursor = SyncCursor::starting_at("2023-09-08T17:30:02Z".parse().unwrap());
    cursor.boundary_ids = vec!["36685959".into(), "36685960".into()];
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/list"))
        .and(bearer_token(REX_TOKEN))
        .and(header("x-api-option", "use_status_codes=true"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "criteria": [{"name": "system_modtime", "type": ">=", "value": 1694194202}],
            "order_by": {"system_modtime": "asc"},
            "limit": 2,
            "offset": 0
        })))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": "36685961", "name": "A", "phone_number": "4155550101", "system_modtime": "1694194202"},
            {"id": 36685962, "name": "B", "phone_number": "4155550102", "system_modtime": 1694194300}
        ], "total": 9}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    // From the first record of the cursor's second (the stored ones are dropped by the caller: an
    // offset of their count would skip a record if one of them had changed since).
    let page = env
        .rex()
        .list_page(changes(&cursor, Some("ignored"), 2))
        .await
        .unwrap();
    assert_eq!(ids(&page.records), ["36685961", "36685962"]);
    assert!(page.has_more, "a full page means more");
    assert_eq!(page.next_token, None, "the page spans two seconds");

    // A full page all of one second: the rest of that second is read by offset.
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/list"))
        .and(body_json(json!({
            "criteria": [{"name": "system_modtime", "type": ">=", "value": 1694194202}],
            "order_by": {"system_modtime": "asc"},
            "limit": 2,
            "offset": 2
        })))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": "36685963", "name": "C", "phone_number": "4155550103", "system_modtime": "1694194202"},
            {"id": "36685964", "name": "D", "phone_number": "4155550104", "system_modtime": 1694194202}
        ], "total": 9}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    let page = env
        .rex()
        .list_page(changes(&cursor, Some("1694194202:2"), 2))
        .await
        .unwrap();
    assert_eq!(page.next_token.as_deref(), Some("1694194202:4"));

    // No cursor: no criteria at all, offset 0.
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/list"))
        .and(body_json(
            json!({"order_by": {"system_modtime": "asc"}, "limit": 100, "offset": 0}),
        ))
        .respond_with(ok_json(
            json!({"result": {"rows": [], "total": 0}, "error": null}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let page = env.rex().list_page(whole(None, 500)).await.unwrap();
    assert!(page.records.is_empty() && !page.has_more);
}

#[tokio::test]
async fn fub_complete_read_follows_next_and_never_deep_offsets() {
    let env = Env::start().await;
    // The default (reverse id) order, the one keyset paging is documented for; trashed people
    // included; the fields named (crm-apis §4: allFields "may return very large responses").
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(query_param_is_missing("sort"))
        .and(query_param("includeTrash", "true"))
        .and(query_param("limit", "100"))
        .and(query_param(
            "fields",
            "id,created,updated,name,firstName,lastName,stage,emails,phones,background",
        ))
        .and(query_param_is_missing("next"))
        .respond_with(ok_json(
            json!({"_metadata": {"next": "eyJzaW5jZUlkIjoxMDV9", "offset": 0},
            "people": [{"id": 1}, {"id": 2}]}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(query_param("next", "eyJzaW5jZUlkIjoxMDV9"))
        .respond_with(ok_json(
            json!({"_metadata": {"next": null}, "people": [{"id": 3}]}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;

    let c = env.fub();
    let (mut all, mut token) = (Vec::new(), None::<String>);
    loop {
        let page = c.list_page(whole(token.as_deref(), 250)).await.unwrap();
        all.extend(page.records);
        if !page.has_more {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(ids(&all), ["1", "2", "3"]);
    for r in env.requests().await {
        assert!(!query(r.url.as_str()).contains_key("offset"), "{}", r.url);
    }
}

/// A list page's body is only checked by the transport and parsed once by the client: a 2xx that is
/// not JSON is still read again, and escaped strings still read as the text they stand for.
#[tokio::test]
async fn a_list_page_that_is_not_json_is_read_again() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"people": [{"id": "\u0037", "name": "Zo\u00eb \"Z\" Lee",
                "phones": [{"value": "(415)\u0020555-0107"}]}], "_metadata": {"next": null}}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let page = env.fub().list_page(whole(None, 10)).await.unwrap();
    let contact = page.records[0].clone().into_contact().unwrap();
    assert_eq!(contact.external_id.as_deref(), Some("7"));
    assert_eq!(contact.display_name(), "Zoë \"Z\" Lee");
    assert_eq!(contact.phone.as_str(), "+14155550107");
}

#[tokio::test]
async fn fub_changes_are_read_newest_first_until_the_cursor() {
    let env = Env::start().await;
    let since = SyncCursor::starting_at("2026-03-01T00:00:00Z".parse().unwrap());
    // Newest first; FUB gives no `next` for this order, so the next page is read by offset.
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(query_param("sort", "-updated"))
        .and(query_param("includeTrash", "true"))
        .and(query_param_is_missing("offset"))
        .respond_with(ok_json(json!({"_metadata": {"next": null}, "people": [
            {"id": 9, "updated": "2026-03-05T00:00:00Z"},
            {"id": 8, "updated": "2026-03-04T00:00:00Z"}
        ]})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(query_param("sort", "-updated"))
        .and(query_param("offset", "2"))
        .respond_with(ok_json(json!({"_metadata": {"next": null}, "people": [
            {"id": 7, "updated": "2026-03-02T00:00:00Z"},
            {"id": 6, "updated": "2026-02-01T00:00:00Z"}
        ]})))
        .expect(1)
        .mount(&env.server)
        .await;
    let c = env.fub();
    let first = c.list_page(changes(&since, None, 2)).await.unwrap();
    assert_eq!(ids(&first.records), ["9", "8"]);
    assert!(first.has_more);
    assert_eq!(first.next_token.as_deref(), Some("offset:2"));
    let second = c
        .list_page(changes(&since, first.next_token.as_deref(), 2))
        .await
        .unwrap();
    assert_eq!(ids(&second.records), ["7", "6"]);
    assert!(
        !second.has_more,
        "the page that reaches the cursor is the last one needed"
    );

    // Deeper than FUB pages by offset: the caller reads the account in full instead.
    let err = c
        .list_page(changes(&since, Some("offset:2100"), 100))
        .await
        .unwrap_err();
    assert_eq!(err, CrmError::ListingTooDeep);
    assert_eq!(env.requests().await.len(), 2, "no request for it");
}

#[tokio::test]
async fn lofty_pagination_follows_scroll_id_under_either_metadata_key() {
    let env = Env::start().await;
    // No sort: Lofty ignores the undocumented ones (crm-apis §2.6, §4).
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(query_param_is_missing("sort"))
        .and(query_param("limit", "2"))
        .and(query_param_is_missing("scrollId"))
        .respond_with(ok_json(
            json!({"_metadata": {"scrollId": "s1"}, "leads": [{"leadId": 1}, {"leadId": 2}]}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(query_param("scrollId", "s1"))
        .respond_with(ok_json(
            json!({"get_metadata": {"collection": "note", "scrollId": "s2"},
            "leads": [{"leadId": 3}, {"leadId": 4}]}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(query_param("scrollId", "s2"))
        .respond_with(ok_json(
            json!({"_metadata": {"scrollId": null}, "leads": [{"leadId": 5}]}),
        ))
        .mount(&env.server)
        .await;

    let c = env.lofty();
    let (mut all, mut token) = (Vec::new(), None::<String>);
    loop {
        let page = c.list_page(whole(token.as_deref(), 2)).await.unwrap();
        all.extend(page.records);
        if !page.has_more {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(ids(&all), ["1", "2", "3", "4", "5"]);
    assert_eq!(env.requests().await.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Retries and pacing

#[tokio::test]
async fn a_get_that_fails_with_500_then_succeeds_is_retried() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"errorMessage": "oops"})))
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ok_json(json!({"people": [{"id": 9}]})))
        .mount(&env.server)
        .await;
    let page = env.fub().list_page(whole(None, 10)).await.unwrap();
    assert_eq!(ids(&page.records), ["9"]);
    assert_eq!(env.requests().await.len(), 2);
    let waits = env.waits.all();
    assert_eq!(waits.len(), 1);
    assert!(waits[0] <= policy().backoff_ceiling(1), "{waits:?}");
}

#[tokio::test]
async fn truncated_json_on_a_get_is_retried_and_persistent_5xx_gives_up() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(r#"{"leads":[{"leadId":1"#, "application/json"),
        )
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": [{"leadId": 1}]})))
        .mount(&env.server)
        .await;
    let page = env.lofty().list_page(whole(None, 10)).await.unwrap();
    assert_eq!(page.records.len(), 1);

    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ResponseTemplate::new(503))
        .expect(4)
        .mount(&env.server)
        .await;
    let err = env.fub().verify_credentials().await.unwrap_err();
    assert!(
        matches!(err, CrmError::Upstream { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"message": "Too Many Requests"})),
        )
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": []})))
        .mount(&env.server)
        .await;
    env.lofty().verify_credentials().await.unwrap();
    assert_eq!(env.waits.all(), [Duration::from_secs(1)]);
    assert_eq!(env.requests().await.len(), 2);

    // Lofty documents no Retry-After: a 429 is then waited out until its X-RateLimit-Reset.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 5;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(header("authorization", "token second-key"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str()),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&env.server)
        .await;
    env.client(Provider::Lofty, CrmAuth::ApiKey("second-key".into()))
        .verify_credentials()
        .await
        .unwrap();
    let waits = env.waits.all();
    assert_eq!(waits.len(), 2);
    assert!(
        waits[1] > Duration::from_secs(3) && waits[1] <= Duration::from_secs(5),
        "{waits:?}"
    );
}

#[tokio::test]
async fn a_retry_after_http_date_is_waited_out_and_a_past_one_means_now() {
    let env = Env::start().await;
    let in_ten = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", in_ten.as_str()))
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": []})))
        .mount(&env.server)
        .await;
    env.lofty().verify_credentials().await.unwrap();
    let waits = env.waits.all();
    // The date has whole seconds: 9 to 10 s from now.
    assert!(
        waits.len() == 1
            && waits[0] > Duration::from_secs(8)
            && waits[0] <= Duration::from_secs(10),
        "{waits:?}"
    );
    assert_eq!(env.requests().await.len(), 2);

    // A date already past: retry at once, no wait.
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(header("authorization", "token second-key"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", past.as_str()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&env.server)
        .await;
    env.client(Provider::Lofty, CrmAuth::ApiKey("second-key".into()))
        .verify_credentials()
        .await
        .unwrap();
    assert_eq!(env.waits.all().len(), 1, "{:?}", env.waits.all());
    assert_eq!(env.requests().await.len(), 4);

    // A date further than we wait: rate limited at once, the wait capped at 15 minutes.
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2 * 3600));
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", later.as_str()))
        .expect(1)
        .mount(&env.server)
        .await;
    let err = env.fub().create(&jane()).await.unwrap_err();
    assert!(
        matches!(err, CrmError::RateLimited { retry_after } if retry_after == Duration::from_secs(900)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_we_wait_is_rate_limited_at_once() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&env.server)
        .await;
    let c = env.fub();
    let err = c.create(&jane()).await.unwrap_err();
    assert_eq!(
        err,
        CrmError::RateLimited {
            retry_after: Duration::from_secs(120)
        }
    );
    // FUB: wait Retry-After before *any* request: the next call does not go out either.
    let err = c.verify_credentials().await.unwrap_err();
    assert!(
        matches!(err, CrmError::RateLimited { retry_after } if retry_after > Duration::from_secs(100))
    );
    assert_eq!(env.requests().await.len(), 1);
    assert!(env.waits.all().is_empty());
}

#[tokio::test]
async fn a_create_is_not_retried_on_500_but_is_on_429() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&env.server)
        .await;
    let err = env.fub().create(&jane()).await.unwrap_err();
    assert!(
        matches!(err, CrmError::Upstream { status: 500, .. }),
        "{err:?}"
    );

    Mock::given(method("POST"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leadId": 12})))
        .expect(1)
        .mount(&env.server)
        .await;
    let r = env.lofty().create(&jane()).await.unwrap();
    assert_eq!(r.external_id.as_deref(), Some("12"));
}

#[tokio::test]
async fn timeouts_retry_reads_but_never_writes() {
    let http = CrmHttp::with_timeouts(Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_millis(300),
    })
    .unwrap();
    let env = Env::with_http(http).await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"people": []}))
        .set_delay(Duration::from_secs(2));
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(slow.clone())
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ok_json(json!({"people": []})))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(slow)
        .expect(1)
        .mount(&env.server)
        .await;
    env.fub().verify_credentials().await.unwrap();
    let err = env.fub().create(&jane()).await.unwrap_err();
    // The write went out: it may have been processed, and is not sent again here.
    assert!(matches!(err, CrmError::Unanswered(_)), "{err:?}");
    assert!(err.may_have_been_processed());
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn every_request_ends_before_the_callers_deadline() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"people": []}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&env.server)
        .await;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_millis(1_500);
    let err = crmsync_crm::with_deadline(deadline, env.fub().verify_credentials())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, CrmError::Transport(_) | CrmError::OutOfTime),
        "{err:?}"
    );
    // With no time left, nothing is sent at all.
    let past = std::time::Instant::now();
    let err = crmsync_crm::with_deadline(past, env.fub().create(&jane()))
        .await
        .unwrap_err();
    assert_eq!(err, CrmError::OutOfTime);
    assert!(!err.may_have_been_processed());
}

#[tokio::test]
async fn pacing_waits_out_an_exhausted_window_before_the_next_call() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(
            ok_json(json!({"people": []}))
                .insert_header("x-ratelimit-limit", "125")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-window", "10")
                .insert_header("x-ratelimit-context", "global"),
        )
        .mount(&env.server)
        .await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 20;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(
            ok_json(json!({"leads": []}))
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str()),
        )
        .mount(&env.server)
        .await;

    let fub = env.fub();
    fub.verify_credentials().await.unwrap();
    assert!(env.waits.all().is_empty(), "the first call does not wait");
    // A client built afresh for the same account shares the pacing state.
    env.fub().verify_credentials().await.unwrap();
    let waits = env.waits.all();
    assert_eq!(waits.len(), 1);
    assert!(
        waits[0] > Duration::from_millis(9_500) && waits[0] <= Duration::from_secs(10),
        "{waits:?}"
    );
    // Another account is not held back.
    env.client(Provider::FollowUpBoss, CrmAuth::ApiKey("other-key".into()))
        .verify_credentials()
        .await
        .unwrap();
    assert_eq!(env.waits.all().len(), 1);

    let lofty = env.lofty();
    lofty.verify_credentials().await.unwrap();
    lofty.verify_credentials().await.unwrap();
    let waits = env.waits.all();
    assert_eq!(waits.len(), 2);
    assert!(
        waits[1] > Duration::from_secs(18) && waits[1] <= Duration::from_secs(20),
        "{waits:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test]
async fn rex_http_200_with_error_set_is_an_error() {
    let env = Env::start().await;
    let echo = |kind: &str, code: u16| {
        json!({"result": null, "error": {"message": "bad", "type": kind, "code": code,
            "extra": {"request_data": {"method": "contacts::list", "token": REX_TOKEN}}}})
    };
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/list"))
        .respond_with(ok_json(echo("ValidationError", 400)))
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/list"))
        .respond_with(ok_json(echo("AuthenticationError", 401)))
        .mount(&env.server)
        .await;
    let err = env.rex().list_page(whole(None, 10)).await.unwrap_err();
    assert_eq!(
        err,
        CrmError::Upstream {
            status: 400,
            message: "REX answered with an error (ValidationError)".into()
        }
    );
    assert!(!format!("{err} {err:?}").contains(REX_TOKEN));
    let err = env.rex().verify_credentials().await.unwrap_err();
    assert_eq!(err, CrmError::InvalidCredentials);
}

#[tokio::test]
async fn refused_credentials_are_reported_as_such() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"code": 200058, "message": "User in token does not exist."})),
        )
        .expect(1)
        .mount(&env.server)
        .await;
    assert_eq!(
        env.fub().verify_credentials().await.unwrap_err(),
        CrmError::InvalidCredentials
    );
    let err = env.lofty().verify_credentials().await.unwrap_err();
    assert_eq!(err, CrmError::InvalidCredentials);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_error_body_echoing_a_token_never_reaches_the_error() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/create"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"result": null,
            "error": {"message": format!("session {REX_TOKEN} broke"), "type": "InternalServerError",
                      "code": 500, "extra": {"request_data": {"token": REX_TOKEN}}}})))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(
            ResponseTemplate::new(400).set_body_string(format!("\"bad key {LOFTY_KEY}\"")),
        )
        .mount(&env.server)
        .await;
    let err = env.rex().create(&jane()).await.unwrap_err();
    assert!(
        matches!(err, CrmError::Upstream { status: 500, .. }),
        "{err:?}"
    );
    let shown = format!("{err} | {err:?}");
    assert!(
        !shown.contains(REX_TOKEN) && !shown.contains("broke"),
        "{shown}"
    );
    assert!(shown.contains("InternalServerError"), "{shown}");

    let err = env.lofty().create(&jane()).await.unwrap_err();
    let shown = format!("{err} | {err:?}");
    assert!(!shown.contains(LOFTY_KEY), "{shown}");
    assert_eq!(err.to_string(), "Lofty answered with an error (HTTP 400)");
}

// ---------------------------------------------------------------------------------------------
// Push

#[tokio::test]
async fn fub_create_posts_the_event_and_reports_what_fub_did() {
    let env = Env::start().await;
    let event = fub::event_body(&jane(), SYSTEM);
    for (status, body) in [(201, json!({"id": 101})), (200, json!({"id": "102"}))] {
        Mock::given(method("POST"))
            .and(path("/fub/v1/events"))
            .and(body_json(&event))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .up_to_n_times(1)
            .mount(&env.server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/fub/v1/events"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&env.server)
        .await;
    let c = env.fub();
    let got: Vec<_> = [
        c.create(&jane()).await,
        c.create(&jane()).await,
        c.create(&jane()).await,
    ]
    .into_iter()
    .map(|r| {
        let r = r.unwrap();
        (r.external_id, r.action)
    })
    .collect();
    assert_eq!(
        got,
        [
            (Some("101".to_owned()), PushAction::Created),
            (Some("102".to_owned()), PushAction::Updated),
            (None, PushAction::Ignored),
        ]
    );
}

#[tokio::test]
async fn fub_find_confirms_the_phone_and_update_merges_tags() {
    let env = Env::start().await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .and(query_param("phone", "+14155550123"))
        .respond_with(ok_json(json!({"people": [
            {"id": 1, "phones": [{"value": "415-555-0199"}]},
            {"id": 2, "name": "Jane Doe", "phones": [{"value": "(415) 555-0123", "type": "mobile"}]}
        ]})))
        .expect(1)
        .mount(&env.server)
        .await;
    let c = env.fub();
    let (id, existing) = c
        .find_by_phone(&phone(), Region::US)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "2");

    Mock::given(method("PUT"))
        .and(path("/fub/v1/people/2"))
        .and(query_param("mergeTags", "true"))
        .and(body_json(fub::update_body(&jane(), &existing)))
        .respond_with(ok_json(json!({"id": 2})))
        .expect(1)
        .mount(&env.server)
        .await;
    let r = c.update(&id, &existing, &jane()).await.unwrap();
    assert_eq!(r.action, PushAction::Updated);
    assert_eq!(r.external_id.as_deref(), Some("2"));

    // An id from a CRM cannot change the path.
    Mock::given(method("PUT"))
        .and(path("/fub/v1/people/..%2Fevents"))
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&env.server)
        .await;
    c.update("../events", &existing, &jane()).await.unwrap();
}

#[tokio::test]
async fn rex_find_searches_by_phone_and_reads_the_full_record() {
    let env = Env::start().await;
    let full = json!({"id": 36685959, "related": {
        "contact_names": [{"id": 40184941, "name_first": "Jane", "name_last": "Doe"}],
        "contact_phones": [{"id": 5, "phone_number": "0415 555 0123"}, {"id": 6, "phone_number": "+1 (415) 555-0123"}],
        "contact_emails": []}});
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/search"))
        .and(body_json(json!({
            // An American number in an Australian account: its international forms only.
            "criteria": [{"name": "contact.phone_number", "type": "in",
                          "value": ["+14155550123", "+1 415-555-0123", "14155550123"]}],
            "limit": 10, "offset": 0
        })))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": "1", "phone_number": "0400 000 000"},
            {"id": "36685959", "phone_number": null}
        ], "total": 2}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/read"))
        .and(body_json(json!({"id": "36685959"})))
        .respond_with(ok_json(json!({"result": full, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    let c = env.rex();
    let (id, existing) = c
        .find_by_phone(&phone(), Region::AU)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "36685959");
    assert_eq!(existing, full);

    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/update"))
        .and(body_json(rex::update_body(&id, &jane(), &existing)))
        .respond_with(ok_json(json!({"result": {"id": 36685959}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/create"))
        .and(body_json(rex::create_body(&jane())))
        .respond_with(ok_json(
            json!({"result": {"id": "36685999"}, "error": null}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    assert_eq!(
        c.update(&id, &existing, &jane()).await.unwrap().action,
        PushAction::Updated
    );
    let created = c.create(&jane()).await.unwrap();
    assert_eq!(
        (created.external_id.as_deref(), created.action),
        (Some("36685999"), PushAction::Created)
    );
}

// ---------------------------------------------------------------------------------------------
// Finding a person by phone, in the forms people type (crm-apis §4)

/// The `phone` values of the requests to `path`, in order.
async fn phone_queries(env: &Env, path: &str) -> Vec<String> {
    env.requests()
        .await
        .iter()
        .filter(|r| r.url.path() == path)
        .filter_map(|r| query(r.url.as_str()).remove("phone"))
        .collect()
}

#[tokio::test]
async fn rex_find_asks_for_every_typed_form_in_one_search() {
    let env = Env::start().await;
    let mobile = PhoneNumber::from_e164("+61412345678").unwrap();
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/search"))
        .and(body_json(json!({
            "criteria": [{"name": "contact.phone_number", "type": "in", "value": [
                "+61412345678", "0412 345 678", "0412345678", "+61 412 345 678", "61412345678"
            ]}],
            "limit": 10, "offset": 0
        })))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": "11", "phone_number": "0400 000 000"},
            {"id": "12", "phone_number": "0412 345 678"}
        ], "total": 2}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    let full = json!({"id": 12, "related": {
        "contact_names": [{"id": 1, "name_first": "Kylie", "name_last": "Tran"}],
        "contact_phones": [{"id": 2, "phone_number": "0412 345 678"}]}});
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/read"))
        .and(body_json(json!({"id": "12"})))
        .respond_with(ok_json(json!({"result": full, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    let (id, existing) = env
        .rex()
        .find_by_phone(&mobile, Region::AU)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        id, "12",
        "the row showing the number is read first, and only it"
    );
    assert_eq!(existing, full);
}

/// A search row shows one phone (crm-apis §3.5); the search may have matched another of the
/// contact's phones, so a row showing a different number is still confirmed on its full record.
#[tokio::test]
async fn rex_find_confirms_a_row_showing_another_phone_on_its_full_record() {
    let env = Env::start().await;
    let mobile = PhoneNumber::from_e164("+61412345678").unwrap();
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/search"))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": 21, "phone_number": "(02) 9876 5432"}
        ], "total": 1}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/read"))
        .respond_with(ok_json(
            json!({"result": {"id": 21, "related": {"contact_phones": [
            {"id": 1, "phone_number": "(02) 9876 5432"}, {"id": 2, "phone_number": "0412345678"}
        ]}}, "error": null}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let (id, _) = env
        .rex()
        .find_by_phone(&mobile, Region::AU)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "21");
}

#[tokio::test]
async fn lofty_find_tries_the_forms_in_order_and_stops_at_the_first_hit() {
    let env = Env::start().await;
    let number = PhoneNumber::from_e164("+14155550142").unwrap();
    let lead = json!({"leadId": 651095960136641_i64, "firstName": "Ana",
                      "phones": ["(415) 555-0142"]});
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(query_param("phone", "+14155550142"))
        .respond_with(ok_json(
            json!({"_metadata": {"scrollId": null}, "leads": []}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .and(query_param("phone", "(415) 555-0142"))
        .respond_with(ok_json(
            json!({"_metadata": {"scrollId": null}, "leads": [lead]}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    // Any later form would find it too: it must not be asked for.
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": [lead]})))
        .with_priority(10)
        .expect(0)
        .mount(&env.server)
        .await;
    let (id, found) = env
        .lofty()
        .find_by_phone(&number, Region::US)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "651095960136641");
    assert_eq!(found, lead);
    assert_eq!(
        phone_queries(&env, "/lofty/v1.0/leads").await,
        ["+14155550142", "(415) 555-0142"]
    );
}

/// Whatever a CRM's search returns, a record is returned only if one of its own phones, read in
/// the account's region, is the number.
#[tokio::test]
async fn a_search_hit_whose_record_phones_do_not_match_is_not_returned() {
    let env = Env::start().await;
    let number = PhoneNumber::from_e164("+14155550142").unwrap();
    let all_forms = [
        "+14155550142",
        "(415) 555-0142",
        "4155550142",
        "415-555-0142",
        "+1 415-555-0142",
        "14155550142",
    ];
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(
            json!({"leads": [{"leadId": 1, "phones": ["(415) 555-0199"]}]}),
        ))
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fub/v1/people"))
        .respond_with(ok_json(
            json!({"people": [{"id": 2, "phones": [{"value": "415-555-0199"}]}]}),
        ))
        .mount(&env.server)
        .await;
    // In an Australian account, `(415) 555-0142` is not an American number (crm-apis §4).
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/search"))
        .respond_with(ok_json(json!({"result": {"rows": [
            {"id": "3", "phone_number": "(415) 555-0142"}
        ], "total": 1}, "error": null})))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/read"))
        .respond_with(ok_json(
            json!({"result": {"id": 3, "related": {"contact_phones": [
            {"id": 1, "phone_number": "(415) 555-0142"}
        ]}}, "error": null}),
        ))
        .mount(&env.server)
        .await;

    let lofty = env.lofty().find_by_phone(&number, Region::US).await;
    assert_eq!(lofty.unwrap(), None);
    assert_eq!(phone_queries(&env, "/lofty/v1.0/leads").await, all_forms);
    let fub = env.fub().find_by_phone(&number, Region::US).await;
    assert_eq!(fub.unwrap(), None);
    assert_eq!(phone_queries(&env, "/fub/v1/people").await, all_forms);
    let rex = env.rex().find_by_phone(&number, Region::AU).await;
    assert_eq!(rex.unwrap(), None);
}

/// A push paces a lookup call by call: Lofty takes a turn per form it asks for, REX one for its
/// one search, and a turn refused (past the push's deadline) stops the lookup before that call.
#[tokio::test]
async fn a_paced_lookup_takes_one_turn_per_search_call() {
    let env = Env::start().await;
    let number = PhoneNumber::from_e164("+14155550142").unwrap();
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": []})))
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/contacts/search"))
        .respond_with(ok_json(
            json!({"result": {"rows": [], "total": 0}, "error": null}),
        ))
        .mount(&env.server)
        .await;
    let forms = number.typed_forms(Region::US).len();

    let turns = Arc::new(Mutex::new(0usize));
    let mut pace = || {
        *turns.lock().unwrap() += 1;
        async { Ok(()) }
    };
    let lofty = env.lofty();
    let found = lofty
        .find_by_phone_paced(&number, Region::US, &mut pace)
        .await;
    assert_eq!(found, Ok(Ok(None)));
    assert_eq!(*turns.lock().unwrap(), forms);
    assert_eq!(phone_queries(&env, "/lofty/v1.0/leads").await.len(), forms);

    *turns.lock().unwrap() = 0;
    let rex = env.rex();
    let found = rex
        .find_by_phone_paced(&number, Region::AU, &mut pace)
        .await;
    assert_eq!(found, Ok(Ok(None)));
    assert_eq!(*turns.lock().unwrap(), 1, "one `in` search");

    // The third turn is refused: two calls were made, and no more.
    env.server.reset().await;
    Mock::given(method("GET"))
        .and(path("/lofty/v1.0/leads"))
        .respond_with(ok_json(json!({"leads": []})))
        .mount(&env.server)
        .await;
    let taken = Arc::new(Mutex::new(0usize));
    let mut pace = || {
        let n = {
            let mut t = taken.lock().unwrap();
            *t += 1;
            *t
        };
        async move {
            if n <= 2 {
                Ok(())
            } else {
                Err(Duration::from_secs(30))
            }
        }
    };
    let found = lofty
        .find_by_phone_paced(&number, Region::US, &mut pace)
        .await;
    assert_eq!(found, Err(Duration::from_secs(30)));
    assert_eq!(
        phone_queries(&env, "/lofty/v1.0/leads").await,
        ["+14155550142", "(415) 555-0142"]
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook subscriptions (crm-apis §1.6, §2.5, §3.6)

const CALLBACK: &str = "https://api.example.com/api/webhooks/crm/followupboss/tok3n";

#[tokio::test]
async fn fub_subscribes_one_webhook_per_person_event_and_removes_them() {
    let env = Env::start().await;
    let next = Arc::new(Mutex::new(100u64));
    let n = next.clone();
    Mock::given(method("POST"))
        .and(path("/fub/v1/webhooks"))
        .and(basic_auth(FUB_KEY, ""))
        .and(header("x-system", SYSTEM))
        .and(header("x-system-key", SYSTEM_KEY))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let mut id = n.lock().unwrap();
            *id += 1;
            ResponseTemplate::new(201).set_body_json(
                json!({"id": *id, "event": body["event"], "url": body["url"], "status": "Active"}),
            )
        })
        .mount(&env.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/fub/v1/webhooks/102"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"errorMessage": "Not found"})),
        )
        .mount(&env.server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ok_json(json!({})))
        .mount(&env.server)
        .await;

    let sub = env
        .fub()
        .subscribe(CALLBACK)
        .await
        .unwrap()
        .expect("subscribed");
    assert_eq!(sub.ids, ["101", "102", "103", "104"]);
    let made: Vec<Value> = env
        .requests()
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let events: Vec<&str> = made.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "peopleCreated",
            "peopleUpdated",
            "peopleStageUpdated",
            "peopleDeleted"
        ]
    );
    assert!(made.iter().all(|b| b["url"] == CALLBACK));

    // One already gone at the CRM is not an error.
    env.fub().unsubscribe(&sub).await.unwrap();
    let deleted: Vec<String> = env
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        deleted,
        [
            "/fub/v1/webhooks/101",
            "/fub/v1/webhooks/102",
            "/fub/v1/webhooks/103",
            "/fub/v1/webhooks/104"
        ]
    );
}

#[tokio::test]
async fn fub_refusing_one_event_leaves_nothing_subscribed_and_the_account_polled() {
    let env = Env::start().await;
    let next = Arc::new(Mutex::new(0u64));
    let n = next.clone();
    // Two webhooks made, the third over FUB's per-event cap.
    Mock::given(method("POST"))
        .and(path("/fub/v1/webhooks"))
        .respond_with(move |_: &Request| {
            let mut id = n.lock().unwrap();
            *id += 1;
            if *id <= 2 {
                ResponseTemplate::new(201).set_body_json(json!({"id": *id}))
            } else {
                ResponseTemplate::new(400).set_body_json(
                    json!({"errorMessage": "The maximum number of webhooks for this event has been reached."}),
                )
            }
        })
        .mount(&env.server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ok_json(json!({})))
        .mount(&env.server)
        .await;
    assert_eq!(env.fub().subscribe(CALLBACK).await.unwrap(), None);
    let deleted: Vec<String> = env
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(deleted, ["/fub/v1/webhooks/1", "/fub/v1/webhooks/2"]);

    // A server error is an error (the caller may try again), not a refusal.
    let env = Env::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&env.server)
        .await;
    assert!(env.fub().subscribe(CALLBACK).await.is_err());
}

#[tokio::test]
async fn lofty_subscribes_to_lead_info_and_removes_it() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/lofty/v1.0/webhook"))
        .and(header(
            "authorization",
            format!("token {LOFTY_KEY}").as_str(),
        ))
        .and(body_json(
            json!({"listId": 2, "callbackUrl": CALLBACK, "limit": 100}),
        ))
        .respond_with(ok_json(
            json!({"subscribeId": 1234, "teamId": 13233324, "listId": 2,
            "callbackUrl": CALLBACK, "vendorId": 123, "limit": 100}),
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/lofty/v1.0/webhook/1234"))
        .and(header("content-type", "application/json"))
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&env.server)
        .await;
    let sub = env
        .lofty()
        .subscribe(CALLBACK)
        .await
        .unwrap()
        .expect("subscribed");
    assert_eq!(sub.ids, ["1234"]);
    env.lofty().unsubscribe(&sub).await.unwrap();

    let env = Env::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"code": 403, "message": "no"})),
        )
        .mount(&env.server)
        .await;
    assert_eq!(env.lofty().subscribe(CALLBACK).await.unwrap(), None);
}

#[tokio::test]
async fn rex_creates_one_admin_webhook_for_contact_changes_and_purges_it() {
    let env = Env::start().await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/admin-webhooks/create"))
        .and(bearer_token(REX_TOKEN))
        .and(body_json(
            json!({"data": {"name": "crmsync", "url": CALLBACK, "is_enabled": true,
            "send_format_id": "v1_full_change_detail",
            "events": [{"event_id": "contacts.created"}, {"event_id": "contacts.updated"}]}}),
        ))
        .respond_with(ok_json(json!({"result": {"id": 4100}, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rex/v1/rex/admin-webhooks/purge"))
        .and(body_json(json!({"id": 4100})))
        .respond_with(ok_json(json!({"result": true, "error": null})))
        .expect(1)
        .mount(&env.server)
        .await;
    let sub = env
        .rex()
        .subscribe(CALLBACK)
        .await
        .unwrap()
        .expect("subscribed");
    assert_eq!(sub.ids, ["4100"]);
    env.rex().unsubscribe(&sub).await.unwrap();
}
