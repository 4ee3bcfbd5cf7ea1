//! The one error type of the CRM clients, and the reading of CRM error bodies.
//!
//! A CRM error body is never copied into an error or a log line: REX echoes the session token in
//! its error bodies, and other CRMs echo request data. Only the CRM's short error *code* is kept
//! (where each CRM puts it: see its `CrmKind::error_code`), shortened and stripped of control
//! characters.

use std::time::Duration;

use serde_json::Value;

use crate::CrmKind;

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
    /// A write was sent and its answer never came (timed out, or the connection dropped after the
    /// request went out): the CRM may have processed it.
    #[error("the CRM's answer to a write was lost: {0}")]
    Unanswered(String),
    /// The CRM answered 2xx with a body we cannot read.
    #[error("unexpected response from the CRM: {0}")]
    Decode(String),
    /// The record does not exist in the CRM.
    #[error("the record was not found in the CRM")]
    NotFound,
    /// Too little time was left before the caller's deadline to send the call (nothing was sent).
    #[error("no time left for the CRM call")]
    OutOfTime,
    /// The CRM refuses to list further this way (deep offsets): read the account in full instead.
    #[error("the CRM does not page this listing any deeper")]
    ListingTooDeep,
}

impl CrmError {
    /// Whether trying the same operation again later may succeed: transport failures, rate
    /// limits, 5xx (and 408) answers and unreadable bodies. Refused credentials, missing records
    /// and other 4xx answers will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            CrmError::Transport(_)
            | CrmError::Unanswered(_)
            | CrmError::RateLimited { .. }
            | CrmError::Decode(_) => true,
            CrmError::Upstream { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            CrmError::InvalidCredentials
            | CrmError::NotFound
            | CrmError::ListingTooDeep
            | CrmError::OutOfTime => false,
        }
    }
}

impl CrmError {
    /// Whether a write that failed this way may nevertheless have been processed by the CRM, so that
    /// sending it again could do it twice: its answer was lost, was a server error (5xx: the CRM may
    /// have failed after writing), or was a success we could not read. A refusal (4xx, 429: "your
    /// request was not processed", crm-apis §1.4) or a connection that never opened was not.
    pub fn may_have_been_processed(&self) -> bool {
        match self {
            CrmError::Unanswered(_) | CrmError::Decode(_) => true,
            CrmError::Upstream { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The longest CRM error code kept in a message.
const MAX_CODE_CHARS: usize = 80;

/// The CRM's short error code from an error body, when the body has one where that CRM puts it
/// ([`CrmKind::error_code`]): a string or a number, shortened and stripped of control characters.
/// Bare strings, HTML pages and unknown shapes give `None`.
pub(crate) fn error_code(kind: &dyn CrmKind, body: Option<&Value>) -> Option<String> {
    let raw = kind.error_code(body?)?;
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

/// The error for a non-success answer: `status` is the HTTP status, or the status of a failure the CRM
/// reported in a success answer ([`CrmKind::failure_in_body`]). (A 429 answer is turned into
/// `RateLimited` by the retry loop, with the CRM's wait; this one was reported in a body.)
pub(crate) fn from_status(kind: &dyn CrmKind, status: u16, body: Option<&Value>) -> CrmError {
    let code = error_code(kind, body);
    if code.as_deref().is_some_and(|c| kind.refuses_credentials(c)) {
        return CrmError::InvalidCredentials;
    }
    match status {
        401 | 403 => CrmError::InvalidCredentials,
        404 => CrmError::NotFound,
        429 => CrmError::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        _ => {
            let mut message = format!("{} answered with an error", kind.provider().label());
            if let Some(code) = code {
                message.push_str(&format!(" ({code})"));
            }
            CrmError::Upstream { status, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind;
    use crmsync_domain::Provider;
    use serde_json::json;

    fn error_code(provider: Provider, body: Option<&Value>) -> Option<String> {
        super::error_code(kind(provider), body)
    }

    fn from_status(provider: Provider, status: u16, body: Option<&Value>) -> CrmError {
        super::from_status(kind(provider), status, body)
    }

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
    }
}
