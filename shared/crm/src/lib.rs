//! The CRM clients of crmsync — REX (Rex Software), Follow Up Boss and Lofty — behind one
//! interface, [`CrmClient`], plus the OAuth flows of REX and Follow Up Boss ([`oauth`]).
//!
//! * One [`CrmHttp`] per cold start: one `reqwest` client (rustls, redirects off, connect 5 s /
//!   request 30 s, pooled), the [`RetryPolicy`] and the per-account [`Pacer`]s.
//! * One [`CrmClient`] per provider account: it adds the provider's headers, paces by the CRM's
//!   own rate-limit headers, retries idempotent calls (and writes only where nothing was
//!   processed), and turns answers into [`CrmError`]s that never carry a token or a raw body.
//!
//! Facts about the APIs are in `shared/docs/crm-apis.md`; where that page marks something
//! unconfirmed, the clients accept both readings.

mod client;
mod endpoints;
mod error;
mod http;
pub mod oauth;
mod pacer;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use client::CrmClient;
pub use endpoints::CrmEndpoints;
pub use error::CrmError;
pub use http::{CrmHttp, RetryPolicy, Sleeper, Timeouts};
pub use pacer::Pacer;

/// The credentials of one CRM account. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum CrmAuth {
    /// An OAuth access token (REX, Follow Up Boss), or a REX login session token: sent as
    /// `Authorization: Bearer`.
    OAuth { access_token: String },
    /// An API key: FUB `Basic base64(key:)`, Lofty `token <key>` (REX has none; a value here
    /// is sent as Bearer).
    ApiKey(String),
}

impl CrmAuth {
    pub(crate) fn secret(&self) -> &str {
        match self {
            CrmAuth::OAuth { access_token } => access_token,
            CrmAuth::ApiKey(key) => key,
        }
    }
}

impl fmt::Debug for CrmAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrmAuth::OAuth { .. } => f
                .debug_struct("OAuth")
                .field("access_token", &"[redacted]")
                .finish(),
            CrmAuth::ApiKey(_) => f.debug_tuple("ApiKey").field(&"[redacted]").finish(),
        }
    }
}

/// One page of raw CRM records, oldest update first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<serde_json::Value>,
    /// The token for the next page (FUB `next`, Lofty `scrollId`); always `None` for REX, which
    /// pages by the cursor itself.
    pub next_token: Option<String>,
    /// Whether another page should be asked for.
    pub has_more: bool,
}

/// The outcome of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    /// The CRM's id of the person, when the CRM told us.
    pub external_id: Option<String>,
    pub action: PushAction,
}

/// What a push did in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushAction {
    /// A new person was created.
    Created,
    /// An existing person was changed (FUB: the event matched an existing person).
    Updated,
    /// The person already had everything; no call was made.
    Unchanged,
    /// The CRM accepted and ignored the lead (FUB 204: the lead flow of the source is archived).
    Ignored,
}

impl PushAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PushAction::Created => "created",
            PushAction::Updated => "updated",
            PushAction::Unchanged => "unchanged",
            PushAction::Ignored => "ignored",
        }
    }
}

impl fmt::Display for PushAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_debug_never_shows_the_secret() {
        let a = CrmAuth::ApiKey("key-123".into());
        let b = CrmAuth::OAuth {
            access_token: "tok-456".into(),
        };
        assert_eq!(format!("{a:?}"), "ApiKey(\"[redacted]\")");
        assert!(!format!("{b:?}").contains("tok-456"));
    }

    #[test]
    fn push_action_wire_names() {
        for a in [
            PushAction::Created,
            PushAction::Updated,
            PushAction::Unchanged,
            PushAction::Ignored,
        ] {
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
            assert_eq!(a.to_string(), a.as_str());
        }
    }
}
