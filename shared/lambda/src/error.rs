//! The one error type that reaches callers: `{"error": "<code>", "detail": "<sentence>"}` with the
//! contract's status codes. Nothing else is ever turned into a response; the use cases' errors become
//! one here, in one place ([`From<AppError>`]).

use crmsync_app::AppError;
use http::StatusCode;
use serde::Serialize;

/// The error codes of the contract, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    InvalidCredentials,
    RateLimited,
    UpstreamError,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::InvalidCredentials => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The longest `detail` we send; longer sentences (which can only come from echoing input) are cut.
const MAX_DETAIL_CHARS: usize = 300;

/// An error a caller may see. Build it with the constructors; `internal` logs its cause and shows none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    detail: &'a str,
}

impl ApiError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(MAX_DETAIL_CHARS) {
            detail.truncate(cut);
            detail.push('…');
        }
        ApiError {
            code,
            detail,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, detail)
    }
    /// The CRM refused the key or token.
    pub fn invalid_credentials(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidCredentials, detail)
    }
    /// Too many calls; the caller may retry after `retry_after_secs` (at least 1).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        let mut err = Self::new(
            ErrorCode::RateLimited,
            format!(
                "Too many requests; retry in {secs} second{}.",
                if secs == 1 { "" } else { "s" }
            ),
        );
        err.retry_after_secs = Some(secs);
        err
    }
    /// A CRM is limiting our requests: the caller may retry after `retry_after_secs` (at least 1).
    pub fn crm_rate_limited(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut err = Self::new(ErrorCode::RateLimited, detail);
        err.retry_after_secs = Some(retry_after_secs.max(1));
        err
    }
    /// The CRM failed after retries. `detail` must not contain the CRM's raw body.
    pub fn upstream(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::UpstreamError, detail)
    }
    /// Something went wrong on our side. The cause is logged; the caller sees no internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "An internal error occurred; it has been logged.",
        )
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    pub fn detail(&self) -> &str {
        &self.detail
    }
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// The JSON body `{"error","detail"}`.
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: self.code.as_str(),
            detail: &self.detail,
        })
        .unwrap_or_else(|_| r#"{"error":"internal","detail":"An internal error occurred."}"#.into())
    }

    /// The HTTP response: status, `application/json`, and `Retry-After` for 429.
    pub fn into_response(self) -> lambda_http::Response<lambda_http::Body> {
        let mut builder = http::Response::builder()
            .status(self.status())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "no-store");
        if let Some(secs) = self.retry_after_secs {
            builder = builder.header(http::header::RETRY_AFTER, secs.to_string());
        }
        let body = self.body();
        builder
            .body(body.clone().into())
            .unwrap_or_else(|_| http::Response::new(body.into()))
    }
}

impl From<AppError> for ApiError {
    /// Each kind of use-case failure as the contract answers it. An internal failure's cause is logged
    /// here and never shown.
    fn from(err: AppError) -> Self {
        match err {
            AppError::BadRequest(d) => ApiError::bad_request(d),
            AppError::NotFound(d) => ApiError::not_found(d),
            AppError::Unauthorized(d) => ApiError::unauthorized(d),
            AppError::Busy(d) => ApiError::conflict(d),
            AppError::InvalidCredentials(d) => ApiError::invalid_credentials(d),
            AppError::Upstream(d) => ApiError::upstream(d),
            AppError::CrmRateLimited {
                detail,
                retry_after,
            } => ApiError::crm_rate_limited(detail, retry_after.as_secs_f64().ceil() as u64),
            AppError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_contract_status() {
        let cases = [
            (ApiError::bad_request("x"), 400, "bad_request"),
            (ApiError::unauthorized("x"), 401, "unauthorized"),
            (ApiError::forbidden("x"), 403, "forbidden"),
            (ApiError::not_found("x"), 404, "not_found"),
            (ApiError::conflict("x"), 409, "conflict"),
            (
                ApiError::invalid_credentials("x"),
                422,
                "invalid_credentials",
            ),
            (ApiError::rate_limited(3), 429, "rate_limited"),
            (ApiError::upstream("x"), 502, "upstream_error"),
            (ApiError::internal("boom"), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(
                resp.headers()[http::header::CONTENT_TYPE],
                "application/json"
            );
            let body: serde_json::Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
            assert_eq!(body["error"], code);
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
            assert_eq!(
                body.as_object().unwrap().len(),
                2,
                "only error and detail: {body}"
            );
        }
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let resp = ApiError::rate_limited(0).into_response();
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        let resp = ApiError::rate_limited(42).into_response();
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "42");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal("password authentication failed for user \"secret-user\"");
        assert!(!err.body().contains("secret-user"));
        assert!(!err.detail().contains("password"));
    }

    #[test]
    fn use_case_errors_get_the_contract_codes() {
        let cases = [
            (AppError::BadRequest("b".into()), 400),
            (AppError::NotFound("n".into()), 404),
            (AppError::Busy("c".into()), 409),
            (AppError::InvalidCredentials("i".into()), 422),
            (AppError::Upstream("u".into()), 502),
            (AppError::internal("the password is hunter2"), 500),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status().as_u16(), status);
            assert!(!api.body().contains("hunter2"));
        }
    }

    #[test]
    fn long_details_are_cut() {
        let err = ApiError::bad_request("x".repeat(10_000));
        assert!(err.detail().chars().count() <= MAX_DETAIL_CHARS + 1);
    }
}
