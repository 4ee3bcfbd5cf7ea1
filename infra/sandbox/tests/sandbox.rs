//! Black-box tests of the sandbox over HTTP (one test binary on purpose).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use crm_sandbox::{FaultConfig, Provider, RecordState, Sandbox, SandboxConfig, SandboxHandle};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

const FUB_KEY: &str = "sandbox-fub-key";
const LOFTY_KEY: &str = "sandbox-lofty-key";

async fn spawn() -> SandboxHandle {
    spawn_with(SandboxConfig::default()).await
}

async fn spawn_with(cfg: SandboxConfig) -> SandboxHandle {
    match Sandbox::spawn(cfg).await {
        Ok(h) => h,
        Err(e) => panic!("spawn failed: {e}"),
    }
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn fub(c: &Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url)
        .basic_auth(FUB_KEY, Some(""))
        .header("X-System", "crmsync")
        .header("X-System-Key", "sandbox-system-key")
}

fn lofty(c: &Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url)
        .header("Authorization", format!("token {LOFTY_KEY}"))
        .header("Content-Type", "application/json")
}

async fn body(r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn rex_login(c: &Client, sb: &SandboxHandle) -> String {
    let r = c
        .post(sb.url("/rex/v1/rex/Authentication/login"))
        .json(&json!({"email": "agent@example.com", "password": "sandbox-password"}))
        .send()
        .await
        .expect("login");
    let v = body(r).await;
    assert!(v["error"].is_null(), "{v}");
    v["result"].as_str().expect("token").to_string()
}

async fn rex_call(c: &Client, sb: &SandboxHandle, token: &str, path: &str, args: Value) -> Value {
    let r = c
        .post(sb.url(&format!("/rex/v1/rex/{path}")))
        .bearer_auth(token)
        .json(&args)
        .send()
        .await
        .expect("rex call");
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await
}

async fn control_put(c: &Client, sb: &SandboxHandle, path: &str, v: Value) -> Value {
    let r = c.put(sb.url(path)).json(&v).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    body(r).await
}

async fn control_post(c: &Client, sb: &SandboxHandle, path: &str, v: Value) -> Value {
    let r = c.post(sb.url(path)).json(&v).send().await.expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    body(r).await
}

fn no_limits() -> SandboxConfig {
    let mut cfg = SandboxConfig::default();
    cfg.fub.rate_limit_global = 1_000_000;
    cfg.fub.rate_limit_events = 1_000_000;
    cfg.lofty.rate_limit_per_minute = 1_000_000;
    cfg
}

fn location(r: &reqwest::Response) -> url_lite::Url {
    url_lite::Url::parse(header(r, "location").expect("location"))
}

/// A tiny URL query reader (the tests do not depend on the `url` crate).
mod url_lite {
    pub struct Url {
        pub base: String,
        pub params: Vec<(String, String)>,
    }
    impl Url {
        pub fn parse(s: &str) -> Url {
            let (base, q) = s.split_once('?').unwrap_or((s, ""));
            let params = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect();
            Url {
                base: base.to_string(),
                params,
            }
        }
        pub fn get(&self, k: &str) -> Option<&str> {
            self.params
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.as_str())
        }
    }
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

// -------------------------------------------------------------------------------------
// Full pagination

#[tokio::test]
async fn fub_full_pagination_with_next_returns_every_record_once() {
    let sb = spawn_with(no_limits()).await;
    let n = sb.seed(Provider::Fub, 11, 1234);
    assert_eq!(n, 1234);
    let c = client();
    let mut ids = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/people?limit=100", sb.fub_api_base());
        if let Some(n) = &next {
            url.push_str(&format!("&next={n}"));
        }
        let r = fub(&c, reqwest::Method::GET, url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-context"), Some("global"));
        let v = body(r).await;
        let meta = &v["_metadata"];
        assert_eq!(meta["collection"], "people");
        assert_eq!(meta["total"], 1234);
        if pages == 0 {
            assert_eq!(meta["offset"], 0);
        }
        for p in v["people"].as_array().unwrap() {
            ids.push(p["id"].as_u64().unwrap());
            assert!(p["created"].as_str().unwrap().ends_with('Z'));
        }
        pages += 1;
        match meta["next"].as_str() {
            Some(n) => {
                let link = meta["nextLink"].as_str().unwrap();
                assert!(link.contains("&&next="), "{link}");
                next = Some(n.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 13);
    assert_eq!(ids.len(), 1234);
    let set: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(set.len(), 1234, "duplicates across pages");
    // Default order: reverse id.
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    let all: HashSet<u64> = sb.record_ids(Provider::Fub).into_iter().collect();
    assert_eq!(set, all);
    // The first token of the default sort is the documented {"sinceId":N} shape.
    let r = fub(
        &c,
        reqwest::Method::GET,
        format!("{}/people?limit=5", sb.fub_api_base()),
    )
    .send()
    .await
    .unwrap();
    let v = body(r).await;
    let tok = v["_metadata"]["next"].as_str().unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .unwrap();
    let t: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(t, json!({"sinceId": v["people"][4]["id"]}));
}

#[tokio::test]
async fn lofty_full_pagination_with_scroll_id_returns_every_record_once() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Lofty, 12, 1000);
    let c = client();
    let mut ids = Vec::new();
    let mut scroll: Option<String> = None;
    let mut calls = 0;
    // `limit=100` is served as pages of 25 (crm-apis §2.6: "page size hard-capped at 25"),
    // silently: the metadata echoes the limit asked for.
    loop {
        let mut url = format!(
            "{}/v1.0/leads?limit=100&page=3&keyword=zzz",
            sb.lofty_api_base()
        );
        if let Some(s) = &scroll {
            url.push_str(&format!("&scrollId={s}"));
        }
        let r = lofty(&c, reqwest::Method::GET, url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(header(&r, "x-ratelimit-reset").is_some());
        let v = body(r).await;
        calls += 1;
        let leads = v["leads"].as_array().unwrap();
        assert_eq!(v["_metadata"]["total"], 1000);
        assert_eq!(v["_metadata"]["limit"], 100);
        assert!(leads.len() == 25 || leads.is_empty(), "{}", leads.len());
        for l in leads {
            ids.push(l["leadId"].as_u64().unwrap());
            assert!(l["emails"].as_array().unwrap().iter().all(Value::is_string));
            // The documented lead has createTime and assignTime, no updateTime (§2.2, §4).
            assert!(l["createTime"].as_i64().unwrap() > 1_600_000_000_000);
            assert!(l["assignTime"].as_i64().unwrap() > 1_600_000_000_000);
            assert!(l.get("updateTime").is_none(), "{l}");
        }
        match v["_metadata"]["scrollId"].as_str() {
            Some(s) => scroll = Some(s.to_string()),
            None => break,
        }
    }
    // 1000 is a multiple of 25: the 41st call returns the empty tail.
    assert_eq!(calls, 41);
    let set: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 1000);
    assert_eq!(set.len(), 1000);
    assert!(ids.iter().all(|id| *id > 651_095_960_000_000));
}

#[tokio::test]
async fn rex_full_pagination_with_offset_returns_every_record_once() {
    let sb = spawn().await;
    sb.seed(Provider::Rex, 13, 1050);
    let c = client();
    let token = rex_login(&c, &sb).await;
    let mut ids = Vec::new();
    let mut offset = 0;
    let mut last_mod = 0i64;
    loop {
        let v = rex_call(
            &c,
            &sb,
            &token,
            "contacts/list",
            json!({"criteria": [], "order_by": {"system_modtime": "asc"}, "limit": 100, "offset": offset}),
        )
        .await;
        assert!(v["error"].is_null(), "{v}");
        let res = &v["result"];
        assert_eq!(res["total"], 1050);
        assert!(v["correlation"]["request_id"].is_string());
        let rows = res["rows"].as_array().unwrap();
        for r in rows {
            // Flattened rows carry strings.
            assert!(
                r["id"].is_string() && r["system_modtime"].is_string(),
                "{r}"
            );
            let m: i64 = r["system_modtime"].as_str().unwrap().parse().unwrap();
            assert!(m >= last_mod);
            last_mod = m;
            ids.push(r["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        if rows.len() < 100 {
            break;
        }
        offset += 100;
    }
    let set: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 1050);
    assert_eq!(set.len(), 1050);
}

// -------------------------------------------------------------------------------------
// Incremental

#[tokio::test]
async fn rex_incremental_system_modtime_returns_only_newer_records() {
    let sb = spawn().await;
    sb.seed(Provider::Rex, 21, 600);
    let c = client();
    let token = rex_login(&c, &sb).await;
    let all = rex_call(
        &c,
        &sb,
        &token,
        "Contacts/search",
        json!({"order_by": {"system_modtime": "asc"}, "limit": 100, "offset": 400}),
    )
    .await;
    let t: i64 = all["result"]["rows"][0]["system_modtime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Count the expected records from the control API.
    let recs = body(c.get(sb.url("/_sandbox/rex/records")).send().await.unwrap()).await;
    let expected_ge = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["updated_ms"].as_i64().unwrap() / 1000 >= t)
        .count();
    let expected_gt = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["updated_ms"].as_i64().unwrap() / 1000 > t)
        .count();
    for (op, value, expected) in [
        (">=", json!(t), expected_ge),
        (">", json!(t.to_string()), expected_gt),
    ] {
        let v = rex_call(
            &c,
            &sb,
            &token,
            "contacts/search",
            json!({"criteria": [{"name": "system_modtime", "type": op, "value": value}],
                   "order_by": {"system_modtime": "asc"}, "limit": 100}),
        )
        .await;
        assert_eq!(
            v["result"]["total"].as_u64().unwrap() as usize,
            expected,
            "{op}"
        );
        for r in v["result"]["rows"].as_array().unwrap() {
            let m: i64 = r["system_modtime"].as_str().unwrap().parse().unwrap();
            assert!(if op == ">=" { m >= t } else { m > t });
        }
    }
    // Change 5 contacts: a search past the previous maximum sees exactly them.
    let max = rex_call(
        &c,
        &sb,
        &token,
        "contacts/search",
        json!({"order_by": {"system_modtime": "desc"}, "limit": 1}),
    )
    .await["result"]["rows"][0]["system_modtime"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let touched = control_post(
        &c,
        &sb,
        "/_sandbox/rex/touch",
        json!({"count": 5, "seed": 3}),
    )
    .await;
    let touched: BTreeSet<u64> = touched["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(touched.len(), 5);
    let v = rex_call(
        &c,
        &sb,
        &token,
        "contacts/list",
        json!({"criteria": [{"name": "system_modtime", "type": ">", "value": max}], "limit": 100}),
    )
    .await;
    let got: BTreeSet<u64> = v["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, touched);
}

#[tokio::test]
async fn fub_incremental_sort_updated_and_next() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Fub, 22, 300);
    let c = client();
    let touched = control_post(
        &c,
        &sb,
        "/_sandbox/fub/touch",
        json!({"count": 7, "seed": 9}),
    )
    .await;
    let touched: BTreeSet<u64> = touched["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Newest first: the 7 touched come first. `sort=-updated` is not id-ordered, so there is
    // no keyset `next` (pagination reference: "when keyset pagination is possible"): page 2
    // is read by offset.
    let base = sb.fub_api_base();
    let get = |url: String| {
        let c = c.clone();
        async move { body(fub(&c, reqwest::Method::GET, url).send().await.unwrap()).await }
    };
    let p1 = get(format!("{base}/people?sort=-updated&limit=5")).await;
    assert!(p1["_metadata"]["next"].is_null(), "{}", p1["_metadata"]);
    assert!(p1["_metadata"]["nextLink"].is_null());
    assert_eq!(p1["_metadata"]["total"], 300);
    let p2 = get(format!("{base}/people?sort=-updated&limit=5&offset=5")).await;
    assert_eq!(p2["_metadata"]["offset"], 5);
    let mut first7: Vec<u64> = p1["people"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["people"].as_array().unwrap())
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    first7.truncate(7);
    assert_eq!(first7.into_iter().collect::<BTreeSet<_>>(), touched);
    // Ascending by update time across offset pages, with ties broken stably.
    let mut prev = String::new();
    let mut seen = HashSet::new();
    for offset in (0..300).step_by(50) {
        let v = get(format!(
            "{base}/people?limit=50&sort=updated&offset={offset}"
        ))
        .await;
        assert!(v["_metadata"]["next"].is_null());
        for p in v["people"].as_array().unwrap() {
            let u = p["updated"].as_str().unwrap().to_string();
            assert!(u >= prev);
            prev = u;
            assert!(seen.insert(p["id"].as_u64().unwrap()));
        }
    }
    assert_eq!(seen.len(), 300);
    // The kinder reading: keyset `next` for every sort.
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"keyset_for_all_sorts": true}),
    )
    .await;
    let mut prev = String::new();
    let mut seen = HashSet::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(n) => format!("{base}/people?limit=50&next={n}"),
            None => format!("{base}/people?limit=50&sort=updated"),
        };
        let v = get(url).await;
        for p in v["people"].as_array().unwrap() {
            let u = p["updated"].as_str().unwrap().to_string();
            assert!(u >= prev);
            prev = u;
            assert!(seen.insert(p["id"].as_u64().unwrap()));
        }
        match v["_metadata"]["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 300);
    // updatedAfter is ignored by default, honoured behind the switch.
    let since = "2030-01-01T00:00:00Z";
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people?updatedAfter={since}&limit=1"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["total"], 300);
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"updated_after_filter": true}),
    )
    .await;
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people?updatedAfter=2025-12-01T00:00:00Z&limit=100"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let total = v["_metadata"]["total"].as_u64().unwrap();
    assert!(total > 7 && total < 300, "{total}");
    for p in v["people"].as_array().unwrap() {
        assert!(p["updated"].as_str().unwrap() > "2025-12-01T00:00:00Z");
    }
}

