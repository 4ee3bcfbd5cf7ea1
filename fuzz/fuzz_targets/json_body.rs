//! The request body parser of every JSON route (`crmsync_lambda::http::parse_json`): any bytes give a
//! value or a 400, never a panic; the lead payload reader on whatever parses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match crmsync_lambda::http::parse_json::<serde_json::Value>(data) {
        Ok(value) => {
            let _ = serde_json::from_value::<crmsync_domain::LeadPayload>(value.clone());
            let _ = crmsync_app::pull::PullState::from_stored(Some(&value));
        }
        Err(e) => assert_eq!(e.status().as_u16(), 400),
    }
});
