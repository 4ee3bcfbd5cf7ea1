//! Reading HTTP requests: path and query parameters, parsed into domain types or a clear 400, and the
//! time a request has before its Lambda's deadline.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crmsync_app::pull::SyncRequest;
use crmsync_domain::Provider;
use lambda_http::RequestExt;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::Response;

/// Turns a route's result into the response: errors become `{error, detail}`.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

/// A path parameter: from API Gateway's `pathParameters`, else from the raw path, as the segment that
/// follows `after` (local routers may not fill `pathParameters`).
pub fn path_param(req: &lambda_http::Request, name: &str, after: &str) -> Option<String> {
    if let Some(v) = req.path_parameters_ref().and_then(|p| p.first(name)) {
        return Some(v.to_owned());
    }
    let mut segments = req.uri().path().split('/').filter(|s| !s.is_empty());
    segments.by_ref().find(|s| *s == after)?;
    segments.next().map(|s| s.to_owned())
}

/// The `{provider}` of `/api/integrations/{provider}/...`.
pub fn provider(req: &lambda_http::Request) -> Result<Provider, ApiError> {
    let raw = path_param(req, "provider", "integrations")
        .ok_or_else(|| ApiError::bad_request("The path names no provider."))?;
    raw.parse::<Provider>()
        .map_err(|e| ApiError::bad_request(format!("{e}.")))
}

/// The first value of query parameter `name`, if present and not empty.
pub fn query(req: &lambda_http::Request, name: &str) -> Option<String> {
    if let Some(v) = req
        .query_string_parameters_ref()
        .and_then(|q| q.first(name))
    {
        return Some(v.to_owned()).filter(|v| !v.is_empty());
    }
    let raw = req.uri().query()?;
    form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// `?since=` as an RFC 3339 instant, not in the future (beyond a few minutes of clock skew): a cursor
/// moved past now would hide every change made until then.
pub fn since(req: &lambda_http::Request) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = query(req, "since") else {
        return Ok(None);
    };
    let t = DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "`since` must be an RFC 3339 date-time such as 2026-01-31T09:00:00Z; got `{}`.",
                raw.chars().take(60).collect::<String>()
            ))
        })?;
    if t > Utc::now() + crmsync_domain::MAX_CLOCK_SKEW {
        return Err(ApiError::bad_request(format!(
            "`since` is in the future ({}); give a time that has passed.",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    Ok(Some(t))
}

/// A boolean query parameter (`?full=true`): `true`/`1` or `false`/`0`, `false` when absent.
pub fn flag(req: &lambda_http::Request, name: &str) -> Result<bool, ApiError> {
    match query(req, name).as_deref().map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be true or false."
        ))),
    }
}

/// An integration id from a path segment: a UUID, else a 400 that quotes (the start of) the segment.
pub fn integration_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not an integration id (a UUID).",
            raw.chars().take(60).collect::<String>()
        ))
    })
}

/// `?limit=` between 1 and `max`, `default` when absent.
pub fn limit(req: &lambda_http::Request, default: u32, max: u32) -> Result<u32, ApiError> {
    match query(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "`limit` must be a whole number from 1 to {max}."
            ))),
        },
    }
}

/// The path segments after `integrations` in the raw path.
pub fn path_tail(req: &lambda_http::Request) -> Vec<String> {
    let path = req.uri().path();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    if segments.by_ref().any(|s| s == "integrations") {
        segments.map(str::to_owned).collect()
    } else {
        Vec::new()
    }
}

pub fn no_route(req: &lambda_http::Request) -> ApiError {
    ApiError::not_found(format!(
        "There is no route {} {}.",
        req.method(),
        req.uri().path().chars().take(100).collect::<String>()
    ))
}

/// `?since=` and `?full=`, which do not go together.
pub fn sync_request(req: &lambda_http::Request) -> Result<SyncRequest, ApiError> {
    let since = since(req)?;
    let full = flag(req, "full")?;
    if full && since.is_some() {
        return Err(ApiError::bad_request(
            "`full=true` reads the whole account; it takes no `since`.",
        ));
    }
    Ok(SyncRequest { since, full })
}

/// A sync stops at a page boundary once the Lambda has less than this left (or a fifth of its time,
/// when that is less: a function with a short timeout still gets most of it).
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// When to stop starting new pages: the Lambda's deadline less a margin. `None` when the runtime gave
/// no usable deadline (local emulators send 0).
pub fn deadline(req: &lambda_http::Request) -> Option<Instant> {
    deadline_from_ms(req.lambda_context_ref()?.deadline)
}

/// The instant to stop at for a Lambda deadline given in epoch milliseconds.
pub fn deadline_from_ms(deadline_ms: u64) -> Option<Instant> {
    let now_ms = Utc::now().timestamp_millis();
    let left_ms = i64::try_from(deadline_ms).ok()? - now_ms;
    tracing::debug!(left_ms, "time left before the Lambda deadline");
    if left_ms < -60_000 {
        return None;
    }
    let left = Duration::from_millis(left_ms.max(0) as u64);
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN.min(left / 5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> lambda_http::Request {
        http::Request::builder()
            .uri(uri)
            .body(lambda_http::Body::Empty)
            .unwrap()
    }

    #[test]
    fn provider_comes_from_the_path() {
        let r = req("https://x/api/integrations/followupboss/contacts/fetch");
        assert_eq!(provider(&r).unwrap(), Provider::FollowUpBoss);
        let r = req("https://x/api/integrations/salesforce/contacts/fetch");
        let err = provider(&r).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.detail().contains("salesforce"), "{}", err.detail());
    }

    #[test]
    fn since_and_limit_are_checked() {
        let r = req("https://x/y?since=2026-01-31T09%3A00%3A00%2B02%3A00&limit=5");
        assert_eq!(
            since(&r).unwrap().unwrap().to_rfc3339(),
            "2026-01-31T07:00:00+00:00"
        );
        assert_eq!(limit(&r, 50, 100).unwrap(), 5);
        assert!(since(&req("https://x/y?since=yesterday")).is_err());
        let err = since(&req("https://x/y?since=2999-01-01T00:00:00Z")).unwrap_err();
        assert!(err.detail().contains("future"), "{}", err.detail());
        assert!(flag(&req("https://x/y?full=true"), "full").unwrap());
        assert!(!flag(&req("https://x/y"), "full").unwrap());
        assert!(flag(&req("https://x/y?full=yes"), "full").is_err());
        assert!(limit(&req("https://x/y?limit=0"), 50, 100).is_err());
        assert!(limit(&req("https://x/y?limit=101"), 50, 100).is_err());
        assert!(limit(&req("https://x/y?limit=-1"), 50, 100).is_err());
        assert_eq!(limit(&req("https://x/y"), 50, 100).unwrap(), 50);
        assert_eq!(since(&req("https://x/y?since=")).unwrap(), None);
    }
}
