//! Lofty leads (crm-apis.md §2.2).
//!
//! Lead: `leadId` (int64), `firstName` + `lastName`, `emails` / `phones` as arrays of plain
//! strings (objects tolerated), `note` / `notes`, `createTime` (epoch milliseconds, epoch seconds or
//! RFC 3339), and no update time in the documented object (an `updateTime` / `lastUpdateTime` is read
//! where one is present). `GET /v1.0/leads/{id}` may wrap the lead as `{"lead":{…}}`; both forms are
//! read.

use serde_json::{Map, Value, json};

use crate::mapping::{
    Draft, entry_primary, entry_value, first_time, has_email, has_phone, own_region, put,
};
use crmsync_domain::Lead;
use crmsync_domain::Mapped;
use crmsync_domain::Provider;
use crmsync_domain::Region;
use crmsync_domain::json;
use crmsync_domain::json::Json;

/// Lofty's limit on `firstName` / `lastName`.
pub const NAME_MAX_CHARS: usize = 30;
/// The `source` of a created lead when the lead has none.
pub const DEFAULT_SOURCE: &str = "crmsync";

const EMAIL_KEYS: &[&str] = &["value", "email", "emailAddress"];
const PHONE_KEYS: &[&str] = &["value", "phone", "number", "phoneNumber"];
const PRIMARY_KEYS: &[&str] = &["isPrimary", "primary"];
const TAG_KEYS: &[&str] = &["tagName", "name", "value"];

/// The lead object itself, unwrapping `{"lead": {…}}`.
fn unwrap_lead<J: Json>(v: &J) -> &J {
    match json::field(v, "lead") {
        Some(inner) if inner.is_map() && json::field(v, "leadId").is_none() => inner,
        _ => v,
    }
}

/// Maps a Lofty lead.
pub fn map_lead<J: Json>(v: &J, region: Region) -> Mapped {
    let v = unwrap_lead(v);
    let mut d = Draft {
        external_id: ["leadId", "id"]
            .iter()
            .find_map(|k| json::field(v, k).and_then(json::id)),
        name: json::join_name(
            json::text_at(v, "firstName").as_deref(),
            json::text_at(v, "lastName").as_deref(),
        )
        .or_else(|| json::first_text(v, &["name", "fullName"])),
        notes: json::first_text(v, &["note", "notes"]),
        // The documented lead has no update time (crm-apis §2.2, §4): `createTime` says nothing about
        // edits, so it is never taken for one. A lead that does carry one is read.
        updated_at: first_time(v, &["updateTime", "lastUpdateTime"]),
        created_at: first_time(v, &["createTime"]),
        ..Draft::default()
    };
    for item in json::array(json::field(v, "emails")) {
        d.emails.add(
            entry_value(item, EMAIL_KEYS),
            entry_primary(item, PRIMARY_KEYS),
        );
    }
    d.emails.add(json::text_at(v, "email"), false);
    for item in json::array(json::field(v, "phones")) {
        d.phones.add(
            entry_value(item, PHONE_KEYS),
            entry_primary(item, PRIMARY_KEYS),
        );
    }
    d.phones.add(
        json::field(v, "phone").and_then(json::text_or_integer),
        false,
    );
    d.finish(Provider::Lofty, region)
}

/// Body for `POST /v1.0/leads`: `{"firstName","lastName","emails":[…],"phones":[e164],"source",
/// "tags":[…]}`; names truncated to 30 characters; absent fields and empty lists omitted;
/// `source` is the lead's source or `"crmsync"`.
pub fn create_body(lead: &Lead) -> Value {
    let mut body = Map::new();
    put(
        &mut body,
        "firstName",
        lead.first_name.as_deref().map(short_name),
    );
    put(
        &mut body,
        "lastName",
        lead.last_name.as_deref().map(short_name),
    );
    put(&mut body, "emails", lead.email.as_ref().map(|e| json!([e])));
    put(
        &mut body,
        "phones",
        lead.phone.as_ref().map(|p| json!([p.as_str()])),
    );
    body.insert(
        "source".into(),
        json!(lead.source.as_deref().unwrap_or(DEFAULT_SOURCE)),
    );
    if !lead.tags.is_empty() {
        body.insert("tags".into(), json!(lead.tags));
    }
    Value::Object(body)
}

/// Body for `PUT /v1.0/leads/{id}` ("send only changed fields"): a field is present only when
/// its value differs from `existing`. Names are compared after truncation to 30 characters.
/// `emails`, `phones` and `tags` are replaced as whole lists by Lofty, so each is sent as the
/// union of the existing values and the lead's, and only when the lead adds something (e-mails
/// and tags compared case-insensitively, phones by E.164). An empty object means "nothing to
/// update".
pub fn update_body(lead: &Lead, existing: &Value) -> Value {
    let existing = unwrap_lead(existing);
    let mut body = Map::new();
    for (key, value) in [
        ("firstName", &lead.first_name),
        ("lastName", &lead.last_name),
    ] {
        if let Some(name) = value.as_deref().map(short_name)
            && json::text_at(existing, key).as_deref() != Some(name.as_str())
        {
            body.insert(key.into(), json!(name));
        }
    }

    if let Some(email) = &lead.email {
        let mut current = strings(existing, "emails", EMAIL_KEYS);
        if !has_email(current.iter().map(String::as_str), email) {
            current.push(email.clone());
            body.insert("emails".into(), json!(current));
        }
    }
    if let Some(phone) = &lead.phone {
        let mut current = strings(existing, "phones", PHONE_KEYS);
        if !has_phone(current.iter().map(String::as_str), phone, own_region(phone)) {
            current.push(phone.as_str().to_owned());
            body.insert("phones".into(), json!(current));
        }
    }

    let mut tags = strings(existing, "tags", TAG_KEYS);
    let before = tags.len();
    for t in &lead.tags {
        if !tags.iter().any(|x| x.eq_ignore_ascii_case(t)) {
            tags.push(t.clone());
        }
    }
    if tags.len() != before {
        body.insert("tags".into(), json!(tags));
    }
    Value::Object(body)
}

