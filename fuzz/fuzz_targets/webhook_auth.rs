//! The lead webhook's sender check (`x-webhook-secret` or a Standard Webhooks signature): fuzzed
//! headers and body never pass, and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5";

fuzz_target!(|data: &[u8]| {
    // Up to four NUL-separated fields: webhook-id, webhook-timestamp, webhook-signature, body.
    let mut parts = data.splitn(4, |b| *b == 0);
    let (id, ts, sig) = (parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ] {
        if let Some(v) = value.and_then(|v| http::HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, v);
        }
    }
    let signed = crmsync_lambda::webhook::authenticate_webhook(SECRET, &headers, body);
    assert_eq!(signed.unwrap_err().status().as_u16(), 401);
    if let Some(v) = id.and_then(|v| http::HeaderValue::from_bytes(v).ok()) {
        let mut shared = http::HeaderMap::new();
        shared.insert("x-webhook-secret", v);
        assert!(crmsync_lambda::webhook::authenticate_webhook(SECRET, &shared, body).is_err());
    }
});
