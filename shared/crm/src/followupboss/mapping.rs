//! Follow Up Boss people (crm-apis.md §1.3).
//!
//! Person: `id`, `name` or `firstName` + `lastName`, `emails[]` / `phones[]` as
//! `{value, type, isPrimary?}` (plain strings tolerated), `background` (notes), `updated`
//! (RFC 3339; `created` when `updated` is missing), `stage` (`Trash`: deleted).

use serde_json::{Map, Value, json};

use crate::mapping::{
    Candidates, Draft, entry_primary, entry_value, first_time, has_email, has_phone, own_region,
    put,
};
use crmsync_domain::Lead;
use crmsync_domain::Mapped;
use crmsync_domain::Provider;
use crmsync_domain::Region;
use crmsync_domain::json;
use crmsync_domain::json::Json;

/// The `source` of an event when the lead has none.
pub const DEFAULT_SOURCE: &str = "crmsync";
/// The event type crmsync sends: one of the types that start action plans.
pub const EVENT_TYPE: &str = "General Inquiry";

const VALUE_KEYS: &[&str] = &["value", "email", "number", "phone"];
const PRIMARY_KEYS: &[&str] = &["isPrimary", "primary"];

/// When a person last changed (`updated`, else `created`).
pub fn updated_at<J: Json>(v: &J) -> Option<chrono::DateTime<chrono::Utc>> {
    first_time(v, &["updated", "created"])
}

/// Whether the person is in the Trash (crm-apis §1.3: a stage, listed only with `includeTrash=true`).
fn trashed<J: Json>(v: &J) -> bool {
    json::text_at(v, "stage").is_some_and(|s| s.eq_ignore_ascii_case("trash"))
}

/// Maps a FUB person.
pub fn map_person<J: Json>(v: &J, region: Region) -> Mapped {
    let mut d = Draft {
        external_id: json::field(v, "id").and_then(json::id),
        name: json::text_at(v, "name")
            .and_then(|n| json::clean_name(&n))
            .or_else(|| {
                json::join_name(
                    json::text_at(v, "firstName").as_deref(),
                    json::text_at(v, "lastName").as_deref(),
                )
            }),
        notes: json::text_at(v, "background"),
        updated_at: updated_at(v),
        created_at: first_time(v, &["created"]),
        deleted: trashed(v),
        ..Draft::default()
    };
    collect(&mut d.emails, json::field(v, "emails"));
    collect(&mut d.phones, json::field(v, "phones"));
    d.finish(Provider::FollowUpBoss, region)
}

fn collect<J: Json>(into: &mut Candidates, list: Option<&J>) {
    for item in json::array(list) {
        into.add(
            entry_value(item, VALUE_KEYS),
            entry_primary(item, PRIMARY_KEYS),
        );
    }
}

/// Body for `POST /v1/events` (the recommended lead intake):
/// `{"source","system","type":"General Inquiry","message"?,"person":{"firstName"?,"lastName"?,
/// "emails"?:[{"value"}],"phones"?:[{"value": e164}],"tags"?:[…]}}`. Absent fields and empty lists
/// are omitted.
pub fn event_body(lead: &Lead, system: &str) -> Value {
    let mut person = Map::new();
    put(&mut person, "firstName", lead.first_name.clone());
    put(&mut person, "lastName", lead.last_name.clone());
    put(
        &mut person,
        "emails",
        lead.email.as_ref().map(|e| json!([{ "value": e }])),
    );
    put(
        &mut person,
        "phones",
        lead.phone
            .as_ref()
            .map(|p| json!([{ "value": p.as_str() }])),
    );
    if !lead.tags.is_empty() {
        person.insert("tags".into(), json!(lead.tags));
    }

    let mut body = Map::new();
    body.insert(
        "source".into(),
        json!(lead.source.as_deref().unwrap_or(DEFAULT_SOURCE)),
    );
    body.insert("system".into(), json!(system));
    body.insert("type".into(), json!(EVENT_TYPE));
    put(&mut body, "message", lead.notes.clone());
    body.insert("person".into(), Value::Object(person));
    Value::Object(body)
}

/// Body for `PUT /v1/people/{id}?mergeTags=true`.
///
/// Names present on the lead; `emails` / `phones` only when the lead brings one the person does
/// not have yet (e-mails compared case-insensitively, phones by E.164), as the person's existing
/// entries (`value`, and `type` / `isPrimary` where present) plus the new one, because a PUT
/// replaces the list; `tags` = the lead's tags (merged server-side by `mergeTags=true`).
pub fn update_body(lead: &Lead, existing: &Value) -> Value {
    let mut body = Map::new();
    put(&mut body, "firstName", lead.first_name.clone());
    put(&mut body, "lastName", lead.last_name.clone());

    if let Some(email) = &lead.email {
        let current = existing_entries(existing, "emails");
        if !has_email(current.iter().map(|(v, _)| v.as_str()), email) {
            let mut list: Vec<Value> = current.into_iter().map(|(_, e)| e).collect();
            list.push(json!({ "value": email }));
            body.insert("emails".into(), Value::Array(list));
        }
    }
    if let Some(phone) = &lead.phone {
        let current = existing_entries(existing, "phones");
        if !has_phone(
            current.iter().map(|(v, _)| v.as_str()),
            phone,
            own_region(phone),
        ) {
            let mut list: Vec<Value> = current.into_iter().map(|(_, e)| e).collect();
            list.push(json!({ "value": phone.as_str() }));
            body.insert("phones".into(), Value::Array(list));
        }
    }
    if !lead.tags.is_empty() {
        body.insert("tags".into(), json!(lead.tags));
    }
    Value::Object(body)
}