#[tokio::test]
async fn lofty_sort_by_update_time_is_ignored_unless_honoured() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Lofty, 23, 200);
    let c = client();
    let touched = control_post(
        &c,
        &sb,
        "/_sandbox/lofty/touch",
        json!({"count": 3, "seed": 4}),
    )
    .await;
    let touched: BTreeSet<u64> = touched["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    let ids = |v: &Value| -> Vec<u64> {
        v["leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["leadId"].as_u64().unwrap())
            .collect()
    };
    let get = |q: &str| {
        let url = format!("{leads}?{q}");
        let c = c.clone();
        async move { body(lofty(&c, reqwest::Method::GET, url).send().await.unwrap()).await }
    };
    // The default order: createTime descending (here: the newest ids first).
    let default = get("limit=3").await;
    let mut newest = sb.record_ids(Provider::Lofty);
    newest.reverse();
    newest.truncate(3);
    assert_eq!(ids(&default), newest);
    // `sort=updateTime` is not a documented value and unknown sorts are ignored silently
    // (crm-apis §2.6, §4); `desc` with an ignored sort changes nothing.
    for q in [
        "sort=updateTime&desc=true&limit=3",
        "sort=updateTime&desc=false&limit=3",
        "sort=UpdateTime&limit=3",
        "sort=nonsense&desc=false&limit=3",
        "desc=false&limit=3",
    ] {
        let v = get(q).await;
        assert_eq!(ids(&v), newest, "{q}");
        assert!(v["leads"][0].get("updateTime").is_none());
    }
    assert_ne!(
        ids(&default).into_iter().collect::<BTreeSet<_>>(),
        touched,
        "the seed's touched leads are not the newest"
    );
    // The kinder reading: sorts honoured and updateTime served.
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"honoured_sorts": ["updateTime"], "emit_update_time": true}),
    )
    .await;
    let v = get("sort=updateTime&desc=true&limit=3").await;
    assert_eq!(ids(&v).into_iter().collect::<BTreeSet<_>>(), touched);
    let v = get("sort=updateTime&desc=false&limit=25").await;
    let times: Vec<i64> = v["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["updateTime"].as_i64().unwrap())
        .collect();
    assert_eq!(times.len(), 25);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

// -------------------------------------------------------------------------------------
// OAuth

#[tokio::test]
async fn fub_oauth_quirks_are_enforced() {
    let sb = spawn().await;
    let c = client();
    let cb = "http://127.0.0.1:3004/api/integrations/followupboss/callback";
    let authz = |rt: &str, state: &str| {
        format!(
            "{}?response_type={rt}&client_id=sandbox-fub-client&redirect_uri={}&state={state}",
            sb.fub_auth_url(),
            cb.replace(':', "%3A").replace('/', "%2F")
        )
    };
    // `response_type=code` is refused.
    let r = c.get(authz("code", "s1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Consent page, then deny: no code.
    let r = c.get(authz("auth_code", "s1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("Approve") && page.contains("Deny"));
    let rid = page
        .split("name=\"request_id\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = c
        .post(sb.url("/fub/oauth/authorize"))
        .form(&[("request_id", rid.as_str()), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = location(&r);
    assert_eq!(loc.base, cb);
    assert_eq!(loc.get("response"), Some("denied"));
    assert_eq!(loc.get("state"), Some("s1"));
    assert!(loc.get("code").is_none());
    // Auto-approve.
    control_put(&c, &sb, "/_sandbox/config", json!({"auto_approve": true})).await;
    let r = c.get(authz("auth_code", "st-42")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = location(&r);
    assert_eq!(loc.get("response"), Some("approved"));
    assert_eq!(loc.get("state"), Some("st-42"));
    let code = loc.get("code").unwrap().to_string();
    let token_url = sb.fub_token_url();
    // Without state: 400 invalid_request.
    let r = c
        .post(&token_url)
        .basic_auth("sandbox-fub-client", Some("sandbox-fub-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", cb),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_request");
    // Client credentials in the body instead of Basic: 401 invalid_client.
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", cb),
            ("state", "st-42"),
            ("client_id", "sandbox-fub-client"),
            ("client_secret", "sandbox-fub-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(r).await["error"], "invalid_client");
    // The right request.
    let exchange = || {
        c.post(&token_url)
            .basic_auth("sandbox-fub-client", Some("sandbox-fub-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", cb),
                ("state", "st-42"),
            ])
    };
    let r = exchange().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok = body(r).await;
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    assert!(tok.get("scope").is_none());
    let access = tok["access_token"].as_str().unwrap().to_string();
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    // Code reuse fails.
    let r = exchange().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    // The reuse revoked the tokens of that code (RFC 6749 §4.1.2).
    let r = c
        .get(format!("{}/people", sb.fub_api_base()))
        .bearer_auth(&access)
        .header("X-System", "crmsync")
        .header("X-System-Key", "sandbox-system-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A fresh code: bearer works; refresh rotates.
    let r = c.get(authz("auth_code", "st-43")).send().await.unwrap();
    let code = location(&r).get("code").unwrap().to_string();
    let r = c
        .post(&token_url)
        .basic_auth("sandbox-fub-client", Some("sandbox-fub-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", cb),
            ("state", "st-43"),
        ])
        .send()
        .await
        .unwrap();
    let tok = body(r).await;
    let access = tok["access_token"].as_str().unwrap().to_string();
    let refresh1 = tok["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh);
    let people = |tok: String| {
        c.get(format!("{}/people", sb.fub_api_base()))
            .bearer_auth(tok)
            .header("X-System", "crmsync")
            .header("X-System-Key", "sandbox-system-key")
            .send()
    };
    assert_eq!(
        people(access.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    assert!(sb.expire_tokens(Some(Provider::Fub)) >= 1);
    assert_eq!(
        people(access.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let do_refresh = |rt: String| {
        c.post(&token_url)
            .basic_auth("sandbox-fub-client", Some("sandbox-fub-secret"))
            .form(&[
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", rt),
            ])
            .send()
    };
    let r = do_refresh(refresh1.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok = body(r).await;
    let refresh2 = tok["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh1, "rotation is the default");
    assert_eq!(
        people(tok["access_token"].as_str().unwrap().to_string())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = do_refresh(refresh1).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    // Refresh without Basic fails.
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh2.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Rotation off: the same refresh token comes back and keeps working.
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"rotate_refresh_tokens": false}),
    )
    .await;
    for _ in 0..2 {
        let r = do_refresh(refresh2.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await["refresh_token"], refresh2.as_str());
    }
    let stats = body(c.get(sb.url("/_sandbox/stats")).send().await.unwrap()).await;
    assert_eq!(stats["providers"]["fub"]["refreshes"], 3);
    assert_eq!(stats["providers"]["fub"]["code_exchanges"], 2);
}

fn pkce_pair() -> (String, String) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-sandbox".to_string();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn rex_oauth_pkce_code_reuse_and_refresh() {
    let sb = spawn().await;
    let c = client();
    let cb = "http://localhost:3004/api/integrations/rex/oauth/callback";
    let (verifier, challenge) = pkce_pair();
    let authz = format!(
        "{}?response_type=code&client_id=sandbox-rex-client&redirect_uri={}&state=xyz&scope=openid%20profile%20rex.read&code_challenge={challenge}&code_challenge_method=S256",
        sb.rex_auth_url(),
        cb.replace(':', "%3A").replace('/', "%2F")
    );
    // An unregistered redirect URI is refused without redirecting.
    let r = c
        .get(authz.replace("localhost", "evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Consent page → approve.
    let page = c.get(&authz).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("rex.read"));
    let rid = page
        .split("name=\"request_id\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = c
        .post(sb.url("/rex/oauth/authorize"))
        .form(&[("request_id", rid.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = location(&r);
    assert_eq!(loc.get("state"), Some("xyz"));
    let code = loc.get("code").unwrap().to_string();
    let token = |verifier: &str| {
        c.post(sb.rex_token_url())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", cb),
                ("client_id", "sandbox-rex-client"),
                ("client_secret", "sandbox-rex-secret"),
                ("code_verifier", verifier),
            ])
            .send()
    };
    // Missing and wrong verifiers fail.
    let r = token("").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = token("wrong-verifier-wrong-verifier-wrong-verifier-0000")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    // The right one works.
    let r = token(&verifier).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok = body(r).await;
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["scope"], "openid profile rex.read");
    let first_access = tok["access_token"].as_str().unwrap().to_string();
    // Code reuse fails, and revokes what the code produced.
    let r = token(&verifier).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    let v = rex_call(
        &c,
        &sb,
        &first_access,
        "contacts/search",
        json!({"limit": 1}),
    )
    .await;
    assert_eq!(v["error"]["code"], 401);
    // Second flow with Basic client auth and auto-approve; redirect_uri must match.
    sb.update_config(|c| c.auto_approve = true);
    let r = c.get(&authz).send().await.unwrap();
    let code2 = location(&r).get("code").unwrap().to_string();
    let exchange = |redirect: &str| {
        c.post(sb.rex_token_url())
            .basic_auth("sandbox-rex-client", Some("sandbox-rex-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code2.as_str()),
                ("redirect_uri", redirect),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
    };
    let r = exchange("http://localhost:3004/other").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = exchange(cb).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // (The reuse of the first code revoked the tokens it had produced.)
    let tok = body(r).await;
    let access = tok["access_token"].as_str().unwrap().to_string();
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    // Wrong client secret: 401.
    let r = c
        .post(sb.rex_token_url())
        .basic_auth("sandbox-rex-client", Some("nope"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The OAuth token calls the API; expired → error (HTTP 200 unless use_status_codes).
    let v = rex_call(&c, &sb, &access, "contacts/search", json!({"limit": 1})).await;
    assert!(v["error"].is_null());
    sb.expire_tokens(Some(Provider::Rex));
    let v = rex_call(&c, &sb, &access, "contacts/search", json!({"limit": 1})).await;
    assert_eq!(v["error"]["code"], 401);
    // Refresh (rotating by default).
    let r = c
        .post(sb.rex_token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", "sandbox-rex-client"),
            ("client_secret", "sandbox-rex-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok = body(r).await;
    assert_ne!(tok["refresh_token"], refresh.as_str());
    let v = rex_call(
        &c,
        &sb,
        tok["access_token"].as_str().unwrap(),
        "contacts/search",
        json!({"limit": 1}),
    )
    .await;
    assert!(v["error"].is_null());
}

// -------------------------------------------------------------------------------------
// REX envelope and errors

#[tokio::test]
async fn rex_errors_use_http_200_unless_status_codes_are_requested() {
    let sb = spawn().await;
    let c = client();
    let r = c
        .post(sb.url("/rex/v1/rex/authentication/login"))
        .json(&json!({"email": "agent@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    assert!(v["result"].is_null());
    assert_eq!(v["error"]["code"], 401);
    let r = c
        .post(sb.url("/rex/v1/rex/Contacts/search"))
        .bearer_auth("not-a-token")
        .header("X-Api-Option", "use_status_codes=true")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v = body(r).await;
    assert_eq!(v["error"]["extra"]["request_data"]["token"], "not-a-token");
    assert_eq!(
        v["error"]["extra"]["request_data"]["use_status_codes"],
        true
    );
    // Case-insensitive service/method; validation errors.
    let token = rex_login(&c, &sb).await;
    assert_eq!(token.len(), 36);
    let v = rex_call(&c, &sb, &token, "CONTACTS/Search", json!({"limit": 1})).await;
    assert!(v["error"].is_null());
    let v = rex_call(&c, &sb, &token, "contacts/search", json!({"limit": 500})).await;
    assert_eq!(v["error"]["type"], "ValidationError");
    let r = c
        .post(sb.url("/rex/v1/rex/contacts/read"))
        .bearer_auth(&token)
        .header("X-Api-Option", "use_status_codes=true")
        .json(&json!({"id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v = rex_call(&c, &sb, &token, "Nope/nothing", json!({})).await;
    assert_eq!(v["error"]["code"], 404);
}

// -------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn fub_rate_limit_headers_and_429() {
    let mut cfg = SandboxConfig::default();
    cfg.fub.rate_limit_global = 5;
    let sb = spawn_with(cfg).await;
    let c = client();
    let url = format!("{}/people?limit=1", sb.fub_api_base());
    for i in 0..5 {
        let r = fub(&c, reqwest::Method::GET, url.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("5"));
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
        assert_eq!(header(&r, "x-ratelimit-window"), Some("10"));
        assert_eq!(header(&r, "x-ratelimit-context"), Some("global"));
    }
    let r = fub(&c, reqwest::Method::GET, url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let ra: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&ra));
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
    assert!(body(r).await["errorMessage"].is_string());
    // The refused request was not processed: nothing was created.
    let r = fub(
        &c,
        reqwest::Method::POST,
        format!("{}/people", sb.fub_api_base()),
    )
    .json(&json!({"firstName": "Nope"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sb.record_count(Provider::Fub), 0);
    // The events context is independent.
    let r = fub(
        &c,
        reqwest::Method::POST,
        format!("{}/events", sb.fub_api_base()),
    )
    .json(
        &json!({"source": "Site", "system": "crmsync", "type": "Registration",
                      "person": {"firstName": "Ann", "emails": [{"value": "ann@example.com"}]}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "x-ratelimit-context"), Some("events"));
    // 401 carries no rate-limit headers; neither do missing system headers.
    let r = c
        .get(&url)
        .basic_auth("bad-key", Some(""))
        .header("X-System", "crmsync")
        .header("X-System-Key", "sandbox-system-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "x-ratelimit-limit").is_none());
    let r = c
        .get(&url)
        .basic_auth(FUB_KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        body(r).await["errorMessage"]
            .as_str()
            .unwrap()
            .contains("X-System")
    );
    let stats = sb.stats();
    assert_eq!(stats["providers"]["fub"]["served_429"], 2);
}

#[tokio::test]
async fn lofty_auth_schemes_limits_and_switches() {
    let mut cfg = SandboxConfig::default();
    cfg.lofty.rate_limit_per_minute = 6;
    let sb = spawn_with(cfg).await;
    sb.seed(Provider::Lofty, 5, 60);
    let c = client();
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    // Bearer with the API key: 400 / 200058.
    let r = c.get(&leads).bearer_auth(LOFTY_KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(r).await,
        json!({"code": 200058, "message": "User in token does not exist."})
    );
    let r = c
        .get(&leads)
        .header("Authorization", "token nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(r).await["code"], "BAD_CREDENTIALS");
    // limit bounds: by default a limit over 25 is served as 25 without a word (crm-apis
    // §2.6); with `cap_silently: false` it is refused.
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}?limit=101"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["leads"].as_array().unwrap().len(), 25);
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"cap_silently": false, "metadata_key": "get_metadata"}),
    )
    .await;
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}?limit=30"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}?limit=25"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    assert_eq!(v["get_metadata"]["limit"], 25);
    assert!(v.get("_metadata").is_none());
    // DELETE without Content-Type fails.
    let id = sb.record_ids(Provider::Lofty)[0];
    let r = c
        .delete(format!("{leads}/{id}?reason=dup"))
        .header("Authorization", format!("token {LOFTY_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Counted so far: limit=101, limit=30, limit=25, the refused DELETE (the 400/401s of
    // bad credentials are not counted). Two more fit in the window of 6.
    let r = lofty(
        &c,
        reqwest::Method::DELETE,
        format!("{leads}/{id}?reason=dup"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("1"));
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset: i64 = header(&r, "x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset > 1_700_000_000);
    assert!(header(&r, "retry-after").is_none());
    assert_eq!(body(r).await, json!({"message": "Too Many Requests"}));
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"retry_after_on_429": true}),
    )
    .await;
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&r, "retry-after").is_some());
    // After a reset of the windows: the deleted lead is gone.
    control_post(&c, &sb, "/_sandbox/lofty/rate-limits/reset", json!({})).await;
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(r).await["code"], "LEAD_NOT_EXIST");
    assert_eq!(sb.record_count(Provider::Lofty), 59);
}

// -------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn faults_appear_at_the_configured_rates() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Fub, 1, 10);
    let c = client();
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/faults",
        json!({"error_rate": 0.3, "rate_429": 0.1, "retry_after_secs": 2, "seed": 77}),
    )
    .await;
    let url = format!("{}/people?limit=1", sb.fub_api_base());
    let (mut e5, mut e429, mut ok) = (0, 0, 0);
    for _ in 0..1000 {
        let r = fub(&c, reqwest::Method::GET, url.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            500 | 502 | 503 => e5 += 1,
            429 => {
                assert_eq!(header(&r, "retry-after"), Some("2"));
                e429 += 1
            }
            200 => ok += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!((240..=360).contains(&e5), "5xx: {e5}");
    assert!((60..=140).contains(&e429), "429: {e429}");
    assert_eq!(e5 + e429 + ok, 1000);
    // Control routes are never faulted.
    control_put(&c, &sb, "/_sandbox/fub/faults", json!({"error_rate": 1.0})).await;
    for _ in 0..20 {
        let r = c.get(sb.url("/_sandbox/stats")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Same seed → same sequence.
    let mut seqs = Vec::new();
    for _ in 0..2 {
        control_put(
            &c,
            &sb,
            "/_sandbox/fub/faults",
            json!({"error_rate": 0.5, "seed": 5}),
        )
        .await;
        let mut s = Vec::new();
        for _ in 0..30 {
            s.push(
                fub(&c, reqwest::Method::GET, url.clone())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
                    == 200,
            );
        }
        seqs.push(s);
    }
    assert_eq!(seqs[0], seqs[1]);
    let stats = sb.stats();
    assert!(
        stats["providers"]["fub"]["faults"]["error"]
            .as_u64()
            .unwrap()
            >= 240
    );
}

#[tokio::test]
async fn dropped_connections_truncated_bodies_and_latency() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Lofty, 1, 50);
    let c = client();
    let url = format!("{}/v1.0/leads?limit=20", sb.lofty_api_base());
    control_put(&c, &sb, "/_sandbox/lofty/faults", json!({"drop_rate": 1.0})).await;
    for _ in 0..3 {
        let r = lofty(&c, reqwest::Method::GET, url.clone()).send().await;
        assert!(r.is_err(), "a dropped connection is a client error");
    }
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/faults",
        json!({"truncate_rate": 1.0}),
    )
    .await;
    let r = lofty(&c, reqwest::Method::GET, url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.is_empty());
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "truncated JSON must not parse"
    );
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/faults",
        json!({"latency_ms": 120}),
    )
    .await;
    let t = Instant::now();
    let r = lofty(&c, reqwest::Method::GET, url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(120));
    // The log records the drops with status 0.
    let log = body(
        c.get(sb.url("/_sandbox/requests?provider=lofty"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let faults: Vec<&str> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["fault"].as_str())
        .collect();
    assert_eq!(faults.iter().filter(|f| **f == "drop").count(), 3);
    assert!(faults.contains(&"truncate"));
    // Drop after processing: the write happened although the client saw an error.
    sb.set_faults(
        Provider::Lofty,
        FaultConfig {
            drop_rate: 1.0,
            after_processing: true,
            ..FaultConfig::default()
        },
    )
    .unwrap();
    let before = sb.record_count(Provider::Lofty);
    let r = lofty(
        &c,
        reqwest::Method::POST,
        format!("{}/v1.0/leads", sb.lofty_api_base()),
    )
    .json(&json!({"firstName": "Dropped", "emails": ["dropped@example.com"]}))
    .send()
    .await;
    assert!(r.is_err());
    assert_eq!(sb.record_count(Provider::Lofty), before + 1);
}

// -------------------------------------------------------------------------------------
// Seeding

#[tokio::test]
async fn seeding_is_deterministic_and_realistic() {
    let a = spawn().await;
    let b = spawn().await;
    let c = client();
    for sb in [&a, &b] {
        let v = control_post(
            &c,
            sb,
            "/_sandbox/fub/seed",
            json!({"seed": 99, "count": 20000}),
        )
        .await;
        assert_eq!(v["total"], 20000);
    }
    let ra = body(c.get(a.url("/_sandbox/fub/records")).send().await.unwrap()).await;
    let rb = body(c.get(b.url("/_sandbox/fub/records")).send().await.unwrap()).await;
    assert_eq!(ra, rb);
    control_post(
        &c,
        &b,
        "/_sandbox/fub/seed",
        json!({"seed": 100, "count": 20000}),
    )
    .await;
    let rc = body(c.get(b.url("/_sandbox/fub/records")).send().await.unwrap()).await;
    assert_ne!(ra["records"], rc["records"]);
    // The same seed gives the same people in every CRM (ids differ).
    control_post(
        &c,
        &a,
        "/_sandbox/lofty/seed",
        json!({"seed": 99, "count": 20000}),
    )
    .await;
    let rl = body(
        c.get(a.url("/_sandbox/lofty/records?limit=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for i in 0..5 {
        assert_eq!(rl["records"][i]["name"], ra["records"][i]["name"]);
        assert_ne!(rl["records"][i]["id"], ra["records"][i]["id"]);
    }
    let recs = ra["records"].as_array().unwrap();
    let n = recs.len() as f64;
    let missing = recs
        .iter()
        .filter(|r| r["phones"].as_array().unwrap().is_empty())
        .count() as f64;
    assert!(
        (0.02..0.04).contains(&(missing / n)),
        "missing phones {}",
        missing / n
    );
    let phones: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["phones"][0].as_str())
        .collect();
    let digits = |p: &str| p.chars().filter(char::is_ascii_digit).count();
    let invalid = phones.iter().filter(|p| digits(p) < 7).count() as f64;
    assert!(
        (0.01..0.03).contains(&(invalid / n)),
        "invalid phones {}",
        invalid / n
    );
    let has = |f: &dyn Fn(&str) -> bool| phones.iter().any(|p| f(p));
    assert!(
        has(&|p| p.starts_with("+1") && digits(p) == 11 && !p.contains(' ')),
        "E.164"
    );
    assert!(
        has(&|p| p.starts_with('(') && p.contains(") ")),
        "(415) 555-0100"
    );
    assert!(
        has(&|p| p.contains(" x") || p.contains("ext")),
        "extensions"
    );
    assert!(has(&|p| p.starts_with("+61 ")), "AU international");
    assert!(has(&|p| p.starts_with("07")), "GB national");
    // Duplicate phones (same last 9 digits): a few percent.
    let mut seen = HashSet::new();
    let mut dups = 0;
    for p in &phones {
        let d: String = p
            .split(['x', 'e'])
            .next()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if d.len() >= 9 && !seen.insert(d[d.len() - 9..].to_string()) {
            dups += 1;
        }
    }
    assert!(
        (0.03..0.07).contains(&(dups as f64 / n)),
        "dups {}",
        dups as f64 / n
    );
    // Update times spread over ~12 months, with shared timestamps.
    let ups: Vec<i64> = recs
        .iter()
        .map(|r| r["updated_ms"].as_i64().unwrap())
        .collect();
    let (lo, hi) = (ups.iter().min().unwrap(), ups.iter().max().unwrap());
    let days = (hi - lo) as f64 / 86_400_000.0;
    assert!((330.0..=366.0).contains(&days), "{days}");
    let distinct: HashSet<i64> = ups.iter().copied().collect();
    assert!(
        distinct.len() < ups.len() - 1000,
        "some identical timestamps"
    );
}

// -------------------------------------------------------------------------------------
// Create / update / dedupe

#[tokio::test]
async fn fub_create_update_and_dedupe() {
    let sb = spawn_with(no_limits()).await;
    let c = client();
    let base = sb.fub_api_base();
    let create = |body: Value, dedupe: bool| {
        let q = if dedupe { "?deduplicate=true" } else { "" };
        fub(&c, reqwest::Method::POST, format!("{base}/people{q}"))
            .json(&body)
            .send()
    };
    let r = create(
        json!({"firstName": "Mary", "lastName": "Jones", "emails": [{"value": "mary@example.com", "type": "home"}],
               "phones": [{"value": "(415) 555-0123", "type": "mobile"}], "tags": ["Buyer"], "source": "Zillow"}),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mary = body(r).await;
    let id = mary["id"].as_u64().unwrap();
    assert_eq!(mary["emails"][0]["isPrimary"], 1);
    assert_eq!(mary["name"], "Mary Jones");
    // Dedupe by email (case-insensitive) and by phone in another format: 200, unchanged.
    let r = create(
        json!({"firstName": "X", "emails": [{"value": "MARY@example.com"}]}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    assert_eq!(v["id"], id);
    assert_eq!(v["firstName"], "Mary");
    let r = create(
        json!({"firstName": "Y", "phones": [{"value": "+14155550123"}]}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Without deduplicate: a duplicate person.
    let r = create(
        json!({"firstName": "Mary", "emails": [{"value": "mary@example.com"}]}),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_ne!(body(r).await["id"], id);
    // checkDuplicate.
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people/checkDuplicate?phone=415.555.0123"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["matchedOn"], "phone");
    // PUT: partial; tags replace unless mergeTags=true.
    let put = |q: &str, b: Value| {
        fub(&c, reqwest::Method::PUT, format!("{base}/people/{id}{q}"))
            .json(&b)
            .send()
    };
    let before = mary["updated"].as_str().unwrap().to_string();
    let v = body(
        put("?mergeTags=true", json!({"tags": ["Seller"]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["tags"], json!(["Buyer", "Seller"]));
    assert!(v["updated"].as_str().unwrap() >= before.as_str());
    let v = body(
        put("", json!({"tags": ["VIP"], "lastName": "Smith"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["tags"], json!(["VIP"]));
    assert_eq!(v["lastName"], "Smith");
    assert_eq!(v["firstName"], "Mary");
    let r = fub(&c, reqwest::Method::PUT, format!("{base}/people/999999"))
        .json(&json!({"firstName": "Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Events.
    let event = |person: Value, source: &str| {
        fub(&c, reqwest::Method::POST, format!("{base}/events"))
            .json(
                &json!({"source": source, "system": "crmsync", "type": "General Inquiry",
                          "message": "hi", "person": person}),
            )
            .send()
    };
    let r = event(
        json!({"firstName": "New", "emails": [{"value": "new@example.com"}]}),
        "Web",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let new_id = body(r).await["id"].as_u64().unwrap();
    let r = event(
        json!({"emails": [{"value": "new@example.com"}], "tags": ["Hot"]}),
        "Web",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-sandbox-dedupe"), Some("email"));
    assert_eq!(body(r).await["id"], new_id);
    let r = event(json!({"phones": [{"value": "415-555-0123"}]}), "Web")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-sandbox-dedupe"), Some("phone"));
    let r = event(json!({"id": 424242, "firstName": "Ghost"}), "Web")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"archived_sources": ["OldSite"]}),
    )
    .await;
    let count = sb.record_count(Provider::Fub);
    let r = event(
        json!({"firstName": "Ignored", "emails": [{"value": "i@example.com"}]}),
        "OldSite",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.text().await.unwrap().is_empty());
    assert_eq!(sb.record_count(Provider::Fub), count);
    // Filters on the list.
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people?email=mary@example.com"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["total"], 2);
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people?id={id},{new_id}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["total"], 2);
    // Deep offset refused; limit clamps at 100.
    let r = fub(
        &c,
        reqwest::Method::GET,
        format!("{base}/people?offset=2001"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        body(r).await["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("Deep pagination disabled")
    );
    let v = body(
        fub(&c, reqwest::Method::GET, format!("{base}/people?limit=500"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["limit"], 100);
}

#[tokio::test]
async fn lofty_create_update_visibility_lag_and_tags() {
    let mut cfg = no_limits();
    cfg.lofty.visibility_lag_ms = 300;
    let sb = spawn_with(cfg).await;
    let c = client();
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(
            &json!({"firstName": "Ana", "lastName": "Lopez", "emails": ["ana@example.com"],
                      "phones": ["+61 412 345 678"], "tags": ["Buyer", 7]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = body(r).await["leadId"].as_u64().unwrap();
    assert!(id > 651_095_960_000_000);
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(r).await["code"], "LEAD_NOT_EXIST");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lead = body(r).await;
    assert_eq!(lead["emails"], json!(["ana@example.com"]));
    assert_eq!(lead["tags"][1]["tagName"], "7");
    assert_eq!(lead["tags"][0]["leadId"], id);
    // PUT replaces the tag list and bumps updateTime.
    let r = lofty(&c, reqwest::Method::PUT, format!("{leads}/{id}"))
        .json(&json!({"tags": ["Seller"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 1);
    assert_eq!(v["tags"][0]["tagName"], "Seller");
    // No lead-level update time (crm-apis §2.2, §4); the tags carry their own times.
    assert!(v.get("updateTime").is_none());
    assert!(
        v["tags"][0]["updateTime"].as_i64().unwrap()
            >= lead["tags"][0]["updateTime"].as_i64().unwrap()
    );
    assert_eq!(v["firstName"], "Ana");
    // Names over 30 characters.
    let r = lofty(&c, reqwest::Method::PUT, format!("{leads}/{id}"))
        .json(&json!({"lastName": "x".repeat(31)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["code"], "PARAMETER_TOO_LONG");
    // Duplicate email: the existing lead id (default switch).
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(&json!({"firstName": "Other", "emails": ["ANA@example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["leadId"], id);
    // Filters (the phone as stored, crm-apis §4) and the wrap switch.
    let v = body(
        lofty(
            &c,
            reqwest::Method::GET,
            format!("{leads}?phone=%2B61%20412%20345%20678"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["leads"][0]["leadId"], id);
    let v = body(
        lofty(
            &c,
            reqwest::Method::GET,
            format!("{leads}?phone=0412%20345%20678"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["total"], 0);
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"wrap_single_lead": true}),
    )
    .await;
    let v = body(
        lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["lead"]["leadId"], id);
}

#[tokio::test]
async fn rex_create_read_update() {
    let sb = spawn().await;
    let c = client();
    let token = rex_login(&c, &sb).await;
    let v = rex_call(
        &c,
        &sb,
        &token,
        "Contacts/create",
        json!({"data": {"type": "person", "related": {
            "contact_names": [{"name_first": "Test", "name_last": "Contact"}],
            "contact_emails": [{"email_address": "test@example.com"}],
            "contact_phones": [{"phone_number": "0412 345 678"}]}}}),
    )
    .await;
    let id = v["result"]["id"].as_u64().unwrap();
    let v = rex_call(&c, &sb, &token, "Contacts/read", json!({"id": id})).await;
    let rec = &v["result"];
    assert_eq!(rec["id"], id);
    let modtime = rec["system_modtime"].as_i64().unwrap();
    assert_eq!(rec["etag"], format!("{id}-{modtime}"));
    assert_eq!(rec["related"]["contact_names"][0]["name_first"], "Test");
    assert_eq!(
        rec["related"]["contact_emails"][0]["email_address"],
        "test@example.com"
    );
    // Update: names replace, emails/phones appended when new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v = rex_call(
        &c,
        &sb,
        &token,
        "contacts/update",
        json!({"data": {"_id": id.to_string(), "related": {
            "contact_names": [{"name_first": "Renamed", "name_last": "Person"}],
            "contact_emails": [{"email_address": "TEST@example.com"}, {"email_address": "second@example.com"}],
            "contact_phones": [{"phone_number": "+61412345678"}, {"phone_number": "+1 415 555 0100"}]}}}),
    )
    .await;
    let rec = &v["result"];
    assert_eq!(rec["related"]["contact_names"][0]["name_first"], "Renamed");
    assert_eq!(
        rec["related"]["contact_emails"].as_array().unwrap().len(),
        2
    );
    // REX stores phones as typed (crm-apis §4): +61412345678 is another string than
    // 0412 345 678, so it is added.
    assert_eq!(
        rec["related"]["contact_phones"].as_array().unwrap().len(),
        3
    );
    assert!(rec["system_modtime"].as_i64().unwrap() > modtime);
    // Search by phone (the stored string) and by email.
    let v = rex_call(
        &c,
        &sb,
        &token,
        "contacts/search",
        json!({"criteria": [{"name": "contact.phone_number", "type": "=", "value": "0412 345 678"}]}),
    )
    .await;
    assert_eq!(v["result"]["total"], 1);
    assert_eq!(v["result"]["rows"][0]["name"], "Renamed Person");
    let v = rex_call(
        &c,
        &sb,
        &token,
        "contacts/search",
        json!({"criteria": [{"name": "contact.email_address", "type": "in", "value": ["nobody@x.com", "second@example.com"]}]}),
    )
    .await;
    assert_eq!(v["result"]["total"], 1);
}

// -------------------------------------------------------------------------------------
// Request log

#[tokio::test]
async fn request_log_redacts_credentials() {
    let sb = spawn().await;
    let c = client();
    fub(
        &c,
        reqwest::Method::GET,
        format!("{}/people", sb.fub_api_base()),
    )
    .send()
    .await
    .unwrap();
    let _ = rex_login(&c, &sb).await;
    c.post(sb.rex_token_url())
        .basic_auth("sandbox-rex-client", Some("sandbox-rex-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "secret-refresh-value"),
        ])
        .send()
        .await
        .unwrap();
    lofty(
        &c,
        reqwest::Method::GET,
        format!("{}/v1.0/leads", sb.lofty_api_base()),
    )
    .send()
    .await
    .unwrap();
    let r = c
        .get(sb.url("/_sandbox/requests?limit=10"))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    for secret in [
        FUB_KEY,
        LOFTY_KEY,
        "sandbox-password",
        "sandbox-system-key",
        "sandbox-rex-secret",
        "secret-refresh-value",
        // base64 of "sandbox-fub-key:"
        "c2FuZGJveC1mdWIta2V5Og",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the request log"
        );
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let reqs = v["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0]["headers"]["authorization"], "Basic");
    assert_eq!(reqs[0]["headers"]["x-system"], "crmsync");
    assert_eq!(reqs[1]["body"]["password"], "<redacted>");
    assert_eq!(reqs[1]["body"]["email"], "agent@example.com");
    assert_eq!(reqs[2]["body"]["grant_type"], "refresh_token");
    assert_eq!(reqs[3]["headers"]["authorization"], "token");
    // Filter and clear.
    let v = body(
        c.get(sb.url("/_sandbox/requests?provider=rex"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["count"], 2);
    let r = c.delete(sb.url("/_sandbox/requests")).send().await.unwrap();
    assert_eq!(body(r).await["cleared"], 4);
    let v = body(c.get(sb.url("/_sandbox/requests")).send().await.unwrap()).await;
    assert_eq!(v["count"], 0);
}

#[tokio::test]
async fn control_api_records_config_and_reset() {
    let sb = spawn().await;
    let c = client();
    control_post(
        &c,
        &sb,
        "/_sandbox/rex/seed",
        json!({"seed": 1, "count": 10}),
    )
    .await;
    let id = sb.record_ids(Provider::Rex)[3];
    let before = body(
        c.get(sb.url(&format!("/_sandbox/rex/records/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let after = control_put(
        &c,
        &sb,
        &format!("/_sandbox/rex/records/{id}"),
        json!({"last_name": "Changed", "phones": ["+1 (212) 555-0188"]}),
    )
    .await;
    assert_eq!(after["last_name"], "Changed");
    assert!(after["updated_ms"].as_i64().unwrap() > before["updated_ms"].as_i64().unwrap());
    let created = c
        .post(sb.url("/_sandbox/rex/records"))
        .json(&json!({"first_name": "Direct", "emails": ["direct@example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(sb.record_count(Provider::Rex), 11);
    // Config: unknown keys are refused, good ones merged.
    let r = c
        .put(sb.url("/_sandbox/fub/config"))
        .json(&json!({"no_such_switch": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v = control_put(&c, &sb, "/_sandbox/fub/config", json!({"api_keys": ["k2"]})).await;
    assert_eq!(v["api_keys"], json!(["k2"]));
    assert_eq!(v["system"], "crmsync");
    let r = c
        .get(format!("{}/people", sb.fub_api_base()))
        .basic_auth("k2", Some(""))
        .header("X-System", "crmsync")
        .header("X-System-Key", "sandbox-system-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .put(sb.url("/_sandbox/fub/faults"))
        .json(&json!({"error_rate": 0.8, "drop_rate": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Direct token minting for tests of other crates.
    let t = control_post(&c, &sb, "/_sandbox/rex/tokens", json!({})).await;
    let v = rex_call(
        &c,
        &sb,
        t["access_token"].as_str().unwrap(),
        "contacts/list",
        json!({}),
    )
    .await;
    assert_eq!(v["result"]["total"], 11);
    // Reset.
    control_post(&c, &sb, "/_sandbox/reset", json!({})).await;
    assert_eq!(sb.record_count(Provider::Rex), 0);
    assert_eq!(
        sb.config().fub.api_keys,
        vec!["sandbox-fub-key".to_string()]
    );
    let v = body(c.get(sb.url("/_sandbox")).send().await.unwrap()).await;
    assert_eq!(v["service"], "crm-sandbox");
}

// -------------------------------------------------------------------------------------
// Phone searches (crm-apis §4)

#[tokio::test]
async fn rex_and_lofty_phone_searches_compare_the_stored_string() {
    let sb = spawn_with(no_limits()).await;
    let c = client();
    let token = rex_login(&c, &sb).await;
    let v = rex_call(
        &c,
        &sb,
        &token,
        "Contacts/create",
        json!({"data": {"type": "person", "related": {
            "contact_names": [{"name_first": "Jo", "name_last": "Bloggs"}],
            "contact_phones": [{"phone_number": "0412 345 678"}]}}}),
    )
    .await;
    let id = v["result"]["id"].as_u64().unwrap();
    let search = |crit: Value| {
        let (c, token) = (c.clone(), token.clone());
        let url = sb.url("/rex/v1/rex/contacts/search");
        async move {
            let r = c
                .post(url)
                .bearer_auth(token)
                .json(&json!({"criteria": [crit]}))
                .send()
                .await
                .unwrap();
            body(r).await["result"]["total"].as_u64().unwrap()
        }
    };
    let phone = |op: &str, value: Value| json!({"name": "contact.phone_number", "type": op, "value": value});
    // Another written form of the same number is another string.
    for other in [
        "+61412345678",
        "+61 412 345 678",
        "61412345678",
        "0412345678",
    ] {
        assert_eq!(search(phone("=", json!(other))).await, 0, "{other}");
    }
    assert_eq!(search(phone("=", json!("0412 345 678"))).await, 1);
    assert_eq!(
        search(phone("=", json!("  0412 345 678 "))).await,
        1,
        "trimmed"
    );
    // A client that sends the forms a person types finds it (crmsync's upcoming fix).
    let forms = json!(["+61412345678", "61412345678", "0412345678", "0412 345 678"]);
    assert_eq!(search(phone("in", forms)).await, 1);
    // The kinder reading: the national significant number.
    control_put(
        &c,
        &sb,
        "/_sandbox/rex/config",
        json!({"phone_search": "normalized"}),
    )
    .await;
    assert_eq!(search(phone("=", json!("+61 412 345 678"))).await, 1);
    let v = rex_call(&c, &sb, &token, "Contacts/read", json!({"id": id})).await;
    assert_eq!(
        v["result"]["related"]["contact_phones"][0]["phone_number"],
        "0412 345 678"
    );

    // Lofty: the same by default.
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"visibility_lag_ms": 0}),
    )
    .await;
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(&json!({"firstName": "Ann", "phones": ["(415) 555-0123"]}))
        .send()
        .await
        .unwrap();
    let lead = body(r).await["leadId"].as_u64().unwrap();
    let find = |q: &str| {
        let url = format!("{leads}?phone={q}");
        let c = c.clone();
        async move {
            let v = body(lofty(&c, reqwest::Method::GET, url).send().await.unwrap()).await;
            v["leads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["leadId"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert!(find("4155550123").await.is_empty());
    assert!(find("%2B14155550123").await.is_empty());
    assert_eq!(find("(415)%20555-0123").await, vec![lead]);
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"phone_search": "normalized"}),
    )
    .await;
    assert_eq!(find("%2B14155550123").await, vec![lead]);

    // FUB keeps normalized matching (its rules are unconfirmed).
    let base = sb.fub_api_base();
    let r = fub(&c, reqwest::Method::POST, format!("{base}/people"))
        .json(&json!({"firstName": "Bo", "phones": [{"value": "(415) 555-0199"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = body(
        fub(
            &c,
            reqwest::Method::GET,
            format!("{base}/people?phone=%2B14155550199"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["_metadata"]["total"], 1);
}

// -------------------------------------------------------------------------------------
// Deleted records (FUB Trash, REX archive/trash, Lofty trash)

async fn fub_get(c: &Client, url: String) -> Value {
    let r = fub(c, reqwest::Method::GET, url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await
}

#[tokio::test]
async fn fub_trash_is_hidden_unless_include_trash() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Fub, 31, 30);
    let c = client();
    let base = sb.fub_api_base();
    let ids = sb.record_ids(Provider::Fub);
    let (a, b) = (ids[4], ids[20]);
    let before = fub_get(&c, format!("{base}/people/{a}")).await;
    // Trashed through the control API (the user trashing in FUB's UI).
    let v = control_post(
        &c,
        &sb,
        &format!("/_sandbox/fub/records/{a}/delete"),
        json!({}),
    )
    .await;
    assert_eq!(v["state"], "trashed");
    assert_eq!(v["deleted"], true);
    assert_eq!(v["previous_state"], "active");
    // ... and through the API: Trash is a stage.
    let r = fub(&c, reqwest::Method::PUT, format!("{base}/people/{b}"))
        .json(&json!({"stage": "Trash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["stage"], "Trash");
    assert_eq!(
        sb.record_state(Provider::Fub, b),
        Some(RecordState::Trashed)
    );
    let v = fub_get(&c, format!("{base}/people?limit=100")).await;
    assert_eq!(v["_metadata"]["total"], 28);
    let listed: HashSet<u64> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert!(!listed.contains(&a) && !listed.contains(&b));
    // Filters do not find them either.
    let v = fub_get(&c, format!("{base}/people?id={a},{}", ids[5])).await;
    assert_eq!(v["_metadata"]["total"], 1);
    // includeTrash=true shows them, also across `next` pages.
    let v = fub_get(&c, format!("{base}/people?includeTrash=true&limit=100")).await;
    assert_eq!(v["_metadata"]["total"], 30);
    let mut seen = HashSet::new();
    let mut url = format!("{base}/people?includeTrash=true&limit=7");
    loop {
        let v = fub_get(&c, url).await;
        for p in v["people"].as_array().unwrap() {
            seen.insert(p["id"].as_u64().unwrap());
        }
        match v["_metadata"]["next"].as_str() {
            Some(n) => url = format!("{base}/people?limit=7&next={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    // GET by id still answers, with the Trash stage; trashing did not change `updated`.
    let v = fub_get(&c, format!("{base}/people/{a}")).await;
    assert_eq!(v["stage"], "Trash");
    assert_eq!(v["updated"], before["updated"]);
    // Restore: the previous stage is back.
    let v = control_post(
        &c,
        &sb,
        &format!("/_sandbox/fub/records/{a}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(v["state"], "active");
    let v = fub_get(&c, format!("{base}/people/{a}")).await;
    assert_eq!(v["stage"], before["stage"]);
    assert_eq!(v["updated"], before["updated"]);
    // PUT with another stage restores too.
    let r = fub(&c, reqwest::Method::PUT, format!("{base}/people/{b}"))
        .json(&json!({"stage": "Lead"}))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["stage"], "Lead");
    assert_eq!(
        fub_get(&c, format!("{base}/people")).await["_metadata"]["total"],
        30
    );
    // The kinder reading: trashing bumps `updated`, so a sort=-updated reader sees it first.
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"trash_bumps_updated": true}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    control_post(
        &c,
        &sb,
        &format!("/_sandbox/fub/records/{a}/delete"),
        json!({}),
    )
    .await;
    let v = fub_get(
        &c,
        format!("{base}/people?includeTrash=true&sort=-updated&limit=1"),
    )
    .await;
    assert_eq!(v["people"][0]["id"], a);
    assert!(v["people"][0]["updated"].as_str().unwrap() > before["updated"].as_str().unwrap());
    // Control API errors: FUB has no archive; unknown ids.
    let r = c
        .post(sb.url(&format!("/_sandbox/fub/records/{b}/delete")))
        .json(&json!({"state": "archived"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(sb.url("/_sandbox/fub/records/999999/delete"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The neutral records show every record with its state.
    let recs = body(c.get(sb.url("/_sandbox/fub/records")).send().await.unwrap()).await;
    assert_eq!(recs["total"], 30);
    let trashed: Vec<u64> = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "trashed")
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(trashed, vec![a]);
    assert_eq!(sb.record_count(Provider::Fub), 29);
}

#[tokio::test]
async fn rex_archive_and_trash_follow_search_state() {
    let sb = spawn().await;
    sb.seed(Provider::Rex, 32, 40);
    let c = client();
    let token = rex_login(&c, &sb).await;
    let ids = sb.record_ids(Provider::Rex);
    let (a1, a2, t1) = (ids[3], ids[17], ids[30]);
    let before = rex_call(&c, &sb, &token, "Contacts/read", json!({"id": a1})).await;
    for (id, state) in [(a1, "archived"), (a2, "archived"), (t1, "trashed")] {
        let v = control_post(
            &c,
            &sb,
            &format!("/_sandbox/rex/records/{id}/delete"),
            json!({"state": state}),
        )
        .await;
        assert_eq!(v["state"], state);
    }
    let search = |extra: Value| {
        let (c, token) = (c.clone(), token.clone());
        let url = sb.url("/rex/v1/rex/contacts/search");
        async move {
            let mut args = json!({"limit": 100});
            for (k, v) in extra.as_object().unwrap() {
                args[k] = v.clone();
            }
            let r = c
                .post(url)
                .bearer_auth(token)
                .json(&args)
                .send()
                .await
                .unwrap();
            body(r).await
        }
    };
    let row_ids = |v: &Value| -> BTreeSet<u64> {
        v["result"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let v = search(json!({})).await;
    assert_eq!(v["result"]["total"], 37);
    assert!(row_ids(&v).is_disjoint(&BTreeSet::from([a1, a2, t1])));
    let v = search(json!({"search_state": "active"})).await;
    assert_eq!(v["result"]["total"], 37);
    let v = search(json!({"search_state": "archive"})).await;
    assert_eq!(row_ids(&v), BTreeSet::from([a1, a2]));
    let v = search(json!({"search_state": "trash"})).await;
    assert_eq!(row_ids(&v), BTreeSet::from([t1]));
    let v = search(json!({"search_state": "deleted"})).await;
    assert_eq!(v["error"]["type"], "ValidationError");
    // An id criterion does not reach an archived record in the active state.
    let v =
        search(json!({"criteria": [{"name": "id", "type": "in", "value": [a1, ids[0]]}]})).await;
    assert_eq!(row_ids(&v), BTreeSet::from([ids[0]]));
    // `read` still returns it, with its state; archiving did not change system_modtime, so a
    // system_modtime cursor never sees it.
    let v = rex_call(&c, &sb, &token, "Contacts/read", json!({"id": a1})).await;
    assert_eq!(v["result"]["system_record_state"], "archived");
    assert_eq!(
        v["result"]["system_modtime"],
        before["result"]["system_modtime"]
    );
    let v = rex_call(&c, &sb, &token, "Contacts/read", json!({"id": t1})).await;
    assert_eq!(v["result"]["system_record_state"], "trashed");
    // Restore (recover).
    control_post(
        &c,
        &sb,
        &format!("/_sandbox/rex/records/{a2}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(search(json!({})).await["result"]["total"], 38);
    // The kinder reading: archiving bumps system_modtime.
    control_put(
        &c,
        &sb,
        "/_sandbox/rex/config",
        json!({"archive_bumps_modtime": true}),
    )
    .await;
    let max =
        search(json!({"order_by": {"system_modtime": "desc"}, "limit": 1})).await["result"]["rows"]
            [0]["system_modtime"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap();
    control_post(
        &c,
        &sb,
        &format!("/_sandbox/rex/records/{a2}/delete"),
        json!({"state": "archived"}),
    )
    .await;
    let v = search(json!({"search_state": "archive",
        "criteria": [{"name": "system_modtime", "type": ">", "value": max}]}))
    .await;
    assert_eq!(row_ids(&v), BTreeSet::from([a2]));
    assert_eq!(sb.record_count(Provider::Rex), 37);
}

#[tokio::test]
async fn lofty_delete_moves_to_trash_and_restore_brings_it_back() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Lofty, 33, 60);
    let c = client();
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    let id = sb.record_ids(Provider::Lofty)[59];
    let r = lofty(&c, reqwest::Method::DELETE, format!("{leads}/{id}"))
        .json(&json!({"reason": "duplicate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        sb.record_state(Provider::Lofty, id),
        Some(RecordState::Trashed)
    );
    let get = |url: String| {
        let c = c.clone();
        async move { lofty(&c, reqwest::Method::GET, url).send().await.unwrap() }
    };
    assert_eq!(
        get(format!("{leads}/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let v = body(get(format!("{leads}?limit=25")).await).await;
    assert_eq!(v["_metadata"]["total"], 59);
    assert_ne!(v["leads"][0]["leadId"], id, "it was the newest lead");
    // Writes to a trashed lead fail as for an unknown one; a second DELETE too.
    let r = lofty(&c, reqwest::Method::PUT, format!("{leads}/{id}"))
        .json(&json!({"firstName": "Back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = lofty(
        &c,
        reqwest::Method::DELETE,
        format!("{leads}/{id}?reason=x"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Restore from the control API.
    let v = control_post(
        &c,
        &sb,
        &format!("/_sandbox/lofty/records/{id}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(v["state"], "active");
    assert_eq!(v["previous_state"], "trashed");
    assert_eq!(get(format!("{leads}/{id}")).await.status(), StatusCode::OK);
    let v = body(get(format!("{leads}?limit=1")).await).await;
    assert_eq!(v["leads"][0]["leadId"], id);
    assert_eq!(v["_metadata"]["total"], 60);
    // The handle does the same.
    sb.set_record_state(Provider::Lofty, id, RecordState::Trashed)
        .unwrap();
    assert_eq!(sb.record_count(Provider::Lofty), 59);
    assert!(
        sb.set_record_state(Provider::Lofty, id, RecordState::Archived)
            .is_err()
    );
}

#[tokio::test]
async fn lofty_creates_stay_invisible_for_the_lag() {
    // The default lag (1500 ms); this test uses a longer one, so that a busy machine's slow requests
    // still fall inside it.
    assert_eq!(SandboxConfig::default().lofty.visibility_lag_ms, 1500);
    const LAG: Duration = Duration::from_millis(4000);
    let mut cfg = no_limits();
    cfg.lofty.visibility_lag_ms = LAG.as_millis() as u64;
    let sb = spawn_with(cfg).await;
    sb.seed(Provider::Lofty, 34, 5);
    let c = client();
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    let t0 = Instant::now();
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(
            &json!({"firstName": "Lag", "emails": ["lag@example.com"], "phones": ["0400 000 001"]}),
        )
        .send()
        .await
        .unwrap();
    let id = body(r).await["leadId"].as_u64().unwrap();
    let total = |q: &str| {
        let url = format!("{leads}?{q}");
        let c = c.clone();
        async move {
            body(lofty(&c, reqwest::Method::GET, url).send().await.unwrap()).await["_metadata"]
                ["total"]
                .as_u64()
                .unwrap()
        }
    };
    // Not persisted yet: absent from GET, the list and the phone and email searches.
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(total("limit=25").await, 5);
    assert_eq!(total("phone=0400%20000%20001").await, 0);
    assert_eq!(total("email=lag@example.com").await, 0);
    // A retried create makes a duplicate (crm-apis §4).
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(
            &json!({"firstName": "Lag", "emails": ["lag@example.com"], "phones": ["0400 000 001"]}),
        )
        .send()
        .await
        .unwrap();
    let dup = body(r).await["leadId"].as_u64().unwrap();
    let t_dup = Instant::now();
    assert_ne!(dup, id);
    // Follow-up writes work.
    let r = lofty(&c, reqwest::Method::PUT, format!("{leads}/{id}"))
        .json(&json!({"lastName": "Later"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t0.elapsed() < LAG, "the test was too slow");
    let recs = body(
        c.get(sb.url("/_sandbox/lofty/records"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(recs["records"][5]["state"], "pending");
    // Both creates are persisted once the lag has passed since the later one.
    let wait = (LAG + Duration::from_millis(50)).saturating_sub(t_dup.elapsed());
    tokio::time::sleep(wait).await;
    assert_eq!(total("limit=25").await, 7);
    assert_eq!(total("phone=0400%20000%20001").await, 2);
    assert_eq!(total("email=lag@example.com").await, 2);
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["lastName"], "Later");
    // Lag 0: visible at once, and the duplicate-email rule applies.
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"visibility_lag_ms": 0}),
    )
    .await;
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(&json!({"firstName": "Now", "emails": ["now@example.com"]}))
        .send()
        .await
        .unwrap();
    let now_id = body(r).await["leadId"].as_u64().unwrap();
    let r = lofty(&c, reqwest::Method::GET, format!("{leads}/{now_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(&json!({"firstName": "Again", "emails": ["now@example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["leadId"], now_id);
}

// -------------------------------------------------------------------------------------
// FUB paging (pagination reference, crm-apis §4)

#[tokio::test]
async fn fub_keyset_next_only_for_id_ordered_lists() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Fub, 35, 2300);
    let c = client();
    let base = sb.fub_api_base();
    for sort in ["-id", "id"] {
        let v = fub_get(&c, format!("{base}/people?sort={sort}&limit=100")).await;
        let m = &v["_metadata"];
        assert!(m["next"].is_string(), "{sort}: {m}");
        assert!(m["nextLink"].as_str().unwrap().contains("&&next="));
    }
    let v = fub_get(&c, format!("{base}/people?limit=100")).await;
    assert!(v["_metadata"]["next"].is_string(), "default -id");
    // Newest first by update time: a full page, no keyset, the total, paging by offset.
    for sort in ["-updated", "updated", "created", "-created"] {
        let v = fub_get(&c, format!("{base}/people?sort={sort}&limit=100")).await;
        let m = &v["_metadata"];
        assert_eq!(v["people"].as_array().unwrap().len(), 100);
        assert!(
            m["next"].is_null() && m["nextLink"].is_null(),
            "{sort}: {m}"
        );
        assert_eq!(m["total"], 2300);
    }
    let v = fub_get(&c, format!("{base}/people?sort=-updated&limit=100")).await;
    let times: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["updated"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let v = fub_get(
        &c,
        format!("{base}/people?sort=-updated&limit=100&offset=2000"),
    )
    .await;
    assert_eq!(v["_metadata"]["offset"], 2000);
    // Beyond the deep-pagination limit a non-id sort cannot be read.
    let r = fub(
        &c,
        reqwest::Method::GET,
        format!("{base}/people?sort=-updated&limit=100&offset=2100"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The kinder reading.
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"keyset_for_all_sorts": true}),
    )
    .await;
    let v = fub_get(&c, format!("{base}/people?sort=-updated&limit=100")).await;
    assert!(v["_metadata"]["next"].is_string());
}

/// Lists with hidden records in every position: every page, rank and total must match a
/// listing computed from the neutral records.
#[tokio::test]
async fn lists_skip_hidden_records_with_exact_ranks() {
    let sb = spawn_with(no_limits()).await;
    sb.seed(Provider::Fub, 36, 1500);
    sb.seed(Provider::Rex, 36, 1500);
    let c = client();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut pick = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    for p in [Provider::Fub, Provider::Rex] {
        let ids = sb.record_ids(p);
        // The first and last records too, and runs of neighbours.
        let mut hide: BTreeSet<u64> = BTreeSet::from([ids[0], ids[1], ids[1499]]);
        while hide.len() < 160 {
            let i = pick(1495);
            for j in 0..(1 + pick(3)) {
                hide.insert(ids[i + j]);
            }
        }
        for id in &hide {
            sb.set_record_state(p, *id, RecordState::Trashed).unwrap();
        }
        // Some hidden records change later (their keys move in the update-time order).
        sb.touch(p, &hide.iter().copied().take(10).collect::<Vec<_>>());
        sb.touch(p, &ids[700..705]);
    }
    let expected = |p: &str, by_updated: bool, desc: bool| {
        let c = c.clone();
        let url = sb.url(&format!("/_sandbox/{p}/records"));
        async move {
            let recs = body(c.get(url).send().await.unwrap()).await;
            let mut v: Vec<(i64, u64)> = recs["records"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["state"] == "active")
                .map(|r| {
                    let t = if by_updated {
                        r["updated_ms"].as_i64().unwrap()
                    } else {
                        0
                    };
                    (t, r["id"].as_u64().unwrap())
                })
                .collect();
            v.sort_unstable();
            if desc {
                v.reverse();
            }
            v.into_iter().map(|(_, id)| id).collect::<Vec<u64>>()
        }
    };
    let base = sb.fub_api_base();
    // FUB: keyset in both id directions, offsets in every sort.
    for (sort, by_updated, desc) in [
        ("-id", false, true),
        ("id", false, false),
        ("-updated", true, true),
        ("updated", true, false),
    ] {
        let want = expected("fub", by_updated, desc).await;
        assert_eq!(want.len(), 1340);
        let mut got = Vec::new();
        let mut offset = 0;
        let mut next: Option<String> = None;
        loop {
            let url = match &next {
                Some(n) => format!("{base}/people?limit=97&next={n}"),
                None => format!("{base}/people?sort={sort}&limit=97&offset={offset}"),
            };
            let v = fub_get(&c, url).await;
            let m = &v["_metadata"];
            assert_eq!(m["total"], 1340, "{sort}");
            assert_eq!(m["offset"].as_u64().unwrap() as usize, got.len(), "{sort}");
            let page: Vec<u64> = v["people"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap())
                .collect();
            let n = page.len();
            got.extend(page);
            match m["next"].as_str() {
                Some(t) => next = Some(t.to_string()),
                None if n == 97 && got.len() < 1340 => offset += 97,
                None => break,
            }
        }
        assert_eq!(got, want, "{sort}");
    }
    // REX: offsets with and without a system_modtime range, both directions.
    let token = rex_login(&c, &sb).await;
    let all_up = expected("rex", true, false).await;
    let recs = body(c.get(sb.url("/_sandbox/rex/records")).send().await.unwrap()).await;
    let modtime: std::collections::HashMap<u64, i64> = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["updated_ms"].as_i64().unwrap() / 1000,
            )
        })
        .collect();
    let since = modtime[&all_up[600]];
    for (order, desc, range) in [
        ("asc", false, false),
        ("desc", true, false),
        ("asc", false, true),
        ("desc", true, true),
    ] {
        let mut want = all_up.clone();
        if range {
            want.retain(|id| modtime[id] >= since);
        }
        if desc {
            want.reverse();
        }
        let crit = if range {
            json!([{"name": "system_modtime", "type": ">=", "value": since}])
        } else {
            json!([])
        };
        let mut got = Vec::new();
        loop {
            let v = rex_call(
                &c,
                &sb,
                &token,
                "contacts/search",
                json!({"criteria": crit, "order_by": {"system_modtime": order}, "limit": 100, "offset": got.len()}),
            )
            .await;
            assert_eq!(v["result"]["total"].as_u64().unwrap() as usize, want.len());
            let rows = v["result"]["rows"].as_array().unwrap();
            got.extend(
                rows.iter()
                    .map(|r| r["id"].as_str().unwrap().parse::<u64>().unwrap()),
            );
            if rows.len() < 100 {
                break;
            }
        }
        // The store's order is (system_modtime, id), reversed for desc.
        assert_eq!(got, want, "{order} {range}");
    }
}

// -------------------------------------------------------------------------------------
// Writes that land and lose their answer

#[tokio::test]
async fn every_write_route_can_land_and_lose_its_answer() {
    let mut cfg = no_limits();
    cfg.lofty.visibility_lag_ms = 0;
    let sb = spawn_with(cfg).await;
    let c = client();
    let token = rex_login(&c, &sb).await;
    let drop_after = FaultConfig {
        drop_rate: 1.0,
        after_processing: true,
        ..FaultConfig::default()
    };
    let name_of = |p: &str, id: u64| {
        let c = c.clone();
        let url = sb.url(&format!("/_sandbox/{p}/records/{id}"));
        async move { body(c.get(url).send().await.unwrap()).await["last_name"].clone() }
    };
    // REX create and update.
    sb.set_faults(Provider::Rex, drop_after.clone()).unwrap();
    let r = c
        .post(sb.url("/rex/v1/rex/Contacts/create"))
        .bearer_auth(&token)
        .json(&json!({"data": {"related": {"contact_names": [{"name_first": "R", "name_last": "One"}]}}}))
        .send()
        .await;
    assert!(r.is_err(), "no answer");
    assert_eq!(sb.record_count(Provider::Rex), 1);
    let rex_id = sb.record_ids(Provider::Rex)[0];
    let r = c
        .post(sb.url("/rex/v1/rex/contacts/update"))
        .bearer_auth(&token)
        .json(&json!({"data": {"_id": rex_id, "related": {"contact_names": [{"name_first": "R", "name_last": "Two"}]}}}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(name_of("rex", rex_id).await, "Two");
    sb.set_faults(Provider::Rex, FaultConfig::default())
        .unwrap();
    // FUB POST /people, PUT /people/{id}, POST /events.
    let base = sb.fub_api_base();
    sb.set_faults(Provider::Fub, drop_after.clone()).unwrap();
    let r = fub(&c, reqwest::Method::POST, format!("{base}/people"))
        .json(&json!({"firstName": "F", "lastName": "One"}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(sb.record_count(Provider::Fub), 1);
    let fub_id = sb.record_ids(Provider::Fub)[0];
    let r = fub(&c, reqwest::Method::PUT, format!("{base}/people/{fub_id}"))
        .json(&json!({"lastName": "Two"}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(name_of("fub", fub_id).await, "Two");
    let r = fub(&c, reqwest::Method::POST, format!("{base}/events"))
        .json(&json!({"source": "Web", "type": "Registration",
                      "person": {"firstName": "E", "emails": [{"value": "e@example.com"}]}}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(sb.record_count(Provider::Fub), 2);
    sb.set_faults(Provider::Fub, FaultConfig::default())
        .unwrap();
    // Lofty POST and PUT.
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    sb.set_faults(Provider::Lofty, drop_after).unwrap();
    let r = lofty(&c, reqwest::Method::POST, leads.clone())
        .json(&json!({"firstName": "L", "lastName": "One"}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(sb.record_count(Provider::Lofty), 1);
    let lofty_id = sb.record_ids(Provider::Lofty)[0];
    let r = lofty(&c, reqwest::Method::PUT, format!("{leads}/{lofty_id}"))
        .json(&json!({"lastName": "Two"}))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(name_of("lofty", lofty_id).await, "Two");
    sb.set_faults(Provider::Lofty, FaultConfig::default())
        .unwrap();
    // drop_next_after_processing: exactly the next N writes; reads do not count.
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/faults",
        json!({"drop_next_after_processing": 2}),
    )
    .await;
    let read = || fub(&c, reqwest::Method::GET, format!("{base}/people")).send();
    assert_eq!(read().await.unwrap().status(), StatusCode::OK);
    let create = |n: &str| {
        fub(&c, reqwest::Method::POST, format!("{base}/people"))
            .json(&json!({"firstName": n}))
            .send()
    };
    assert!(create("a").await.is_err());
    assert_eq!(read().await.unwrap().status(), StatusCode::OK);
    assert!(create("b").await.is_err());
    assert_eq!(create("c").await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(sb.record_count(Provider::Fub), 5);
    let f = body(c.get(sb.url("/_sandbox/fub/faults")).send().await.unwrap()).await;
    assert_eq!(f["drop_next_after_processing"], 0);
    // REX: logins and searches are not writes.
    control_put(
        &c,
        &sb,
        "/_sandbox/rex/faults",
        json!({"drop_next_after_processing": 1}),
    )
    .await;
    let token = rex_login(&c, &sb).await;
    rex_call(&c, &sb, &token, "contacts/search", json!({})).await;
    let create = || {
        c.post(sb.url("/rex/v1/rex/Contacts/create"))
            .bearer_auth(&token)
            .json(&json!({"data": {"related": {"contact_names": [{"name_first": "X"}]}}}))
            .send()
    };
    assert!(create().await.is_err());
    assert_eq!(create().await.unwrap().status(), StatusCode::OK);
    assert_eq!(sb.record_count(Provider::Rex), 3);
    let log = body(
        c.get(sb.url("/_sandbox/requests?limit=1000"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let dropped = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == 0)
        .count();
    // REX 2, FUB 3, Lofty 2 after processing; then FUB 2 and REX 1 by count.
    assert_eq!(dropped, 2 + 3 + 2 + 2 + 1);
}

// -------------------------------------------------------------------------------------
// Revoked credentials and accounts

#[tokio::test]
async fn revoked_grants_and_keys_and_account_ids() {
    let sb = spawn_with(no_limits()).await;
    let c = client();
    let base = sb.fub_api_base();
    // FUB: the account behind a key and a token.
    let t = control_post(&c, &sb, "/_sandbox/fub/tokens", json!({})).await;
    let (access, refresh) = (
        t["access_token"].as_str().unwrap().to_string(),
        t["refresh_token"].as_str().unwrap().to_string(),
    );
    let bearer = |url: String| {
        c.get(url)
            .bearer_auth(&access)
            .header("X-System", "crmsync")
            .header("X-System-Key", "sandbox-system-key")
            .send()
    };
    let r = bearer(format!("{base}/identity")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "fub-account-id"), Some("1"));
    assert_eq!(body(r).await["account"]["id"], 1);
    control_put(
        &c,
        &sb,
        "/_sandbox/fub/config",
        json!({"account_id": 77, "user_id": 9}),
    )
    .await;
    let r = fub(&c, reqwest::Method::GET, format!("{base}/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "fub-account-id"), Some("77"));
    assert_eq!(header(&r, "fub-user-id"), Some("9"));
    assert_eq!(body(r).await["id"], 9);
    let v = body(bearer(format!("{base}/identity")).await.unwrap()).await;
    assert_eq!(v["account"]["id"], 77);
    // Revoking the grants: the access token and the refresh token are dead.
    let v = control_post(&c, &sb, "/_sandbox/fub/revoke-grants", json!({})).await;
    assert_eq!(v["revoked"], 2);
    let r = bearer(format!("{base}/people")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(sb.fub_token_url())
        .basic_auth("sandbox-fub-client", Some("sandbox-fub-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    // Revoking the API keys: 401.
    let v = control_post(&c, &sb, "/_sandbox/fub/revoke-keys", json!({})).await;
    assert_eq!(v["revoked"], 1);
    let r = fub(&c, reqwest::Method::GET, format!("{base}/people"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "fub-account-id").is_none());
    // REX: OAuth grants and login sessions.
    let t = control_post(&c, &sb, "/_sandbox/rex/tokens", json!({})).await;
    let login = rex_login(&c, &sb).await;
    for tok in [t["access_token"].as_str().unwrap(), login.as_str()] {
        let v = rex_call(&c, &sb, tok, "contacts/search", json!({})).await;
        assert!(v["error"].is_null());
    }
    assert_eq!(sb.revoke_grants(Some(Provider::Rex)), 3);
    for tok in [t["access_token"].as_str().unwrap(), login.as_str()] {
        let v = rex_call(&c, &sb, tok, "contacts/search", json!({})).await;
        assert_eq!(v["error"]["type"], "AuthenticationError");
    }
    let r = c
        .post(sb.rex_token_url())
        .basic_auth("sandbox-rex-client", Some("sandbox-rex-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"], "invalid_grant");
    // REX has no documented whoami: the login's account_id is checked.
    let login_with = |acc: u64| {
        c.post(sb.url("/rex/v1/rex/Authentication/login"))
            .json(&json!({"email": "agent@example.com", "password": "sandbox-password", "account_id": acc}))
            .send()
    };
    let v = body(login_with(3487).await.unwrap()).await;
    assert!(v["result"].is_string(), "{v}");
    let v = body(login_with(1).await.unwrap()).await;
    assert_eq!(v["error"]["type"], "AuthenticationError");
    let r = c
        .post(sb.url("/_sandbox/rex/revoke-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Lofty: /me names the team; revoked keys answer 401.
    let leads = format!("{}/v1.0/leads", sb.lofty_api_base());
    let me = format!("{}/v1.0/me", sb.lofty_api_base());
    let v = body(
        lofty(&c, reqwest::Method::GET, me.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["teamId"], 2_000_001);
    assert_eq!(v["userId"], 1_000_001);
    control_put(
        &c,
        &sb,
        "/_sandbox/lofty/config",
        json!({"account_id": 5, "api_keys": ["sandbox-lofty-key", "second"]}),
    )
    .await;
    let v = body(lofty(&c, reqwest::Method::GET, me).send().await.unwrap()).await;
    assert_eq!(v["teamId"], 5);
    let v = control_post(
        &c,
        &sb,
        "/_sandbox/lofty/revoke-keys",
        json!({"keys": ["sandbox-lofty-key"]}),
    )
    .await;
    assert_eq!(v["revoked"], 1);
    let r = lofty(&c, reqwest::Method::GET, leads.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(r).await["code"], "BAD_CREDENTIALS");
    let r = c
        .get(&leads)
        .header("Authorization", "token second")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sb.revoke_api_keys(Provider::Lofty), 1);
}

// ---------------------------------------------------------------------------------------
// Webhooks (crm-apis §1.6)

/// What a webhook receiver got: each request's headers and body, in order.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(reqwest::header::HeaderMap, Vec<u8>)>>>;

/// A receiver on a port of its own that answers 500 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Received) {
    use axum::routing::post;
    let got: Received = Default::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let mut list = seen.lock().unwrap();
                    let n = list.len();
                    let mut h = reqwest::header::HeaderMap::new();
                    for (k, v) in &headers {
                        if let (Ok(k), Ok(v)) = (
                            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                            reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                        ) {
                            h.insert(k, v);
                        }
                    }
                    list.push((h, body.to_vec()));
                    if n < fail_first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// The bodies received so far whose `event` is `event`, once at least `n` of them have arrived (5 s at most).
async fn events_of(got: &Received, event: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bodies: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice::<Value>(b).ok())
            .filter(|v| v["event"] == event)
            .collect();
        if bodies.len() >= n || Instant::now() > deadline {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn fub_signature(key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(
        base64::engine::general_purpose::STANDARD
            .encode(body)
            .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn fub_webhooks_are_registered_as_fub_registers_them() {
    let sb = spawn().await;
    let c = client();
    let hooks = format!("{}/webhooks", sb.fub_api_base());
    let subscribe = |event: &str, url: &str| {
        fub(&c, reqwest::Method::POST, hooks.clone()).json(&json!({"event": event, "url": url}))
    };
    let r = subscribe("peopleUpdated", "https://example.com/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made = body(r).await;
    assert_eq!(made["event"], "peopleUpdated");
    assert!(made["id"].as_u64().is_some(), "{made}");
    // A second subscription to the event is allowed; a third is over the cap (the harsher 2).
    let r = subscribe("peopleUpdated", "https://example.com/b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = subscribe("peopleUpdated", "https://example.com/c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Plain HTTP only to this machine; unknown events refused.
    let r = subscribe("peopleCreated", "http://example.com/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = subscribe("contactsCreated", "https://example.com/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A webhook belongs to a system.
    let r = c
        .post(&hooks)
        .basic_auth(FUB_KEY, Some(""))
        .json(&json!({"event": "peopleCreated", "url": "https://example.com/a"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    let r = fub(
        &c,
        reqwest::Method::GET,
        format!("{hooks}?event=peopleUpdated"),
    )
    .send()
    .await
    .unwrap();
    let listed = body(r).await;
    assert_eq!(
        listed["webhooks"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let id = made["id"].as_u64().unwrap();
    let r = fub(&c, reqwest::Method::DELETE, format!("{hooks}/{id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = fub(&c, reqwest::Method::GET, format!("{hooks}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fub_webhooks_tell_each_change_thin_and_signed_and_retry_a_failed_delivery() {
    let mut cfg = SandboxConfig::default();
    cfg.webhooks.batch_ms = 50;
    cfg.webhooks.retry_base_ms = 100;
    let sb = spawn_with(cfg).await;
    let c = client();
    let (url, got) = receiver(1).await;
    let hooks = format!("{}/webhooks", sb.fub_api_base());
    for event in ["peopleCreated", "peopleUpdated", "peopleStageUpdated"] {
        let r = fub(&c, reqwest::Method::POST, hooks.clone())
            .json(&json!({"event": event, "url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let people = format!("{}/people", sb.fub_api_base());
    let r = fub(&c, reqwest::Method::POST, people.clone())
        .json(&json!({"firstName": "Ada", "phones": [{"value": "+14155550100"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_u64().unwrap();

    // The first delivery was answered 500 and came again.
    let created = events_of(&got, "peopleCreated", 2).await;
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(created[0], created[1], "a retry sends the same delivery");
    let ev = &created[0];
    assert_eq!(ev["resourceIds"], json!([id]));
    assert!(
        ev["eventId"].as_str().is_some_and(|s| s.len() == 36),
        "{ev}"
    );
    assert!(ev.get("data").is_none(), "FUB's payloads are thin: {ev}");
    // Signed with the system key over the base64 of the exact bytes.
    for (headers, raw) in got.lock().unwrap().iter() {
        let sig = headers
            .get("fub-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap();
        assert_eq!(sig, fub_signature("sandbox-system-key", raw));
    }
    // The `uri` reads the person back.
    let uri = ev["uri"].as_str().unwrap().to_owned();
    let back = body(fub(&c, reqwest::Method::GET, uri).send().await.unwrap()).await;
    assert_eq!(back["people"][0]["id"], json!(id), "{back}");

    // An update is `peopleUpdated`; trashing is a stage change, told only as `peopleStageUpdated`.
    let person = format!("{people}/{id}");
    let r = fub(&c, reqwest::Method::PUT, person.clone())
        .json(&json!({"lastName": "Lovelace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let updated = events_of(&got, "peopleUpdated", 1).await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["resourceIds"], json!([id]));
    let r = fub(&c, reqwest::Method::PUT, person)
        .json(&json!({"stage": "Trash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let staged = events_of(&got, "peopleStageUpdated", 1).await;
    assert_eq!(staged.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_of(&got, "peopleUpdated", 0).await.len(), 1);

    // The control API shows the deliveries and what the receiver answered.
    let seen = body(
        c.get(sb.url("/_sandbox/fub/webhooks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let first = &seen["deliveries"][0];
    assert_eq!(first["attempts"], 2, "{seen}");
    assert_eq!(first["ok"], true);
}

#[tokio::test]
async fn fub_webhooks_name_many_changes_in_few_requests() {
    let mut cfg = no_limits();
    cfg.webhooks.batch_ms = 200;
    cfg.webhooks.max_ids = 10;
    let sb = spawn_with(cfg).await;
    sb.seed(Provider::Fub, 7, 50);
    let c = client();
    let (url, got) = receiver(0).await;
    let r = fub(
        &c,
        reqwest::Method::POST,
        format!("{}/webhooks", sb.fub_api_base()),
    )
    .json(&json!({"event": "peopleUpdated", "url": url}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let touched = control_post(
        &c,
        &sb,
        "/_sandbox/fub/touch",
        json!({"count": 25, "seed": 1}),
    )
    .await;
    let ids: BTreeSet<u64> = touched["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ids.len(), 25);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut told = BTreeSet::new();
    let mut requests = 0;
    while Instant::now() < deadline && told != ids {
        let bodies = events_of(&got, "peopleUpdated", 0).await;
        requests = bodies.len();
        told = bodies
            .iter()
            .flat_map(|b| b["resourceIds"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_u64())
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(told, ids);
    assert!(
        (3..25).contains(&requests),
        "{requests} requests for 25 changes of at most 10 ids each"
    );
}

#[tokio::test]
async fn lofty_lead_info_webhooks_say_only_that_the_team_changed() {
    let mut cfg = no_limits();
    cfg.webhooks.batch_ms = 50;
    let sb = spawn_with(cfg).await;
    let c = client();
    let (url, got) = receiver(0).await;
    let base = sb.lofty_api_base();
    let subscribe =
        |v: Value| lofty(&c, reqwest::Method::POST, format!("{base}/v1.0/webhook")).json(&v);
    for refused in [
        json!({"listId": 2, "callbackUrl": "http://example.com/hook"}),
        json!({"listId": 13, "callbackUrl": url}),
        json!({"listId": 2, "callbackUrl": url, "limit": 0}),
        json!({"listId": 2, "callbackUrl": url, "limit": 5001}),
    ] {
        let r = subscribe(refused.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{refused}");
    }
    let r = subscribe(json!({"listId": 2, "callbackUrl": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sub = body(r).await;
    assert_eq!(sub["listId"], 2);
    assert_eq!(sub["limit"], 100);
    assert_eq!(sub["teamId"], 2_000_001);
    let listed = body(
        lofty(&c, reqwest::Method::GET, format!("{base}/v1.0/webhooks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let r = lofty(&c, reqwest::Method::POST, format!("{base}/v1.0/leads"))
        .json(&json!({"firstName": "Grace", "phones": ["4155550111"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (headers, raw) = got.lock().unwrap().first().cloned().expect("a delivery");
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v, json!({"teamId": 2_000_001, "listId": 2}));
    assert!(headers.get("fub-signature").is_none());

    let id = sub["subscribeId"].as_u64().unwrap();
    let r = lofty(
        &c,
        reqwest::Method::DELETE,
        format!("{base}/v1.0/webhook/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let before = got.lock().unwrap().len();
    let r = lofty(&c, reqwest::Method::POST, format!("{base}/v1.0/leads"))
        .json(&json!({"firstName": "Hedy", "phones": ["4155550112"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        got.lock().unwrap().len(),
        before,
        "no subscription, no delivery"
    );
}

#[tokio::test]
async fn rex_admin_webhooks_send_the_changed_contacts_in_batches() {
    let mut cfg = SandboxConfig::default();
    cfg.webhooks.batch_ms = 50;
    let sb = spawn_with(cfg).await;
    let c = client();
    let token = rex_login(&c, &sb).await;
    let (url, got) = receiver(0).await;
    let refused = rex_call(
        &c,
        &sb,
        &token,
        "admin-webhooks/create",
        json!({"data": {"name": "x", "url": "http://example.com/hook", "is_enabled": true,
            "events": [{"event_id": "contacts.created"}]}}),
    )
    .await;
    assert!(!refused["error"].is_null(), "{refused}");
    let made = rex_call(
        &c,
        &sb,
        &token,
        "admin-webhooks/create",
        json!({"data": {"name": "crmsync", "url": url, "is_enabled": true,
            "send_format_id": "v1_full_change_detail",
            "events": [{"event_id": "contacts.created"}, {"event_id": "contacts.updated"}]}}),
    )
    .await;
    let hook_id = made["result"]["id"].as_u64().expect("result.id");

    let v = rex_call(
        &c,
        &sb,
        &token,
        "Contacts/create",
        json!({"data": {"type": "person", "related": {
            "contact_names": [{"name_first": "Web", "name_last": "Hook"}],
            "contact_phones": [{"phone_number": "0412 345 679"}]}}}),
    )
    .await;
    let id = v["result"]["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (headers, raw) = got.lock().unwrap().first().cloned().expect("a delivery");
    assert!(
        headers.get("fub-signature").is_none(),
        "REX documents no signature"
    );
    let v: Value = serde_json::from_slice(&raw).unwrap();
    let event = &v["data"][0];
    assert_eq!(event["type"], "contacts.created", "{v}");
    assert_eq!(event["payload"]["context"]["record_id"], json!(id));
    assert_eq!(event["payload"]["context"]["service"], "Contacts");
    let post = &event["payload"]["data"]["post"];
    assert_eq!(post["id"], json!(id));
    assert!(
        post["system_modtime"].is_i64(),
        "webhook records carry integer times: {post}"
    );

    let r = rex_call(
        &c,
        &sb,
        &token,
        "contacts/update",
        json!({"data": {"_id": id, "related": {"contact_names": [{"name_first": "Web", "name_last": "Hooked"}]}}}),
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, raw) = got
        .lock()
        .unwrap()
        .get(1)
        .cloned()
        .expect("a second delivery");
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["data"][0]["type"], "contacts.updated", "{v}");

    let purged = rex_call(
        &c,
        &sb,
        &token,
        "admin-webhooks/purge",
        json!({"id": hook_id}),
    )
    .await;
    assert_eq!(purged["result"], true, "{purged}");
    let seen = body(
        c.get(sb.url("/_sandbox/rex/webhooks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        seen["subscriptions"].as_array().map(Vec::len),
        Some(0),
        "{seen}"
    );
    assert_eq!(
        seen["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{seen}"
    );
}
