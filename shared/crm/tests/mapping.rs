//! Fixture-driven tests of each CRM's mapping: real-shaped CRM payloads and webhook bodies, mapped end
//! to end through the public API.

use chrono::{DateTime, Utc};
use crmsync_crm::followupboss::mapping as fub;
use crmsync_crm::lofty::mapping as lofty;
use crmsync_crm::map_record;
use crmsync_crm::rex::mapping as rex;
use crmsync_domain::{
    Contact, Lead, LeadEvent, LeadEventKind, Mapped, NormalizedContact, Provider, Region,
    SkipReason, SyncCursor, dedupe_by_phone,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let text = match name {
        "rex_webhook_record" => include_str!("fixtures/rex_webhook_record.json"),
        "rex_full_record_with_phones" => include_str!("fixtures/rex_full_record_with_phones.json"),
        "rex_search_response" => include_str!("fixtures/rex_search_response.json"),
        "rex_seed_generic" => include_str!("fixtures/rex_seed_generic.json"),
        "fub_people" => include_str!("fixtures/fub_people.json"),
        "lofty_leads" => include_str!("fixtures/lofty_leads.json"),
        "junk" => include_str!("fixtures/junk.json"),
        "lead_envelope" => include_str!("fixtures/lead_envelope.json"),
        "lead_supabase" => include_str!("fixtures/lead_supabase.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn contact(m: Mapped) -> Contact {
    match m {
        Mapped::Contact(c) => c,
        Mapped::Skipped(s) => panic!("expected a contact, got {s:?}"),
    }
}

fn skip(m: &Mapped) -> (Option<&str>, SkipReason) {
    match m {
        Mapped::Skipped(s) => (s.external_id.as_deref(), s.reason),
        Mapped::Contact(c) => panic!("expected a skip, got {c:?}"),
    }
}

fn rows<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_array().unwrap()
}

// ---------------------------------------------------------------------------------------------
// REX

#[test]
fn rex_webhook_record_from_the_docs_has_no_phone() {
    let m = rex::map_contact(&fixture("rex_webhook_record"), Region::AU);
    assert_eq!(skip(&m), (Some("36685959"), SkipReason::NoPhone));
}

#[test]
fn rex_full_record_prefers_primary_entries() {
    let c = contact(rex::map_contact(
        &fixture("rex_full_record_with_phones"),
        Region::AU,
    ));
    assert_eq!(c.external_id.as_deref(), Some("36685960"));
    assert_eq!(c.display_name(), "Olivia Nguyen");
    assert_eq!(c.email.as_deref(), Some("olivia.nguyen@example.com.au"));
    assert_eq!(c.phone.as_str(), "+61412345678");
    assert_eq!(c.updated_at, Some(at("2024-05-01T10:00:00Z")));
    assert_eq!(c.source, Provider::Rex);
}

#[test]
fn rex_webhook_record_with_a_phone_takes_its_name_from_contact_names() {
    let mut v = fixture("rex_webhook_record");
    v["related"]["contact_phones"] =
        json!([{"id": 1, "phone_number": "0412 345 678", "phone_primary": true}]);
    let c = contact(rex::map_contact(&v, Region::AU));
    assert_eq!(c.display_name(), "Test Contact 4");
    assert_eq!(c.updated_at, Some(at("2023-09-08T17:30:02Z")));
    assert_eq!(c.email, None);

    // Without contact_names, the search key is the name.
    v["related"]["contact_names"] = json!([]);
    assert_eq!(
        contact(rex::map_contact(&v, Region::AU)).display_name(),
        "Test Contact"
    );
}

#[test]
fn rex_search_rows_with_string_and_integer_values() {
    let v = fixture("rex_search_response");
    let mapped: Vec<Mapped> = rows(&v, &["result", "rows"])
        .iter()
        .map(|r| map_record(Provider::Rex, r, Region::AU))
        .collect();

    let jane = contact(mapped[0].clone());
    assert_eq!(jane.external_id.as_deref(), Some("102"));
    assert_eq!(jane.display_name(), "Jane Citizen");
    assert_eq!(jane.email.as_deref(), Some("jane@example.com.au"));
    assert_eq!(jane.phone.as_str(), "+61412345678");
    assert_eq!(jane.updated_at, Some(at("2023-09-08T17:30:02Z")));

    let bob = contact(mapped[1].clone());
    assert_eq!(bob.external_id.as_deref(), Some("103"));
    assert_eq!(bob.display_name(), "Bob Builder");
    assert_eq!(bob.email.as_deref(), Some("bob@builder"));
    assert_eq!(bob.phone.as_str(), "+61298765432");
    assert_eq!(bob.updated_at, Some(at("2024-05-01T10:00:00Z")));

    assert_eq!(skip(&mapped[2]), (Some("104"), SkipReason::InvalidPhone));
    assert_eq!(skip(&mapped[3]), (Some("105"), SkipReason::NoPhone));
    // A US local number is not valid in region AU.
    assert_eq!(skip(&mapped[4]), (Some("106"), SkipReason::InvalidPhone));
    // ... but is in region US, and a junk system_modtime is just an unknown time.
    let us = contact(map_record(
        Provider::Rex,
        &rows(&v, &["result", "rows"])[4],
        Region::US,
    ));
    assert_eq!(
        (us.phone.as_str(), us.display_name().as_str(), us.updated_at),
        ("+14155550123", "Local Us", None)
    );
}

#[test]
fn rex_seed_generic_shape() {
    let v = fixture("rex_seed_generic");
    let m: Vec<Mapped> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| rex::map_contact(r, Region::US))
        .collect();

    let sam = contact(m[0].clone());
    assert_eq!(sam.external_id.as_deref(), Some("rex-1"));
    assert_eq!(sam.display_name(), "Sam Smith");
    assert_eq!(sam.email.as_deref(), Some("sam@smith.io"));
    assert_eq!(sam.phone.as_str(), "+14155550123");
    assert_eq!(sam.notes.as_deref(), Some("Met at the open home"));
    assert_eq!(sam.updated_at, Some(at("2024-02-03T04:05:06Z")));

    let priya = contact(m[1].clone());
    assert_eq!(priya.external_id.as_deref(), Some("7"));
    assert_eq!(priya.display_name(), "Priya Patel");
    assert_eq!(priya.email.as_deref(), Some("priya@example.com"));
    assert_eq!(priya.phone.as_str(), "+442079460958");
    assert_eq!(priya.notes.as_deref(), Some("Prefers text"));
    assert_eq!(priya.updated_at, Some(at("2024-03-04T04:06:07Z")));

    let anon = contact(m[2].clone());
    assert_eq!(anon.display_name(), "only.email@example.com");
    assert_eq!(anon.phone.as_str(), "+14155550123");
    assert_eq!(anon.updated_at, Some(at("2024-03-04T06:06:07Z")));

    assert_eq!(skip(&m[3]), (Some("9"), SkipReason::NoPhone));
    assert_eq!(skip(&m[4]), (Some("10"), SkipReason::InvalidPhone));
}

