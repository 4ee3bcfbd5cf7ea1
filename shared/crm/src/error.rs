//! The one error type of the CRM clients, and the reading of CRM error bodies.
//!
//! A CRM error body is never copied into an error or a log line: REX echoes the session token in
//! its error bodies, and other CRMs echo request data. Only the CRM's short error *code* is kept
//! (FUB `errorMessage`, Lofty `code`, REX `error.type`), shortened and stripped of control
//! characters.

use std::time::Duration;

use crmsync_domain::Provider;
use serde_json::Value;

/// Why a CRM call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    /// The CRM refused the API key or access token (HTTP 401/403, Lofty code 200058 or
    /// `BAD_CREDENTIALS`, REX `AuthenticationError`).
    #[error("the CRM refused the API key or access token")]
    InvalidCredentials,
    /// The CRM still answered 429 after the retries, or asked for a wait longer than we are
    /// willing to sleep.
    #[error("the CRM is rate limiting requests; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    /// The CRM answered with an error. `message` is our sentence plus, at most, the CRM's short
    /// error code; never the raw body.
    #[error("{message} (HTTP {status})")]
    Upstream { status: u16, message: String },
    /// The CRM could not be reached (connection refused, timeout, dropped connection).
    #[error("could not reach the CRM: {0}")]
    Transport(String),
    /// The CRM answered 2xx with a body we cannot read.
    #[error("unexpected response from the CRM: {0}")]
    Decode(String),
    /// The record does not exist in the CRM.
    #[error("the record was not found in the CRM")]
    NotFound,
}

impl CrmError {
    /// Whether trying the same operation again later may succeed: transport failures, rate
    /// limits, 5xx (and 408) answers and unreadable bodies. Refused credentials, missing records
    /// and other 4xx answers will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            CrmError::Transport(_) | CrmError::RateLimited { .. } | CrmError::Decode(_) => true,
            CrmError::Upstream { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            CrmError::InvalidCredentials | CrmError::NotFound => false,
        }
    }
}

/// The longest CRM error code kept in a message.
const MAX_CODE_CHARS: usize = 80;

/// The CRM's short error code from an error body, when the body has one where that CRM puts it:
/// FUB `errorMessage`, Lofty `code` (number or string), REX `error.type`. Bare strings, HTML
/// pages and unknown shapes give `None`.
pub(crate) fn error_code(provider: Provider, body: Option<&Value>) -> Option<String> {
    let body = body?;
    let raw = match provider {
        Provider::FollowUpBoss => body.get("errorMessage"),
        Provider::Lofty => body.get("code"),
        Provider::Rex => body.get("error").and_then(|e| e.get("type")),
    }?;
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CODE_CHARS)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

/// The REX `error` object of a body, when it is set (REX may answer HTTP 200 with an error).
pub(crate) fn rex_error(body: Option<&Value>) -> Option<&Value> {
    body?.get("error").filter(|e| !e.is_null())
}

/// Whether a Lofty error code means the key or token was refused (`200058` "User in token does
/// not exist" comes with HTTP 400 when an API key is sent as Bearer).
fn lofty_refused(code: &str) -> bool {
    matches!(code, "200058" | "BAD_CREDENTIALS")
}

/// The error for a non-success answer: `status` is the HTTP status, or for a REX HTTP-200 error
/// the status REX put in `error.code` (400 when it has none). (A 429 answer is turned into
/// `RateLimited` by the retry loop, with the CRM's wait; this one is a REX 200-with-error.)
pub(crate) fn from_status(provider: Provider, status: u16, body: Option<&Value>) -> CrmError {
    let code = error_code(provider, body);
    if provider == Provider::Lofty && code.as_deref().is_some_and(lofty_refused) {
        return CrmError::InvalidCredentials;
    }
    match status {
        401 | 403 => CrmError::InvalidCredentials,
        404 => CrmError::NotFound,
        429 => CrmError::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        _ => {
            let mut message = format!("{} answered with an error", provider.label());
            if let Some(code) = code {
                message.push_str(&format!(" ({code})"));
            }
            CrmError::Upstream { status, message }
        }
    }
}

/// The effective status of a REX error object: its numeric `code` when it is an HTTP error
/// status, else 401 for `AuthenticationError`, 404 for `NotFoundError`, else 400.
pub(crate) fn rex_status(error: &Value) -> u16 {
    let code = error.get("code").and_then(|c| match c {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    match code {
        Some(c @ 400..=599) => c as u16,
        _ => match error.get("type").and_then(Value::as_str) {
            Some("AuthenticationError") => 401,
            Some("NotFoundError") => 404,
            _ => 400,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_come_from_where_each_crm_puts_them() {
        let fub = json!({"errorMessage": "Invalid phone\nnumber"});
        assert_eq!(
            error_code(Provider::FollowUpBoss, Some(&fub)).as_deref(),
            Some("Invalid phonenumber")
        );
        assert_eq!(
            error_code(
                Provider::Lofty,
                Some(&json!({"code": 200100, "message": "x"}))
            )
            .as_deref(),
            Some("200100")
        );
        assert_eq!(
            error_code(Provider::Lofty, Some(&json!("Bad request"))),
            None
        );
        let rex = json!({"error": {"type": "ValidationError", "message": "m", "extra": {"request_data": {"token": "sekrit"}}}});
        assert_eq!(
            error_code(Provider::Rex, Some(&rex)).as_deref(),
            Some("ValidationError")
        );
        let long = json!({"errorMessage": "x".repeat(500)});
        assert_eq!(
            error_code(Provider::FollowUpBoss, Some(&long)).map(|c| c.len()),
            Some(MAX_CODE_CHARS)
        );
    }

    #[test]
    fn statuses_map_to_what_a_user_can_act_on() {
        assert_eq!(
            from_status(Provider::FollowUpBoss, 401, None),
            CrmError::InvalidCredentials
        );
        assert_eq!(
            from_status(Provider::Lofty, 400, Some(&json!({"code": 200058}))),
            CrmError::InvalidCredentials
        );
        assert_eq!(from_status(Provider::Rex, 404, None), CrmError::NotFound);
        let e = from_status(
            Provider::FollowUpBoss,
            400,
            Some(&json!({"errorMessage": "Bad stage"})),
        );
        assert_eq!(
            e.to_string(),
            "Follow Up Boss answered with an error (Bad stage) (HTTP 400)"
        );
        assert!(!e.is_retryable());
        assert!(from_status(Provider::Lofty, 503, None).is_retryable());
        assert_eq!(rex_status(&json!({"type": "AuthenticationError"})), 401);
        assert_eq!(rex_status(&json!({"code": "500"})), 500);
        assert_eq!(rex_status(&json!({"code": 7})), 400);
    }
}
