//! Lofty (formerly Chime), an American CRM (crm-apis.md §2): a REST API at `https://api.lofty.com`.
//!
//! * Auth: API keys only here, as `Authorization: token <key>` (a key sent as `Bearer` is refused with
//!   HTTP 400 and code 200058); `Content-Type: application/json` on every call (some GETs and all
//!   DELETEs fail without it).
//! * Rate limits: per app, 100 a minute for development apps, advertised in `X-RateLimit-*` headers with
//!   an epoch reset time.
//! * Paging: only `scrollId` pages; it survives a restart.
//! * Errors: `{"code", "message"}` bodies, or a bare string.

mod client;
pub mod mapping;
mod webhook;

use std::time::Duration;

use crmsync_domain::{Mapped, Provider, Region};
use http::HeaderValue;
use serde_json::Value;

use crate::config::{BadSetting, Common, base, phone_region, sandbox_mount};
use crate::oauth::OAuthConfig;
use crate::transport::{Conn, base_headers};
use crate::{CrmAuth, CrmClient, CrmConfig, CrmHttp, CrmKind, CrmSettings};

pub use client::LoftyClient;

/// Where the local sandbox serves Lofty, under `CRM_SANDBOX_URL`.
const SANDBOX_MOUNT: &str = "lofty";

/// Lofty endpoints (environment variables, with the documented default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `LOFTY_API_BASE` (`https://api.lofty.com`), without a trailing slash.
    pub api_base: String,
    /// `LOFTY_PHONE_REGION` (default `US`: Lofty is an American CRM).
    pub phone_region: Region,
}

impl Settings {
    pub(crate) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        common: &Common,
    ) -> Result<Self, BadSetting> {
        Ok(Settings {
            api_base: base(&get("LOFTY_API_BASE").unwrap_or_else(|| {
                sandbox_mount(common, SANDBOX_MOUNT)
                    .unwrap_or_else(|| "https://api.lofty.com".into())
            })),
            phone_region: phone_region(get, "LOFTY_PHONE_REGION", Region::US)?,
        })
    }
}

/// The facts of Lofty.
#[derive(Debug, Clone, Copy)]
pub struct Lofty;

impl CrmKind for Lofty {
    fn provider(&self) -> Provider {
        Provider::Lofty
    }

    /// "Persistence is asynchronous — GET may briefly 404 right after create (follow-up writes
    /// unaffected)" (crm-apis §2.2).
    fn writes_before_visible(&self) -> bool {
        true
    }

    /// Lofty's OAuth endpoints are not settled (crm-apis.md §2.1): API keys only.
    fn oauth(&self, _config: &CrmConfig) -> Option<OAuthConfig> {
        None
    }

    fn accepts_api_key(&self) -> bool {
        true
    }

    /// Production apps: 500 a minute; development apps 100. Take the lower.
    fn documented_rate(&self) -> (u32, Duration) {
        (100, Duration::from_secs(60))
    }

    /// `scrollId` is a cursor of its own.
    fn page_token_survives_restart(&self) -> bool {
        true
    }

    /// Leads carry no update time and unknown sorts are ignored (crm-apis §2.2, §2.6, §4): every sync
    /// reads the account and compares it with what was stored.
    fn lists_changes(&self) -> bool {
        false
    }

    /// By `scrollId`.
    fn pages_by_cursor(&self) -> bool {
        false
    }

    fn phone_region(&self, settings: &CrmSettings) -> Region {
        settings.lofty.phone_region
    }

    fn read_webhook(
        &self,
        _config: &CrmConfig,
        _headers: &dyn crate::webhook::Headers,
        body: &[u8],
        _account: Option<&str>,
    ) -> Result<crate::webhook::Hint, crate::webhook::Refused> {
        webhook::read(body)
    }

    fn map_record(&self, record: &Value, region: Region) -> Mapped {
        mapping::map_lead(record, region)
    }

    fn client(&self, http: &CrmHttp, config: &CrmConfig, auth: CrmAuth) -> CrmClient {
        let conn = Conn::new(http, &Lofty, headers(&auth), &auth);
        CrmClient::from_crm(std::sync::Arc::new(LoftyClient::new(
            conn,
            &config.settings.lofty,
        )))
    }

    /// `code` (a number or a string).
    fn error_code<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        body.get("code")
    }

    /// `200058` "User in token does not exist" comes with HTTP 400 when an API key is sent as Bearer.
    fn refuses_credentials(&self, code: &str) -> bool {
        matches!(code, "200058" | "BAD_CREDENTIALS")
    }
}

/// An API key as `token <key>`, a token as `Bearer`, and JSON on every call.
fn headers(auth: &CrmAuth) -> Result<http::HeaderMap, ()> {
    let authorization = match auth {
        CrmAuth::ApiKey(key) => format!("token {key}"),
        CrmAuth::OAuth { access_token } => format!("Bearer {access_token}"),
    };
    let mut h = base_headers(&authorization)?;
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_cannot_be_sent_fails_as_credentials() {
        assert!(headers(&CrmAuth::ApiKey("a\nb".into())).is_err());
        let h = headers(&CrmAuth::ApiKey("k".into())).unwrap();
        assert_eq!(h[http::header::AUTHORIZATION], "token k");
    }
}
