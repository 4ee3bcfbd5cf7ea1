//! REX (Rex Software) contacts (crm-apis.md §3.4–3.5, and the REX seed's generic field names).
//!
//! One reader handles the three shapes seen in the wild, field by field:
//! 1. full / webhook record: `related.contact_names[0]` (`name_first` + `name_last`, else
//!    `system_search_key`), `related.contact_emails[]` (`email_address`, `email_primary`),
//!    `related.contact_phones[]` (`phone_number`, `phone_primary`), `system_modtime`, `id`;
//! 2. flattened search row: `name` or `name_first` + `name_last`, `email_address`,
//!    `phone_number`, `system_modtime` (any of them possibly strings);
//! 3. the seed's generic shape: `name` or `first_name` + `last_name`, `primary_email` or
//!    `emails[]`, `primary_phone` or `phones[]`, `notes` or `description`, `updated_at` or
//!    `last_updated`.

use serde_json::{Map, Value, json};

use crate::mapping::{
    Candidates, Draft, entry_primary, entry_value, first_time, has_email, has_phone, own_region,
};
use crmsync_domain::Lead;
use crmsync_domain::Mapped;
use crmsync_domain::Provider;
use crmsync_domain::Region;
use crmsync_domain::json;
use crmsync_domain::json::Json;

const EMAIL_KEYS: &[&str] = &["email_address", "value", "email", "address"];
const PHONE_KEYS: &[&str] = &["phone_number", "value", "number", "phone"];

/// When a REX record last changed (`system_modtime`, else `updated_at` or `last_updated`): what the
/// client pages by.
pub fn updated_at<J: Json>(v: &J) -> Option<chrono::DateTime<chrono::Utc>> {
    first_time(v, &["system_modtime", "updated_at", "last_updated"])
}

/// Maps a REX contact in any of the three shapes.
pub fn map_contact<J: Json>(v: &J, region: Region) -> Mapped {
    read(v).finish(Provider::Rex, region)
}

fn related<'a, J: Json>(v: &'a J, key: &str) -> &'a [J] {
    json::array(json::field(v, "related").and_then(|r| json::field(r, key)))
}

fn read<J: Json>(v: &J) -> Draft {
    let first_entry = related(v, "contact_names").first();
    let name = first_entry
        .and_then(|n| {
            json::join_name(
                json::text_at(n, "name_first").as_deref(),
                json::text_at(n, "name_last").as_deref(),
            )
        })
        .or_else(|| json::first_text(v, &["name", "name_full"]).and_then(|n| json::clean_name(&n)))
        .or_else(|| {
            json::join_name(
                json::text_at(v, "name_first").as_deref(),
                json::text_at(v, "name_last").as_deref(),
            )
        })
        .or_else(|| {
            json::join_name(
                json::text_at(v, "first_name").as_deref(),
                json::text_at(v, "last_name").as_deref(),
            )
        })
        .or_else(|| json::first_text(v, &["system_search_key", "company_name"]));

    let mut d = Draft {
        external_id: ["id", "_id"]
            .iter()
            .find_map(|k| json::field(v, k).and_then(json::id)),
        name,
        notes: json::first_text(v, &["notes", "description"]),
        updated_at: updated_at(v),
        created_at: first_time(v, &["system_ctime", "created_at"]),
        // `system_record_state` (crm-apis §3.5) is `active` for a live record; an archived or
        // trashed one (§3.4 `search_state`) is gone from the account.
        deleted: json::text_at(v, "system_record_state")
            .is_some_and(|s| !s.eq_ignore_ascii_case("active")),
        ..Draft::default()
    };

    // Full record.
    for item in related(v, "contact_emails") {
        d.emails.add(
            entry_value(item, EMAIL_KEYS),
            entry_primary(item, &["email_primary"]),
        );
    }
    for item in related(v, "contact_phones") {
        d.phones.add(
            entry_value(item, PHONE_KEYS),
            entry_primary(item, &["phone_primary"]),
        );
    }
    // Search row and generic shape.
    d.emails.add(json::text_at(v, "primary_email"), true);
    d.emails
        .add(json::first_text(v, &["email_address", "email"]), false);
    list(&mut d.emails, json::field(v, "emails"), EMAIL_KEYS);

    d.phones.add(
        json::field(v, "primary_phone").and_then(json::text_or_integer),
        true,
    );
    for key in ["phone_number", "phone"] {
        d.phones
            .add(json::field(v, key).and_then(json::text_or_integer), false);
    }
    list(&mut d.phones, json::field(v, "phones"), PHONE_KEYS);
    d
}

