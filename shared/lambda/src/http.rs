//! HTTP helpers shared by the handlers: JSON responses, redirects and bounded JSON bodies.

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The response type of every HTTP function.
pub type Response = lambda_http::Response<lambda_http::Body>;

/// The largest request body accepted (contract: over 256 KiB is a 400).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => http::Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(body.into())
            .unwrap_or_else(|e| ApiError::internal(e).into_response()),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// 204 No Content.
pub fn no_content() -> Response {
    let mut resp = http::Response::new(lambda_http::Body::Empty);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// A 302 to `location`, setting each cookie given.
pub fn redirect(location: &str, set_cookies: &[String]) -> Response {
    let mut resp = http::Response::new(lambda_http::Body::Empty);
    *resp.status_mut() = StatusCode::FOUND;
    let headers = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
        }
        Err(e) => return ApiError::internal(format!("bad redirect location: {e}")).into_response(),
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in set_cookies {
        match HeaderValue::from_str(cookie) {
            Ok(v) => {
                headers.append(header::SET_COOKIE, v);
            }
            Err(e) => return ApiError::internal(format!("bad cookie: {e}")).into_response(),
        }
    }
    resp
}

/// A 400 that says why for a body over [`MAX_BODY_BYTES`].
pub fn check_body_size(body: &[u8]) -> Result<(), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::bad_request(format!(
            "The request body is {} bytes; the limit is {MAX_BODY_BYTES} bytes.",
            body.len()
        )));
    }
    Ok(())
}

/// Parses a JSON request body of at most [`MAX_BODY_BYTES`]; anything else is a 400 that says why.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    check_body_size(body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; a JSON object was expected.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }

    #[test]
    fn bodies_are_bounded_and_checked() {
        assert_eq!(parse_json::<Body>(br#"{"name":"a"}"#).unwrap().name, "a");
        let err = parse_json::<Body>(br#"{"name":1}"#).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.detail().contains("invalid type"), "{}", err.detail());
        let err = parse_json::<Body>(b"   ").unwrap_err();
        assert!(err.detail().contains("empty"));
        let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        let err = parse_json::<Body>(big.as_bytes()).unwrap_err();
        assert!(err.detail().contains("limit"));
        let err = parse_json::<Body>(&[0xff, 0xfe, b'{']).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let deep = "[".repeat(10_000);
        assert_eq!(
            parse_json::<Body>(deep.as_bytes()).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn redirects_set_location_and_cookies() {
        let resp = redirect(
            "https://example.com/x?y=1",
            &["a=b; HttpOnly".into(), "c=d".into()],
        );
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(
            resp.headers()[header::LOCATION],
            "https://example.com/x?y=1"
        );
        assert_eq!(resp.headers().get_all(header::SET_COOKIE).iter().count(), 2);
    }
}
