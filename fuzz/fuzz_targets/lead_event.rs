//! The lead webhook's body readers (`LeadEvent::from_json`, `Lead::from_payload`) and the outbound CRM
//! mappers fed by them (Follow Up Boss event/update, Lofty create/update, REX create/update bodies).
#![no_main]
use crmsync_crm::followupboss::mapping as fub;
use crmsync_crm::lofty::mapping as lofty;
use crmsync_crm::rex::mapping as rex;
use crmsync_domain::{Lead, LeadEvent, Region};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(event) = LeadEvent::from_json(&value) else {
        return;
    };
    let Ok(lead) = Lead::from_payload(event.payload, Region::US) else {
        return;
    };
    let _ = lead.version_key();
    let _ = lead.display_name();
    let existing = value
        .get("existing")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let _ = fub::event_body(&lead, "crmsync");
    let _ = fub::update_body(&lead, &existing);
    let _ = lofty::create_body(&lead);
    let _ = lofty::update_body(&lead, &existing);
    let _ = rex::create_body(&lead);
    let _ = rex::update_body("1", &lead, &existing);
    // What is stored in the outbox reads back as the same lead (the push reads it so).
    let stored = serde_json::to_value(&lead).expect("a lead serializes");
    let again: Lead = serde_json::from_value(stored).expect("a stored lead reads back");
    assert_eq!(again, lead);
    assert_eq!(again.version_key(), lead.version_key());
});