/// The person's entries of `key` as (value, entry to send back). Entries without a value are
/// dropped.
fn existing_entries(existing: &Value, key: &str) -> Vec<(String, Value)> {
    json::array(json::field(existing, key))
        .iter()
        .filter_map(|item| {
            let value = entry_value(item, VALUE_KEYS)?;
            let mut entry = Map::new();
            entry.insert("value".into(), json!(value));
            put(&mut entry, "type", json::text_at(item, "type"));
            if let Some(p) = json::field(item, "isPrimary").filter(|p| !p.is_null()) {
                entry.insert("isPrimary".into(), json!(json::truthy(Some(p))));
            }
            Some((value, Value::Object(entry)))
        })
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
    fn name_field_wins_over_parts_and_strings_are_tolerated_in_lists() {
        let c = map_person(
            &json!({
                "id": "77", "name": "  Pat   Doe ", "firstName": "Patricia", "lastName": "Doe",
                "emails": ["PAT@EXAMPLE.COM"], "phones": ["+1 415 555 0123"]
            }),
            Region::US,
        )
        .into_contact()
        .unwrap();
        assert_eq!(c.display_name(), "Pat Doe");
        assert_eq!(c.email.as_deref(), Some("pat@example.com"));
        assert_eq!(c.phone.as_str(), "+14155550123");
        assert_eq!(c.external_id.as_deref(), Some("77"));
    }

    #[test]
    fn falls_back_to_created_and_skips_without_phones() {
        let m = map_person(
            &json!({"id": 5, "firstName": "A", "phones": []}),
            Region::US,
        );
        assert_eq!(
            m.skipped().map(|s| (s.reason, s.external_id.as_deref())),
            Some((SkipReason::NoPhone, Some("5")))
        );
        let c = map_person(
            &json!({"id": 6, "created": "2012-04-23T02:23:11Z", "phones": [{"value": "4155550123"}]}),
            Region::US,
        )
        .into_contact()
        .unwrap();
        assert_eq!(c.updated_at, Some("2012-04-23T02:23:11Z".parse().unwrap()));
    }

    #[test]
    fn event_body_full_and_minimal() {
        let l = lead(json!({
            "id": "1", "firstName": "Mary", "lastName": "Lee", "phone": "(415) 555-0123",
            "email": "Mary@Example.com", "source": "Echo Safe", "tags": ["buyer"], "notes": "Wants a call"
        }));
        assert_eq!(
            event_body(&l, "crmsync"),
            json!({
                "source": "Echo Safe", "system": "crmsync", "type": "General Inquiry",
                "message": "Wants a call",
                "person": {
                    "firstName": "Mary", "lastName": "Lee",
                    "emails": [{"value": "mary@example.com"}],
                    "phones": [{"value": "+14155550123"}],
                    "tags": ["buyer"]
                }
            })
        );
        let bare = lead(json!({"id": "2", "phone": "4155550123"}));
        assert_eq!(
            event_body(&bare, "MySystem"),
            json!({
                "source": "crmsync", "system": "MySystem", "type": "General Inquiry",
                "person": {"phones": [{"value": "+14155550123"}]}
            })
        );
    }

    #[test]
    fn update_body_adds_only_what_is_new() {
        let existing = json!({
            "id": 9,
            "emails": [{"value": "Mary@Example.com", "type": "home", "isPrimary": 1}],
            "phones": [{"value": "(415) 555-0123", "type": "mobile"}, {"type": "work"}, "junk-free?"]
        });
        let same = lead(
            json!({"id": "1", "firstName": "Mary", "phone": "+14155550123", "email": "mary@example.com"}),
        );
        assert_eq!(update_body(&same, &existing), json!({"firstName": "Mary"}));

        let new = lead(
            json!({"id": "1", "lastName": "Lee", "phone": "415-555-0199", "email": "m@work.co", "tags": ["a", "b"]}),
        );
        assert_eq!(
            update_body(&new, &existing),
            json!({
                "lastName": "Lee",
                "emails": [
                    {"value": "Mary@Example.com", "type": "home", "isPrimary": true},
                    {"value": "m@work.co"}
                ],
                "phones": [
                    {"value": "(415) 555-0123", "type": "mobile"},
                    {"value": "junk-free?"},
                    {"value": "+14155550199"}
                ],
                "tags": ["a", "b"]
            })
        );
        // A person with no lists at all (or junk in their place).
        let body = update_body(&new, &json!({"emails": "x", "phones": null}));
        assert_eq!(body["emails"], json!([{"value": "m@work.co"}]));
        assert_eq!(body["phones"], json!([{"value": "+14155550199"}]));
    }

    #[test]
    fn never_panics_on_junk_people() {
        let keys = [
            "id",
            "name",
            "firstName",
            "lastName",
            "emails",
            "phones",
            "value",
            "isPrimary",
            "type",
            "background",
            "updated",
            "created",
        ];
        let mut junk = Junk::new(11);
        let l = lead(
            json!({"id": "1", "firstName": "A", "phone": "4155550123", "email": "a@b.co", "tags": ["t"]}),
        );
        for _ in 0..3000 {
            let v = junk.value(&keys, 4);
            if let Mapped::Contact(c) = map_person(&v, Region::US) {
                assert!(!c.display_name().is_empty());
            }
            assert!(update_body(&l, &v).is_object());
        }
    }
}
