//! The CRM's rate-limit headers (`X-RateLimit-*`, `Retry-After`), read by the client's pacer after
//! every call: any values give a bounded wait and never a panic (overflow checks are on).
#![no_main]
use std::time::{Duration, Instant, SystemTime};

use crmsync_crm::Pacer;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-window",
    "x-ratelimit-reset",
    "x-ratelimit-context",
    "retry-after",
];

fuzz_target!(|data: &[u8]| {
    let pacer = Pacer::new();
    let now = Instant::now();
    let mut headers = http::HeaderMap::new();
    for (name, value) in NAMES.iter().zip(data.split(|b| *b == b'\n')) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(*name, v);
        }
    }
    pacer.observe("people.list", &headers, now, SystemTime::now());
    pacer.observe("events.create", &headers, now, SystemTime::UNIX_EPOCH);
    let wait = pacer.delay("people.list", now);
    assert!(wait <= Duration::from_secs(3600), "{wait:?}");
    if let Some((limit, window)) = pacer.advertised_rate() {
        let _ = (limit, window.as_secs_f64());
    }
});
