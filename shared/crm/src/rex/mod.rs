//! REX (Rex Software), an Australian CRM (crm-apis.md §3): RPC over HTTP, every call
//! `POST …/v1/rex/<service>/<method>` with a JSON body, answers `{result, error, correlation}` — and an
//! error may come back as HTTP 200 unless `X-Api-Option: use_status_codes=true` is sent.
//!
//! * Auth: OAuth 2.0 authorization code (standard flavour, PKCE S256 allowed, scopes sent); the token,
//!   or a login session token, is sent as `Bearer`. No API keys.
//! * Rate limits: none documented; one request a second is assumed.
//! * Paging: by the cursor itself (`system_modtime >=`), with an offset only inside one second; that
//!   offset does not survive a restart (records of the second that changed since would shift it).

mod client;
pub mod mapping;
mod webhook;

use std::fmt;
use std::time::Duration;

use crmsync_domain::{Mapped, Provider, Region};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{BadSetting, Common, base, phone_region, sandbox_mount};
use crate::oauth::{OAuthConfig, OAuthFlavour};
use crate::transport::{Conn, base_headers};
use crate::{CrmAuth, CrmClient, CrmConfig, CrmHttp, CrmKind, CrmSettings};

pub use client::RexClient;

/// Where the local sandbox serves REX, under `CRM_SANDBOX_URL`.
const SANDBOX_MOUNT: &str = "rex";

/// REX endpoints and OAuth settings (environment variables, with the seeds' defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `REX_AUTH_URL`.
    pub auth_url: String,
    /// `REX_TOKEN_URL`.
    pub token_url: String,
    /// `REX_REDIRECT_URI` (default: the dashboard's callback route).
    pub redirect_uri: String,
    /// `REX_SCOPE`.
    pub scope: String,
    /// `REX_CONTACTS_ENDPOINT`, the contacts list/search RPC (`…/v1/rex/contacts/list`).
    pub contacts_endpoint: String,
    /// Send a PKCE S256 challenge (`REX_PKCE` is not `0`).
    pub pkce: bool,
    /// `REX_MOCK=1`: the defaults point at the local sandbox.
    pub mock: bool,
    /// `REX_PHONE_REGION` (default `AU`: REX is an Australian CRM, its users type Australian numbers
    /// without a country code).
    pub phone_region: Region,
}

impl Settings {
    pub(crate) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        common: &Common,
    ) -> Result<Self, BadSetting> {
        let mock = get("REX_MOCK").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        // CRM_SANDBOX_URL points every CRM at the sandbox; REX_MOCK=1 points REX at it.
        let host = sandbox_mount(common, SANDBOX_MOUNT).or_else(|| {
            mock.then(|| format!("{}/{SANDBOX_MOUNT}", base(&common.default_sandbox_url)))
        });
        let default = |path: &str, real: &str| match &host {
            Some(host) => format!("{host}{path}"),
            None => real.to_owned(),
        };
        Ok(Settings {
            auth_url: get("REX_AUTH_URL").unwrap_or_else(|| {
                default(
                    "/oauth/authorize",
                    "https://api.rexsoftware.com/oauth/authorize",
                )
            }),
            token_url: get("REX_TOKEN_URL").unwrap_or_else(|| {
                default("/oauth/token", "https://api.rexsoftware.com/oauth/token")
            }),
            redirect_uri: get("REX_REDIRECT_URI").unwrap_or_else(|| {
                format!("{}/api/integrations/rex/oauth/callback", common.base_url)
            }),
            scope: get("REX_SCOPE").unwrap_or_else(|| "openid profile rex.read rex.write".into()),
            contacts_endpoint: get("REX_CONTACTS_ENDPOINT")
                .unwrap_or_else(|| {
                    default(
                        "/v1/rex/contacts/list",
                        "https://api.rexsoftware.com/v1/rex/contacts/list",
                    )
                })
                .trim()
                .to_owned(),
            pkce: get("REX_PKCE").is_none_or(|v| v != "0"),
            mock,
            phone_region: phone_region(get, "REX_PHONE_REGION", Region::AU)?,
        })
    }

    /// The RPC base (`…/v1/rex`), for `contacts/search|read|create|update`.
    pub fn rpc_base(&self) -> String {
        rpc_base(&self.contacts_endpoint)
    }
}

/// The REX RPC base from the contacts endpoint: `…/v1/rex/contacts/list` → `…/v1/rex`. Any
/// `/contacts/<method>` ending (any case) is stripped; an endpoint without one is taken as the base
/// itself.
fn rpc_base(contacts_endpoint: &str) -> String {
    let trimmed = contacts_endpoint.trim().trim_end_matches('/');
    let (rest, _method) = trimmed.rsplit_once('/').unwrap_or((trimmed, ""));
    match rest.rsplit_once('/') {
        Some((base, service)) if service.eq_ignore_ascii_case("contacts") => base.to_owned(),
        _ => trimmed.to_owned(),
    }
}