// ---------------------------------------------------------------------------------------------
// Follow Up Boss

#[test]
fn fub_people_list() {
    let v = fixture("fub_people");
    let m: Vec<Mapped> = rows(&v, &["people"])
        .iter()
        .map(|p| fub::map_person(p, Region::US))
        .collect();

    let maria = contact(m[0].clone());
    assert_eq!(maria.external_id.as_deref(), Some("950"));
    assert_eq!(maria.display_name(), "Maria Gonzalez");
    assert_eq!(
        maria.email.as_deref(),
        Some("maria@example.com"),
        "isPrimary email wins"
    );
    assert_eq!(
        maria.phone.as_str(),
        "+14155550142",
        "isPrimary phone wins though not first"
    );
    assert_eq!(maria.notes.as_deref(), Some("Relocating from Austin"));
    assert_eq!(maria.updated_at, Some(at("2024-05-01T10:00:00Z")));
    assert_eq!(maria.source, Provider::FollowUpBoss);

    let ken = contact(m[1].clone());
    assert_eq!(ken.external_id.as_deref(), Some("951"));
    assert_eq!(ken.display_name(), "Ken Ito");
    assert_eq!(
        ken.phone.as_str(),
        "+61412345678",
        "invalid primary falls back to the list"
    );
    assert_eq!(ken.email, None);

    let anon = contact(m[2].clone());
    assert_eq!(
        anon.display_name(),
        "anon@example.org",
        "no name: the e-mail"
    );
    assert_eq!(anon.notes, None, "blank background is no notes");

    assert_eq!(skip(&m[3]), (Some("953"), SkipReason::NoPhone));
    assert_eq!(skip(&m[4]), (Some("954"), SkipReason::InvalidPhone));

    let junky = contact(m[5].clone());
    assert_eq!(junky.external_id.as_deref(), Some("955"));
    assert_eq!(junky.phone.as_str(), "+14155550177");
    assert_eq!(
        junky.display_name(),
        "+14155550177",
        "no name and no e-mail: the phone"
    );
    assert_eq!(
        (junky.email, junky.notes, junky.updated_at),
        (None, None, None)
    );
}