fn list<J: Json>(into: &mut Candidates, v: Option<&J>, keys: &[&str]) {
    for item in json::array(v) {
        into.add(entry_value(item, keys), false);
    }
}

/// Body for `POST /v1/rex/contacts/create`:
/// `{"data":{"type":"person","related":{"contact_names":[{"name_first","name_last"}],
/// "contact_emails":[{"email_address","email_primary":true}],
/// "contact_phones":[{"phone_number","phone_primary":true}]}}}`; empty lists omitted.
pub fn create_body(lead: &Lead) -> Value {
    let mut related = Map::new();
    if let Some(names) = names_entry(lead, None) {
        related.insert("contact_names".into(), json!([names]));
    }
    if let Some(email) = &lead.email {
        related.insert(
            "contact_emails".into(),
            json!([{ "email_address": email, "email_primary": true }]),
        );
    }
    if let Some(phone) = &lead.phone {
        related.insert(
            "contact_phones".into(),
            json!([{ "phone_number": phone.as_str(), "phone_primary": true }]),
        );
    }
    json!({ "data": { "type": "person", "related": related } })
}

/// Body for `POST /v1/rex/contacts/update`:
/// `{"data":{"_id": external_id,"related":{"contact_names":[…],"contact_emails":[…],
/// "contact_phones":[…]}}}`.
///
/// `contact_names` is sent when the lead has a name; it carries the `id` of the record's first
/// name entry when `existing` has one, so REX updates that entry instead of adding a second.
/// `contact_emails` / `contact_phones` hold only an e-mail / phone the existing record does not
/// have (in any of the three shapes); the new entry is marked primary only when the record had
/// none.
pub fn update_body(external_id: &str, lead: &Lead, existing: &Value) -> Value {
    let name_id = related(existing, "contact_names")
        .first()
        .and_then(|n| json::field(n, "id"))
        .filter(|id| json::id(*id).is_some())
        .cloned();
    let mut related = Map::new();
    if let Some(names) = names_entry(lead, name_id) {
        related.insert("contact_names".into(), json!([names]));
    }

    let current = read(existing);
    if let Some(email) = &lead.email
        && !has_email(current.emails.iter(), email)
    {
        related.insert(
            "contact_emails".into(),
            json!([{ "email_address": email, "email_primary": current.emails.is_empty() }]),
        );
    }
    if let Some(phone) = &lead.phone
        && !has_phone(current.phones.iter(), phone, own_region(phone))
    {
        related.insert(
            "contact_phones".into(),
            json!([{ "phone_number": phone.as_str(), "phone_primary": current.phones.is_empty() }]),
        );
    }
    json!({ "data": { "_id": external_id, "related": related } })
}

