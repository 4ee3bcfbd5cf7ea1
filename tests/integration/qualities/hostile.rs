//! Hostile input on every route: oversize bodies, deep JSON, bad UTF-8, odd JSON, bad query strings
//! and paths. Whatever comes, the answer is a contract status (never 500), and nothing panics; every
//! input that is answered otherwise is reported, not only the first.
//! (The parsers behind these routes are also fuzzed for a set time by `make soak`: see `fuzz/`.)

use crmsync_domain::Provider;
use http::StatusCode;
use uuid::Uuid;

use crate::support::env::{Env, Route, WEBHOOK_SECRET};
use crate::support::leads::{lead, people_with, post_lead};
use crate::support::rows::{assert_no_failures, contract_error_problem, report};

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let mut deep_object = String::new();
    for _ in 0..50_000 {
        deep_object.push_str("{\"a\":");
    }
    vec![
        ("300 KiB", format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 * 1024)).into_bytes()),
        ("6 MiB", vec![b' '; 6 * 1024 * 1024]),
        ("256 KiB + 1 of JSON", {
            let mut b = format!(r#"{{"provider":"lofty","apiKey":"{}"}}"#, "k".repeat(256 * 1024)).into_bytes();
            b.truncate(256 * 1024 + 1);
            b
        }),
        ("100k nested arrays", "[".repeat(100_000).into_bytes()),
        ("50k nested objects", deep_object.into_bytes()),
        ("bad UTF-8", vec![0xff, 0xfe, b'{', 0xc3, 0x28, b'}']),
        ("UTF-8 BOM", b"\xef\xbb\xbf{\"provider\":\"lofty\",\"apiKey\":\"k\"}".to_vec()),
        ("NUL and lone surrogate", br#"{"provider":"lofty\u0000","apiKey":"\ud800"}"#.to_vec()),
        ("huge number", br#"{"riskThreshold": 1e999999, "autoSync": true}"#.to_vec()),
        ("i64 overflow", br#"{"riskThreshold": 99999999999999999999999}"#.to_vec()),
        ("duplicate keys", br#"{"provider":"lofty","provider":"rex","apiKey":"k"}"#.to_vec()),
        ("wrong types", br#"{"provider":[],"apiKey":{},"autoSync":"yes"}"#.to_vec()),
        ("a string", br#""lead.created""#.to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("truncated", br#"{"event":"lead.created","lead":{"id":"x","userId":"#.to_vec()),
        ("lead with hostile fields", br#"{"event":"lead.created","lead":{"id":{"$gt":""},"userId":"00000000-0000-0000-0000-000000000000","phone":"+1'; DROP TABLE contacts;--","riskScore":"NaN","tags":[[[]]],"updatedAt":"9999-99-99"}}"#.to_vec()),
        ("supabase delete", br#"{"type":"DELETE","record":null,"old_record":{"id":1}}"#.to_vec()),
        ("control characters", b"{\"provider\":\"lofty\",\"apiKey\":\"a\x07\x1b[31m\"}".to_vec()),
    ]
}

fn queries() -> Vec<&'static str> {
    vec![
        "since=%ZZ",
        "since=%00",
        "since=2026-13-45T99:99:99Z",
        "since=-999999-01-01T00:00:00Z",
        "since=+275760-09-13T00:00:00Z",
        "limit=-1",
        "limit=0",
        "limit=99999999999999999999",
        "limit=1e3",
        "limit=%F0%9F%92%A9",
        "limit=1&limit=2&limit=x",
        "before=%%%",
        "before=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "before=OTk5OTk5OTk5OTk5OTk5OTk5OTk6eA",
        "before=MTow",
        "status=%F0%9F%92%A9&status=failed",
        "=&&==&",
        "since=2026-01-01T00:00:00Z&since=garbage",
        "state=x&code=y&error=",
        "%ff%fe=%c3%28",
    ]
}

fn paths(id: Uuid) -> Vec<(Route, &'static str, String)> {
    let long = "x".repeat(10_000);
    vec![
        (
            Route::OAuthStart,
            "GET",
            "/api/integrations/r%C3%A9x/oauth/start".into(),
        ),
        (
            Route::OAuthCallback,
            "GET",
            "/api/integrations/rex/oauth/callback".into(),
        ),
        (
            Route::AuthStatus,
            "GET",
            format!("/api/integrations/{long}/auth/status"),
        ),
        (
            Route::ContactsFetch,
            "GET",
            "/api/integrations/lofty/contacts/fetch".into(),
        ),
        (
            Route::ContactsSync,
            "POST",
            "/api/integrations/..%2F..%2Fetc/contacts/sync".into(),
        ),
        (
            Route::ContactsSync,
            "POST",
            "/api/integrations/lofty/contacts/sync".into(),
        ),
        (Route::Integrations, "GET", "/api/integrations".into()),
        (Route::Integrations, "POST", "/api/integrations".into()),
        (
            Route::Integrations,
            "GET",
            format!("/api/integrations/{id}"),
        ),
        (
            Route::Integrations,
            "PUT",
            format!("/api/integrations/{id}"),
        ),
        (
            Route::Integrations,
            "PUT",
            format!("/api/integrations/{long}"),
        ),
        (
            Route::Integrations,
            "DELETE",
            "/api/integrations/not-a-uuid".into(),
        ),
        (
            Route::IntegrationSync,
            "POST",
            format!("/api/integrations/{id}/sync"),
        ),
        (
            Route::IntegrationSync,
            "POST",
            "/api/integrations/%00/sync".into(),
        ),
        (
            Route::SyncLogs,
            "GET",
            format!("/api/integrations/{id}/logs"),
        ),
        (Route::SyncLogs, "GET", "/api/integrations/logs".into()),
        (
            Route::Deliveries,
            "GET",
            format!("/api/integrations/{id}/deliveries"),
        ),
        (
            Route::Deliveries,
            "POST",
            format!("/api/integrations/{id}/deliveries/retry"),
        ),
        (
            Route::Deliveries,
            "GET",
            "/api/integrations/%00/deliveries".into(),
        ),
        (
            Route::LeadWebhook,
            "POST",
            "/api/webhooks/lead-created".into(),
        ),
    ]
}

#[tokio::test]
async fn hostile_bodies_queries_and_paths_get_a_contract_answer_never_a_500() {
    let env = Env::start().await;
    let mut calls = 0;
    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for k in 0..paths(Uuid::nil()).len() {
        // A user of their own per route, with an integration of theirs named in the path.
        let user = Uuid::new_v4();
        env.connect(user, Provider::Lofty).await;
        let id = env
            .store
            .integration_by_provider(user, Provider::Lofty)
            .await
            .unwrap()
            .unwrap()
            .id;
        let (route, method, path) = paths(id).swap_remove(k);
        let cookies = [format!("alto_admin={}", Env::token(user))];
        let headers: Vec<(&str, &str)> = vec![
            ("x-webhook-secret", WEBHOOK_SECRET),
            ("content-type", "application/json"),
        ];
        let mut inputs: Vec<(String, &str, Option<Vec<u8>>)> = bodies()
            .into_iter()
            .map(|(name, body)| (format!("body {name}"), "", Some(body)))
            .collect();
        inputs.extend(
            queries()
                .into_iter()
                .map(|q| (format!("query {q}"), q, None)),
        );
        for (what, query, body) in inputs {
            let reply = env
                .send(
                    route,
                    method,
                    &path,
                    query,
                    &cookies,
                    &headers,
                    body.as_deref(),
                )
                .await;
            calls += 1;
            *statuses.entry(reply.status.as_u16()).or_default() += 1;
            let at = format!("{method} {} with {what}", &path[..path.len().min(80)]);
            if reply.status == StatusCode::INTERNAL_SERVER_ERROR || reply.status.as_u16() >= 502 {
                failures.push(format!("{at}: {} {:?}", reply.status, reply.body));
            } else if reply.status.is_client_error()
                && let Some(problem) = contract_error_problem(&reply)
            {
                failures.push(format!("{at}: {problem}"));
            }
        }
    }
    assert_no_failures("hostile input", &failures);
    report(format!(
        "hostile/routes: {} bodies and {} query strings on {} route paths: {calls} calls, answers by \
         status {statuses:?}, no 500, no panic",
        bodies().len(),
        queries().len(),
        paths(Uuid::nil()).len()
    ));
}

/// Found by fuzzing `PhoneNumber::parse`: with the default region US, a number written with its country
/// code lost a leading 1 of its national number (+49 151 2345 6789, a German mobile, became
/// +495123456789: another person's number) or was refused (+33 1…, +44 121…, +86 138…). Leads with
/// such numbers reach the CRM with their own digits.
#[tokio::test]
async fn international_numbers_keep_their_digits_whatever_the_default_region() {
    let env = Env::start().await;
    let user = Uuid::new_v4();
    env.connect(user, Provider::Lofty).await;
    let numbers = [
        ("+49 151 23456789", "+4915123456789"),
        ("+33 1 23 45 67 89", "+33123456789"),
        ("+44 121 496 0000", "+441214960000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+39 06 1234 5678", "+390612345678"),
        ("(415) 555-0142", "+14155550142"),
    ];
    for (i, (raw, e164)) in numbers.iter().enumerate() {
        let reply = post_lead(
            &env,
            &env.app,
            &lead(user, &format!("INTL-{i}"), raw, "Abroad"),
        )
        .await;
        assert_eq!(reply.body["pushed"], 1, "{raw}: {:?}", reply.body);
        let people = people_with(&env, Provider::Lofty, e164).await;
        assert_eq!(people.len(), 1, "{raw} reached the CRM as {e164}");
    }
    report(format!(
        "hostile/phones: {} leads with numbers written with their country code: each reached the \
         CRM with its own digits",
        numbers.len()
    ));
}