// ---------------------------------------------------------------------------------------------
// Lofty

#[test]
fn lofty_leads_keep_int64_ids_exactly() {
    let v = fixture("lofty_leads");
    let leads = rows(&v, &["leads"]);
    let us: Vec<Mapped> = leads
        .iter()
        .map(|l| lofty::map_lead(l, Region::US))
        .collect();

    let wei = contact(us[0].clone());
    assert_eq!(wei.external_id.as_deref(), Some("651095960136641"));
    assert_eq!(wei.display_name(), "Wei Chen");
    assert_eq!(wei.email.as_deref(), Some("wei.chen@example.com"));
    assert_eq!(wei.phone.as_str(), "+14155550123");
    assert_eq!(
        wei.updated_at,
        Some(at("2024-05-01T10:00:00Z")),
        "epoch milliseconds"
    );
    assert_eq!(wei.source, Provider::Lofty);

    assert_eq!(
        skip(&us[1]),
        (Some("651095960136642"), SkipReason::InvalidPhone)
    );
    assert_eq!(skip(&us[2]), (Some("651095960136643"), SkipReason::NoPhone));
    assert_eq!(
        skip(&us[3]),
        (Some("651095960136644"), SkipReason::InvalidPhone)
    );
}

#[test]
fn lofty_leads_in_region_au() {
    let v = fixture("lofty_leads");
    let leads = rows(&v, &["leads"]);
    // "(415) 555-0123" is not an AU number, so the first phone that parses is the +1 one.
    let wei = contact(lofty::map_lead(&leads[0], Region::AU));
    assert_eq!(wei.phone.as_str(), "+14155550124");

    let olivia = contact(lofty::map_lead(&leads[1], Region::AU));
    assert_eq!(olivia.phone.as_str(), "+61412345678");
    assert_eq!(olivia.display_name(), "Olivia");
    assert_eq!(olivia.notes.as_deref(), Some("AU buyer"));
    // A lead carries no update time (crm-apis §2.2): its creation time is not taken for one.
    assert_eq!(olivia.updated_at, None, "no createTime fallback");
    assert_eq!(olivia.created_at, Some(at("2024-05-01T10:00:00Z")));

    let bad = lofty::map_lead(&leads[3], Region::AU);
    assert_eq!(skip(&bad).1, SkipReason::InvalidPhone);
}

// ---------------------------------------------------------------------------------------------
// Junk, across every mapper

#[test]
fn junk_never_panics_and_never_yields_a_contact_without_a_valid_phone() {
    let v = fixture("junk");
    for item in v.as_array().unwrap() {
        for p in Provider::ALL {
            for region in [Region::US, Region::AU] {
                if let Mapped::Contact(c) = map_record(p, item, region) {
                    panic!("{p} mapped junk {item} to {c:?}");
                }
            }
        }
    }
    // Shapes that are not records at all carry no id and count as "no phone".
    assert_eq!(
        skip(&map_record(Provider::Lofty, &json!([1, 2]), Region::US)),
        (None, SkipReason::NoPhone)
    );
    // A phone that is an integer is still read.
    let c = contact(map_record(
        Provider::Lofty,
        &json!({"leadId": 1, "phones": [4155550123_u64]}),
        Region::US,
    ));
    assert_eq!(c.phone.as_str(), "+14155550123");
}