fn names_entry(lead: &Lead, id: Option<Value>) -> Option<Value> {
    if lead.first_name.is_none() && lead.last_name.is_none() {
        return None;
    }
    let mut entry = Map::new();
    if let Some(id) = id {
        entry.insert("id".into(), id);
    }
    crate::mapping::put(&mut entry, "name_first", lead.first_name.clone());
    crate::mapping::put(&mut entry, "name_last", lead.last_name.clone());
    Some(Value::Object(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::test_support::Junk;
    use crmsync_domain::LeadPayload;

    fn lead(v: Value) -> Lead {
        let mut v = v;
        v["userId"] = json!("6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f");
        Lead::from_payload(
            serde_json::from_value::<LeadPayload>(v).unwrap(),
            Region::AU,
        )
        .unwrap()
    }

    #[test]
    fn primary_entries_win_in_full_records() {
        let c = map_contact(
            &json!({
                "id": 1,
                "related": {
                    "contact_names": [{"name_first": "Jo", "name_last": null}],
                    "contact_emails": [
                        {"email_address": "old@x.com", "email_primary": false},
                        {"email_address": "Main@X.com", "email_primary": "1"}
                    ],
                    "contact_phones": [
                        {"phone_number": "0412 345 678", "phone_primary": 0},
                        {"phone_number": "(02) 9876 5432", "phone_primary": true}
                    ]
                }
            }),
            Region::AU,
        )
        .into_contact()
        .unwrap();
        assert_eq!(c.display_name(), "Jo");
        assert_eq!(c.email.as_deref(), Some("main@x.com"));
        assert_eq!(c.phone.as_str(), "+61298765432");
    }

    #[test]
    fn create_body_full_and_minimal() {
        let l = lead(
            json!({"id": "1", "firstName": "Jo", "lastName": "Bloggs", "phone": "0412 345 678", "email": "jo@x.com"}),
        );
        assert_eq!(
            create_body(&l),
            json!({"data": {"type": "person", "related": {
                "contact_names": [{"name_first": "Jo", "name_last": "Bloggs"}],
                "contact_emails": [{"email_address": "jo@x.com", "email_primary": true}],
                "contact_phones": [{"phone_number": "+61412345678", "phone_primary": true}]
            }}})
        );
        let bare = lead(json!({"id": "2", "phone": "0412 345 678"}));
        assert_eq!(
            create_body(&bare),
            json!({"data": {"type": "person", "related": {
                "contact_phones": [{"phone_number": "+61412345678", "phone_primary": true}]
            }}})
        );
    }

    #[test]
    fn update_body_against_a_full_record() {
        let existing = json!({
            "id": 36685959,
            "related": {
                "contact_names": [{"id": 40184941, "name_first": "Test", "name_last": "Contact 4"}],
                "contact_emails": [{"email_address": "Test@Example.com", "email_primary": true}],
                "contact_phones": []
            }
        });
        let l = lead(
            json!({"id": "1", "firstName": "Tess", "lastName": "Contact", "phone": "0412 345 678", "email": "test@example.com"}),
        );
        assert_eq!(
            update_body("36685959", &l, &existing),
            json!({"data": {"_id": "36685959", "related": {
                "contact_names": [{"id": 40184941, "name_first": "Tess", "name_last": "Contact"}],
                "contact_phones": [{"phone_number": "+61412345678", "phone_primary": true}]
            }}})
        );
    }

    #[test]
    fn update_body_against_a_flat_row_adds_nothing_known() {
        let existing = json!({"_id": "102", "name": "Jo", "email_address": "jo@x.com", "phone_number": "0412345678"});
        let l = lead(json!({"id": "1", "phone": "+61 412 345 678", "email": "JO@x.com"}));
        assert_eq!(
            update_body("102", &l, &existing),
            json!({"data": {"_id": "102", "related": {}}})
        );
        let l2 = lead(json!({"id": "1", "email": "new@x.com"}));
        assert_eq!(
            update_body("102", &l2, &existing)["data"]["related"],
            json!({"contact_emails": [{"email_address": "new@x.com", "email_primary": false}]})
        );
    }

    #[test]
    fn never_panics_on_junk_records() {
        let keys = [
            "id",
            "_id",
            "related",
            "contact_names",
            "contact_emails",
            "contact_phones",
            "name_first",
            "name_last",
            "email_address",
            "phone_number",
            "email_primary",
            "phone_primary",
            "system_modtime",
            "system_search_key",
            "name",
            "emails",
            "phones",
            "primary_phone",
            "primary_email",
            "value",
            "updated_at",
        ];
        let mut junk = Junk::new(7);
        let l =
            lead(json!({"id": "1", "firstName": "A", "phone": "0412345678", "email": "a@b.co"}));
        for _ in 0..3000 {
            let v = junk.value(&keys, 5);
            let _ = map_contact(&v, Region::AU);
            assert!(update_body("1", &l, &v)["data"].is_object());
        }
    }
}
