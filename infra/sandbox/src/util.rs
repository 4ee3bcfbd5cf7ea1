//! Small helpers shared by every simulated CRM: clock, RNGs, JSON/HTML responses,
//! query parsing, base64 and lenient JSON value access.

use std::sync::{Mutex, MutexGuard};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Locks a mutex, ignoring poisoning (a panicked holder leaves consistent-enough state
/// for a simulator; never propagate a panic into request handling).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SplitMix64: tiny, fast, and stable forever, so seeded data never changes between
/// versions of `rand`.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub(crate) fn from_entropy() -> Self {
        use rand::Rng as _;
        SplitMix64(rand::rng().next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Random lowercase hex string of `bytes` random bytes (tokens, codes).
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::Rng as _;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    let mut s = String::with_capacity(bytes * 2);
    for b in buf {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Random GUID in the 8-4-4-4-12 form (REX session tokens, correlation ids).
pub(crate) fn guid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2012-04-23T02:23:11Z` into a stack buffer (no allocation, no format parsing).
pub(crate) fn iso_secs_buf(ms: i64, out: &mut [u8; 20]) -> bool {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&y) {
        return false;
    }
    let sod = secs.rem_euclid(86_400) as u32;
    let (hh, mi, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let y = y as u32;
    let digits = [
        y / 1000,
        (y / 100) % 10,
        (y / 10) % 10,
        y % 10,
        m / 10,
        m % 10,
        d / 10,
        d % 10,
        hh / 10,
        hh % 10,
        mi / 10,
        mi % 10,
        ss / 10,
        ss % 10,
    ];
    let at = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    *out = *b"0000-00-00T00:00:00Z";
    for (pos, dg) in at.iter().zip(digits) {
        out[*pos] = b'0' + dg as u8;
    }
    true
}

/// `2012-04-23T02:23:11Z` (FUB's format).
pub(crate) fn iso_secs(ms: i64) -> String {
    let mut buf = [0u8; 20];
    if iso_secs_buf(ms, &mut buf) {
        return String::from_utf8_lossy(&buf).into_owned();
    }
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// Serializes any `Display` value as a JSON string without an intermediate `String`
/// (REX's flattened rows carry numbers as strings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsStr<T>(pub T);

impl<T: std::fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Serializes `v` into a buffer sized for `items` list entries of about 450 bytes.
pub(crate) fn to_json_sized<T: Serialize + ?Sized>(
    v: &T,
    items: usize,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512 + items * 450);
    serde_json::to_writer(&mut out, v)?;
    Ok(out)
}

/// Serializes epoch milliseconds as `2012-04-23T02:23:11Z` without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IsoSecs(pub i64);

impl Serialize for IsoSecs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        if iso_secs_buf(self.0, &mut buf)
            && let Ok(t) = std::str::from_utf8(&buf)
        {
            return s.serialize_str(t);
        }
        s.serialize_str(&iso_secs(self.0))
    }
}

/// `2012-04-23T02:23:11.123Z` (control API).
pub(crate) fn iso_millis(ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses RFC 3339 / ISO-8601 (with offset or `Z`), or a bare `YYYY-MM-DD` (midnight UTC),
/// or `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc().timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis());
    }
    None
}

/// Decoded query string pairs, in order.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    match raw {
        Some(q) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
        None => Vec::new(),
    }
}

/// First value of `key` (exact name).
pub(crate) fn qget<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Form body pairs.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A JSON response; serialization failure degrades to a 500 with a fixed body.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(_) => json_bytes(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"serialization failed"}"#.to_vec(),
        ),
    }
}

pub(crate) fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

pub(crate) fn redirect(location: &str) -> Response {
    let mut r = empty(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            *r.status_mut() = StatusCode::BAD_REQUEST;
        }
    }
    r
}

pub(crate) fn set_header(r: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64 in either alphabet, padded or not (and `+` turned into a space by a
/// careless query-string decoder).
pub(crate) fn b64_decode_lenient(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '+' => '-',
            '/' => '_',
            c => c,
        })
        .filter(|c| *c != '=')
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cleaned.as_bytes())
        .ok()
}

/// Integer from a JSON number or numeric string.
pub(crate) fn val_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
            .or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().map(|f| f as i64))
        }
        _ => None,
    }
}

pub(crate) fn val_u64(v: &Value) -> Option<u64> {
    val_i64(v).and_then(|i| u64::try_from(i).ok())
}

/// String from a JSON string (numbers are stringified).
pub(crate) fn val_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a parsed JSON value is a plain string and nothing else.
pub(crate) fn val_str(v: &Value) -> Option<&str> {
    v.as_str()
}

/// 64-bit FNV-1a (stable, used for the email index).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Constant-time-ish string comparison for secrets.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
