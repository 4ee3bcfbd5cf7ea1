//! The path and query parsers of every route (`provider`, `since`, `limit`, `path_param`, `query`) on
//! any request line: a value or a 400, never a panic or another status.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(uri) = format!("https://api.example.com/api/integrations/{text}").parse::<http::Uri>()
    else {
        return;
    };
    let Ok(req) = http::Request::builder()
        .uri(uri)
        .body(lambda_http::Body::Empty)
    else {
        return;
    };
    use crmsync_lambda::request as web;
    for result in [
        web::provider(&req).map(|_| ()),
        web::since(&req).map(|_| ()),
        web::limit(&req, 50, 200).map(|_| ()),
    ] {
        if let Err(e) = result {
            assert_eq!(e.status().as_u16(), 400);
        }
    }
    let _ = web::path_param(&req, "id", "integrations");
    let _ = web::query(&req, "before").map(|b| crmsync_store::LogCursor::decode(&b));
    let _ = web::query(&req, "state");
});