// ---------------------------------------------------------------------------------------------
// Normalized inspection shape and de-duplication

#[test]
fn contacts_fetch_shape_from_a_mapped_record() {
    let v = fixture("fub_people");
    let c = contact(fub::map_person(&rows(&v, &["people"])[0], Region::US));
    assert_eq!(
        serde_json::to_value(NormalizedContact::from(&c)).unwrap(),
        json!({
            "externalId": "950",
            "name": "Maria Gonzalez",
            "email": "maria@example.com",
            "phoneNumber": "+14155550142",
            "notes": "Relocating from Austin",
            "updatedAt": "2024-05-01T10:00:00Z"
        })
    );
}

#[test]
fn dedupe_across_a_page_of_lofty_leads() {
    let page = json!([
        {"leadId": 1, "firstName": "Old", "phones": ["(415) 555-0123"], "updateTime": 1714550000000_i64},
        {"leadId": 2, "firstName": "Other", "phones": ["(415) 555-0124"]},
        {"leadId": 3, "firstName": "New", "phones": ["+1 415 555 0123"], "updateTime": 1714557600000_i64}
    ]);
    let contacts: Vec<Contact> = page
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| lofty::map_lead(l, Region::US).into_contact())
        .collect();
    let names: Vec<String> = dedupe_by_phone(contacts)
        .into_iter()
        .map(|c| c.display_name())
        .collect();
    assert_eq!(names, ["New", "Other"]);
}

#[test]
fn cursor_over_two_incremental_pulls_with_a_shared_timestamp() {
    let v = fixture("rex_search_response");
    let rows = rows(&v, &["result", "rows"]);
    let mut cursor = SyncCursor::default();
    let mut stored = Vec::new();
    for r in rows {
        if let Mapped::Contact(c) = rex::map_contact(r, Region::AU) {
            let id = c.external_id.clone().unwrap();
            if cursor.admits(&id, c.updated_at) {
                cursor.observe(&id, c.updated_at);
                stored.push(id);
            }
        }
    }
    assert_eq!(stored, ["102", "103"]);
    assert_eq!(cursor.since, Some(at("2024-05-01T10:00:00Z")));
    assert_eq!(cursor.boundary_ids, ["103"]);

    // Next pull (>= since) returns 103 again and a new 107 at the same second.
    let again = [
        ("103", "2024-05-01T10:00:00Z"),
        ("107", "2024-05-01T10:00:00Z"),
    ];
    let admitted: Vec<&str> = again
        .iter()
        .filter(|(id, t)| cursor.admits(id, Some(at(t))))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(admitted, ["107"]);
}

// ---------------------------------------------------------------------------------------------
// Leads in and CRM bodies out

