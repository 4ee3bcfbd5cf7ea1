//! `PhoneNumber::parse` on any text, in every default region: no panic escapes, and what it accepts
//! is canonical E.164 that parses to itself.
#![no_main]
use crmsync_domain::{PhoneNumber, Region};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for region in [Region::US, Region::AU, Region::GB] {
        if let Ok(phone) = PhoneNumber::parse(&text, region) {
            let e164 = PhoneNumber::from_e164(phone.as_str()).expect("parse gives E.164");
            assert_eq!(e164, phone);
            assert_eq!(
                PhoneNumber::parse(phone.as_str(), region).ok(),
                Some(phone.clone())
            );
            let _ = phone.matches(&text);
        }
    }
    let _ = PhoneNumber::from_e164(&text);
});