fn short_name(s: &str) -> String {
    json::truncate_chars(s, NAME_MAX_CHARS)
        .trim_end()
        .to_owned()
}

/// The string values of the list `key` (plain strings, numbers, or objects with `keys`).
fn strings(v: &Value, key: &str, keys: &[&str]) -> Vec<String> {
    json::array(json::field(v, key))
        .iter()
        .filter_map(|item| entry_value(item, keys))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::test_support::Junk;
    use crmsync_domain::LeadPayload;
    use crmsync_domain::SkipReason;

    fn lead(v: Value) -> Lead {
        let mut v = v;
        v["userId"] = json!("6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f");
        Lead::from_payload(
            serde_json::from_value::<LeadPayload>(v).unwrap(),
            Region::US,
        )
        .unwrap()
    }

    #[test]
    fn wrapped_lead_and_object_entries() {
        let c = map_lead(
            &json!({"lead": {
                "leadId": 651095960136641_i64, "firstName": "Ann",
                "emails": [{"email": "ANN@X.COM"}], "phones": [{"phoneNumber": 4155550123_i64}],
                "notes": " likes pools ", "lastUpdateTime": 1714557600000_i64
            }}),
            Region::US,
        )
        .into_contact()
        .unwrap();
        assert_eq!(c.external_id.as_deref(), Some("651095960136641"));
        assert_eq!(c.email.as_deref(), Some("ann@x.com"));
        assert_eq!(c.phone.as_str(), "+14155550123");
        assert_eq!(c.notes.as_deref(), Some("likes pools"));
        assert_eq!(c.updated_at, Some("2024-05-01T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn phones_of_the_wrong_type_are_no_phone() {
        let m = map_lead(&json!({"leadId": 1, "phones": "4155550123"}), Region::US);
        assert_eq!(m.skipped().map(|s| s.reason), Some(SkipReason::NoPhone));
    }

    #[test]
    fn create_body_truncates_names_on_char_boundaries() {
        let l = lead(json!({
            "id": "1", "firstName": "Ÿvéééééééééééééééééééééééééééééééé", "lastName": "Lee",
            "phone": "(415) 555-0123", "email": "A@B.co", "tags": ["x"]
        }));
        let body = create_body(&l);
        assert_eq!(body["firstName"].as_str().unwrap().chars().count(), 30);
        assert!(body["firstName"].as_str().unwrap().starts_with("Ÿvé"));
        assert_eq!(
            body,
            json!({
                "firstName": body["firstName"].clone(), "lastName": "Lee",
                "emails": ["a@b.co"], "phones": ["+14155550123"], "source": "crmsync", "tags": ["x"]
            })
        );
        let bare = lead(json!({"id": "2", "source": "Zillow"}));
        assert_eq!(create_body(&bare), json!({"source": "Zillow"}));
    }

    #[test]
    fn update_body_sends_only_changes_and_whole_unions() {
        let existing = json!({
            "leadId": 651095960136641_i64, "firstName": "Ann", "lastName": "Lee",
            "emails": ["ann@x.com"], "phones": ["4155550123"],
            "tags": [{"tagId": 1, "tagName": "Buyer"}, "VIP"]
        });
        let same = lead(
            json!({"id": "1", "firstName": "Ann", "email": "ANN@x.com", "phone": "+1 415 555 0123", "tags": ["buyer"]}),
        );
        assert_eq!(update_body(&same, &existing), json!({}));

        let changed = lead(
            json!({"id": "1", "firstName": "Anna", "lastName": "Lee", "email": "anna@y.com", "phone": "415 555 0199", "tags": ["hot", "VIP"]}),
        );
        assert_eq!(
            update_body(&changed, &existing),
            json!({
                "firstName": "Anna",
                "emails": ["ann@x.com", "anna@y.com"],
                "phones": ["4155550123", "+14155550199"],
                "tags": ["Buyer", "VIP", "hot"]
            })
        );
        // Wrapped existing lead reads the same.
        assert_eq!(update_body(&same, &json!({"lead": existing})), json!({}));
    }

    #[test]
    fn never_panics_on_junk_leads() {
        let keys = [
            "lead",
            "leadId",
            "id",
            "firstName",
            "lastName",
            "emails",
            "phones",
            "email",
            "phone",
            "value",
            "tags",
            "tagName",
            "note",
            "updateTime",
            "createTime",
        ];
        let mut junk = Junk::new(23);
        let l = lead(
            json!({"id": "1", "firstName": "A", "phone": "4155550123", "email": "a@b.co", "tags": ["t"]}),
        );
        for _ in 0..3000 {
            let v = junk.value(&keys, 4);
            let _ = map_lead(&v, Region::AU);
            assert!(update_body(&l, &v).is_object());
        }
    }
}
