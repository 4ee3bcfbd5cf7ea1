//! Every CRM mapper (REX, Follow Up Boss, Lofty) on any JSON a CRM could send: no panic, and a mapped
//! contact always has a valid E.164 phone. The first byte picks the default phone region.
#![no_main]
use crmsync_crm::map_record;
use crmsync_domain::{Mapped, PhoneNumber, Provider, Region};
use libfuzzer_sys::fuzz_target;

const REGIONS: [Region; 5] = [Region::US, Region::AU, Region::GB, Region::CA, Region::NZ];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let region = REGIONS[pick as usize % REGIONS.len()];
    for provider in [Provider::Rex, Provider::FollowUpBoss, Provider::Lofty] {
        // A page of records is an array; the mappers also see each element.
        let records: Vec<&serde_json::Value> = match &value {
            serde_json::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for record in records {
            let mapped = map_record(provider, record, region);
            let _ = (mapped.updated_at(), mapped.external_id());
            if let Mapped::Contact(c) = mapped {
                assert!(
                    PhoneNumber::from_e164(c.phone.as_str()).is_ok(),
                    "a mapped contact has an E.164 phone"
                );
            }
        }
    }
});
