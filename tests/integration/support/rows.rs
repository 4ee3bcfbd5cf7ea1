//! What a correct pull must leave in `contacts`, computed from the sandbox's records, and the checks
//! the route and reliability tests share: rows stored against rows expected, the contract's error shape,
//! and the reliability report.

use std::collections::BTreeMap;

use crmsync_domain::{PhoneNumber, Provider, Region};
use serde_json::Value;
use uuid::Uuid;

use crate::support::env::{Env, Reply, Route};

pub fn sync_path(provider: Provider) -> String {
    format!("/api/integrations/{}/contacts/sync", provider.as_str())
}

/// Per valid phone, the last name a correct pull of `provider` stores, from a list of records in
/// the sandbox's neutral shape: records the CRM reports deleted are left out; phones are read in the
/// CRM's default region (REX `AU`, the others `US`); of two live records with one phone, the most
/// recently updated wins (ties: the higher id). Lofty sends no update time, so there only a record
/// touched after the seed (an edit a sync has seen) outranks the others, then the higher id.
pub fn expected_from(provider: Provider, records: &[Value]) -> BTreeMap<String, String> {
    let region = match provider {
        Provider::Rex => Region::AU,
        _ => Region::US,
    };
    let mut latest: BTreeMap<String, (i64, u64, String)> = BTreeMap::new();
    for r in records {
        if r["deleted"].as_bool() == Some(true) {
            continue;
        }
        let Some(phone) = r["phones"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|p| PhoneNumber::parse(p, region).ok())
        else {
            continue;
        };
        let updated = r["updated_ms"].as_i64().unwrap_or_default();
        let updated = match provider {
            Provider::Lofty if updated <= crm_sandbox::DEFAULT_SEED_END_MS => 0,
            _ => updated,
        };
        let key = (
            updated,
            r["id"].as_u64().unwrap_or_default(),
            r["last_name"].as_str().unwrap_or_default().to_owned(),
        );
        let entry = latest
            .entry(phone.as_str().to_owned())
            .or_insert(key.clone());
        if (key.0, key.1) > (entry.0, entry.1) {
            *entry = key;
        }
    }
    latest
        .into_iter()
        .map(|(phone, (_, _, last))| (phone, last))
        .collect()
}

/// What a fault-free sync of `provider` stores: phone → last name.
pub async fn expected(env: &Env, provider: Provider) -> BTreeMap<String, String> {
    expected_from(provider, &env.sandbox_records(provider).await)
}

/// The stored contacts of `user`: phone → name.
pub async fn stored(env: &Env, user: Uuid) -> BTreeMap<String, String> {
    env.store
        .list_contacts(user)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.phone_number, c.name))
        .collect()
}

/// How `got` differs from `want` (each stored name ends with the expected last name); `None` if not.
pub fn difference(
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Option<String> {
    let same = got.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| g.ends_with(v.as_str())));
    if same {
        return None;
    }
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| {
            got.get(k)
                .filter(|g| !g.ends_with(v.as_str()))
                .map(|g| (k, g, v))
        })
        .collect();
    Some(format!(
        "{} stored, {} expected; {} missing (e.g. {:?}); {} extra (e.g. {:?}); {} different \
         (phone, stored, expected) e.g. {:?}",
        got.len(),
        want.len(),
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>(),
        differ.len(),
        differ.iter().take(3).collect::<Vec<_>>(),
    ))
}

#[track_caller]
pub fn assert_same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    if let Some(diff) = difference(got, want) {
        panic!("{what}: {diff}");
    }
}

/// Nothing half-written: every stored phone is one the CRM has (the rows are a subset of the
/// fault-free rows), whatever their names (a later page may hold a newer record of the same phone).
#[track_caller]
pub fn assert_subset(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "{what}: rows the CRM does not have: {extra:?}"
    );
}

/// `user` syncs `provider` through `contacts-sync`.
pub async fn sync(env: &Env, user: Uuid, provider: Provider) -> Reply {
    env.as_user(user, Route::ContactsSync, "POST", &sync_path(provider), "")
        .await
}

/// Asserts an error answer has the contract's shape and one of the contract's codes.
#[track_caller]
pub fn assert_contract_error(reply: &Reply) {
    if let Some(problem) = contract_error_problem(reply) {
        panic!("{problem}");
    }
}

/// What is wrong with an error answer, measured against the contract (`None`: nothing): a status the
/// contract does not have, a code that is not the status's, an empty `detail`, or a body that is not
/// JSON. The non-panicking form of [`assert_contract_error`], for tests that try many inputs and
/// report every failure at once.
pub fn contract_error_problem(reply: &Reply) -> Option<String> {
    let code = reply.body["error"].as_str().unwrap_or_default();
    let expected = match reply.status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        422 => "invalid_credentials",
        429 => "rate_limited",
        502 => "upstream_error",
        500 => "internal",
        other => {
            return Some(format!(
                "status {other} is not in the contract: {:?}",
                reply.body
            ));
        }
    };
    if code != expected {
        return Some(format!(
            "error code {code:?}, expected {expected:?}: {:?}",
            reply.body
        ));
    }
    if reply.body["detail"].as_str().is_none_or(str::is_empty) {
        return Some(format!("no detail: {:?}", reply.body));
    }
    let content_type = reply.headers.get(http::header::CONTENT_TYPE);
    if content_type.is_none_or(|v| v != "application/json") {
        return Some(format!(
            "content type {content_type:?}, expected application/json: {:?}",
            reply.headers
        ));
    }
    None
}

/// Panics listing every failure found (by a test that tries many inputs and reports them all).
#[track_caller]
pub fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Appends a line to the reliability report of this build (`<target>/reliability-report.log`), from
/// which `docs/RELIABILITY.md`'s figures are read. Also printed (visible with `--nocapture`).
pub fn report(line: impl AsRef<str>) {
    use std::io::Write as _;
    let line = line.as_ref();
    println!("REPORT {line}");
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|p| p.to_path_buf()))
    else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target.join("reliability-report.log"))
    {
        let _ = writeln!(
            f,
            "{} {line}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
}

/// The median update time of `provider`'s records in the sandbox, as a `since` (RFC 3339, whole
/// seconds), and how many records were updated at or after it.
pub async fn median_since(env: &Env, provider: Provider) -> (String, usize) {
    let records = env.sandbox_records(provider).await;
    let mut times: Vec<i64> = records
        .iter()
        .map(|r| r["updated_ms"].as_i64().unwrap())
        .collect();
    times.sort();
    let median = chrono::DateTime::from_timestamp_millis(times[times.len() / 2]).unwrap();
    let since = median.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let newer = records
        .iter()
        .filter(|r| r["updated_ms"].as_i64().unwrap() >= median.timestamp() * 1000)
        .count();
    (since, newer)
}
