//! Caller authentication: any token, as a Bearer header or in the `alto_admin` cookie, is refused
//! (401) unless it is an HS256 token signed with the secret; the fuzzer cannot forge one.
#![no_main]
use crmsync_lambda::auth::JwtVerifier;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-jwt-secret-0123456789-abcdefghij";

fuzz_target!(|data: &[u8]| {
    let verifier = JwtVerifier::new(SECRET);
    let text = String::from_utf8_lossy(data);
    if let Err(e) = verifier.verify(&text) {
        assert_eq!(e.status().as_u16(), 401);
    } else {
        panic!("a token the fuzzer made was accepted: {text:?}");
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        headers.append(http::header::COOKIE, v.clone());
        headers.append(http::header::AUTHORIZATION, v);
        assert!(verifier.authenticate(&headers).is_err());
        let _ = crmsync_lambda::auth::cookie_value(&headers, "alto_admin");
    }
});