/// REX's part of the application secret.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Secrets {
    #[serde(rename = "rex_client_id", default)]
    pub client_id: String,
    #[serde(rename = "rex_client_secret", default)]
    pub client_secret: String,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

/// The standard authorization-code flow, PKCE S256 allowed, scopes sent.
pub const OAUTH: OAuthFlavour = OAuthFlavour {
    response_type: "code",
    scopes: true,
    pkce: true,
    state_in_token_request: false,
};

/// The facts of REX.
#[derive(Debug, Clone, Copy)]
pub struct Rex;

impl CrmKind for Rex {
    fn provider(&self) -> Provider {
        Provider::Rex
    }

    fn oauth(&self, config: &CrmConfig) -> Option<OAuthConfig> {
        let (s, secrets) = (&config.settings.rex, &config.secrets.rex);
        Some(OAuthConfig {
            provider: Provider::Rex,
            flavour: OAUTH,
            auth_url: s.auth_url.clone(),
            token_url: s.token_url.clone(),
            redirect_uri: s.redirect_uri.clone(),
            client_id: secrets.client_id.clone(),
            client_secret: secrets.client_secret.clone(),
            scope: s.scope.clone(),
            pkce: s.pkce,
        })
    }

    fn accepts_api_key(&self) -> bool {
        false
    }

    /// Not documented: one a second.
    fn documented_rate(&self) -> (u32, Duration) {
        (60, Duration::from_secs(60))
    }

    /// A REX page token walks one second by offset, which holds within a run only: records of that
    /// second that changed since would shift the offset and hide records never stored. A resumed REX
    /// sync reads that second again from its first record (the stored ones are dropped).
    fn page_token_survives_restart(&self) -> bool {
        false
    }

    /// `system_modtime >=` a time, in ascending order (crm-apis §3.4).
    fn lists_changes(&self) -> bool {
        true
    }

    /// REX pages by `system_modtime` itself (an offset only within one second).
    fn pages_by_cursor(&self) -> bool {
        true
    }

    fn phone_region(&self, settings: &CrmSettings) -> Region {
        settings.rex.phone_region
    }

    fn read_webhook(
        &self,
        _config: &CrmConfig,
        _headers: &dyn crate::webhook::Headers,
        body: &[u8],
        account: Option<&str>,
    ) -> Result<crate::webhook::Hint, crate::webhook::Refused> {
        webhook::read(body, account)
    }

    fn map_record(&self, record: &Value, region: Region) -> Mapped {
        mapping::map_contact(record, region)
    }

    fn client(&self, http: &CrmHttp, config: &CrmConfig, auth: CrmAuth) -> CrmClient {
        let conn = Conn::new(http, &Rex, headers(&auth), &auth);
        CrmClient::from_crm(std::sync::Arc::new(RexClient::new(
            conn,
            &config.settings.rex,
        )))
    }

    /// `error.type`.
    fn error_code<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        body.get("error").and_then(|e| e.get("type"))
    }

    /// REX may answer HTTP 200 with `error` set.
    fn failure_in_body(&self, body: Option<&Value>) -> Option<u16> {
        body?
            .get("error")
            .filter(|e| !e.is_null())
            .map(error_status)
    }
}

/// `Authorization: Bearer` (tokens and login sessions alike), JSON, and errors as HTTP statuses.
fn headers(auth: &CrmAuth) -> Result<http::HeaderMap, ()> {
    let mut h = base_headers(&format!("Bearer {}", auth.secret()))?;
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        HeaderName::from_static("x-api-option"),
        HeaderValue::from_static("use_status_codes=true"),
    );
    Ok(h)
}

/// The effective status of a REX error object: its numeric `code` when it is an HTTP error status,
/// else 401 for `AuthenticationError`, 404 for `NotFoundError`, else 400.
fn error_status(error: &Value) -> u16 {
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
    fn rpc_base_strips_the_contacts_method() {
        assert_eq!(
            rpc_base("https://api.rexsoftware.com/v1/rex/contacts/list"),
            "https://api.rexsoftware.com/v1/rex"
        );
        assert_eq!(
            rpc_base("http://127.0.0.1:8787/rex/v1/rex/Contacts/search/"),
            "http://127.0.0.1:8787/rex/v1/rex"
        );
        assert_eq!(
            rpc_base("https://api.uk.rexsoftware.com/v1/rex"),
            "https://api.uk.rexsoftware.com/v1/rex"
        );
    }

    #[test]
    fn errors_in_a_body_have_a_status() {
        assert_eq!(error_status(&json!({"type": "AuthenticationError"})), 401);
        assert_eq!(error_status(&json!({"code": "500"})), 500);
        assert_eq!(error_status(&json!({"code": 7})), 400);
        assert_eq!(Rex.failure_in_body(Some(&json!({"error": null}))), None);
        assert_eq!(
            Rex.failure_in_body(Some(&json!({"error": {"type": "NotFoundError"}}))),
            Some(404)
        );
    }
}
