//! Black-box tests of the sandbox over HTTP (one test binary on purpose).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use crm_sandbox::{FaultConfig, Provider, Sandbox, SandboxConfig, SandboxHandle};
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