#[test]
fn lead_envelope_to_every_crm_body() {
    let event = LeadEvent::from_json(&fixture("lead_envelope")).unwrap();
    assert_eq!(event.kind, LeadEventKind::Created);
    let lead = Lead::from_payload(event.payload, Region::US).unwrap();
    assert_eq!(lead.id, "4a1f5c2e-lead");
    assert_eq!(lead.risk_score, Some(15));
    assert_eq!(
        lead.phone.as_ref().map(|p| p.as_str()),
        Some("+14155550123")
    );
    assert_eq!(lead.display_name(), "Jamie Rivera");
    // The update time, then the content: an edit that does not bump `updatedAt` is a new version.
    assert!(
        lead.version_key()
            .starts_with("2024-05-01T10:00:00.123Z/sha256:"),
        "{}",
        lead.version_key()
    );

    assert_eq!(
        fub::event_body(&lead, "crmsync"),
        json!({
            "source": "Echo Safe", "system": "crmsync", "type": "General Inquiry",
            "message": "Wants a 3-bed near schools",
            "person": {
                "firstName": "Jamie", "lastName": "Rivera",
                "emails": [{"value": "jamie.rivera@example.com"}],
                "phones": [{"value": "+14155550123"}],
                "tags": ["buyer", "pre-approved"]
            }
        })
    );
    assert_eq!(
        lofty::create_body(&lead),
        json!({
            "firstName": "Jamie", "lastName": "Rivera", "emails": ["jamie.rivera@example.com"],
            "phones": ["+14155550123"], "source": "Echo Safe", "tags": ["buyer", "pre-approved"]
        })
    );
    assert_eq!(
        rex::create_body(&lead)["data"]["related"]["contact_phones"],
        json!([{"phone_number": "+14155550123", "phone_primary": true}])
    );

    // Against the REX record from the docs: names update entry 40184941, both contact
    // methods are new, and the record had none, so they become primary.
    let body = rex::update_body("36685959", &lead, &fixture("rex_webhook_record"));
    assert_eq!(
        body,
        json!({"data": {"_id": "36685959", "related": {
            "contact_names": [{"id": 40184941, "name_first": "Jamie", "name_last": "Rivera"}],
            "contact_emails": [{"email_address": "jamie.rivera@example.com", "email_primary": true}],
            "contact_phones": [{"phone_number": "+14155550123", "phone_primary": true}]
        }}})
    );

    // Against the Lofty lead that already has this phone (in local format) and a tag.
    let existing = &rows(&fixture("lofty_leads"), &["leads"])[0].clone();
    assert_eq!(
        lofty::update_body(&lead, existing),
        json!({
            "firstName": "Jamie", "lastName": "Rivera",
            "emails": ["Wei.Chen@Example.com", "jamie.rivera@example.com"],
            "tags": ["Hot", "buyer", "pre-approved"]
        })
    );

    // Against the FUB person that has other phones and e-mails.
    let maria = &rows(&fixture("fub_people"), &["people"])[0].clone();
    assert_eq!(
        fub::update_body(&lead, maria),
        json!({
            "firstName": "Jamie", "lastName": "Rivera",
            "emails": [
                {"value": "maria.work@example.com", "type": "work"},
                {"value": "Maria@Example.com", "type": "home", "isPrimary": true},
                {"value": "jamie.rivera@example.com"}
            ],
            "phones": [
                {"value": "(415) 555-0100", "type": "home"},
                {"value": "(415) 555-0142", "type": "mobile", "isPrimary": true},
                {"value": "(415) 555-0199", "type": "work"},
                {"value": "+14155550123"}
            ],
            "tags": ["buyer", "pre-approved"]
        })
    );
}

#[test]
fn supabase_row_and_version_key_without_updated_at() {
    let event = LeadEvent::from_json(&fixture("lead_supabase")).unwrap();
    assert_eq!(event.kind, LeadEventKind::Updated);
    let lead = Lead::from_payload(event.payload.clone(), Region::US).unwrap();
    assert_eq!(lead.id, "1842");
    assert_eq!(lead.risk_score, Some(15));
    assert_eq!(lead.updated_at, None);
    let key = lead.version_key();
    assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
    // The same lead delivered again, as our camelCase envelope in another key order, is the
    // same version.
    let again = LeadEvent::from_json(&json!({
        "lead": {
            "tags": [], "email": "JAMIE.RIVERA@example.com", "phone": "(415) 555-0123",
            "riskScore": "15", "lastName": "Rivera", "firstName": "Jamie",
            "userId": "6f1c2b1e-3d4a-4c5b-8e9f-0a1b2c3d4e5f", "id": "1842"
        },
        "event": "lead.updated"
    }))
    .unwrap();
    assert_eq!(
        Lead::from_payload(again.payload, Region::US)
            .unwrap()
            .version_key(),
        key
    );
    // A different risk score is a different version.
    let mut changed = event.payload;
    changed.risk_score = Some(json!(16));
    assert_ne!(
        Lead::from_payload(changed, Region::US)
            .unwrap()
            .version_key(),
        key
    );
}
